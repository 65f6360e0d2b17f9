"""Exact mode: the decoder-induced distribution q over all V^n sequences, by enumerating every
decoding trajectory (breadth-first over decoder states, merging equal states).

A state is (tokens, window, step in window, masked count when the window opened); each step's
transitions are enumerated with their exact probabilities from the same primitives the batched
run uses, so adaptive orders, random orders (all subsets), stochastic schedules and
sample-then-choose rules are all exact.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import torch

from mdmprob.decoders.core import _onehot_log, _select, _tempered, all_values
from mdmprob.decoders.primitives import Step
from mdmprob.errors import BudgetError


def enumerate_decoder(decoder, denoiser, *, blocks=None, oracle=None, target=None,
                      max_states: int = 2**16) -> torch.Tensor:
    """log q(x) for every x, as a tensor of shape ``[V] * n``."""
    n, V, mask = denoiser.n_tokens, denoiser.vocab, denoiser.mask_id
    device, dtype = denoiser.device, denoiser.dtype
    windows = decoder.windows(denoiser, blocks)
    start = _normalise((tuple([mask] * n), 0, 0, 0), windows, mask)
    frontier: dict[tuple, float] = {start: 0.0}
    final: dict[tuple, float] = defaultdict(lambda: -math.inf)
    while frontier:
        if len(frontier) > max_states:
            raise BudgetError(f"exact mode reached {len(frontier)} decoder states, over "
                              f"max_states={max_states}; use Monte Carlo mode")
        states = list(frontier)
        done = [s for s in states if s[1] >= len(windows)]
        for s in done:
            final[s[0]] = _logaddexp(final[s[0]], frontier[s])
        states = [s for s in states if s[1] < len(windows)]
        if not states:
            break
        tokens = torch.tensor([s[0] for s in states], dtype=torch.long, device=device)
        nxt: dict[tuple, float] = defaultdict(lambda: -math.inf)
        if decoder.corrector is not None:
            for row, state in enumerate(states):
                window = windows[state[1]]
                for values, lp in decoder.corrector.window_distribution(
                        decoder, denoiser, tokens[row:row + 1], window, target=target):
                    new = list(state[0])
                    for p, v in zip(window, values, strict=True):
                        new[p] = v
                    key = _normalise((tuple(new), state[1] + 1, 0, 0), windows, mask)
                    nxt[key] = _logaddexp(nxt[key], frontier[state] + lp)
            frontier = dict(nxt)
            continue
        logp = denoiser(tokens)
        oracle_logp = oracle(tokens) if oracle is not None else None
        for row, state in enumerate(states):
            base = frontier[state]
            for new_tokens, lp in _transitions(decoder, state, windows, logp[row:row + 1],
                                               None if oracle_logp is None else
                                               oracle_logp[row:row + 1], V, mask, dtype):
                key = _normalise((new_tokens, state[1], state[2] + 1, state[3]), windows, mask)
                nxt[key] = _logaddexp(nxt[key], base + lp)
        frontier = dict(nxt)
    table = torch.full((V ** n,), -math.inf, dtype=dtype, device=device)
    for x, lp in final.items():
        code = sum(v * V ** (n - 1 - i) for i, v in enumerate(x))
        table[code] = lp
    return table.reshape([V] * n)


def _transitions(decoder, state, windows, logp, oracle_logp, V, mask, dtype):
    """Yield (new token tuple, log prob) for every outcome of one step from ``state``."""
    tokens, w, step_no, window_masked = state
    n = len(tokens)
    device = logp.device
    t = decoder.temperature
    cand = torch.zeros(1, n, dtype=torch.bool, device=device)
    for p in windows[w]:
        if tokens[p] == mask:
            cand[0, p] = True
    step = Step(logp, cand, torch.tensor([step_no], device=device),
                torch.tensor([window_masked], device=device), oracle_logp)
    tempered = _tempered(logp, t) if t > 0 else _onehot_log(logp.argmax(-1), V, dtype)
    positions = cand[0].nonzero().squeeze(-1).tolist()

    def with_values(subset, lp_subset):
        if not subset:
            yield tokens, lp_subset
            return
        for values in itertools.product(range(V), repeat=len(subset)):
            lp = lp_subset + sum(tempered[0, p, v].item() for p, v in zip(subset, values,
                                                                            strict=True))
            if lp == -math.inf:
                continue
            new = list(tokens)
            for p, v in zip(subset, values, strict=True):
                new[p] = v
            yield tuple(new), lp

    if decoder.commit.stochastic:
        probs = decoder.commit.probs(step)[0]
        for r in range(len(positions) + 1):
            for subset in itertools.combinations(positions, r):
                lp = sum(math.log(probs[p].item()) if p in subset else
                         math.log1p(-probs[p].item()) if probs[p].item() < 1 else -math.inf
                         for p in positions)
                if lp > -math.inf:
                    yield from with_values(list(subset), lp)
        return
    if decoder.score.random:
        zeros = torch.zeros(1, n, dtype=dtype, device=device)
        _, _, count = _select(step, zeros, decoder.commit)
        c = int(count.item())
        lp_subset = -math.log(math.comb(len(positions), c))
        for subset in itertools.combinations(positions, c):
            yield from with_values(list(subset), lp_subset)
        return
    if decoder.score.uses_draws and t > 0:
        for values in itertools.product(range(V), repeat=len(positions)):
            lp = sum(tempered[0, p, v].item() for p, v in zip(positions, values, strict=True))
            if lp == -math.inf:
                continue
            draws = logp.argmax(-1).clone()
            for p, v in zip(positions, values, strict=True):
                draws[0, p] = v
            keys = decoder.score(step, draws).to(dtype)
            sel, _, _ = _select(step, keys, decoder.commit)
            new = list(tokens)
            for p in sel[0].nonzero().squeeze(-1).tolist():
                new[p] = int(draws[0, p])
            yield tuple(new), lp
        return
    draws = logp.argmax(-1)
    keys = decoder.score(step, draws).to(dtype)
    sel, _, _ = _select(step, keys, decoder.commit)
    yield from with_values(sel[0].nonzero().squeeze(-1).tolist(), 0.0)


def _normalise(state, windows, mask):
    """Advance past windows with nothing left to decode."""
    tokens, w, step_no, window_masked = state
    while w < len(windows) and all(tokens[p] != mask for p in windows[w]):
        w, step_no = w + 1, 0
        window_masked = sum(tokens[p] == mask for p in windows[w]) if w < len(windows) else 0
    if step_no == 0 and w < len(windows):
        window_masked = sum(tokens[p] == mask for p in windows[w])
    return (tokens, w, step_no, window_masked)


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


__all__ = ["enumerate_decoder", "all_values"]
