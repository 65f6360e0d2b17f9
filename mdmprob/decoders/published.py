"""Scores and commit rules of the published decoders of 2025–2026 (Dream, DUS, PC-Sampler,
Prophet), the randomised position choice of Dream's ``alg_temp``, and ReMDM's loop schedule
(:class:`ReMDMLoop`, a :class:`~mdmprob.decoders.remask.ReMDM` with its own rates).

Each is one small primitive composed by a preset in :mod:`mdmprob.decoders.presets`; the step law,
the drivers and exact mode are the shared ones. Dream's ``alg_temp > 0`` draws the committed
positions without replacement from ``softmax(key / alg_temp)`` (Plackett–Luce), which is its own
step law, :class:`PlackettLuceStep`.

Conventions: keys are in the paper's units (probabilities, nats); a position's key may read the
value drawn there (``uses_draws``), then ``value_keys`` gives the key of every value, ``[B, n, V]``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from mdmprob.checks import check_int, check_number
from mdmprob.decoders.core import Decoder
from mdmprob.decoders.primitives import CommitRule, EvenSplit, Score, Step, ValueLaw, entropy_of
from mdmprob.decoders.remask import ReMDM
from mdmprob.decoders.step import (
    EXPANSION_BUDGET,
    SelectionStep,
    first_only,
    option_product,
    scatter_logsumexp,
)
from mdmprob.errors import BudgetError, MdmprobError, unknown_name

DREAM_ALGS = {
    "origin": "each mask revealed independently with probability 1 - s/t (MDLM-style)",
    "maskgit_plus": "most confident first: the probability of the drawn value (the largest one "
                    "at T = 0)",
    "topk_margin": "largest top-1 minus top-2 probability first",
    "entropy": "lowest entropy first (the key is sum_v p log p)",
}


# ----------------------------------------------------------------------------------- Dream
def dream_times(steps: int, eps: float, step: torch.Tensor, dtype) -> tuple:
    """Dream's time grid ``linspace(1, eps, steps + 1)``: ``(t, s)`` of step ``step`` (0-based),
    float64 (the reference computes it in float32; the two differ only where
    ``|M| (1 - s/t)`` lands within float32 round-off of an integer)."""
    i = step.to(dtype)
    t = 1.0 - i * (1.0 - eps) / steps
    s = 1.0 - (i + 1.0) * (1.0 - eps) / steps
    return t, s


class _DreamGrid(CommitRule):
    """A commit rule on Dream's time grid ``linspace(1, eps, steps + 1)``; ``label`` names it."""

    label = "dream"

    def __init__(self, steps: int, eps: float = 1e-3):
        self.steps = check_int("steps", steps, 1)
        self.eps = check_number("eps", eps, 0, 1,
                                low_open=True, high_open=True)
        self.name = f"{self.label}(steps={steps})"


class DreamSchedule(_DreamGrid):
    """Dream ``diffusion_generate`` count: ``floor(|M| (1 - s/t))`` of the ``|M|`` masks at
    step i with (t, s) consecutive points of ``linspace(1, eps, steps + 1)`` (possibly 0: the
    step only calls the model); every mask at the last step."""

    uses_scores = False
    label = "dream_count"

    def count(self, step, ranked_scores, order):
        t, s = dream_times(self.steps, self.eps, step.step, torch.float64)
        m = step.n_candidates
        k = torch.floor(m.to(torch.float64) * (1.0 - s / t)).long()
        return torch.where(step.step >= self.steps - 1, m, k.clamp(min=0))


class DreamBernoulli(_DreamGrid):
    """Dream ``origin``: each mask revealed independently with probability ``1 - s/t``
    (1 at the last step) on the grid ``linspace(1, eps, steps + 1)``."""

    stochastic = True
    label = "dream_origin"

    def probs(self, step: Step) -> torch.Tensor:
        t, s = dream_times(self.steps, self.eps, step.step, step.logp.dtype)
        p = torch.where(step.step >= self.steps - 1, torch.ones_like(t), 1.0 - s / t)
        return p[:, None].expand(step.candidates.shape)


