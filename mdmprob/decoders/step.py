"""One step of a step decoder as a distribution over its outcomes.

A step sees the state through a :class:`~mdmprob.decoders.primitives.Step` view (the denoiser's
log-probabilities, the candidates, the counters). Its outcome is ``(sel, values)``: which
candidates are committed (bool ``[B, n]``) and the values written there (long ``[B, n]``, read at
``sel`` only). Like a Pyro distribution it has

* :meth:`SelectionStep.sample`: one outcome per row, with its log-probability;
* :meth:`SelectionStep.log_prob`: the exact log-probability ``[B]`` of given outcomes;
* :meth:`SelectionStep.enumerate`: every outcome with positive probability, as tensors.

The law (the only place it is written): values are drawn at every position from the decoder's
:class:`~mdmprob.decoders.primitives.ValueLaw`; a stochastic commit rule keeps each candidate
independently; otherwise candidates are ranked by the score's key (rounded to 2^-32, so float
round-off never decides an order), the commit rule counts how many to keep from the ranked keys
(ties in canonical lowest-position order), all keys above the count-th largest are kept, and the
rest among the keys equal to it (the ties) is a uniformly random subset (``ties="random"``,
random scores) or the lowest positions (``ties="lowest_position"``). Sample-then-choose scores
(``score.uses_draws``) rank the drawn values; the probability of a selection then sums over the
draws of the positions left masked, exactly.
"""

from __future__ import annotations

import math

import torch

from mdmprob.decoders.primitives import KEY_QUANTUM, Step, Threshold, round_keys
from mdmprob.errors import BudgetError, EnumerationError
from mdmprob.sampling import gumbel_argmax

TIES = {
    "random": "a uniformly random subset of the candidates whose keys tie (exact in q, "
              "independent of how positions are numbered)",
    "lowest_position": "the lowest positions first among tied keys",
}
EXPANSION_BUDGET = 2 ** 22  # outcomes one enumeration may hold at once


