"""Three drivers over one step definition: run, replay and enumerate a step decoder.

Each driver walks the decoder's windows; inside a window it builds the step distribution
(:class:`~mdmprob.decoders.step.SelectionStep`) from the denoiser's answer on the current states
and then samples it (:func:`run`), scores a recorded outcome (:func:`replay`) or expands every
outcome (:func:`enumerate_states`). A window with a block corrector is one step whose law is the
corrector's. The denoiser is called in two places: :func:`conditionals` (every row) and
:func:`conditionals_at` (a window's rows: :func:`run`'s steps see only their window's columns,
so a step costs what its window costs).

Exact mode (:func:`enumerate_states`) is breadth-first over decoder states held as tensors: a
state is (sequence id, tokens, window, step in window, masks when the window opened); every live
state of a level goes through the denoiser in one batched call, transitions come out of
``SelectionStep.enumerate`` as tensors, and equal states are merged with ``torch.unique``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from mdmprob.checks import exact_state_limit
from mdmprob.decoders.primitives import Step
from mdmprob.decoders.protocol import Commits, DecodeResult, initial_tokens
from mdmprob.decoders.step import SelectionStep, scatter_logsumexp
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import EnumerationError, MdmprobError
from mdmprob.sampling import gumbel_argmax

CALL_CHUNK = 2 ** 14  # states per denoiser call in exact mode
# a run replays its tie branches for the exact log q(x) with at most this many live states per
# sequence, and sends the denoiser at most RUN_REPLAY_WORK times the states its own steps sent
# (or RUN_REPLAY_FLOOR, if more); past either, it reports trajectory log-probabilities (see run)
RUN_REPLAY_STATES = 2 ** 12
RUN_REPLAY_WORK = 8
RUN_REPLAY_FLOOR = 2 ** 14


def conditionals(denoiser, tokens: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """The denoiser's log-probabilities ``[B, n, V]`` at ``tokens [B, n]``: the one place the
    drivers call a denoiser. ``window`` (bool ``[B, n]``) marks the rows the step reads (its
    candidates); a :class:`~mdmprob.denoisers.base.Denoiser` may answer only those (the oracle
    then costs what the window costs, not the whole sequence); other rows are never read."""
    if window is not None and isinstance(denoiser, Denoiser):
        return denoiser(tokens, window=window)
    return denoiser(tokens)


def conditionals_at(denoiser, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The rows ``[B, w, V]`` of :func:`conditionals` at ``positions`` (``LongTensor[w]``) only:
    :meth:`~mdmprob.denoisers.base.Denoiser.rows` for a denoiser, which then pays for the
    window (the oracle), else the whole answer's rows there."""
    if isinstance(denoiser, Denoiser):
        return denoiser.rows(tokens, positions)
    return denoiser(tokens)[:, positions]


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
    committed = Commits(num, n, device)
    diagnostics: dict[str, Any] = {}
    reference_calls = _reference_calls(decoder, len(windows))
    for window in windows:
        if decoder.corrector is not None:
            tokens, sel, lq, calls = decoder.corrector.decode_window(
                decoder, denoiser, tokens, window, generator, target=target, diagnostics=diagnostics)
            nfe = nfe + calls
            log_q_tokens[:, window[0]] += lq
            committed.add(sel)
            continue
        # the steps see the window's columns only (in position order): a step costs what the
        # window costs, whatever the length of the sequence
        cols = torch.tensor(sorted(window), dtype=torch.long, device=device)
        window_masked = (tokens[:, cols] == mask).sum(-1)
        step_no = torch.zeros(num, dtype=torch.long, device=device)
        while True:
            here = tokens[:, cols]
            cand = here == mask
            active = cand.any(-1)
            if not active.any():
                break
            view = _window_view(decoder, denoiser, tokens, cols, cand, step_no, window_masked,
                                len(windows), oracle)
            nfe = nfe + active.long()
            sel, draws, lp_tokens, br = step_law(decoder, view).sample(generator)
            tokens[:, cols] = torch.where(sel, draws, here)  # in place: O(window), not O(n)
            log_q_tokens.index_add_(1, cols, lp_tokens.to(log_q_tokens.dtype))
            branched = branched | br
            committed.add(sel, cols)
            step_no = step_no + active.long()
        if reference_calls is not None:  # the reference also calls on steps that commit nothing
            nfe = nfe + torch.where(window_masked > 0, (reference_calls - step_no).clamp(min=0),
                                    torch.zeros_like(step_no))
    log_q = log_q_tokens.sum(-1)
    marginal = decoder.log_q_is_marginal
    if decoder.corrector is None and marginal and branched.any():
        # a random tie-break was taken: log q(x) sums over the tie branches, replayed exactly
        rows = branched.nonzero().squeeze(-1)
        try:  # the first sequence alone, then the rest: a blow-up costs one sequence's replay
            exact = torch.cat([
                marginal_log_prob(decoder, denoiser, tokens[part], start[part], windows,
                                  oracle=oracle, target=target, split=False,
                                  max_row_states=RUN_REPLAY_STATES,
                                  max_work=max(RUN_REPLAY_FLOOR,
                                               RUN_REPLAY_WORK * int(nfe[part].sum())))
                for part in (rows[:1], rows[1:]) if len(part)])
        except EnumerationError as e:  # too many branches: the samples stand, log q(x) does not
            warnings.warn(
                f"{e}. The run reports each sequence's trajectory log-probability instead "
                "(result.log_q_is_marginal is False; evaluate() then uses its trajectory "
                "bounds)", stacklevel=3)
            marginal = False
        else:
            first = (start[rows] == mask).long().argmax(-1)
            log_q_tokens[rows, first] += exact - log_q[rows]
            log_q = log_q_tokens.sum(-1)
    return DecodeResult(tokens, log_q, nfe, committed, marginal, diagnostics, log_q_tokens)


