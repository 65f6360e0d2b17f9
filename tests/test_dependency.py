"""Exact dependency analysis against brute force: pairwise CMI, conditional TC, per-step TC,
graph scores. Expected values come from explicit sums over the brute-force joint table."""

import itertools
import math

import brute
import networkx as nx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mdmprob import dependency, load_model
from mdmprob.decoders import get_decoder
from mdmprob.denoisers import Oracle
from mdmprob.errors import MdmprobError


# ----------------------------------------------------------------------------- naive reference
def _posterior(joint, tokens, visible):
    """p(x_masked | x_v) as a dict {assignment of masked positions (ascending): prob}."""
    n = joint.dim()
    masked = [i for i in range(n) if not visible[i]]
    post = brute.masked_posterior(joint, torch.tensor(tokens), torch.tensor(visible)).exp()
    return masked, {a: float(post[a]) for a in itertools.product(*(range(s) for s in post.shape))}


def _marginal(masked, post, subset):
    axes = [masked.index(p) for p in subset]
    out = {}
    for a, pr in post.items():
        key = tuple(a[k] for k in axes)
        out[key] = out.get(key, 0.0) + pr
    return out


def naive_cmi(joint, tokens, visible, i, j):
    masked, post = _posterior(joint, tokens, visible)
    pij, pi, pj = (_marginal(masked, post, s) for s in ((i, j), (i,), (j,)))
    return sum(p * math.log(p / (pi[(a,)] * pj[(b,)])) for (a, b), p in pij.items() if p > 0)


def naive_reverse_tc(joint, tokens, visible, subset):
    masked, post = _posterior(joint, tokens, visible)
    pS = _marginal(masked, post, subset)
    singles = [_marginal(masked, post, (s,)) for s in subset]
    total = 0.0
    for a, p in pS.items():
        q = math.prod(m[(v,)] for m, v in zip(singles, a, strict=True))
        if q > 0:
            total += math.inf if p == 0 else q * math.log(q / p)
    return total


def naive_forward_tc(joint, tokens, visible, subset):
    masked, post = _posterior(joint, tokens, visible)
    pS = _marginal(masked, post, subset)
    singles = [_marginal(masked, post, (s,)) for s in subset]
    return sum(p * math.log(p / math.prod(m[(v,)] for m, v in zip(singles, a, strict=True)))
               for a, p in pS.items() if p > 0)


def _possible_state(joint, seed):
    """A state whose evidence is possible: visible tokens of the most likely sequence."""
    g = torch.Generator().manual_seed(seed)
    n = joint.dim()
    best = torch.unravel_index(torch.argmax(joint), joint.shape)
    tokens = [int(b) for b in best]
    visible = (torch.rand(n, generator=g) < 0.4).tolist()
    if all(visible):
        visible[0] = False
    return tokens, visible


# ----------------------------------------------------------------------------- exact = brute
@given(spec=brute.networks(), seed=st.integers(0, 2**31 - 1))
def test_pairwise_cmi_matches_brute_force(spec, seed):
    structure = brute.build_network(spec)
    joint = brute.token_log_joint(structure)
    tokens, visible = _possible_state(joint, seed)
    cmi = dependency.pairwise_cmi(structure, torch.tensor([tokens]), torch.tensor([visible]))[0]
    n = structure.n_tokens
    for i in range(n):
        assert cmi[i, i].item() == 0.0
        for j in range(n):
            if i != j and not visible[i] and not visible[j]:
                assert cmi[i, j].item() == pytest.approx(naive_cmi(joint, tokens, visible, i, j),
                                                          abs=1e-9)
            elif i != j:
                assert cmi[i, j].item() == 0.0


@given(spec=brute.networks(), seed=st.integers(0, 2**31 - 1))
def test_conditional_tc_matches_brute_force(spec, seed):
    structure = brute.build_network(spec)
    joint = brute.token_log_joint(structure)
    tokens, visible = _possible_state(joint, seed)
    masked = [i for i, v in enumerate(visible) if not v]
    for r in range(1, len(masked) + 1):
        for subset in itertools.combinations(masked, r):
            rev = dependency.conditional_tc(structure, [tokens], [visible], subset).item()
            fwd = dependency.conditional_tc(structure, [tokens], [visible], subset,
                                            direction="forward").item()
            want = naive_reverse_tc(joint, tokens, visible, subset)
            if math.isinf(want):
                assert rev == math.inf
            else:
                assert rev == pytest.approx(want, abs=1e-9)
            assert fwd == pytest.approx(naive_forward_tc(joint, tokens, visible, subset), abs=1e-9)


def test_conditional_tc_per_row_sets_match_one_set_calls():
    structure = load_model("block_hmm", n_blocks=1, block_size=4)
    tokens = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    visible = torch.tensor([[True, False, False, False], [False, False, False, True],
                            [False] * 4])
    sets = torch.tensor([[False, True, True, True], [True, True, False, False],
                         [True, False, True, True]])
    both = dependency.conditional_tc(structure, tokens, visible, sets)
    for b in range(3):
        one = dependency.conditional_tc(structure, tokens[b], visible[b],
                                        sets[b].nonzero().squeeze(-1).tolist())
        assert both[b].item() == pytest.approx(one.item(), abs=1e-12)
    assert (both > 0).all()


