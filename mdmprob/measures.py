"""Information measures in nats: exact from log-probability tables, Monte Carlo from exact log-densities.

Table conventions: a distribution over ``k`` variables is a log-probability tensor whose last
``k`` axes are the variables (``event_dims=k``); leading axes are a batch (e.g. one table per
prefix): a table ``[*batch, V, ..., V]`` gives a value ``[*batch]``. The Monte Carlo estimators
take one value per sample, ``[K]``, and return an :class:`Estimate`. Zero probabilities are
``-inf``; ``0 log 0 = 0``; a KL with mass where the other distribution has none is ``+inf``
(never NaN).

KL takes named arguments and reads as written: ``kl(q=decoder, p=target)`` is KL(q‖p) (sampling
risk, expectation under q) and ``kl(p=target, q=decoder)`` is KL(p‖q) (information loss).

Inputs are checked, never silently repaired: a table with NaN, with +inf, or whose probabilities
do not sum to 1 over the event axes (within ``normalisation_tolerance``) raises
:class:`~mdmprob.errors.MdmprobError`, which says so when the table holds probabilities instead of
log-probabilities. Exact KLs of normalised tables are >= 0, so a negative sum is rounding and
reads 0; Monte Carlo KLs count per-sample differences within rounding of the two log-densities as
exact zeros (see :func:`mc_kl`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from mdmprob.errors import MdmprobError

__all__ = [
    "ROUNDING_ULPS", "Estimate", "check_log_table", "conditional_entropy", "entropy",
    "expectation", "forward_tc", "incoherence_rate", "kl", "marginals", "mc_incoherence",
    "mc_kl", "mc_mean", "mc_rate", "mean_field", "normalisation_tolerance", "reverse_tc", "tv",
    "violation_rate",
]


class Estimate(NamedTuple):
    """A Monte Carlo estimate: ``value`` with standard error ``se`` from ``n`` samples."""

    value: float
    se: float
    n: int


# --------------------------------------------------------------------------- exact, from tables
def entropy(log_p: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """H(X) = -sum_x p(x) log p(x) over the last ``event_dims`` axes."""
    dims = _dims(log_p, event_dims)
    check_log_table(log_p, event_dims, "entropy", "log_p")
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dims)


def kl(*, event_dims: int = 1, **two: torch.Tensor) -> torch.Tensor:
    """KL(first ‖ second) of the two named log-tables, in the order written.

    ``kl(q=log_q, p=log_p)`` = sum_x q(x) (log q(x) - log p(x)); ``+inf`` where q > 0 = p.
    """
    (_, log_a), (_, log_b) = _two(two, "kl", event_dims)
    dims = _dims(log_a, event_dims)
    a = log_a.exp()
    terms = torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a))
    return terms.sum(dims).clamp(min=0.0)


def tv(*, event_dims: int = 1, **two: torch.Tensor) -> torch.Tensor:
    """Total variation distance (1/2) sum_x |p(x) - q(x)| of the two named log-tables."""
    (_, log_a), (_, log_b) = _two(two, "tv", event_dims)
    return 0.5 * (log_a.exp() - log_b.exp()).abs().sum(_dims(log_a, event_dims))


def marginals(log_joint: torch.Tensor, event_dims: int) -> list[torch.Tensor]:
    """The log-marginal ``[..., V_i]`` of each of the last ``event_dims`` axes."""
    _dims(log_joint, event_dims)
    first = log_joint.dim() - event_dims
    axes = range(first, log_joint.dim())
    return [torch.logsumexp(log_joint, [a for a in axes if a != i], keepdim=False)
            if event_dims > 1 else log_joint for i in axes]


def mean_field(log_joint: torch.Tensor, event_dims: int) -> torch.Tensor:
    """log prod_i p(x_i): the factorized (mean-field) proposal, as a table of the joint's shape."""
    _dims(log_joint, event_dims)
    out = torch.zeros_like(log_joint)
    for j, m in enumerate(marginals(log_joint, event_dims)):
        shape = list(m.shape[:-1]) + [1] * event_dims
        shape[len(shape) - event_dims + j] = m.shape[-1]
        out = out + m.reshape(shape)
    return out