class _OverStateLimit(EnumerationError):
    """More live states than ``max_states`` in all (fewer sequences at once may fit)."""


# ----------------------------------------------------------------------------------- replay
def replay(decoder, denoiser, tokens: torch.Tensor, committed, windows, *, initial=None,
           oracle=None, target=None) -> torch.Tensor:
    """log-probability ``[B]`` of the recorded trajectory ``committed`` (per step: bool
    ``[B, n]``) ending in ``tokens``; -inf where it is not a trajectory of the decoder."""
    def score(step, given, active, x):
        return given, step.log_prob(given, x)

    return _forced_walk(decoder, denoiser, tokens, windows, score, committed=committed,
                        initial=initial, oracle=oracle, target=target)


def _forced_walk(decoder, denoiser, tokens, windows, on_step, *, committed=None, initial=None,
                 oracle=None, target=None) -> torch.Tensor:
    """Walk ``decoder``'s windows from ``initial`` with every committed value forced to
    ``tokens [B, n]``; returns log q ``[B]`` of the walk. A block corrector's window is committed
    whole (its exact log q added); each step calls ``on_step(step, given, active, x)``, ``step``
    the step law on the window's columns (w of them, as in :func:`run`), ``given`` the recorded
    selection there ``[B, w]`` (from ``committed``; None without), ``active [B]`` the rows with a
    candidate left and ``x`` the forced tokens there ``[B, w]``; it returns ``(sel [B, w],
    log q [B])``."""
    B = tokens.shape[0]
    mask, device = denoiser.mask_id, tokens.device
    state = initial_tokens(denoiser, initial, B)
    log_q = torch.zeros(B, dtype=denoiser.dtype, device=device)
    steps = None if committed is None else iter(committed)
    for window in windows:
        if decoder.corrector is not None:
            log_q = log_q + _corrector_window_lp(decoder, denoiser, state, tokens, window, target)
            state[:, window] = tokens[:, window]
            if steps is not None:
                _next_step(steps)
            continue
        cols = torch.tensor(sorted(window), dtype=torch.long, device=device)
        x = tokens[:, cols]
        window_masked = (state[:, cols] == mask).sum(-1)
        step_no = torch.zeros(B, dtype=torch.long, device=device)
        while True:
            here = state[:, cols]
            cand = here == mask
            active = cand.any(-1)
            if not active.any():
                break
            view = _window_view(decoder, denoiser, state, cols, cand, step_no, window_masked,
                                len(windows), oracle)
            given = None if steps is None else _next_step(steps).to(device)[:, cols] & cand
            sel, lq = on_step(step_law(decoder, view), given, active, x)
            log_q = log_q + lq
            state[:, cols] = torch.where(sel, x, here)
            step_no = step_no + active.long()
    return log_q


