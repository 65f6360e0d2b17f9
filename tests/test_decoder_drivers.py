"""The three drivers (run, replay, tensor exact mode) against the naive reference implementation
(tests/naive_decoders.py: the original dict-and-.item() enumeration and its own run / replay),
with ties to the lowest position and plain softmax values: the laws the naive code defines."""

import math
import sys
from pathlib import Path

import pytest
import torch

from mdmprob import load_model
from mdmprob.decoders import Decoder
from mdmprob.decoders.primitives import (
    SCORES,
    BernoulliSchedule,
    DrawConfidence,
    EntropyBudget,
    EvenSplit,
    FactorRule,
    MaxProb,
    NegEntropy,
    PerStep,
    RandomOrder,
    Threshold,
    WholeWindow,
)
from mdmprob.denoisers import Oracle, Perturbed, Table

sys.path.insert(0, str(Path(__file__).parent))
from naive_decoders import NaiveDecoder  # noqa: E402

# random Dirichlet conditionals (no two keys tie, so the tie rule cannot matter): n, V, blocks
DENOISERS = [(6, 2, [[0, 1, 2], [3, 4, 5]]), (4, 3, [[0, 1], [2, 3]]), (5, 2, [[3, 4], [0, 1, 2]])]

RULES = [  # (score, commit, window, temperature)
    (SCORES["l2r"](), WholeWindow(), "blocks", 1.0),
    (SCORES["entropy"](), PerStep(1), "all", 1.0),
    (SCORES["margin"](), PerStep(2), "all", 0.7),
    (MaxProb(), Threshold(0.6), "blocks", 1.0),
    (MaxProb(), FactorRule(1.0), "blocks", 0.0),
    (NegEntropy(), EntropyBudget(0.3), "all", 1.0),
    (DrawConfidence(), EvenSplit(3), "all", 1.0),
    (DrawConfidence(), EvenSplit(2), 2, 0.0),
    (RandomOrder(), EvenSplit(2), "all", 1.0),
    (RandomOrder(), BernoulliSchedule(3), "all", 1.0),
    (RandomOrder(), PerStep(1), 3, 0.5),
]


def _pair(rule):
    score, commit, window, t = rule
    name = f"{score.name}/{commit.name}/{window}/T={t}"
    new = Decoder(name, score, commit, window, t, ties="lowest_position")
    return new, NaiveDecoder(name, score, commit, window, t)


@pytest.mark.parametrize("n,V,blocks", DENOISERS)
@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r[0].name}-{r[1].name}-{r[2]}-{r[3]}")
def test_exact_mode_equals_the_naive_enumeration(n, V, blocks, rule):
    den = Table.random(n, V, seed=n * V, concentration=0.8)
    new, naive = _pair(rule)
    q_new = new.distribution(den, blocks=blocks)
    q_naive = naive.distribution(den, blocks=blocks)
    assert q_new.shape == q_naive.shape
    same_support = (q_new == -math.inf) == (q_naive == -math.inf)
    assert same_support.all()
    torch.testing.assert_close(q_new.exp(), q_naive.exp(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r[0].name}-{r[1].name}-{r[2]}-{r[3]}")
def test_replay_equals_the_naive_replay(rule):
    den = Table.random(6, 2, seed=4, concentration=0.8)
    blocks = [[0, 1, 2], [3, 4, 5]]
    new, naive = _pair(rule)
    run = new.run(den, 200, seed=3, blocks=blocks)
    ours = new.log_prob(den, run.tokens, committed=run.committed, blocks=blocks)
    theirs = naive.log_prob(den, run.tokens, committed=run.committed, blocks=blocks)
    if new.log_q_is_marginal:
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)
        torch.testing.assert_close(new.log_prob(den, run.tokens, blocks=blocks), theirs,
                                   atol=1e-10, rtol=0)
        torch.testing.assert_close(run.log_q, theirs, atol=1e-10, rtol=0)
    elif not isinstance(new.commit, Threshold | FactorRule | EntropyBudget):
        # the naive replay of sample-then-choose ignores that a score-dependent count also reads
        # the unselected draws; for fixed counts both are exact
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)
        torch.testing.assert_close(run.log_q, ours, atol=1e-10, rtol=0)


