"""Measure a denoiser's model error against the exact oracle (paper Eq. 6, Assumption 4.2).

For contexts ``h`` drawn as in MDM training — an exact sample ``x ~ p`` with each position masked
independently — the local error at a masked position ``i`` is

    eps(h, i) = KL( p_theta(. | h) || p(. | h) )      (nats; Eq. 6, the sampling-risk direction)

and :func:`model_error` reports its mean, the reverse KL, the mean true conditional entropy
``H(X_i | h)``, and the least-squares fit ``eps = alpha * H + intercept`` (the entropy term of
Assumption 4.2 with lambda = 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from mdmprob import info
from mdmprob.checks import check_int, check_match, check_number, generator
from mdmprob.denoisers.base import Denoiser
from mdmprob.denoisers.oracle import Oracle
from mdmprob.errors import EvidenceError, MdmprobError
from mdmprob.info import Estimate


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


def renamed(obj, old: str, new: str):
    """``obj.new``, with a ``DeprecationWarning`` saying that ``old`` is now ``new``."""
    import warnings

    warnings.warn(f"{type(obj).__name__}.{old} is now {new}", DeprecationWarning, stacklevel=3)
    return getattr(obj, new)


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
        kls.append(info.kl(q=log_q, p=log_p))
        rev.append(info.kl(p=log_p, q=log_q))
        ents.append(info.entropy(log_p))
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
    return ModelError(kl_qp=info.mc_mean(eps), kl_pq=info.mc_mean(eps_rev),
                      entropy=info.mc_mean(h), alpha=alpha, intercept=intercept, r2=r2,
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
