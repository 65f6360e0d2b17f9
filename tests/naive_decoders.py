"""The naive reference decoders: a one-definition-per-use copy of the original implementation.

Running (``NaiveDecoder.run``), replaying (``NaiveDecoder.log_prob``) and enumerating
(``NaiveDecoder.distribution``: breadth-first over decoder states with Python dicts and ``.item()``
calls) each spell out the step logic on their own. The library's single step definition and its
three drivers are checked against this code (tests) and timed against it (``bench/``). Ties go to
the lowest position, values are drawn from softmax(log p / T): the laws the presets had before
ties, top-k/top-p and the reference-faithful options existed.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from mdmprob.decoders.primitives import CommitRule, Score, Step
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import BudgetError, MdmprobError
from mdmprob.sampling import gumbel_argmax


@dataclass
class DecodeResult:
    """What a batched decoder run returns (B sequences of n tokens).

    ``log_q`` is the exact log-probability of each run's trajectory (the decoder's random choices);
    it equals ``log q(tokens)`` when ``log_q_is_marginal`` (the trajectory is a function of the
    output: deterministic position choices), otherwise it is a trajectory density.
    """

    tokens: torch.Tensor  # long [B, n]
    log_q: torch.Tensor  # [B]
    nfe: torch.Tensor  # long [B]: denoiser calls per sequence
    committed: list[torch.Tensor]  # per step: bool [B, n] positions committed at that step
    log_q_is_marginal: bool
    corrector: dict[str, Any] = field(default_factory=dict)  # proposals, acceptance, ESS, ...
    log_q_tokens: torch.Tensor | None = None  # [B, n]: each token's share of log_q (sums to it)

    @property
    def steps(self) -> int:
        return len(self.committed)


@dataclass
class NaiveDecoder:
    """Window policy x position score x commit rule, with temperature and an optional corrector.

    Args:
        score: which candidates first (see :mod:`mdmprob.decoders.primitives`).
        commit: how many per step.
        window: ``"blocks"`` (the structure's decoding blocks, in order), ``"all"`` (the whole
            sequence), or an int (contiguous semi-AR blocks of that length).
        temperature: values are drawn from softmax(log p_theta / T); T = 0 is argmax.
        corrector: a block-level corrector (rejection, speculative, exact block) that replaces
            the step loop inside each window.
    """

    name: str
    score: Score
    commit: CommitRule
    window: str | int = "blocks"
    temperature: float = 1.0
    corrector: Any = None

    def __post_init__(self):
        t = self.temperature
        if not (isinstance(t, int | float) and t >= 0 and math.isfinite(t)):
            raise MdmprobError(f"temperature={t!r} must be a finite number >= 0")
        if isinstance(self.window, int) and self.window < 1:
            raise MdmprobError(f"window={self.window} must be >= 1 positions")
        if not isinstance(self.window, int) and self.window not in ("blocks", "all"):
            raise MdmprobError(f"window={self.window!r} must be 'blocks', 'all' or an int")

    @property
    def log_q_is_marginal(self) -> bool:
        """True when a run's trajectory is determined by its output, so log q(traj) = log q(x)."""
        if self.corrector is not None:
            return self.corrector.log_q_is_marginal
        return not (self.score.random or self.commit.stochastic or
                    (self.score.uses_draws and self.temperature > 0))

    # ------------------------------------------------------------------------------- windows
    def windows(self, denoiser: Denoiser, blocks=None) -> list[list[int]]:
        n = denoiser.n_tokens
        if self.window == "all":
            return [list(range(n))]
        if isinstance(self.window, int):
            return [list(range(s, min(s + self.window, n))) for s in range(0, n, self.window)]
        if blocks is None:
            structure = getattr(denoiser, "structure", None)
            blocks = structure.blocks if structure is not None else [list(range(n))]
        flat = sorted(p for b in blocks for p in b)
        if flat != list(range(n)):
            raise MdmprobError(f"blocks {blocks} do not partition the denoiser's {n} positions")
        return [list(b) for b in blocks]

    # ------------------------------------------------------------------------------- run
    def run(self, denoiser: Denoiser, num: int = 1, *, seed: int | None = 0,
            generator: torch.Generator | None = None, oracle: Denoiser | None = None,
            blocks=None, target=None) -> DecodeResult:
        """Decode ``num`` sequences in one batch. ``seed`` (or an explicit ``generator`` on the
        denoiser's device) fixes every random choice; ``oracle`` supplies exact conditionals for
        oracle scores; ``target`` (a Structure) is what correctors verify against."""
        if not isinstance(num, int) or num < 1:
            raise MdmprobError(f"num={num!r} sequences must be an integer >= 1")
        device = denoiser.device
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(0 if seed is None else seed)
        windows = self.windows(denoiser, blocks)
        n, V = denoiser.n_tokens, denoiser.vocab
        tokens = torch.full((num, n), denoiser.mask_id, dtype=torch.long, device=device)
        log_q = torch.zeros(num, dtype=denoiser.dtype, device=device)
        log_q_tokens = torch.zeros(num, n, dtype=denoiser.dtype, device=device)
        nfe = torch.zeros(num, dtype=torch.long, device=device)
        committed: list[torch.Tensor] = []
        diagnostics: dict[str, Any] = {}
        for window in windows:
            win = torch.zeros(n, dtype=torch.bool, device=device)
            win[window] = True
            if self.corrector is not None:
                tokens, sel, lq, calls = self.corrector.decode_window(
                    self, denoiser, tokens, window, generator, target=target, diagnostics=diagnostics)
                log_q, nfe = log_q + lq, nfe + calls
                log_q_tokens[:, window[0]] += lq
                committed.append(sel)
                continue
            window_masked = (tokens[:, window] == denoiser.mask_id).sum(-1)
            step_no = torch.zeros(num, dtype=torch.long, device=device)
            while True:
                candidates = (tokens == denoiser.mask_id) & win
                active = candidates.any(-1)
                if not active.any():
                    break
                logp = denoiser(tokens)
                nfe += active.long()
                oracle_logp = oracle(tokens) if self.score.name == "oracle_entropy" and \
                    oracle is not None else None
                step = Step(logp, candidates, step_no, window_masked, oracle_logp)
                sel, draws, lq, lq_tokens = self._step(step, generator, V)
                tokens = torch.where(sel, draws, tokens)
                log_q = log_q + torch.where(active, lq, torch.zeros_like(lq))
                log_q_tokens = log_q_tokens + torch.where(active[:, None], lq_tokens,
                                                          torch.zeros_like(lq_tokens))
                committed.append(sel)
                step_no = step_no + active.long()
        return DecodeResult(tokens, log_q, nfe, committed, self.log_q_is_marginal, diagnostics,
                            log_q_tokens)

    def _step(self, step: Step, generator, V):
        """One step: draw values, rank, select; returns (selected [B,n], draws [B,n], log q [B],
        per-token log q [B, n]: each committed value's log-prob, the selection's log-prob on the
        first committed position)."""
        t = self.temperature
        logp, cand = step.logp, step.candidates
        tempered = _tempered(logp, t)
        if t > 0:
            draws = gumbel_argmax(tempered, generator)
        else:
            draws = logp.argmax(-1)
        if self.commit.stochastic:
            probs = self.commit.probs(step)
            u = torch.rand(probs.shape, generator=generator, device=probs.device,
                           dtype=probs.dtype)
            sel = (u < probs) & cand
            lq_sel = torch.where(cand, torch.where(sel, probs.log(), torch.log1p(-probs)),
                                 torch.zeros_like(probs)).sum(-1)
        else:
            if self.score.random:
                keys = torch.rand(cand.shape, generator=generator, device=cand.device,
                                  dtype=logp.dtype)
            else:
                keys = self.score(step, draws).to(logp.dtype)
            sel, order, count = _select(step, keys, self.commit)
            lq_sel = torch.zeros(cand.shape[0], dtype=logp.dtype, device=logp.device)
            if self.score.random:
                lq_sel = -_log_binom(step.n_candidates, count).to(logp.dtype)
            elif self.score.uses_draws:
                lq_sel = _loser_log_prob(keys, sel, cand, tempered if t > 0 else
                                         _onehot_log(draws, V, logp.dtype), logp)
        value_lq = tempered.gather(-1, draws[..., None]).squeeze(-1) if t > 0 else \
            torch.zeros_like(logp[..., 0])
        lq_tokens = torch.where(sel, value_lq, torch.zeros_like(value_lq))
        owner = torch.where(sel.any(-1), sel.long().argmax(-1), cand.long().argmax(-1))
        first = torch.nn.functional.one_hot(owner, sel.shape[-1]).bool()
        lq_tokens = lq_tokens + torch.where(first, lq_sel[:, None], torch.zeros_like(lq_tokens))
        lq = lq_tokens.sum(-1)
        return sel, draws, lq, lq_tokens

    # ------------------------------------------------------------------------------- replay
    def log_prob(self, denoiser: Denoiser, tokens: torch.Tensor, *, committed=None, blocks=None,
                 oracle: Denoiser | None = None, target=None) -> torch.Tensor:
        """``log q(x)`` of complete sequences ``tokens [B, n]`` by replaying the decoder with its
        values forced to ``x`` (valid when the trajectory is a function of the output). With
        ``committed`` (a run's per-step selections) it replays that trajectory instead and returns
        its log-probability, for every decoder."""
        if not self.log_q_is_marginal and committed is None:
            raise MdmprobError(
                f"{self.name}: log q(x) is a sum over trajectories (random or sample-then-choose "
                "choices); pass committed= (a run's trajectory) or use exact mode "
                "(Decoder.distribution) on small spaces")
        steps = iter(committed) if committed is not None else None
        tokens = denoiser.check(tokens)
        if (tokens == denoiser.mask_id).any():
            raise MdmprobError("log_prob needs complete sequences (no mask ids)")
        n, V = denoiser.n_tokens, denoiser.vocab
        state = torch.full_like(tokens, denoiser.mask_id)
        log_q = torch.zeros(tokens.shape[0], dtype=denoiser.dtype, device=tokens.device)
        for window in self.windows(denoiser, blocks):
            if self.corrector is not None:
                if not self.corrector.log_q_is_marginal:
                    raise MdmprobError(
                        f"{self.name}: the corrector {self.corrector.name!r} is not an exact block "
                        "sampler, so its window's log q is not p(x_B | x_P); use its own decoder "
                        "class (e.g. gibbs_remask()) to replay it")
                engine = self.corrector.target_engine(denoiser, target)
                table = self.corrector.block_table(engine, state, window, denoiser.mask_id)
                code = (tokens[:, window] * V ** torch.arange(len(window) - 1, -1, -1,
                                                               device=tokens.device)).sum(-1)
                log_q = log_q + table.reshape(tokens.shape[0], -1).gather(-1, code[:, None])[:, 0]
                state[:, window] = tokens[:, window]
                if steps is not None:
                    next(steps)
                continue
            win = torch.zeros(n, dtype=torch.bool, device=tokens.device)
            win[window] = True
            window_masked = (state[:, window] == denoiser.mask_id).sum(-1)
            step_no = torch.zeros_like(window_masked)
            while True:
                candidates = (state == denoiser.mask_id) & win
                active = candidates.any(-1)
                if not active.any():
                    break
                logp = denoiser(state)
                oracle_logp = oracle(state) if self.score.name == "oracle_entropy" and \
                    oracle is not None else None
                step = Step(logp, candidates, step_no, window_masked, oracle_logp)
                argmax = logp.argmax(-1)
                tempered = _tempered(logp, self.temperature) if self.temperature > 0 else \
                    _onehot_log(argmax, V, logp.dtype)
                if steps is None:
                    sel, _, _ = _select(step, self.score(step, argmax).to(logp.dtype), self.commit)
                else:
                    sel = next(steps).to(tokens.device) & candidates
                    log_q = log_q + torch.where(active, self._selection_log_prob(
                        step, sel, tokens, tempered), torch.zeros_like(log_q))
                value_lq = tempered.gather(-1, tokens[..., None]).squeeze(-1)
                log_q = log_q + torch.where(sel, value_lq, torch.zeros_like(value_lq)).sum(-1)
                state = torch.where(sel, tokens, state)
                step_no = step_no + active.long()
        return log_q

    def _selection_log_prob(self, step: Step, sel, values, tempered) -> torch.Tensor:
        """log Pr[the step selects ``sel``] given the state (values forced where drawn)."""
        cand = step.candidates
        if self.commit.stochastic:
            probs = self.commit.probs(step)
            return torch.where(cand, torch.where(sel, probs.log(), torch.log1p(-probs)),
                               torch.zeros_like(probs)).sum(-1)
        if self.score.random:
            zeros = torch.zeros(cand.shape, dtype=tempered.dtype, device=cand.device)
            _, _, count = _select(step, zeros, self.commit)
            ok = sel.sum(-1) == count
            return torch.where(ok, -_log_binom(step.n_candidates, count).to(tempered.dtype),
                               torch.full_like(tempered[:, 0, 0], -math.inf))
        if self.score.uses_draws and self.temperature > 0:
            keys = self.score(step, values).to(tempered.dtype)
            return _loser_log_prob(keys, sel, cand, tempered, step.logp)
        return torch.zeros_like(tempered[:, 0, 0])

    # ------------------------------------------------------------------------------- exact
    def distribution(self, denoiser: Denoiser, *, blocks=None, oracle: Denoiser | None = None,
                     target=None, max_states: int = 2**16) -> torch.Tensor:
        """The exact decoder-induced distribution q as a log-table of shape ``[V] * n``."""
        n, V = denoiser.n_tokens, denoiser.vocab
        if V ** n > 2**20:
            raise BudgetError(f"exact mode enumerates all V^n = {V}^{n} sequences, over the "
                              "budget of 2^20; use Monte Carlo mode (evaluate(..., mode='mc'))")
        return enumerate_decoder(self, denoiser, blocks=blocks, oracle=oracle, target=target,
                                 max_states=max_states)

    def __repr__(self) -> str:
        return self.name