def forward_tc(log_joint: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Forward (conditional) total correlation KL(p(x_B) ‖ prod_i p(x_i)) (Eq. 15)."""
    check_log_table(log_joint, event_dims, "forward_tc", "log_joint")
    return kl(p=log_joint, q=mean_field(log_joint, event_dims), event_dims=event_dims)


def reverse_tc(log_joint: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Reverse (conditional) total correlation KL(prod_i p(x_i) ‖ p(x_B)) (Eq. 17)."""
    check_log_table(log_joint, event_dims, "reverse_tc", "log_joint")
    return kl(q=mean_field(log_joint, event_dims), p=log_joint, event_dims=event_dims)


def conditional_entropy(log_joint: torch.Tensor, event_dims: int, target, given=()) -> torch.Tensor:
    """H(X_target | X_given) = H(X_target, X_given) - H(X_given), axes counted within the event."""
    check_log_table(log_joint, event_dims, "conditional_entropy", "log_joint")
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
    check_log_table(log_q, event_dims, "expectation", "log_q")
    if torch.isnan(values).any():
        raise MdmprobError("expectation(): values contain NaN; an expectation of NaN is undefined")
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
    at those samples: mean of ``log_first - log_second``.

    A per-sample difference within ``ROUNDING_ULPS`` units in the last place of the operands'
    magnitude, ``|a - b| <= ROUNDING_ULPS * eps * (|a| + |b|)``, is two evaluations of the same
    log-density by different sums and counts as exactly 0 (a verified decoder reads 0 ± 0, not
    -1.6e-15 ± 2.4e-16)."""
    if log_first.shape != log_second.shape:
        raise MdmprobError(f"mc_kl(): log densities of shapes {tuple(log_first.shape)} and "
                           f"{tuple(log_second.shape)} must match (one value per sample)")
    diff = log_first - log_second
    if diff.is_floating_point():
        eps = torch.finfo(diff.dtype).eps
        both = torch.isfinite(log_first) & torch.isfinite(log_second)
        bound = ROUNDING_ULPS * eps * (log_first.abs() + log_second.abs())
        diff = torch.where(both & (diff.abs() <= bound), torch.zeros_like(diff), diff)
    return mc_mean(diff)


def mc_rate(indicator: torch.Tensor) -> Estimate:
    """A probability estimated from 0/1 indicators (incoherence, violation), with binomial se."""
    return mc_mean(indicator.to(torch.float64))


def mc_incoherence(log_p: torch.Tensor, tau: float = 1e-8) -> Estimate:
    """Pr_{x~q}[p(x) <= tau] from samples of q and their exact ``log p``."""
    return mc_rate(log_p <= math.log(tau))


ROUNDING_ULPS = 256  # per-sample rounding allowance of mc_kl, in units of eps * |operands|


def normalisation_tolerance(dtype: torch.dtype) -> float:
    """How far ``logsumexp`` of a table may be from 0 (nats) and still count as normalised:
    1e-6 in float64, ``1000 eps`` (about 1.2e-4) in float32."""
    return max(1e-6, 1000 * torch.finfo(dtype).eps)


def check_log_table(log_p: torch.Tensor, event_dims: int, fn: str, name: str) -> None:
    """Raise :class:`MdmprobError` unless ``log_p`` is a float table of log-probabilities whose
    probabilities sum to 1 over its last ``event_dims`` axes (every batch row)."""
    if not isinstance(log_p, torch.Tensor) or not log_p.is_floating_point():
        raise MdmprobError(f"{fn}(): {name} must be a floating tensor of log-probabilities, got "
                           f"{getattr(log_p, 'dtype', type(log_p).__name__)}")
    dims = _dims(log_p, event_dims)
    if log_p.numel() == 0:
        return
    nan = torch.isnan(log_p)
    if nan.any():
        raise MdmprobError(f"{fn}(): {name} contains NaN ({int(nan.sum())} of {log_p.numel()} "
                           "entries); a distribution's log-probabilities are numbers or -inf")
    if (log_p == math.inf).any():
        raise MdmprobError(f"{fn}(): {name} contains +inf; log-probabilities are <= 0 (use -inf "
                           "for probability 0)")
    total = torch.logsumexp(log_p, dims)
    tol = normalisation_tolerance(log_p.dtype)
    worst = (total.abs()).max().item() if total.numel() else 0.0
    if worst <= tol:
        return
    if (log_p >= 0).all() and ((log_p.sum(dims) - 1).abs() <= tol).all():
        raise MdmprobError(f"{fn}(): {name} holds probabilities (they sum to 1), not "
                           f"log-probabilities; pass {name}=torch.log(p)")
    bad = total[(total.abs() > tol)].reshape(-1)[0].item()
    raise MdmprobError(f"{fn}(): {name} is not normalised over its last {event_dims} axes: its "
                       f"probabilities sum to {math.exp(bad):.6g} (log {bad:.6g}; tolerance "
                       f"{tol:g} nats); normalise it with "
                       f"{name} - {name}.logsumexp({dims}, keepdim=True)")


def _dims(t: torch.Tensor, event_dims: int) -> list[int]:
    if not 0 < event_dims <= t.dim():
        raise MdmprobError(f"event_dims={event_dims} must be in 1..{t.dim()} for a table of "
                           f"shape {tuple(t.shape)}")
    return list(range(t.dim() - event_dims, t.dim()))


def _two(two: dict, what: str, event_dims: int):
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
    for name, table in items:
        check_log_table(table, event_dims, what, name)
    return items
