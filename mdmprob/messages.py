"""Two-pass sum-product message passing over the exact engine's elimination tree.

The engine's elimination plan is a tree of steps: step ``s`` eliminates variable ``v_s`` over its
clique ``C_s`` and sends ``up_s``, a table over ``sep_s = C_s - {v_s}``, to the step that consumes
it, its parent ``p``. With ``inputs(s)`` the log-factors, evidence indicators and children's up
messages in the bucket of ``s`` (each aligned on ``C_s``):

    up_s(x_sep)      = logsumexp_{v_s} sum inputs(s)                                 (collect)
    down_c(x_sep_c)  = logsumexp_{C_p - sep_c} [sum inputs(p) without up_c + down_p]  (distribute)
    belief_s(x_C)    = sum inputs(s) + down_s = log p(x_C, x_visible) + const

so ``log p(x_i | x_visible)`` (nats) is the belief of the step eliminating token ``i`` summed onto
``x_i`` and normalised. Everything stays in log space (no autograd, no probabilities), so
conditionals far below the float range stay finite, and "without up_c" re-sums the other inputs
instead of subtracting (``-inf - -inf`` would be NaN).

:class:`MessageTree` runs the two passes with steps stacked: steps at the same height of the tree
with the same shape signature run as one batched op (a chain of equal blocks costs one op per
position of a block, not one per token), and groups whose subtree holds no evidence are
contracted once per structure. :class:`IncrementalConditionals` keeps the messages of the last
call and recomputes only those whose side of the tree saw a changed token, so a decoder that
asks one window at a time pays for its window, not for the whole sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

Spec = tuple  # how a group gathers per-step tensors from stacked producer tensors, see _gather


class MessageTree:
    """The elimination plan of ``engine`` (``keep=()``) compiled into stacked message groups.

    Args:
        engine: an :class:`~mdmprob.exact.ExactEngine`; its factor tables, device and dtype.
        shallow: eliminate on :func:`~mdmprob.graph.shallow_elimination_order` (few sequential
            groups) instead of the min-fill order.
    """

    def __init__(self, engine, shallow: bool = True):
        graph, plan = engine.graph, engine.plan((), False, shallow)
        self.n, self.vocab = engine.n, engine.vocab
        self.device, self.dtype = engine.device, engine.dtype
        n_factors = len(graph.factors)
        term_vars = {i: tuple(f.variables) for i, f in enumerate(graph.factors)}
        term_vars.update({n_factors + i: (i,) for i in range(self.n)})
        producer: dict[int, int] = {}  # term id of a message -> step that sends it
        self.steps: list[_Step] = []
        for k, (v, clique, aligned, axis, out_vars) in enumerate(plan.steps):
            term_vars[n_factors + self.n + k] = out_vars
            producer[n_factors + self.n + k] = k
            step = _Step(v=v, clique=clique, axis=axis - 1, out_vars=out_vars,
                         cards=tuple(graph.cards[u] for u in clique))
            static = None
            for i, perm, shape in aligned:
                if i < n_factors:
                    t = engine.tables[i][0].permute(_var_perm(perm)).reshape(shape + (1,))
                    static = t if static is None else static + t
                elif i < n_factors + self.n:
                    step.evidence.append((i - n_factors, shape))
                else:
                    present = tuple(u in term_vars[i] for u in clique)
                    reduce = tuple(j for j, p in enumerate(present) if not p)
                    step.children.append((producer[i], _var_perm(perm), shape, reduce))
            step.static = static
            self.steps.append(step)
        self.constant = 0.0  # factors over no variable at all (a constant pyro.factor)
        self.roots = []
        for i, _ in plan.final:
            if i in producer:
                self.roots.append(producer[i])
            elif i < n_factors:
                self.constant += float(engine.tables[i].sum())
        self.token_step = [-1] * self.n
        for k, step in enumerate(self.steps):
            for c, *_ in step.children:
                self.steps[c].parent = k
            if step.v < self.n:
                self.token_step[step.v] = k
        self.parent = [step.parent for step in self.steps]
        self.tin, self.tout = _dfs_numbers(self.steps, self.roots)
        self._group()

    # ------------------------------------------------------------------ the two passes
    def log_z(self, evidence: torch.Tensor) -> torch.Tensor:
        """``log sum_x prod factors * evidence`` per row, shape ``[B]``; ``evidence [B, n, V]``."""
        with torch.inference_mode():
            up, _ = self._collect(evidence, keep=False)
        return self._log_z(up, evidence.shape[0])

    def conditionals(self, evidence: torch.Tensor):
        """``(log p(x_i = v | evidence) [B, n, V], log Z [B], up, down)`` by one collect and one
        distribute pass; rows with ``log Z = -inf`` hold ``-inf`` (the caller decides).

        The passes run in inference mode (a fifth of a small call's time is autograd's view
        and version bookkeeping otherwise); what is returned to a caller is computed outside it,
        so it is an ordinary tensor (in-place updates and autograd work on it). The messages
        ``up`` and ``down`` are for reading only."""
        with torch.inference_mode():
            out, up, down = self._passes(evidence)
        return _normalise(out.permute(2, 0, 1)), self._log_z(up, evidence.shape[0]), up, down

    def _passes(self, evidence: torch.Tensor):
        batch = evidence.shape[0]
        up, tables = self._collect(evidence, keep=True)
        down: dict = {}
        out = evidence.new_full((self.n, self.vocab, batch), -math.inf)
        for gi in reversed(range(len(self.groups))):
            grp = self.groups[gi]
            base, kids, total = tables[gi]
            d = None if grp.down is None else _gather(grp.down, down).unsqueeze(1 + grp.axis)
            if grp.tokens is not None:
                marg = _logsumexp(total if d is None else total + d, grp.others)
                out.index_copy_(0, grp.tokens, marg.expand(-1, -1, batch))
            if not grp.children:
                continue
            outside = base if d is None else (d if base is None else base + d)
            for k, (_, _, _, reduce) in enumerate(grp.children):
                t = outside  # everything in the step but child k's own message
                for j, kid in enumerate(kids):
                    if j != k:
                        t = kid if t is None else t + kid
                if t is None:
                    t = evidence.new_zeros((len(grp.steps),) + grp.cards + (1,))
                down[(gi, k)] = _logsumexp(t, reduce)
        return out, up, down

    def _collect(self, evidence, keep):
        ev = evidence.permute(1, 2, 0)  # [n, V, B]: the batch last, where ops vectorise
        up: dict[int, torch.Tensor] = {}
        tables: dict[int, tuple] = {}
        for gi, grp in enumerate(self.groups):
            if not grp.batched and gi in self._static_up:
                up[gi] = self._static_up[gi]
                if keep:
                    tables[gi] = self._static_tables[gi]
                continue
            base, kids, total = self._inputs(grp, ev, up)
            up[gi] = _logsumexp(total, grp.eliminated)
            if keep:
                tables[gi] = (base, kids, total)
            if not grp.batched:  # evidence-free: the same for every query of this structure
                self._static_up[gi] = up[gi]
                self._static_tables[gi] = (base, kids, total)
        return up, tables

    def _inputs(self, grp, ev, up):
        size = len(grp.steps)
        base = grp.static
        for rows, shape in grp.evidence:
            t = _take(ev, rows)
            t = t.reshape((size,) + shape + (t.shape[-1],))
            base = t if base is None else base + t
        kids = []
        for spec, perm, shape, _ in grp.children:
            t = _gather(spec, up)
            t = t.permute(perm).reshape((size,) + shape + (t.shape[-1],))
            kids.append(t)
        total = base
        for t in kids:
            total = t if total is None else total + t
        if total is None:  # a variable no factor mentions (e.g. a one-state latent)
            total = ev.new_zeros((size,) + grp.cards + (1,))
        return base, kids, total

    def _log_z(self, up, batch) -> torch.Tensor:
        log_z = torch.full((batch,), self.constant, device=self.device, dtype=self.dtype)
        for gi in self.root_groups:
            log_z = log_z + up[gi].sum(0)
        return log_z

    # ------------------------------------------------------------------ grouping
    def _group(self) -> None:
        """Group steps by (height in the tree, shape signature); canonical input order inside."""
        level, batched = [], []
        for step in self.steps:  # plan order: children always come before their parent
            level.append(1 + max((level[c] for c, *_ in step.children), default=-1))
            batched.append(bool(step.evidence) or any(batched[c] for c, *_ in step.children))
        for step in self.steps:
            step.evidence.sort(key=lambda e: e[1])
            step.children.sort(key=lambda c: (c[1], c[2], c[3], batched[c[0]]))
        by_sig: dict[tuple, list[int]] = {}
        for k, step in enumerate(self.steps):
            sig = (level[k], step.cards, step.axis, step.v < self.n, batched[k],
                   None if step.static is None else tuple(step.static.shape),
                   tuple(s for _, s in step.evidence),
                   tuple((p, s, r, batched[c]) for c, p, s, r in step.children))
            by_sig.setdefault(sig, []).append(k)
        sigs = sorted(by_sig, key=lambda s: s[0])
        self.groups: list[_Group] = []
        self.where: list[tuple[int, int]] = [(-1, -1)] * len(self.steps)  # step -> (group, row)
        for gi, sig in enumerate(sigs):
            for row, k in enumerate(by_sig[sig]):
                self.where[k] = (gi, row)
        sizes = {gi: len(by_sig[s]) for gi, s in enumerate(sigs)}
        dev = self.device
        for sig in sigs:
            members = by_sig[sig]
            first = self.steps[members[0]]
            grp = _Group(steps=members, cards=first.cards, axis=first.axis, batched=sig[4],
                         others=tuple(1 + j for j in range(len(first.cards)) if j != first.axis),
                         eliminated=(1 + first.axis,))
            if first.static is not None:
                grp.static = torch.stack([self.steps[k].static for k in members])
            for j, (_, shape) in enumerate(first.evidence):
                rows = _rows([self.steps[k].evidence[j][0] for k in members], self.n, dev)
                grp.evidence.append((rows, shape))
            for j, (_, perm, shape, reduce) in enumerate(first.children):
                pairs = [self.where[self.steps[k].children[j][0]] for k in members]
                stacked_perm = (0,) + tuple(1 + p for p in perm) + (1 + len(perm),)
                grp.children.append((_spec(pairs, sizes, dev), stacked_perm, shape,
                                     tuple(1 + r for r in reduce)))
            if first.v < self.n:
                grp.tokens = torch.tensor([self.steps[k].v for k in members], device=dev)
            if first.parent is not None:
                pairs = []
                for k in members:
                    step = self.steps[k]
                    pg, prow = self.where[step.parent]
                    slot = [c for c, *_ in self.steps[step.parent].children].index(k)
                    pairs.append(((pg, slot), prow))
                grp.down = _spec(pairs, {key: sizes[key[0]] for key, _ in pairs}, dev)
            self.groups.append(grp)
        self.root_groups = sorted({self.where[k][0] for k in self.roots})
        self._static_up: dict[int, torch.Tensor] = {}
        self._static_tables: dict[int, tuple] = {}


class IncrementalConditionals:
    """Conditionals that carry the messages of the previous call to the next.

    ``conditionals(tokens, visible, window)`` returns ``log p(x_i = v | x_visible)`` (nats,
    ``[B, n, V]``) at every position of ``window`` (``BoolTensor[B, n]``; a position asked by
    any row is computed for every row); other positions hold ``-log V``. ``window=None`` asks
    every position. An up message depends only on the evidence below its step and a down message
    only on the evidence outside it, so after the evidence changes at positions ``D`` only the up
    messages on the paths from ``D`` to the root and the down messages off their common path are
    stale; a call recomputes, on demand, the ones its window needs. Exact for any sequence of
    calls: the changed positions are found by comparing the evidence with the last call's, row by
    row (a different batch size, a window over ``full_fraction`` of the positions, or a graph of
    several components runs the stacked full pass instead). :meth:`update_at` answers the rows of
    given columns only, ``[B, w, V]``: then nothing of a call is the size of the sequence but
    that one comparison.

    Args:
        engine: the :class:`~mdmprob.exact.ExactEngine` to answer from.
        full_fraction: windows over this fraction of the positions use the full pass.
    """

    def __init__(self, engine, full_fraction: float = 0.25):
        self.engine = engine
        self.tree = engine.message_tree(shallow=False)
        self.full_fraction = float(full_fraction)
        self.recomputed = 0  # messages the last call computed (a full pass: every up and down)
        self._code: torch.Tensor | None = None  # the last call's evidence, [B, n]

    def conditionals(self, tokens, visible=None, window=None) -> torch.Tensor:
        """``log p(x_i = v | x_visible)`` on ``window``, ``[B, n, V]`` (see the class docstring);
        rows with impossible evidence follow :meth:`ExactEngine.conditionals`."""
        engine = self.engine
        tokens, visible = engine.check(tokens, visible)
        if window is not None:
            window = engine.check_window(window, tokens)
        return self.update(tokens, visible, window)

    def update(self, tokens: torch.Tensor, visible: torch.Tensor, window) -> torch.Tensor:
        """:meth:`conditionals` on checked inputs on the engine's device (tokens in ``0..V-1``
        where visible; any value where masked)."""
        tree = self.tree
        if window is None:  # every position: the shallow full pass; nothing worth carrying
            self._code = None
            self.recomputed = 2 * len(tree.steps)
            return self.engine.full_pass(tokens.masked_fill(~visible, 0), visible)[0]
        positions = window.any(0).nonzero().flatten()
        full, rows = self._answer(tokens.masked_fill(~visible, tree.vocab), positions)
        if full is not None:
            return full
        out = rows.new_full((tokens.shape[0], tree.n, tree.vocab), -math.log(tree.vocab))
        out[:, positions] = rows
        return out

    def update_at(self, code: torch.Tensor, columns: torch.Tensor,
                  need: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`update` answering only the rows at ``columns`` (``LongTensor[w]``): ``[B, w,
        V]``, so a call costs what its window costs, not the sequence. ``code [B, n]`` holds the
        visible tokens and ``V`` (the mask id) at masked positions: a denoiser's input, checked.
        ``need`` (bool ``[w]``) marks the columns to compute; the others hold ``-log V``."""
        asked = columns if need is None else columns[need]
        full, rows = self._answer(code, asked)
        if full is not None:
            return full[:, columns]
        if need is None:
            return rows
        out = rows.new_full((code.shape[0], len(columns), self.tree.vocab),
                            -math.log(self.tree.vocab))
        out[:, need] = rows
        return out

    def _answer(self, code, positions: torch.Tensor):
        """Bring the messages up to date with the evidence ``code`` (tokens, ``V`` where masked)
        and answer ``positions``: ``(full [B, n, V], None)`` after a full pass, else ``(None,
        rows [B, |positions|, V])``. The evidence is compared with the last call's as one
        ``[B, n]`` comparison; only the changed columns are re-read. The carried state is
        built and updated in inference mode (see :meth:`MessageTree.conditionals`); the
        answer is computed outside it."""
        engine, tree = self.engine, self.tree
        V = tree.vocab
        batch = code.shape[0]
        fresh = self._code is None or self._code.shape != code.shape
        if fresh or len(positions) > self.full_fraction * tree.n or len(tree.roots) != 1:
            out, evidence, up, down = engine.full_pass(code, code != V, shallow=False)
            with torch.inference_mode():
                self._reset(code, evidence, up, down)
            self.recomputed = 2 * len(tree.steps)
            return out, None
        self.recomputed = 0
        with torch.inference_mode():
            changed = (code != self._code).any(0).nonzero().flatten()
            if len(changed):
                now = code[:, changed]
                self._code[:, changed] = now  # our own copy: a caller may reuse its tensor
                fresh_ev = engine.evidence(now, now != V)
                self._ev.index_copy_(0, changed, fresh_ev.permute(1, 2, 0))
                self._invalidate([tree.token_step[i] for i in changed.tolist()])
        if not len(positions):
            return None, torch.zeros((batch, 0, V), device=code.device, dtype=engine.dtype)
        with torch.inference_mode():
            margs = []
            for i in positions.tolist():
                k = tree.token_step[i]
                step = tree.steps[k]
                others = tuple(j for j in range(len(step.cards)) if j != step.axis)
                margs.append(_logsumexp(self._belief(k), others).expand(-1, batch))
            marg = torch.stack(margs).permute(2, 0, 1)  # [B, |positions|, V]
            seen = self._ev[positions].permute(2, 0, 1)
        impossible = (marg == -math.inf).all(-1).any(-1)  # every belief sums to Z
        return None, engine.undefined_rows(_normalise(marg), impossible, seen,
                                            code[:, positions] != V)

    # ------------------------------------------------------------------ cache bookkeeping
    def _reset(self, code, evidence, up, down) -> None:
        self._code = code.clone()  # the evidence of the last call: tokens, V where masked
        self._ev = evidence.permute(1, 2, 0).contiguous()  # [n, V, B], updated in place
        self._up_full, self._down_full = up, down
        self._up_new: dict[int, torch.Tensor] = {}
        self._up_stale: set[int] = set()
        self._down_new: dict[int, torch.Tensor] = {}
        # a down message stays valid iff every position changed since it was computed lies
        # below its step: in DFS numbers, tin[k] <= min tin and tout[k] >= max tout of those
        self._full_span = (math.inf, -math.inf)  # (min tin, max tout) changed since the full pass

    def _invalidate(self, changed_steps) -> None:
        tree = self.tree
        parent = tree.parent
        for k in changed_steps:  # up messages above a changed token
            while k is not None:
                if k in self._up_stale and k not in self._up_new:
                    break  # everything above was already stale
                self._up_new.pop(k, None)
                self._up_stale.add(k)
                k = parent[k]
        lo = min(tree.tin[k] for k in changed_steps)
        hi = max(tree.tout[k] for k in changed_steps)
        self._full_span = (min(self._full_span[0], lo), max(self._full_span[1], hi))
        self._down_new = {k: d for k, d in self._down_new.items()
                          if tree.tin[k] <= lo and tree.tout[k] >= hi}

    def _up(self, k: int) -> torch.Tensor:
        """The up message of step ``k``, ``[Bb, *sep]``, recomputing stale ones (no recursion)."""
        todo = [k]
        while todo:
            s = todo[-1]
            if self._cached_up(s) is not None:
                todo.pop()
                continue
            missing = [c for c, *_ in self.tree.steps[s].children if self._cached_up(c) is None]
            if missing:
                todo.extend(missing)
                continue
            todo.pop()
            step = self.tree.steps[s]
            self._up_new[s] = _logsumexp(self._table(s), (step.axis,))
            self.recomputed += 1
        return self._cached_up(k)

    def _cached_up(self, k):
        if k in self._up_new:
            return self._up_new[k]
        if k in self._up_stale:
            return None
        gi, row = self.tree.where[k]
        return self._up_full[gi][row]

    def _down(self, k: int):
        """The down message into step ``k``, ``[B, *sep]`` (None at the root: log 1)."""
        steps = self.tree.steps
        path = []
        while steps[k].parent is not None and self._cached_down(k) is None:
            path.append(k)
            k = steps[k].parent
        d = None if steps[k].parent is None else self._cached_down(k)
        for c in reversed(path):  # from the valid one back down to the one asked for
            p = steps[c].parent
            t = self._base(p)
            if d is not None:
                t = t + d.unsqueeze(steps[p].axis)
            reduce = ()
            for c2, perm, shape, red in steps[p].children:
                if c2 == c:
                    reduce = red
                    continue
                t = t + _align(self._up(c2), perm, shape)
            d = _logsumexp(t, reduce)
            self._down_new[c] = d
            self.recomputed += 1
        return d

    def _cached_down(self, k):
        if k in self._down_new:
            return self._down_new[k]
        tree = self.tree
        lo, hi = self._full_span
        if tree.tin[k] > lo or tree.tout[k] < hi:
            return None
        p = tree.steps[k].parent
        slot = [c for c, *_ in tree.steps[p].children].index(k)
        gi, row = tree.where[p]
        return self._down_full[(gi, slot)][row]

    def _base(self, k: int) -> torch.Tensor:
        """Factors and evidence of step ``k`` on its clique, ``[Bb, *cards]``."""
        step = self.tree.steps[k]
        t = step.static
        for i, shape in step.evidence:
            e = self._ev[i]
            e = e.reshape(shape + (e.shape[-1],))
            t = e if t is None else t + e
        if t is None:
            t = self._ev.new_zeros(step.cards + (1,))
        return t

    def _table(self, k: int) -> torch.Tensor:
        t = self._base(k)
        for c, perm, shape, _ in self.tree.steps[k].children:
            t = t + _align(self._up(c), perm, shape)
        return t

    def _belief(self, k: int) -> torch.Tensor:
        t = self._table(k)
        d = self._down(k)
        return t if d is None else t + d.unsqueeze(self.tree.steps[k].axis)