# ----------------------------------------------------------------------------------- helpers
def _tempered(logp: torch.Tensor, t: float) -> torch.Tensor:
    if t == 1 or t == 0:
        return logp
    return torch.log_softmax(logp / t, -1)


def _onehot_log(draws, V, dtype):
    onehot = torch.nn.functional.one_hot(draws, V).bool()
    return torch.zeros(onehot.shape, dtype=dtype, device=draws.device).masked_fill(~onehot,
                                                                                   -math.inf)


def _select(step: Step, keys: torch.Tensor, commit: CommitRule):
    """Rank candidates by key (descending; ties to the lower position), commit the top count."""
    cand = step.candidates
    masked_keys = keys.masked_fill(~cand, -math.inf)
    order = _rank(masked_keys)
    ranked = masked_keys.gather(-1, order)
    count = commit.count(step, ranked, order).clamp(max=step.n_candidates)
    rank_of = torch.empty_like(order).scatter_(-1, order, torch.arange(
        order.shape[-1], device=order.device).expand_as(order))
    sel = (rank_of < count[:, None]) & cand
    return sel, order, count


def _rank(keys: torch.Tensor) -> torch.Tensor:
    """Positions sorted by key descending, ties broken by lower position first."""
    return torch.sort(keys, dim=-1, descending=True, stable=True).indices


