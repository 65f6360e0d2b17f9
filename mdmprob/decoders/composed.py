"""Step decoders whose step is a *selection law* composed with a *value kernel*, and whose step
may read the state itself (the tokens) and call the denoiser again.

A :class:`ComposedDecoder` step is: a selector picks the set S of candidates to decode (a
deterministic function of the state, e.g. an independent set of a dependency graph, or a random
one, e.g. a learned policy's Bernoulli draws); a kernel writes values on S, or on part of it
(the product of the marginals; a left-to-right joint law inside S; a parallel draft verified
token by token). Its step law answers the three questions of
:class:`~mdmprob.decoders.step.SelectionStep` (``sample``, ``log_prob``, ``enumerate``), so the
shared drivers run, replay and enumerate it exactly:

    Pr[step commits T with values x_T] = sum_S Pr[S | state] Pr[T, x_T | S, state].

The drivers hand a step law only the denoiser's answer at the state; a composed decoder runs
them on a :class:`Tracked` view of the denoiser, which remembers the tokens of its last call, so
the step reads the state it was built from (and calls the denoiser at sub-states). Denoiser
calls a kernel makes inside a step are added to each run's NFE.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from mdmprob.decoders import drivers
from mdmprob.decoders.core import Decoder
from mdmprob.decoders.primitives import CommitRule, Step
from mdmprob.decoders.step import SelectionStep, first_only, option_product, scatter_logsumexp
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import MdmprobError
from mdmprob.sampling import gumbel_argmax


# ----------------------------------------------------------------------------------- the state
class Tracked(Denoiser):
    """``base`` answering as itself, remembering the tokens and answer of its last call (the
    state a step law is built at). ``calls [B]`` (set by a run) counts the extra denoiser calls
    step kernels make per sequence."""

    def __init__(self, base):
        self.base = base
        self.vocab, self.n_tokens = base.vocab, base.n_tokens
        self.device, self.dtype = base.device, base.dtype
        self.structure = getattr(base, "structure", None)
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None
        self.calls: torch.Tensor | None = None
        self.diagnostics: dict[str, list] = {}

    @property
    def blocks(self):
        return self.base.blocks

    def __call__(self, tokens, window=None):
        out = drivers.conditionals(self.base, tokens, window)
        self.last = (out, tokens, out)
        return out

    def rows(self, tokens, positions):
        """The rows at ``positions`` (a window view of the run driver), remembering the whole
        answer: a composed step reads the state of the whole sequence."""
        window = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
        window[:, positions] = True
        out = drivers.conditionals(self.base, tokens, window)
        part = out[:, positions]
        self.last = (part, tokens, out)
        return part

    def state_at(self, view: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens ``[B, n]`` the step ``view`` was built at and the denoiser's whole answer
        there, ``[B, n, V]``."""
        if self.last is None or self.last[0] is not view.logp:
            raise MdmprobError("a composed step reads the state it is built at; decode through "
                               "the decoder's run / log_prob / distribution")
        return self.last[1], self.last[2]

    def count(self, calls: torch.Tensor) -> None:
        if self.calls is not None and self.calls.shape == calls.shape:
            self.calls += calls

    def __repr__(self) -> str:
        return repr(self.base)


# ----------------------------------------------------------------------------------- the step
class StepState:
    """What a selector or a kernel reads: the decoder, the view (``logp``, candidates,
    counters), the tokens ``[B, n]``, the value law at the state ``values_lp [B, n, V]`` and the
    denoiser (for calls at sub-states)."""

    def __init__(self, decoder, view: Step, tokens, values_lp, denoiser: Tracked):
        self.decoder, self.view, self.tokens = decoder, view, tokens
        self.values_lp, self.denoiser = values_lp, denoiser

    def rows(self, row: torch.Tensor) -> StepState:
        v = self.view
        view = Step(v.logp[row], v.candidates[row], v.step[row], v.window_masked[row],
                    None if v.oracle_logp is None else v.oracle_logp[row], v.n_windows)
        return StepState(self.decoder, view, self.tokens[row], self.values_lp[row],
                         self.denoiser)

    def value_law_at(self, tokens: torch.Tensor) -> torch.Tensor:
        """The decoder's value law of the denoiser's answer at other ``tokens [R, n]``."""
        return self.decoder.values.log_probs(drivers.conditionals(self.denoiser.base, tokens))