def marginal_log_prob(decoder, denoiser, tokens, start, windows, *, oracle=None,
                      target=None, max_states: int | None = None, split: bool = True,
                      max_row_states: int | None = None,
                      max_work: int | None = None) -> torch.Tensor:
    """log q(x) ``[B]`` of complete ``tokens`` from the start states ``start``: the exact driver
    with every committed value forced to ``x`` (the selections still branch where keys tie), up
    to 1024 sequences at a time. A group whose tie branches reach more than ``max_states`` live
    states (default :func:`~mdmprob.checks.exact_state_limit`) is split: its first sequence
    alone, then halves (``split=False``: it raises at once). A single sequence over the limit,
    or over ``max_row_states`` live states of its own, raises
    :class:`~mdmprob.errors.EnumerationError`; so does a replay that would send more than
    ``max_work`` states to the denoiser."""
    n, V = denoiser.n_tokens, denoiser.vocab
    limit = exact_state_limit(n, V) if max_states is None else max_states
    parts, todo = [], [(i, min(i + 1024, tokens.shape[0])) for i in range(0, tokens.shape[0],
                                                                        1024)]
    while todo:
        lo, hi = todo.pop(0)
        try:
            parts.append((lo, enumerate_states(decoder, denoiser, start[lo:hi], windows,
                                               oracle=oracle, target=target,
                                               forced=tokens[lo:hi], max_states=limit,
                                               max_row_states=max_row_states,
                                               max_work=max_work)))
        except EnumerationError as e:
            if split and hi - lo > 1 and isinstance(e, _OverStateLimit):
                # its first sequence alone, then halves: a sequence over the limit by itself
                # costs one more attempt, not one per halving
                mid = (lo + 1 + hi) // 2
                todo[:0] = [(lo, lo + 1)] + [(a, b) for a, b in ((lo + 1, mid), (mid, hi)) if b > a]
                continue
            which = f"sequence {lo}" if hi - lo == 1 else f"sequences {lo}..{hi - 1}"
            raise EnumerationError(
                f"{decoder.name}: log q(x) of {which} sums over its tie-break branches "
                f"(equal keys broken at random), which reach more than max_states={limit} "
                f"decoder states ({e}); use ties='lowest_position' (a deterministic tie-break: "
                "one branch), the trajectory's log-probability (log_prob(..., committed=...)), "
                "or the importance-weighted bounds (log_weights, evaluate(..., mode='mc'))"
            ) from None
    if not parts:
        return torch.zeros(0, dtype=denoiser.dtype, device=tokens.device)
    return torch.cat([t for _, t in sorted(parts, key=lambda part: part[0])])


# ----------------------------------------------------------------------------------- forced replay
SUBSET_BUDGET = 2 ** 8  # selections one sample-then-choose proposal step enumerates per row
PROPOSAL_CHUNK = 2 ** 15  # (row, selection) pairs scored at once by that enumeration


def forced(decoder, denoiser, tokens: torch.Tensor, windows, generator, *, committed=None,
           initial=None, oracle=None, target=None):
    """The decoder replayed with its values forced to ``tokens [B, n]``: the proposal
    r(tau | x) of the KL bounds (:mod:`mdmprob.bounds`).

    Each step's selection is drawn from ``r(sel | state, x)`` (see :func:`proposal_step`) and the
    committed values are x there. Returns ``(log_q [B], log_r [B])``: the exact log q(x, tau) of
    the decoder and log r(tau | x) of the proposal for the trajectory tau taken. With
    ``committed`` (a run's per-step selections) the trajectory is that one, scored under both.
    Exact block correctors are deterministic given x (their window law is p(x_W | x_P))."""
    log_r = torch.zeros(tokens.shape[0], dtype=denoiser.dtype, device=tokens.device)

    def propose(step, given, active, x):
        nonlocal log_r
        sel, lr = proposal_step(step, x, generator, given)
        log_r = log_r + torch.where(active, lr, torch.zeros_like(lr))
        return sel, step.log_prob(sel, x)

    log_q = _forced_walk(decoder, denoiser, tokens, windows, propose, committed=committed,
                         initial=initial, oracle=oracle, target=target)
    return log_q, log_r


def proposal_step(step: SelectionStep, x: torch.Tensor, generator, given=None):
    """One step of the forced replay: ``(sel [B, n], log r(sel | state, x) [B])``, ``sel`` drawn
    (or ``given``, scored).

    * selections that do not read the drawn values (random and fixed orders, confidence of the
      model's marginals, Bernoulli schedules): r is the decoder's own selection law, so the
      importance weight of a step is prod_{i in sel} p_theta(x_i | state);
    * sample-then-choose selections: r(sel) ∝ q(sel, x_sel | state), the step's exact law given
      that the committed values are x (all selections of the candidates enumerated, up to
      2^8 per row); past that, the ranked proposal (:func:`_ranked_proposal`) for counts fixed
      before the draws, and independent inclusions for counts that read them."""
    cand = step.view.candidates
    if not step.draws_random:
        if given is None:
            given = step.sample(generator)[0]
        return given, _selection_lp(step, given)
    if 2 ** int(cand.sum(-1).max()) <= SUBSET_BUDGET:
        return _enumerated_proposal(step, x, generator, given)
    return _bernoulli_proposal(step, x, generator, given)


def _selection_lp(step: SelectionStep, sel) -> torch.Tensor:
    """log Pr[the step selects ``sel``] for selections that do not read the drawn values: the
    step's own joint law at any values (the argmax, whose log-probability is finite) less the
    values' share."""
    values = step.values_lp.argmax(-1)
    picked = step.values_lp.gather(-1, values[..., None])[..., 0]
    share = torch.where(sel & step.view.candidates, picked, torch.zeros_like(picked)).sum(-1)
    return step.log_prob(sel, values) - share


