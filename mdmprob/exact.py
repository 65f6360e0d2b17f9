"""The exact engine: variable elimination over a compiled factor graph, batched over sequences.

Every query takes ``tokens`` LongTensor ``[B, n]`` and ``visible`` BoolTensor ``[B, n]`` (the
shape convention of docs/concepts.md: B sequences, n positions, V values); visible tokens
enter as indicator log-potentials ``[B, n, V]``, so one compiled graph serves every mask
pattern in a batch. Elimination follows a min-fill order from :mod:`mdmprob.graph`, so
the cost is ``B * V^(width+1)`` per variable, never ``V^n``. The per-step kernel is a
log-space sum-product (max-product for the most likely completion) with Pyro's NaN-safe log.

All conditionals come from two passes of messages over the elimination tree, with steps of
equal shape stacked into one op (:mod:`mdmprob.messages`); ``method="autograd"`` keeps the first
implementation (one forward elimination plus its adjoint, the gradient of log Z with respect to
the evidence potentials) as the reference the tests compare against.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import lru_cache

import torch
from pyro.ops.special import safe_log

from mdmprob.checks import check_device, check_dtype, check_tokens, check_window_mask
from mdmprob.compile import FactorGraph
from mdmprob.errors import BudgetError, EnumerationError, EvidenceError, MdmprobError, StructureError
from mdmprob.graph import elimination_order, shallow_elimination_order
from mdmprob.sampling import gumbel_argmax

DEFAULT_BUDGET = 2**25  # elements of the largest intermediate table (256 MiB in float64)
METHODS = ("messages", "autograd")
_PROBE_BYTES = 2**28  # message tables below this size are allocated without asking for memory

_Term = tuple[tuple[int, ...], torch.Tensor]  # (variables, table [Bb, card...]) with Bb in {1, B}


@dataclass(frozen=True)
class _Plan:
    """A compiled elimination: per step, which terms to align (permutation, broadcast shape) onto
    the eliminated variable's clique, and which axis to reduce."""

    largest: int  # entries of the largest clique table, per sequence
    total: int  # entries of all clique tables together, per sequence
    steps: tuple  # (v, clique, ((term id, perm, shape), ...), axis, out vars)
    final: tuple  # (term id, vars) of the terms left over the kept variables


def _plan_body(plan: _Plan) -> dict:
    """A plan as the disk cache stores it: its steps as one flat integer tensor (a JSON list of
    a 4096-token plan takes longer to read back than the plan takes to build)."""
    flat: list[int] = []
    for v, clique, aligned, axis, out in plan.steps:
        flat += (v, axis, len(clique), *clique, len(out), *out, len(aligned))
        for i, perm, shape in aligned:
            flat += (i, len(perm), *perm, len(shape), *shape)
    return {"largest": plan.largest, "total": plan.total, "n_steps": len(plan.steps),
            "steps": torch.tensor(flat, dtype=torch.long), "final": plan.final}


def _plan_from_body(body: dict) -> _Plan:
    """A plan read back from the disk cache; a body of another layout raises (the caller then
    rebuilds the plan)."""
    flat, at, steps = body["steps"].tolist(), 0, []
    for _ in range(int(body["n_steps"])):  # inline slicing: a 4096-token plan has 7,680 steps
        v, axis, size = flat[at:at + 3]
        clique = tuple(flat[at + 3:at + 3 + size])
        at += 3 + size
        size = flat[at]
        out = tuple(flat[at + 1:at + 1 + size])
        at += 1 + size
        aligned = []
        for _ in range(flat[at]):
            i, size = flat[at + 1], flat[at + 2]
            perm = tuple(flat[at + 3:at + 3 + size])
            at += 3 + size
            size = flat[at]
            aligned.append((i, perm, tuple(flat[at + 1:at + 1 + size])))
            at += size
        at += 1
        steps.append((v, clique, tuple(aligned), axis, out))
    if at != len(flat):
        raise ValueError("a plan body of another layout")
    final = tuple((int(i), tuple(vs)) for i, vs in body["final"])
    return _Plan(int(body["largest"]), int(body["total"]), tuple(steps), final)