class ComposedStep:
    """The step law of a :class:`ComposedDecoder` (see the module docstring). Given a window
    view (the driver's: the window's columns only) it reads and answers on those columns, and
    works on the whole sequence inside (selectors and kernels see every position)."""

    draws_random = False  # a selection never reads the values drawn at this step

    def __init__(self, decoder, view: Step, denoiser: Tracked):
        tokens, logp = denoiser.state_at(view)
        self.columns = view.positions  # a window view: the driver reads these columns back
        whole = view if self.columns is None else _whole(view, logp)
        self.view, self.whole = view, whole
        self.whole_values_lp = decoder.values.log_probs(whole.logp)
        self.values_lp = self._at_columns(self.whole_values_lp)
        self.state = StepState(decoder, whole, tokens, self.whole_values_lp, denoiser)
        self.selector, self.kernel = decoder.selector, decoder.kernel

    def _at_columns(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.columns is None else t[:, self.columns]

    def _spread(self, t: torch.Tensor, fill) -> torch.Tensor:
        """A ``[B, w]`` tensor on the window's columns as ``[B, n]`` (``fill`` elsewhere)."""
        if self.columns is None:
            return t
        out = t.new_full(self.whole.candidates.shape, fill)
        out[:, self.columns] = t
        return out

    def sample(self, generator: torch.Generator):
        committed, values, lp_tokens, branched = self._sample(generator)
        return (self._at_columns(committed), self._at_columns(values),
                self._at_columns(lp_tokens), branched)

    def _sample(self, generator: torch.Generator):
        cand = self.whole.candidates
        sel, lp_sel, branched = self.selector.sample(self.state, generator)
        committed, values, lp_val, calls = self.kernel.sample(self.state, sel, generator)
        self.state.denoiser.count(calls)
        lp = (lp_sel + lp_val).to(self.whole_values_lp.dtype)
        owner = torch.where(committed.any(-1), committed.long().argmax(-1),
                            cand.long().argmax(-1))
        first = torch.nn.functional.one_hot(owner, cand.shape[-1]).bool() & cand.any(-1)[:, None]
        lp_tokens = torch.where(first, lp[:, None], torch.zeros_like(lp)[:, None])
        return committed, values, lp_tokens, branched

    def log_prob(self, committed: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """log Pr[``committed`` with ``values``] (``[B, w]`` on a window view, else ``[B, n]``)."""
        cand = self.whole.candidates
        committed = self._spread(committed, False) & cand
        values = self._spread(values, 0).clamp(0, self.whole_values_lp.shape[-1] - 1)
        if self.kernel.commits_selection:
            lp = self.selector.log_prob(self.state, committed) + \
                self.kernel.log_prob(self.state, committed, committed, values)
        else:
            row, sel, slp = self.selector.outcomes(self.state)
            lp = slp + self.kernel.log_prob(self.state.rows(row), sel, committed[row], values[row])
            lp = scatter_logsumexp(lp, row, cand.shape[0])
        return torch.where(cand.any(-1), lp, torch.zeros_like(lp))

    def enumerate(self, forced: torch.Tensor | None = None):
        row, sel, slp = self.selector.outcomes(self.state)
        parent, committed, values, vlp = self.kernel.enumerate(
            self.state.rows(row), sel, None if forced is None else forced[row])
        return row[parent], committed, values, slp[parent] + vlp


def _whole(view: Step, logp: torch.Tensor) -> Step:
    """A window view (its columns only) as a view of the whole sequence: ``logp [B, n, V]`` the
    denoiser's whole answer, candidates only in the window's columns."""
    cols = view.positions
    cand = torch.zeros(logp.shape[:2], dtype=torch.bool, device=logp.device)
    cand[:, cols] = view.candidates
    oracle_logp = None
    if view.oracle_logp is not None:
        oracle_logp = logp.clone()
        oracle_logp[:, cols] = view.oracle_logp
    return Step(logp, cand, view.step, view.window_masked, oracle_logp, view.n_windows)


# ----------------------------------------------------------------------------------- the decoder
class ComposedRule(CommitRule):
    """The commit-rule slot of a :class:`ComposedDecoder` (the selector decides)."""

    uses_scores = False

    def __init__(self, selector):
        self.name = selector.name
        self.stochastic = False


@dataclass(repr=False)
class ComposedDecoder(Decoder):
    """A step decoder whose step is ``selector`` x ``kernel`` (see the module docstring).

    ``score`` and ``commit`` are the ranking a selector may reuse (a
    :class:`RuleSelector`); ``temperature``, ``top_k``, ``top_p`` the value law every kernel
    draws from."""

    selector: Any = None
    kernel: Any = None

    def __post_init__(self):
        super().__post_init__()
        self._denoiser: Tracked | None = None

    @property
    def log_q_is_marginal(self) -> bool:
        """A run's log-probability is log q(x) when the selection is a function of the state
        and the kernel's committed set a function of the values."""
        return not self.selector.random and self.kernel.marginal

    def step_law(self, view: Step) -> ComposedStep:
        if self._denoiser is None:
            raise MdmprobError(f"{self.name}: a composed step is built inside the decoder's run "
                               "/ log_prob / distribution")
        return ComposedStep(self, view, self._denoiser)

    @contextmanager
    def tracking(self, denoiser, num: int | None = None):
        """The decoder bound to a :class:`Tracked` view of ``denoiser`` (``num``: count the
        kernels' extra calls for a run of that many sequences)."""
        tracked = Tracked(denoiser)
        if num is not None:
            tracked.calls = torch.zeros(num, dtype=torch.long, device=denoiser.device)
        previous, self._denoiser = self._denoiser, tracked
        try:
            yield tracked
        finally:
            self._denoiser = previous

    def run(self, denoiser, num: int = 1, *, seed: int | None = 0, generator=None,
            initial=None, blocks=None, oracle=None, target=None):
        with self.tracking(denoiser, num if isinstance(num, int) and num > 0 else None) as den:
            out = super().run(den, num, seed=seed, generator=generator, initial=initial,
                              blocks=blocks, oracle=oracle, target=target)
        out.nfe = out.nfe + den.calls
        out.diagnostics.update({k: torch.stack(v, -1).sum(-1) for k, v in den.diagnostics.items()})
        return out

    def log_prob(self, denoiser, tokens, *, committed=None, initial=None, blocks=None,
                 oracle=None, target=None):
        with self.tracking(denoiser) as den:
            return super().log_prob(den, tokens, committed=committed, initial=initial,
                                    blocks=blocks, oracle=oracle, target=target)

    def distribution(self, denoiser, *, initial=None, blocks=None, oracle=None, target=None,
                     max_states: int | None = None):
        with self.tracking(denoiser) as den:
            return super().distribution(den, initial=initial, blocks=blocks, oracle=oracle,
                                        target=target, max_states=max_states)

    def log_weights(self, denoiser, tokens, *, draws: int, generator, committed=None,
                    diagnostics=None, initial=None, blocks=None, oracle=None, target=None):
        if not self.kernel.product:
            raise NotImplementedError(f"{self.name} has no trajectory proposal (its values are "
                                      "not a product of marginals)")
        with self.tracking(denoiser) as den:
            return super().log_weights(den, tokens, draws=draws, generator=generator,
                                       committed=committed, diagnostics=diagnostics,
                                       initial=initial, blocks=blocks, oracle=oracle,
                                       target=target)


# ----------------------------------------------------------------------------------- selectors
class DeterministicSelector:
    """A selection that is a function of the state: subclasses implement ``select(state) ->
    bool [B, n]`` (a non-empty subset of the candidates where there are any)."""

    name = "selector"
    random = False

    def select(self, state: StepState) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, state, generator):
        sel = self.select(state)
        zero = torch.zeros(sel.shape[0], dtype=state.values_lp.dtype, device=sel.device)
        return sel, zero, zero > 0

    def log_prob(self, state, sel):
        same = (sel == self.select(state)).all(-1)
        zero = torch.zeros(sel.shape[0], dtype=state.values_lp.dtype, device=sel.device)
        return torch.where(same, zero, torch.full_like(zero, -math.inf))

    def outcomes(self, state):
        sel = self.select(state)
        B = sel.shape[0]
        return (torch.arange(B, device=sel.device), sel,
                torch.zeros(B, dtype=state.values_lp.dtype, device=sel.device))


class RuleSelector:
    """The selection of the decoder's own score x commit rule (values drawn from the marginals
    only to break ties, as :class:`~mdmprob.decoders.step.SelectionStep` would; the rule must not
    read the drawn values)."""

    def __init__(self, decoder_name: str, score, commit):
        if score.uses_draws:
            raise MdmprobError(f"{decoder_name}: the position score {score.name} reads the "
                               "values drawn at the step; use a score of the marginals "
                               "(confidence='max_prob', 'entropy', 'margin', 'l2r')")
        self.name, self.random = commit.name, score.random or commit.stochastic

    def _step(self, state) -> SelectionStep:
        return SelectionStep(state.decoder, state.view)

    def sample(self, state, generator):
        step = self._step(state)
        sel, _, _, branched = step.sample(generator)
        return sel, self.log_prob(state, sel, step), branched

    def log_prob(self, state, sel, step=None):
        step = step if step is not None else self._step(state)
        best = step.values_lp.argmax(-1)
        share = step.values_lp.gather(-1, best[..., None])[..., 0]
        share = torch.where(sel & state.view.candidates, share, torch.zeros_like(share)).sum(-1)
        return step.log_prob(sel, best) - share

    def outcomes(self, state):
        step = self._step(state)
        best = step.values_lp.argmax(-1)
        row, sel, values, lp = step.enumerate(best)
        share = step.values_lp[row].gather(-1, best[row][..., None])[..., 0]
        return row, sel, lp - torch.where(sel, share, torch.zeros_like(share)).sum(-1)


# ----------------------------------------------------------------------------------- kernels
class ProductKernel:
    """Values drawn independently at every selected position from the value law at the state
    (the product of the marginals); the committed set is the selection."""

    name = "product"
    commits_selection = marginal = product = True

    def sample(self, state, sel, generator):
        draws = gumbel_argmax(state.values_lp, generator)
        picked = state.values_lp.gather(-1, draws[..., None])[..., 0]
        lp = torch.where(sel, picked, torch.zeros_like(picked)).sum(-1)
        return sel, draws, lp, torch.zeros(sel.shape[0], dtype=torch.long, device=sel.device)

    def log_prob(self, state, sel, committed, values):
        picked = state.values_lp.gather(-1, values[..., None])[..., 0]
        lp = torch.where(committed, picked, torch.zeros_like(picked)).sum(-1)
        return torch.where((committed == sel).all(-1), lp, torch.full_like(lp, -math.inf))

    def enumerate(self, state, sel, forced):
        options = restrict(state.values_lp, forced)
        parent, values, lp = expand(options, sel, state.tokens)
        return parent, sel[parent], values, lp


# ----------------------------------------------------------------------------------- helpers
def restrict(options_lp: torch.Tensor, forced: torch.Tensor | None) -> torch.Tensor:
    """``options_lp [K, n, V]`` with every value but ``forced [K, n]`` removed (None: all)."""
    if forced is None:
        return options_lp
    V = options_lp.shape[-1]
    hot = forced.clamp(0, V - 1)[..., None] == torch.arange(V, device=forced.device)
    return options_lp.masked_fill(~hot, -math.inf)


def expand(options_lp: torch.Tensor, active: torch.Tensor, tokens: torch.Tensor):
    """Every combination of one value per ``active`` position, per row: ``(parent [K'],
    values [K', n] (``tokens`` elsewhere), lp [K'])``, the values of positive probability."""
    parent, choice, lp = option_product(torch.where(active[..., None], options_lp,
                                                    first_only(options_lp)))
    return parent, torch.where(active[parent], choice, tokens[parent]), lp


__all__ = ["ComposedDecoder", "ComposedRule", "ComposedStep", "DeterministicSelector",
           "ProductKernel", "RuleSelector", "StepState", "Tracked", "expand",
           "restrict"]