# ---------------------------------------------------------------------- data and helpers
@dataclass
class _Step:
    v: int
    clique: tuple[int, ...]
    axis: int  # position of v in clique
    out_vars: tuple[int, ...]
    cards: tuple[int, ...]
    static: torch.Tensor | None = None  # sum of the step's factors on its clique, [*shape, 1]
    evidence: list = field(default_factory=list)  # (token, shape)
    children: list = field(default_factory=list)  # (step, perm, shape, reduce dims for down)
    parent: int | None = None


@dataclass
class _Group:
    steps: list[int]
    cards: tuple[int, ...]
    axis: int
    batched: bool  # some evidence below it
    static: torch.Tensor | None = None  # [G, *shape, 1]
    evidence: list = field(default_factory=list)  # (token rows (see _rows), shape)
    children: list = field(default_factory=list)  # (spec, stacked perm, shape, down's axes)
    tokens: torch.Tensor | None = None  # [G] when the eliminated variables are tokens
    others: tuple[int, ...] = ()  # the clique's axes but the eliminated one, in [G, *cards, B]
    eliminated: tuple[int, ...] = ()  # the eliminated axis, in [G, *cards, B]
    down: Spec | None = None  # where the down messages come from (None: roots)


def _dfs_numbers(steps, roots) -> tuple[list[int], list[int]]:
    """Entry and exit numbers of a depth-first walk: ``a`` is an ancestor-or-self of ``x`` iff
    ``tin[a] <= tin[x]`` and ``tout[x] <= tout[a]``."""
    tin, tout = [0] * len(steps), [0] * len(steps)
    clock = 0
    for root in roots:
        todo = [(root, False)]
        while todo:
            k, done = todo.pop()
            if done:
                tout[k] = clock
                clock += 1
                continue
            tin[k] = clock
            clock += 1
            todo.append((k, True))
            todo.extend((c, False) for c, *_ in steps[k].children)
    return tin, tout