class ExactEngine:
    """Exact queries on one factor graph.

    Args:
        graph: the compiled structure.
        device: where to compute (default from ``MDMPROB_DEVICE``; the CPU).
        dtype: the floating precision (default from ``MDMPROB_DTYPE``; float64).
        budget: largest intermediate table, in elements (batch included), before a
            :class:`~mdmprob.errors.BudgetError` is raised instead of allocating it.
        method: how :meth:`conditionals` and :meth:`log_prob_visible` are computed:
            ``"messages"`` (default; two passes of stacked messages) or ``"autograd"`` (the
            reference: one elimination and its gradient).
    """

    def __init__(self, graph: FactorGraph, device=None, dtype=None, budget: int = DEFAULT_BUDGET,
                 method: str = "messages"):
        self.graph = graph
        self.device, self.dtype = check_device(device), check_dtype(dtype)
        self.budget = int(budget)
        if method not in METHODS:
            raise MdmprobError(f"method={method!r} is not one of {list(METHODS)}")
        self.method = method
        self.n = graph.n_tokens
        self.vocab = graph.cards[0] if graph.n_tokens else 0
        #: each factor's log table with a leading broadcast batch axis, ``[1, card(v_1), ...]``
        self.tables = [f.table.to(self.device, self.dtype).unsqueeze(0) for f in graph.factors]
        #: ``plan(keep, latents_first, shallow=False, seen=None)``: the elimination plan, cached
        #: (keyed by visibility for MAP)
        self.plan = lru_cache(maxsize=256)(self._make_plan)
        self._trees: dict[bool, object] = {}

    # ------------------------------------------------------------------ queries
    def log_prob_visible(self, tokens, visible=None) -> torch.Tensor:
        """``log p(x_visible)`` per sequence.

        ``tokens`` LongTensor ``[B, n]``, ``visible`` BoolTensor ``[B, n]`` (None: all visible);
        returns ``[B]`` log-probabilities (``-inf`` for impossible evidence)."""
        tokens, visible = self.check(tokens, visible)
        with torch.no_grad():
            evidence = self.evidence(tokens, visible)
            if self.method == "messages":
                self.check_memory(tokens.shape[0])
                return self.message_tree().log_z(evidence) - self.log_normalizer
            return self._log_z(evidence) - self.log_normalizer

    @property
    def log_normalizer(self) -> float:
        """``log Z`` of the factor product (0 for a normalised Pyro model; not 0 once the model
        uses ``pyro.factor``). Every probability the engine returns is divided by it."""
        if not hasattr(self, "_log_norm"):
            empty = torch.zeros(1, self.n, dtype=torch.long, device=self.device)
            hidden = torch.zeros(1, self.n, dtype=torch.bool, device=self.device)
            with torch.no_grad():
                log_norm = self._log_z(self.evidence(empty, hidden)).item()
            if not math.isfinite(log_norm):
                raise StructureError(f"the model's factors have total mass exp({log_norm}); "
                                     "a structure must put positive, finite mass somewhere")
            self._log_norm = log_norm
        return self._log_norm

    def log_prob(self, tokens) -> torch.Tensor:
        """``log p(x)`` of complete sequences: ``tokens`` LongTensor ``[B, n]``; returns ``[B]``
        log-probabilities."""
        return self.log_prob_visible(tokens, None)

    def conditionals(self, tokens, visible=None) -> torch.Tensor:
        """``log p(x_i = v | x_visible)`` for every position at once.

        ``tokens`` LongTensor ``[B, n]``, ``visible`` BoolTensor ``[B, n]`` (None: all visible);
        returns ``[B, n, V]`` log-probabilities. Visible positions come back as their indicator
        (0 at the token, -inf elsewhere). Where the evidence itself is impossible
        (``p(x_visible) = 0``) the conditional is undefined; masked positions of such rows are
        returned uniform. A decoder that asks one window at a time carries messages from call
        to call with :meth:`incremental`.
        """
        tokens, visible = self.check(tokens, visible)
        if self.method == "messages":
            return self.full_pass(tokens, visible)[0]
        return self._conditionals_autograd(tokens, visible)

    def full_pass(self, tokens, visible, shallow: bool = True):
        """One collect and one distribute pass of :meth:`message_tree` (``shallow``) on checked
        ``tokens [B, n]`` / ``visible [B, n]``: ``(conditionals [B, n, V] as
        :meth:`conditionals`, evidence [B, n, V], up, down messages)``."""
        self.check_memory(tokens.shape[0], shallow)
        with torch.no_grad():
            evidence = self.evidence(tokens, visible)
            out, log_z, up, down = self.message_tree(shallow).conditionals(evidence)
        return self.undefined_rows(out, log_z == -math.inf, evidence, visible), evidence, up, down

    def incremental(self, full_fraction: float = 0.25):
        """A :class:`~mdmprob.messages.IncrementalConditionals` on this engine: conditionals of
        one window at a time whose cost follows the window, carrying messages between calls."""
        from mdmprob.messages import IncrementalConditionals

        return IncrementalConditionals(self, full_fraction=full_fraction)

    def _conditionals_autograd(self, tokens, visible) -> torch.Tensor:
        """The reference: conditionals as the gradient of log Z with respect to the evidence."""
        evidence = self.evidence(tokens, visible).requires_grad_(True)
        with torch.enable_grad():
            log_z = self._log_z(evidence)
            (grad,) = torch.autograd.grad(log_z.sum(), evidence)
        out = safe_log(grad.detach().clamp(min=0, max=1))
        out = out - torch.logsumexp(out, -1, keepdim=True).nan_to_num(nan=0.0, neginf=0.0)
        return self.undefined_rows(out, log_z.detach() == -math.inf, evidence.detach(), visible)

    def undefined_rows(self, out, impossible, evidence, visible) -> torch.Tensor:
        """``out [B, n, V]`` with the rows whose evidence is impossible (``impossible``, bool
        ``[B]``) replaced: the evidence indicator ``evidence [B, n, V]`` where ``visible [B, n]``,
        uniform where masked."""
        undefined = torch.where(visible[..., None], evidence,
                                out.new_full((), -math.log(self.vocab)))
        return torch.where(impossible[:, None, None], undefined, out)

    def message_tree(self, shallow: bool = True):
        """The stacked message tree (:class:`~mdmprob.messages.MessageTree`), built on first use
        and cached: on the shallow order for whole-sequence queries (few sequential groups), on
        the min-fill order for incremental ones (a window's messages stay local). Shared in the
        process by engines of one cached graph on one device and dtype (a tree is read-only once
        built)."""
        if shallow not in self._trees:
            from mdmprob import cache
            from mdmprob.messages import MessageTree

            graph_key = getattr(self.graph, "cache_key", None)
            key = None if graph_key is None else f"{graph_key}/{self.device}/{self.dtype}/{shallow}"
            tree = None if key is None else cache.remembered("tree", key)
            if tree is None:
                with cache.gc_paused():
                    tree = MessageTree(self, shallow=shallow)
                if key is not None:
                    cache.remember("tree", key, tree)
            self._trees[shallow] = tree
        return self._trees[shallow]

    def block_joint(self, tokens, visible, positions) -> torch.Tensor:
        """``log p(x_S | x_visible)`` of the set S = ``positions``.

        ``tokens`` LongTensor ``[B, n]``, ``visible`` BoolTensor ``[B, n]``, ``positions`` a
        sequence of |S| masked positions; returns ``[B] + [V] * |S|`` log-probabilities (event
        axes in the order of ``positions``). Raises
        :class:`~mdmprob.errors.EnumerationError` past the budget."""
        tokens, visible = self.check(tokens, visible)
        positions = self._check_positions(positions, visible)
        size = tokens.shape[0] * self.vocab ** len(positions)
        if size > self.budget:
            raise EnumerationError(
                f"the joint table over {len(positions)} positions for {tokens.shape[0]} sequences "
                f"has {size:.3g} entries, over the budget of {self.budget:.3g}; use the Monte Carlo "
                "estimators (mdmprob.measures.mc_*), fewer sequences per call, or a larger budget"
            )
        if tokens.shape[0] == 0:
            return torch.zeros((0,) + (self.vocab,) * len(positions), device=self.device,
                               dtype=self.dtype)
        with torch.no_grad():
            terms = self._eliminate(self.evidence(tokens, visible), keep=positions)
            table = _combine(terms, positions, tokens.shape[0], self.device, self.dtype)
            flat = table.reshape(table.shape[0], -1)
            log_z = torch.logsumexp(flat, -1, keepdim=True)
            flat = torch.where(log_z == -math.inf, flat.new_full((), -len(positions) *
                                                                   math.log(self.vocab)),
                               flat - log_z)
        return flat.reshape(table.shape)

    def sample(self, tokens, visible=None, generator: torch.Generator | None = None):
        """An exact sample of the masked tokens given the visible ones.

        ``tokens`` LongTensor ``[B, n]``, ``visible`` BoolTensor ``[B, n]`` (None: all visible);
        returns LongTensor ``[B, n]`` with the visible tokens unchanged. Rows with impossible
        evidence are sampled uniformly."""
        tokens, visible = self.check(tokens, visible)
        return self._backtrack(tokens, visible, generator=generator)

    def most_likely(self, tokens, visible=None, marginalize_latents: bool = True):
        """The most likely completion ``argmax_{x_masked} p(x_masked | x_visible)``.

        ``tokens`` LongTensor ``[B, n]``, ``visible`` BoolTensor ``[B, n]`` (None: all visible);
        returns LongTensor ``[B, n]`` with the visible tokens unchanged.

        With ``marginalize_latents=True`` (default) latents are summed out first: exact marginal
        MAP, whose cost can exceed the budget on long latent chains (a BudgetError says so). With
        False, the token part of the joint maximiser ``argmax_{x_masked, z} p(x_masked, z | .)``.
        """
        tokens, visible = self.check(tokens, visible)
        if not marginalize_latents or self.graph.n_variables == self.n or not len(tokens):
            return self._backtrack(tokens, visible, maximize=True,
                                   latents_first=marginalize_latents)
        # Plan per visibility pattern with the visible tokens conditioned on (sliced out of
        # their factors): latents then need not be summed out around them, which keeps the
        # tables small (a width-6 network needed 5e7 entries for two rows without this).
        patterns, inverse = torch.unique(visible, dim=0, return_inverse=True)
        out = torch.empty_like(tokens)
        for j, pattern in enumerate(patterns):
            rows = (inverse == j).nonzero().flatten()
            seen = tuple(pattern.nonzero().flatten().tolist())
            out[rows] = self._backtrack(tokens[rows], visible[rows], maximize=True,
                                        latents_first=True, seen=seen)
        return out

    # ------------------------------------------------------------------ input checks
    def check(self, tokens, visible):
        """Validate ``tokens`` LongTensor ``[B, n]`` (or ``[n]``: one sequence) and ``visible``
        BoolTensor ``[B, n]`` (or ``[n]``, shared by every row; None: all visible); returns both,
        ``[B, n]``, on the engine's device."""
        tokens = check_tokens(tokens, self.n, one_row=True, shape_hint=" for this structure")
        tokens = tokens.to(self.device, torch.long)
        if visible is None:
            visible = torch.ones_like(tokens, dtype=torch.bool)
        else:
            visible = torch.as_tensor(visible)
            if visible.dim() == 1:
                visible = visible.unsqueeze(0).expand(tokens.shape[0], -1)
            if visible.shape != tokens.shape:
                raise EvidenceError(
                    f"visible mask has shape {tuple(visible.shape)} but tokens have "
                    f"{tuple(tokens.shape)}; pass a bool mask of the same shape"
                )
            visible = visible.to(self.device, torch.bool)
        bad = visible & ((tokens < 0) | (tokens >= self.vocab))
        if bad.any():
            b, i = bad.nonzero()[0].tolist()
            raise EvidenceError(
                f"visible token {tokens[b, i].item()} at sequence {b}, position {i} is out of "
                f"range for vocab={self.vocab}; use 0..{self.vocab - 1} (mask the position instead)"
            )
        return tokens, visible

    def _conditioned_tables(self, tokens, seen) -> list[torch.Tensor]:
        """Factor tables with the ``seen`` tokens' axes sliced at each row's token: ``[B, ...]``
        over the factor's other variables (in order); untouched tables stay ``[1, ...]``."""
        seen, rows = set(seen), torch.arange(tokens.shape[0], device=self.device)
        out = []
        for f, t in zip(self.graph.factors, self.tables, strict=True):
            if seen.isdisjoint(f.variables):
                out.append(t)
                continue
            index = (rows,) + tuple(tokens[:, u] if u in seen else slice(None)
                                    for u in f.variables)
            out.append(t.expand(len(rows), *t.shape[1:])[index])
        return out

    def check_window(self, window, tokens) -> torch.Tensor:
        """``window`` as a bool tensor of the shape of ``tokens [B, n]`` on the engine's device;
        otherwise :class:`~mdmprob.errors.EvidenceError`."""
        return check_window_mask(window, tokens, self.device)

    def check_memory(self, batch: int, shallow: bool = True) -> None:
        """Refuse, before allocating, ``batch`` sequences whose largest elimination table is over
        the engine's budget (EnumerationError) or whose message tables cannot fit in the device's
        free memory (BudgetError); sized on the plan of the message tree that runs
        (:meth:`message_tree`, ``shallow``)."""
        plan = self.plan((), False, shallow)
        if plan.largest * batch > self.budget:
            raise EnumerationError(
                f"exact elimination needs a table of {plan.largest * batch:.3g} entries "
                f"({batch} sequences x {plan.largest:.3g}), over the budget of {self.budget:.3g}; "
                "use fewer sequences per call, the Monte Carlo estimators, or a larger budget")
        # the collect pass keeps each clique table, its inputs and a down message: ~4 copies
        need = 4 * plan.total * batch * torch.finfo(self.dtype).bits // 8
        if need < _PROBE_BYTES:  # not worth asking the system (a file read per call)
            return
        free = _free_memory(self.device)
        if free is not None and need > free:
            fits = max(1, free // max(1, need // max(batch, 1)))
            raise BudgetError(
                f"the exact conditionals of {batch} sequences need about {need / 2**30:.3g} GiB "
                f"of {self.device} memory and {free / 2**30:.3g} GiB are free; call with at most "
                f"about {fits} sequences at a time")

    def _check_positions(self, positions, visible) -> tuple[int, ...]:
        positions = tuple(int(p) for p in positions)
        if len(set(positions)) != len(positions) or any(not 0 <= p < self.n for p in positions):
            raise EvidenceError(f"positions {list(positions)} must be distinct, in 0..{self.n - 1}")
        if visible[:, list(positions)].any():
            raise EvidenceError(f"positions {list(positions)} must be masked to query their joint")
        return positions

    # ------------------------------------------------------------------ elimination
    def evidence(self, tokens, visible) -> torch.Tensor:
        """The evidence tables ``[B, n, V]`` of ``tokens [B, n]``: log 1 at the token where
        ``visible [B, n]``, -inf at the other values there, 0 everywhere at masked positions."""
        # a comparison, not one_hot: one_hot builds an int64 table first (5x slower on the CPU)
        onehot = tokens[..., None] == torch.arange(self.vocab, device=tokens.device)
        allowed = onehot | ~visible[..., None]
        return torch.zeros(allowed.shape, device=self.device, dtype=self.dtype).masked_fill(
            ~allowed, -math.inf)

    def _log_z(self, evidence) -> torch.Tensor:
        terms = self._eliminate(evidence, keep=())
        return _combine(terms, (), evidence.shape[0], self.device, self.dtype)

    def _make_plan(self, keep: tuple[int, ...], latents_first: bool, shallow: bool = False,
                   seen: tuple[int, ...] = ()) -> _Plan:
        """:meth:`_build_plan`, through the caches of :mod:`mdmprob.cache` (in the process and
        on disk) when the graph came from them (its ``cache_key``)."""
        args = (tuple(keep), bool(latents_first), bool(shallow), tuple(seen))
        if getattr(self.graph, "cache_key", None) is None or seen:
            # no key, or one of up to 2^n visibility patterns: not worth a file each
            return self._build_plan(*args)
        from mdmprob import cache
        from mdmprob import graph as graph_module

        parts = (self.graph.cache_key, cache.source_digest(sys.modules[__name__], graph_module),
                 args)
        plan, _ = cache.cached("plan", parts, lambda: self._build_plan(*args), _plan_body,
                               _plan_from_body)
        return plan

    def _build_plan(self, keep: tuple[int, ...], latents_first: bool, shallow: bool = False,
                    seen: tuple[int, ...] = ()) -> _Plan:
        """The elimination plan; ``seen`` tokens are conditioned on (their factors sliced), so
        they leave every factor and are eliminated alone."""
        graph = _without(self.graph, set(seen)) if seen else self.graph
        if shallow:
            order, _ = shallow_elimination_order(graph, keep=keep)
        elif latents_first:
            latents = range(self.n, graph.n_variables)
            first, _ = elimination_order(graph, keep=set(keep) | set(range(self.n)))
            rest, _ = _order_after(graph, first, keep)
            order = first + rest
            assert set(first) == set(latents)
        else:
            order, _ = elimination_order(graph, keep=keep)
        live = {i: tuple(f.variables) for i, f in enumerate(graph.factors)}
        live.update({len(self.graph.factors) + i: (i,) for i in range(self.n)})
        holding: dict[int, set[int]] = {}  # variable -> ids of the live tables over it
        for i, vs in live.items():
            for u in vs:
                holding.setdefault(u, set()).add(i)
        next_id = len(live)
        steps, largest, total = [], 1, 0
        for v in order:
            bucket = [(i, live[i]) for i in sorted(holding.pop(v, ()))]
            clique = tuple(sorted(set().union({v}, *(set(vs) for _, vs in bucket))))
            aligned = tuple((i, *_alignment(vs, clique, self.graph.cards)) for i, vs in bucket)
            for i, vs in bucket:
                del live[i]
                for u in vs:
                    if u != v:
                        holding[u].discard(i)
            out_vars = tuple(u for u in clique if u != v)
            live[next_id] = out_vars
            for u in out_vars:
                holding.setdefault(u, set()).add(next_id)
            next_id += 1
            steps.append((v, clique, aligned, 1 + clique.index(v), out_vars))
            size = math.prod(self.graph.cards[u] for u in clique)
            largest, total = max(largest, size), total + size
        final = tuple(live.items())
        return _Plan(largest, total, tuple(steps), final)

    def _eliminate(self, evidence, keep, *, maximize=False, latents_first=False, record=None,
                   seen=(), tables=None):
        plan = self.plan(tuple(keep), latents_first, False, seen)
        batch = evidence.shape[0]
        if plan.largest * batch > self.budget:
            raise EnumerationError(
                f"exact elimination needs a table of {plan.largest * batch:.3g} entries "
                f"({batch} sequences x {plan.largest:.3g}), over the budget of {self.budget:.3g}; "
                "use fewer sequences per call, the Monte Carlo estimators, or a larger budget"
            )
        # unbind: one gradient buffer per position instead of a full-size one per slice
        tables = list(self.tables if tables is None else tables) + list(evidence.unbind(1))
        for v, clique, aligned, axis, _ in plan.steps:
            table = None
            for i, perm, shape in aligned:
                t = tables[i]
                t = t.permute(perm).reshape((t.shape[0],) + shape)
                table = t if table is None else table + t
                tables[i] = None  # free it
            if table is None:  # a variable no factor mentions (e.g. a one-state latent)
                table = torch.zeros((1,) + tuple(self.graph.cards[u] for u in clique),
                                    device=self.device, dtype=self.dtype)
            if record is not None:
                record.append((v, clique, table))
            use_max = maximize and not (latents_first and v >= self.n)
            tables.append(table.amax(axis) if use_max else _logsumexp(table, axis))
        return [(vs, tables[i]) for i, vs in plan.final]

    def _backtrack(self, tokens, visible, generator=None, maximize=False, latents_first=False,
                   seen=()):
        record: list = []
        with torch.no_grad():
            evidence = self.evidence(tokens, visible)
            tables = self._conditioned_tables(tokens, seen) if seen else None
            self._eliminate(evidence, keep=(), maximize=maximize, latents_first=latents_first,
                            record=record, seen=seen, tables=tables)
            batch = tokens.shape[0]
            rows = torch.arange(batch, device=self.device)
            value: dict[int, torch.Tensor] = {}
            for v, clique, table in reversed(record):
                if maximize and latents_first and v >= self.n:
                    continue  # latents were summed out, not maximised
                table = table.expand(batch, *table.shape[1:])
                moved = table.movedim(1 + clique.index(v), -1)
                index = [rows] + [value[u] for u in clique if u != v]
                logits = moved[tuple(index)]
                if maximize:
                    value[v] = logits.argmax(-1)
                else:
                    value[v] = gumbel_argmax(logits, generator)
            out = torch.stack([value[i] for i in range(self.n)], dim=1)
        return torch.where(visible, tokens, out)


def _free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _without(graph: FactorGraph, seen: set[int]) -> FactorGraph:
    """The graph's scopes with the ``seen`` variables removed from every factor."""
    from mdmprob.compile import Factor

    reduced = FactorGraph(names=graph.names, cards=graph.cards, n_tokens=graph.n_tokens)
    reduced.factors = [Factor(tuple(u for u in f.variables if u not in seen), torch.zeros(()),
                              f.site) for f in graph.factors]
    return reduced


def _alignment(vars_: tuple[int, ...], clique: tuple[int, ...], cards) -> tuple[tuple, tuple]:
    """How to view a ``[Bb, card(v) for v in vars_]`` table on ``[Bb, card(u) for u in clique]``."""
    perm = (0,) + tuple(1 + vars_.index(u) for u in clique if u in vars_)
    shape = tuple(cards[u] if u in vars_ else 1 for u in clique)
    return perm, shape


def _order_after(graph: FactorGraph, first: list[int], keep) -> tuple[list[int], int]:
    """Elimination order of the tokens once the latents in ``first`` are summed out."""
    reduced = FactorGraph(names=graph.names, cards=graph.cards, n_tokens=graph.n_tokens)
    scopes = [set(f.variables) for f in graph.factors]
    for v in first:
        bucket = [s for s in scopes if v in s]
        scopes = [s for s in scopes if v not in s] + [set().union(*bucket) - {v}]
    from mdmprob.compile import Factor

    reduced.factors = [Factor(tuple(sorted(s)), torch.zeros(()), "") for s in scopes if s]
    order, width = elimination_order(reduced, keep=set(keep) | set(first))
    return order, width


def _combine(terms: list[_Term], variables, batch, device, dtype) -> torch.Tensor:
    """Sum log-tables, broadcast onto ``[batch] + [card(v) for v in variables]``."""
    variables = tuple(variables)
    out = None
    for vars_, t in terms:
        perm = [0] + [1 + vars_.index(u) for u in variables if u in vars_]
        shape = [t.shape[0]] + [t.shape[1 + vars_.index(u)] if u in vars_ else 1
                                for u in variables]
        aligned = t.permute(perm).reshape(shape)
        out = aligned if out is None else out + aligned
    if out is None:
        return torch.zeros((batch,) + (1,) * len(variables), device=device, dtype=dtype)
    return out.expand(batch, *out.shape[1:]) if out.shape[0] != batch else out


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp whose value and gradient stay finite-or-(-inf), never NaN, on all -inf slices."""
    if not x.requires_grad:
        return torch.logsumexp(x, dim)
    shift = x.detach().amax(dim, keepdim=True).clamp(min=torch.finfo(x.dtype).min)
    return safe_log((x - shift).exp().sum(dim)) + shift.squeeze(dim)