# ----------------------------------------------------------------------------- per-step TC
def test_step_tc_expected_sum_is_the_decoders_kl():
    """A mean-field decoder whose commit sets depend only on the state: KL(q||p) equals the
    expected sum of the reverse conditional TCs of its committed sets (4 standard errors)."""
    structure = load_model("block_hmm", n_blocks=2, block_size=3)
    oracle = Oracle(structure)
    decoder = get_decoder("fast_dllm_threshold", tau=0.7, confidence="max_prob")
    joint = brute.token_log_joint(structure)
    log_q = decoder.distribution(oracle, blocks=structure.blocks)
    q = log_q.exp()
    exact_kl = (q * (log_q - joint)).where(q > 0, torch.zeros_like(q)).sum().item()
    run = decoder.run(oracle, 3000, seed=7, blocks=structure.blocks)
    totals = dependency.step_tc(structure, run).sum(-1)
    assert torch.isfinite(totals).all()
    mean, se = totals.mean().item(), totals.std().item() / math.sqrt(len(totals))
    assert exact_kl > 0.01
    assert abs(mean - exact_kl) < 4 * se


def test_step_tc_of_one_token_steps_is_zero_and_shapes():
    structure = load_model("block_hmm", n_blocks=2, block_size=2)
    run = get_decoder("sequential", order="l2r").run(Oracle(structure), 5, seed=0)
    out = dependency.step_tc(structure, run)
    assert out.shape == (5, 4)
    assert (out == 0).all()


def test_step_tc_rejects_runs_that_rewrite_positions():
    structure = load_model("block_hmm", n_blocks=1, block_size=2)
    run = get_decoder("sequential", order="l2r").run(Oracle(structure), 2, seed=0)
    run.committed = [run.committed[0], run.committed[0] | run.committed[1]]
    with pytest.raises(MdmprobError, match="already visible"):
        dependency.step_tc(structure, run)


# ----------------------------------------------------------------------------- graphs
def test_exact_graph_of_a_chain_and_scores():
    # x0 -> x1 -> x2 (a Markov chain): every pair is dependent given nothing, x0 and x2 are
    # independent given x1.
    structure = load_model("markov_chain", length=3, vocab=2, block_size=3)
    engine = structure.engine()
    full = dependency.exact_graph(engine, torch.full((3,), -1))
    assert set(map(frozenset, full.edges)) == {frozenset(e) for e in ((0, 1), (1, 2), (0, 2))}
    given_middle = dependency.exact_graph(engine, torch.tensor([-1, 0, -1]))
    assert set(given_middle.nodes) == {0, 2} and given_middle.number_of_edges() == 0

    chain = nx.path_graph(3)
    s = dependency.score_graph(chain, full)
    assert (s.true_positive, s.false_positive, s.false_negative) == (2, 0, 1)
    assert s.precision == 1.0 and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(0.8)
    adjacency = torch.tensor([[0.0, 0.3, 0.1], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    s = dependency.score_graph(adjacency, full)
    assert (s.true_positive, s.false_positive, s.false_negative) == (2, 0, 1)
    # an edge to a visible position does not count; nothing to find is full recall
    s = dependency.score_graph(chain, given_middle, n=3)
    assert (s.precision, s.recall, s.true_positive, s.false_positive) == (1.0, 1.0, 0, 0)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_a_typed_error():
    structure = load_model("markov_chain", length=3, vocab=2, block_size=3)
    full = dependency.exact_graph(structure, torch.full((3,), -1))
    with pytest.raises(MdmprobError, match=r"\[n, n\] = \[3, 3\]"):
        dependency.score_graph(torch.zeros(4, 4), full)
    with pytest.raises(MdmprobError, match="outside the positions"):
        dependency.score_graph(nx.path_graph(5), full)
    with pytest.raises(MdmprobError, match="visible"):
        dependency.conditional_tc(structure, [0, 1, 0], [True, True, False], [1, 2])
    with pytest.raises(MdmprobError, match="direction"):
        dependency.conditional_tc(structure, [0, 1, 0], None, [1, 2], direction="both")
    with pytest.raises(MdmprobError, match="distinct positions"):
        dependency.conditional_tc(structure, [-1, -1, -1], None, [1, 1])
    with pytest.raises(MdmprobError, match="n = 3"):
        dependency.pairwise_cmi(structure, torch.zeros(1, 4, dtype=torch.long),
                                torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(MdmprobError, match="one state"):
        dependency.exact_graph(structure, torch.full((2, 3), -1))
    with pytest.raises(MdmprobError, match="neither a Structure"):
        dependency.pairwise_cmi(object(), [0, 0, 0])