def _enumerated_proposal(step: SelectionStep, x, generator, given):
    """r(sel) = q(sel, x_sel | state) / sum_sel' q(sel', x_sel' | state) over every subset of
    the candidates."""
    cand = step.view.candidates
    B, n = cand.shape
    device = cand.device
    c = int(cand.sum(-1).max())
    slots = torch.sort((~cand).to(torch.int8), dim=-1, stable=True).indices[:, :c]  # [B, c]
    filled = torch.arange(c, device=device)[None] < cand.sum(-1)[:, None]  # [B, c]
    S = 2 ** c
    bits = (torch.arange(S, device=device)[:, None] >> torch.arange(c, device=device)) & 1
    bits = bits.bool()  # [S, c]
    rows_per = max(1, PROPOSAL_CHUNK // S)
    lps = []
    for part in torch.arange(B, device=device).split(rows_per):
        row = part.repeat_interleave(S)
        on = bits.repeat(len(part), 1) & filled[row]  # [R*S, c]
        sel = torch.zeros(len(row), n, dtype=torch.bool, device=device)
        sel.scatter_(1, slots[row], on)
        sel = sel & cand[row]
        valid = ~(bits.repeat(len(part), 1) & ~filled[row]).any(-1)  # no bit on a missing slot
        sub = step.restricted(step.view.take_rows(row))
        lp = sub.log_prob(sel, x[row])
        lps.append(torch.where(valid, lp, torch.full_like(lp, -math.inf)).reshape(len(part), S))
    table = torch.cat(lps)  # [B, S]
    log_z = torch.logsumexp(table, -1)
    if given is None:
        pick = gumbel_argmax(table, generator)
        on = bits[pick] & filled
        given = torch.zeros(B, n, dtype=torch.bool, device=device).scatter_(1, slots, on) & cand
        lp_sel = table.gather(-1, pick[:, None])[:, 0]
    else:
        lp_sel = step.log_prob(given, x)
    lr = torch.where(log_z > -math.inf, lp_sel - log_z, torch.zeros_like(log_z))
    return given, lr


def _bernoulli_proposal(step: SelectionStep, x, generator, given):
    """Proposals past the enumeration budget (exact densities). A count that does not read the
    draws (k known): the ranked proposal of :func:`_ranked_proposal`, exact for the step when no
    keys tie. A count that reads them (thresholds): independent inclusions with odds
    w_i = p(x_i) s_i^(c - 1), s_i the mean probability that another candidate's draw has a key
    <= that of x_i, conditioned on a non-empty selection."""
    view, rule = step.view, step.rule
    cand = view.candidates
    vkeys = step.value_keys()  # [B, n, V]
    xs = x.clamp(0, vkeys.shape[-1] - 1)[..., None]
    key_x = vkeys.gather(-1, xs)[..., 0]  # [B, n]
    lp_x = step.values_lp.gather(-1, xs)[..., 0]
    prob = step.values_lp.exp()
    if not rule.commit.uses_scores:
        k = step.count(view, torch.zeros_like(step.values_lp[..., 0]))
        return _ranked_proposal(cand, key_x, lp_x, vkeys, prob, k, generator, given)
    n = cand.shape[-1]
    lose = torch.stack([torch.where(vkeys <= key_x[:, i, None, None], prob, 0.0).sum(-1)
                        for i in range(n)], 1)  # [B, i, j]: Pr[key of j's draw <= key of x_i]
    other = cand[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=cand.device)[None]
    c = cand.sum(-1)
    s_i = torch.where(other, lose, 0.0).sum(-1) / (c[:, None] - 1).clamp(min=1)
    log_w = lp_x + (c - 1)[:, None].to(lp_x.dtype) * s_i.clamp(min=1e-300).log()
    log_w = torch.where(cand & (lp_x > -math.inf), log_w, torch.full_like(log_w, -math.inf))
    return _independent(log_w, cand, generator, given)


def _ranked_proposal(cand, key_x, lp_x, vkeys, prob, k, generator, given):
    """r(sel) ∝ prod_{i in sel} p(x_i) prod_{j not in sel} Pr[key of j's draw <= w] over
    selections of k candidates, w the key of x at the weakest selected position m (candidates
    ranked by the key of x, lowest position first among ties): the step's law given x_sel when
    keys do not tie. Drawn as m first (each m's total by a dynamic programme over the positions
    ranked above it), then the k - 1 others; ``log r`` exact."""
    B, n = cand.shape
    device, dtype = cand.device, lp_x.dtype
    ninf = -math.inf
    order = torch.sort(torch.where(cand, key_x, torch.full_like(key_x, ninf)), dim=-1,
                       descending=True, stable=True).indices  # ranked candidates first
    c = cand.sum(-1)
    lp_r = lp_x.gather(-1, order)  # [B, n] in rank order
    key_r = key_x.gather(-1, order)
    # below[b, m, j] = log Pr[key of j's draw <= key of x at m] (rank order for both)
    vk_r = vkeys.gather(1, order[..., None].expand_as(vkeys))
    pr_r = prob.gather(1, order[..., None].expand_as(prob))
    below = torch.stack([torch.where(vk_r <= key_r[:, m, None, None], pr_r, 0.0).sum(-1)
                         for m in range(n)], 1).clamp(max=1.0).log()  # [B, m, j]
    ranked = torch.arange(n, device=device)
    valid = ranked[None] < c[:, None]  # [B, n]
    K = int(k.max())
    log_total = torch.full((B, n), ninf, dtype=dtype, device=device)
    tables = _rank_tables(lp_r, below, valid, K)  # [B, m, K + 1]: before m, j selected
    after = torch.where(valid[:, None, :] & (ranked[None, None] > ranked[None, :, None]),
                        below, torch.zeros_like(below)).sum(-1)  # [B, m]
    km1 = (k - 1).clamp(min=0)
    log_total = lp_r + after + tables.gather(-1, km1[:, None, None].expand(B, n, 1))[..., 0]
    log_total = torch.where(valid & (ranked[None] >= km1[:, None]), log_total,
                            torch.full_like(log_total, ninf))
    log_z = torch.logsumexp(log_total, -1)
    if given is None:
        m = gumbel_argmax(log_total, generator)
        chosen = torch.zeros(B, n, dtype=torch.bool, device=device)
        chosen[torch.arange(B, device=device), m] = True
        # the k - 1 others among the positions ranked above m, backwards through the programme
        need = km1.clone()
        lp_m = lp_r
        bel_m = below[torch.arange(B, device=device), m]  # [B, j]
        prefix = _prefix_dp(lp_m, bel_m, ranked[None] < m[:, None], K)  # [n + 1, B, K + 1]
        for j in range(n - 1, -1, -1):
            in_range = j < m
            here = prefix[j + 1].gather(-1, need[:, None])[:, 0]
            take_lp = lp_m[:, j] + prefix[j].gather(-1, (need - 1).clamp(min=0)[:, None])[:, 0] \
                - here
            u = torch.rand(B, generator=generator, device=device, dtype=dtype)
            take = in_range & (need > 0) & (u.log() < take_lp)
            chosen[:, j] = chosen[:, j] | take
            need = need - take.long()
        given = torch.zeros(B, n, dtype=torch.bool, device=device).scatter_(1, order, chosen)
        given = given & cand
    sel_r = given.gather(-1, order)
    m = torch.where(sel_r, ranked[None], torch.full_like(sel_r, -1, dtype=torch.long)).amax(-1)
    bel_m = below[torch.arange(B, device=device), m.clamp(min=0)]
    lp = torch.where(sel_r, lp_r, torch.where(valid, bel_m, torch.zeros_like(bel_m))).sum(-1)
    ok = (given.sum(-1) == k) & (m >= 0) & (log_z > ninf)
    return given, torch.where(ok, lp - log_z, torch.full_like(lp, ninf))


def _prefix_dp(lp, bel, inside, K):
    """``out[j][b, t]`` = log sum over selections of t among ranked positions < j (restricted to
    ``inside``) of prod_sel p(x_i) prod_unsel Pr[below]; list of n + 1 tensors ``[B, K + 1]``."""
    B, n = lp.shape
    e = torch.full((B, K + 1), -math.inf, dtype=lp.dtype, device=lp.device)
    e[:, 0] = 0.0
    out = [e]
    for j in range(n):
        shifted = torch.cat([torch.full_like(e[:, :1], -math.inf), e[:, :-1]], -1)
        new = torch.logaddexp(e + bel[:, j:j + 1], shifted + lp[:, j:j + 1])
        e = torch.where(inside[:, j:j + 1], new, e)
        out.append(e)
    return out


def _rank_tables(lp, below, valid, K):
    """For every m: the prefix programme over the positions ranked above m, ``[B, m, K + 1]``."""
    B, n = lp.shape
    ranked = torch.arange(n, device=lp.device)
    inside = valid[:, None, :] & (ranked[None, None] < ranked[None, :, None])  # [B, m, j]
    e = torch.full((B, n, K + 1), -math.inf, dtype=lp.dtype, device=lp.device)
    e[..., 0] = 0.0
    for j in range(n):
        shifted = torch.cat([torch.full_like(e[..., :1], -math.inf), e[..., :-1]], -1)
        new = torch.logaddexp(e + below[:, :, j:j + 1], shifted + lp[:, None, j:j + 1])
        e = torch.where(inside[:, :, j:j + 1], new, e)
    return e


def _independent(log_w, cand, generator, given):
    """Inclusions with odds w_i, conditioned on at least one."""
    log_p = log_w - torch.logaddexp(log_w, torch.zeros_like(log_w))
    log_1mp = -torch.logaddexp(log_w, torch.zeros_like(log_w))
    log_none = torch.where(cand, log_1mp, torch.zeros_like(log_1mp)).sum(-1)
    log_some = torch.log(-torch.expm1(log_none.clamp(max=-1e-300)))
    if given is None:
        given = torch.zeros_like(cand)
        pending = cand.any(-1)
        while pending.any():  # rejection: an empty draw is redrawn
            u = torch.rand(log_p.shape, generator=generator, device=cand.device,
                           dtype=log_p.dtype)
            draw = (u.log() < log_p) & cand
            take = pending & draw.any(-1)
            given = torch.where(take[:, None], draw, given)
            pending = pending & ~take
    lp = torch.where(cand, torch.where(given, log_p, log_1mp), torch.zeros_like(log_p)).sum(-1)
    lp = torch.where(given.any(-1), lp - log_some, torch.full_like(lp, -math.inf))
    return given, lp


# ----------------------------------------------------------------------------------- exact mode
def enumerate_states(decoder, denoiser, start: torch.Tensor, windows, *, oracle=None,
                     target=None, max_states: int | None = None, forced=None,
                     max_row_states: int | None = None,
                     max_work: int | None = None) -> torch.Tensor:
    """The decoder's exact law from the start states ``start [S, n]``: with ``forced [S, n]``
    the log-probability ``[S]`` of reaching ``forced`` from each start, otherwise (one start) the
    log-table of q over all V^n sequences, flat ``[V^n]``. More than ``max_states`` live states
    in all, or ``max_row_states`` from one start, or more than ``max_work`` states sent to the
    denoiser in all, raise :class:`~mdmprob.errors.EnumerationError`."""
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
    cache = _ConditionalsCache()
    if max_states is None:
        max_states = exact_state_limit(n, V)
    work = 0
    while tokens.shape[0]:
        if tokens.shape[0] > max_states:
            raise _OverStateLimit(
                f"exact mode reached {tokens.shape[0]} decoder states, over max_states="
                f"{max_states} (default: what MDMPROB_MEMORY_BUDGET allows for n = {n}, V = {V}); "
                f"pass max_states={tokens.shape[0]} or more to distribution() if memory allows, "
                "or use Monte Carlo mode "
                "(evaluate(..., mode='mc'))")
        work += tokens.shape[0]
        if max_work is not None and work > max_work:
            raise EnumerationError(f"exact mode sent {work} states to the denoiser, over "
                                   f"max_work={max_work}")
        if max_row_states is not None and tokens.shape[0] > max_row_states:
            most = int(torch.bincount(seq, minlength=S0).max())
            if most > max_row_states:
                raise EnumerationError(f"exact mode reached {most} decoder states of one "
                                       f"sequence, over max_row_states={max_row_states}")
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
        level = None
        if decoder.corrector is None and forced is None and _factorises(decoder):
            level = _factorised_level(decoder, denoiser, tokens, (tokens == mask) & wmask[w], w,
                                      step, opened, lq, seq, W, oracle, cache)
        if level is not None:  # already merged: move finished windows on, merge again
            tokens, w, step, opened = _advance(*level[:4], wmask, mask)
            tokens, w, step, opened, lq, seq = _merge(tokens, w, step, opened, *level[4:])
            continue
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
        return scatter_logsumexp(final_lq, final_seq, S0)
    codes = (final * V ** torch.arange(n - 1, -1, -1, device=device)).sum(-1)
    return scatter_logsumexp(final_lq, codes, V ** n)


# ----------------------------------------------------------------------------------- factorised
DENSE_STATES = 2 ** 24  # next-state table entries a factorised level may hold (float64)
OUTCOME_BUDGET = 2 ** 31  # (state, outcome) pairs a factorised level may expand
OUTCOME_CHUNK = 2 ** 21  # (state, outcome) pairs expanded at once
CALL_ELEMENTS = 2 ** 24  # conditionals (state x position x value) per denoiser call in that level
CACHE_ELEMENTS = 2 ** 26  # conditionals an exact-mode run keeps for states that recur
_EXP_FLOOR = -700.0  # exp() of a log-weight above this is a normal float64


def _factorises(decoder) -> bool:
    """Whether exact mode can take the factorised path: a stochastic commit rule (each candidate
    commits independently given the state) under the shared step law."""
    commit = getattr(decoder, "commit", None)
    return commit is not None and commit.stochastic and getattr(decoder, "step_law", None) is None


def _factorised_level(decoder, denoiser, tokens, cand, w, step, opened, lq, seq, n_windows,
                      oracle, cache):
    """One level of exact mode for a stochastic commit rule, without listing its outcomes row by
    row: a state with k candidates has (V + 1)^k outcomes (each candidate commits a value or
    stays), whose weights and next-state codes are outer products / sums of per-position tables.
    States are grouped by k; each group's outcomes are expanded as tensors and accumulated into a
    dense table over the next states (counters x (V + 1)^n token codes), which merges equal next
    states. The denoiser's answers come from ``cache`` (a :class:`_ConditionalsCache`): a state
    seen at an earlier level is not sent again, and the new ones go in one batched call.
    Returns ``(tokens, w, step, opened, lq, seq)`` of the merged next states, or None where the
    table would exceed :data:`DENSE_STATES` (the caller then lists the outcomes row by row)."""
    n, V, mask = denoiser.n_tokens, denoiser.vocab, denoiser.mask_id
    device, dtype = tokens.device, denoiser.dtype
    R = V + 1
    if R ** n > DENSE_STATES:
        return None
    metas, meta_id = _unique_rows(torch.stack([seq, w, step + 1, opened], -1))
    size = metas.shape[0] * R ** n
    if size > DENSE_STATES:
        return None
    k = cand.sum(-1)
    outcomes = int((R ** k.double()).sum())
    if outcomes > OUTCOME_BUDGET:
        raise EnumerationError(
            f"exact mode: one step of {decoder.name} from {tokens.shape[0]} states has "
            f"{outcomes:.3g} outcomes (each of k masked positions commits one of {V} values or "
            f"stays: (V + 1)^k per state), over the budget of {OUTCOME_BUDGET}; use fewer "
            "tokens or Monte Carlo mode (evaluate(..., mode='mc'))")
    weight = R ** torch.arange(n - 1, -1, -1, device=device)
    digits = torch.where(tokens == mask, torch.full_like(tokens, V), tokens)
    code = (digits * weight).sum(-1)
    logp = cache.conditionals(denoiser, tokens, code, R ** n)
    oracle_logp = None
    if oracle is not None and getattr(decoder.score, "needs_oracle", False):
        oracle_logp = conditionals(oracle, tokens)
    view = Step(logp, cand, step, opened, oracle_logp, n_windows)
    factors = SelectionStep(decoder, view).outcome_factors().to(dtype)  # [S, n, R]
    key = (meta_id * R ** n + code).to(torch.int32)
    top = lq.max()
    shifted = lq - top
    finite = torch.where(factors > -math.inf, factors, torch.full_like(factors, math.inf))
    floor = shifted + finite.amin(-1).clamp(max=0).sum(-1)  # the least positive outcome weight
    groups = [(j, (k == j).nonzero().squeeze(-1)) for j in torch.unique(k).tolist()]
    chunks = _outcome_chunks(groups, cand, factors, key, shifted, weight.to(torch.int32), V)
    table = torch.zeros(size, dtype=dtype, device=device)
    if bool((floor[floor > -math.inf] > _EXP_FLOOR).all()):
        # every outcome's weight is a normal float64: multiply probabilities, sum them
        for codes, prob in chunks(log=False):
            table.index_add_(0, codes, prob)
        live = (table > 0).nonzero().squeeze(-1)
        new_lq = table[live].log() + top
    else:  # log-space: the largest weight per next state first, then the scaled sum
        peak = torch.full((size,), -math.inf, dtype=dtype, device=device)
        for codes, lp in chunks(log=True):
            peak.scatter_reduce_(0, codes.long(), lp, reduce="amax")
        safe = torch.where(peak > -math.inf, peak, torch.zeros_like(peak))
        for codes, lp in chunks(log=True):
            table.index_add_(0, codes, (lp - safe[codes]).exp())
        live = (table > 0).nonzero().squeeze(-1)
        new_lq = table[live].log() + safe[live] + top
    meta = metas[live // R ** n]
    digits = (live % R ** n)[:, None] // weight % R
    tokens = torch.where(digits == V, torch.full_like(digits, mask), digits)
    return tokens, meta[:, 1], meta[:, 2], meta[:, 3], new_lq, meta[:, 0]


def _outcome_chunks(groups, cand, factors, key, shifted, weight, V):
    """A function of ``log`` that yields ``(next-state codes [K], weights [K])`` of every outcome
    a chunk at a time (log-weights with ``log``, else probabilities relative to the largest
    state): per group of states with k candidates, the outer products (sums) over their k
    candidate positions."""
    R = V + 1

    def chunks(log: bool):
        for k, rows in groups:
            if k == 0:
                yield key[rows], shifted[rows] if log else shifted[rows].exp()
                continue
            pos = torch.sort((~cand[rows]).to(torch.int8), dim=-1, stable=True).indices[:, :k]
            lp_pos = factors[rows].gather(1, pos[..., None].expand(-1, -1, R))  # [N, k, R]
            options = (lp_pos > -math.inf).flatten(0, 1).any(0).nonzero().squeeze(-1)
            lp_pos = lp_pos[..., options]  # options impossible throughout the group dropped
            step = (options.to(weight.dtype) - V)[None, None, :] * weight[pos][..., None]
            base = shifted[rows]
            if not log:
                lp_pos, base = lp_pos.exp(), base.exp()
            per_row = options.shape[0] ** k
            for part in torch.arange(rows.shape[0], device=rows.device).split(
                    max(1, OUTCOME_CHUNK // per_row)):
                w, codes = base[part][:, None], key[rows[part]][:, None]
                for j in range(k):
                    w = (w[:, :, None] + lp_pos[part, j, None, :]) if log else \
                        (w[:, :, None] * lp_pos[part, j, None, :])
                    w = w.flatten(1)
                    codes = (codes[:, :, None] + step[part, j, None, :]).flatten(1)
                yield codes.reshape(-1), w.reshape(-1)

    return chunks


class _ConditionalsCache:
    """The denoiser's answers by token state over one exact-mode run: a denoiser is a function
    of the tokens, and the states of a stochastic rule recur from level to level. Holds at most
    :data:`CACHE_ELEMENTS` conditionals; states past that are recomputed."""

    def __init__(self):
        self.slot = None  # int64 [codes]: row of each token code in self.logp, -1 if absent
        self.logp = None

    def conditionals(self, denoiser, tokens, code, codes: int) -> torch.Tensor:
        """``[S, n, V]`` log-probabilities at ``tokens [S, n]`` (token codes ``code`` < codes)."""
        if self.slot is None:
            self.slot = torch.full((codes,), -1, dtype=torch.long, device=tokens.device)
        row = self.slot[code]
        miss = (row < 0).nonzero().squeeze(-1)
        if miss.numel():
            per_call = max(1, CALL_ELEMENTS // (tokens.shape[1] * denoiser.vocab))
            parts = [conditionals(denoiser, tokens[part]) for part in miss.split(per_call)]
            new = parts[0] if len(parts) == 1 else torch.cat(parts)
            held = 0 if self.logp is None else self.logp.shape[0]
            if (held + new.shape[0]) * new[0].numel() <= CACHE_ELEMENTS:
                self.slot[code[miss]] = held + torch.arange(new.shape[0], device=code.device)
                self.logp = new if self.logp is None else torch.cat([self.logp, new])
                return self.logp[self.slot[code]]
        else:
            return self.logp[row]
        out = torch.empty((tokens.shape[0],) + tuple(new.shape[1:]), dtype=new.dtype,
                          device=new.device)
        out[miss] = new
        hit = row >= 0
        if hit.any():
            out[hit] = self.logp[row[hit]]
        return out


def _unique_rows(rows: torch.Tensor):
    """``(unique rows [U, c], inverse [S])`` of small non-negative integer rows, through one
    int64 mixed-radix code (a 1-D sort) when it fits."""
    radix = rows.amax(0) + 1
    if float(radix.double().log2().sum()) >= 62:
        return torch.unique(rows, dim=0, return_inverse=True)
    weight = torch.cat([radix.flip(0).cumprod(0).flip(0)[1:], radix.new_ones(1)])
    codes, inverse = torch.unique((rows * weight).sum(-1), return_inverse=True)
    return codes[:, None] // weight % radix, inverse


# ----------------------------------------------------------------------------------- helpers
def _view(decoder, denoiser, tokens, cand, step_no, window_masked, n_windows, oracle) -> Step:
    logp = conditionals(denoiser, tokens, window=cand)
    oracle_logp = None
    if oracle is not None and getattr(decoder.score, "needs_oracle", False):
        oracle_logp = conditionals(oracle, tokens, window=cand)
    return Step(logp, cand, step_no, window_masked, oracle_logp, n_windows)


def _window_view(decoder, denoiser, tokens, cols, cand, step_no, window_masked, n_windows,
                 oracle) -> Step:
    """The step's view of the window's columns ``cols`` only (``cand [B, w]``)."""
    logp = conditionals_at(denoiser, tokens, cols)
    oracle_logp = None
    if oracle is not None and getattr(decoder.score, "needs_oracle", False):
        oracle_logp = conditionals_at(oracle, tokens, cols)
    return Step(logp, cand, step_no, window_masked, oracle_logp, n_windows, cols,
                tokens.shape[1])


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
    """Merge equal states (same sequence id, tokens and counters), summing their probability
    (states keyed by :func:`_unique_rows`)."""
    if tokens.shape[0] <= 1:
        return tokens, w, step, opened, lq, seq
    cols = torch.cat([seq[:, None], tokens, w[:, None], step[:, None], opened[:, None]], -1)
    _, inverse = _unique_rows(cols)
    size = int(inverse.max()) + 1
    rep = torch.zeros(size, dtype=torch.long, device=seq.device).scatter_(
        0, inverse, torch.arange(seq.shape[0], device=seq.device))
    lq = scatter_logsumexp(lq, inverse, size)
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
    return corrector.window_log_prob(denoiser, state, tokens, window, target)


__all__ = ["conditionals", "conditionals_at", "enumerate_states", "forced", "marginal_log_prob",
           "proposal_step", "replay", "run"]
