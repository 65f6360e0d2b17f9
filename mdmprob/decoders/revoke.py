"""Decoders whose step reads more than the current tokens, or revokes what it wrote: KLASS
(KL-stability), ReMDM ``conf`` (confidence-weighted remasking), WINO (draft and verify) and P2
(path planning).

Each is a :class:`StateDecoder`: a Markov chain over decoder states. A state is the tokens (mask
id where masked) with the counters (window, step in window, masks when the window opened) and
whatever else the rule reads (KLASS: the last H token states, from which the previous predictive
distributions are recomputed; ReMDM ``conf``: each visible token's commit-time confidence; WINO:
the previous step's accepted count). One step law per decoder answers

* ``sample``: the next tokens of every row;
* ``log_prob``: the exact log-probability of given next tokens (random draws that leave no trace
  in the next state are summed out);
* ``enumerate``: every next state with positive probability;

and three drivers here share it: :meth:`StateDecoder.run` (batched), :meth:`StateDecoder.log_prob`
(replay of a run's :class:`~mdmprob.decoders.remask.Trajectory`) and
:meth:`StateDecoder.distribution` (exact q by a breadth-first walk over states, equal states
merged). Revoking decoders are trajectory decoders (a run's ``log_q`` is the log-probability of
its trajectory); KLASS with ``ties="lowest_position"`` never revokes and its trajectory is a
function of its output, so its runs report log q(x) and ``log_prob`` needs no trajectory.
"""

from __future__ import annotations

import math

import torch

from mdmprob.checks import check_int, check_number, check_prob, exact_state_limit
from mdmprob.decoders.primitives import CommitRule, EvenSplit, Score, Step, ValueLaw
from mdmprob.decoders.protocol import (
    DecoderBase,
    DecodeResult,
    check_complete,
    check_num,
    check_table_size,
    check_window,
    initial_tokens,
    make_generator,
    windows_of,
)
from mdmprob.decoders.remask import ReMDM, Trajectory
from mdmprob.decoders.step import (
    TIES,
    SelectionStep,
    first_only,
    option_product,
    round_keys,
    scatter_logsumexp,
)
from mdmprob.denoisers.base import point_mass
from mdmprob.errors import BudgetError, EnumerationError, MdmprobError, unknown_name
from mdmprob.sampling import gumbel_argmax

DRAW_BUDGET = 2 ** 16  # joint draws one sample-then-choose step may enumerate per row
NO_STATE = -1  # the previous state before the first step


# ======================================================================================= state
class State:
    """A batch of decoder states: tokens ``[B, n]``, counters ``[B]`` (window ``w``, ``step`` in
    it, masks ``opened`` with), the start sequence id ``seq`` and per-row ``extra`` tensors."""

    def __init__(self, tokens, w, step, opened, seq, extra=None):
        self.tokens, self.w, self.step, self.opened, self.seq = tokens, w, step, opened, seq
        self.extra: dict[str, torch.Tensor] = dict(extra or {})

    def fields(self) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens, "w": self.w, "step": self.step, "opened": self.opened,
                "seq": self.seq, **self.extra}

    @classmethod
    def of(cls, fields: dict[str, torch.Tensor]) -> State:
        f = dict(fields)
        return cls(f.pop("tokens"), f.pop("w"), f.pop("step"), f.pop("opened"), f.pop("seq"), f)

    def take(self, idx: torch.Tensor) -> State:
        return State.of({k: v[idx] for k, v in self.fields().items()})

    def put(self, idx: torch.Tensor, other: State) -> State:
        out = {k: v.clone() for k, v in self.fields().items()}
        for k, v in other.fields().items():
            out[k][idx] = v
        return State.of(out)

    def __len__(self) -> int:
        return self.tokens.shape[0]