class DreamScore(Score):
    """Dream's position keys, computed from the law values are drawn from (``softmax(logits /
    T)`` cut to top-p / top-k, as its ``sample_tokens``; at T = 0 the cut softmax at T = 1):
    ``maskgit_plus`` the probability of the drawn value (T > 0, sample-then-choose) or the largest
    probability (T = 0); ``topk_margin`` top-1 minus top-2; ``entropy`` sum_v p log p (nats)."""

    def __init__(self, alg: str, values: ValueLaw):
        if alg not in DREAM_ALGS or alg == "origin":
            raise unknown_name("Dream position score", str(alg),
                               [a for a in DREAM_ALGS if a != "origin"])
        self.alg, self.name = alg, f"dream_{alg}"
        self.law = ValueLaw(values.temperature if values.temperature > 0 else 1.0,
                            values.top_k, values.top_p, values.nucleus)
        self.uses_draws = alg == "maskgit_plus" and values.temperature > 0
        self._last: tuple | None = None  # (logp, its law): keys and value keys read one step

    def _law_at(self, logp: torch.Tensor) -> torch.Tensor:
        if self._last is None or self._last[0] is not logp:
            self._last = (logp, self.law.log_probs(logp))
        return self._last[1]

    def __call__(self, step, draws=None):
        logq = self._law_at(step.logp)
        if self.uses_draws:
            return logq.gather(-1, draws[..., None]).squeeze(-1).exp()
        if self.alg == "maskgit_plus":
            return logq.amax(-1).exp()
        if self.alg == "topk_margin":
            top = logq.exp().topk(2, dim=-1).values
            return top[..., 0] - top[..., 1]
        return -entropy_of(logq)

    def value_keys(self, step):
        """p(v) under the drawing law, ``[B, n, V]`` (sample-then-choose)."""
        return self._law_at(step.logp).exp()


