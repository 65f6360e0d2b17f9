"""order-under-error and order-x-parallelism on tiny configs; the order_toy model (paper-spec §4-F)."""

import itertools
import math

import pytest
import torch

torch.set_num_threads(1)

from mdmprob import measures  # noqa: E402
from mdmprob.decoders import sequential  # noqa: E402
from mdmprob.decoders.orders import fixed_decoder  # noqa: E402
from mdmprob.decoders.primitives import entropy_of  # noqa: E402
from mdmprob.denoisers import Oracle, Perturbed, Table  # noqa: E402
from mdmprob.denoisers.perturbed import away_from_mode  # noqa: E402
from mdmprob.errors import MdmprobError  # noqa: E402
from mdmprob.experiments import get_experiment, run_sweep  # noqa: E402
from mdmprob.experiments.order_under_error import A42, parse_structure  # noqa: E402
from mdmprob.structure import load_model  # noqa: E402


def _bern(p, v):
    return p if v else 1 - p


def _values(records, **match):
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def _one(records, **match):
    found = _values(records, **match)
    assert len(found) == 1, (match, found)
    return found[0]["value"]


# ------------------------------------------------------------------------------- the toy model
def test_order_toy_joint_matches_the_4f_definition():
    s = load_model("order_toy")
    assert (s.n_tokens, s.vocab) == (5, 2)
    xs = torch.tensor(list(itertools.product(range(2), repeat=5)))
    log_p = s.engine(dtype=torch.float64).log_prob(xs)
    assert math.isclose(log_p.exp().sum().item(), 1.0, abs_tol=1e-12)
    # X1 ~ Bern(.5), X2 = X1 xor Bern(.02), X3 ~ Bern(.05), X4 = X3 xor X1 xor Bern(.1), X5 ~ Bern(.3)
    ref = torch.tensor([0.5 * _bern(0.02, x2 ^ x1) * _bern(0.05, x3) * _bern(0.1, x4 ^ x3 ^ x1)
                        * _bern(0.3, x5) for x1, x2, x3, x4, x5 in xs.tolist()],
                       dtype=torch.float64)
    assert torch.allclose(log_p.exp(), ref, rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------- primitives
def test_fixed_order_and_random_order_are_consistent():
    s = load_model("markov_chain", length=3, vocab=2)
    model = Table.from_denoiser(Perturbed(Oracle(s, dtype=torch.float64), "logit_noise", 0.5))
    l2r = sequential("l2r").distribution(model)
    assert torch.allclose(fixed_decoder((0, 1, 2)).distribution(model), l2r, atol=1e-14)
    # uniformly random positions = the uniform mixture of the n! fixed orders
    fixed = torch.stack([fixed_decoder(p).distribution(model).reshape(-1)
                         for p in itertools.permutations(range(3))])
    mix = torch.logsumexp(fixed, 0) - math.log(6)
    rnd = sequential("random").distribution(model).reshape(-1)
    assert torch.allclose(rnd.exp(), mix.exp(), atol=1e-13)


def test_away_from_mode_meets_the_target_kl_or_saturates():
    r = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.02, 0.98], [0.9, 0.1]], dtype=torch.float64).log()
    target = torch.tensor([0.05, 0.1, 0.01, 5.0], dtype=torch.float64)
    log_t, kl, sat = away_from_mode(r, target)
    assert torch.allclose(measures.kl(q=log_t, p=r), kl, atol=1e-12)
    assert torch.allclose(kl[:3], target[:3], atol=1e-12)
    assert sat.tolist() == [False, False, False, True]
    assert math.isclose(kl[3].item(), -math.log(0.1), abs_tol=1e-12)  # all mass off the mode
    p_t = log_t.exp()
    assert p_t[0, 1] < 0.7 and p_t[2, 1] < 0.98 and p_t[3, 0] == 0  # moved away from the mode
    # zero target: unchanged
    same, kl0, _ = away_from_mode(r, torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(same, r) and (kl0 == 0).all()
    assert entropy_of(log_t[:3]).gt(entropy_of(r[:3]) - 1).all()


def test_structure_specs():
    assert parse_structure("markov_chain:length=5:vocab=2") == ("markov_chain",
                                                                {"length": 5, "vocab": 2})
    assert parse_structure("block_hmm:eta=0.01") == ("block_hmm", {"eta": 0.01})
    with pytest.raises(MdmprobError):
        parse_structure("markov_chain:length")
    exp = get_experiment("order-under-error")
    with pytest.raises(MdmprobError):
        exp.make_config(families=("nope",))
    with pytest.raises(MdmprobError):
        exp.make_config(families=("uniform",), levels=(2.0,))


# ------------------------------------------------------------------------------- order-under-error
def _sweep(exp, config, out):
    """run_sweep with the SVG labels kept as text, so the tests can read them."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        return run_sweep(exp, config, out)


@pytest.fixture(scope="module")
def order_sweep(tmp_path_factory):
    exp = get_experiment("order-under-error")
    config = exp.make_config(structures=("markov_chain:length=4:vocab=2",),
                             families=("logit_noise", "entropy_scaled"), levels=(0.0, 0.5),
                             orders=("l2r", "random", "entropy", "oracle_entropy", "hard_first"),
                             a42_structures=("order_toy",), lambdas=(0.0, 2.0))
    out = tmp_path_factory.mktemp("order_under_error")
    return exp, config, _sweep(exp, config, out), out


def test_order_under_error_level_zero_is_order_free(order_sweep):
    _, _, result, _ = order_sweep
    records = [r for r in result.records if r["family"] != A42 and r["level"] == 0.0]
    js = [r["value"] for r in records if r["metric"] in ("J", "J_fixed")]
    assert len(js) == 2 * (5 + 24)
    assert max(abs(v) for v in js) < 1e-10
    for r in _values(records, metric="spread"):
        assert abs(r["value"]) < 1e-10
    for r in _values(records, metric="rank"):
        assert r["value"] == 1  # every order ties with the best


def test_order_under_error_records_under_error(order_sweep):
    _, _, result, _ = order_sweep
    rec = _values(result.records, family="logit_noise", level=0.5)
    fixed = [r["value"] for r in rec if r["metric"] == "J_fixed"]
    assert len(fixed) == 24 and _one(rec, metric="n_orders") == 24
    lo, hi = _one(rec, metric="J_min"), _one(rec, metric="J_max")
    assert lo == min(fixed) and hi == max(fixed) and _one(rec, metric="spread") == hi - lo > 0
    med = _one(rec, metric="J_median")
    assert math.isclose(_one(rec, metric="spread_rel"), (hi - lo) / med)
    # l2r is one of the fixed orders
    assert math.isclose(_one(rec, metric="J", order="l2r"), _one(rec, metric="J_fixed",
                                                                 order="0-1-2-3"), abs_tol=1e-12)
    for r in _values(rec, metric="rank"):
        assert 1 <= r["value"] <= 24


def test_order_under_error_4f_model(order_sweep):
    _, _, result, _ = order_sweep
    rec = _values(result.records, family=A42)
    at = {lam: _values(rec, level=lam) for lam in (0.0, 2.0)}
    assert _one(at[0.0], metric="spread") < _one(at[2.0], metric="spread")
    ef, hf = (_one(at[2.0], metric="J", order=o) for o in ("oracle_entropy", "oracle_hard_first"))
    assert ef < hf
    assert _one(at[0.0], metric="n_orders") == 120
    for lam in (0.0, 2.0):
        assert _one(at[lam], metric="lemma41_gap") < 1e-12  # Lemma 4.1, exactly
        # the random order (a mixture of the fixed ones) is no worse than the average fixed order
        fixed = [r["value"] for r in at[lam] if r["metric"] == "J_fixed"]
        assert _one(at[lam], metric="J", order="random") <= sum(fixed) / len(fixed) + 1e-12


def test_order_under_error_files_and_summary(order_sweep):
    exp, config, result, out = order_sweep
    for name in ("records.csv", "meta.json", "order_under_error.png", "order_under_error.svg",
                 "order_under_error_spread.png", "order_under_error_spread.svg"):
        assert (out / name).stat().st_size > 0, name
    assert {p.name for p in result.figures} >= {"order_under_error.png", "order_under_error.svg"}
    svg = (out / "order_under_error.svg").read_text()
    for label in ("KL(q_π ‖ p) [nats]", "λ (prefix-error propagation", "all fixed orders",
                  "oracle_entropy"):
        assert label in svg or label.replace("‖", "&#8214;") in svg, label
    rows = exp.summary(result.records, config)
    assert rows and rows[0]["holds"] is True  # Ideal Regime I


# ------------------------------------------------------------------------------- order-x-parallelism
def test_order_x_parallelism_tiny(tmp_path):
    exp = get_experiment("order-x-parallelism")
    config = exp.make_config(structures=("block_hmm:n_blocks=2:block_size=2:eta=0.01",),
                             levels=(0.0, 0.3), rules=("entropy", "l2r", "random"), ks=(1, 2),
                             samples=4)
    result = _sweep(exp, config, tmp_path)
    rec = result.records
    assert len(exp.settings(config)) == 12
    for rule in ("entropy", "l2r", "random"):
        assert abs(_one(rec, rule=rule, k=1, level=0.0, metric="kl_qp")) < 1e-10
        assert abs(_one(rec, rule=rule, k=1, level=0.0, metric="kl_pq")) < 1e-10
        for k in (1, 2):
            assert _one(rec, rule=rule, k=k, level=0.0, metric="nfe") == 4 / k
    # two tokens per step: l2r commits each (parity, content) block at once -> parallel bias
    assert _one(rec, rule="l2r", k=2, level=0.0, metric="kl_qp") > 0.1
    assert _one(rec, rule="l2r", k=2, level=0.0, metric="violation") > 0.05
    assert _one(rec, rule="entropy", k=1, level=0.3, metric="kl_qp") > 0
    for name in ("records.csv", "meta.json", "order_x_parallelism.png", "order_x_parallelism.svg",
                 "order_x_parallelism_kl_pq.png", "order_x_parallelism_violation.svg"):
        assert (tmp_path / name).stat().st_size > 0, name
    svg = (tmp_path / "order_x_parallelism.svg").read_text()
    assert "tokens committed per step k [tokens]" in svg and "selection rule" in svg
    assert exp.summary(rec, config)[0]["holds"] is True
