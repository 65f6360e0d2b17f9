"""Information measures against direct formulas, analytic values and brute-force sums."""

import math
import re

import pytest
import torch

from mdmprob import measures
from mdmprob.errors import MdmprobError


def h(x):  # binary entropy in nats
    return 0.0 if x in (0.0, 1.0) else -(x * math.log(x) + (1 - x) * math.log(1 - x))


def agreement_table(delta):
    #  x1 -- x2 : p(x1 != x2) = delta, uniform marginals
    p = torch.tensor([[(1 - delta) / 2, delta / 2], [delta / 2, (1 - delta) / 2]],
                     dtype=torch.float64)
    return p.log()


@pytest.mark.parametrize("delta,fwd,rev", [(0.1, 0.368, 0.511), (1e-3, 0.685, 2.761),
                                           (1e-8, 0.693, 8.517)])
def test_agreement_tc_matches_paper_table(delta, fwd, rev):
    joint = agreement_table(delta)
    assert measures.forward_tc(joint, 2).item() == pytest.approx(math.log(2) - h(delta), abs=1e-12)
    assert measures.reverse_tc(joint, 2).item() == pytest.approx(
        -math.log(2) - 0.5 * math.log(delta * (1 - delta)), abs=1e-9)
    assert measures.forward_tc(joint, 2).item() == pytest.approx(fwd, abs=5e-4)
    assert measures.reverse_tc(joint, 2).item() == pytest.approx(rev, abs=5e-4)


def test_hard_zero_gives_inf_not_nan():
    joint = agreement_table(0.0)
    assert measures.reverse_tc(joint, 2).item() == math.inf
    assert measures.forward_tc(joint, 2).item() == pytest.approx(math.log(2), abs=1e-12)
    assert measures.entropy(joint, 2).item() == pytest.approx(math.log(2), abs=1e-12)
    mf = measures.mean_field(joint, 2)
    assert measures.kl(q=mf, p=joint, event_dims=2).item() == math.inf
    assert measures.kl(p=joint, q=mf, event_dims=2).item() == pytest.approx(math.log(2))
    assert not torch.isnan(measures.kl(q=joint, p=joint, event_dims=2))


def test_kl_reads_as_written_and_matches_sum():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 5, generator=g, dtype=torch.float64)
    b = torch.rand(3, 5, generator=g, dtype=torch.float64)
    a, b = (a / a.sum(-1, keepdim=True)).log(), (b / b.sum(-1, keepdim=True)).log()
    direct = (a.exp() * (a - b)).sum(-1)
    torch.testing.assert_close(measures.kl(q=a, p=b), direct)
    torch.testing.assert_close(measures.kl(p=b, q=a), (b.exp() * (b - a)).sum(-1))
    torch.testing.assert_close(measures.tv(q=a, p=b), 0.5 * (a.exp() - b.exp()).abs().sum(-1))


def test_conditional_entropy_chain_rule_and_tc_identity():
    g = torch.Generator().manual_seed(2)
    p = torch.rand(2, 3, 2, generator=g, dtype=torch.float64)
    log_p = (p / p.sum()).log()
    hxyz = measures.entropy(log_p, 3)
    hx = measures.conditional_entropy(log_p, 3, target=(0,))
    hy_x = measures.conditional_entropy(log_p, 3, target=(1,), given=(0,))
    hz_xy = measures.conditional_entropy(log_p, 3, target=(2,), given=(0, 1))
    torch.testing.assert_close(hx + hy_x + hz_xy, hxyz)
    # forward TC = sum_i H(X_i) - H(X)  (Eq. 15)
    sum_h = sum(measures.conditional_entropy(log_p, 3, target=(i,)) for i in range(3))
    torch.testing.assert_close(measures.forward_tc(log_p, 3), sum_h - hxyz)
    # brute-force conditional entropy H(Y|X)
    pxy = log_p.exp().sum(-1)
    brute = -sum(pxy[x, y] * math.log(pxy[x, y] / pxy[x].sum()) for x in range(2)
                 for y in range(3))
    assert hy_x.item() == pytest.approx(brute.item(), abs=1e-12)


def test_incoherence_and_violation_exact_and_lemma_c3():
    log_p = agreement_table(1e-9)
    log_q = measures.mean_field(log_p, 2)
    inc = measures.incoherence_rate(log_q, log_p, tau=1e-8, event_dims=2)
    assert inc.item() == pytest.approx(0.5)
    violated = torch.tensor([[False, True], [True, False]])
    assert measures.violation_rate(log_q, violated, 2).item() == pytest.approx(0.5)
    # Lemma C.3: incoherence <= E_q[-log p] / log(1/eps), and Eq. 69: E_q[-log p] = KL + H(q)
    cross = measures.expectation(log_q, -log_p, 2)
    torch.testing.assert_close(cross, measures.kl(q=log_q, p=log_p, event_dims=2)
                               + measures.entropy(log_q, 2))
    assert inc.item() <= cross.item() / math.log(1e8)


