"""Random Bayesian networks, compiled from Pyro, against pgmpy's variable elimination (an
independent exact engine): log p(evidence), single and pairwise posteriors, marginal MAP.

Each network: 7 nodes in topological order, each with up to 3 parents among the earlier ones,
2 or 3 states, random CPDs; 4 of the binary nodes are the tokens, the rest latents.
"""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

from mdmprob import Structure

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pgmpy_models = pytest.importorskip("pgmpy.models")
    pgmpy_cpd = pytest.importorskip("pgmpy.factors.discrete")
    pgmpy_inference = pytest.importorskip("pgmpy.inference")

ATOL = 1e-10
N_NODES, N_TOKENS = 7, 4


def random_network(seed: int):
    """(pyro model, token names, pgmpy network) of one random network."""
    g = torch.Generator().manual_seed(seed)
    cards = [2] * N_TOKENS + [int(c) for c in torch.randint(2, 4, (N_NODES - N_TOKENS,),
                                                            generator=g)]
    order = torch.randperm(N_NODES, generator=g).tolist()  # tokens anywhere in the DAG
    names = [f"v{i}" for i in range(N_NODES)]
    parents, cpts = {}, {}
    for k, node in enumerate(order):
        earlier = order[:k]
        n_par = min(len(earlier), int(torch.randint(0, 4, (), generator=g)))
        pick = torch.randperm(len(earlier), generator=g)[:n_par].tolist()
        parents[node] = [earlier[i] for i in sorted(pick)]
        shape = [cards[p] for p in parents[node]] + [cards[node]]
        w = torch.rand(shape, generator=g, dtype=torch.float64) ** 2 + 0.01
        cpts[node] = w / w.sum(-1, keepdim=True)

    def model():
        value = {}
        for node in order:
            index = tuple(value[p] for p in parents[node])
            probs = Vindex(cpts[node])[index] if index else cpts[node]
            value[node] = pyro.sample(names[node], dist.Categorical(probs))

    net = pgmpy_models.DiscreteBayesianNetwork()
    net.add_nodes_from(names)
    net.add_edges_from([(names[p], names[c]) for c in order for p in parents[c]])
    for node in order:
        ps = parents[node]
        table = cpts[node].reshape(-1, cards[node]).T.numpy()  # [card, prod(parent cards)]
        net.add_cpds(pgmpy_cpd.TabularCPD(names[node], cards[node], table,
                                          evidence=[names[p] for p in ps] or None,
                                          evidence_card=[cards[p] for p in ps] or None))
    net.check_model()
    return model, names[:N_TOKENS], net


@pytest.mark.parametrize("seed", range(12))
def test_random_network_agrees_with_pgmpy(seed, device):
    model, tokens, net = random_network(seed)
    s = Structure(model, tokens, vocab=2, name="random_network")
    engine = s.engine(device=device)
    ve = pgmpy_inference.VariableElimination(net)
    g = torch.Generator().manual_seed(100 + seed)
    for _ in range(3):
        x = torch.randint(0, 2, (1, N_TOKENS), generator=g)
        visible = torch.zeros(1, N_TOKENS, dtype=torch.bool)
        visible[0, torch.randperm(N_TOKENS, generator=g)[:2]] = True
        evidence = {tokens[i]: int(x[0, i]) for i in range(N_TOKENS) if visible[0, i]}
        hidden = [tokens[i] for i in range(N_TOKENS) if not visible[0, i]]

        p_e = ve.query(list(evidence), joint=True, show_progress=False)
        want = math.log(p_e.get_value(**evidence))
        assert engine.log_prob_visible(x, visible).item() == pytest.approx(want, abs=ATOL)

        conditionals = engine.conditionals(x, visible)[0].exp().cpu()
        for name in hidden:
            q = ve.query([name], evidence=evidence, show_progress=False)
            i = tokens.index(name)
            torch.testing.assert_close(conditionals[i], torch.as_tensor(q.values), atol=ATOL,
                                       rtol=0)

        q = ve.query(hidden, evidence=evidence, joint=True, show_progress=False)
        positions = [tokens.index(v) for v in q.variables]
        got = engine.block_joint(x, visible, positions)[0].exp().cpu()
        torch.testing.assert_close(got, torch.as_tensor(q.values), atol=ATOL, rtol=0)

        best = ve.map_query(hidden, evidence=evidence, show_progress=False)
        got = engine.most_likely(x, visible)[0].tolist()
        assert {v: got[tokens.index(v)] for v in hidden} == {v: int(best[v]) for v in hidden}