def _log_binom(n: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    n, k = n.to(torch.float64), k.to(torch.float64)
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def _loser_log_prob(keys, sel, cand, tempered, logp) -> torch.Tensor:
    """log Pr[every unselected candidate's drawn score loses to the weakest selected one]
    (sample-then-choose: the unselected draws are marginalised out exactly)."""
    n = keys.shape[-1]
    pos = torch.arange(n, device=keys.device)
    sel_keys = keys.masked_fill(~sel, math.inf)
    weakest_key = sel_keys.amin(-1)
    # weakest selected element: lowest key, ties -> highest position (it ranks last)
    is_weak = sel & (keys == weakest_key[:, None])
    weakest_pos = torch.where(is_weak, pos, torch.full_like(pos, -1)).amax(-1)
    # score of every possible value v at every position: confidence = p_theta(v)
    value_keys = logp.exp()
    loses = (value_keys < weakest_key[:, None, None]) | (
        (value_keys == weakest_key[:, None, None]) & (pos[None, :, None] > weakest_pos[:, None, None]))
    p_lose = torch.where(loses, tempered.exp(), torch.zeros_like(tempered)).sum(-1)
    others = cand & ~sel
    return torch.where(others, p_lose.log(), torch.zeros_like(p_lose)).sum(-1)


def all_values(k: int, V: int, device) -> torch.Tensor:
    """Every assignment of k positions, ``[V^k, k]``."""
    return torch.tensor(list(itertools.product(range(V), repeat=k)), dtype=torch.long,
                        device=device).reshape(V ** k, k)


# ----------------------------------------------------------------------------- exact mode
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


