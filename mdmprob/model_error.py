"""Measuring a denoiser's error against the exact oracle (paper Eq. 6, Assumption 4.2).

(Formerly ``mdmprob.denoisers.error`` and ``mdmprob.error_analysis``; both still import, with a
``DeprecationWarning``.) :func:`model_error` and :func:`error_by_position_and_ratio` share one
sample-mask-compare loop, :func:`masked_pairs`.

For contexts ``h`` drawn as in MDM training — an exact sample ``x ~ p`` with each position masked
independently — the local error at a masked position ``i`` is

    eps(h, i) = KL( p_theta(. | h) || p(. | h) )      (nats; Eq. 6, the sampling-risk direction)

and :func:`model_error` reports its mean, the reverse KL, the mean true conditional entropy
``H(X_i | h)``, and the least-squares fit ``eps = alpha * H + intercept`` (the entropy term of
Assumption 4.2 with lambda = 0).

:func:`error_by_position_and_ratio` tabulates the exact local error of a denoiser against the
oracle by sequence position and masking ratio: for each ratio r, ``num`` exact samples ``x ~ p``
have each position masked independently with probability r, and at every masked position i

    KL(p(. | h) || p_theta(. | h))   and   KL(p_theta(. | h) || p(. | h))   (nats)

are computed exactly, with the true conditional entropy ``H(X_i | h)``, and averaged per
(ratio, position) bin.

:func:`fit_assumption_4_2` measures the error a decoder actually meets. It decodes ``num``
sequences with a one-token-per-step decoder driven by the denoiser and, at each step t of each
rollout, records the local error at the committed position ``i_t`` in the current context ``h_t``

    eps_t = KL( p_theta(. | h_t) || p(. | h_t) ),     H_t = H_p(X_{i_t} | h_t),

then fits Assumption 4.2 (paper §1.8, App. B) by least squares over all (rollout, step) pairs:

    eps_t = alpha * H_t + lambda * mean_{k<t} eps_k + b       (mean over an empty past := 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from mdmprob import measures
from mdmprob.checks import check_int, check_match, check_number, generator
from mdmprob.deprecation import renamed
from mdmprob.errors import EvidenceError, MdmprobError
from mdmprob.measures import Estimate

if TYPE_CHECKING:
    from mdmprob.denoisers.base import Denoiser
    from mdmprob.denoisers.oracle import Oracle

__all__ = [
    "DEFAULT_RATIOS", "AssumptionFit", "ErrorTable", "ModelError", "RolloutErrors",
    "error_by_position_and_ratio", "fit_assumption_4_2", "fit_points", "masked_pairs",
    "model_error", "rollout_errors",
]

DEFAULT_RATIOS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)



@dataclass(frozen=True)
class ModelError:
    """Model error of a denoiser, over the masked positions of ``num`` sampled contexts (nats).

    KL is named by its arguments with q = the model p_theta and p = the truth (the former names
    ``kl_model_true`` / ``kl_true_model`` still read, with a ``DeprecationWarning``).

    Attributes:
        kl_qp: mean of ``KL(p_theta(.|h) || p(.|h))`` with its standard error
            (``+inf`` if any position has p_theta > 0 = p).
        kl_pq: mean of ``KL(p(.|h) || p_theta(.|h))``.
        entropy: mean true conditional entropy ``H(X_i | h)``.
        alpha, intercept: least-squares fit ``KL(p_theta || p) = alpha * H + intercept`` over the
            masked positions with a finite KL (NaN when fewer than two distinct H values).
        r2: coefficient of determination of that fit (NaN when the KLs do not vary).
        n_masked: masked positions measured (the sample size of the means).
        n_infinite: of those, positions with ``KL(p_theta || p) = +inf``, left out of the fit.
        per_position: mean ``KL(p_theta || p)`` at each sequence position over the contexts
            where it is masked (NaN for a position never masked).
    """

    kl_qp: Estimate
    kl_pq: Estimate
    entropy: Estimate
    alpha: float
    intercept: float
    r2: float
    n_masked: int
    n_infinite: int
    per_position: list[float]

    def as_dict(self) -> dict:
        """Plain floats and lists, e.g. for a JSON report."""
        out = asdict(self)
        for key in ("kl_qp", "kl_pq", "entropy"):
            est = getattr(self, key)
            out[key], out[f"{key}_se"] = est.value, est.se
        return out

    kl_model_true = property(lambda self: renamed(self, "kl_model_true", "kl_qp"))
    kl_true_model = property(lambda self: renamed(self, "kl_true_model", "kl_pq"))



def model_error(denoiser: Denoiser, oracle: Oracle, *, num: int = 2000, seed: int = 0,
                mask_rate: float | None = None, batch_size: int = 1024) -> ModelError:
    """Model error of ``denoiser`` against the exact conditionals of ``oracle``.

    Draws ``num`` exact sequences ``x ~ p`` with ``oracle.engine.sample`` (a seeded generator on
    the engine's device), masks each position independently with probability ``mask_rate``
    (default: a rate drawn uniformly in (0, 1) per sequence, as in MDM training), evaluates both
    denoisers on the masked sequences (``batch_size`` sequences per call) and averages over the
    masked positions. See :class:`ModelError` for the fields.
    """
    check_match(denoiser, oracle, "oracle", EvidenceError)
    check_int("num", num, 1)
    if mask_rate is not None:
        check_number("mask_rate", mask_rate, 0, 1, low_open=True)
    kls, rev, ents, masks = [], [], [], []
    g = generator(seed, oracle.engine.device)
    for masked, log_p, log_q in masked_pairs(denoiser, oracle, num, g, mask_rate, batch_size):
        kls.append(measures.kl(q=log_q, p=log_p))
        rev.append(measures.kl(p=log_p, q=log_q))
        ents.append(measures.entropy(log_p))
        masks.append(masked)
    masked = torch.cat(masks)
    if not masked.any():
        raise MdmprobError(f"no position was masked in {num} sequences (mask_rate={mask_rate}); "
                           "raise num or mask_rate")
    kl_all = torch.cat(kls)
    eps, eps_rev, h = kl_all[masked], torch.cat(rev)[masked], torch.cat(ents)[masked]
    alpha, intercept, r2, n_inf = _fit(h, eps)
    count = masked.sum(0)
    sums = torch.where(masked, kl_all, torch.zeros_like(kl_all)).sum(0)
    per_position = [s / c if c > 0 else math.nan for s, c in zip(sums.tolist(), count.tolist(),
                                                                  strict=True)]
    return ModelError(kl_qp=measures.mc_mean(eps), kl_pq=measures.mc_mean(eps_rev),
                      entropy=measures.mc_mean(h), alpha=alpha, intercept=intercept, r2=r2,
                      n_masked=int(masked.sum()), n_infinite=n_inf, per_position=per_position)


def masked_pairs(denoiser: Denoiser, oracle: Oracle, num: int, generator: torch.Generator,
                 mask_rate: float | None = None, batch_size: int = 1024):
    """The sample-mask-compare loop shared by the error measures.

    Per batch of at most ``batch_size`` of ``num`` exact sequences ``x ~ p`` (``oracle.engine``,
    drawn with ``generator``), each position is masked independently with probability
    ``mask_rate`` (``None``: a rate drawn uniformly in (0, 1) per sequence); yields
    ``(masked [b, n] bool, log p(. | h) [b, n, V], log p_theta(. | h) [b, n, V])``, float64 on
    the engine's device, ``h`` the masked sequences (mask id ``V``)."""
    engine = oracle.engine
    n, vocab, device = oracle.n_tokens, oracle.vocab, engine.device
    for start in range(0, num, batch_size):
        b = min(batch_size, num - start)
        x = engine.sample(torch.zeros(b, n, dtype=torch.long, device=device),
                          torch.zeros(b, n, dtype=torch.bool, device=device), generator=generator)
        rate = (torch.rand(b, 1, generator=generator, device=device, dtype=torch.float64)
                if mask_rate is None else float(mask_rate))
        masked = torch.rand(b, n, generator=generator, device=device, dtype=torch.float64) < rate
        tokens = torch.where(masked, torch.full_like(x, vocab), x)
        with torch.no_grad():
            log_p = oracle(tokens).to(device, torch.float64)
            log_q = denoiser(tokens).to(device, torch.float64)
        yield masked, log_p, log_q


def _fit(h: torch.Tensor, eps: torch.Tensor) -> tuple[float, float, float, int]:
    """Least squares ``eps = alpha * h + intercept`` over the finite ``eps``; returns
    ``(alpha, intercept, r2, number of infinite eps left out)``."""
    finite = torch.isfinite(eps)
    n_inf = int((~finite).sum())
    h, eps = h[finite], eps[finite]
    if eps.numel() < 2 or h.unique().numel() < 2:
        return math.nan, math.nan, math.nan, n_inf
    hc, ec = h - h.mean(), eps - eps.mean()
    alpha = (hc * ec).sum() / (hc * hc).sum()
    intercept = eps.mean() - alpha * h.mean()
    ss_tot = (ec * ec).sum()
    ss_res = ((eps - alpha * h - intercept) ** 2).sum()
    r2 = (1 - ss_res / ss_tot).item() if ss_tot > 0 else math.nan
    return alpha.item(), intercept.item(), r2, n_inf


# ---------------------------------------------------------------------- error by position/ratio
@dataclass(frozen=True)
class ErrorTable:
    """Exact local error by masking ratio (rows) and position (columns), in nats.

    Attributes:
        ratios: the masking ratios, one per row.
        kl_pq, kl_qp: ``[R][n]`` means of ``KL(p || p_theta)`` and
            ``KL(p_theta || p)`` over the contexts where the position was masked (NaN when it
            never was; ``inf`` when some context gives p_theta > 0 = p, resp. p > 0 = p_theta).
        entropy: ``[R][n]`` mean true conditional entropy ``H(X_i | h)`` per bin.
        count: ``[R][n]`` masked positions averaged in each bin.
        by_ratio: per ratio, the means over all masked positions (``kl_pq``,
            ``kl_qp``, ``entropy``, ``count``).
    """

    ratios: list[float]
    kl_pq: list[list[float]]
    kl_qp: list[list[float]]
    entropy: list[list[float]]
    count: list[list[int]]
    by_ratio: list[dict]

    def as_dict(self) -> dict:
        return asdict(self)

    kl_model_true = property(lambda self: renamed(self, "kl_model_true", "kl_qp"))
    kl_true_model = property(lambda self: renamed(self, "kl_true_model", "kl_pq"))


def error_by_position_and_ratio(denoiser: Denoiser, oracle, *, num: int = 1000, seed: int = 0,
                                ratios: Sequence[float] = DEFAULT_RATIOS,
                                batch_size: int = 1024) -> ErrorTable:
    """Exact error table of ``denoiser`` against ``oracle`` (an :class:`Oracle`, whose engine
    draws the exact samples) for each masking ratio in ``ratios`` (each in (0, 1]); ``num``
    sequences per ratio, the whole table fixed by ``seed``. See :class:`ErrorTable`."""
    check_match(denoiser, oracle, "oracle", EvidenceError)
    check_int("num", num, 1)
    check_int("batch_size", batch_size, 1)
    ratios = [float(r) for r in ratios]
    if not ratios or not all(0 < r <= 1 for r in ratios):
        raise MdmprobError(f"ratios={ratios} must be a non-empty list of numbers in (0, 1]")
    n, device = oracle.n_tokens, oracle.engine.device
    g = generator(seed, device)
    rows = {k: [] for k in ("kl_pq", "kl_qp", "entropy", "count")}
    by_ratio = []
    for ratio in ratios:
        sums = {k: torch.zeros(n, dtype=torch.float64, device=device)
                for k in ("kl_pq", "kl_qp", "entropy")}
        count = torch.zeros(n, dtype=torch.long, device=device)
        for masked, log_p, log_q in masked_pairs(denoiser, oracle, num, g, ratio, batch_size):
            values = {"kl_pq": measures.kl(p=log_p, q=log_q),
                      "kl_qp": measures.kl(q=log_q, p=log_p),
                      "entropy": measures.entropy(log_p)}
            for key, v in values.items():
                sums[key] += torch.where(masked, v, torch.zeros_like(v)).sum(0)
            count += masked.sum(0)
        safe = count.clamp(min=1).to(torch.float64)
        total = int(count.sum())
        summary = {"ratio": ratio, "count": total}
        for key, s in sums.items():
            mean = torch.where(count > 0, s / safe, torch.full_like(s, math.nan))
            rows[key].append(mean.tolist())
            summary[key] = s.sum().item() / total if total else math.nan
        rows["count"].append(count.tolist())
        by_ratio.append(summary)
    return ErrorTable(ratios, rows["kl_pq"], rows["kl_qp"], rows["entropy"],
                      rows["count"], by_ratio)


# ---------------------------------------------------------------------- Assumption 4.2
@dataclass(frozen=True)
class AssumptionFit:
    """Least-squares fit of ``eps_t = alpha * H_t + lam * mean_{k<t} eps_k + b`` (nats).

    Attributes:
        alpha, lam, b: the coefficients (``lam`` is the paper's lambda). Where the regressors are
            collinear (e.g. every eps is 0) the minimum-norm solution is returned, so an exact
            denoiser gives ``alpha = lam = b = 0``; coefficients below 1e-14 in magnitude
            (round-off) are reported as 0.
        r2: coefficient of determination; 1.0 when eps does not vary (the intercept fits it
            exactly), NaN only when no finite point is left.
        n: (rollout, step) points in the fit.
        n_infinite: points left out because ``eps_t`` or its past mean is infinite.
        rank: rank of the design matrix (3 when all three coefficients are identified).
        mean_eps, mean_entropy: means of eps_t and H_t over the fitted points.
        eps_by_step, entropy_by_step: mean eps_t and H_t at each step t (over rollouts).
    """

    alpha: float
    lam: float
    b: float
    r2: float
    n: int
    n_infinite: int
    rank: int
    mean_eps: float
    mean_entropy: float
    eps_by_step: list[float]
    entropy_by_step: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RolloutErrors:
    """Per-step local errors along decoded rollouts, ``[num, n]`` tensors (row = rollout, column
    = step t): ``eps`` (``KL(p_theta || p)`` at the committed position), ``entropy`` (true
    ``H_t``), ``past`` (``mean_{k<t} eps_k``, 0 at t = 0), ``position`` (the committed
    position) and ``tokens`` (the decoded sequences ``[num, n]``)."""

    eps: torch.Tensor
    entropy: torch.Tensor
    past: torch.Tensor
    position: torch.Tensor
    tokens: torch.Tensor


def rollout_errors(denoiser: Denoiser, oracle: Denoiser, decoder, *, num: int = 256,
                   seed: int = 0, batch_size: int = 512) -> RolloutErrors:
    """Decode ``num`` sequences with ``decoder`` (one token per step) on ``denoiser`` and replay
    each trajectory, recording the exact local error and true entropy at every step."""
    check_match(denoiser, oracle, "oracle", EvidenceError)
    check_int("num", num, 1)
    check_int("batch_size", batch_size, 1)
    n, mask_id = denoiser.n_tokens, denoiser.mask_id
    g = generator(seed, denoiser.device)
    eps_all, ent_all, pos_all, tok_all = [], [], [], []
    for start in range(0, num, batch_size):
        b = min(batch_size, num - start)
        run = decoder.run(denoiser, b, generator=g, oracle=oracle)
        tokens = run.tokens
        state = torch.full_like(tokens, mask_id)
        eps = torch.full((b, n), math.nan, dtype=torch.float64)
        ent = torch.full((b, n), math.nan, dtype=torch.float64)
        pos = torch.full((b, n), -1, dtype=torch.long)
        step_no = torch.zeros(b, dtype=torch.long)
        for sel in run.committed:
            sel = sel.to(tokens.device)
            per_row = sel.sum(-1)
            if (per_row > 1).any():
                raise MdmprobError(f"decoder {getattr(decoder, 'name', decoder)!r} committed "
                                   f"{int(per_row.max())} tokens in one step; Assumption 4.2 is "
                                   "fitted along one-token-per-step decoders (e.g. sequential())")
            active = (per_row == 1).cpu()
            if not active.any():
                continue
            with torch.no_grad():
                log_q = denoiser(state).to(torch.float64)
                log_p = oracle(state).to(log_q.device, torch.float64)
            where = sel.long().argmax(-1)
            idx = where[:, None, None].expand(-1, 1, log_q.shape[-1]).to(log_q.device)
            q_i, p_i = log_q.gather(1, idx)[:, 0], log_p.gather(1, idx)[:, 0]
            e_t, h_t = measures.kl(q=q_i, p=p_i).cpu(), measures.entropy(p_i).cpu()
            rows = active.nonzero()[:, 0]
            cols = step_no[rows]
            eps[rows, cols], ent[rows, cols] = e_t[rows], h_t[rows]
            pos[rows, cols] = where.cpu()[rows]
            step_no += active.long()
            state = torch.where(sel, tokens, state)
        if (step_no != n).any():
            raise MdmprobError(f"decoder {getattr(decoder, 'name', decoder)!r} did not commit "
                               f"exactly one token per step over {n} steps")
        eps_all.append(eps)
        ent_all.append(ent)
        pos_all.append(pos)
        tok_all.append(tokens.cpu())
    eps, ent = torch.cat(eps_all), torch.cat(ent_all)
    csum = torch.cumsum(eps, dim=1)
    steps = torch.arange(1, n + 1, dtype=torch.float64)
    past = torch.zeros_like(eps)
    past[:, 1:] = (csum / steps)[:, :-1]
    return RolloutErrors(eps, ent, past, torch.cat(pos_all), torch.cat(tok_all))


def fit_assumption_4_2(denoiser: Denoiser, oracle: Denoiser, decoder, *, num: int = 256,
                       seed: int = 0, batch_size: int = 512) -> AssumptionFit:
    """Fit Assumption 4.2 along ``num`` rollouts of ``decoder`` (one token per step, e.g.
    ``sequential(order)``) driven by ``denoiser``, with exact errors from ``oracle``. Returns
    an :class:`AssumptionFit`; :func:`rollout_errors` gives the underlying per-step values."""
    r = rollout_errors(denoiser, oracle, decoder, num=num, seed=seed, batch_size=batch_size)
    return fit_points(r.eps, r.entropy, r.past)


def fit_points(eps: torch.Tensor, entropy: torch.Tensor, past: torch.Tensor) -> AssumptionFit:
    """Least squares ``eps = alpha * entropy + lam * past + b`` over the finite points of
    ``[num, steps]`` tables (see :class:`AssumptionFit`)."""
    e, h, m = (np.asarray(t.detach().cpu(), dtype=np.float64) for t in (eps, entropy, past))
    eps_by_step = [float(v) for v in _nanmean_cols(np.where(np.isfinite(e), e, np.nan))]
    ent_by_step = [float(v) for v in _nanmean_cols(h)]
    finite = np.isfinite(e) & np.isfinite(h) & np.isfinite(m)
    n_inf = int((~finite & ~np.isnan(e)).sum())
    e, h, m = e[finite], h[finite], m[finite]
    if e.size == 0:
        return AssumptionFit(math.nan, math.nan, math.nan, math.nan, 0, n_inf, 0, math.nan,
                             math.nan, eps_by_step, ent_by_step)
    design = np.stack([h, m, np.ones_like(h)], axis=1)
    # scale the columns so rank decisions do not depend on units; min-norm in scaled units
    scale = np.abs(design).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _, rank, _ = np.linalg.lstsq(design / scale, e, rcond=None)
    coef = coef / scale
    resid = e - design @ coef
    ss_res = float(resid @ resid)
    ss_tot = float(((e - e.mean()) ** 2).sum())
    tiny = 1e-24 * max(1.0, float(e @ e))
    r2 = 1.0 if ss_tot <= tiny else 1.0 - ss_res / ss_tot
    alpha, lam, b = (0.0 if abs(c) < 1e-14 else float(c) for c in coef)
    return AssumptionFit(alpha, lam, b, float(r2), int(e.size), n_inf, int(rank), float(e.mean()),
                         float(h.mean()), eps_by_step, ent_by_step)


def _nanmean_cols(a: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(a)
    counts = ok.sum(0)
    sums = np.where(ok, a, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