def test_mc_estimators_within_standard_errors():
    g = torch.Generator().manual_seed(3)
    log_p = agreement_table(0.1).reshape(-1)
    log_q = torch.full((4,), math.log(0.25), dtype=torch.float64)
    idx = torch.multinomial(log_q.exp(), 20000, replacement=True, generator=g)
    est = measures.mc_kl(log_q[idx], log_p[idx])
    exact = measures.kl(q=log_q, p=log_p).item()
    assert abs(est.value - exact) < 4 * est.se
    rate = measures.mc_rate(idx % 3 == 0)
    assert abs(rate.value - 0.5) < 4 * rate.se


def test_mc_infinite_sample_is_inf_with_zero_se():
    est = measures.mc_kl(torch.tensor([0.0, -1.0]), torch.tensor([-math.inf, -1.0]))
    assert est.value == math.inf and est.se == 0.0


def test_errors_name_the_problem():
    a = torch.zeros(2)
    with pytest.raises(MdmprobError, match="exactly two named"):
        measures.kl(q=a)
    with pytest.raises(MdmprobError, match="shape"):
        measures.kl(q=a, p=torch.zeros(3))
    with pytest.raises(MdmprobError, match="event_dims=3"):
        measures.entropy(a, 3)
    with pytest.raises(MdmprobError, match="NaN"):
        measures.mc_mean(torch.tensor([float("nan")]))


# ----------------------------------------------------------------------- input validation
def _log_uniform(*shape):
    return torch.full(shape, 1.0 / shape[-1], dtype=torch.float64).log()


@pytest.mark.parametrize("bad,needle", [
    (torch.full((3,), math.nan, dtype=torch.float64), "contains NaN"),
    (torch.ones(3, dtype=torch.float64), "not normalised"),  # unnormalised: e^1 * 3 mass
    (torch.full((3,), 1 / 3, dtype=torch.float64), "holds probabilities"),
    (torch.tensor([0.0, math.inf, -math.inf], dtype=torch.float64), "contains +inf"),
    (torch.tensor([1, 0, 0]), "floating tensor"),
])
def test_measures_refuse_what_is_not_a_log_distribution(bad, needle):
    p = _log_uniform(3)
    for call in (lambda: measures.kl(q=bad, p=p), lambda: measures.kl(p=p, q=bad),
                 lambda: measures.tv(q=bad, p=p), lambda: measures.entropy(bad),
                 lambda: measures.expectation(bad, torch.zeros(3))):
        with pytest.raises(MdmprobError, match=re.escape(needle)):
            call()


def test_total_correlations_check_their_table():
    joint = torch.tensor([[0.4, 0.1], [0.1, 0.4]], dtype=torch.float64)
    with pytest.raises(MdmprobError, match="holds probabilities"):
        measures.reverse_tc(joint, 2)
    with pytest.raises(MdmprobError, match="event_dims=5 must be in 1..2"):
        measures.forward_tc(joint.log(), 5)
    # the same table as log-probabilities: TC = KL(p ‖ p1 p2) by hand
    expected = sum(p * math.log(p / 0.25) for p in (0.4, 0.1, 0.1, 0.4))
    assert measures.forward_tc(joint.log(), 2).item() == pytest.approx(expected, abs=1e-12)


def test_normalisation_tolerance_accepts_rounding_only():
    p = _log_uniform(4)
    tol = measures.normalisation_tolerance(torch.float64)
    assert measures.kl(q=p + tol / 2, p=p).item() >= 0  # rounding-sized: accepted
    with pytest.raises(MdmprobError, match="not normalised"):
        measures.kl(q=p + 10 * tol, p=p)


def test_mc_kl_counts_rounding_as_zero_and_nothing_else():
    log_q = torch.tensor([-30.0, -12.5, -7.25], dtype=torch.float64)
    # the same log-densities summed in another order differ by rounding only
    rows = [[-0.1, -0.2, -0.3, -29.4], [-0.7, -0.1, -0.2, -11.5], [-1.1, -2.2, -3.3, -0.65]]
    forward = torch.tensor([((a + b) + c) + d for a, b, c, d in rows], dtype=torch.float64)
    backward = torch.tensor([((d + c) + b) + a for a, b, c, d in rows], dtype=torch.float64)
    assert (forward != backward).any()  # the two evaluations do differ in the last bits
    est = measures.mc_kl(forward, backward)
    assert (est.value, est.se) == (0.0, 0.0)
    shifted = measures.mc_kl(log_q, log_q - 1e-9)  # a real (tiny) difference is kept
    assert shifted.value == pytest.approx(1e-9, rel=1e-6)
    assert measures.mc_kl(log_q, torch.full_like(log_q, -math.inf)).value == math.inf
