"""Interaction graphs and elimination orders: edges, orders, and induced widths."""

import functools

import brute
import networkx as nx
import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given
from networkx.algorithms.approximation import treewidth_min_fill_in
from pyro.ops.indexing import Vindex

from mdmprob import Structure, load_model
from mdmprob.graph import elimination_order, interaction_graph, shallow_elimination_order


@functools.cache
def model(name, **params):
    return load_model(name, **params)


def edges(g):
    return {frozenset(e) for e in g.edges}


def replayed_width(graph, order):
    """The induced width of ``order``, replayed on the networkx interaction graph."""
    g = nx.relabel_nodes(interaction_graph(graph), {n: i for i, n in enumerate(graph.names)})
    width = 0
    for v in order:
        nbrs = list(g.neighbors(v))
        width = max(width, len(nbrs))
        g.add_edges_from((a, b) for i, a in enumerate(nbrs) for b in nbrs[i + 1:])
        g.remove_node(v)
    return width


def test_interaction_graph_of_a_chain():
    # x_0 -> x_1 -> x_2 -> x_3
    s = model("markov_chain", length=4, vocab=3)
    g = interaction_graph(s.factor_graph)
    assert list(g.nodes) == ["x_0", "x_1", "x_2", "x_3"]
    assert edges(g) == {frozenset(("x_0", "x_1")), frozenset(("x_1", "x_2")),
                        frozenset(("x_2", "x_3"))}
    for i, name in enumerate(g.nodes):
        assert g.nodes[name] == {"card": 3, "kind": "token", "position": i}


def test_interaction_graph_moralises_and_marks_latents():
    # a -> c <- z, c -> b   (z latent, 3 states): the v-structure marries a and z
    t = torch.rand(2, 3, 2)
    t = t / t.sum(-1, keepdim=True)

    def m():
        a = pyro.sample("a", dist.Categorical(torch.tensor([0.5, 0.5])))
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.2, 0.3, 0.5])))
        c = pyro.sample("c", dist.Categorical(Vindex(t)[a, z]))
        pyro.sample("b", dist.Categorical(Vindex(torch.tensor([[0.9, 0.1], [0.1, 0.9]]))[c]))

    s = Structure(m, ["a", "b", "c"], vocab=2)
    g = interaction_graph(s.factor_graph)
    assert edges(g) == {frozenset(p) for p in [("a", "c"), ("z", "c"), ("a", "z"), ("c", "b")]}
    assert g.nodes["z"] == {"card": 3, "kind": "latent", "position": None}
    assert g.nodes["c"]["position"] == 2


def test_interaction_graph_of_factor_sites():
    # x00 - x01 / x10 - x11, columns coupled: pyro.factor sites are edges too
    g = interaction_graph(model("ising_grid", rows=2, cols=2).factor_graph)
    assert edges(g) == {frozenset(p) for p in [("x_0_0", "x_0_1"), ("x_1_0", "x_1_1"),
                                               ("x_0_0", "x_1_0"), ("x_0_1", "x_1_1")]}


def test_elimination_order_eliminates_everything_not_kept_once():
    s = model("block_hmm", n_blocks=3, block_size=4)
    graph = s.factor_graph
    order, _ = elimination_order(graph)
    assert sorted(order) == list(range(graph.n_variables))
    keep = {0, 5, graph.n_variables - 1}
    order, _ = elimination_order(graph, keep=keep)
    assert sorted(order) == sorted(set(range(graph.n_variables)) - keep)


def test_width_of_a_chain_counts_kept_variables():
    # x_0 -> x_1 -> x_2 -> x_3 -> x_4
    graph = model("markov_chain", length=5, vocab=2).factor_graph
    assert elimination_order(graph)[1] == 1
    # keeping both ends: their message joins them, a clique of 3
    assert elimination_order(graph, keep={0, 4})[1] == 2


