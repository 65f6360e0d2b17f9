"""Decoders: exactness facts (Ideal Regime I, sample-then-choose bias, Lemma 4.1, verification),
the conformance suite over every preset and zoo model, and error paths."""

import itertools
import math

import pytest
import torch

from mdmprob import load_model, measures
from mdmprob.decoders import (
    PRESETS,
    Decoder,
    eb_sampler,
    fast_dllm_factor,
    fast_dllm_threshold,
    get_decoder,
    gibbs_remask,
    importance,
    llada,
    mdlm,
    mean_field_blocks,
    rejection,
    remdm,
    sequential,
    speculative,
    verified_blocks,
)
from mdmprob.denoisers import Oracle
from mdmprob.errors import BudgetError, MdmprobError, UnknownNameError

SMALL = [  # tiny zoo instances whose V^n sequences can be enumerated
    ("block_hmm", dict(n_blocks=2, block_size=3, eta=0.05)),  # z1 -> z2, each -> 3 bits
    ("parity_block", dict(k=4, eta=0.1)),  # y1 -> y2 -> y3 -> parity
    ("agreement", dict(delta=0.2, vocab=3)),  # x1 -> x2
    ("markov_chain", dict(length=4, vocab=3, block_size=2)),  # x1 -> x2 -> x3 -> x4
    ("ising_grid", dict(rows=2, cols=2, coupling=0.8)),  # 2x2 loop
]


def true_log_p(s):
    xs = torch.tensor(list(itertools.product(range(s.vocab), repeat=s.n_tokens)))
    return s.engine().log_prob(xs).reshape([s.vocab] * s.n_tokens)


@pytest.mark.parametrize("name,params", SMALL)
@pytest.mark.parametrize("order", ["l2r", "r2l", "random", "entropy", "max_prob", "margin",
                                   "hard_first", "oracle_entropy"])
def test_ideal_regime_one_token_per_step_is_exact(name, params, order):
    s = load_model(name, **params)
    o = Oracle(s)
    q = sequential(order).distribution(o, oracle=o)
    log_p = true_log_p(s)
    assert measures.kl(q=q, p=log_p, event_dims=s.n_tokens).item() < 1e-12
    assert measures.kl(p=log_p, q=q, event_dims=s.n_tokens).item() < 1e-12


def test_llada_low_confidence_is_biased_random_is_exact():
    s = load_model("markov_chain", length=4, vocab=3, block_size=4)
    o, log_p = Oracle(s), true_log_p(s)
    biased = llada(steps=4, remasking="low_confidence", temperature=1.0).distribution(o)
    exact = llada(steps=4, remasking="random", temperature=1.0).distribution(o)
    assert measures.kl(q=biased, p=log_p, event_dims=4).item() > 1e-3
    assert measures.kl(q=exact, p=log_p, event_dims=4).item() < 1e-12


def test_sample_then_choose_matches_monte_carlo():
    # the exact enumeration of LLaDA low_confidence agrees with its batched run (frequencies)
    s = load_model("agreement", delta=0.3, vocab=3)
    o = Oracle(s)
    d = llada(steps=2, remasking="low_confidence", temperature=1.0)
    q = d.distribution(o).reshape(-1).exp()
    run = d.run(o, 40000, seed=7)
    codes = run.tokens[:, 0] * 3 + run.tokens[:, 1]
    freq = torch.bincount(codes, minlength=9).double() / 40000
    se = (q * (1 - q) / 40000).sqrt()
    assert ((freq - q).abs() <= 4 * se + 1e-9).all()


@pytest.mark.parametrize("name,params", SMALL[:3])
def test_mean_field_exact_mode_matches_eq16_eq18(name, params):
    from mdmprob.blockwise import block_report

    s = load_model(name, **params)
    o, log_p = Oracle(s), true_log_p(s)
    q = mean_field_blocks().distribution(o)
    r = block_report(s)
    assert measures.kl(p=log_p, q=q, event_dims=s.n_tokens).item() == pytest.approx(
        r["kl_pq_mean_field"], abs=1e-10)
    assert measures.kl(q=q, p=log_p, event_dims=s.n_tokens).item() == pytest.approx(
        r["kl_qp_mean_field"], abs=1e-10)


@pytest.mark.parametrize("decoder", [verified_blocks(), rejection(), speculative()],
                         ids=lambda d: d.name)
