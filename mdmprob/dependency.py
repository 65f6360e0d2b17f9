"""Exact dependency analysis at a decoding state, in nats.

At a state (the visible tokens ``x_v``), the masked positions are dependent through the target
``p(x_masked | x_v)``. This module measures that dependence exactly with the engine:

* :func:`pairwise_cmi`: I(X_i; X_j | x_v) for every pair of masked positions, ``[B, n, n]``;
* :func:`conditional_tc`: the conditional total correlation of a candidate set S,
  reverse KL(prod_i p(x_i|x_v) ‖ p(x_S|x_v)) or forward KL(p(x_S|x_v) ‖ prod_i p(x_i|x_v));
* :func:`step_tc`: per decoder run, the TC dropped at each step (the set committed at that step,
  at the state before it). For a mean-field decoder whose set choice does not depend on the
  values it draws, KL(q‖p) = E_q[sum_t reverse TC(S_t | x_{<t})];
* :func:`exact_graph` and :func:`score_graph`: the exact dependency graph at a state (an edge
  where the pairwise CMI exceeds a threshold) and a user's or an attention-derived graph scored
  against it by edge precision and recall.

A state is ``tokens`` LongTensor ``[B, n]`` with ``visible`` BoolTensor ``[B, n]``; without
``visible``, a token equal to the mask id (``vocab``, as denoisers write it) or negative is
masked. ``positions`` is a set S of positions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import networkx as nx
import torch

from mdmprob import measures
from mdmprob.errors import MdmprobError

TC_DIRECTIONS = ("reverse", "forward")


class GraphScore(NamedTuple):
    """Edge counts and rates of a predicted graph against the exact one (undirected edges).

    ``precision`` = tp / (tp + fp) (1 when nothing is predicted), ``recall`` = tp / (tp + fn)
    (1 when there is nothing to find), ``f1`` their harmonic mean (0 when both are 0).
    """

    precision: float
    recall: float
    f1: float
    true_positive: int
    false_positive: int
    false_negative: int


def pairwise_cmi(source, tokens, visible=None) -> torch.Tensor:
    """I(X_i; X_j | x_visible) in nats for every pair of positions.

    ``tokens`` LongTensor ``[B, n]``, ``visible`` BoolTensor ``[B, n]``; returns ``[B, n, n]``.

    I(X_i; X_j | x_v) = sum_v p(x_i = v | x_v) KL(p(X_j | x_v, x_i = v) || p(X_j | x_v)): the
    conditionals given the evidence, and given the evidence with one more position clamped to
    each value, are all read from batched engine calls (n V clamped states per row, chunked), not
    one call per pair. A visible position is a constant given the evidence, so its row is 0;
    the diagonal is 0 (only pairs of distinct positions are dependencies). Symmetric.
    ``source`` is a Structure or an :class:`~mdmprob.exact.ExactEngine`.
    """
    engine = _engine_of(source)
    tokens, visible = _state(engine, tokens, visible)
    batch, n = tokens.shape
    vocab = engine.vocab
    out = torch.zeros(batch, n, n, dtype=engine.dtype, device=engine.device)
    chunk = max(1, _CLAMPED_PER_CALL // (n * vocab))
    for lo in range(0, batch, chunk):
        out[lo:lo + chunk] = _pairwise_cmi_rows(engine, tokens[lo:lo + chunk],
                                                visible[lo:lo + chunk])
    return out


_CLAMPED_PER_CALL = 4096  # clamped states per engine call in pairwise_cmi


def _pairwise_cmi_rows(engine, tokens, visible) -> torch.Tensor:
    """:func:`pairwise_cmi` of one chunk of rows."""
    batch, n = tokens.shape
    vocab = engine.vocab
    log_p = engine.conditionals(tokens, visible)                       # [b, n(j), V(w)]
    eye = torch.eye(n, dtype=torch.bool, device=tokens.device)[None, :, None, :]
    values = torch.arange(vocab, device=tokens.device)[None, None, :, None]
    clamped = torch.where(eye, values, tokens[:, None, None, :])       # [b, n(i), V(v), n]
    seen = (visible[:, None, None, :] | eye).expand(batch, n, vocab, n)
    cond = engine.conditionals(clamped.reshape(-1, n), seen.reshape(-1, n))
    cond = cond.reshape(batch, n, vocab, n, vocab)                     # log p(x_j=w | x_v, x_i=v)
    weight = log_p.exp()                                               # p(x_i = v | x_v)
    # rows with p(x_i = v | x_v) = 0 carry no weight; their clamped evidence is impossible
    valid = (cond > -math.inf) & (log_p > -math.inf)[:, :, :, None, None]
    gap = torch.where(valid, cond - log_p[:, None, None], cond.new_zeros(()))
    kl = (cond.exp() * gap).sum(-1)                                    # [b, i, v, j]
    mi = torch.einsum("biv,bivj->bij", weight, kl).clamp_min(0.0)
    mi = 0.5 * (mi + mi.transpose(1, 2))
    both = ~visible[:, :, None] & ~visible[:, None, :] & ~eye[:, :, 0, :]
    return torch.where(both, mi, mi.new_zeros(()))


def conditional_tc(source, tokens, visible, positions, direction: str = "reverse") -> torch.Tensor:
    """The conditional total correlation of the set S given the visible tokens.

    ``tokens`` LongTensor ``[B, n]``, ``visible`` BoolTensor ``[B, n]``; returns ``[B]`` nats.

    reverse: KL(prod_{i in S} p(x_i|x_v) ‖ p(x_S|x_v)) (Eq. 17; a mean-field commit's sampling
    risk), forward: KL(p(x_S|x_v) ‖ prod_{i in S} p(x_i|x_v)) (Eq. 15). ``positions`` is one set
    of positions for every row (a sequence of ints) or a bool ``[B, n]`` with one set per row;
    every position of S must be masked. A set of at most one position has TC 0. The reverse TC is
    +inf when the product of marginals puts mass where the joint has none.
    """
    if direction not in TC_DIRECTIONS:
        raise MdmprobError(f"direction={direction!r} must be one of {list(TC_DIRECTIONS)}")
    engine = _engine_of(source)
    tokens, visible = _state(engine, tokens, visible)
    sets = _sets(positions, tokens.shape, tokens.device)
    if (sets & visible).any():
        row = int((sets & visible).any(-1).nonzero()[0, 0])
        raise MdmprobError(
            f"positions {(sets[row] & visible[row]).nonzero().squeeze(-1).tolist()} of row {row} "
            "are visible; a candidate set holds masked positions only")
    measure = measures.reverse_tc if direction == "reverse" else measures.forward_tc
    out = torch.zeros(tokens.shape[0], dtype=engine.dtype, device=engine.device)
    groups, inverse = torch.unique(sets, dim=0, return_inverse=True)
    for g, members in enumerate(groups):
        chosen = tuple(members.nonzero().squeeze(-1).tolist())
        if len(chosen) < 2:
            continue
        rows = (inverse == g).nonzero().squeeze(-1)
        out[rows] = measure(engine.block_joint(tokens[rows], visible[rows], chosen), len(chosen))
    return out


def step_tc(source, result, initial=None, direction: str = "reverse") -> torch.Tensor:
    """The TC each step of a decoder run dropped: ``result`` a run of B sequences; returns
    ``[B, steps]`` nats.

    Step t committed the set S_t (``result.committed[t]``) at the state x_{<t} (the initial
    prompt and the tokens committed before t, read from ``result.tokens``); entry ``[b, t]`` is
    the conditional TC of S_t given x_{<t} (see :func:`conditional_tc`). The row sum is the
    run's total dropped dependence. A position committed twice (a run that remasks) raises.
    """
    engine = _engine_of(source)
    tokens = torch.as_tensor(result.tokens).to(engine.device)
    batch, n = tokens.shape
    if initial is None:
        seen = torch.zeros(batch, n, dtype=torch.bool, device=engine.device)
    else:
        start = torch.as_tensor(initial, device=engine.device)
        start = start.reshape(-1, n).expand(batch, n)
        seen = (start >= 0) & (start < engine.vocab)
    out = []
    for t, committed in enumerate(result.committed):
        committed = torch.as_tensor(committed, device=engine.device).bool()
        if (committed & seen).any():
            raise MdmprobError(
                f"step {t} commits positions that were already visible; step_tc reads runs that "
                "never remask (a decoder with a revoke rule or a corrector rewrites positions)")
        out.append(conditional_tc(engine, tokens, seen, committed, direction))
        seen = seen | committed
    if not out:
        return torch.zeros(batch, 0, dtype=engine.dtype, device=engine.device)
    return torch.stack(out, -1)


def exact_graph(source, tokens, visible=None, threshold: float = 1e-9) -> nx.Graph:
    """The exact dependency graph of one state (``tokens`` ``[1, n]`` or ``[n]``, ``visible``
    likewise): nodes the masked positions, an edge (i, j) where I(X_i; X_j | x_v) >
    ``threshold`` nats, with the CMI as its ``weight``."""
    engine = _engine_of(source)
    tokens, visible = _state(engine, tokens, visible)
    if tokens.shape[0] != 1:
        raise MdmprobError(f"exact_graph reads one state; got {tokens.shape[0]} rows (pass "
                           "tokens[b] for one of them)")
    cmi = pairwise_cmi(engine, tokens, visible)[0]
    graph = nx.Graph()
    graph.add_nodes_from((~visible[0]).nonzero().squeeze(-1).tolist())
    n = tokens.shape[1]
    graph.add_weighted_edges_from((i, j, float(cmi[i, j])) for i in range(n)
                                  for j in range(i + 1, n) if cmi[i, j] > threshold)
    return graph


def score_graph(predicted, exact: nx.Graph, n: int | None = None) -> GraphScore:
    """Edge precision and recall of ``predicted`` against ``exact`` (see :class:`GraphScore`).

    ``predicted``: a networkx graph over positions, or an adjacency ``[n, n]`` (bool, or weights
    where nonzero is an edge; symmetrised, diagonal ignored). Only edges between nodes of
    ``exact`` (the masked positions) count. ``n`` is the sequence length, checked against an
    adjacency's size (default: one past the largest node of ``exact``).
    """
    nodes = set(exact.nodes)
    if n is None:
        n = max(nodes, default=-1) + 1
    if isinstance(predicted, nx.Graph):
        outside = [v for v in predicted.nodes if not (isinstance(v, int) and 0 <= v < n)]
        if outside:
            raise MdmprobError(f"the predicted graph has nodes {outside[:5]} outside the "
                               f"positions 0..{n - 1}; label its nodes by position")
        edges = {frozenset(e) for e in predicted.edges if e[0] != e[1]}
    else:
        adjacency = torch.as_tensor(predicted)
        if adjacency.dim() != 2 or tuple(adjacency.shape) != (n, n):
            raise MdmprobError(f"the predicted adjacency has shape {tuple(adjacency.shape)}; it "
                               f"must be [n, n] = [{n}, {n}] (one row per position)")
        if torch.isnan(adjacency.to(torch.float64)).any():
            raise MdmprobError("the predicted adjacency contains NaN; threshold it to edges first")
        edge = adjacency != 0
        edge = edge | edge.T
        edges = {frozenset((i, j)) for i, j in edge.nonzero().tolist() if i < j}
    edges = {e for e in edges if e <= nodes}
    truth = {frozenset(e) for e in exact.edges}
    tp, fp, fn = len(edges & truth), len(edges - truth), len(truth - edges)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return GraphScore(precision, recall, f1, tp, fp, fn)


# ----------------------------------------------------------------------------------- helpers
def _engine_of(source):
    """The exact engine of a Structure (its own), or the engine itself."""
    if hasattr(source, "block_joint"):
        return source
    if hasattr(source, "engine") and callable(source.engine):
        return source.engine()
    raise MdmprobError(f"{source!r} is neither a Structure nor an ExactEngine; dependency "
                       "analysis needs the exact target (mdmprob.load_model(...))")


def _state(engine, tokens, visible):
    """Tokens ``[B, n]`` (0 where masked) and visibility ``[B, n]`` on the engine's device."""
    tokens = torch.as_tensor(tokens, device=engine.device).long()
    if tokens.dim() == 1:
        tokens = tokens[None]
    if visible is None:
        visible = (tokens >= 0) & (tokens < engine.vocab)
    visible = torch.as_tensor(visible, device=engine.device).bool()
    if visible.dim() == 1:
        visible = visible[None]
    if tokens.dim() != 2 or tokens.shape[-1] != engine.n or visible.shape != tokens.shape:
        raise MdmprobError(f"a state is tokens [B, n] with visible of the same shape, n = "
                           f"{engine.n}; got tokens {tuple(tokens.shape)}, visible "
                           f"{tuple(visible.shape)}")
    tokens = torch.where(visible, tokens, torch.zeros_like(tokens))
    tokens, visible = engine.check(tokens, visible)
    return tokens, visible


def _sets(positions, shape, device) -> torch.Tensor:
    """A bool ``[B, n]`` of candidate sets from one list of positions or per-row masks."""
    batch, n = shape
    if isinstance(positions, torch.Tensor) and positions.dtype == torch.bool:
        sets = positions.to(device)
        if sets.dim() == 1:
            sets = sets[None]
        if sets.dim() != 2 or sets.shape[-1] != n or sets.shape[0] not in (1, batch):
            raise MdmprobError(f"positions as a mask has shape {tuple(positions.shape)}; it must "
                               f"be [n] or [B, n] = [{batch}, {n}]")
        return sets.expand(batch, n)
    chosen = [int(p) for p in positions]
    if any(not 0 <= p < n for p in chosen) or len(set(chosen)) != len(chosen):
        raise MdmprobError(f"positions {chosen} must be distinct positions in 0..{n - 1}")
    sets = torch.zeros(batch, n, dtype=torch.bool, device=device)
    sets[:, chosen] = True
    return sets


__all__ = ["GraphScore", "TC_DIRECTIONS", "conditional_tc", "exact_graph", "pairwise_cmi",
           "score_graph", "step_tc"]
