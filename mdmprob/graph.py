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


def _fill(adj: dict[int, set[int]], v: int) -> int:
    nbrs = list(adj[v])
    return sum(1 for a, b in itertools.combinations(nbrs, 2) if b not in adj[a])