class SelectionStep:
    """The step of ``rule`` (an object with ``score``, ``commit``, ``values`` and ``ties``) at
    the state seen by ``view``; shapes: B rows, n positions, V values."""

    def __init__(self, rule, view: Step):
        self.rule, self.view = rule, view
        self.values_lp = rule.values.log_probs(view.logp)  # [B, n, V]
        self.random_ties = rule.score.random or rule.ties == "random"
        self.draws_random = rule.score.uses_draws and not rule.values.deterministic
        self._value_keys: torch.Tensor | None = None

    def restricted(self, view: Step) -> SelectionStep:
        """The same step law at another view (e.g. rows repeated for an enumeration)."""
        return type(self)(self.rule, view)

    # ------------------------------------------------------------------------------- sample
    def sample(self, generator: torch.Generator):
        """``(sel [B, n], values [B, n], lp_tokens [B, n], branched [B])``: one outcome per row;
        ``lp_tokens`` spreads its log-probability over positions (each committed value's log-prob,
        the selection's on the first committed position; sums to log Pr[outcome]); ``branched``
        marks rows whose selection was a random choice among tied keys."""
        view, rule = self.view, self.rule
        cand = view.candidates
        draws = self.draw(generator)
        branched = torch.zeros(cand.shape[0], dtype=torch.bool, device=cand.device)
        if rule.commit.stochastic:
            probs = rule.commit.probs(view)
            u = torch.rand(probs.shape, generator=generator, device=probs.device,
                           dtype=probs.dtype)
            sel = (u < probs) & cand
            lp_sel = _bernoulli_lp(probs, sel, cand)
        else:
            keys = self._keys(view, draws)
            count, ranked = self.count_ranked(view, keys)
            above, tied, r = _boundary(keys, cand, count, ranked)
            sel, lp_sel = _pick(above, tied, r, self.random_ties, generator)
            branched = lp_sel < 0
            if self.draws_random:
                lp_sel = self._draw_selection_lp(sel, draws)
        return sel, draws, self.token_log_probs(sel, draws, lp_sel), branched

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """A value at every position, long ``[B, n]``: the argmax of the value law when it is
        deterministic, else a draw from it."""
        if self.rule.values.deterministic:
            return self.values_lp.argmax(-1)
        return gumbel_argmax(self.values_lp, generator)

    def token_log_probs(self, sel: torch.Tensor, draws: torch.Tensor,
                        lp_sel: torch.Tensor) -> torch.Tensor:
        """An outcome's log-probability spread over positions, ``[B, n]``: each committed
        value's log-probability under the value law at ``sel [B, n]`` (values ``draws [B, n]``),
        plus the selection's ``lp_sel [B]`` on the first committed position (the first candidate
        when nothing is committed); sums to log Pr[outcome]."""
        cand = self.view.candidates
        value_lp = self.values_lp.gather(-1, draws[..., None]).squeeze(-1)
        lp_tokens = torch.where(sel, value_lp, torch.zeros_like(value_lp))
        owner = torch.where(sel.any(-1), sel.long().argmax(-1), cand.long().argmax(-1))
        first = torch.nn.functional.one_hot(owner, sel.shape[-1]).bool() & cand.any(-1)[:, None]
        return lp_tokens + torch.where(first, lp_sel[:, None], torch.zeros_like(lp_tokens))

    # ------------------------------------------------------------------------------- log_prob
    def log_prob(self, sel: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """log Pr[the step commits exactly ``sel`` with ``values`` there], ``[B]``; 0 for rows
        with no candidate (the step does not happen), -inf for impossible outcomes."""
        view, rule = self.view, self.rule
        cand = view.candidates
        sel = sel & cand
        V = self.values_lp.shape[-1]
        values = values.clamp(0, V - 1)
        picked = self.values_lp.gather(-1, values[..., None]).squeeze(-1)
        lp = torch.where(sel, picked, torch.zeros_like(picked)).sum(-1)
        if rule.commit.stochastic:
            lp = lp + _bernoulli_lp(rule.commit.probs(view), sel, cand)
        elif self.draws_random:
            lp = lp + self._draw_selection_lp(sel, values)
        else:
            draws = self.values_lp.argmax(-1) if rule.score.uses_draws else None
            keys = self._keys(view, draws)
            lp = lp + _selection_lp(keys, cand, sel, self.count(view, keys), self.random_ties)
        return torch.where(cand.any(-1), lp, torch.zeros_like(lp))

    # ------------------------------------------------------------------------------- enumerate
    def enumerate(self, forced: torch.Tensor | None = None):
        """Every outcome with positive probability: ``(row [K], sel [K, n], values [K, n],
        lp [K])``, ``row`` the state each outcome comes from. With ``forced [B, n]`` only outcomes
        whose committed values agree with it (the replay of a given sequence)."""
        view, rule = self.view, self.rule
        cand = view.candidates
        V = self.values_lp.shape[-1]
        if rule.commit.stochastic:
            row, out, lp = option_product(self.outcome_factors(forced))
            return row, out < V, out, lp
        if self.draws_random:
            if forced is not None:
                raise ValueError("sample-then-choose steps are not replayed with forced values")
            row, draws, lp = option_product(torch.where(cand[..., None], self.values_lp,
                                                  first_only(self.values_lp)))
            sub = view.take_rows(row)
            keys = self._keys(sub, draws)
            above, tied, r = _boundary(keys, sub.candidates, *self.count_ranked(sub, keys))
            parent, sel, slp = _tie_subsets(above, tied, r, self.random_ties)
            return row[parent], sel, draws[parent], lp[parent] + slp
        draws = self.values_lp.argmax(-1) if rule.score.uses_draws else None
        keys = self._keys(view, draws)
        above, tied, r = _boundary(keys, cand, *self.count_ranked(view, keys))
        row, sel, lp = _tie_subsets(above, tied, r, self.random_ties)
        values_lp = self._all_value_options(forced)[row]
        parent, values, vlp = option_product(torch.where(sel[..., None], values_lp,
                                                   first_only(values_lp)))
        return row[parent], sel[parent], values, lp[parent] + vlp

    def outcome_factors(self, forced: torch.Tensor | None = None) -> torch.Tensor:
        """A stochastic commit rule's law, position by position (the positions are independent
        given the state): log-probabilities ``[B, n, V + 1]`` of committing each value (the first
        V) or staying as is (the last: masked, or visible and certain)."""
        view, rule = self.view, self.rule
        if not rule.commit.stochastic:
            raise ValueError(f"{rule.name}: only stochastic commit rules factorise over positions")
        cand = view.candidates
        B, n = cand.shape
        V = self.values_lp.shape[-1]
        zero = torch.zeros((), dtype=self.values_lp.dtype, device=cand.device)
        probs = torch.where(cand, rule.commit.probs(view), zero)
        opts = torch.empty(B, n, V + 1, dtype=self.values_lp.dtype, device=cand.device)
        opts[..., :V] = probs.log()[..., None] + self._all_value_options(forced)
        opts[..., V] = torch.log1p(-probs)
        return opts

    # ------------------------------------------------------------------------------- helpers
    def _all_value_options(self, forced) -> torch.Tensor:
        """log-probability ``[B, n, V]`` of each value, restricted to ``forced`` if given."""
        if forced is None:
            return self.values_lp
        V = self.values_lp.shape[-1]
        hot = torch.nn.functional.one_hot(forced.clamp(0, V - 1), V).bool()
        return self.values_lp.masked_fill(~hot, -math.inf)

    def _value_options(self, row, p) -> torch.Tensor:
        """log-probability ``[K, V]`` of each value at position ``p`` for states ``row``."""
        return self.values_lp[row, p]

    def _keys(self, view: Step, draws) -> torch.Tensor:
        """Rounded keys ``[B, n]``, -inf off the candidates (random scores: all equal)."""
        score = self.rule.score
        if score.random:
            keys = torch.zeros(view.candidates.shape, dtype=view.logp.dtype,
                               device=view.logp.device)
        else:
            keys = score(view, draws).to(view.logp.dtype)
        return round_keys(keys).masked_fill(~view.candidates, -math.inf)

    def count(self, view: Step, keys: torch.Tensor) -> torch.Tensor:
        """How many candidates the commit rule keeps, ``[B]`` (ranked in lowest-position order
        among ties)."""
        return self.count_ranked(view, keys)[0]

    def count_ranked(self, view: Step, keys: torch.Tensor):
        """:meth:`count` and the keys sorted in decreasing order, ``[B, n]`` (for
        :func:`_boundary`, which would sort them again)."""
        order = torch.sort(keys, dim=-1, descending=True, stable=True).indices
        ranked = keys.gather(-1, order)
        count = self.rule.commit.count(view, ranked, order)
        return torch.minimum(count, view.n_candidates), ranked

    def _draw_selection_lp(self, sel: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """log Pr[the selection is ``sel`` | ``values`` drawn at ``sel``], ``[B]``: the draws of
        the candidates left masked are summed out exactly."""
        commit = self.rule.commit
        if not commit.uses_scores:
            count = self.count(self.view, torch.zeros_like(self.view.logp[..., 0]))
            return self._fixed_count_lp(sel, values, count)
        if isinstance(commit, Threshold):
            return self._threshold_lp(sel, values, commit.tau)
        return self._enumerated_selection_lp(sel, values)

    def value_keys(self) -> torch.Tensor:
        """The key each value would have at each position, ``[B, n, V]`` (rounded to
        :data:`KEY_QUANTUM`), for scores that read the drawn value; computed once per step."""
        if self._value_keys is None:
            keys = self.rule.score.value_keys(self.view).to(self.view.logp.dtype)
            self._value_keys = round_keys(keys)
        return self._value_keys

    def _fixed_count_lp(self, sel, values, count) -> torch.Tensor:
        """A count known before the draws: every unselected candidate's key must lose to the
        weakest selected key w; among keys tied at w the ties rule picks."""
        cand = self.view.candidates
        n = cand.shape[-1]
        pos = torch.arange(n, device=cand.device)
        vkeys = self.value_keys()
        sel_keys = vkeys.gather(-1, values[..., None]).squeeze(-1)
        w = torch.where(sel, sel_keys, torch.full_like(sel_keys, math.inf)).amin(-1)
        prob = self.values_lp.exp()
        unsel = cand & ~sel
        below = (vkeys < w[:, None, None])
        equal = (vkeys == w[:, None, None])
        zero = torch.zeros_like(prob)
        if self.random_ties:
            log_a = torch.where(below, prob, zero).sum(-1).log()
            log_b = torch.where(equal, prob, zero).sum(-1).log()
            s = (sel & (sel_keys == w[:, None])).sum(-1)
            # poly[:, j]: log of the sum over the unselected candidates of the ways j of them tie
            # at w (the others below it); only columns some row leaves unselected enter, and
            # the degree stays at most the largest number of them
            degree = int(unsel.sum(-1).max()) if unsel.numel() else 0
            poly = torch.full((cand.shape[0], degree + 1), -math.inf, dtype=prob.dtype,
                              device=cand.device)
            poly[:, 0] = 0.0
            for p in unsel.any(0).nonzero().flatten().tolist():
                shifted = torch.cat([torch.full_like(poly[:, :1], -math.inf), poly[:, :-1]], -1)
                new = torch.logaddexp(poly + log_a[:, p:p + 1], shifted + log_b[:, p:p + 1])
                poly = torch.where(unsel[:, p:p + 1], new, poly)
            j = torch.arange(degree + 1, device=cand.device, dtype=prob.dtype)
            s = s.to(prob.dtype)[:, None]
            log_ways = torch.lgamma(s + j + 1) - torch.lgamma(s + 1) - torch.lgamma(j + 1)
            lp = torch.logsumexp(poly - log_ways, -1)
        else:
            weak = sel & (sel_keys == w[:, None])
            weakest_pos = torch.where(weak, pos, torch.full_like(pos, -1)).amax(-1)
            loses = below | (equal & (pos[None, :, None] > weakest_pos[:, None, None]))
            p_lose = torch.where(loses, prob, zero).sum(-1)
            lp = torch.where(unsel, p_lose.log(), torch.zeros_like(p_lose)).sum(-1)
        ok = sel.sum(-1) == count
        return torch.where(ok, lp, torch.full_like(lp, -math.inf))

    def _threshold_lp(self, sel, values, tau) -> torch.Tensor:
        """Threshold rule: either every selected key is >= tau and every other candidate draws a
        key < tau, or one candidate is selected (the best, below tau) as with a count of 1."""
        cand = self.view.candidates
        vkeys = self.value_keys()
        sel_keys = vkeys.gather(-1, values[..., None]).squeeze(-1)
        prob = self.values_lp.exp()
        all_above = sel.any(-1) & (~sel | (sel_keys >= tau)).all(-1)
        p_below = torch.where(vkeys < tau, prob, torch.zeros_like(prob)).sum(-1)
        lp_above = torch.where(cand & ~sel, p_below.log(), torch.zeros_like(p_below)).sum(-1)
        single = self._fixed_count_lp(sel, values, torch.ones_like(self.view.n_candidates))
        return torch.where(all_above, lp_above, torch.where(sel.sum(-1) == 1, single,
                                                            torch.full_like(single, -math.inf)))

    def _enumerated_selection_lp(self, sel, values) -> torch.Tensor:
        """Any count rule: enumerate the draws of the unselected candidates (exponential in their
        number; a :class:`~mdmprob.errors.BudgetError` past the budget)."""
        view = self.view
        cand = view.candidates
        B, n = cand.shape
        unsel = cand & ~sel
        size = (self.values_lp > -math.inf).sum(-1).clamp(min=1).to(torch.float64)
        total = torch.where(unsel, size.log(), torch.zeros_like(size)).sum(-1).exp().sum()
        if total > EXPANSION_BUDGET:
            raise BudgetError(
                f"{self.rule.name}: the probability of a sample-then-choose selection under this "
                f"count rule sums over {total:.3g} draws of the positions left masked, over the "
                f"budget of {EXPANSION_BUDGET}; use temperature=0, confidence='max_prob', or "
                "smaller blocks")
        row = torch.arange(B, device=cand.device)
        draws = values.clone()
        lp = torch.zeros(B, dtype=self.values_lp.dtype, device=cand.device)
        for p in range(n):
            if not unsel[:, p].any():
                continue
            opts = self._value_options(row, p)
            opts = torch.where(unsel[row, p][:, None], opts, first_only(opts))
            parent, choice, olp = _branch(opts)
            row, draws, lp = row[parent], draws[parent], lp[parent] + olp
            draws[:, p] = torch.where(unsel[row, p], choice, draws[:, p])
        sub = view.take_rows(row)
        keys = self._keys(sub, draws)
        lp = lp + _selection_lp(keys, sub.candidates, sel[row], self.count(sub, keys),
                                self.random_ties)
        return scatter_logsumexp(lp, row, B)


# ----------------------------------------------------------------------------------- kernels
def _boundary(keys, cand, count, ranked=None):
    """``(above, tied, r)``: candidates whose key beats the count-th largest (all kept), those
    equal to it, and how many of the tied ones the step keeps (``ranked``: the keys already
    sorted in decreasing order)."""
    if ranked is None:
        ranked = torch.sort(keys, dim=-1, descending=True).values
    kth = ranked.gather(-1, (count - 1).clamp(min=0)[:, None])
    some = (count > 0)[:, None]
    above = cand & (keys > kth) & some
    tied = cand & (keys == kth) & some
    return above, tied, count - above.sum(-1)


def _pick(above, tied, r, random_ties: bool, generator):
    """One selection: ``above`` plus ``r`` of ``tied`` (uniform subset or lowest positions), and
    its log-probability ``-log C(t, r)`` (0 for lowest positions)."""
    if random_ties:
        u = torch.rand(tied.shape, generator=generator, device=tied.device, dtype=torch.float64)
        u = torch.where(tied, u, torch.full_like(u, -1.0))
        order = torch.sort(u, dim=-1, descending=True).indices
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(
            order.shape[-1], device=order.device).expand_as(order))
        t = tied.sum(-1)
        lp = -log_comb(t, r)
    else:
        rank = tied.long().cumsum(-1) - 1
        lp = torch.zeros(tied.shape[0], dtype=torch.float64, device=tied.device)
    return above | (tied & (rank < r[:, None])), lp


def _selection_lp(keys, cand, sel, count, random_ties: bool) -> torch.Tensor:
    """log Pr[selection = ``sel``] given the keys, ``[B]`` (deterministic but for ties)."""
    above, tied, r = _boundary(keys, cand, count)
    ok = ((above & ~sel).sum(-1) == 0) & ((sel & ~(above | tied)).sum(-1) == 0) & \
        (sel.sum(-1) == count)
    if random_ties:
        lp = -log_comb(tied.sum(-1), r)
    else:
        lowest = tied & (tied.long().cumsum(-1) - 1 < r[:, None])
        ok = ok & ((sel & tied) == lowest).all(-1)
        lp = torch.zeros(keys.shape[0], dtype=torch.float64, device=keys.device)
    return torch.where(ok, lp, torch.full_like(lp, -math.inf)).to(keys.dtype)


def _tie_subsets(above, tied, r, random_ties: bool):
    """Every selection of one boundary: ``(row [K], sel [K, n], lp [K])``."""
    B, n = tied.shape
    device = tied.device
    row = torch.arange(B, device=device)
    t = tied.sum(-1)
    if not random_ties or ((r == 0) | (r == t)).all():  # no row has a choice to make
        lowest = tied & (tied.long().cumsum(-1) - 1 < r[:, None])
        return row, above | lowest, torch.zeros(B, dtype=torch.float64, device=device)
    tree = _Tree(B, device)
    taken = torch.zeros(B, dtype=torch.long, device=device)
    left = tied.long().flip(-1).cumsum(-1).flip(-1)  # tied positions at p or after
    for p in range(n):
        row = tree.row
        t = tied[row, p]
        if not t.any():
            continue
        need = r[row] - taken
        can_take = t & (need > 0)
        can_skip = ~t | (left[row, p] - 1 >= need)
        opts = torch.stack([torch.where(can_skip, 0.0, -math.inf),
                            torch.where(can_take, 0.0, -math.inf)], -1).to(torch.float64)
        parent, _ = tree.branch(p, opts)
        taken = taken[parent] + tree.last_choice
    took, _ = tree.columns(n, 0)
    row = tree.row
    return row, above[row] | (took == 1), -log_comb(tied.sum(-1)[row], r[row])


class _Tree:
    """A position-by-position expansion of outcomes. Each level records (parent, choice) and
    ``columns`` rebuilds the chosen values by walking the parents back, so no ``[K, n]`` tensor
    is copied per level. ``root`` is each outcome's starting outcome, ``row`` its state row."""

    def __init__(self, B: int, device):
        self.row = torch.arange(B, device=device)
        self.root = self.row
        self.levels: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.last_choice = None

    def branch(self, p: int, opts: torch.Tensor):
        """Expand every outcome into its options at position ``p``: ``(parent, lp)``."""
        parent, choice, lp = _branch(opts)
        self.levels.append((p, parent, choice))
        self.row, self.root = self.row[parent], self.root[parent]
        self.last_choice = choice
        return parent, lp

    def columns(self, n: int, fill: int):
        """``(chosen [K, n] (``fill`` where nothing was chosen), root [K])``."""
        K = self.row.shape[0]
        device = self.row.device
        cols = [None] * n
        idx = torch.arange(K, device=device)
        for p, parent, choice in reversed(self.levels):
            cols[p] = choice[idx]
            idx = parent[idx]
        filler = torch.full((K,), fill, dtype=torch.long, device=device)
        return torch.stack([filler if c is None else c for c in cols], -1), idx


def _branch(options_lp: torch.Tensor):
    """Expand K rows into their options with positive probability: ``(parent, choice, lp)``."""
    if options_lp.shape[0] * options_lp.shape[1] > EXPANSION_BUDGET * 4:
        raise EnumerationError(f"exact enumeration of one step reached {options_lp.shape[0]} outcomes "
                          f"x {options_lp.shape[1]} options; use Monte Carlo mode")
    parent, choice = (options_lp > -math.inf).nonzero(as_tuple=True)
    return parent, choice, options_lp[parent, choice]


def first_only(opts: torch.Tensor) -> torch.Tensor:
    """Options ``[..., C]`` of the same shape as ``opts`` with one certain option, index 0
    (log-probability 0, the others -inf): a position an expansion passes over."""
    out = torch.full_like(opts, -math.inf)
    out[..., 0] = 0.0
    return out


def option_product(options_lp: torch.Tensor):
    """Every combination of one option per position, per row: ``options_lp [B, n, C]`` ->
    ``(row [K], choice [K, n], lp [K])`` over the options with positive probability. The K
    outcomes are decoded from a mixed-radix counter (no intermediate expansions)."""
    B, n, C = options_lp.shape
    device = options_lp.device
    valid = options_lp > -math.inf
    counts = valid.sum(-1)  # [B, n]
    total = counts.prod(-1)  # [B]; 0 when some position has no option
    K = int(total.sum())
    if K > EXPANSION_BUDGET * 4:
        raise EnumerationError(f"exact enumeration of one step reached {K} outcomes; use Monte Carlo "
                          "mode")
    option = torch.sort((~valid).to(torch.int8), dim=-1, stable=True).indices  # valid first
    stride = torch.cat([counts.flip(-1).cumprod(-1).flip(-1)[:, 1:],
                        torch.ones(B, 1, dtype=counts.dtype, device=device)], -1)
    row = torch.repeat_interleave(torch.arange(B, device=device), total)
    offset = torch.cumsum(total, 0) - total
    j = torch.arange(K, device=device) - offset[row]
    digit = (j[:, None] // stride[row]) % counts[row].clamp(min=1)  # [K, n]
    cell = (row * n)[:, None] + torch.arange(n, device=device)  # flat (row, position)
    choice = option.reshape(-1).take(cell * C + digit)
    lp = options_lp.reshape(-1).take(cell * C + choice).sum(-1)
    return row, choice, lp


def _bernoulli_lp(probs, sel, cand) -> torch.Tensor:
    return torch.where(cand, torch.where(sel, probs.log(), torch.log1p(-probs)),
                       torch.zeros_like(probs)).sum(-1)


def log_comb(n: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``log C(n, k)`` elementwise, float64 (tensors of counts)."""
    n, k = n.to(torch.float64), k.to(torch.float64)
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def scatter_logsumexp(lp: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``out [size]`` with ``out[i] = logsumexp(lp[index == i])`` for ``lp [K]`` and long
    ``index [K]`` in ``0..size-1`` (-inf for empty groups)."""
    top = torch.full((size,), -math.inf, dtype=lp.dtype, device=lp.device)
    top = top.scatter_reduce(0, index, lp, reduce="amax")
    safe = torch.where(top > -math.inf, top, torch.zeros_like(top))
    total = torch.zeros_like(top).index_add_(0, index, (lp - safe[index]).exp())
    return torch.where(top > -math.inf, total.log() + safe, top)


__all__ = ["KEY_QUANTUM", "TIES", "SelectionStep", "first_only", "option_product",
           "round_keys", "scatter_logsumexp"]