def _spec(pairs, sizes, device) -> Spec:
    """How to gather rows ``pairs = [(producer key, row), ...]`` from stacked producers:
    ``(pieces, inverse)``, each piece ``(key, rows)`` (see :func:`_rows`), concatenated, then
    put in order by ``inverse`` (None: already in order)."""
    by_key: dict = {}  # producer key -> indices into pairs, in order of first appearance
    for j, (key, _) in enumerate(pairs):
        by_key.setdefault(key, []).append(j)
    pieces, order = [], []
    for key, at in by_key.items():
        pieces.append((key, _rows([pairs[j][1] for j in at], sizes[key], device)))
        order += at
    if order == list(range(len(order))):
        return tuple(pieces), None
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return tuple(pieces), inverse.to(device)


def _rows(rows: list[int], size: int, device):
    """Rows of a stacked tensor of ``size`` rows: None (all, in order), a slice (evenly spaced:
    a view, no copy) or an index tensor."""
    if rows == list(range(size)):
        return None
    step = rows[1] - rows[0] if len(rows) > 1 else 1
    if step > 0 and all(b - a == step for a, b in zip(rows, rows[1:], strict=False)):
        return slice(rows[0], rows[-1] + 1, step)
    return torch.tensor(rows, device=device)


def _take(t: torch.Tensor, rows) -> torch.Tensor:
    if rows is None:
        return t
    return t[rows] if isinstance(rows, slice) else t.index_select(0, rows)


