"""decoder x denoiser x structure -> metrics, exactly (small spaces) or by Monte Carlo with exact
densities.

``evaluate(structure, decoder, denoiser)`` returns an :class:`Evaluation`, a mapping whose keys are
relied on: ``kl_qp`` = KL(q‖p) (sampling risk), ``kl_pq`` = KL(p‖q) (information loss), ``tv``,
``incoherence`` (block level, Eq. 24: the mean over blocks of Pr_q[p(x_B | x_P) <= tau]),
``violation`` (mean over blocks of Pr_q[block violates the constraint]; sequence-level when the
constraint is), ``nfe`` (mean denoiser calls per sequence), and ``<key>_se`` (None when exact).

``kl_qp_lower`` / ``kl_qp_upper`` and ``kl_pq_lower`` / ``kl_pq_upper`` (with ``_se``) bracket the
KLs: equal to the value where the decoder's log q(x) is exact; in Monte Carlo mode for decoders
whose run reports a trajectory density, the bounds of :mod:`mdmprob.bounds` (``kl_qp`` is then
the midpoint of its interval, ``kl_pq`` the upper bound, ``kl_pq_lower`` None), named in
``Evaluation.notes``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from mdmprob import bounds, measures
from mdmprob.checks import generator
from mdmprob.decoders.core import Decoder
from mdmprob.decoders.protocol import DecoderBase
from mdmprob.denoisers.base import Denoiser
from mdmprob.deprecation import renamed
from mdmprob.errors import EnumerationError, MdmprobError
from mdmprob.structure import Structure

KEYS = ("kl_qp", "kl_pq", "tv", "incoherence", "violation", "nfe")


@dataclass
class Evaluation(Mapping):
    """Metrics with standard errors; behaves as a read-only mapping of ``KEYS`` and ``<key>_se``."""

    metrics: dict[str, float | None]
    mode: str  # "exact" or "mc"
    incoherence_at: dict[float, float] = field(default_factory=dict)
    incoherence_at_se: dict[float, float | None] = field(default_factory=dict)
    samples: int = 0
    wall_time: float = 0.0
    diagnostics: dict[str, float] = field(default_factory=dict)  # run diagnostics, averaged
    notes: list[str] = field(default_factory=list)

    @property
    def corrector(self) -> dict[str, float]:
        """Former name of :attr:`diagnostics` (warns)."""
        return renamed(self, "corrector", "diagnostics")

    def __getitem__(self, key: str):
        return self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_fmt(self.metrics[k], self.metrics.get(k + '_se'))}" for k in KEYS)
        return f"Evaluation({self.mode}: {shown})"


def evaluate(structure: Structure, decoder: DecoderBase, denoiser: Denoiser, *, mode: str = "auto",
             samples: int = 2000, seed: int = 0, tau: float = 1e-8,
             taus: Sequence[float] = (1e-2, 1e-4, 1e-6, 1e-8, 1e-10), oracle: Denoiser | None = None,
             exact_limit: int = 2**12, draws: int = bounds.DEFAULT_DRAWS) -> Evaluation:
    """Evaluate ``decoder`` driven by ``denoiser`` against the exact ``structure``.

    ``mode``: "exact" enumerates q over all V^n sequences; "mc" uses ``samples`` decoded sequences
    (and ``samples`` exact draws from p for KL(p‖q)) with exact log p and log q; "auto" is exact
    when V^n <= ``exact_limit``. ``nfe`` and the corrector's cost always come from a run of
    ``samples`` sequences. ``draws``: proposal trajectories per sequence (K) of the KL bounds for
    decoders whose log q is a trajectory density (Monte Carlo mode; see :mod:`mdmprob.bounds`).
    """
    _check(structure, denoiser, tau, taus, mode, samples)
    bounds.check_draws(draws)
    start = time.perf_counter()
    exact = mode == "exact" or (mode == "auto" and structure.vocab ** structure.n_tokens <= exact_limit)
    run = decoder.run(denoiser, samples, seed=seed, oracle=oracle, blocks=structure.blocks,
                      target=structure)
    taus = sorted(set(taus) | {tau})
    if exact:
        try:
            values, inc_at, inc_se = _exact(structure, decoder, denoiser, oracle, taus, tau)
        except EnumerationError:
            if mode == "exact":
                raise
            exact = False  # auto: the decoder's state space is too large to enumerate
    notes: list[str] = []
    if not exact:
        values, inc_at, inc_se = _monte_carlo(structure, decoder, denoiser, oracle, run, samples,
                                              seed, taus, tau, draws, notes)
    _fill_bounds(values)
    nfe = measures.mc_mean(run.nfe.to(torch.float64))
    values["nfe"], values["nfe_se"] = nfe.value, nfe.se
    diagnostics = {k: torch.cat([t.to(torch.float64).reshape(-1) for t in v]).mean().item()
                   for k, v in run.diagnostics.items()}
    return Evaluation(values, "exact" if exact else "mc", inc_at, inc_se, samples,
                      time.perf_counter() - start, diagnostics, notes)


def _exact(structure, decoder, denoiser, oracle, taus, tau):
    engine = structure.engine(device=denoiser.device, dtype=denoiser.dtype)
    n, V = structure.n_tokens, structure.vocab
    xs = torch.tensor(list(itertools.product(range(V), repeat=n)), dtype=torch.long,
                      device=engine.device)
    log_p = engine.log_prob(xs)
    log_q = decoder.distribution(denoiser, blocks=structure.blocks, oracle=oracle,
                                 target=structure).reshape(-1)
    values: dict[str, float | None] = {
        "kl_qp": measures.kl(q=log_q, p=log_p).item(), "kl_pq": measures.kl(p=log_p, q=log_q).item(),
        "tv": measures.tv(q=log_q, p=log_p).item()}
    block_lp = block_log_p(structure, engine, xs)  # [N, M]
    inc_at = {t: measures.expectation(log_q, (block_lp <= math.log(t)).double().mean(-1)).item()
              for t in taus}
    values["incoherence"] = inc_at[tau]
    viol = structure.violations(xs)
    values["violation"] = None if viol is None else measures.expectation(
        log_q, viol.double().reshape(len(xs), -1).mean(-1)).item()
    for k in ("kl_qp", "kl_pq", "tv", "incoherence", "violation"):
        values[k + "_se"] = None
    return values, inc_at, dict.fromkeys(taus)


def _monte_carlo(structure, decoder, denoiser, oracle, run, samples, seed, taus, tau, draws,
                 notes):
    engine = structure.engine(device=denoiser.device, dtype=denoiser.dtype)
    xs = run.tokens
    log_p = engine.log_prob(xs)
    values: dict[str, float | None] = {}
    if _is_mean_field(decoder):
        # Rao-Blackwellised: sum over blocks of the exact conditional KLs given each prefix
        rev, fwd = _mean_field_decomposition(structure, engine, xs, seed, samples)
        values["kl_qp"], values["kl_qp_se"] = rev.value, rev.se
        values["kl_pq"], values["kl_pq_se"] = fwd.value, fwd.se
    elif run.log_q_is_marginal and (at_p := _log_q_at_p(
            structure, decoder, denoiser, oracle, engine, xs, seed, notes)) is not None:
        est = measures.mc_kl(run.log_q, log_p)
        values["kl_qp"], values["kl_qp_se"] = est.value, est.se
        p_xs, log_q_p = at_p
        est = measures.mc_kl(engine.log_prob(p_xs), log_q_p)
        values["kl_pq"], values["kl_pq_se"] = est.value, est.se
    else:
        values.update(_trajectory_bounds(structure, decoder, denoiser, oracle, run, engine, log_p,
                                         seed, draws, notes))
    values["tv"], values["tv_se"] = None, None  # TV needs q(x) at p-samples and vice versa
    if values["kl_qp"] is not None and values["kl_qp"] == 0 and values["kl_pq"] == 0:
        values["tv"] = 0.0
    block_lp = block_log_p(structure, engine, xs)
    inc_at, inc_se = {}, {}
    for t in taus:
        est = measures.mc_mean((block_lp <= math.log(t)).double().mean(-1))
        inc_at[t], inc_se[t] = est.value, est.se
    values["incoherence"], values["incoherence_se"] = inc_at[tau], inc_se[tau]
    viol = structure.violations(xs)
    if viol is None:
        values["violation"], values["violation_se"] = None, None
    else:
        est = measures.mc_mean(viol.double().reshape(len(xs), -1).mean(-1))
        values["violation"], values["violation_se"] = est.value, est.se
    return values, inc_at, inc_se


def _log_q_at_p(structure, decoder, denoiser, oracle, engine, xs, seed, notes):
    """``(samples of p [N, n], log q(x) there [N])``, or None (with a note) when summing the
    decoder's tie-break branches there is over the exact-mode limits: the bounds are used
    instead."""
    p_xs = _p_samples(engine, xs, seed)
    try:
        return p_xs, decoder.log_prob(denoiser, p_xs, blocks=structure.blocks, oracle=oracle,
                                      target=structure)
    except EnumerationError as e:
        notes.append(f"log q(x) at samples of p is intractable here ({e}); the KL values are "
                     "the trajectory bounds")
        return None


def _trajectory_bounds(structure, decoder, denoiser, oracle, run, engine, log_p, seed, draws,
                       notes) -> dict[str, float | None]:
    """KL bounds for a decoder whose run reports a trajectory density (:mod:`mdmprob.bounds`)."""
    gen = torch.Generator(device=engine.device).manual_seed(seed + 2)
    kw = dict(draws=draws, generator=gen, blocks=structure.blocks, oracle=oracle,
              target=structure)
    try:
        own = decoder.log_weights(denoiser, run.tokens, committed=run.committed,
                                  diagnostics=run.diagnostics, **kw)
    except NotImplementedError:
        return _fallback_bounds(decoder, run, log_p, notes)
    lower, upper = bounds.kl_qp_bounds(own, log_p)
    lower = _not_below_zero(lower)
    p_xs = _p_samples(engine, run.tokens, seed)
    at_p = decoder.log_weights(denoiser, p_xs, **kw)
    pq = bounds.kl_pq_upper(at_p, engine.log_prob(p_xs))
    out = {"kl_qp_lower": lower.value, "kl_qp_lower_se": lower.se,
           "kl_qp_upper": upper.value, "kl_qp_upper_se": upper.se,
           "kl_pq_lower": None, "kl_pq_lower_se": None,
           "kl_pq_upper": pq.value, "kl_pq_upper_se": pq.se, "kl_pq": pq.value, "kl_pq_se": pq.se}
    out["kl_qp"], out["kl_qp_se"] = _midpoint(lower, upper)
    notes.append(f"kl_qp: midpoint of [kl_qp_lower, kl_qp_upper], the importance-weighted "
                 f"(K = {draws}) and reverse-importance bounds on log q(x) with the decoder "
                 "replayed with its values forced to x as proposal")
    notes.append(f"kl_pq: an upper bound (importance-weighted, K = {draws}); no lower bound")
    return out


def _fallback_bounds(decoder, run, log_p, notes) -> dict[str, float | None]:
    """No proposal: E_q[log q(x, tau) - log p(x)] <= KL(q‖p) <= E_q[-log p(x)]."""
    upper = measures.mc_mean(-log_p)
    if decoder.log_q_is_joint:
        lower = measures.mc_mean(bounds.q_side(run.log_q, log_p))
        how = "E_q[log q(x, tau) - log p(x)] (q(x) >= q(x, tau))"
    else:
        lower = measures.Estimate(0.0, 0.0, len(log_p))
        how = "0"
    lower = _not_below_zero(lower)
    if lower.value == math.inf:
        upper = lower
    out = {"kl_qp_lower": lower.value, "kl_qp_lower_se": lower.se,
           "kl_qp_upper": upper.value, "kl_qp_upper_se": upper.se,
           "kl_pq": None, "kl_pq_se": None, "kl_pq_lower": None, "kl_pq_lower_se": None,
           "kl_pq_upper": None, "kl_pq_upper_se": None}
    out["kl_qp"], out["kl_qp_se"] = _midpoint(lower, upper)
    notes.append(f"kl_qp: {decoder.name} has no trajectory proposal; fallback bounds, lower {how}, "
                 "upper the cross-entropy E_q[-log p(x)] (log q(x) <= 0); kl_qp is their "
                 "midpoint; kl_pq: not available")
    return out


def _not_below_zero(lower: measures.Estimate) -> measures.Estimate:
    """A lower bound on a KL whose estimate is negative is replaced by 0, which is a certain
    bound (a KL is never negative): the interval and its midpoint then stay at or above 0."""
    if lower.value < 0:
        return measures.Estimate(0.0, 0.0, lower.n)
    return lower


def _midpoint(lower, upper):
    """The point value of a KL interval: its midpoint (the lower end when the upper one is
    infinite and the lower is not: the truth is then only known to be above it)."""
    if upper is None or upper.value == math.inf:
        return lower.value, lower.se
    return (lower.value + upper.value) / 2, math.hypot(lower.se, upper.se) / 2


def _fill_bounds(values) -> None:
    """Where a KL is exact (or an exact-density estimate), its bounds are the value itself."""
    for k in ("kl_qp", "kl_pq"):
        if k + "_lower" not in values:
            for side in ("_lower", "_upper"):
                values[k + side], values[k + side + "_se"] = values[k], values[k + "_se"]


def block_log_p(structure, engine, xs) -> torch.Tensor:
    """log p(x_{B_m} | x_{P_m}) for every sequence ``xs [N, n]`` and decoding block, ``[N, M]``
    (P_m = the earlier blocks); -inf from the first block that is impossible on."""
    out, visible = [], torch.zeros_like(xs, dtype=torch.bool)
    before = torch.zeros(len(xs), dtype=engine.dtype, device=engine.device)
    for block in structure.blocks:
        visible = visible.clone()
        visible[:, block] = True
        after = engine.log_prob_visible(xs, visible)
        out.append(torch.where(before > -math.inf, after - before, torch.full_like(after, -math.inf)))
        before = after
    return torch.stack(out, -1)


def _is_mean_field(decoder: Decoder) -> bool:
    from mdmprob.decoders.primitives import WholeWindow

    return (type(decoder) is Decoder and decoder.corrector is None
            and isinstance(decoder.commit, WholeWindow)
            and decoder.window == "blocks" and decoder.temperature == 1)


def _p_samples(engine, like: torch.Tensor, seed: int) -> torch.Tensor:
    """As many samples of p as ``like [N, n]`` has rows, from the stream ``seed + 1`` (apart from
    the decoder's, which uses ``seed``)."""
    empty = torch.zeros_like(like)
    return engine.sample(empty, torch.zeros_like(like, dtype=torch.bool),
                         generator=generator(seed + 1, engine.device))


def _mean_field_decomposition(structure, engine, q_xs, seed, samples):
    """Eqs. 16/18 per sample: sum_m reverse TC at q-prefixes, sum_m forward TC at p-prefixes."""
    p_xs = _p_samples(engine, q_xs, seed)
    rev = torch.zeros(len(q_xs), dtype=engine.dtype, device=engine.device)
    fwd = torch.zeros_like(rev)
    prefix = torch.zeros_like(q_xs, dtype=torch.bool)
    for block in structure.blocks:
        k = len(block)
        rev = rev + measures.reverse_tc(engine.block_joint(q_xs, prefix, block), k)
        fwd = fwd + measures.forward_tc(engine.block_joint(p_xs, prefix, block), k)
        prefix = prefix.clone()
        prefix[:, block] = True
    return measures.mc_mean(rev), measures.mc_mean(fwd)


def _check(structure, denoiser, tau, taus, mode, samples):
    if (denoiser.n_tokens, denoiser.vocab) != (structure.n_tokens, structure.vocab):
        raise MdmprobError(
            f"decoder/structure mismatch: the denoiser has {denoiser.n_tokens} tokens over vocab "
            f"{denoiser.vocab}, the structure {structure.name!r} has {structure.n_tokens} over "
            f"{structure.vocab}")
    for t in [tau, *taus]:
        if not (isinstance(t, int | float) and 0 < t <= 1):
            raise MdmprobError(f"incoherence threshold tau={t!r} must be in (0, 1]")
    if mode not in ("auto", "exact", "mc"):
        raise MdmprobError(f"mode={mode!r} must be 'auto', 'exact' or 'mc'")
    if not isinstance(samples, int) or samples < 2:
        raise MdmprobError(f"samples={samples!r} must be an integer >= 2")


def _fmt(v, se) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if se is None else f"{v:.4g}±{se:.2g}"


__all__ = ["KEYS", "Evaluation", "evaluate"]

