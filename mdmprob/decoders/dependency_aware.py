"""Dependency-aware parallel selection: commit positions that do not depend on one another.

At each step a dependency graph over the masked candidates of the window is built from a
pluggable *source*, then

* **DAPD** (Dependency-Aware Parallel Decoding, arXiv 2603.12996): the candidates are ranked by
  confidence and a maximal independent set is taken greedily in that order (a candidate joins
  when it has no edge to one already chosen and its confidence is >= ``tau``; the most confident
  always joins);
* **DAWN** (Dependency-Aware fast inference, arXiv 2602.06953): *anchors* are the candidates
  whose confidence is >= ``tau_high`` (committed); a candidate with an edge to an anchor (it
  depends on a near-certain token) is committed at the relaxed threshold ``tau_relaxed``; then
  conflict-free scheduling adds, most confident first, every other candidate with confidence
  >= ``tau_low`` and no edge to a position already chosen; the most confident is committed when
  nothing else is.

Values are drawn independently at the chosen positions (the product of the marginals). The
graph and the selection are functions of the state, so a run's trajectory is a function of its
output and q(x) is exact (runs, replays and exact mode).

Choices where the papers leave a detail open (documented, not read from their code): the
confidence is the largest marginal probability; ties in confidence go to the lowest position
(keys rounded to 2^-32); DAWN's anchors are this step's high-confidence candidates (the state
keeps no record of past confidences), and its graph is the undirected (symmetrised) one.

Graph sources (:func:`graph_source`):

* ``"cmi"`` (:class:`CMIGraph`): an edge where the exact conditional mutual information
  I(X_i; X_j | x_visible) of the target structure exceeds ``threshold`` nats
  (:func:`mdmprob.dependency.pairwise_cmi`); the structure is the oracle denoiser's own, or
  given;
* ``"attention"`` (:class:`AttentionGraph`): an edge where the symmetrised attention between two
  positions exceeds ``threshold``; read from the denoiser's ``attention(tokens) -> [B, n, n]``
  (a hook any denoiser may implement), or from a Hugging Face model's attention weights;
* a callable ``graph(tokens [B, n], candidates [B, n]) -> [B, n, n] or [n, n]`` (bool or weights,
  nonzero = an edge), or a :class:`GraphSource`.
"""

from __future__ import annotations

import torch

from mdmprob.checks import check_number
from mdmprob.decoders.composed import DeterministicSelector, StepState
from mdmprob.decoders.step import round_keys
from mdmprob.errors import MdmprobError, unknown_name

GRAPHS = {
    "cmi": "exact pairwise conditional mutual information of the target structure (nats)",
    "attention": "the denoiser's attention between positions (its attention() hook, or a "
                 "Hugging Face model's attention weights)",
}


# ----------------------------------------------------------------------------------- sources
class GraphSource:
    """Builds the dependency graph at a state: ``adjacency(state) -> bool [B, n, n]``."""

    name = "graph"

    def adjacency(self, state: StepState) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class CMIGraph(GraphSource):
    """An edge (i, j) where I(X_i; X_j | x_visible) > ``threshold`` nats under ``structure``
    (None: the denoiser's own structure, e.g. an Oracle's)."""

    def __init__(self, threshold: float = 1e-3, structure=None):
        self.threshold = check_number("cmi threshold", threshold, 0)
        self.structure = structure
        self.name = f"cmi(>{threshold:g})"

    def adjacency(self, state):
        from mdmprob.dependency import pairwise_cmi

        structure = self.structure if self.structure is not None else \
            state.denoiser.structure
        if structure is None:
            raise MdmprobError(
                f"the cmi dependency graph needs the exact target, but the denoiser "
                f"{state.denoiser!r} is not built on a structure; pass "
                "graph=CMIGraph(threshold, structure=...) or decode with an Oracle")
        visible = state.tokens != state.denoiser.mask_id
        tokens = torch.where(visible, state.tokens, torch.zeros_like(state.tokens))
        return pairwise_cmi(structure, tokens, visible).to(state.tokens.device) > self.threshold