class PlackettLuceStep(SelectionStep):
    """Dream ``alg_temp > 0``: the count k comes from the commit rule (a function of the step
    counters), the k positions are drawn without replacement with probabilities
    ``softmax(key / alg_temp)`` over the candidates (``torch.multinomial`` in the reference,
    i.e. Plackett–Luce). log Pr[set S] sums over the orders of S, by a recursion over the
    subsets of S (exact; 2^k terms)."""

    def __init__(self, rule, view: Step, alg_temp: float):
        super().__init__(rule, view)
        self.alg_temp = alg_temp

    def restricted(self, view: Step) -> PlackettLuceStep:
        return PlackettLuceStep(self.rule, view, self.alg_temp)

    def sample(self, generator: torch.Generator):
        view = self.view
        cand = view.candidates
        draws = self.draw(generator)
        logw = self._log_weights(view, draws)
        k = self._k(view)
        # Gumbel top-k of the log-weights: a draw without replacement, in order
        u = torch.rand(logw.shape, generator=generator, device=logw.device, dtype=logw.dtype)
        g = torch.where(cand, logw - torch.log(-torch.log(u)), torch.full_like(logw, -math.inf))
        rank = torch.empty_like(g, dtype=torch.long).scatter_(
            -1, g.argsort(-1, descending=True), torch.arange(
                g.shape[-1], device=g.device).expand_as(g).contiguous())
        sel = cand & (rank < k[:, None])
        lp_tokens = self.token_log_probs(sel, draws, self._selection_lp(sel, draws))
        return sel, draws, lp_tokens, torch.zeros_like(cand[:, 0])

    def log_prob(self, sel: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        cand = self.view.candidates
        sel = sel & cand
        V = self.values_lp.shape[-1]
        values = values.clamp(0, V - 1)
        picked = self.values_lp.gather(-1, values[..., None]).squeeze(-1)
        lp = torch.where(sel, picked, torch.zeros_like(picked)).sum(-1)
        lp = lp + self._selection_lp(sel, values)
        return torch.where(cand.any(-1), lp, torch.zeros_like(lp))

    def enumerate(self, forced: torch.Tensor | None = None):
        view = self.view
        cand = view.candidates
        B, n = cand.shape
        if self.draws_random:  # keys read the draws: expand every draw of every candidate first
            opts = torch.where(cand[..., None], self._all_value_options(forced),
                               first_only(self.values_lp))
            row, draws, lp = option_product(opts)
        else:
            row = torch.arange(B, device=cand.device)
            draws, lp = None, torch.zeros(B, dtype=self.values_lp.dtype, device=cand.device)
        sub = view.take_rows(row)
        logw = self._log_weights(sub, draws)
        k = self._k(sub)
        parent, sel, slp = _subsets(sub.candidates, k, logw)
        row, lp = row[parent], lp[parent] + slp
        if self.draws_random:
            return row, sel, draws[parent], lp
        values_lp = self._all_value_options(forced)[row]
        par2, values, vlp = option_product(torch.where(sel[..., None], values_lp,
                                                 first_only(values_lp)))
        return row[par2], sel[par2], values, lp[par2] + vlp

    # ------------------------------------------------------------------------------- helpers
    def _k(self, view: Step) -> torch.Tensor:
        zeros = torch.zeros_like(view.logp[..., 0])
        return torch.minimum(self.rule.commit.count(view, zeros, zeros.long()), view.n_candidates)

    def _log_weights(self, view: Step, draws) -> torch.Tensor:
        """log softmax(key / alg_temp) over the candidates, ``[B, n]`` (-inf elsewhere)."""
        keys = self.rule.score(view, draws).to(view.logp.dtype)  # weights: no tie to break
        keys = (keys / self.alg_temp).masked_fill(~view.candidates, -math.inf)
        return torch.log_softmax(keys, -1).masked_fill(~view.candidates, -math.inf)

    def _selection_lp(self, sel, values) -> torch.Tensor:
        """log Pr[the drawn set is ``sel``], ``[B]``; with sample-then-choose keys the draws of
        the candidates left masked are summed out."""
        view = self.view
        k = self._k(view)
        if not self.draws_random:
            return _set_lp(sel, view.candidates, self._log_weights(view, None), k)
        unsel = view.candidates & ~sel
        size = (self.values_lp > -math.inf).sum(-1).clamp(min=1).to(torch.float64)
        total = torch.where(unsel, size.log(), torch.zeros_like(size)).sum(-1).exp().sum()
        if total > EXPANSION_BUDGET:
            raise BudgetError(f"{self.rule.name}: alg_temp with sample-then-choose keys sums "
                              f"over {total:.3g} draws of the positions left masked; use "
                              "temperature=0 or fewer positions")
        forced = torch.where(sel, values, torch.zeros_like(values))
        hot = torch.nn.functional.one_hot(forced, self.values_lp.shape[-1]).bool()
        opts = torch.where(sel[..., None], self.values_lp.masked_fill(~hot, -math.inf),
                           self.values_lp)
        opts = torch.where(view.candidates[..., None], opts, first_only(opts))
        row, draws, lp = option_product(torch.where(sel[..., None], _zero_at(opts), opts))
        sub = view.take_rows(row)
        lp = lp + _set_lp(sel[row], sub.candidates, self._log_weights(sub, draws), k[row])
        return scatter_logsumexp(lp, row, sel.shape[0])


def _zero_at(opts: torch.Tensor) -> torch.Tensor:
    """The same options with log-probability 0 (a forced value whose probability is counted
    elsewhere)."""
    return torch.where(opts > -math.inf, torch.zeros_like(opts), opts)


def _set_lp(sel, cand, logw, k) -> torch.Tensor:
    """log Pr[the first k draws without replacement from weights exp(logw) are the set sel]:
    f(T) = sum_{i in T} f(T - i) w_i / (1 - w(T - i)) over the subsets T of sel (weights
    normalised over the candidates)."""
    B, n = sel.shape
    out = torch.full((B,), -math.inf, dtype=logw.dtype, device=sel.device)
    ok = (sel & ~cand).sum(-1).eq(0) & sel.sum(-1).eq(k)
    w = logw.exp().masked_fill(~cand, 0.0)
    for size in torch.unique(k[ok]).tolist():
        rows = (ok & (k == size)).nonzero().squeeze(-1)
        if size == 0:
            out[rows] = 0.0
            continue
        idx = torch.sort(sel[rows].long(), dim=-1, descending=True, stable=True).indices[:, :size]
        ws = w[rows].gather(-1, idx)  # [R, size]
        f = [torch.ones(len(rows), dtype=w.dtype, device=w.device)] + [None] * (2 ** size - 1)
        mass = [torch.zeros(len(rows), dtype=w.dtype, device=w.device)] * (2 ** size)
        for mask in range(1, 2 ** size):
            low = (mask & -mask).bit_length() - 1
            mass[mask] = mass[mask & ~(1 << low)] + ws[:, low]
            total = torch.zeros_like(ws[:, 0])
            for i in range(size):
                if mask >> i & 1:
                    prev = mask & ~(1 << i)
                    total = total + f[prev] * ws[:, i] / (1.0 - mass[prev]).clamp(min=1e-300)
            f[mask] = total
        out[rows] = f[-1].log()
    return out


def _subsets(cand, k, logw):
    """Every k-subset of each row's candidates with its Plackett–Luce log-probability:
    ``(row [K], sel [K, n], lp [K])``."""
    B, n = cand.shape
    rows, sels = [], []
    for size in torch.unique(k).tolist():
        if math.comb(n, size) * B > EXPANSION_BUDGET:
            raise BudgetError(f"alg_temp: {math.comb(n, size)} subsets of {n} positions per "
                              "state; use alg_temp=0 or fewer positions")
        combos = torch.zeros(math.comb(n, size), n, dtype=torch.bool, device=cand.device)
        for c, combo in enumerate(itertools.combinations(range(n), size)):
            combos[c, list(combo)] = True
        these = (k == size).nonzero().squeeze(-1)
        inside = (combos[None] & ~cand[these, None]).sum(-1).eq(0)  # [R, C]
        r, c = inside.nonzero(as_tuple=True)
        rows.append(these[r])
        sels.append(combos[c])
    row, sel = torch.cat(rows), torch.cat(sels)
    return row, sel, _set_lp(sel, cand[row], logw[row], k[row])


@dataclass(repr=False)
class RandomizedPositions(Decoder):
    """A step decoder whose positions are drawn (:class:`PlackettLuceStep`) instead of ranked
    when ``alg_temp > 0``: Dream's ``alg_temp``. Its runs' log-probabilities are trajectory
    densities (the same output is reached by several position draws)."""

    alg_temp: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        t = self.alg_temp
        check_number("alg_temp", t, 0)
        if t > 0 and (self.commit.stochastic or self.commit.uses_scores):
            raise MdmprobError(f"alg_temp needs a count known before the draws; the commit rule "
                               f"{self.commit.name} has none")

    @property
    def log_q_is_marginal(self) -> bool:
        return self.alg_temp == 0 and super().log_q_is_marginal

    def step_law(self, view: Step):
        """The step distribution: drawn positions when ``alg_temp > 0``, else ranked."""
        if self.alg_temp > 0:
            return PlackettLuceStep(self, view, float(self.alg_temp))
        return SelectionStep(self, view)


# ----------------------------------------------------------------------------------- DUS
def dilated_levels(length: int, base: int = 2, skip: int = 1) -> list[list[int]]:
    """DUS levels of a block of ``length`` positions (offsets 0..length-1): stride
    ``length // base**skip``, then divided by ``base`` down to 1; each level is the offsets that
    are multiples of the stride and not in an earlier level; leftovers last; the last level merges
    into the one before when it is smaller."""
    stride = length // base ** skip
    levels, seen = [], set()
    while stride >= 1:
        level = [i for i in range(length) if i % stride == 0 and i not in seen]
        if level:
            levels.append(level)
            seen.update(level)
        stride //= base
    rest = [i for i in range(length) if i not in seen]
    if rest:
        levels.append(rest)
    if len(levels) >= 2 and len(levels[-1]) < len(levels[-2]):
        levels[-2].extend(levels.pop())
    return levels


class DilatedOrder(Score):
    """DUS: key = -(level of the position) in its contiguous block of ``block_length``
    (:func:`dilated_levels`; the whole sequence when None)."""

    def __init__(self, block_length: int | None = None, base: int = 2, skip: int = 1):
        if block_length is not None:
            check_int("block_length", block_length, 1)
        check_int("base", base, 2)
        check_int("skip", skip, 1)
        self.block_length, self.base, self.skip = block_length, base, skip
        self.name = f"dilated(base={base})"
        self._levels = None  # (length, dtype, device) and the level of every position

    def levels(self, n: int) -> list[int]:
        """The level of every position 0..n-1."""
        length = n if self.block_length is None else self.block_length
        out = [0] * n
        for start in range(0, n, length):
            size = min(length, n - start)
            for lv, level in enumerate(dilated_levels(size, self.base, self.skip)):
                for i in level:
                    out[start + i] = lv
        return out

    def __call__(self, step, draws=None):
        B, n = step.candidates.shape
        key = (step.sequence_length, step.logp.dtype, step.logp.device)
        if self._levels is None or self._levels[0] != key:  # fixed by the length: built once
            self._levels = (key, torch.tensor(self.levels(key[0]), dtype=key[1],
                                              device=key[2]))
        return (-self._levels[1][step.position_index()]).expand(B, n)


class BestTied(CommitRule):
    """Every candidate whose key equals the best key (DUS: the next level's masked positions)."""

    name = "best_tied"

    def count(self, step, ranked_scores, order):
        return (ranked_scores == ranked_scores[:, :1]).sum(-1).clamp(min=1)


# ----------------------------------------------------------------------------------- PC-Sampler
class PositionCalibrated(Score):
    """PC-Sampler (arXiv 2508.13021) key of position i with drawn value v:
    ``exp(-lam * i) * min(alpha, p_theta(v) * (-log p_bg(v)))``, the confidence calibrated by
    the background surprisal (clipped at ``alpha``) times a position prior (the prompt-length
    offset of the paper is a common factor, so it does not change the ranking)."""

    uses_draws = True

    def __init__(self, lam: float = 0.25, alpha: float = 10.0, background=None):
        check_number("lam", lam, 0)
        check_number("alpha", alpha, 0, low_open=True)
        self.lam, self.alpha = float(lam), float(alpha)
        self.background = None if background is None else torch.as_tensor(
            background, dtype=torch.float64)
        if self.background is not None:
            bg = self.background
            if bg.dim() != 1 or not (bg > 0).all() or abs(float(bg.sum()) - 1) > 1e-9:
                raise MdmprobError(f"background={background!r} must be a 1-D table of positive "
                                   "token frequencies summing to 1 (one per value)")
        self.name = f"pc(lam={lam}, alpha={alpha})"

    def value_keys(self, step):
        """The key of every value at every position, ``[B, n, V]``."""
        B, n, V = step.logp.shape
        if self.background is None:
            surprisal = torch.full((V,), math.log(V), dtype=step.logp.dtype,
                                   device=step.logp.device)
        else:
            if self.background.shape[0] != V:
                raise MdmprobError(f"background has {self.background.shape[0]} frequencies but "
                                   f"the denoiser has V = {V} values; pass one per value")
            surprisal = -self.background.to(device=step.logp.device,
                                            dtype=step.logp.dtype).log()
        pos = step.position_index().to(step.logp.dtype)
        prior = torch.exp(-self.lam * pos)[None, :, None]
        return prior * torch.clamp(step.logp.exp() * surprisal, max=self.alpha)

    def __call__(self, step, draws=None):
        return self.value_keys(step).gather(-1, draws[..., None]).squeeze(-1)


# ----------------------------------------------------------------------------------- Prophet
class EarlyCommit(CommitRule):
    """Prophet (arXiv 2508.19982): the count of ``base`` (LLaDA's even split), or every candidate
    once the mean top-1 minus top-2 log-probability gap (= the logit gap, nats) over the
    candidates exceeds the threshold of the progress: ``gaps[0]`` before 1/3 of the window's
    steps, ``gaps[1]`` before 2/3, ``gaps[2]`` after."""

    uses_scores = False  # the count reads the model's gaps, never the drawn values

    def __init__(self, base: EvenSplit, gaps=(7.5, 5.0, 2.5)):
        gaps = tuple(gaps)
        if len(gaps) != 3:
            raise MdmprobError(f"gaps={gaps!r} must be three numbers >= 0 (nats)")
        for g in gaps:
            check_number("gaps", g, 0, finite=False)
        self.base, self.gaps = base, tuple(float(g) for g in gaps)
        self.name = f"early_commit({base.name}, gaps={gaps})"

    def count(self, step, ranked_scores, order):
        base = self.base.count(step, ranked_scores, order)
        top = step.logp.topk(2, dim=-1).values
        gap = (top[..., 0] - top[..., 1]).masked_fill(~step.candidates, 0.0)
        mean = gap.sum(-1) / step.n_candidates.clamp(min=1)
        progress = step.step.to(step.logp.dtype) / self.base.window_steps(step.n_windows)
        tau = torch.where(progress < 1 / 3, self.gaps[0],
                          torch.where(progress < 2 / 3, self.gaps[1], self.gaps[2]))
        return torch.where(mean > tau, step.n_candidates, base)


# ----------------------------------------------------------------------------------- ReMDM loop
class ReMDMLoop(ReMDM):
    """ReMDM ``loop`` schedule (arXiv 2503.00307, Sec. 4): on the grid t_j = 1 - j/steps the
    masking level is alpha(t) = alpha_on (1 - t)/(1 - t_on) for t >= t_on, alpha_on on
    [t_off, t_on], and alpha_on + (1 - alpha_on)(t_off - t)/t_off below t_off. A step with
    alpha_s = alpha_t (the loop) remasks visible tokens with probability sigma = eta and unmasks
    masks with probability eta alpha_on / (1 - alpha_on); the other steps are MDLM steps
    (sigma = 0, unmask probability (alpha_s - alpha_t) / (1 - alpha_t))."""

    def __init__(self, steps: int = 8, eta: float = 0.02, t_on: float = 0.55,
                 t_off: float = 0.05, alpha_on: float = 0.9, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 nucleus: str = "standard"):
        super().__init__(steps, eta, "cap", temperature, top_k, top_p, nucleus)
        for label, x in (("t_on", t_on), ("t_off", t_off), ("alpha_on", alpha_on)):
            check_number(label, x, 0, 1, low_open=True, high_open=True)
        if not t_off < t_on:
            raise MdmprobError(f"t_off={t_off!r} must be below t_on={t_on!r} (the loop runs "
                               "from t_on down to t_off)")
        if eta * alpha_on / (1 - alpha_on) > 1:
            raise MdmprobError(f"eta={eta!r}: the loop unmasks with probability eta alpha_on / "
                               f"(1 - alpha_on) = {eta * alpha_on / (1 - alpha_on):.3g} > 1; use "
                               f"eta <= {(1 - alpha_on) / alpha_on:.3g}")
        self.t_on, self.t_off, self.alpha_on = float(t_on), float(t_off), float(alpha_on)
        self.name = (f"remdm_loop(steps={steps}, eta={eta:g}, t_on={t_on:g}, t_off={t_off:g}, "
                     f"alpha_on={alpha_on:g})")

    def alpha(self, t: float) -> float:
        """The loop's masking level alpha(t) (fraction of tokens visible at time t)."""
        if t >= self.t_on:
            return self.alpha_on * (1 - t) / (1 - self.t_on)
        if t >= self.t_off:
            return self.alpha_on
        return self.alpha_on + (1 - self.alpha_on) * (self.t_off - t) / self.t_off

    def rates(self, j: int) -> tuple[float, float]:
        """(sigma_j, u_j) of step ``j`` in 1..steps, from t = 1 - (j-1)/steps to s = 1 - j/steps."""
        a_t = self.alpha(1 - (j - 1) / self.steps)
        a_s = 1.0 if j == self.steps else self.alpha(1 - j / self.steps)
        sigma = self.eta if a_s == a_t else 0.0
        return sigma, (a_s - (1 - sigma) * a_t) / (1 - a_t)


__all__ = ["DREAM_ALGS", "BestTied", "DilatedOrder", "DreamBernoulli", "DreamSchedule",
           "DreamScore", "EarlyCommit", "PlackettLuceStep", "PositionCalibrated",
           "RandomizedPositions", "ReMDMLoop",
           "dilated_levels", "dream_times"]