def _gather(spec: Spec, store: dict) -> torch.Tensor:
    pieces, inverse = spec
    if len(pieces) == 1:
        key, rows = pieces[0]
        return _take(store[key], rows)
    parts = [_take(store[key], rows) for key, rows in pieces]
    # a message may be constant (size 1) along a variable where another is not: broadcast
    # (equal ranks, each axis 1 or its full size: the largest; torch.broadcast_shapes is slow)
    shape = tuple(max(sizes) for sizes in zip(*(p.shape[1:] for p in parts), strict=True))
    parts = [p.expand(p.shape[0], *shape) for p in parts]
    out = torch.cat(parts)
    return out if inverse is None else out.index_select(0, inverse)


def _align(t: torch.Tensor, perm, shape) -> torch.Tensor:
    """A per-step message ``[*sep, Bb]`` viewed on the consumer's clique ``[*shape, Bb]``."""
    return t.permute(perm + (len(perm),)).reshape(shape + (t.shape[-1],))


def _var_perm(perm) -> tuple[int, ...]:
    """The engine's ``(0, 1 + i, ...)`` permutation (batch first) without its batch axis."""
    return tuple(p - 1 for p in perm[1:])


_SMALL = 4096  # elements under which _logsumexp calls torch.logsumexp (per-op overhead wins)


