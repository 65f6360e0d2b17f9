"""Bounds on KL(q‖p) and KL(p‖q) for decoders whose run reports a trajectory density.

A decoder's output law is q(x) = sum_tau q(x, tau) over its random choices tau (orders, draws
left masked, Bernoulli commits, particles); a run returns the exact log q(x, tau) of its own
trajectory. With a proposal r(tau | x) over trajectories that end in x (the decoder replayed
with its values forced to x, :func:`mdmprob.decoders.drivers.forced`) and the importance weight
w(tau) = q(x, tau) / r(tau | x), E_r[w] = q(x) on the proposal's support, and

* **upper side** (reverse importance): for tau ~ q(tau | x), the run's own trajectory,
  E[log w(tau)] = log q(x) + KL(q(tau | x) ‖ r(tau | x)) >= log q(x);
* **lower side** (importance-weighted): for tau_1..tau_K ~ r(tau | x),
  E[log (1/K) sum_k w(tau_k)] <= log q(x), rising to it as K grows (when r covers q(tau | x)).

Averaged over x ~ q they bracket KL(q‖p) = E_q[log q(x) - log p(x)] [nats]; averaged over
x ~ p the lower side gives an upper bound on KL(p‖q) (there is no upper side: the trajectory
that would produce a p-sample is not observed). Both gaps close when r = q(tau | x).

Decoders without a proposal get the honest fallback: E_q[log q(x, tau) - log p(x)] <=
KL(q‖p) <= E_q[-log p(x)] (q(x) >= q(x, tau) and log q(x) <= 0), when the run's log q is a joint
q(x, tau).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mdmprob import measures
from mdmprob.checks import check_int

DEFAULT_DRAWS = 16  # proposal trajectories per sequence (K) for the lower side


@dataclass
class LogWeights:
    """Importance weights of trajectories ending in each of B sequences.

    ``proposed [B, K]``: log q(x, tau_k) - log r(tau_k | x) for tau_k ~ r(tau | x);
    ``own [B]`` (or None): the same at the trajectory that produced x (a draw from q(tau | x))."""

    proposed: torch.Tensor
    own: torch.Tensor | None = None


def iw_lower(log_w: torch.Tensor) -> torch.Tensor:
    """The importance-weighted lower estimate of log q(x), ``[B]``:
    log (1/K) sum_k w_k from ``log_w [B, K]``; its expectation is <= log q(x)."""
    return torch.logsumexp(log_w, -1) - math.log(log_w.shape[-1])


def check_draws(draws) -> None:
    """``draws`` proposal trajectories per sequence: an integer >= 1 (more closes the bounds)."""
    check_int("draws", draws, 1)


def kl_qp_bounds(weights: LogWeights, log_p: torch.Tensor):
    """``(lower, upper)`` :class:`~mdmprob.measures.Estimate` of KL(q‖p) from weights at B
    q-samples and their exact ``log_p`` ``[B]`` (``upper`` is None without the run's own
    trajectories)."""
    lower = measures.mc_mean(q_side(iw_lower(weights.proposed), log_p))
    upper = None if weights.own is None else measures.mc_mean(q_side(weights.own, log_p))
    return lower, upper


def kl_pq_upper(weights: LogWeights, log_p: torch.Tensor) -> measures.Estimate:
    """An upper :class:`~mdmprob.measures.Estimate` of KL(p‖q) from weights at B p-samples and
    their exact ``log_p`` ``[B]``: E_p[log p(x) - iw_lower(x)]; +inf when the proposals never
    reach a sample of p."""
    lower_q = iw_lower(weights.proposed)
    diff = log_p - lower_q
    return measures.mc_mean(torch.where(lower_q == -math.inf, torch.full_like(diff, math.inf), diff))


def q_side(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """log q - log p at samples of q: +inf where p vanishes (q does not there)."""
    diff = log_q - log_p
    return torch.where(log_p == -math.inf, torch.full_like(diff, math.inf), diff)


__all__ = ["DEFAULT_DRAWS", "LogWeights", "check_draws", "iw_lower", "kl_pq_upper", "kl_qp_bounds"]
