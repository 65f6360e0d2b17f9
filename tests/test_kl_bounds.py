"""KL bounds for decoders whose run reports a trajectory density: the importance-weighted lower
and reverse-importance upper sides bracket the exact KL (exact mode on small structures), the gap
shrinks with K, the proposals' densities are normalised (brute force), and the fallbacks hold."""

import itertools
import math

import pytest
import torch

from mdmprob import load_model
from mdmprob.decoders import (
    drivers,
    eb_sampler,
    fast_dllm_factor,
    fast_dllm_threshold,
    gibbs_remask,
    llada,
    mdlm,
    mean_field_blocks,
    remdm,
    remdm_conf,
    sequential,
)
from mdmprob.decoders.presets import PRESETS
from mdmprob.decoders.resampling import ImportanceResampling
from mdmprob.denoisers import Oracle
from mdmprob.errors import MdmprobError
from mdmprob.evaluate import evaluate

SMALL = dict(n_blocks=2, block_size=3, eta=0.05)


def _bracket(exact, mc, key, z=4.0):
    lo, hi = mc[key + "_lower"], mc[key + "_upper"]
    lo_se, hi_se = mc[key + "_lower_se"], mc[key + "_upper_se"]
    assert lo - z * lo_se <= exact[key] + 1e-9, (key, lo, lo_se, exact[key])
    assert exact[key] <= hi + z * hi_se + 1e-9, (key, hi, hi_se, exact[key])


@pytest.mark.parametrize("decoder", [
    llada(steps=3), llada(steps=2, remasking="random"), mdlm(), sequential("random"),
    fast_dllm_threshold(tau=0.7), fast_dllm_factor(f=1.0), eb_sampler(gamma=0.5),
    sequential("entropy", temperature=0.7),
    # positions drawn Plackett-Luce (a decoder with its own step law)
    PRESETS["dream"](steps=3, alg="entropy", alg_temp=0.5)], ids=lambda d: d.name)
def test_bounds_bracket_the_exact_kl(decoder):
    s = load_model("block_hmm", **SMALL)
    o = Oracle(s)
    exact = evaluate(s, decoder, o, mode="exact", samples=10)
    mc = evaluate(s, decoder, o, mode="mc", samples=300, seed=3, draws=4)
    _bracket(exact, mc, "kl_qp")
    assert mc["kl_qp_lower"] - 1e-12 <= mc["kl_qp"] <= mc["kl_qp_upper"] + 1e-12
    assert exact["kl_pq"] <= mc["kl_pq_upper"] + 4 * mc["kl_pq_upper_se"] + 1e-9
    if decoder.log_q_is_marginal:  # an exact density: the interval is the point
        assert mc["kl_qp_lower"] == mc["kl_qp_upper"] == mc["kl_qp"]
    else:
        assert mc["kl_pq"] == mc["kl_pq_upper"] and mc["kl_pq_lower"] is None
        assert any("kl_qp: midpoint" in n for n in mc.notes)


def test_random_order_with_exact_conditionals_has_zero_variance_weights():
    # one token per step in a random order: prod_i p(x_i | visible) telescopes to p(x), so every
    # proposed weight is exactly p(x) and both sides are exactly 0
    s = load_model("block_hmm", **SMALL)
    mc = evaluate(s, sequential("random"), Oracle(s), mode="mc", samples=200, draws=2)
    assert abs(mc["kl_qp_lower"]) < 1e-9 and abs(mc["kl_qp_upper"]) < 1e-9


def test_gap_shrinks_as_k_grows():
    s = load_model("block_hmm", **SMALL)
    o = Oracle(s)
    d = mdlm()
    exact = evaluate(s, d, o, mode="exact", samples=10)["kl_qp"]
    gaps = []
    for k in (1, 4, 32):
        mc = evaluate(s, d, o, mode="mc", samples=400, seed=5, draws=k)
        gaps.append(exact - mc["kl_qp_lower"])
    assert gaps[0] > gaps[1] > gaps[2] > -4 * mc["kl_qp_lower_se"]
    assert gaps[0] > 5 * gaps[2]


def test_proposal_densities_are_normalised():
    # brute force over every selection of 5 positions: the ranked proposal sums to one over the
    # k-subsets of the candidates and the independent one over the non-empty subsets
    gen = torch.Generator().manual_seed(0)
    n, V = 5, 3
    logp = torch.log_softmax(torch.randn(2, n, V, generator=gen, dtype=torch.float64), -1)
    prob = logp.exp()
    vkeys = prob.clone()
    vkeys[0, 1] = vkeys[0, 2]  # tied keys
    x = torch.randint(V, (2, n), generator=gen)
    key_x = vkeys.gather(-1, x[..., None])[..., 0]
    lp_x = logp.gather(-1, x[..., None])[..., 0]
    cand = torch.ones(2, n, dtype=torch.bool)
    cand[1, 3] = False
    subsets = torch.tensor(list(itertools.product([0, 1], repeat=n)), dtype=torch.bool)
    S = len(subsets)
    for row, k in ((0, 2), (1, 3)):
        rep = [t[row:row + 1].expand(S, *t.shape[1:]) for t in (cand, key_x, lp_x, vkeys, prob)]
        sel = subsets & cand[row]
        fits = (subsets & ~cand[row]).sum(-1) == 0
        _, lp = drivers._ranked_proposal(*rep, torch.full((S,), k), None, sel)
        assert torch.logsumexp(lp[fits], 0).exp().item() == pytest.approx(1.0, abs=1e-12)
        assert (lp[fits & (sel.sum(-1) != k)] == -math.inf).all()
        _, lp_in = drivers._independent(lp_x[row:row + 1].expand(S, n), rep[0], None, sel)
        assert torch.logsumexp(lp_in[fits], 0).exp().item() == pytest.approx(1.0, abs=1e-12)
    drawn, lp = drivers._ranked_proposal(cand, key_x, lp_x, vkeys, prob, torch.tensor([2, 3]),
                                         gen, None)
    assert drawn.sum(-1).tolist() == [2, 3] and (lp > -math.inf).all() and not drawn[1, 3]
    _, again = drivers._ranked_proposal(cand, key_x, lp_x, vkeys, prob, torch.tensor([2, 3]),
                                        None, drawn)
    assert torch.allclose(lp, again)