class AttentionGraph(GraphSource):
    """An edge where the symmetrised attention between two positions exceeds ``threshold``
    (see :func:`attention_of`)."""

    def __init__(self, threshold: float = 0.1):
        self.threshold = check_number("attention threshold", threshold, 0)
        self.name = f"attention(>{threshold:g})"

    def adjacency(self, state):
        att = check_adjacency(attention_of(state.denoiser.base, state.tokens),
                              state.tokens.shape, "the denoiser's attention", weights=True)
        att = (att + att.transpose(-1, -2)) / 2
        return att > self.threshold


class CallableGraph(GraphSource):
    """A user graph: ``fn(tokens [B, n], candidates [B, n])`` -> ``[B, n, n]`` or ``[n, n]``
    (bool, or weights where nonzero is an edge). It must be a function of the state."""

    def __init__(self, fn):
        self.fn, self.name = fn, getattr(fn, "__name__", "graph")

    def adjacency(self, state):
        out = self.fn(state.tokens, state.view.candidates)
        return check_adjacency(out, state.tokens.shape, f"graph {self.name}") != 0


def graph_source(graph, threshold: float | None = None) -> GraphSource:
    """The source named ``graph`` (``"cmi"``, ``"attention"``; ``threshold`` its edge
    threshold, None: its default), a callable, or a :class:`GraphSource` as is."""
    if isinstance(graph, GraphSource):
        return graph
    if isinstance(graph, str):
        if graph not in GRAPHS:
            raise unknown_name("dependency graph source", graph, GRAPHS)
        cls = CMIGraph if graph == "cmi" else AttentionGraph
        return cls() if threshold is None else cls(threshold)
    if callable(graph):
        return CallableGraph(graph)
    raise MdmprobError(f"graph={graph!r} must be 'cmi', 'attention', a callable "
                       "(tokens, candidates) -> [B, n, n], or a GraphSource")


def check_adjacency(adj, shape, what: str, weights: bool = False) -> torch.Tensor:
    """``adj`` as a ``[B, n, n]`` tensor for states of ``shape`` ``(B, n)`` (an ``[n, n]`` one
    is shared by every row); a wrong size or NaN raises naming ``what``."""
    B, n = shape
    adj = torch.as_tensor(adj)
    if adj.dim() == 2:
        adj = adj[None].expand(B, n, n) if tuple(adj.shape) == (n, n) else adj
    if adj.dim() != 3 or tuple(adj.shape) != (B, n, n):
        raise MdmprobError(f"{what} has shape {tuple(adj.shape)}; it must be [B, n, n] = "
                           f"[{B}, {n}, {n}] (or [n, n]): one row and column per position")
    if adj.dtype.is_floating_point and torch.isnan(adj).any():
        raise MdmprobError(f"{what} contains NaN; return edge weights or a bool adjacency")
    return adj.to(torch.float64) if weights else adj


def attention_of(denoiser, tokens: torch.Tensor) -> torch.Tensor:
    """Attention between the denoiser's positions at ``tokens [B, n]``, ``[B, n, n]``: the
    denoiser's own ``attention(tokens)`` hook, else (a Hugging Face model loaded with eager
    attention) the attention weights averaged over layers and heads."""
    hook = getattr(denoiser, "attention", None)
    if callable(hook):
        return hook(tokens)
    from mdmprob.denoisers.huggingface import HuggingFaceMLM

    if not isinstance(denoiser, HuggingFaceMLM):
        raise MdmprobError(
            f"the denoiser {denoiser!r} exposes no attention: implement attention(tokens) -> "
            "[B, n, n] on it, or use graph='cmi' (exact, for structures) or a callable graph")
    ids = denoiser.model_ids(tokens)
    with torch.no_grad():
        out = denoiser.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                             output_attentions=True)
    maps = getattr(out, "attentions", None)
    if not maps or maps[0] is None:
        raise MdmprobError(f"{denoiser!r} returned no attention weights; load the model with "
                           "attn_implementation='eager'")
    mean = torch.stack(list(maps)).mean(dim=(0, 2))  # [B, L, L]
    if denoiser.context is not None:
        where = torch.tensor(denoiser.positions, device=mean.device)
    else:
        where = torch.arange(denoiser.n_tokens, device=mean.device) + len(denoiser.prefix)
    return mean.index_select(1, where).index_select(2, where).to(denoiser.dtype)


