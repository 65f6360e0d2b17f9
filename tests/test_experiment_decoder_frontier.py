"""decoder-frontier records the optimal mean-field frontier and each decoder's regret to it."""

import pytest

from mdmprob import load_model, schedule
from mdmprob.errors import MdmprobError
from mdmprob.experiments import get_experiment
from mdmprob.experiments.executor import run_sweep


def test_frontier_and_regret_records(tmp_path):
    exp = get_experiment("decoder-frontier")
    config = exp.make_config(structures=("block_hmm:n_blocks=2:block_size=2:eta=0.05",),
                             decoders=("mean_field_blocks", "sequential:order=l2r", "wino"),
                             samples=20)
    result = run_sweep(exp, config, tmp_path / "out", seed=0)
    rec = result.records
    hull = schedule.frontier(load_model("block_hmm", n_blocks=2, block_size=2, eta=0.05))
    nfe = [r["value"] for r in rec if r["metric"] == "frontier_nfe"]
    kl = [r["value"] for r in rec if r["metric"] == "frontier_kl_qp"]
    assert nfe == pytest.approx([p.nfe for p in hull]) and kl == pytest.approx([p.kl for p in hull])
    regret = {r["decoder"]: r["value"] for r in rec if r["metric"] == "regret"}
    assert set(regret) == {"mean_field_blocks", "sequential:order=l2r", "wino"}
    # mean-field blocks is the frontier's first vertex, one token per step its last: regret 0
    assert regret["mean_field_blocks"] == pytest.approx(0.0, abs=1e-9)
    assert regret["sequential:order=l2r"] == pytest.approx(0.0, abs=1e-9)
    kl_wino = next(r["value"] for r in rec if r["decoder"] == "wino" and r["metric"] == "kl_qp")
    nfe_wino = next(r["value"] for r in rec if r["decoder"] == "wino" and r["metric"] == "nfe")
    assert regret["wino"] == pytest.approx(kl_wino - schedule.frontier_kl(hull, nfe_wino))
    assert any(p.suffix == ".png" for p in result.figures)


def test_frontier_flag_is_checked():
    exp = get_experiment("decoder-frontier")
    with pytest.raises(MdmprobError, match="frontier=1"):
        exp.make_config(frontier=1)
