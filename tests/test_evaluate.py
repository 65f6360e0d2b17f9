"""evaluate(): exact mode against direct tables, Monte Carlo within standard errors, the paper's
Block-HMM numbers, and error paths."""

import itertools
import math

import pytest
import torch

from mdmprob import load_model, measures
from mdmprob.decoders import llada, mean_field_blocks, sequential, verified_blocks
from mdmprob.denoisers import Oracle
from mdmprob.errors import MdmprobError
from mdmprob.evaluate import KEYS, evaluate


def test_exact_mode_values_match_tables():
    # z1 -> z2, each emitting 3 bits (parity first); 64 sequences
    s = load_model("block_hmm", n_blocks=2, block_size=3, eta=1e-9)
    o = Oracle(s)
    ev = evaluate(s, mean_field_blocks(), o, samples=50)
    assert ev.mode == "exact"
    xs = torch.tensor(list(itertools.product([0, 1], repeat=6)))
    log_p = s.engine().log_prob(xs)
    # q_MF(x) = prod_m prod_{i in B_m} p(x_i | x_{P_m}), from the engine's conditionals directly
    log_q = torch.zeros(len(xs), dtype=torch.float64)
    visible = torch.zeros_like(xs, dtype=torch.bool)
    for block in s.blocks:
        cond = s.engine().conditionals(xs, visible)[:, block]
        log_q += cond.gather(-1, xs[:, block, None]).squeeze(-1).sum(-1)
        visible[:, block] = True
    assert ev["kl_qp"] == pytest.approx(measures.kl(q=log_q, p=log_p).item(), abs=1e-12)
    assert ev["kl_pq"] == pytest.approx(measures.kl(p=log_p, q=log_q).item(), abs=1e-12)
    assert ev["tv"] == pytest.approx(measures.tv(q=log_q, p=log_p).item(), abs=1e-12)
    # the block-level incoherence equals the per-block parity-violation rate at this eta
    assert ev["incoherence"] == pytest.approx(ev["violation"], abs=1e-12)
    assert 0.3 < ev["violation"] < 0.6
    for key in KEYS:
        assert key in ev and key + "_se" in ev
    assert ev["kl_qp_se"] is None and ev["nfe"] == 2


def test_monte_carlo_agrees_with_exact_within_standard_errors():
    s = load_model("block_hmm", n_blocks=2, block_size=3, eta=0.05)
    o = Oracle(s)
    for decoder in [mean_field_blocks(), sequential("entropy", temperature=0.7)]:
        exact = evaluate(s, decoder, o, mode="exact", samples=10)
        mc = evaluate(s, decoder, o, mode="mc", samples=4000, seed=2)
        for key in ("kl_qp", "kl_pq", "violation"):
            assert abs(exact[key] - mc[key]) <= 4 * mc[key + "_se"] + 1e-9, (decoder.name, key)


def test_hard_zeros_give_infinite_kl_not_nan():
    s = load_model("parity_block", k=3, eta=0.0)
    ev = evaluate(s, mean_field_blocks(), Oracle(s), samples=20)
    assert ev["kl_qp"] == math.inf and ev["kl_pq"] == pytest.approx(math.log(2))
    mc = evaluate(s, mean_field_blocks(), Oracle(s), mode="mc", samples=200)
    assert mc["kl_qp"] == math.inf and not math.isnan(mc["kl_qp_se"])


def test_block_hmm_paper_claims_monte_carlo():
    # the paper's defaults at eta = 1e-8 (paper-spec 3.1 / 4-B)
    s = load_model("block_hmm", eta=1e-8)
    o = Oracle(s)
    mf = evaluate(s, mean_field_blocks(), o, mode="mc", samples=300, seed=0)
    assert mf["kl_qp"] > 70
    assert mf["kl_pq"] == pytest.approx(12.327, abs=4 * mf["kl_pq_se"] + 5e-3)
    assert mf["incoherence"] == pytest.approx(0.497, abs=4 * mf["incoherence_se"] + 5e-3)
    ver = evaluate(s, verified_blocks(), o, mode="mc", samples=100, seed=0)
    assert abs(ver["kl_qp"]) < 1e-9 and abs(ver["kl_pq"]) < 1e-9 and ver["incoherence"] == 0


def test_non_marginal_decoders_in_mc_mode_report_kl_bounds():
    # a trajectory density: an interval around kl_qp, an upper bound for kl_pq, both named
    s = load_model("block_hmm", n_blocks=2, block_size=3)
    ev = evaluate(s, llada(steps=3), Oracle(s), mode="mc", samples=50, draws=2)
    assert ev["kl_qp_lower"] <= ev["kl_qp"] <= ev["kl_qp_upper"]
    assert ev["kl_pq"] == ev["kl_pq_upper"] and ev["kl_pq_lower"] is None
    assert len(ev.notes) == 2 and ev["violation"] is not None


def test_errors():
    s = load_model("agreement")
    other = load_model("agreement", vocab=3)
    with pytest.raises(MdmprobError, match="mismatch"):
        evaluate(s, mean_field_blocks(), Oracle(other))
    with pytest.raises(MdmprobError, match="tau=0"):
        evaluate(s, mean_field_blocks(), Oracle(s), tau=0)
    with pytest.raises(MdmprobError, match="tau=2"):
        evaluate(s, mean_field_blocks(), Oracle(s), taus=(2,))
    with pytest.raises(MdmprobError, match="mode='fast'"):
        evaluate(s, mean_field_blocks(), Oracle(s), mode="fast")