# ----------------------------------------------------------------------------------- selectors
class _GraphSelector(DeterministicSelector):
    """Shared by DAPD and DAWN: the confidence keys and the graph over the candidates."""

    def __init__(self, graph: GraphSource):
        self.graph = graph

    def keys_and_graph(self, state):
        cand = state.view.candidates
        conf = state.view.logp.amax(-1).exp()
        conf = round_keys(conf)
        conf = conf.masked_fill(~cand, -1.0)
        adj = self.graph.adjacency(state).to(cand.device)
        eye = torch.eye(cand.shape[-1], dtype=torch.bool, device=cand.device)
        adj = (adj | adj.transpose(-1, -2)) & ~eye & cand[:, :, None] & cand[:, None, :]
        order = torch.sort(conf, dim=-1, descending=True, stable=True).indices
        return conf, adj, order

    @staticmethod
    def greedy(chosen, allowed, adj, order):
        """Add ``allowed`` candidates in ``order`` when they have no edge to a chosen one."""
        row = torch.arange(chosen.shape[0], device=chosen.device)
        chosen = chosen.clone()
        # walk ``order`` only as far as its last allowed position (one pass, not n)
        rank = torch.arange(order.shape[-1], device=order.device)
        last = torch.where(allowed.gather(-1, order), rank, -1).amax(-1) if allowed.numel() \
            else rank.new_full((0,), -1)
        for r in range(int(last.max()) + 1 if last.numel() else 0):
            p = order[:, r]
            blocked = (adj[row, p] & chosen).any(-1)
            chosen[row, p] = chosen[row, p] | (allowed[row, p] & ~blocked)
        return chosen

    @staticmethod
    def at_least_one(chosen, cand, order):
        top = torch.zeros_like(chosen).scatter_(1, order[:, :1], True) & cand
        return torch.where(chosen.any(-1, keepdim=True), chosen, top)


class IndependentSet(_GraphSelector):
    """DAPD: a greedy maximal independent set of the dependency graph in confidence order,
    among candidates with confidence >= ``tau`` (the most confident always)."""

    def __init__(self, graph: GraphSource, tau: float = 0.0):
        super().__init__(graph)
        self.tau = check_number("tau", tau, 0, 1)
        self.name = f"independent_set({graph.name}, tau={tau:g})"

    def select(self, state):
        cand = state.view.candidates
        conf, adj, order = self.keys_and_graph(state)
        allowed = cand & (conf >= self.tau)
        first = torch.zeros_like(cand).scatter_(1, order[:, :1], True) & cand
        return self.greedy(first, allowed, adj, order)


class AnchorRelaxed(_GraphSelector):
    """DAWN: anchors (confidence >= ``tau_high``), their dependents at ``tau_relaxed``, then a
    conflict-free greedy pass at ``tau_low``; at least the most confident."""

    def __init__(self, graph: GraphSource, tau_high: float = 0.9, tau_relaxed: float = 0.7,
                 tau_low: float = 0.5):
        self.tau_high = check_number("tau_high", tau_high, 0, 1)
        self.tau_relaxed = check_number("tau_relaxed", tau_relaxed, 0, 1)
        self.tau_low = check_number("tau_low", tau_low, 0, 1)
        if not tau_low <= tau_relaxed <= tau_high:
            raise MdmprobError(f"thresholds must satisfy tau_low <= tau_relaxed <= tau_high; "
                               f"got {tau_low}, {tau_relaxed}, {tau_high}")
        super().__init__(graph)
        self.name = f"anchor_relaxed({graph.name}, {tau_high:g}/{tau_relaxed:g}/{tau_low:g})"

    def select(self, state):
        cand = state.view.candidates
        conf, adj, order = self.keys_and_graph(state)
        anchors = cand & (conf >= self.tau_high)
        induced = cand & (adj & anchors[:, None, :]).any(-1) & (conf >= self.tau_relaxed)
        chosen = self.at_least_one(anchors | induced, cand, order)
        return self.greedy(chosen, cand & (conf >= self.tau_low), adj, order)


__all__ = ["AnchorRelaxed", "AttentionGraph", "CMIGraph", "CallableGraph", "GRAPHS",
           "GraphSource", "IndependentSet", "attention_of", "check_adjacency", "graph_source"]