def _logsumexp(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``log sum exp`` over ``dims`` (none: ``x``); all ``-inf`` slices give ``-inf``, not NaN.
    Fewer passes than :func:`torch.logsumexp` (which also guards against ``+inf``) on large
    tensors; on small ones, where each op's fixed cost dominates, that one op."""
    if not dims:
        return x
    if len(dims) == 1 and x.shape[dims[0]] == 2 and x.numel() <= _SMALL:  # the common case
        return torch.logaddexp(x.select(dims[0], 0), x.select(dims[0], 1))
    if x.numel() <= _SMALL:  # few elements: fewest ops; an axis of two states is one logaddexp
        rest = []
        for d in sorted(dims, reverse=True):  # from the last axis
            if x.shape[d] == 2:
                x = torch.logaddexp(x.select(d, 0), x.select(d, 1))
                rest = [r - 1 for r in rest]  # every kept one was above d
            else:
                rest.append(d)
        return torch.logsumexp(x, tuple(rest)) if rest else x
    shift = x.amax(dims, keepdim=True).nan_to_num(neginf=0.0)
    return (x - shift).exp().sum(dims).log() + shift.squeeze(dims)


def _normalise(log_p: torch.Tensor) -> torch.Tensor:
    """Normalise over the last axis; all ``-inf`` rows stay ``-inf`` (never NaN)."""
    norm = _logsumexp(log_p, (log_p.dim() - 1,)).unsqueeze(-1)
    return log_p - norm.nan_to_num(nan=0.0, neginf=0.0)