def test_run_frequencies_follow_the_exact_law_with_random_ties():
    # Block-HMM 2 x 3 with eta = 0: the three positions of a block are exchangeable, so entropy
    # keys tie; the uniform tie-break must give the enumerated law (chi-square style check)
    s = load_model("block_hmm", n_blocks=2, block_size=3, eta=0.0)
    o = Oracle(s)
    d = Decoder("entropy-k2", NegEntropy(), PerStep(2), "all", 1.0)
    q = d.distribution(o).reshape(-1).exp().cpu()
    run = d.run(o, 20000, seed=11)
    codes = (run.tokens.cpu() * 2 ** torch.arange(5, -1, -1)).sum(-1)
    freq = torch.bincount(codes, minlength=64).double() / 20000
    se = (q * (1 - q) / 20000).sqrt()
    assert ((freq - q).abs() <= 4 * se + 1e-12).all()
    # and the run's log q is the marginal q(x) (tie branches summed)
    torch.testing.assert_close(run.log_q.cpu(), q.log()[codes], atol=1e-10, rtol=0)


def test_bad_options_raise_typed_errors_naming_the_value():
    from mdmprob.decoders import fast_dllm_factor, fast_dllm_threshold, get_decoder, llada
    from mdmprob.errors import MdmprobError, UnknownNameError

    with pytest.raises(UnknownNameError, match="unknown llada parameter 'stepz'.*steps"):
        get_decoder("llada", stepz=3)
    with pytest.raises(UnknownNameError, match="'maxprob'.*max_prob"):
        fast_dllm_threshold(confidence="maxprob")
    with pytest.raises(UnknownNameError, match="'paper'"):
        fast_dllm_factor(variant="paper")
    with pytest.raises(UnknownNameError, match="'first'"):
        llada(ties="first")
    with pytest.raises(UnknownNameError, match="'block'"):
        llada(steps_per="block")
    with pytest.raises(UnknownNameError, match="'calls'"):
        llada(nfe="calls")
    with pytest.raises(MdmprobError, match="top_p=1.5"):
        llada(top_p=1.5)
    with pytest.raises(MdmprobError, match="top_p=0"):
        llada(top_p=0)
    with pytest.raises(MdmprobError, match="top_k=0"):
        llada(top_k=0)
    with pytest.raises(UnknownNameError, match="'greedy'"):
        Decoder("d", NegEntropy(), PerStep(1), "all", 1.0, top_p=0.5, nucleus="greedy")
    with pytest.raises(MdmprobError, match="nfe='reference'"):
        Decoder("d", NegEntropy(), PerStep(1), "all", 1.0, nfe="reference")
    den = Table.random(4, 2, seed=0)
    with pytest.raises(MdmprobError, match="window='blocks'.*not built on a structure"):
        Decoder("d", NegEntropy(), PerStep(1), "blocks", 1.0).run(den, 2)
    with pytest.raises(MdmprobError, match="steps=3 is the total over 2 blocks"):
        llada(3, block_length=2).distribution(den)
    with pytest.raises(MdmprobError, match=r"initial has shape \(3,\)"):
        llada(2).run(den, 2, initial=torch.tensor([0, 1, 2]))
    with pytest.raises(MdmprobError, match="differs from the prompt"):
        llada(2, temperature=0.0).log_prob(den, torch.tensor([[0, 0, 0, 0]]),
                                           initial=torch.tensor([1, 2, 2, 2]))


def test_blocks_are_never_lost():
    from mdmprob.decoders import mean_field_blocks

    s = load_model("block_hmm", n_blocks=2, block_size=3, eta=0.05)
    o = Oracle(s)
    pert = Perturbed(o, "temperature", 0.5)
    table = Table.from_denoiser(pert)
    assert pert.blocks == table.blocks == [list(b) for b in s.blocks]
    q_pert = mean_field_blocks().distribution(pert)
    torch.testing.assert_close(mean_field_blocks().distribution(table), q_pert)
    # decoding the whole sequence as one window is another decoder
    whole = Decoder("mf-all", SCORES["l2r"](), WholeWindow(), "all", 1.0).distribution(pert)
    assert (whole.exp() - q_pert.exp()).abs().max() > 1e-3


def test_an_impossible_number_of_sequences_is_refused_up_front(monkeypatch):
    """num = 10**9 sequences is a BudgetError naming the number and the fix, before any
    allocation; a small num under the same budget still decodes."""
    from mdmprob.decoders import llada
    from mdmprob.denoisers import Oracle
    from mdmprob.errors import BudgetError

    s = load_model("markov_chain", length=4, vocab=2)
    monkeypatch.setenv("MDMPROB_MEMORY_BUDGET", str(2**30))
    with pytest.raises(BudgetError, match=r"num=1000000000.*decode fewer sequences"):
        llada(steps=2).run(Oracle(s), 10**9)
    assert llada(steps=2).run(Oracle(s), 8).tokens.shape == (8, 4)