def test_verified_decoders_are_exact_by_frequencies(decoder):
    s = load_model("parity_block", k=3, eta=0.05)
    o = Oracle(s)
    p = true_log_p(s).reshape(-1).exp()
    num = 30000
    run = decoder.run(o, num, seed=11)
    codes = (run.tokens * torch.tensor([4, 2, 1])).sum(-1)
    freq = torch.bincount(codes, minlength=8).double() / num
    se = (p * (1 - p) / num).sqrt()
    assert ((freq - p).abs() <= 4 * se + 1e-9).all()
    q = decoder.distribution(o)
    assert measures.kl(q=q, p=true_log_p(s), event_dims=3).item() < 1e-12


@pytest.mark.parametrize("eta", [0.0, 0.05])
def test_rejection_cost_equals_m_and_bounds_prop_5_1(eta):
    s = load_model("parity_block", k=4, eta=eta)
    run = rejection().run(Oracle(s), 20000, seed=5)
    proposals = torch.cat(run.diagnostics["proposals"]).double()
    m = math.exp(run.diagnostics["log_m"][0][0].item())
    assert m == pytest.approx(2 * (1 - eta), rel=1e-9)
    est = measures.mc_mean(proposals)
    assert abs(est.value - m) < 4 * est.se
    tc = run.diagnostics["forward_tc"][0][0].item()
    assert m >= math.exp(tc) - 1e-12


def test_lemma_4_1_rollout_identity_for_perturbed_and_table_denoisers():
    from mdmprob.denoisers import Perturbed, Table

    s = load_model("markov_chain", length=3, vocab=3, block_size=3)
    oracle = Oracle(s)
    denoisers = [Perturbed(oracle, "logit_noise", 0.7, seed=3), Table.random(3, 3, seed=2)]
    log_p = true_log_p(s)
    for den in denoisers:
        for order in ["l2r", "r2l", "entropy", "margin"]:
            d = sequential(order)
            q = d.distribution(den)
            lhs = measures.kl(q=q, p=log_p, event_dims=3).item()
            rhs = _rollout_local_kl(d, den, oracle)
            assert lhs == pytest.approx(rhs, abs=1e-12), (type(den).__name__, order)


def _rollout_local_kl(decoder, den, oracle):
    """sum_t E_{prefix ~ rollout}[KL(p_theta(.|h) || p(.|h))] by explicit recursion over prefixes,
    following the decoder's one-token-per-step choice."""
    mask = den.mask_id

    def go(state, weight):
        tokens = torch.tensor([state])
        if mask not in state:
            return 0.0
        logp, true = den(tokens), oracle(tokens)
        from mdmprob.decoders.primitives import Step

        cand = tokens == mask
        step = Step(logp, cand, torch.zeros(1, dtype=torch.long), cand.sum(-1))
        keys = decoder.score(step, logp.argmax(-1)).masked_fill(~cand, -math.inf)[0]
        best = keys.max()
        pos = min(i for i in range(len(state)) if cand[0, i] and keys[i] == best)
        local = measures.kl(q=logp[0, pos], p=true[0, pos]).item()
        total = weight * local
        for v in range(den.vocab):
            w = logp[0, pos, v].exp().item()
            if w > 0:
                new = list(state)
                new[pos] = v
                total += go(tuple(new), weight * w)
        return total

    return go(tuple([mask] * den.n_tokens), 1.0)


PRESET_INSTANCES = [
    mean_field_blocks(), verified_blocks(), sequential("l2r"), sequential("random"),
    sequential("entropy"), llada(steps=2), llada(steps=2, remasking="random"),
    llada(steps=3, temperature=0.0), fast_dllm_threshold(0.6), fast_dllm_factor(1.0),
    eb_sampler(0.2), mdlm(2), rejection(), speculative(), importance(particles=3),
    gibbs_remask(k=1, sweeps=2), gibbs_remask(k=2, sweeps=1, kernel="lowest_confidence"),
    remdm(steps=3, eta=0.1),
]


