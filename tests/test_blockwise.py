"""Per-block decomposition: analytic parity values, the paper's Block-HMM numbers, Eqs. 16/18."""

import itertools
import math

import pytest
import torch

from mdmprob import load_model, measures
from mdmprob.blockwise import block_report, sample_mean_field


def h(x):
    return 0.0 if x in (0.0, 1.0) else -(x * math.log(x) + (1 - x) * math.log(1 - x))


@pytest.mark.parametrize("k", [2, 3, 6])
@pytest.mark.parametrize("eta", [0.0, 1e-8, 0.01, 0.2])
def test_parity_block_analytic(k, eta):
    # y_1 .. y_{k-1} (uniform) -> running parity -> p (noisy parity)
    s = load_model("parity_block", k=k, eta=eta)
    row = block_report(s)["blocks"][0]
    assert row["exact"]
    assert row["forward_tc"] == pytest.approx(math.log(2) - h(eta), abs=1e-9)
    if eta == 0:
        assert row["reverse_tc_mean_field"] == math.inf
    else:
        assert row["reverse_tc_mean_field"] == pytest.approx(
            -math.log(2) - 0.5 * math.log(eta * (1 - eta)), abs=1e-6)
    assert row["violation_mean_field"] == pytest.approx(0.5, abs=1e-12)
    # optimal rejection constant M = sup p/q = 2(1 - eta), from the exact block table
    e = s.engine()
    x = torch.zeros(1, k, dtype=torch.long)
    joint = e.block_joint(x, torch.zeros_like(x, dtype=torch.bool), range(k))
    log_m = (joint - measures.mean_field(joint, k)).amax()
    assert log_m.exp().item() == pytest.approx(2 * (1 - eta), rel=1e-9)


def test_block_hmm_paper_defaults():
    # Z_1 -> ... -> Z_8, each emitting (P_n, Y_n1..Y_n7); paper-spec 4-B.
    r = block_report(load_model("block_hmm"), samples=1500, seed=0)
    blocks = r["blocks"]
    assert blocks[0]["exact"] and blocks[0]["forward_tc"] == pytest.approx(2.586, abs=5e-4)
    # exact value 10.3248 (direct sum over the 256 block configurations); paper-spec rounds to 10.33
    assert blocks[0]["reverse_tc_mean_field"] == pytest.approx(10.3248, abs=1e-4)
    for b in blocks[1:]:
        tol = 1e-2 if b["exact"] else 1e-2 + 4 * b["forward_tc_se"]
        assert b["forward_tc"] == pytest.approx(1.39, abs=tol)
    se = r["kl_pq_mean_field_se"]
    assert r["kl_pq_mean_field"] == pytest.approx(12.327, abs=4 * se + 5e-3)
    se = r["kl_qp_mean_field_se"]
    assert r["kl_qp_mean_field"] == pytest.approx(72.08, abs=4 * se + 5e-2)
    violations = [b["violation_mean_field"] for b in blocks]
    assert sum(violations) / len(violations) == pytest.approx(0.497, abs=0.02)


@pytest.mark.parametrize("eta", [0.0, 0.05])
def test_decompositions_eq16_eq18_by_enumeration(eta):
    # small Block-HMM: 2 blocks of 3 bits -> all 64 sequences enumerable
    s = load_model("block_hmm", n_blocks=2, block_size=3, eta=eta)
    e = s.engine()
    xs = torch.tensor(list(itertools.product([0, 1], repeat=s.n_tokens)))
    log_p = e.log_prob(xs)
    log_q = torch.zeros(len(xs), dtype=torch.float64)
    visible = torch.zeros_like(xs, dtype=torch.bool)
    for block in s.blocks:  # q_MF(x) = prod_m prod_{i in B_m} p(x_i | x_{P_m})
        cond = e.conditionals(xs, visible)[:, block]
        log_q += cond.gather(-1, xs[:, block, None]).squeeze(-1).sum(-1)
        visible[:, block] = True
    assert log_q.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    r = block_report(s)
    assert all(b["exact"] for b in r["blocks"])
    kl_pq = measures.kl(p=log_p, q=log_q).item()
    kl_qp = measures.kl(q=log_q, p=log_p).item()
    assert r["kl_pq_mean_field"] == pytest.approx(kl_pq, abs=1e-12)
    if eta == 0:
        assert kl_qp == math.inf and r["kl_qp_mean_field"] == math.inf
    else:
        assert r["kl_qp_mean_field"] == pytest.approx(kl_qp, abs=1e-12)
    # violation per block = Pr_q[block's parity fails]
    viol = s.violations(xs)
    for m, b in enumerate(r["blocks"]):
        expected = measures.violation_rate(log_q, viol[:, m]).item()
        assert b["violation_mean_field"] == pytest.approx(expected, abs=1e-12)


def test_ideal_regime_ii_conditionally_independent_block():
    # rho = (.5, .5) and eta = .5: the parity bit is pure noise -> TC = 0 both ways
    s = load_model("block_hmm", n_blocks=2, block_size=3, rho=(0.5, 0.5), eta=0.5)
    r = block_report(s)
    assert r["kl_pq_mean_field"] == pytest.approx(0.0, abs=1e-12)
    assert r["kl_qp_mean_field"] == pytest.approx(0.0, abs=1e-12)


def test_former_report_keys_are_read_with_a_warning_naming_the_new_key():
    r = block_report(load_model("parity_block", k=3, eta=0.1))
    for old, new in (("forward_kl_mean_field", "kl_pq_mean_field"),
                     ("reverse_kl_mean_field_se", "kl_qp_mean_field_se")):
        assert old not in r
        with pytest.warns(DeprecationWarning, match=new):
            assert r[old] == r[new]
    with pytest.raises(KeyError):
        r["forward_kl"]


def test_monte_carlo_blocks_agree_with_exact_blocks():
    s = load_model("block_hmm", n_blocks=3, block_size=3, eta=0.05)
    exact = block_report(s, exact_limit=10**6)
    mc = block_report(s, exact_limit=1, samples=4000, seed=1)
    assert all(b["exact"] for b in exact["blocks"]) and not mc["blocks"][1]["exact"]
    for be, bm in zip(exact["blocks"][1:], mc["blocks"][1:], strict=True):
        assert abs(be["forward_tc"] - bm["forward_tc"]) < 4 * bm["forward_tc_se"]
        assert abs(be["reverse_tc_mean_field"] - bm["reverse_tc_mean_field"]) < \
            4 * bm["reverse_tc_mean_field_se"]
        assert abs(be["violation_mean_field"] - bm["violation_mean_field"]) < \
            4 * bm["violation_mean_field_se"]


def test_sample_mean_field_has_the_mean_field_law():
    s = load_model("agreement", delta=0.0)
    xs = sample_mean_field(s, 20000, torch.Generator().manual_seed(0))
    agree = (xs[:, 0] == xs[:, 1]).double()
    assert abs(agree.mean().item() - 0.5) < 4 * 0.5 / math.sqrt(20000)