def test_block_hmm_width_does_not_grow_with_the_number_of_blocks():
    # Z_1 -> Z_2 -> ... -> Z_k, each Z_n emitting a block of 8 bits with a parity
    widths = [elimination_order(model("block_hmm", n_blocks=k).factor_graph)[1]
              for k in (2, 4, 16)]
    assert widths[0] == widths[1] == widths[2], widths
    assert widths[0] <= 4


@pytest.mark.parametrize("cols", [2, 3, 4, 6])
def test_ising_grid_width_follows_the_short_side(cols):
    # 3 x cols grid, 4-neighbour: treewidth min(3, cols)
    _, width = elimination_order(model("ising_grid", rows=3, cols=cols).factor_graph)
    assert width <= 3 + 1
    assert width >= min(3, cols)  # no order beats the treewidth


CASES = [("markov_chain", dict(length=9, vocab=2)), ("block_hmm", dict(n_blocks=4)),
         ("parity_block", dict(k=8)), ("agreement", dict()), ("ising_grid", dict(rows=4, cols=5)),
         ("ising_grid", dict(rows=3, cols=8))]


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_width_no_worse_than_networkx_min_fill_in(name, params):
    graph = model(name, **params).factor_graph
    theirs, _ = treewidth_min_fill_in(interaction_graph(graph))
    order, ours = elimination_order(graph)
    assert ours <= theirs + 1, (ours, theirs)
    assert replayed_width(graph, order) == ours


@given(spec=brute.networks())
def test_width_no_worse_than_networkx_on_random_networks(spec):
    graph = brute.build_network(spec).factor_graph
    g = interaction_graph(graph)
    theirs = treewidth_min_fill_in(g)[0] if g.number_of_edges() else 0
    ours = elimination_order(graph)[1]
    assert ours <= theirs + 1
    # and never below the largest factor, which any elimination must hold at once
    assert ours >= max((len(f.variables) - 1 for f in graph.factors), default=0)
    assert replayed_width(graph, elimination_order(graph)[0]) == ours


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_shallow_order_keeps_the_min_fill_width(name, params):
    graph = model(name, **params).factor_graph
    order, width = shallow_elimination_order(graph)
    assert sorted(order) == list(range(graph.n_variables))
    assert width == elimination_order(graph)[1]
    assert replayed_width(graph, order) <= width


@given(spec=brute.networks())
def test_shallow_order_on_random_networks(spec):
    graph = brute.build_network(spec).factor_graph
    keep = {0} if graph.n_variables > 2 else set()
    order, width = shallow_elimination_order(graph, keep=keep)
    assert sorted(order) == sorted(set(range(graph.n_variables)) - keep)
    assert width == elimination_order(graph, keep=keep)[1]


def test_shallow_order_halves_a_chain_each_round():
    """The latent chain of a 64-block Block-HMM (cliques of three fit in its width): each round
    eliminates non-adjacent links, so the elimination tree is about log2(64) rounds deep above
    the blocks, where the min-fill order's is 64 deep."""
    # Z_1 -> Z_2 -> ... -> Z_64, each emitting a block of 8 bits with a parity
    graph = model("block_hmm", n_blocks=64).factor_graph
    order, width = shallow_elimination_order(graph)
    assert width == elimination_order(graph)[1]
    assert tree_height(graph, order) <= 2 * 6 + 16
    assert tree_height(graph, elimination_order(graph)[0]) >= 64


def tree_height(graph, order) -> int:
    """Height of the elimination tree of ``order``: a variable sits one above the highest
    variable whose elimination put a message on it (replayed on the networkx graph)."""
    g = nx.relabel_nodes(interaction_graph(graph), {n: i for i, n in enumerate(graph.names)})
    height = dict.fromkeys(g.nodes, 0)
    for v in order:
        nbrs = list(g.neighbors(v))
        for u in nbrs:
            height[u] = max(height[u], height[v] + 1)
        g.add_edges_from((a, b) for i, a in enumerate(nbrs) for b in nbrs[i + 1:])
        g.remove_node(v)
    return max(height.values())
