"""Information measures in nats: exact from log-probability tables, Monte Carlo from exact log-densities.

Table conventions: a distribution over ``k`` variables is a log-probability tensor whose last
``k`` axes are the variables (``event_dims=k``); leading axes are a batch (e.g. one table per
prefix). Zero probabilities are ``-inf``; ``0 log 0 = 0``; a KL with mass where the other
distribution has none is ``+inf`` (never NaN).

KL takes named arguments and reads as written: ``kl(q=decoder, p=target)`` is KL(q‖p) (sampling
risk, expectation under q) and ``kl(p=target, q=decoder)`` is KL(p‖q) (information loss).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from mdmprob.errors import MdmprobError


class Estimate(NamedTuple):
    """A Monte Carlo estimate: ``value`` with standard error ``se`` from ``n`` samples."""

    value: float
    se: float
    n: int


# --------------------------------------------------------------------------- exact, from tables
def entropy(log_p: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """H(X) = -sum_x p(x) log p(x) over the last ``event_dims`` axes."""
    dims = _dims(log_p, event_dims)
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dims)


def kl(*, event_dims: int = 1, **two: torch.Tensor) -> torch.Tensor:
    """KL(first ‖ second) of the two named log-tables, in the order written.

    ``kl(q=log_q, p=log_p)`` = sum_x q(x) (log q(x) - log p(x)); ``+inf`` where q > 0 = p.
    """
    (_, log_a), (_, log_b) = _two(two, "kl")
    dims = _dims(log_a, event_dims)
    a = log_a.exp()
    terms = torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a))
    return terms.sum(dims).clamp(min=0.0)


def tv(*, event_dims: int = 1, **two: torch.Tensor) -> torch.Tensor:
    """Total variation distance (1/2) sum_x |p(x) - q(x)| of the two named log-tables."""
    (_, log_a), (_, log_b) = _two(two, "tv")
    return 0.5 * (log_a.exp() - log_b.exp()).abs().sum(_dims(log_a, event_dims))


def marginals(log_joint: torch.Tensor, event_dims: int) -> list[torch.Tensor]:
    """The log-marginal ``[..., V_i]`` of each of the last ``event_dims`` axes."""
    first = log_joint.dim() - event_dims
    axes = range(first, log_joint.dim())
    return [torch.logsumexp(log_joint, [a for a in axes if a != i], keepdim=False)
            if event_dims > 1 else log_joint for i in axes]


def mean_field(log_joint: torch.Tensor, event_dims: int) -> torch.Tensor:
    """log prod_i p(x_i): the factorized (mean-field) proposal, as a table of the joint's shape."""
    out = torch.zeros_like(log_joint)
    for j, m in enumerate(marginals(log_joint, event_dims)):
        shape = list(m.shape[:-1]) + [1] * event_dims
        shape[len(shape) - event_dims + j] = m.shape[-1]
        out = out + m.reshape(shape)
    return out


def forward_tc(log_joint: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Forward (conditional) total correlation KL(p(x_B) ‖ prod_i p(x_i)) (Eq. 15)."""
    return kl(p=log_joint, q=mean_field(log_joint, event_dims), event_dims=event_dims)


def reverse_tc(log_joint: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Reverse (conditional) total correlation KL(prod_i p(x_i) ‖ p(x_B)) (Eq. 17)."""
    return kl(q=mean_field(log_joint, event_dims), p=log_joint, event_dims=event_dims)


def conditional_entropy(log_joint: torch.Tensor, event_dims: int, target, given=()) -> torch.Tensor:
    """H(X_target | X_given) = H(X_target, X_given) - H(X_given), axes counted within the event."""
    target, given = tuple(target), tuple(given)
    if set(target) & set(given) or not set(target) | set(given) <= set(range(event_dims)):
        raise MdmprobError(f"target {target} and given {given} must be disjoint axes in "
                           f"0..{event_dims - 1}")
    first = log_joint.dim() - event_dims

    def h(axes):
        if not axes:
            return torch.zeros(log_joint.shape[:first], dtype=log_joint.dtype,
                               device=log_joint.device)
        drop = [first + a for a in range(event_dims) if a not in axes]
        table = torch.logsumexp(log_joint, drop) if drop else log_joint
        return entropy(table, len(axes))

    return h(target + given) - h(given)


def expectation(log_q: torch.Tensor, values: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """E_q[values] over the last ``event_dims`` axes (values may be +inf where q > 0)."""
    q = log_q.exp()
    values = values.to(q.dtype).expand_as(q)
    return torch.where(q > 0, q * values, torch.zeros_like(q)).sum(_dims(log_q, event_dims))


def incoherence_rate(log_q: torch.Tensor, log_p: torch.Tensor, tau: float = 1e-8,
                     event_dims: int = 1) -> torch.Tensor:
    """Pr_{x~q}[p(x) <= tau] (Eq. 14; Eq. 24 when the tables are block conditionals)."""
    return expectation(log_q, (log_p <= math.log(tau)).to(log_q.dtype), event_dims)


def violation_rate(log_q: torch.Tensor, violated: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """Pr_{x~q}[constraint violated], ``violated`` a bool table of the same event shape."""
    return expectation(log_q, violated.to(log_q.dtype), event_dims)


# --------------------------------------------------------------------------- Monte Carlo
def mc_mean(values: torch.Tensor) -> Estimate:
    """Sample mean and its standard error; ``+inf`` if any sample is ``+inf`` (then se = 0: one
    sample with that value proves the expectation infinite)."""
    values = values.detach().reshape(-1).to(torch.float64)
    n = values.numel()
    if n == 0:
        raise MdmprobError("a Monte Carlo estimate needs at least one sample")
    if torch.isnan(values).any():
        raise MdmprobError("Monte Carlo values contain NaN; check the log-densities")
    if (values == math.inf).any():
        return Estimate(math.inf, 0.0, n)
    se = values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else math.inf
    return Estimate(values.mean().item(), se, n)


def mc_kl(log_first: torch.Tensor, log_second: torch.Tensor) -> Estimate:
    """KL(first ‖ second) from samples of the *first* distribution and exact log-densities of both
    at those samples: mean of ``log_first - log_second``."""
    return mc_mean(log_first - log_second)


def mc_rate(indicator: torch.Tensor) -> Estimate:
    """A probability estimated from 0/1 indicators (incoherence, violation), with binomial se."""
    return mc_mean(indicator.to(torch.float64))


def mc_incoherence(log_p: torch.Tensor, tau: float = 1e-8) -> Estimate:
    """Pr_{x~q}[p(x) <= tau] from samples of q and their exact ``log p``."""
    return mc_rate(log_p <= math.log(tau))


def _dims(t: torch.Tensor, event_dims: int) -> list[int]:
    if not 0 < event_dims <= t.dim():
        raise MdmprobError(f"event_dims={event_dims} must be in 1..{t.dim()} for a table of "
                           f"shape {tuple(t.shape)}")
    return list(range(t.dim() - event_dims, t.dim()))


def _two(two: dict, what: str):
    if len(two) != 2:
        raise MdmprobError(
            f"{what}() takes exactly two named distributions, e.g. {what}(q=log_q, p=log_p) for "
            f"{what.upper()}(q‖p); got {list(two)}"
        )
    items = list(two.items())
    if items[0][1].shape != items[1][1].shape:
        a, b = items
        raise MdmprobError(f"{what}(): {a[0]} has shape {tuple(a[1].shape)} but {b[0]} has "
                           f"{tuple(b[1].shape)}")
    return items
