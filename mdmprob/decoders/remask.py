"""Remasking decoders: a window-level remasking corrector (R_k) and ReMDM.

:class:`Remask` (paper-spec §4-E) decodes a window W in two phases:

1. *proposal*: every position of W drawn independently from the denoiser's marginals given the
   prefix, q^(0)(y) = prod_{i in W} p_theta(y_i | x_P) (the mean-field block decoder);
2. ``sweeps`` applications of the remasking kernel R_k: choose a subset S of k positions of W
   (``"random"``: uniform over the C(|W|, k) subsets; ``"lowest_confidence"``: the k positions whose
   current value has the lowest leave-one-out probability p_theta(y_i | y_{W \\ i}, x_P), ties to the
   lower position), mask them and redraw each i in S *independently* from p_theta(. | y_{W \\ S}, x_P):

       K(y' | y) = sum_S Pr(S | y) prod_{i in S} p_theta(y'_i | y_{W \\ S}, x_P) [y'_{W \\ S} = y_{W \\ S}].

With exact conditionals and k = 1 this is random-scan Gibbs (support-contained: Assumption C.4
fails); with k >= 2 the parallel redraw can leave the support, so at hard zeros
KL(q^(n) || p) = +inf for every finite n (Prop. C.5). ``window_distribution`` iterates the exact
chain q^(n) = q^(0) K^n over the V^|W| window states.

:class:`ReMDM` is the ReMDM sampler (decoders.md b.11) on a linear schedule alpha_j = j / steps:
at step j (alpha_t = (j-1)/steps -> alpha_s = j/steps) every visible token is remasked with
probability sigma_j and every masked one is unmasked with probability
(alpha_s - (1 - sigma_j) alpha_t) / (1 - alpha_t), its value drawn from the denoiser.

Prompts (``initial=``): the positions visible in the prompt are never masked, remasked or
rewritten. :class:`Remask` runs on the window's positions masked in the prompt (the *free*
positions, per row) and remasks min(k, #free) of them per step; ReMDM's coins touch only the
positions masked in the prompt.

Both are trajectory decoders (``log_q_is_marginal = False``): ``run`` returns the exact
log-probability of the whole trajectory, and ``run.committed`` is a :class:`Trajectory` — the
per-step committed positions *and* the state after every step — so that
``decoder.log_prob(denoiser, run.tokens, committed=run.committed)`` replays it exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import torch

from mdmprob.checks import check_int, check_prob
from mdmprob.decoders import drivers
from mdmprob.decoders.correctors import free_positions
from mdmprob.decoders.primitives import ValueLaw
from mdmprob.decoders.protocol import (
    DecoderBase,
    DecodeResult,
    all_values,
    check_complete,
    check_num,
    check_table_size,
    check_window,
    initial_tokens,
    make_generator,
    windows_of,
)
from mdmprob.decoders.step import log_comb
from mdmprob.denoisers.base import Denoiser
from mdmprob.deprecation import renamed_arguments
from mdmprob.errors import EnumerationError, MdmprobError, unknown_name
from mdmprob.sampling import gumbel_argmax

KERNELS = {
    "random": "a uniformly random k-subset of the window",
    "lowest_confidence": "the k positions with the lowest leave-one-out probability "
                         "p_theta(x_i | rest) of their current value (ties to the lower position)",
}
SCHEDULES = {
    "cap": "sigma = min(eta, (1 - alpha_s) / alpha_t)",
    "rescale": "sigma = eta * min(1, (1 - alpha_s) / alpha_t)",
}
_KEY_RESOLUTION = 2.0 ** 24  # confidences are compared on log p rounded to 2^-24 nats


class Trajectory(list):
    """A run's ``committed`` list (per step: bool ``[B, n]``, the positions written at that step)
    that also carries ``states``: per step, the tokens ``[B, n]`` after that step (mask id where
    masked). Remasking overwrites values, so the final tokens alone cannot replay a run."""

    def __init__(self, committed=(), states=()):
        super().__init__(committed)
        self.states: list[torch.Tensor] = list(states)

    def append_step(self, committed: torch.Tensor, state: torch.Tensor) -> None:
        self.append(committed)
        self.states.append(state)


def _need_trajectory(name: str, committed) -> Trajectory:
    if committed is None:
        raise MdmprobError(
            f"{name}: log q(x) sums over remasking trajectories; pass committed=run.committed "
            "(the run's Trajectory) or use exact mode (decoder.distribution) on small spaces")
    if not isinstance(committed, Trajectory) or len(committed.states) != len(committed):
        raise MdmprobError(
            f"{name}: committed must be the Trajectory of one of this decoder's runs (it carries "
            "the intermediate states that remasking overwrites); a plain list cannot be replayed")
    return committed


# ======================================================================================= R_k
class Remask:
    """Window-level remasking corrector: mean-field proposal, then ``sweeps`` steps of R_k.

    Args:
        kernel: ``"random"`` or ``"lowest_confidence"`` (see :data:`KERNELS`).
        k: positions remasked per step, ``1 <= k <= |window|`` (checked per window).
        sweeps: kernel steps after the proposal (``0``: the mean-field proposal alone).

    NFE per window: 1 (proposal) + 1 per step, plus |W| per step for ``lowest_confidence`` (one
    leave-one-out call per window position).
    """

    log_q_is_marginal = False

    def __init__(self, kernel: str = "random", k: int = 2, sweeps: int = 1):
        if kernel not in KERNELS:
            raise unknown_name("remasking kernel", str(kernel), KERNELS)
        check_int("remask k", k, 1)
        check_int("remask sweeps", sweeps, 0)
        self.kernel, self.k, self.sweeps = kernel, k, sweeps
        self.name = f"remask({kernel}, k={k}, sweeps={sweeps})"

    def __repr__(self) -> str:
        return self.name

    def check_window(self, window: list[int]) -> None:
        if self.k > len(window):
            raise MdmprobError(f"remask k={self.k} exceeds the window of {len(window)} positions "
                               f"{list(window)}; use 1 <= k <= {len(window)}")

    # ------------------------------------------------------------------ the kernel, batched
    def propose(self, denoiser: Denoiser, tokens: torch.Tensor, window: list[int],
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean-field proposal of the masked positions of ``window`` given ``tokens [B, n]``
        (positions of the window visible in ``tokens`` are prompt tokens, kept): returns
        (tokens, log q^(0) [B], nfe [B])."""
        self.check_window(window)
        free = free_positions(tokens, window, denoiser.mask_id)
        logp = denoiser(tokens)
        draws = gumbel_argmax(logp, generator)
        picked = logp.gather(-1, draws[..., None]).squeeze(-1)
        lq = torch.where(free, picked, torch.zeros_like(picked)).sum(-1)
        return torch.where(free, draws, tokens), lq, free.any(-1).long()

    def choose(self, denoiser: Denoiser, tokens: torch.Tensor, window: list[int],
               generator: torch.Generator, free: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The subset S of one kernel step for complete windows: (S bool [B, n], log Pr(S | y)
        [B], nfe [B]). S holds min(k, c) of the c ``free`` positions (bool ``[B, n]``, default
        the whole window; the others are prompt tokens)."""
        B, W = tokens.shape[0], len(window)
        device = tokens.device
        pos = torch.tensor(window, dtype=torch.long, device=device)
        free_w = torch.ones(B, W, dtype=torch.bool, device=device) if free is None else \
            free[:, pos]
        c = free_w.sum(-1)
        take = c.clamp(max=self.k)
        if self.kernel == "random":
            keys = torch.rand(B, W, generator=generator, device=device, dtype=torch.float64)
            keys = torch.where(free_w, keys, torch.full_like(keys, -1.0))
            order = keys.argsort(dim=-1, descending=True, stable=True)
            lp = -log_comb(c, take).to(denoiser.dtype)
            nfe = torch.zeros(B, dtype=torch.long, device=device)
        else:
            order = self._lowest(denoiser, tokens, window, free_w)
            lp = torch.zeros(B, dtype=denoiser.dtype, device=device)
            nfe = c
        ranked = torch.arange(W, device=device)[None] < take[:, None]  # [B, W] in rank order
        subset = torch.zeros_like(tokens, dtype=torch.bool)
        subset.scatter_(1, pos[order], ranked)
        return subset, lp, nfe

    def _lowest(self, denoiser, tokens, window, free_w=None) -> torch.Tensor:
        """Window indices ``[B, W]`` ranked by leave-one-out confidence, lowest first (prompt
        positions, ``~free_w``, last)."""
        B, W = tokens.shape[0], len(window)
        pos = torch.tensor(window, dtype=torch.long, device=tokens.device)
        hidden = tokens[:, None, :].repeat(1, W, 1)  # [B, W, n]: copy j hides window[j]
        hidden[:, torch.arange(W, device=tokens.device), pos] = denoiser.mask_id
        out = denoiser(hidden.reshape(B * W, -1)).reshape(B, W, -1, denoiser.vocab)
        diag = out[:, torch.arange(W, device=tokens.device), pos]  # [B, W, V]
        conf = diag.gather(-1, tokens[:, window][..., None]).squeeze(-1)
        if free_w is not None:
            conf = torch.where(free_w, conf, torch.full_like(conf, math.inf))
        return _lowest_k(conf, W)

    def resample(self, denoiser: Denoiser, tokens: torch.Tensor, subset: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask ``subset`` and redraw each masked position independently from the denoiser:
        (tokens, sum_{i in S} log p_theta(y'_i | y_{-S}) [B], nfe [B])."""
        masked = torch.where(subset, torch.full_like(tokens, denoiser.mask_id), tokens)
        logp = denoiser(masked)
        draws = gumbel_argmax(logp, generator)
        new = torch.where(subset, draws, tokens)
        picked = logp.gather(-1, new.clamp(max=denoiser.vocab - 1)[..., None]).squeeze(-1)
        lq = torch.where(subset, picked, torch.zeros_like(picked)).sum(-1)
        nfe = subset.any(-1).long()
        return new, lq, nfe

    def step(self, denoiser: Denoiser, tokens: torch.Tensor, window: list[int],
             generator: torch.Generator, free: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, ...]:
        """One application of R_k on the ``free`` positions of the window (default: all of it):
        (tokens, subset, log-prob of the step [B], nfe [B])."""
        subset, lp_s, nfe_s = self.choose(denoiser, tokens, window, generator, free)
        tokens, lp_v, nfe_v = self.resample(denoiser, tokens, subset, generator)
        return tokens, subset, lp_s + lp_v, nfe_s + nfe_v

    # ------------------------------------------------------------------ corrector interface
    @renamed_arguments(info="diagnostics")
    def decode_window(self, decoder: DecoderBase, denoiser: Denoiser, tokens: torch.Tensor,
                      window: list[int], generator: torch.Generator, target=None,
                      diagnostics: dict[str, Any] | None = None, trace: Trajectory | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Proposal + ``sweeps`` kernel steps on ``window``: (tokens, committed [B, n],
        trajectory log q [B], nfe [B]). With ``trace`` every step's (positions, state) is
        appended to it."""
        sel = free_positions(tokens, window, denoiser.mask_id)
        tokens, lq, nfe = self.propose(denoiser, tokens, window, generator)
        if trace is not None:
            trace.append_step(sel, tokens)
        proposal = tokens[:, window]
        for _ in range(self.sweeps):
            tokens, subset, lp, calls = self.step(denoiser, tokens, window, generator, sel)
            lq, nfe = lq + lp, nfe + calls
            if trace is not None:
                trace.append_step(subset, tokens)
        if diagnostics is not None:
            diagnostics.setdefault("remask_changed", []).append(
                (tokens[:, window] != proposal).sum(-1))
        return tokens, sel, lq, nfe

    def replay_window(self, denoiser: Denoiser, state: torch.Tensor, window: list[int],
                      committed: list[torch.Tensor], states: list[torch.Tensor]) -> torch.Tensor:
        """log-probability ``[B]`` of a recorded window trajectory (1 + sweeps steps) from
        ``state`` (window masked); -inf where the record is not a trajectory of this kernel."""
        if len(committed) != 1 + self.sweeps:
            raise MdmprobError(f"{self.name}: a window trajectory has {1 + self.sweeps} steps, "
                               f"got {len(committed)}")
        B, V = state.shape[0], denoiser.vocab
        win = free_positions(state, window, denoiser.mask_id)  # the prompt's tokens are kept
        c = win.sum(-1)
        take = c.clamp(max=self.k)
        logp = denoiser(state)
        cur = states[0].to(state.device)
        lq = torch.where(win, logp.gather(-1, cur.clamp(max=V - 1)[..., None]).squeeze(-1),
                         torch.zeros_like(logp[..., 0])).sum(-1)
        ok = (committed[0].to(state.device) == win).all(-1) & (cur[:, window] < V).all(-1) & \
            ((cur == state) | win).all(-1)
        for sel, nxt in zip(committed[1:], states[1:], strict=True):
            prev, cur = cur, nxt.to(state.device)
            subset = sel.to(state.device)
            ok &= (subset <= win).all(-1)
            if self.kernel == "random":
                ok &= subset.sum(-1) == take
                lq = lq - log_comb(c, take).to(lq.dtype)
            else:
                expect, _, _ = self.choose(denoiser, prev, window, None, win)
                ok &= (expect == subset).all(-1)
            masked = torch.where(subset, torch.full_like(prev, denoiser.mask_id), prev)
            logp = denoiser(masked)
            lq = lq + torch.where(subset, logp.gather(-1, cur.clamp(max=V - 1)[..., None])
                                  .squeeze(-1), torch.zeros_like(logp[..., 0])).sum(-1)
            ok &= ((cur == prev) | subset).all(-1) & (cur[:, window] < V).all(-1)
        return torch.where(ok, lq, torch.full((B,), -math.inf, dtype=lq.dtype,
                                              device=lq.device))

    # ------------------------------------------------------------------ exact chain
    def window_chain(self, denoiser: Denoiser, tokens: torch.Tensor, window: list[int],
                     sweeps: list[int] | None = None) -> dict[int, torch.Tensor]:
        """Exact log q^(n) of the window, ``{n: [V] * |W|}`` for every n in ``sweeps`` (default
        ``[self.sweeps]``), given ``tokens [1, n]`` (the prefix visible). Positions of the window
        visible in ``tokens`` are prompt tokens: the chain runs on the masked ones (W below),
        min(k, |W|) at a time, and the tables are over those, ``[V] * |W|``.

        q^(0)(y) = prod_i p_theta(y_i | x_P);  q^(n+1)(y') = sum_S sum_{y_S}
        q^(n)(y) Pr(S | y) prod_{i in S} p_theta(y'_i | y'_{W \\ S}, x_P),  y_{W \\ S} = y'_{W \\ S}.
        The kernel is applied per subset (no V^|W| x V^|W| matrix): one denoiser call per distinct
        y_{W \\ S}, i.e. C(|W|, k) V^(|W|-k) rows.
        """
        self.check_window(window)
        sweeps = [self.sweeps] if sweeps is None else sorted(set(sweeps))
        if any(s < 0 for s in sweeps):
            raise MdmprobError(f"sweeps {sweeps} must be >= 0")
        window = [p for p in window if int(tokens[0, p]) == denoiser.mask_id]
        W, V, k = len(window), denoiser.vocab, min(self.k, len(window))
        if W == 0:  # the prompt fills the window: nothing to decode
            return {n: torch.zeros((), dtype=denoiser.dtype, device=tokens.device)
                    for n in sweeps}
        if V ** W > 2**16 or math.comb(W, k) * V ** W > 2**24:
            raise EnumerationError(
                f"the exact remasking chain enumerates V^|W| = {V}^{W} window states x "
                f"C({W}, {k}) subsets, over the budget (2^16 states, 2^24 entries); use "
                "smaller windows, a smaller k, or Monte Carlo")
        base = tokens[:1].clone()
        configs = all_values(W, V, tokens.device)  # [N, W], row-major codes
        logp0 = denoiser(base)[0, window]  # [W, V]
        log_q = logp0.gather(-1, configs.T).sum(0).reshape([V] * W)
        subsets = list(itertools.combinations(range(W), k))
        cond = {s: self._conditional_table(denoiser, base, window, configs, s) for s in subsets}
        if self.kernel == "random":
            log_sel = {s: torch.full_like(log_q, -_log_comb(W, k)) for s in subsets}
        else:
            singles = {(j,): cond[(j,)] if (j,) in cond else
                       self._conditional_table(denoiser, base, window, configs, (j,))
                       for j in range(W)}
            conf = torch.stack([singles[(j,)].reshape(-1) for j in range(W)], -1)  # [N, W]
            picked = _lowest_k(conf, k).sort(-1).values  # [N, k]
            log_sel = {}
            for s in subsets:
                hit = (picked == torch.tensor(s, device=picked.device)).all(-1)
                log_sel[s] = torch.where(hit, 0.0, -math.inf).to(log_q.dtype).reshape(log_q.shape)
        out = {}
        for n in range(max(sweeps) + 1):
            if n in sweeps:
                out[n] = log_q
            if n == max(sweeps):
                break
            parts = []
            for s in subsets:
                kept = torch.logsumexp(log_q + log_sel[s], dim=list(s), keepdim=True)
                parts.append(kept + cond[s])
            log_q = torch.logsumexp(torch.stack(parts), 0)
        return out

    @staticmethod
    def _conditional_table(denoiser, base, window, configs, subset) -> torch.Tensor:
        """sum_{i in S} log p_theta(y_i | y_{W \\ S}, x_P) for every window state y, ``[V] * W``."""
        V, W = denoiser.vocab, len(window)
        cols = torch.tensor(subset, dtype=torch.long, device=configs.device)
        rows = configs.clone()
        rows[:, cols] = V
        unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
        states = base.repeat(unique.shape[0], 1)
        states[:, window] = unique
        out = denoiser(states)[:, window][:, cols]  # [U, k, V]
        vals = out[inverse].gather(-1, configs[:, cols][..., None]).squeeze(-1).sum(-1)
        return vals.reshape([V] * W)

    def window_distribution(self, decoder: DecoderBase, denoiser: Denoiser, tokens: torch.Tensor,
                            window: list[int], target=None
                            ) -> Iterator[tuple[tuple[int, ...], float]]:
        """(values, log q) of every window configuration with q > 0 after ``sweeps`` exact kernel
        steps, given ``tokens [1, n]`` (the window's visible positions keep their tokens)."""
        log_q = self.window_chain(denoiser, tokens, window)[self.sweeps].reshape(-1)
        free = [i for i, p in enumerate(window) if int(tokens[0, p]) == denoiser.mask_id]
        configs = tokens[0, window].repeat(log_q.shape[0], 1)
        configs[:, free] = all_values(len(free), denoiser.vocab, tokens.device)
        for values, lp in zip(configs.tolist(), log_q.tolist(), strict=True):
            if lp > -math.inf:
                yield tuple(values), lp

    # Decoder.log_prob's corrector branch replays exact-block correctors; say what to do instead.
    def target_engine(self, denoiser, target):
        raise MdmprobError(f"{self.name} is a trajectory corrector: build the decoder with "
                           "gibbs_remask() (a RemaskDecoder) to replay runs with log_prob")


class RemaskDecoder(DecoderBase):
    """Mean-field windows corrected by a :class:`Remask` kernel, with a trajectory-recording
    ``run`` (committed: per window the proposal step, then one step per kernel application with
    the remasked positions) and an exact ``log_prob`` replay."""

    def __init__(self, name: str, corrector: Remask, window: str | int = "blocks"):
        if not isinstance(corrector, Remask):
            raise MdmprobError(f"{name}: a RemaskDecoder needs a Remask corrector, got "
                               f"{corrector!r}")
        check_window(window)
        self.name, self.corrector, self.window = name, corrector, window

    @property
    def log_q_is_marginal(self) -> bool:
        return False

    def windows(self, denoiser: Denoiser, blocks=None) -> list[list[int]]:
        return windows_of(self.window, denoiser, blocks)

    def run(self, denoiser: Denoiser, num: int = 1, *, seed: int | None = 0,
            generator: torch.Generator | None = None, initial=None, blocks=None,
            oracle: Denoiser | None = None, target=None) -> DecodeResult:
        """Decode ``num`` sequences (see the decoder protocol; ``seed=None``: fresh randomness);
        ``committed`` is a :class:`Trajectory`."""
        check_num(num, denoiser)
        generator = make_generator(denoiser, seed, generator)
        device, n = denoiser.device, denoiser.n_tokens
        tokens = initial_tokens(denoiser, initial, num)
        log_q = torch.zeros(num, dtype=denoiser.dtype, device=device)
        log_q_tokens = torch.zeros(num, n, dtype=denoiser.dtype, device=device)
        nfe = torch.zeros(num, dtype=torch.long, device=device)
        trace = Trajectory()
        diagnostics: dict[str, Any] = {}
        for window in self.windows(denoiser, blocks):
            tokens, _, lq, calls = self.corrector.decode_window(
                self, denoiser, tokens, window, generator, target=target,
                diagnostics=diagnostics, trace=trace)
            log_q, nfe = log_q + lq, nfe + calls
            log_q_tokens[:, window[0]] += lq
        return DecodeResult(tokens, log_q, nfe, trace, False, diagnostics, log_q_tokens)

    def distribution(self, denoiser: Denoiser, *, initial=None, blocks=None,
                     oracle: Denoiser | None = None, target=None,
                     max_states: int | None = None) -> torch.Tensor:
        """The exact law of the output, ``[V] * n``: each window's exact chain q^(sweeps) given
        every prefix (the windows are decoded in order); from the prompt ``initial`` if given
        (q then lives on its completions)."""
        n, V = denoiser.n_tokens, denoiser.vocab
        check_table_size(denoiser)
        start = initial_tokens(denoiser, initial, 1)
        return drivers.enumerate_states(self, denoiser, start, self.windows(denoiser, blocks),
                                        target=target, max_states=max_states).reshape([V] * n)

    def log_prob(self, denoiser: Denoiser, tokens: torch.Tensor, *, committed=None,
                 initial=None, blocks=None, oracle: Denoiser | None = None,
                 target=None) -> torch.Tensor:
        """The trajectory log-probability ``[B]`` of a run, replayed from ``committed`` (the run's
        :class:`Trajectory`); ``-inf`` where ``tokens`` is not that trajectory's output. Pass
        the run's ``initial`` (prompt) too."""
        record = _need_trajectory(self.name, committed)
        tokens = check_complete(denoiser, tokens, initial)
        windows = self.windows(denoiser, blocks)
        per = 1 + self.corrector.sweeps
        if len(record) != per * len(windows):
            raise MdmprobError(f"{self.name}: the trajectory has {len(record)} steps, expected "
                               f"{per} per window x {len(windows)} windows")
        state = initial_tokens(denoiser, initial, tokens.shape[0])
        log_q = torch.zeros(tokens.shape[0], dtype=denoiser.dtype, device=tokens.device)
        for w, window in enumerate(windows):
            steps = slice(w * per, (w + 1) * per)
            log_q = log_q + self.corrector.replay_window(
                denoiser, state, window, record[steps], record.states[steps])
            final = record.states[(w + 1) * per - 1].to(tokens.device)[:, window]
            log_q = torch.where((final == tokens[:, window]).all(-1), log_q,
                                torch.full_like(log_q, -math.inf))
            state[:, window] = tokens[:, window]
        return log_q


# ======================================================================================= ReMDM
class ReMDM(DecoderBase):
    """ReMDM (MDLM with a remasking backward kernel) on the linear schedule alpha_j = j / steps.

    Step j = 1..steps goes from alpha_t = (j-1)/steps to alpha_s = j/steps, with

        sigma_max = min(1, (1 - alpha_s) / alpha_t) = min(1, (steps - j) / (j - 1))
        sigma_j   = min(eta, sigma_max) ("cap")  or  eta * sigma_max ("rescale")
        visible i: remasked with probability sigma_j (else kept),
        masked i:  unmasked with probability u_j = (alpha_s - (1 - sigma_j) alpha_t) / (1 - alpha_t)
                   = (1 + sigma_j (j - 1)) / (steps - j + 1), value ~ softmax(log p_theta / T),

    all positions independently given the state. The last step has sigma = 0 and u = 1 (everything
    left is committed); eta = 0 is the MDLM sampler ``mdlm(steps)``. The denoiser is called once
    per step in which the row has a masked position.
    """

    def __init__(self, steps: int = 4, eta: float = 0.1, schedule: str = "cap",
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 nucleus: str = "standard"):
        check_int("steps", steps, 1)
        check_prob("eta", eta)
        if schedule not in SCHEDULES:
            raise unknown_name("ReMDM schedule", str(schedule), SCHEDULES)
        self.values = ValueLaw(temperature, top_k, top_p, nucleus)
        self.name = f"remdm(steps={steps}, eta={eta:g}, schedule={schedule})"
        self.steps, self.eta, self.schedule = steps, float(eta), schedule
        self.temperature = self.values.temperature

    @property
    def log_q_is_marginal(self) -> bool:
        return False

    def rates(self, j: int) -> tuple[float, float]:
        """(sigma_j, u_j) of step ``j`` in 1..steps (see the class docstring)."""
        if j == self.steps:
            return 0.0, 1.0
        sigma_max = 1.0 if j == 1 else min(1.0, (self.steps - j) / (j - 1))
        sigma = min(self.eta, sigma_max) if self.schedule == "cap" else self.eta * sigma_max
        return sigma, (1.0 + sigma * (j - 1)) / (self.steps - j + 1)

    def _step_log_probs(self, tempered: torch.Tensor, tokens: torch.Tensor, j: int, mask: int,
                        prompt: torch.Tensor):
        """Per-position outcome log-probabilities ``[B, n, V + 1]`` (last = mask) of step j,
        from the value law's ``tempered [B, n, V]`` at ``tokens``; ``prompt`` (bool, broadcast
        to ``[B, n]``) marks prompt tokens, kept with certainty."""
        sigma, u = self.rates(j)
        V = tempered.shape[-1]
        dtype, device = tempered.dtype, tempered.device
        visible = tokens != mask
        log_sigma = torch.tensor(sigma, dtype=dtype, device=device).log()
        log_keep = torch.tensor(-sigma, dtype=dtype, device=device).log1p()
        log_u = torch.tensor(u, dtype=dtype, device=device).log()
        log_stay = torch.tensor(-u, dtype=dtype, device=device).log1p()
        keep = _onehot(tokens.clamp(max=V - 1), V, dtype) + log_keep
        vis = torch.cat([keep, log_sigma.expand(*tokens.shape, 1)], -1)
        unmask = torch.cat([tempered + log_u, log_stay.expand(*tokens.shape, 1)], -1)
        out = torch.where(visible[..., None], vis, unmask)
        kept = torch.cat([_onehot(tokens.clamp(max=V - 1), V, dtype),
                          torch.full((*tokens.shape, 1), -math.inf, dtype=dtype, device=device)],
                         -1)
        return torch.where(prompt[..., None], kept, out)

    def run(self, denoiser: Denoiser, num: int = 1, *, seed: int | None = 0,
            generator: torch.Generator | None = None, initial=None, blocks=None,
            oracle: Denoiser | None = None, target=None) -> DecodeResult:
        """Decode ``num`` sequences in one batch (``seed`` as the decoder protocol: default 0,
        ``None`` fresh randomness); ``committed`` is a :class:`Trajectory` (per step the newly
        unmasked positions and the state after the step)."""
        check_num(num, denoiser)
        device, mask = denoiser.device, denoiser.mask_id
        generator = make_generator(denoiser, seed, generator)
        n = denoiser.n_tokens
        tokens = initial_tokens(denoiser, initial, num)
        prompt = tokens != mask
        log_q_tokens = torch.zeros(num, n, dtype=denoiser.dtype, device=device)
        nfe = torch.zeros(num, dtype=torch.long, device=device)
        trace = Trajectory()
        remasked: list[torch.Tensor] = []
        for j in range(1, self.steps + 1):
            masked = tokens == mask
            logp = denoiser(tokens)
            nfe += masked.any(-1).long()
            sigma, u = self.rates(j)
            dtype = logp.dtype
            tempered = self.values.log_probs(logp)
            values = gumbel_argmax(tempered, generator) if self.temperature > 0 else \
                tempered.argmax(-1)
            coin = torch.rand(num, n, generator=generator, device=device, dtype=torch.float64)
            remask = ~masked & ~prompt & (coin < sigma)
            unmask = masked & (coin < u)
            new = torch.where(remask, torch.full_like(tokens, mask),
                              torch.where(unmask, values, tokens))
            outcome = self._step_log_probs(tempered, tokens, j, mask, prompt).to(dtype)
            log_q_tokens = log_q_tokens + outcome.gather(-1, new[..., None]).squeeze(-1)
            remasked.append(remask.sum(-1))
            trace.append_step(unmask, new)
            tokens = new
        diagnostics = {"remasked": remasked}
        return DecodeResult(tokens, log_q_tokens.sum(-1), nfe, trace, False, diagnostics, log_q_tokens)

    def log_prob(self, denoiser: Denoiser, tokens: torch.Tensor, *, committed=None,
                 initial=None, blocks=None, oracle: Denoiser | None = None,
                 target=None) -> torch.Tensor:
        """The trajectory log-probability ``[B]`` of a run replayed from ``committed`` (its
        :class:`Trajectory`); ``-inf`` where the record is inconsistent with ``tokens``. Pass
        the run's ``initial`` (prompt) too."""
        record = _need_trajectory(self.name, committed)
        tokens = check_complete(denoiser, tokens, initial)
        if len(record) != self.steps:
            raise MdmprobError(f"{self.name}: the trajectory has {len(record)} steps, expected "
                               f"{self.steps}")
        mask = denoiser.mask_id
        state = initial_tokens(denoiser, initial, tokens.shape[0])
        prompt = state != mask
        log_q = torch.zeros(tokens.shape[0], dtype=denoiser.dtype, device=tokens.device)
        ok = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        for j, (sel, nxt) in enumerate(zip(record, record.states, strict=True), start=1):
            nxt = nxt.to(tokens.device)
            outcome = self._step_log_probs(self.values.log_probs(denoiser(state)), state, j,
                                           mask, prompt)
            log_q = log_q + outcome.gather(-1, nxt[..., None]).squeeze(-1).sum(-1)
            ok &= (sel.to(tokens.device) == ((state == mask) & (nxt != mask))).all(-1)
            state = nxt
        ok &= (state == tokens).all(-1)
        return torch.where(ok, log_q, torch.full_like(log_q, -math.inf))

    def distribution(self, denoiser: Denoiser, *, initial=None, blocks=None,
                     oracle: Denoiser | None = None, target=None,
                     max_states: int = 2**13) -> torch.Tensor:
        """The exact output distribution as a log-table ``[V] * n``: the law of the state (tokens
        with masks) is propagated step by step over all (V+1)^n states,

            log P_j(s') = logsumexp_s [ log P_{j-1}(s) + sum_i log T_j(s)[i, s'_i] ],

        T_j(s) the per-position outcome probabilities of step j from state s; from the prompt
        ``initial`` if given (its tokens are kept: q lives on its completions)."""
        n, V, mask = denoiser.n_tokens, denoiser.vocab, denoiser.mask_id
        start = initial_tokens(denoiser, initial, 1)
        prompt = start != mask
        total = (V + 1) ** n
        if total > max_states:
            raise EnumerationError(f"exact ReMDM propagates the law of (V+1)^n = {V + 1}^{n} = {total} "
                              f"token states, over max_states={max_states}; use Monte Carlo")
        device, dtype = denoiser.device, denoiser.dtype
        states = all_values(n, V + 1, device)  # [(V+1)^n, n], row-major over 0..V
        log_p = torch.full((total,), -math.inf, dtype=dtype, device=device)
        digits = torch.where(prompt, start, torch.full_like(start, V))[0]
        log_p[(digits * (V + 1) ** torch.arange(n - 1, -1, -1, device=device)).sum()] = 0.0
        chunk = max(1, 2**22 // total)
        for j in range(1, self.steps + 1):
            live = (log_p > -math.inf).nonzero().squeeze(-1)
            new = torch.full_like(log_p, -math.inf)
            for part in live.split(chunk):
                src = states[part]
                outcome = self._step_log_probs(self.values.log_probs(denoiser(src)), src, j, mask,
                                              prompt)  # [F, n, V+1]
                per = outcome.permute(1, 2, 0)  # [n, V+1, F]
                lp = log_p[part][None, :] + per[0]
                for i in range(1, n):  # outer sum over positions, row-major like `states`
                    lp = (lp[:, None, :] + per[i][None]).reshape(-1, len(part))
                new = torch.logaddexp(new, torch.logsumexp(lp, -1))  # lp: [total, F]
            log_p = new
        complete = (states < V).all(-1)
        if log_p[~complete].max() > -math.inf:  # pragma: no cover - the last step commits all
            raise MdmprobError("ReMDM left masked positions after the last step")
        codes = (states[complete] * V ** torch.arange(n - 1, -1, -1, device=device)).sum(-1)
        table = torch.full((V ** n,), -math.inf, dtype=dtype, device=device)
        table[codes] = log_p[complete]
        return table.reshape([V] * n)


# ======================================================================================= helpers
def gibbs_remask_decoder(k: int = 2, sweeps: int = 1, kernel: str = "random") -> RemaskDecoder:
    """Mean-field blocks followed by ``sweeps`` steps of R_k per block (see :class:`Remask`)."""
    corrector = Remask(kernel, k, sweeps)
    return RemaskDecoder(f"gibbs_remask(k={k}, sweeps={sweeps}, kernel={kernel})", corrector)


def _lowest_k(conf: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[..., k]`` of the k lowest confidences (log p rounded to 2^-24 nats, so float
    round-off cannot decide a tie), ties to the lower index."""
    key = torch.where(conf > -math.inf, torch.round(conf * _KEY_RESOLUTION), conf)
    return torch.sort(key, dim=-1, stable=True).indices[..., :k]


def _log_comb(n: int, k: int) -> float:
    return math.log(math.comb(n, k))


def _onehot(index: torch.Tensor, V: int, dtype) -> torch.Tensor:
    """log of a one-hot ``[..., V]``: 0 at ``index``, -inf elsewhere."""
    hot = torch.nn.functional.one_hot(index, V).bool()
    return torch.zeros(hot.shape, dtype=dtype, device=index.device).masked_fill(~hot, -math.inf)


__all__ = ["KERNELS", "SCHEDULES", "ReMDM", "Remask", "RemaskDecoder", "Trajectory",
           "gibbs_remask_decoder"]
