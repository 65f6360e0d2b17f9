"""Three drivers over one step definition: run, replay and enumerate a step decoder.

Each driver walks the decoder's windows; inside a window it builds the step distribution
(:class:`~mdmprob.decoders.step.SelectionStep`) from the denoiser's answer on the current states
and then samples it (:func:`run`), scores a recorded outcome (:func:`replay`) or expands every
outcome (:func:`enumerate_states`). A window with a block corrector is one step whose law is the
corrector's. The denoiser is called in one place, :func:`conditionals`.

Exact mode (:func:`enumerate_states`) is breadth-first over decoder states held as tensors: a
state is (sequence id, tokens, window, step in window, masks when the window opened); every live
state of a level goes through the denoiser in one batched call, transitions come out of
``SelectionStep.enumerate`` as tensors, and equal states are merged with ``torch.unique``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mdmprob.decoders.primitives import Step
from mdmprob.decoders.protocol import DecodeResult, initial_tokens
from mdmprob.decoders.step import SelectionStep, _scatter_logsumexp
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import BudgetError, MdmprobError

CALL_CHUNK = 2 ** 14  # states per denoiser call in exact mode


def conditionals(denoiser, tokens: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """The denoiser's log-probabilities ``[B, n, V]`` at ``tokens [B, n]``: the one place the
    drivers call a denoiser. ``window`` (bool ``[B, n]``) marks the rows the step reads (its
    candidates); a :class:`~mdmprob.denoisers.base.Denoiser` may answer only those (the oracle
    then costs what the window costs, not the whole sequence); other rows are never read."""
    if window is not None and isinstance(denoiser, Denoiser):
        return denoiser(tokens, window=window)
    return denoiser(tokens)


def step_law(decoder, view: Step):
    """The step distribution of ``decoder`` at ``view``: the decoder's own ``step_law(view)``
    where it defines one (a selection law other than ranking), else
    :class:`~mdmprob.decoders.step.SelectionStep`."""
    own = getattr(decoder, "step_law", None)
    return SelectionStep(decoder, view) if own is None else own(view)


# ----------------------------------------------------------------------------------- run
def run(decoder, denoiser, num: int, generator, windows, *, initial=None, oracle=None,
        target=None) -> DecodeResult:
    """Decode ``num`` sequences from ``initial`` (all masks by default), one batch."""
    tokens = initial_tokens(denoiser, initial, num)
    start = tokens.clone()
    n, mask, device = denoiser.n_tokens, denoiser.mask_id, denoiser.device
    log_q_tokens = torch.zeros(num, n, dtype=denoiser.dtype, device=device)
    nfe = torch.zeros(num, dtype=torch.long, device=device)
    branched = torch.zeros(num, dtype=torch.bool, device=device)
    committed: list[torch.Tensor] = []
    info: dict[str, Any] = {}
    reference_calls = _reference_calls(decoder, len(windows))
    for window in windows:
        win = _window_mask(window, n, device)
        if decoder.corrector is not None:
            tokens, sel, lq, calls = decoder.corrector.decode_window(
                decoder, denoiser, tokens, window, generator, target=target, info=info)
            nfe = nfe + calls
            log_q_tokens[:, window[0]] += lq
            committed.append(sel)
            continue
        window_masked = ((tokens == mask) & win).sum(-1)
        step_no = torch.zeros(num, dtype=torch.long, device=device)
        while True:
            cand = (tokens == mask) & win
            active = cand.any(-1)
            if not active.any():
                break
            view = _view(decoder, denoiser, tokens, cand, step_no, window_masked, len(windows),
                         oracle)
            nfe = nfe + active.long()
            sel, draws, lp_tokens, br = step_law(decoder, view).sample(generator)
            tokens = torch.where(sel, draws, tokens)
            log_q_tokens = log_q_tokens + lp_tokens.to(log_q_tokens.dtype)
            branched = branched | br
            committed.append(sel)
            step_no = step_no + active.long()
        if reference_calls is not None:  # the reference also calls on steps that commit nothing
            nfe = nfe + torch.where(window_masked > 0, (reference_calls - step_no).clamp(min=0),
                                    torch.zeros_like(step_no))
    log_q = log_q_tokens.sum(-1)
    if decoder.corrector is None and decoder.log_q_is_marginal and branched.any():
        # a random tie-break was taken: log q(x) sums over the tie branches, replayed exactly
        rows = branched.nonzero().squeeze(-1)
        exact = marginal_log_prob(decoder, denoiser, tokens[rows], start[rows], windows,
                                  oracle=oracle, target=target)
        first = (start[rows] == mask).long().argmax(-1)
        log_q_tokens[rows, first] += exact - log_q[rows]
        log_q = log_q_tokens.sum(-1)
    return DecodeResult(tokens, log_q, nfe, committed, decoder.log_q_is_marginal, info,
                        log_q_tokens)


# ----------------------------------------------------------------------------------- replay
def replay(decoder, denoiser, tokens: torch.Tensor, committed, windows, *, initial=None,
           oracle=None, target=None) -> torch.Tensor:
    """log-probability ``[B]`` of the recorded trajectory ``committed`` (per step: bool
    ``[B, n]``) ending in ``tokens``; -inf where it is not a trajectory of the decoder."""
    B = tokens.shape[0]
    n, mask, device = denoiser.n_tokens, denoiser.mask_id, tokens.device
    state = initial_tokens(denoiser, initial, B)
    log_q = torch.zeros(B, dtype=denoiser.dtype, device=device)
    steps = iter(committed)
    for window in windows:
        if decoder.corrector is not None:
            log_q = log_q + _corrector_window_lp(decoder, denoiser, state, tokens, window, target)
            state[:, window] = tokens[:, window]
            _next_step(steps)
            continue
        win = _window_mask(window, n, device)
        window_masked = ((state == mask) & win).sum(-1)
        step_no = torch.zeros(B, dtype=torch.long, device=device)
        while True:
            cand = (state == mask) & win
            active = cand.any(-1)
            if not active.any():
                break
            view = _view(decoder, denoiser, state, cand, step_no, window_masked, len(windows),
                         oracle)
            sel = _next_step(steps).to(device) & cand
            log_q = log_q + step_law(decoder, view).log_prob(sel, tokens)
            state = torch.where(sel, tokens, state)
            step_no = step_no + active.long()
    return log_q


def marginal_log_prob(decoder, denoiser, tokens, start, windows, *, oracle=None,
                      target=None) -> torch.Tensor:
    """log q(x) ``[B]`` of complete ``tokens`` from the start states ``start``: the exact driver
    with every committed value forced to ``x`` (the selections still branch where keys tie),
    1024 sequences at a time."""
    parts = [enumerate_states(decoder, denoiser, start[i:i + 1024], windows, oracle=oracle,
                              target=target, forced=tokens[i:i + 1024], max_states=2**20)
             for i in range(0, tokens.shape[0], 1024)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=denoiser.dtype,
                                                      device=tokens.device)


# ----------------------------------------------------------------------------------- exact mode
def enumerate_states(decoder, denoiser, start: torch.Tensor, windows, *, oracle=None,
                     target=None, max_states: int = 2**16, forced=None) -> torch.Tensor:
    """The decoder's exact law from the start states ``start [S, n]``: with ``forced [S, n]``
    the log-probability ``[S]`` of reaching ``forced`` from each start, otherwise (one start) the
    log-table of q over all V^n sequences, flat ``[V^n]``."""
    n, V, mask = denoiser.n_tokens, denoiser.vocab, denoiser.mask_id
    device, dtype = denoiser.device, denoiser.dtype
    W = len(windows)
    wmask = torch.zeros(W + 1, n, dtype=torch.bool, device=device)
    for i, window in enumerate(windows):
        wmask[i, window] = True
    S0 = start.shape[0]
    seq = torch.arange(S0, device=device)
    tokens = start.to(device)
    w = torch.zeros(S0, dtype=torch.long, device=device)
    step = torch.zeros_like(w)
    opened = ((tokens == mask) & wmask[w]).sum(-1)
    lq = torch.zeros(S0, dtype=dtype, device=device)
    tokens, w, step, opened = _advance(tokens, w, step, opened, wmask, mask)
    done_tokens, done_lq, done_seq = [], [], []
    while tokens.shape[0]:
        if tokens.shape[0] > max_states:
            raise BudgetError(f"exact mode reached {tokens.shape[0]} decoder states, over "
                              f"max_states={max_states}; use Monte Carlo mode")
        done = w >= W
        if done.any():
            done_tokens.append(tokens[done])
            done_lq.append(lq[done])
            done_seq.append(seq[done])
            live = ~done
            tokens, w, step, opened, lq, seq = (t[live] for t in (tokens, w, step, opened, lq,
                                                                  seq))
            if not tokens.shape[0]:
                break
        if decoder.corrector is not None:
            row, new, lp = _corrector_outcomes(decoder, denoiser, tokens, w, windows, target)
            tokens, w, step, opened = new, w[row], torch.zeros_like(w[row]), opened[row]
        else:
            cand = (tokens == mask) & wmask[w]
            row, sel, values, lp = [], [], [], []
            offset = 0
            for part in torch.arange(tokens.shape[0], device=device).split(CALL_CHUNK):
                view = _view(decoder, denoiser, tokens[part], cand[part], step[part],
                             opened[part], W, oracle)
                r, s, v, p = step_law(decoder, view).enumerate(
                    None if forced is None else forced[seq[part]])
                row.append(r + offset)
                sel.append(s)
                values.append(v)
                lp.append(p)
                offset += len(part)
            row, sel, values, lp = (t[0] if len(t) == 1 else torch.cat(t)
                                    for t in (row, sel, values, lp))
            tokens = torch.where(sel, values, tokens[row])
            w, step, opened = w[row], step[row] + 1, opened[row]
        lq, seq = lq[row] + lp.to(dtype), seq[row]
        # merge, move finished windows on (a function of the state), merge what that made equal
        tokens, w, step, opened, lq, seq = _merge(tokens, w, step, opened, lq, seq)
        tokens, w, step, opened = _advance(tokens, w, step, opened, wmask, mask)
        tokens, w, step, opened, lq, seq = _merge(tokens, w, step, opened, lq, seq)
    final = torch.cat(done_tokens) if done_tokens else torch.zeros(0, n, dtype=torch.long,
                                                                    device=device)
    final_lq = torch.cat(done_lq) if done_lq else torch.zeros(0, dtype=dtype, device=device)
    if forced is not None:
        final_seq = torch.cat(done_seq) if done_seq else torch.zeros(0, dtype=torch.long,
                                                                      device=device)
        return _scatter_logsumexp(final_lq, final_seq, S0)
    codes = (final * V ** torch.arange(n - 1, -1, -1, device=device)).sum(-1)
    return _scatter_logsumexp(final_lq, codes, V ** n)


# ----------------------------------------------------------------------------------- helpers
def _view(decoder, denoiser, tokens, cand, step_no, window_masked, n_windows, oracle) -> Step:
    logp = conditionals(denoiser, tokens, window=cand)
    oracle_logp = None
    if oracle is not None and getattr(decoder.score, "needs_oracle", False):
        oracle_logp = conditionals(oracle, tokens, window=cand)
    return Step(logp, cand, step_no, window_masked, oracle_logp, n_windows)


def _window_mask(window, n, device) -> torch.Tensor:
    win = torch.zeros(n, dtype=torch.bool, device=device)
    win[window] = True
    return win


def _reference_calls(decoder, n_windows: int):
    """Denoiser calls per window under the reference's accounting (None: one per step taken)."""
    if getattr(decoder, "nfe", "steps") != "reference":
        return None
    return decoder.commit.window_steps(n_windows)


