"""Decoding orders as scores of the decoder primitives: fixed permutations, and exact rollouts of
the path-dependent error model of Assumption 4.2 (paper-spec §4-F).

* :class:`FixedOrder` ranks positions by a given permutation; :func:`fixed_decoder` decodes one
  token per step in that order (so ``Decoder.distribution`` gives its exact rollout law q_pi).
* :func:`a42_rollout` runs the §4-F error model: at step t with true conditional r at the chosen
  position, the model's conditional r_theta moves mass off the mode of r until
  ``KL(r_theta ‖ r) = alpha * H(r) + lambda * sum_{k<t} KL(r_theta,k ‖ r_k)`` (nats), saturating
  at the mode's full mass. The model conditional depends on the path's accumulated error, so no
  fixed denoiser table exists; the recursion is exact over all V^n paths.
"""

from __future__ import annotations

import math

import torch

from mdmprob.decoders.primitives import Score, entropy_of
from mdmprob.denoisers.perturbed import away_from_mode
from mdmprob.errors import MdmprobError

GREEDY = ("oracle_entropy", "oracle_hard_first", "entropy", "hard_first")


class FixedOrder(Score):
    """Ranks positions by a given permutation: ``order[0]`` first, then ``order[1]``, ..."""

    def __init__(self, order):
        self.order = tuple(int(p) for p in order)
        if sorted(self.order) != list(range(len(self.order))):
            raise MdmprobError(f"order {order!r} must be a permutation of 0..{len(self.order) - 1}")
        self.name = "fixed:" + order_name(self.order)

    def __call__(self, step, draws=None):
        n = step.logp.shape[1]
        if n != len(self.order):
            raise MdmprobError(f"{self.name} orders {len(self.order)} positions, the denoiser has {n}")
        rank = torch.empty(n, dtype=step.logp.dtype, device=step.logp.device)
        rank[list(self.order)] = torch.arange(n, dtype=step.logp.dtype, device=step.logp.device)
        return (-rank).expand(step.logp.shape[0], n)


def order_name(order) -> str:
    return "-".join(str(p) for p in order)


def fixed_decoder(order):
    from mdmprob.decoders import Decoder
    from mdmprob.decoders.primitives import PerStep

    score = FixedOrder(order)
    return Decoder(score.name, score, PerStep(1), window="all", temperature=1.0)


def a42_rollout(cond, policy, alpha: float, lam: float):
    """Exact rollouts of the §4-F error model (Assumption 4.2 with equality on every path).

    ``cond``: a denoiser giving the *true* conditionals (e.g. ``Table.from_denoiser(Oracle(s))``).
    ``policy``: permutations (fixed orders; a sequence of P of them, decoded in one batch), or
    ``"oracle_entropy"`` / ``"oracle_hard_first"`` (greedy on the lowest / highest true
    conditional entropy H(X_j | prefix)) or ``"entropy"`` / ``"hard_first"`` (greedy on the
    entropy of the model's r_theta); ties (within 1e-12 nats) to the lower position.

    Returns ``(log_q [P, V^n], E_q[sum_t eps_t] [P], Pr_q[some step saturated] [P])`` with P = 1
    for a greedy rule; ``log_q`` is indexed like ``itertools.product(range(V), repeat=n)``.
    Every adaptive path is a function of its values, so each rollout is a tree with V^n leaves.
    """
    n, V, mask = cond.n_tokens, cond.vocab, cond.mask_id
    device, dtype = cond.device, cond.dtype
    greedy = isinstance(policy, str)
    if greedy and policy not in GREEDY:
        raise MdmprobError(f"policy {policy!r} must be permutations or one of oracle_entropy, "
                           "oracle_hard_first, entropy, hard_first")
    perms = None if greedy else torch.as_tensor(policy, dtype=torch.long,
                                                device=device).reshape(-1, n)
    if perms is not None and not (perms.sort(-1).values == torch.arange(n, device=device)).all():
        raise MdmprobError(f"every fixed order must be a permutation of 0..{n - 1}")
    P = 1 if greedy else len(perms)
    owner = torch.arange(P, device=device)  # the policy each row (a path prefix) belongs to
    tokens = torch.full((P, n), mask, dtype=torch.long, device=device)
    log_q = torch.zeros(P, dtype=dtype, device=device)
    acc = torch.zeros(P, dtype=dtype, device=device)  # sum of the path's local KLs so far
    sat = torch.zeros(P, dtype=torch.bool, device=device)
    for t in range(n):
        log_r = cond(tokens)  # [B, n, V]: true conditionals given each row's prefix
        rows = torch.arange(tokens.shape[0], device=device)
        if greedy:
            if policy.startswith("oracle_"):
                h = entropy_of(log_r)
            else:
                target_all = alpha * entropy_of(log_r) + lam * acc[:, None]
                h = entropy_of(away_from_mode(log_r, target_all)[0])
            key = -h if policy.endswith("entropy") else h
            masked = tokens == mask
            key = key.masked_fill(~masked, -math.inf)
            near = (key >= key.amax(-1, keepdim=True) - 1e-12) & masked
            j = near.long().argmax(-1)  # the lowest position among the near-ties
        else:
            j = perms[owner, t]
        log_rj = log_r[rows, j]  # [B, V]
        log_theta, eps, saturated = away_from_mode(log_rj, alpha * entropy_of(log_rj) + lam * acc)
        tokens = tokens.repeat_interleave(V, 0)
        values = torch.arange(V, device=device).repeat(len(rows))
        tokens[torch.arange(len(tokens), device=device), j.repeat_interleave(V)] = values
        log_q = (log_q[:, None] + log_theta).reshape(-1)
        acc = (acc + eps).repeat_interleave(V)
        sat = (sat | saturated).repeat_interleave(V)
        owner = owner.repeat_interleave(V)
    radix = V ** torch.arange(n - 1, -1, -1, device=device)
    out = torch.full((P, V ** n), -math.inf, dtype=dtype, device=device)
    out[owner, (tokens * radix).sum(-1)] = log_q
    q = log_q.exp()
    expected = torch.zeros(P, dtype=dtype, device=device).index_add_(0, owner, q * acc)
    saturation = torch.zeros(P, dtype=dtype, device=device).index_add_(0, owner, q * sat.to(dtype))
    return out, expected, saturation


__all__ = ["GREEDY", "FixedOrder", "a42_rollout", "fixed_decoder", "order_name"]