@pytest.mark.parametrize("name,params", SMALL)
@pytest.mark.parametrize("decoder", PRESET_INSTANCES, ids=lambda d: d.name)
def test_conformance_valid_tokens_and_log_q_replays(name, params, decoder):
    s = load_model(name, **params)
    o = Oracle(s)
    run = decoder.run(o, 64, seed=1, oracle=o)
    assert run.tokens.shape == (64, s.n_tokens)
    assert ((run.tokens >= 0) & (run.tokens < s.vocab)).all()
    assert (run.nfe >= 1).all() and run.steps >= 1
    assert torch.isfinite(run.log_q).all()
    replay = decoder.log_prob(o, run.tokens, committed=run.committed, oracle=o)
    if decoder.log_q_is_marginal:
        # the recorded trajectory is one of the tie-break branches that sum to q(x)
        assert (replay <= run.log_q + 1e-10).all()
    else:
        torch.testing.assert_close(run.log_q, replay, atol=1e-10, rtol=0)
    if decoder.log_q_is_marginal:
        q = decoder.distribution(o, oracle=o).reshape(-1)
    else:
        assert decoder.name.startswith("importance") or \
            decoder.distribution(o, oracle=o).exp().sum().item() == pytest.approx(1.0)
    if decoder.log_q_is_marginal:
        codes = (run.tokens * s.vocab ** torch.arange(s.n_tokens - 1, -1, -1)).sum(-1)
        torch.testing.assert_close(run.log_q, q[codes], atol=1e-10, rtol=0)
        torch.testing.assert_close(decoder.log_prob(o, run.tokens, oracle=o), run.log_q,
                                   atol=1e-10, rtol=0)


def test_same_seed_same_output_and_nfe_counts():
    s = load_model("block_hmm", n_blocks=2, block_size=3)
    o = Oracle(s)
    a, b = llada(steps=3).run(o, 16, seed=4), llada(steps=3).run(o, 16, seed=4)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.log_q, b.log_q)
    assert (a.nfe == 3).all()  # one window of 6 positions split over 3 steps
    semi_ar = llada(steps=6, block_length=3).run(o, 16, seed=4)
    assert (semi_ar.nfe == 6).all()  # two blocks of 3 positions, 6 steps in all: 3 per block
    per_block = llada(steps=3, block_length=3, steps_per="window").run(o, 16, seed=4)
    assert (per_block.nfe == 6).all()  # the per-block convention: 3 steps in each block
    with pytest.raises(MdmprobError, match="steps=3 is the total over 2 blocks"):
        llada(steps=3, block_length=3).run(o, 1)
    assert (sequential("l2r").run(o, 4).nfe == s.n_tokens).all()
    assert (mean_field_blocks().run(o, 4).nfe == len(s.blocks)).all()
    c = llada(steps=3).run(o, 16, seed=5)
    assert not torch.equal(a.tokens, c.tokens)


def test_errors():
    s = load_model("agreement")
    o = Oracle(s)
    with pytest.raises(UnknownNameError, match="did you mean 'llada'"):
        get_decoder("lada")
    with pytest.raises(MdmprobError, match="tau=1.5"):
        fast_dllm_threshold(1.5)
    with pytest.raises(MdmprobError, match="tau=0"):
        fast_dllm_threshold(0)
    with pytest.raises(MdmprobError, match="gamma=-1"):
        eb_sampler(-1)
    with pytest.raises(MdmprobError, match="steps=0"):
        llada(steps=0)
    with pytest.raises(MdmprobError, match="temperature"):
        Decoder("x", sequential().score, sequential().commit, temperature=-1)
    with pytest.raises(MdmprobError, match="sum over trajectories"):
        sequential("random").log_prob(o, torch.tensor([[0, 1]]))
    big = load_model("block_hmm", n_blocks=3)  # 2^24 sequences
    with pytest.raises(BudgetError, match="Monte Carlo"):
        sequential().distribution(Oracle(big))
    assert set(PRESETS) >= {"mean_field_blocks", "verified_blocks", "sequential", "llada",
                            "fast_dllm_threshold", "fast_dllm_factor", "eb_sampler", "rejection",
                            "speculative"}


def test_importance_resampling_removes_violations_as_particles_grow():
    s = load_model("parity_block", k=4, eta=0.0)
    o = Oracle(s)
    rates = []
    for particles in (1, 4, 64):
        run = importance(particles=particles).run(o, 2000, seed=0)
        rates.append(s.violations(run.tokens).double().mean().item())
        assert run.diagnostics["ess"].mean().item() <= particles
    assert rates[0] == pytest.approx(0.5, abs=0.05) and rates[1] < rates[0] and rates[2] < 1e-3
    with pytest.raises(MdmprobError, match="particles=0"):
        importance(particles=0)
    with pytest.raises(MdmprobError, match="Monte Carlo"):
        importance().distribution(o)


def test_no_decoder_module_shadows_an_exported_name():
    """A submodule named like an exported preset replaces it on the package once imported."""
    import importlib
    import pkgutil

    import mdmprob.decoders as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"mdmprob.decoders.{module.name}")
        assert module.name not in package.__all__, module.name
    assert callable(package.importance)