def _next_step(steps) -> torch.Tensor:
    try:
        return next(steps)
    except StopIteration:
        raise MdmprobError("committed has fewer steps than the trajectory needs: pass a run's "
                           "committed list unchanged (same decoder, initial and blocks)") from None


def _advance(tokens, w, step, opened, wmask, mask):
    """Move states past windows with nothing left to decode (counters reset)."""
    W = wmask.shape[0] - 1
    for _ in range(W + 1):
        left = ((tokens == mask) & wmask[w]).any(-1)
        move = (w < W) & ~left
        if not move.any():
            break
        w = w + move.long()
        step = torch.where(move, torch.zeros_like(step), step)
        opened = torch.where(move, ((tokens == mask) & wmask[w]).sum(-1), opened)
    return tokens, w, step, opened


def _merge(tokens, w, step, opened, lq, seq):
    """Merge equal states (same sequence id, tokens and counters), summing their probability.
    States are keyed by one int64 mixed-radix code when it fits (a 1-D sort), else row-wise."""
    if tokens.shape[0] <= 1:
        return tokens, w, step, opened, lq, seq
    cols = torch.cat([seq[:, None], tokens, w[:, None], step[:, None], opened[:, None]], -1)
    radix = cols.amax(0) + 1
    if float(radix.double().log2().sum()) < 62:
        weight = torch.cat([radix.flip(0).cumprod(0).flip(0)[1:], radix.new_ones(1)])
        _, inverse = torch.unique((cols * weight).sum(-1), return_inverse=True)
    else:
        _, inverse = torch.unique(cols, dim=0, return_inverse=True)
    size = int(inverse.max()) + 1
    rep = torch.zeros(size, dtype=torch.long, device=seq.device).scatter_(
        0, inverse, torch.arange(seq.shape[0], device=seq.device))
    lq = _scatter_logsumexp(lq, inverse, size)
    live = lq > -math.inf
    rep, lq = rep[live], lq[live]
    return tokens[rep], w[rep], step[rep], opened[rep], lq, seq[rep]


