"""Decoder primitives: position scores (which positions first) and commit rules (how many).

A decoding step sees a :class:`Step`: the denoiser's log-probabilities, the candidates (masked
positions of the current window) and the step counters. A *score* ranks candidates (higher =
earlier); a *commit rule* says how many of the ranked candidates to commit, or — for stochastic
rules — the probability that each candidate is committed. Adding a new score or rule is one small
class; the decoder loop, exact enumeration and log q bookkeeping are shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mdmprob.checks import check_int, check_number
from mdmprob.errors import MdmprobError, unknown_name


@dataclass
class Step:
    """What a score or commit rule may read at one decoding step (shapes ``[B, n, V]``/``[B, n]``).

    The view's n columns are the whole sequence, or (``positions`` given) only the columns of the
    current window, in increasing position order: a decoder running window by window then pays
    for the window, not the sequence. A score that reads where a column is in the sequence asks
    :meth:`position_index` and :attr:`sequence_length`, never the column number.
    """

    logp: torch.Tensor  # log p_theta(x_i = v | state): the denoiser's output
    candidates: torch.Tensor  # bool [B, n]: masked positions of the current window
    step: torch.Tensor  # long [B]: steps already taken in the current window
    window_masked: torch.Tensor  # long [B]: masked positions the window had when it opened
    oracle_logp: torch.Tensor | None = None  # exact conditionals, for oracle-based scores
    n_windows: int = 1  # windows of the decode (LLaDA splits its total steps across them)
    positions: torch.Tensor | None = None  # long [n]: each column's sequence position (None: 0..n-1)
    length: int | None = None  # tokens in the whole sequence (None: n)

    @property
    def n_candidates(self) -> torch.Tensor:
        return self.candidates.sum(-1)

    @property
    def sequence_length(self) -> int:
        """Tokens in the whole sequence (the view may hold a window's columns only)."""
        return self.logp.shape[1] if self.length is None else self.length

    def position_index(self) -> torch.Tensor:
        """The sequence position of each column, long ``[n]``."""
        if self.positions is not None:
            return self.positions
        return torch.arange(self.logp.shape[1], device=self.logp.device)

    def take_rows(self, row: torch.Tensor) -> Step:
        """The view of the states ``row`` (long ``[K]``, repeats allowed): every per-row tensor
        indexed by ``row`` (``[K, n, V]``, ``[K, n]``, ``[K]``), the columns unchanged."""
        return Step(self.logp[row], self.candidates[row], self.step[row],
                    self.window_masked[row],
                    None if self.oracle_logp is None else self.oracle_logp[row], self.n_windows,
                    self.positions, self.length)


def entropy_of(logp: torch.Tensor) -> torch.Tensor:
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


# ----------------------------------------------------------------------------- position scores
class Score:
    """Ranks candidate positions; ``random`` scores pick uniformly among candidates instead and
    ``uses_draws`` scores read the sampled values (sample-then-choose)."""

    name = "score"
    random = False
    uses_draws = False
    needs_oracle = False

    def __call__(self, step: Step, draws: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class LeftToRight(Score):
    name = "l2r"

    def __call__(self, step, draws=None):
        pos = step.position_index().to(step.logp.dtype)
        return (-pos).expand(step.logp.shape[0], pos.shape[0])


class RightToLeft(Score):
    name = "r2l"

    def __call__(self, step, draws=None):
        pos = step.position_index().to(step.logp.dtype)
        return pos.expand(step.logp.shape[0], pos.shape[0])


class RandomOrder(Score):
    """Uniformly random positions (LLaDA ``random`` remasking, MDLM order)."""

    name = "random"
    random = True

    def __call__(self, step, draws=None):
        return torch.zeros(step.logp.shape[:2], dtype=step.logp.dtype, device=step.logp.device)


class NegEntropy(Score):
    """Easy-First by entropy: lowest H(p_theta(x_i | state)) first (Eq. 12 with model entropy)."""

    name = "entropy"

    def __call__(self, step, draws=None):
        return -entropy_of(step.logp)


class HardFirst(Score):
    """Highest model entropy first: the adversarial counterpart of Easy-First."""

    name = "hard_first"

    def __call__(self, step, draws=None):
        return entropy_of(step.logp)


class MaxProb(Score):
    """Highest max_v p_theta(v) first (Dream ``maskgit_plus`` at T = 0; Fast-dLLM confidence)."""

    name = "max_prob"

    def __call__(self, step, draws=None):
        return step.logp.amax(-1).exp()


class Margin(Score):
    """Largest top-1 minus top-2 probability first (Kim et al.; Dream ``topk_margin``)."""

    name = "margin"

    def __call__(self, step, draws=None):
        top = step.logp.exp().topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]


class OracleEntropy(Score):
    """Easy-First by the *true* conditional entropy (needs ``oracle=`` when decoding)."""

    name = "oracle_entropy"
    needs_oracle = True

    def __call__(self, step, draws=None):
        if step.oracle_logp is None:
            raise MdmprobError("the oracle_entropy score needs the exact conditionals: pass "
                               "oracle=Oracle(structure) to the decoder run")
        return -entropy_of(step.oracle_logp)


class DrawConfidence(Score):
    """LLaDA ``low_confidence``: the model probability of the value drawn at each position
    (sample-then-choose; biased at T > 0 even one token per step)."""

    name = "confidence"
    uses_draws = True

    def __call__(self, step, draws=None):
        return step.logp.gather(-1, draws[..., None]).squeeze(-1).exp()

    def value_keys(self, step):
        """The key of every value at every position, ``[B, n, V]``: p_theta(v)."""
        return step.logp.exp()


SCORES = {cls.name: cls for cls in (LeftToRight, RightToLeft, RandomOrder, NegEntropy, HardFirst,
                                    MaxProb, Margin, OracleEntropy, DrawConfidence)}


# ----------------------------------------------------------------------------- commit rules
class CommitRule:
    """How many ranked candidates to commit (``count``), or per-candidate probabilities
    (``probs``, for stochastic rules). At least one candidate is committed per step."""

    name = "rule"
    stochastic = False
    uses_scores = True  # False: the count depends on the step counters only

    def count(self, step: Step, ranked_scores: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """``LongTensor[B]``; ``ranked_scores [B, n]`` are candidate scores sorted descending
        (non-candidates last, -inf) and ``order [B, n]`` the positions in that ranking."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class PerStep(CommitRule):
    """k positions per step (k = 1: sequential decoding)."""

    uses_scores = False

    def __init__(self, k: int = 1):
        if not isinstance(k, int) or k < 1:
            raise MdmprobError(f"tokens per step k={k!r} must be an integer >= 1")
        self.k, self.name = k, f"k={k}"

    def count(self, step, ranked_scores, order):
        return torch.full_like(step.step, self.k)


class WholeWindow(CommitRule):
    """Every candidate of the window at once (mean-field block decoding)."""

    uses_scores = False

    name = "whole_block"

    def count(self, step, ranked_scores, order):
        return step.n_candidates


class EvenSplit(CommitRule):
    """LLaDA: a window's masked positions split evenly over its steps, the remainder to the
    earliest steps; the last step commits whatever is left.

    ``per="window"``: ``steps`` steps in every window. ``per="total"`` (LLaDA's ``generate``):
    ``steps`` over the whole decode, ``steps / n_windows`` per window (must divide).
    """

    uses_scores = False
    PER = {"window": "steps per window", "total": "steps over the whole decode, split across windows"}

    def __init__(self, steps: int, per: str = "window"):
        check_int("steps", steps, 1)
        if per not in self.PER:
            raise unknown_name("steps accounting per", str(per), self.PER)
        self.steps, self.per = steps, per
        self.name = f"even_split(steps={steps})" if per == "window" else \
            f"even_split(steps={steps} total)"

    def window_steps(self, n_windows: int) -> int:
        """Steps per window; a :class:`~mdmprob.errors.MdmprobError` when ``per="total"`` and
        ``steps`` is not a multiple of the number of windows."""
        if self.per == "window":
            return self.steps
        if self.steps % n_windows:
            raise MdmprobError(
                f"steps={self.steps} is the total over {n_windows} blocks and must be divisible by "
                f"it (LLaDA's generate asserts the same); use a multiple such as steps="
                f"{n_windows * -(-self.steps // n_windows)}, or steps_per='window'")
        return self.steps // n_windows

    def count(self, step, ranked_scores, order):
        steps = self.window_steps(step.n_windows)
        base, rem = step.window_masked // steps, step.window_masked % steps
        count = base + (step.step < rem).long()
        last = step.step >= steps - 1
        return torch.where(last, step.n_candidates, count.clamp(min=1))


class Threshold(CommitRule):
    """Fast-dLLM threshold: every candidate whose confidence is >= tau, and at least the top
    one."""

    def __init__(self, tau: float = 0.9):
        check_number("threshold tau", tau, 0, 1, low_open=True)
        self.tau, self.name = float(tau), f"threshold(tau={tau})"

    def count(self, step, ranked_scores, order):
        return (ranked_scores >= self.tau).sum(-1).clamp(min=1)


class FactorRule(CommitRule):
    """Fast-dLLM factor rule (formerly ``Factor``; not the compiler's factor,
    :class:`mdmprob.compile.Factor`) on the ranked confidences c_(1) >= c_(2) >= ...; at least one.

    ``variant="strict"`` (the paper): the largest n with (n + 1)(1 - c_(n)) < f.
    ``variant="reference"`` (the published code): the largest n with c_(n) >= 1 - f / (n + 1)
    (non-strict), and all m candidates when that n is m - 1 (the last two masks of a window then
    always go together).
    """

    VARIANTS = {"reference": "non-strict test; all candidates when only the last one fails "
                             "(the published code)",
                "strict": "the paper's rule: largest n with (n + 1)(1 - c_(n)) < f"}

    def __init__(self, f: float = 1.0, variant: str = "strict"):
        check_number("factor f", f, 0, low_open=True)
        if variant not in self.VARIANTS:
            raise unknown_name("factor rule variant", str(variant), self.VARIANTS)
        self.f, self.variant = float(f), variant
        self.name = f"factor(f={f})" if variant == "strict" else f"factor(f={f}, reference)"

    def count(self, step, ranked_scores, order):
        n = torch.arange(1, ranked_scores.shape[-1] + 1, device=ranked_scores.device)
        m = step.n_candidates
        within = n <= m[:, None]
        if self.variant == "strict":
            ok = ((n + 1) * (1 - ranked_scores) < self.f) & within
            return torch.where(ok, n, torch.zeros_like(n)).amax(-1).clamp(min=1)
        ok = (ranked_scores >= 1 - self.f / (n + 1).to(ranked_scores.dtype)) & within
        largest = torch.where(ok, n, torch.zeros_like(n)).amax(-1).clamp(min=1)
        return torch.where(largest == m - 1, m, largest)


class EntropyBudget(CommitRule):
    """EB-Sampler: the longest prefix of the ranked candidates with
    sum_j H_j - max_j H_j <= gamma (nats); at least one."""

    def __init__(self, gamma: float = 0.1):
        if not (isinstance(gamma, int | float) and gamma >= 0 and math.isfinite(gamma)):
            raise MdmprobError(f"entropy budget gamma={gamma!r} must be a finite number >= 0")
        self.gamma, self.name = float(gamma), f"eb(gamma={gamma})"

    def count(self, step, ranked_scores, order):
        h = entropy_of(step.logp).masked_fill(~step.candidates, 0.0)
        h = h.gather(-1, order)
        cum, run_max = h.cumsum(-1), h.cummax(-1).values
        n = torch.arange(1, h.shape[-1] + 1, device=h.device)
        ok = (cum - run_max <= self.gamma + 1e-12) & (n <= step.n_candidates[:, None])
        return torch.where(ok, n, torch.zeros_like(n)).amax(-1).clamp(min=1)


class BernoulliSchedule(CommitRule):
    """MDLM ancestral schedule with a linear alpha over ``steps`` steps: each candidate commits
    independently with probability 1 / (steps - step); everything at the last step."""

    stochastic = True

    def __init__(self, steps: int):
        if not isinstance(steps, int) or steps < 1:
            raise MdmprobError(f"steps={steps!r} must be an integer >= 1")
        self.steps, self.name = steps, f"bernoulli(steps={steps})"

    def probs(self, step: Step) -> torch.Tensor:
        left = (self.steps - step.step).clamp(min=1).to(step.logp.dtype)
        return (1.0 / left)[:, None].expand(step.candidates.shape)


KEY_QUANTUM = 2.0 ** -32  # keys closer than this are equal: round-off never breaks a tie


def round_keys(keys: torch.Tensor) -> torch.Tensor:
    """Keys rounded to :data:`KEY_QUANTUM`, so that float round-off never decides a tie."""
    return torch.where(torch.isfinite(keys), torch.round(keys / KEY_QUANTUM) * KEY_QUANTUM, keys)


# ----------------------------------------------------------------------------- value laws
class ValueLaw:
    """How a step draws the value of a position: ``softmax(log p_theta / T)`` (T = 0: the argmax,
    lowest value id among maxima equal up to :data:`KEY_QUANTUM`), restricted to the ``top_k``
    most probable values and/or the ``top_p`` nucleus, renormalised.

    ``top_k`` keeps every value whose probability is >= the k-th largest (equal probabilities are
    kept together, so the law does not depend on value ids). ``top_p`` ranks values by tempered
    probability: ``nucleus="standard"`` keeps the smallest set whose mass reaches p (the value that
    crosses p is kept, as in Hugging Face samplers); ``nucleus="drop_crossing"`` keeps only values
    whose cumulative mass stays <= p (ReMDM's scripts), and always the most probable value. Values of
    equal probability are kept or dropped together.
    """

    NUCLEI = {"standard": "keep the value that crosses p", "drop_crossing":
              "drop the value that crosses p (ReMDM's scripts)"}

    def __init__(self, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, nucleus: str = "standard"):
        t = temperature
        check_number("temperature", t, 0)
        if top_k is not None:
            check_int("top_k", top_k, 1)
        if top_p is not None:
            check_number("top_p", top_p, 0, 1.0, low_open=True)
        if nucleus not in self.NUCLEI:
            raise unknown_name("nucleus", str(nucleus), self.NUCLEI)
        self.temperature, self.top_k, self.top_p, self.nucleus = float(t), top_k, top_p, nucleus

    @property
    def deterministic(self) -> bool:
        return self.temperature == 0

    def log_probs(self, logp: torch.Tensor) -> torch.Tensor:
        """log-probability ``[..., V]`` of drawing each value, from ``logp [..., V]``."""
        V = logp.shape[-1]
        if self.temperature == 0:
            # the argmax of rounded log-probabilities: values equal up to round-off are tied
            # (the lowest id wins), whichever computation produced logp
            hot = torch.nn.functional.one_hot(round_keys(logp).argmax(-1), V).bool()
            return torch.zeros_like(logp).masked_fill(~hot, -math.inf)
        out = logp if self.temperature == 1 else torch.log_softmax(logp / self.temperature, -1)
        if self.top_k is not None and self.top_k < V:
            kth = out.topk(self.top_k, dim=-1).values[..., -1:]
            out = out.masked_fill(out < kth, -math.inf)
        if self.top_p is not None and self.top_p < 1:
            out = out.masked_fill(~self._nucleus(out.log_softmax(-1)), -math.inf)
        return out.log_softmax(-1) if self.top_k is not None or self.top_p is not None else out

    def _nucleus(self, logq: torch.Tensor) -> torch.Tensor:
        """bool ``[..., V]``: the values kept by the nucleus of ``exp(logq)``."""
        q = logq.exp()
        desc = q.sort(-1, descending=True).values
        cum = desc.cumsum(-1)
        neg = (-desc).contiguous()
        flat = neg.reshape(-1, neg.shape[-1])
        x = (-q).contiguous().reshape(-1, q.shape[-1])
        first = torch.searchsorted(flat, x, right=False).reshape(q.shape)  # group start
        last = torch.searchsorted(flat, x, right=True).reshape(q.shape) - 1  # group end
        mass_above = torch.where(first > 0, cum.gather(-1, (first - 1).clamp(min=0)),
                                 torch.zeros_like(q))  # mass strictly more probable
        mass_through = cum.gather(-1, last)  # mass at least as probable
        if self.nucleus == "standard":
            keep = mass_above < self.top_p
        else:
            keep = (mass_through <= self.top_p + 1e-12) | (first == 0)
        return keep

    def __repr__(self) -> str:
        parts = [f"T={self.temperature:g}"]
        if self.top_k is not None:
            parts.append(f"top_k={self.top_k}")
        if self.top_p is not None:
            parts.append(f"top_p={self.top_p:g}" + ("" if self.nucleus == "standard" else
                                                   f" ({self.nucleus})"))
        return ", ".join(parts)


def __getattr__(name: str):
    if name == "Factor":  # the commit rule shared its name with mdmprob.compile.Factor
        import warnings

        warnings.warn("mdmprob.decoders.primitives.Factor is now FactorRule (mdmprob.compile.Factor "
                      "is the compiler's factor)", DeprecationWarning, stacklevel=2)
        return FactorRule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