def test_a_runs_commits_read_as_dense_steps_and_replay():
    """The run's record keeps each step's window columns; read back, every step is a bool
    [B, n] tensor, the steps partition the masked positions, and a list of them replays."""
    from mdmprob.decoders import llada, verified_blocks
    from mdmprob.decoders.protocol import Commits

    s = load_model("block_hmm", n_blocks=3, block_size=3)
    o = Oracle(s)
    for decoder in (llada(6), verified_blocks()):
        run = decoder.run(o, 5, seed=1)
        assert isinstance(run.committed, Commits) and len(run.committed) == run.steps
        steps = list(run.committed)
        assert all(c.dtype == torch.bool and c.shape == (5, s.n_tokens) for c in steps)
        assert torch.equal(torch.stack(steps).sum(0), torch.ones(5, s.n_tokens, dtype=torch.long))
        assert torch.equal(run.committed[-1], steps[-1])
        assert all(torch.equal(a, b) for a, b in zip(run.committed[1:3], steps[1:3], strict=True))
        replay = decoder.log_prob(o, run.tokens, committed=steps)
        torch.testing.assert_close(replay, decoder.log_prob(o, run.tokens, committed=run.committed))
        marginal = decoder.log_q_is_marginal
        want = decoder.log_prob(o, run.tokens) if marginal else replay
        torch.testing.assert_close(run.log_q, want, atol=1e-10, rtol=0)
    with pytest.raises(IndexError):
        run.committed[len(run.committed)]


def test_a_run_whose_tie_branches_are_too_many_reports_trajectory_densities():
    """sequential(entropy) on the paper's Block-HMM: the eight blocks are alike, so equal
    entropies tie across them and log q(x) would sum over millions of branch states. The run
    returns its samples with each trajectory's log-probability, says so, and does it fast."""
    import warnings

    from mdmprob.decoders import sequential

    s = load_model("block_hmm")
    o = Oracle(s)
    decoder = sequential("entropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = decoder.run(o, 6, seed=0)
    assert not run.log_q_is_marginal
    assert any("trajectory log-probability" in str(w.message) for w in caught)
    replay = decoder.log_prob(o, run.tokens, committed=run.committed)
    torch.testing.assert_close(run.log_q, replay, atol=1e-10, rtol=0)
    # the same tokens under a deterministic tie-break: one branch, the run's log q is exact
    plain = sequential("entropy", ties="lowest_position").run(o, 6, seed=0)
    assert plain.log_q_is_marginal


def test_marginal_log_prob_splits_a_batch_over_the_state_limit():
    """Rows whose tie branches fit one at a time but not together are split, with the same
    answer; a single row over the limit names the ways out."""
    from mdmprob.decoders import sequential
    from mdmprob.decoders.drivers import marginal_log_prob
    from mdmprob.errors import EnumerationError

    s = load_model("block_hmm", n_blocks=2, block_size=3)
    o = Oracle(s)
    decoder = sequential("entropy")
    tokens = s.engine().sample(torch.zeros(16, s.n_tokens, dtype=torch.long),
                               torch.zeros(16, s.n_tokens, dtype=torch.bool),
                               generator=torch.Generator().manual_seed(2)).to(o.device)
    start = torch.full_like(tokens, o.mask_id)
    windows = decoder.windows(o, None)
    whole = marginal_log_prob(decoder, o, tokens, start, windows)
    one = max(  # the most live states one row needs at a level: found by shrinking the limit
        k for k in range(1, 200)
        if _fails(lambda k=k: marginal_log_prob(decoder, o, tokens[:1], start[:1], windows,
                                                max_states=k), EnumerationError))
    limit = 4 * (one + 1)
    assert _fails(lambda: marginal_log_prob(decoder, o, tokens, start, windows, max_states=limit,
                                            split=False), EnumerationError)  # together: over
    split = marginal_log_prob(decoder, o, tokens, start, windows, max_states=limit)
    torch.testing.assert_close(split, whole, atol=1e-12, rtol=0)
    with pytest.raises(EnumerationError, match="ties='lowest_position'"):
        marginal_log_prob(decoder, o, tokens[:1], start[:1], windows, max_states=one)


def _fails(fn, error) -> bool:
    try:
        fn()
    except error:
        return True
    return False