def _corrector_outcomes(decoder, denoiser, tokens, w, windows, target):
    """Every outcome of each state's corrector window (the corrector's exact window law)."""
    rows, news, lps = [], [], []
    for r in range(tokens.shape[0]):
        window = windows[int(w[r])]
        for values, lp in decoder.corrector.window_distribution(
                decoder, denoiser, tokens[r:r + 1], window, target=target):
            new = tokens[r].clone()
            new[window] = torch.tensor(values, dtype=torch.long, device=tokens.device)
            rows.append(r)
            news.append(new)
            lps.append(lp)
    device = tokens.device
    if not rows:
        return (torch.zeros(0, dtype=torch.long, device=device), tokens[:0],
                torch.zeros(0, dtype=denoiser.dtype, device=device))
    return (torch.tensor(rows, dtype=torch.long, device=device), torch.stack(news),
            torch.tensor(lps, dtype=denoiser.dtype, device=device))


def _corrector_window_lp(decoder, denoiser, state, tokens, window, target) -> torch.Tensor:
    """log p(x_W | state) of an exact block corrector's window, ``[B]``."""
    corrector = decoder.corrector
    if not corrector.log_q_is_marginal:
        raise MdmprobError(
            f"{decoder.name}: the corrector {corrector.name!r} is not an exact block sampler, so "
            "its window's log q is not p(x_B | x_P); use its own decoder (e.g. gibbs_remask()) "
            "to replay it")
    engine = corrector._target(denoiser, target)
    V = denoiser.vocab
    table = corrector._block_table(engine, state, window, denoiser.mask_id)
    code = (tokens[:, window] * V ** torch.arange(len(window) - 1, -1, -1,
                                                   device=tokens.device)).sum(-1)
    return table.reshape(tokens.shape[0], -1).gather(-1, code[:, None])[:, 0]


__all__ = ["conditionals", "enumerate_states", "marginal_log_prob", "replay", "run"]
