"""Error tables and the Assumption 4.2 fit: the oracle has zero error everywhere, the
entropy-scaled family (KL(p_theta || p) = level * H by construction) gives alpha = level, and the
per-ratio table has the right shape."""

import math

import pytest
import torch

from mdmprob import load_model
from mdmprob.decoders import mean_field_blocks, sequential
from mdmprob.denoisers import Oracle, Perturbed
from mdmprob.errors import EvidenceError, MdmprobError
from mdmprob.model_error import (
    error_by_position_and_ratio,
    fit_assumption_4_2,
    fit_points,
    rollout_errors,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def oracle():
    return Oracle(load_model("markov_chain", length=6, vocab=3))


@pytest.mark.parametrize("order", ["entropy", "l2r", "random"])
def test_oracle_has_no_error(oracle, order):
    fit = fit_assumption_4_2(oracle, oracle, sequential(order), num=64, seed=0)
    assert fit.alpha == 0 and fit.lam == 0 and fit.b == 0
    assert fit.r2 == 1.0 and fit.n == 64 * 6 and fit.n_infinite == 0
    assert fit.mean_eps == 0 and fit.mean_entropy > 0
    assert all(v == 0 for v in fit.eps_by_step)
    assert all(math.isfinite(v) for v in fit.as_dict().values() if isinstance(v, float))
    tab = error_by_position_and_ratio(oracle, oracle, num=100, seed=0, ratios=[0.5, 1.0])
    for key in ("kl_pq", "kl_qp"):
        assert all(abs(v) < 1e-12 for row in getattr(tab, key) for v in row)


@pytest.mark.parametrize("order", ["entropy", "l2r"])
def test_entropy_scaled_gives_alpha(oracle, order):
    den = Perturbed(oracle, "entropy_scaled", 0.3)
    fit = fit_assumption_4_2(den, oracle, sequential(order), num=128, seed=1)
    assert abs(fit.alpha - 0.3) < 0.05
    assert abs(fit.lam) < 0.05 and abs(fit.b) < 0.05
    assert fit.r2 > 0.999 and fit.rank == 3
    r = rollout_errors(den, oracle, sequential(order), num=16, seed=1)
    assert torch.allclose(r.eps, 0.3 * r.entropy, atol=1e-9)
    assert (r.position.sort(1).values == torch.arange(6)).all()  # every position once
    assert torch.allclose(r.past[:, 1], r.eps[:, 0])


def test_error_table_shape_and_signs(oracle):
    den = Perturbed(oracle, "temperature", 0.5)
    ratios = [0.1, 0.5, 0.9, 1.0]
    tab = error_by_position_and_ratio(den, oracle, num=200, seed=0, ratios=ratios)
    assert tab.ratios == ratios and len(tab.by_ratio) == 4
    for key in ("kl_pq", "kl_qp", "entropy", "count"):
        table = getattr(tab, key)
        assert len(table) == 4 and all(len(row) == 6 for row in table)
    for key in ("kl_pq", "kl_qp", "entropy"):
        values = [v for row in getattr(tab, key) for v in row if not math.isnan(v)]
        assert values and min(values) >= -1e-12
    assert tab.count[-1] == [200] * 6  # ratio 1 masks everything
    assert tab.by_ratio[-1]["kl_pq"] > 0
    again = error_by_position_and_ratio(den, oracle, num=200, seed=0, ratios=ratios)
    assert again.as_dict() == tab.as_dict()


def test_fit_recovers_known_coefficients():
    g = torch.Generator().manual_seed(0)
    h, m = torch.rand(50, 4, generator=g, dtype=torch.float64), torch.rand(50, 4, generator=g,
                                                                           dtype=torch.float64)
    eps = 0.2 * h + 0.7 * m + 0.05
    eps[0, 0] = math.inf
    fit = fit_points(eps, h, m)
    assert fit.n == 199 and fit.n_infinite == 1
    assert abs(fit.alpha - 0.2) < 1e-10 and abs(fit.lam - 0.7) < 1e-10 and abs(fit.b - 0.05) < 1e-10


def test_bad_arguments(oracle):
    with pytest.raises(MdmprobError, match="one-token-per-step"):
        fit_assumption_4_2(oracle, oracle, mean_field_blocks(), num=4)
    with pytest.raises(MdmprobError, match="ratios"):
        error_by_position_and_ratio(oracle, oracle, num=4, ratios=[0.0])
    with pytest.raises(MdmprobError, match="num"):
        fit_assumption_4_2(oracle, oracle, sequential("l2r"), num=0)
    other = Oracle(load_model("markov_chain", length=4, vocab=3))
    with pytest.raises(EvidenceError):
        error_by_position_and_ratio(other, oracle, num=4)


def test_former_kl_names_read_with_a_warning(oracle):
    from mdmprob.denoisers import model_error

    model = Perturbed(oracle, "temperature", 1.0)
    err = model_error(model, oracle, num=50, seed=0)
    table = error_by_position_and_ratio(model, oracle, num=20, seed=0, ratios=(0.5,))
    for obj in (err, table):
        with pytest.warns(DeprecationWarning, match="kl_model_true is now kl_qp"):
            assert obj.kl_model_true == obj.kl_qp
        with pytest.warns(DeprecationWarning, match="kl_true_model is now kl_pq"):
            assert obj.kl_true_model == obj.kl_pq
    assert err.kl_qp.value > 0 and "kl_qp_se" in err.as_dict()