# ======================================================================================= engine
class StateDecoder(DecoderBase):
    """A decoder given by its step law over :class:`State` (see the module docstring).

    Subclasses set ``name``, ``window`` and implement :meth:`begin_extra`,
    :meth:`law`, :meth:`after_extra` and :meth:`key`; :meth:`finished` and :meth:`on_window`
    have defaults for window-by-window decoders."""

    window: str | int = "all"
    prompt = True  # whether initial= (a prompt) is supported

    @property
    def log_q_is_marginal(self) -> bool:
        return False

    def windows(self, denoiser, blocks=None) -> list[list[int]]:
        return windows_of(self.window, denoiser, blocks)

    # ------------------------------------------------------------------------ hooks
    def begin_extra(self, denoiser, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def law(self, denoiser, state: State, wmask: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def after_extra(self, state: State, law, row, nxt) -> dict[str, torch.Tensor]:
        return {k: v[row] for k, v in state.extra.items()}

    def key(self, state: State) -> list[torch.Tensor]:
        """The tensors that determine the future of a state (equal keys are merged)."""
        return [state.tokens, state.w, state.step, state.opened]

    def finished(self, state: State, wmask: torch.Tensor) -> torch.Tensor:
        return state.w >= wmask.shape[0] - 1

    def calls(self, state: State, mask: int) -> torch.Tensor:
        """Denoiser calls of one step per row (one, by default)."""
        return torch.ones_like(state.w)

    def on_window(self, state: State, moved: torch.Tensor) -> None:
        """Reset what a new window resets (rows ``moved``); counters are reset already."""

    # ------------------------------------------------------------------------ shared moves
    def _begin(self, denoiser, tokens, wmask) -> State:
        B = tokens.shape[0]
        zeros = torch.zeros(B, dtype=torch.long, device=tokens.device)
        state = State(tokens, zeros, zeros.clone(), zeros.clone(),
                      torch.arange(B, device=tokens.device), self.begin_extra(denoiser, tokens))
        state.opened = ((tokens == denoiser.mask_id) & wmask[state.w]).sum(-1)
        return self._advance(state, wmask, denoiser.mask_id)

    def _after(self, state: State, law, row, nxt, wmask, mask) -> State:
        new = State(nxt, state.w[row], state.step[row] + 1, state.opened[row], state.seq[row],
                    self.after_extra(state, law, row, nxt))
        return self._advance(new, wmask, mask)

    def _advance(self, state: State, wmask, mask) -> State:
        """Move rows past windows with nothing left to decode (a window-by-window decoder)."""
        W = wmask.shape[0] - 1
        for _ in range(W + 1):
            left = ((state.tokens == mask) & wmask[state.w]).any(-1)
            move = (state.w < W) & ~left & self.moves_on(state)
            if not move.any():
                break
            state.w = state.w + move.long()
            state.step = torch.where(move, torch.zeros_like(state.step), state.step)
            state.opened = torch.where(move, ((state.tokens == mask) & wmask[state.w]).sum(-1),
                                       state.opened)
            self.on_window(state, move)
        return state

    def moves_on(self, state: State) -> torch.Tensor:
        """Rows whose window may close when it has no mask left (all, by default)."""
        return torch.ones_like(state.w, dtype=torch.bool)

    def _wmask(self, denoiser, blocks) -> torch.Tensor:
        windows = self.windows(denoiser, blocks)
        wmask = torch.zeros(len(windows) + 1, denoiser.n_tokens, dtype=torch.bool,
                            device=denoiser.device)
        for i, window in enumerate(windows):
            wmask[i, window] = True
        return wmask

    def _start(self, denoiser, initial, num) -> torch.Tensor:
        if initial is not None and not self.prompt:
            raise MdmprobError(f"{self.name} remasks every position it wrote and has no prompt "
                               "mode: initial= is not supported; use a step decoder (e.g. llada) "
                               "for prompted decoding")
        return initial_tokens(denoiser, initial, num)

    # ------------------------------------------------------------------------ protocol
    def run(self, denoiser, num: int = 1, *, seed: int | None = 0, generator=None,
            initial=None, blocks=None, oracle=None, target=None) -> DecodeResult:
        """Decode ``num`` sequences in one batch (``seed`` as the decoder protocol: default 0,
        ``None`` fresh randomness); ``committed`` is a
        :class:`~mdmprob.decoders.remask.Trajectory` (per step the newly unmasked positions and
        the tokens after the step)."""
        check_num(num, denoiser)
        generator = make_generator(denoiser, seed, generator)
        mask, n = denoiser.mask_id, denoiser.n_tokens
        wmask = self._wmask(denoiser, blocks)
        state = self._begin(denoiser, self._start(denoiser, initial, num), wmask)
        log_q_tokens = torch.zeros(num, n, dtype=denoiser.dtype, device=denoiser.device)
        nfe = torch.zeros(num, dtype=torch.long, device=denoiser.device)
        trace = Trajectory()
        while True:
            idx = (~self.finished(state, wmask)).nonzero().squeeze(-1)
            if not len(idx):
                break
            sub = state.take(idx)
            law = self.law(denoiser, sub, wmask)
            nxt = law.sample(generator)
            lp = law.log_prob(nxt)
            changed = nxt != sub.tokens
            spot = torch.nn.functional.one_hot(changed.long().argmax(-1), n).bool()
            log_q_tokens[idx] += torch.where(spot, lp[:, None], torch.zeros_like(spot,
                                                                                dtype=lp.dtype))
            nfe[idx] += self.calls(sub, denoiser.mask_id)
            old = state.tokens
            state = state.put(idx, self._after(sub, law, torch.arange(len(idx), device=idx.device),
                                               nxt, wmask, mask))
            trace.append_step((old == mask) & (state.tokens != mask), state.tokens.clone())
        return DecodeResult(state.tokens, log_q_tokens.sum(-1), nfe, trace,
                            self.log_q_is_marginal, {}, log_q_tokens)

    def log_prob(self, denoiser, tokens, *, committed=None, initial=None, blocks=None,
                 oracle=None, target=None) -> torch.Tensor:
        """With ``committed`` (a run's Trajectory): the log-probability ``[B]`` of that
        trajectory, -inf where it is not one of this decoder's ending in ``tokens``. Without:
        log q(x), for decoders whose runs report it (``log_q_is_marginal``)."""
        tokens = check_complete(denoiser, tokens, initial)
        B = tokens.shape[0]
        start = self._start(denoiser, initial, B)
        if committed is None:
            if not self.log_q_is_marginal:
                raise MdmprobError(
                    f"{self.name}: log q(x) sums over trajectories (revoked tokens, random "
                    "draws or ties); pass committed=run.committed (the run's Trajectory) or use "
                    "exact mode (decoder.distribution) on small spaces")
            return self._walk(denoiser, start, self._wmask(denoiser, blocks), forced=tokens,
                              max_states=2 ** 20)
        if not isinstance(committed, Trajectory) or len(committed.states) != len(committed):
            raise MdmprobError(f"{self.name}: committed must be the Trajectory of one of this "
                               "decoder's runs (it carries the states revoking overwrites)")
        mask = denoiser.mask_id
        wmask = self._wmask(denoiser, blocks)
        state = self._begin(denoiser, start, wmask)
        log_q = torch.zeros(B, dtype=denoiser.dtype, device=tokens.device)
        for nxt in committed.states:
            nxt = nxt.to(tokens.device)
            if nxt.shape != tokens.shape:
                raise MdmprobError(f"{self.name}: the trajectory's states have shape "
                                   f"{tuple(nxt.shape)}, the tokens {tuple(tokens.shape)}")
            live = ~self.finished(state, wmask)
            stay = live | (nxt == state.tokens).all(-1)
            log_q = torch.where(stay, log_q, torch.full_like(log_q, -math.inf))
            idx = live.nonzero().squeeze(-1)
            if len(idx):
                sub = state.take(idx)
                law = self.law(denoiser, sub, wmask)
                log_q[idx] += law.log_prob(nxt[idx])
                state = state.put(idx, self._after(sub, law, torch.arange(
                    len(idx), device=idx.device), nxt[idx], wmask, mask))
        ok = self.finished(state, wmask) & (state.tokens == tokens).all(-1)
        return torch.where(ok, log_q, torch.full_like(log_q, -math.inf))

    def distribution(self, denoiser, *, initial=None, blocks=None, oracle=None, target=None,
                     max_states: int | None = None) -> torch.Tensor:
        """The exact law of the output, ``[V] * n``, by a breadth-first walk over decoder states
        (equal states merged; ``max_states=None``: what the memory budget allows,
        :func:`~mdmprob.checks.exact_state_limit`)."""
        n, V = denoiser.n_tokens, denoiser.vocab
        if max_states is None:
            max_states = exact_state_limit(n, V)
        check_table_size(denoiser)
        start = self._start(denoiser, initial, 1)
        table = self._walk(denoiser, start, self._wmask(denoiser, blocks), None, max_states)
        return table.reshape([V] * n)

    def _walk(self, denoiser, start, wmask, forced, max_states) -> torch.Tensor:
        """Exact mode: the log-table over V^n codes (one start), or with ``forced [S, n]`` the
        log-probability of reaching it from each start (no revoking: committed values must agree
        with it)."""
        n, V, mask = denoiser.n_tokens, denoiser.vocab, denoiser.mask_id
        state = self._begin(denoiser, start.to(denoiser.device), wmask)
        lq = torch.zeros(len(state), dtype=denoiser.dtype, device=denoiser.device)
        done: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        while len(state):
            if len(state) > max_states:
                raise EnumerationError(f"exact mode reached {len(state)} decoder states, over "
                                       f"max_states={max_states}; use Monte Carlo mode")
            fin = self.finished(state, wmask)
            if fin.any():
                done.append((state.tokens[fin], lq[fin], state.seq[fin]))
                keep = (~fin).nonzero().squeeze(-1)
                state, lq = state.take(keep), lq[keep]
                if not len(state):
                    break
            law = self.law(denoiser, state, wmask)
            row, nxt, lp = law.enumerate()
            if forced is not None:
                agree = ((nxt == mask) | (nxt == forced[state.seq[row]])).all(-1)
                row, nxt, lp = row[agree], nxt[agree], lp[agree]
            state = self._after(state, law, row, nxt, wmask, mask)
            lq = lq[row] + lp.to(lq.dtype)
            state, lq = self._merge(state, lq)
        tokens = torch.cat([d[0] for d in done]) if done else start[:0]
        lqs = torch.cat([d[1] for d in done]) if done else lq[:0]
        if forced is not None:
            seqs = torch.cat([d[2] for d in done]) if done else state.seq[:0]
            return scatter_logsumexp(lqs, seqs, start.shape[0])
        codes = (tokens * V ** torch.arange(n - 1, -1, -1, device=tokens.device)).sum(-1)
        return scatter_logsumexp(lqs, codes, V ** n)

    def _merge(self, state: State, lq: torch.Tensor):
        if len(state) <= 1:
            return state, lq
        cols = torch.cat([state.seq[:, None].double()] + [
            k.reshape(len(state), -1).double() for k in self.key(state)], -1)
        _, inverse = torch.unique(cols, dim=0, return_inverse=True)
        size = int(inverse.max()) + 1
        rep = torch.zeros(size, dtype=torch.long, device=lq.device).scatter_(
            0, inverse, torch.arange(len(state), device=lq.device))
        lq = scatter_logsumexp(lq, inverse, size)
        live = lq > -math.inf
        return state.take(rep[live]), lq[live]


# ======================================================================================= laws
class SelectionLaw:
    """A step that commits a selection of masked positions (a
    :class:`~mdmprob.decoders.step.SelectionStep`) and revokes nothing."""

    def __init__(self, step: SelectionStep, tokens: torch.Tensor, mask: int):
        self.step, self.tokens, self.mask = step, tokens, mask

    def sample(self, generator):
        sel, draws, _, _ = self.step.sample(generator)
        return torch.where(sel, draws, self.tokens)

    def log_prob(self, nxt):
        sel = (self.tokens == self.mask) & (nxt != self.mask)
        kept = ((nxt == self.tokens) | sel).all(-1)
        lp = self.step.log_prob(sel, nxt.clamp(max=self.mask - 1))
        return torch.where(kept, lp, torch.full_like(lp, -math.inf))

    def enumerate(self):
        row, sel, values, lp = self.step.enumerate()
        return row, torch.where(sel, values, self.tokens[row]), lp


class FactorLaw:
    """Positions move independently: ``opts [B, n, V + 1]`` log-probabilities of each next
    token (index V = the mask id)."""

    def __init__(self, opts: torch.Tensor):
        self.opts = opts

    def sample(self, generator):
        return gumbel_argmax(self.opts, generator)

    def log_prob(self, nxt):
        return self.opts.gather(-1, nxt[..., None]).squeeze(-1).sum(-1)

    def enumerate(self):
        return option_product(self.opts)


class DrawDecideLaw:
    """Sample-then-decide: values are drawn at the ``cand`` positions (``values_lp [B, n, V]``,
    independent), and the next tokens are a function ``decide(row, draws)`` of them.
    ``log_prob`` sums over the draws consistent with the next tokens (a position that became
    visible shows its draw; the others are enumerated, at most :data:`DRAW_BUDGET` per row)."""

    def __init__(self, name, values_lp, cand, decide, deterministic: bool):
        self.name, self.values_lp, self.cand = name, values_lp, cand
        self.decide, self.deterministic = decide, deterministic

    def _options(self, forced=None):
        opts = self.values_lp
        if self.deterministic:
            best = opts.argmax(-1, keepdim=True)
            opts = torch.full_like(opts, -math.inf).scatter(-1, best, 0.0)
        if forced is not None:
            shown = self.cand & (forced < opts.shape[-1])
            hot = torch.nn.functional.one_hot(forced.clamp(max=opts.shape[-1] - 1),
                                              opts.shape[-1]).bool()
            opts = torch.where(shown[..., None] & ~hot, torch.full_like(opts, -math.inf), opts)
        return torch.where(self.cand[..., None], opts, first_only(opts))

    def _expand(self, forced=None):
        opts = self._options(forced)
        size = (opts > -math.inf).sum(-1).double().log().sum(-1).exp()
        if float(size.max()) > DRAW_BUDGET:
            raise BudgetError(f"{self.name}: the step's law sums over {float(size.max()):.3g} "
                              f"joint draws of the masked positions, over the budget of "
                              f"{DRAW_BUDGET}; use temperature=0 or smaller windows")
        row, draws, lp = option_product(opts)
        return row, self.decide(row, draws), lp

    def sample(self, generator):
        if self.deterministic:
            draws = self.values_lp.argmax(-1)
        else:
            draws = gumbel_argmax(self.values_lp, generator)
        return self.decide(torch.arange(draws.shape[0], device=draws.device), draws)

    def log_prob(self, nxt):
        row, out, lp = self._expand(nxt)
        hit = (out == nxt[row]).all(-1)
        return scatter_logsumexp(lp[hit], row[hit], nxt.shape[0])

    def enumerate(self):
        row, out, lp = self._expand()
        return row, out, lp


# ======================================================================================= KLASS
class KLASSScore(Score):
    """KLASS key: the largest probability of the clean model distribution, plus 2 at the
    positions that are ready (so a count of #ready keeps exactly them)."""

    name = "klass"

    def __call__(self, step, draws=None):
        return step.logp.amax(-1).exp() + 2.0 * step.ready.to(step.logp.dtype)


class KLASSCommit(CommitRule):
    """KLASS count: every ready position; none ready: the LLaDA even split of the window's
    masks over its steps; the window's last scheduled step commits every mask left."""

    uses_scores = False  # the count reads the readiness, never the drawn values

    def __init__(self, base: EvenSplit):
        self.base, self.name = base, f"klass_count({base.name})"

    def count(self, step, ranked_scores, order):
        ready = (step.ready & step.candidates).sum(-1)
        last = step.step >= self.base.window_steps(step.n_windows) - 1
        fallback = self.base.count(step, ranked_scores, order)
        return torch.where(last, step.n_candidates, torch.where(ready > 0, ready, fallback))


class KLASSView(Step):
    """A :class:`~mdmprob.decoders.primitives.Step` that also carries which candidates are
    ready (confident and KL-stable)."""

    def __init__(self, *args, ready=None):
        super().__init__(*args)
        self.ready = ready


class KLASS(StateDecoder):
    """KLASS, KL-adaptive stability sampling (arXiv 2511.05664, ``stable_confident_decode``).

    In each window (semi-AR block) at step j: q^t = D(x) (the clean model distribution);
    KL_i^t = KL(q_i^t || q_i^{t-1}) against the previous step's distribution (the previous step
    of the whole decode: the history runs across blocks, as in the reference; +inf at the first
    step); a masked position of the window is *ready* when max_v q_i^t(v) > tau_c, j >= H - 1 and
    its last H KL values are all < tau_kl. Every ready position is committed (the reference's
    ``unmask_strategy="all"``); with none ready the top ``count`` by confidence are, count the
    LLaDA even split of the window's masks over its ``steps / windows`` steps. Values are drawn
    from softmax(log q / T) (T = 0: argmax).

    Choices where the reference leaves a detail open: confidence and KL are read from the clean
    q (the reference perturbs with Gumbel noise first at T > 0); the last scheduled step of a
    window commits every mask left (the reference's loop ends there and can leave masks); a
    fallback step commits at least one position (the even split's count is at least 1, where the
    reference's can be 0); ties among equal confidences follow ``ties``.

    State: the tokens, the previous step's state and answer q^{t-1} (kept, not recomputed: one
    model call per step) and the last H KL values; exact mode merges on the tokens, the previous
    state and the KLs.
    """

    def __init__(self, steps: int = 8, conf_threshold: float = 0.9, kl_threshold: float = 0.01,
                 history: int = 2, block_length: int | None = None, temperature: float = 0.0,
                 ties: str = "random", steps_per: str = "total", top_k: int | None = None,
                 top_p: float | None = None):
        check_prob("conf_threshold", conf_threshold)
        check_number("kl_threshold", kl_threshold, 0, low_open=True, finite=False)
        check_int("history", history, 1)
        if ties not in TIES:
            raise unknown_name("ties", str(ties), TIES)
        self.window = "blocks" if block_length is None else block_length
        check_window(self.window)
        self.values = ValueLaw(temperature, top_k, top_p)
        self.score, self.commit = KLASSScore(), KLASSCommit(EvenSplit(steps, per=steps_per))
        self.tau_c, self.tau_kl, self.H = float(conf_threshold), float(kl_threshold), history
        self.ties = ties
        self.name = (f"klass(steps={steps}, conf={conf_threshold:g}, kl={kl_threshold:g}, "
                     f"H={history})")

    @property
    def log_q_is_marginal(self) -> bool:
        return self.ties == "lowest_position"

    def begin_extra(self, denoiser, tokens):
        B, n = tokens.shape
        return {"prev": torch.full((B, n), NO_STATE, dtype=torch.long, device=tokens.device),
                "prev_logp": torch.zeros((B, n, denoiser.vocab), dtype=denoiser.dtype,
                                         device=tokens.device),
                "kl": torch.full((B, self.H, n), math.inf, dtype=denoiser.dtype,
                                 device=tokens.device)}

    def law(self, denoiser, state, wmask):
        mask = denoiser.mask_id
        logp = denoiser(state.tokens)
        has_prev = (state.extra["prev"] != NO_STATE).all(-1)
        p = logp.exp()
        kl = torch.where(p > 0, p * (logp - state.extra["prev_logp"]), torch.zeros_like(p)).sum(-1)
        kl = torch.where(has_prev[:, None], kl, torch.full_like(kl, math.inf))
        kl_hist = torch.cat([state.extra["kl"][:, 1:], kl[:, None]], 1)
        cand = (state.tokens == mask) & wmask[state.w]
        ready = cand & (logp.amax(-1).exp() > self.tau_c) & (state.step >= self.H - 1)[:, None] \
            & (kl_hist < self.tau_kl).all(1)
        view = KLASSView(logp, cand, state.step, state.opened, None, wmask.shape[0] - 1,
                         ready=ready)
        law = SelectionLaw(SelectionStep(self, view), state.tokens, mask)
        law.kl_hist, law.logp = kl_hist, logp
        return law

    def after_extra(self, state, law, row, nxt):
        # what the next steps read: this step's answer (the next KL's reference) and the last H
        # KLs; the token states behind them need not be kept
        return {"prev": state.tokens[row], "prev_logp": law.logp[row], "kl": law.kl_hist[row]}

    def key(self, state):
        return [state.tokens, state.w, state.step, state.opened, state.extra["prev"],
                state.extra["kl"]]


# ======================================================================================= ReMDM conf
class ReMDMConf(StateDecoder):
    """ReMDM ``conf`` schedule (arXiv 2503.00307, Sec. 4; sampler ``remdm-conf``) on the linear
    schedule alpha_j = j / steps of :class:`~mdmprob.decoders.remask.ReMDM`: at step j every
    visible token i is remasked with probability

        sigma_i = sigma_max * softmax_{visible k}(psi_k)_i,   psi_k = -c_k,
        sigma_max = min(1, (1 - alpha_s) / alpha_t),

    c_k the probability its value had under the law it was drawn from when it was committed (less
    confident tokens are remasked first); every masked position is unmasked with the MDLM
    probability (alpha_s - alpha_t) / (1 - alpha_t) = 1 / (steps - j + 1) (its sigma is 0, as in
    the reference's per-position sigma), its value drawn from softmax(log p / T) cut to top-k /
    top-p. The last step commits every mask and remasks nothing. State: the tokens, each visible
    token's c_k and the step.
    """

    prompt = False

    def __init__(self, steps: int = 8, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, nucleus: str = "drop_crossing"):
        self.base = ReMDM(steps, 0.0, "cap", temperature, top_k, top_p, nucleus)
        self.steps, self.values = steps, self.base.values
        self.name = f"remdm_conf(steps={steps})"

    def begin_extra(self, denoiser, tokens):
        return {"conf": torch.zeros(tokens.shape, dtype=denoiser.dtype, device=tokens.device)}

    def finished(self, state, wmask):
        return state.step >= self.steps

    def moves_on(self, state):
        return torch.zeros_like(state.w, dtype=torch.bool)

    def calls(self, state, mask):
        return (state.tokens == mask).any(-1).long()  # a step with no mask reads no model

    def sigma(self, state: State, mask: int) -> torch.Tensor:
        """Per-position remasking probabilities ``[B, n]`` (0 at masked positions)."""
        j = state.step + 1  # 1-based step
        jd = j.to(state.extra["conf"].dtype)
        sigma_max = torch.where(j == 1, torch.ones_like(jd),
                                ((self.steps - jd) / (jd - 1).clamp(min=1)).clamp(max=1.0))
        sigma_max = torch.where(j >= self.steps, torch.zeros_like(jd), sigma_max)
        visible = state.tokens != mask
        psi = torch.where(visible, -state.extra["conf"], torch.full_like(jd[:, None], -math.inf)
                          .expand_as(visible))
        weight = torch.softmax(psi, -1).nan_to_num(0.0)  # no visible token: no remasking
        return sigma_max[:, None] * weight

    def law(self, denoiser, state, wmask):
        mask = denoiser.mask_id
        logp = denoiser(state.tokens)
        values_lp = self.values.log_probs(logp)
        sigma = self.sigma(state, mask)
        u = 1.0 / (self.steps - state.step.to(logp.dtype))  # (alpha_s - alpha_t) / (1 - alpha_t)
        V = logp.shape[-1]
        visible = state.tokens != mask
        hot = torch.nn.functional.one_hot(state.tokens.clamp(max=V - 1), V + 1).bool()
        keep = torch.where(hot, torch.log1p(-sigma)[..., None],
                           torch.full(hot.shape, -math.inf, dtype=logp.dtype,
                                      device=logp.device))
        keep[..., V] = sigma.log()
        unmask = torch.cat([values_lp + u.log()[:, None, None],
                            torch.log1p(-u)[:, None, None].expand(*visible.shape, 1)], -1)
        law = FactorLaw(torch.where(visible[..., None], keep, unmask))
        law.values_lp = values_lp
        return law

    def after_extra(self, state, law, row, nxt):
        V = law.values_lp.shape[-1]
        drawn = law.values_lp[row].gather(-1, nxt.clamp(max=V - 1)[..., None]).squeeze(-1).exp()
        fresh = (state.tokens[row] == V) & (nxt != V)
        conf = torch.where(fresh, drawn, state.extra["conf"][row])
        return {"conf": torch.where(nxt == V, torch.zeros_like(conf), conf)}

    def key(self, state):
        return [state.tokens, state.step, state.extra["conf"]]


# ======================================================================================= WINO
WINO_LAST_ACCEPT = 30  # the reference's previous-accept count when a block opens


class WINO(StateDecoder):
    """WINO, wide-in narrow-out draft and verify (arXiv 2507.18578, ``decoding_wino``).

    Per step in a window (semi-AR block), from one model call on the state and its shadow block:

    * draft (wide in): values x0 drawn at every masked position of the window (T = 0: argmax),
      confidence c_i = q_i(x0_i) under the clean model distribution; commit every c_i > tau_wide,
      at most ``max_accept = min(max(int(0.7 |M|), 5), 20)`` (the most confident), at least the
      most confident one;
    * verify (narrow out): when more than one token was drafted at this step, every token this
      decoder wrote earlier in the window whose leave-one-out probability
      p(x_i | x_{visible minus i}) (the shadow block: position i masked, the rest visible) is
      < tau_narrow is remasked; when that is at least the previous step's accept count L, only
      the L - 1 least confident are (L = 30 when a block opens, as the reference).

    Ties (equal confidences) go to the lower position, as ``torch.topk``/``argmax`` on the
    reference's small blocks. Prompt tokens are never verified. NFE: one call per step (the
    reference's doubled sequence). State: tokens, window counters and L.
    """

    def __init__(self, tau_wide: float = 0.6, tau_narrow: float = 0.9,
                 block_length: int | None = None, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None):
        check_prob("tau_wide", tau_wide)
        check_prob("tau_narrow", tau_narrow)
        self.window = "blocks" if block_length is None else block_length
        check_window(self.window)
        self.values = ValueLaw(temperature, top_k, top_p)
        self.tau_wide, self.tau_narrow = float(tau_wide), float(tau_narrow)
        self.name = f"wino(wide={tau_wide:g}, narrow={tau_narrow:g})"

    def begin_extra(self, denoiser, tokens):
        B = tokens.shape[0]
        return {"last": torch.full((B,), WINO_LAST_ACCEPT, dtype=torch.long,
                                   device=tokens.device),
                "fixed": tokens != denoiser.mask_id}

    def on_window(self, state, moved):
        state.extra["last"] = torch.where(moved, WINO_LAST_ACCEPT, state.extra["last"])

    def law(self, denoiser, state, wmask):
        mask, tokens, logp, loo = _answers(denoiser, state)
        V = logp.shape[-1]
        cand = (tokens == mask) & wmask[state.w]
        drafted = (tokens != mask) & wmask[state.w] & ~state.extra["fixed"]
        back = round_keys(loo.gather(-1, tokens.clamp(max=V - 1)[..., None]).squeeze(-1).exp())
        last = state.extra["last"]
        pos = torch.arange(tokens.shape[1], device=tokens.device)

        def decide(row, draws):
            c = cand[row]
            conf = round_keys(logp[row].gather(-1, draws[..., None]).squeeze(-1).exp())
            conf = torch.where(c, conf, torch.full_like(conf, -math.inf))
            m = c.sum(-1)
            cap = (m * 7 // 10).clamp(min=5, max=20)
            rank = _rank(conf, pos, descending=True)
            over = conf > self.tau_wide
            take = torch.where((over.sum(-1) > cap)[:, None], rank < cap[:, None], over)
            take = torch.where(take.any(-1)[:, None], take, (rank == 0) & c) & c
            accept = take.sum(-1)
            d = drafted[row]
            b = torch.where(d, back[row], torch.full_like(conf, math.inf))
            low = d & (b < self.tau_narrow)
            limit = last[row] - 1
            low = torch.where((low.sum(-1) >= last[row])[:, None],
                              d & (_rank(b, pos, descending=False) < limit[:, None]), low)
            low = low & (accept > 1)[:, None]
            nxt = torch.where(take, draws, tokens[row])
            return torch.where(low, torch.full_like(nxt, mask), nxt)

        law = DrawDecideLaw(self.name, self.values.log_probs(logp), cand, decide,
                            self.values.deterministic)
        law.cand = cand
        return law

    def after_extra(self, state, law, row, nxt):
        accept = (law.cand[row] & (nxt != state.tokens[row])).sum(-1)
        return {"last": accept, "fixed": state.extra["fixed"][row]}

    def key(self, state):
        return [state.tokens, state.w, state.extra["last"]]


# ======================================================================================= P2
class P2(StateDecoder):
    """P2 path planning with the model as its own planner (arXiv 2502.03540, self-planning).

    Step i = 1..steps (kappa(t) = t, the fraction unmasked after the step): values x0 drawn at
    every masked position (T = 0: argmax); every non-prompt position gets a score,

        masked j:     s_j = alpha log q_j(x0_j) + (1 - alpha) negent(q_j)
        generated j:  s_j = eta (alpha log r_j(x_j) + (1 - alpha) negent(r_j)),

    q the clean model distribution, r_j = p(x_j | x_{visible minus j}) the leave-one-out
    conditional of the generated token; the floor((1 - i/steps) N) lowest-scoring positions
    (N non-prompt positions) are masked, masked or generated, and the rest keep (generated) or
    take x0 (masked). eta > 1 makes generated tokens likelier to be remasked.

    Choices: scores read the clean q (the draw is tempered); a generated token is scored by its
    leave-one-out conditional (a copy-over denoiser returns a point mass at visible positions);
    among equal scores the later position is masked first; NFE one call per step (a model with
    real distributions at visible positions returns both in one call).
    """

    window = "all"

    def __init__(self, steps: int = 8, eta: float = 1.0, alpha: float = 1.0,
                 temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None):
        self.steps = check_int("steps", steps, 1)
        self.eta = check_number("eta", eta, 0, low_open=True)
        self.alpha = check_prob("alpha", alpha)
        self.values = ValueLaw(temperature, top_k, top_p)
        self.name = f"p2(steps={steps}, eta={eta:g}, alpha={alpha:g})"

    def begin_extra(self, denoiser, tokens):
        return {"fixed": tokens != denoiser.mask_id}

    def finished(self, state, wmask):
        return state.step >= self.steps

    def moves_on(self, state):
        return torch.zeros_like(state.w, dtype=torch.bool)

    def _score(self, logp, value):
        logq = logp.gather(-1, value[..., None]).squeeze(-1)
        p = logp.exp()
        negent = torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
        score = (1 - self.alpha) * negent
        return score + self.alpha * logq if self.alpha > 0 else score

    def law(self, denoiser, state, wmask):
        mask, tokens, logp, loo = _answers(denoiser, state)
        V = logp.shape[-1]
        fixed = state.extra["fixed"]
        cand = tokens == mask
        gen_score = self.eta * self._score(loo, tokens.clamp(max=V - 1))
        N = (~fixed).sum(-1)
        i = state.step + 1
        n_mask = (self.steps - i) * N // self.steps  # floor((1 - i/steps) N), exactly
        pos = torch.arange(tokens.shape[1], device=tokens.device)

        def decide(row, draws):
            score = torch.where(cand[row], self._score(logp[row], draws), gen_score[row])
            score = torch.where(fixed[row], torch.full_like(score, math.inf), round_keys(score))
            # ascending, later positions first among equals
            masked = _rank(score, -pos, descending=False) < n_mask[row][:, None]
            masked = masked & ~fixed[row]
            nxt = torch.where(cand[row], draws, tokens[row])
            return torch.where(masked, torch.full_like(nxt, mask), nxt)

        return DrawDecideLaw(self.name, self.values.log_probs(logp), cand, decide,
                             self.values.deterministic)

    def key(self, state):
        return [state.tokens, state.step]


# ======================================================================================= helpers
def _answers(denoiser, state):
    """``(mask_id, tokens [B, n], logp [B, n, V], leave-one-out logp [B, n, V])`` at ``state``:
    what the revoking laws read."""
    tokens = state.tokens
    loo = denoiser.leave_one_out(tokens)  # its masked rows are the denoiser's answer there
    visible = tokens != denoiser.mask_id
    point = point_mass(tokens.clamp(max=denoiser.vocab - 1), denoiser.vocab, loo.dtype)
    return denoiser.mask_id, tokens, torch.where(visible[..., None], point, loo), loo


def _rank(keys: torch.Tensor, tiebreak: torch.Tensor, descending: bool) -> torch.Tensor:
    """The rank ``[B, n]`` of each key (0 = first), equal keys ordered by ``tiebreak``
    ascending."""
    first = torch.sort(tiebreak.expand_as(keys), dim=-1, stable=True).indices
    ordered = keys.gather(-1, first)
    order = first.gather(-1, torch.sort(ordered, dim=-1, descending=descending,
                                        stable=True).indices)
    return torch.empty_like(order).scatter_(-1, order, torch.arange(
        keys.shape[-1], device=keys.device).expand_as(order).contiguous())


__all__ = ["DRAW_BUDGET", "KLASS", "P2", "WINO", "DrawDecideLaw", "FactorLaw", "KLASSCommit",
           "KLASSScore", "ReMDMConf", "SelectionLaw", "State", "StateDecoder"]