def test_large_windows_use_the_bernoulli_proposal_and_still_bracket():
    # 9 candidates in one window: past the enumeration budget, the conditional-Bernoulli proposal
    s = load_model("block_hmm", n_blocks=3, block_size=3, eta=0.05)
    assert 2 ** 9 > drivers.SUBSET_BUDGET
    o = Oracle(s)
    d = llada(steps=3)
    exact = evaluate(s, d, o, mode="exact", samples=10)
    mc = evaluate(s, d, o, mode="mc", samples=200, seed=0, draws=4)
    _bracket(exact, mc, "kl_qp")


def test_fallback_bounds_for_remasking_and_remdm():
    s = load_model("block_hmm", **SMALL)
    o = Oracle(s)
    for d in (gibbs_remask(), remdm()):
        exact = evaluate(s, d, o, mode="exact", samples=10)
        mc = evaluate(s, d, o, mode="mc", samples=400, seed=1)
        _bracket(exact, mc, "kl_qp")
        assert mc["kl_pq"] is None and any("fallback" in n for n in mc.notes)


def test_importance_resampling_bounds_bracket_its_brute_force_law():
    # SIR with 2 particles from mean-field on 3 tokens: the exact output law by enumerating
    # every particle pair, q(x) = sum_{y1, y2} q0(y1) q0(y2) sum_j w(y_j) / (w(y1) + w(y2)) [y_j = x]
    s = load_model("block_hmm", n_blocks=1, block_size=3, eta=0.05)
    o = Oracle(s)
    d = ImportanceResampling(mean_field_blocks(), particles=2)
    xs = torch.tensor(list(itertools.product([0, 1], repeat=3)))
    log_p = s.engine().log_prob(xs)
    q0 = mean_field_blocks().log_prob(o, xs, blocks=s.blocks).exp()
    w = log_p.exp() / q0
    q = torch.zeros(len(xs), dtype=torch.float64)
    for a in range(len(xs)):
        for b in range(len(xs)):
            share = q0[a] * q0[b] / (w[a] + w[b])
            q[a] += share * w[a]
            q[b] += share * w[b]
    assert q.sum().item() == pytest.approx(1.0, abs=1e-12)
    kl_qp = (q * (q.log() - log_p)).sum().item()
    kl_pq = (log_p.exp() * (log_p - q.log())).sum().item()
    mc = evaluate(s, d, o, mode="mc", samples=2000, seed=0, draws=8)
    assert mc["kl_qp_lower"] - 4 * mc["kl_qp_lower_se"] <= kl_qp
    assert kl_qp <= mc["kl_qp_upper"] + 4 * mc["kl_qp_upper_se"]
    assert kl_pq <= mc["kl_pq_upper"] + 4 * mc["kl_pq_upper_se"]


def test_no_preset_reports_none_in_monte_carlo_mode():
    s = load_model("block_hmm", **SMALL)
    o = Oracle(s)
    for name, make in PRESETS.items():
        ev = evaluate(s, make(), o, mode="mc", samples=20, draws=2)
        assert ev["kl_qp"] is not None and ev["kl_qp_lower"] is not None, name
        assert ev["kl_qp_upper"] is not None, name


def test_hard_zeros_stay_infinite_not_nan():
    s = load_model("parity_block", k=3, eta=0.0)
    exact = evaluate(s, mdlm(steps=2), Oracle(s), mode="exact", samples=10)
    mc = evaluate(s, mdlm(steps=2), Oracle(s), mode="mc", samples=200, draws=4)
    assert exact["kl_qp"] == math.inf
    assert mc["kl_qp_lower"] == math.inf == mc["kl_qp_upper"] == mc["kl_qp"]
    assert not math.isnan(mc["kl_pq_upper"])


def test_draws_must_be_a_positive_integer():
    s = load_model("block_hmm", **SMALL)
    for bad in (0, 2.5, True):
        with pytest.raises(MdmprobError, match=f"draws={bad!r}"):
            evaluate(s, mdlm(), Oracle(s), mode="mc", samples=10, draws=bad)


def test_a_lower_bound_below_zero_is_zero():
    """The remasking fallback's lower bound E_q[log q(x, tau) - log p(x)] falls far below 0 on
    the paper's Block-HMM; a KL is never negative, so the interval starts at 0 and its midpoint
    (the reported kl_qp) is never negative."""
    s = load_model("block_hmm")
    o = Oracle(s)
    for d in (remdm(), remdm_conf()):
        mc = evaluate(s, d, o, mode="mc", samples=32, seed=0)
        assert mc["kl_qp_lower"] == 0.0 and mc["kl_qp_lower_se"] == 0.0
        assert mc["kl_qp"] == pytest.approx(mc["kl_qp_upper"] / 2) and mc["kl_qp"] > 0
