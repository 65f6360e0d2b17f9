"""learned-block-hmm (quick): Neural MDMs trained on a small Block-HMM, decoders scored exactly."""

import math

from mdmprob.experiments import get_experiment, run_sweep
from mdmprob.experiments.learned_block_hmm import METRICS


def test_quick_records_files_and_checkpoint_reuse(tmp_path):
    exp = get_experiment("learned-block-hmm")
    config = exp.make_config(**exp.quick)
    result = run_sweep(exp, config, tmp_path / "first", seed=0)
    records = result.records

    for r in records:  # finite or +inf, never NaN (base.record refuses NaN); None = not available
        assert r["value"] is None or math.isfinite(r["value"]) or r["value"] == math.inf, r
    for steps in config.steps:
        for spec in config.decoders:
            got = {r["metric"]: r for r in records if r["steps"] == steps and r["decoder"] == spec}
            assert set(METRICS) <= set(got), (steps, spec, sorted(got))
            assert all(r["eval_mode"] == "exact" for r in got.values())  # V^n = 256 <= 4096
            assert got["kl_qp"]["value"] is not None and got["kl_qp"]["value"] >= -1e-9
            assert got["kl_pq"]["value"] is not None and got["kl_pq"]["value"] >= -1e-9
        for metric in ("model_error_kl_pq", "model_error_kl_qp"):
            (r,) = [r for r in records if r["steps"] == steps and r["metric"] == metric]
            assert r["decoder"] is None and r["value"] > 0 and r["se"] > 0

    def err(metric, steps):
        (r,) = [r for r in records if r["steps"] == steps and r["metric"] == metric]
        return r["value"], r["se"]

    small, large = min(config.steps), max(config.steps)
    for metric in ("model_error_kl_pq", "model_error_kl_qp"):  # same seed, same contexts
        (e0, _), (e1, _) = err(metric, small), err(metric, large)
        assert e1 < e0, (metric, e0, e1)
    # a temperature-0 decoder is deterministic: p has mass off its output, so KL(p‖q) = +inf
    (llada,) = [r for r in records if (r["decoder"] or "").startswith("llada")
                and r["metric"] == "kl_pq" and r["steps"] == small]
    assert llada["value"] == math.inf

    for name in ("records.csv", "meta.json", "learned_block_hmm.png", "learned_block_hmm.svg",
                 "learned_block_hmm_model_error.png", "learned_block_hmm_model_error.svg"):
        assert (tmp_path / "first" / name).exists(), name
    ckpts = sorted((tmp_path / "first" / "checkpoints").glob("*/checkpoint.pt"))
    assert len(ckpts) == len(config.steps)
    trained = {r["steps"]: r["value"] for r in records if r["metric"] == "steps_trained_now"}
    assert trained == {small: small, large: large - small}  # the larger budget continued
    rows = exp.summary(records, config)
    assert rows and all(isinstance(row["ours"], float) for row in rows)

    # a second sweep pointed at the same checkpoints trains nothing and gives the same numbers
    again = run_sweep(exp, exp.make_config(**exp.quick, checkpoint_dir=str(tmp_path / "first" /
                                                                          "checkpoints")),
                      tmp_path / "second", seed=0)
    assert {r["value"] for r in again.records if r["metric"] == "steps_trained_now"} == {0}
    assert not (tmp_path / "second" / "checkpoints").exists()
    key = ("steps", "decoder", "metric")

    def values(recs):
        return {tuple(r[k] for k in key): r["value"] for r in recs
                if r["metric"] not in ("train_seconds", "steps_trained_now", "final_loss")}

    assert values(again.records) == values(records)
