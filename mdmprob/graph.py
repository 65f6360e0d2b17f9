"""networkx views of a factor graph: the interaction (moral) graph and elimination orders."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable

import networkx as nx

from mdmprob.compile import FactorGraph


def interaction_graph(graph: FactorGraph) -> nx.Graph:
    """Undirected graph on variable names; an edge joins two variables sharing a factor.

    Node attributes: ``card`` (cardinality), ``kind`` ("token" or "latent"), ``position``
    (sequence position of a token, else None).
    """
    g = nx.Graph()
    for i, (name, card) in enumerate(zip(graph.names, graph.cards, strict=True)):
        token = i < graph.n_tokens
        g.add_node(name, card=card, kind="token" if token else "latent",
                   position=i if token else None)
    for f in graph.factors:
        for a, b in itertools.combinations(f.variables, 2):
            g.add_edge(graph.names[a], graph.names[b])
    return g


def elimination_order(graph: FactorGraph, keep: Iterable[int] = ()) -> tuple[list[int], int]:
    """A greedy min-fill elimination order of every variable not in ``keep``.

    Returns ``(order, width)`` where ``width`` is the induced width (largest clique minus one,
    counting kept variables) — the exponent that the cost of exact inference follows.
    """
    keep = set(keep)
    adj: dict[int, set[int]] = {v: set() for v in range(graph.n_variables)}
    for f in graph.factors:
        for a, b in itertools.combinations(set(f.variables), 2):
            adj[a].add(b)
            adj[b].add(a)
    width = max((len(set(f.variables)) - 1 for f in graph.factors), default=0)
    heap = [(_fill(adj, v), len(adj[v]), v) for v in adj if v not in keep]
    heapq.heapify(heap)
    order: list[int] = []
    eliminated: set[int] = set()
    while heap:
        fill, deg, v = heapq.heappop(heap)
        if v in eliminated:
            continue
        current = (_fill(adj, v), len(adj[v]))
        if current != (fill, deg):  # stale entry: re-queue with its current score
            heapq.heappush(heap, (*current, v))
            continue
        nbrs = adj.pop(v)
        width = max(width, len(nbrs))
        for a, b in itertools.combinations(nbrs, 2):
            adj[a].add(b)
            adj[b].add(a)
        touched = set(nbrs)
        for u in nbrs:
            adj[u].discard(v)
            touched |= adj[u]
        eliminated.add(v)
        order.append(v)
        for u in touched:
            if u not in keep and u not in eliminated:
                heapq.heappush(heap, (_fill(adj, u), len(adj[u]), u))
    return order, width


def shallow_elimination_order(graph: FactorGraph,
                              keep: Iterable[int] = ()) -> tuple[list[int], int]:
    """An elimination order of the same induced width as :func:`elimination_order` whose
    elimination tree is shallow: rounds of pairwise non-adjacent variables whose clique stays
    within that width are eliminated together (a chain of N links in about log2 N rounds).

    Steps of one round do not depend on each other, so an engine can stack them into one op.
    Falls back to the min-fill order when no variable fits in the width (never wider).
    Returns ``(order, width)``.
    """
    order, width = elimination_order(graph, keep)
    adj: dict[int, set[int]] = {v: set() for v in range(graph.n_variables)}
    for f in graph.factors:
        for a, b in itertools.combinations(set(f.variables), 2):
            adj[a].add(b)
            adj[b].add(a)
    remaining = set(order)
    shallow: list[int] = []
    while remaining:
        fits = sorted((_fill(adj, v), len(adj[v]), v) for v in remaining if len(adj[v]) <= width)
        chosen: list[int] = []
        blocked: set[int] = set()
        for _, _, v in fits:  # a greedy independent set, least fill first
            if v not in blocked:
                chosen.append(v)
                blocked |= adj[v] | {v}
        if not chosen:
            return order, width
        for v in chosen:
            nbrs = adj.pop(v)
            for a, b in itertools.combinations(nbrs, 2):
                adj[a].add(b)
                adj[b].add(a)
            for u in nbrs:
                adj[u].discard(v)
        shallow += chosen
        remaining -= set(chosen)
    return shallow, width


def _fill(adj: dict[int, set[int]], v: int) -> int:
    nbrs = list(adj[v])
    return sum(1 for a, b in itertools.combinations(nbrs, 2) if b not in adj[a])
