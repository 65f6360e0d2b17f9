"""arithmetic-orders: the quick config runs end to end, records are well formed, checkpoints are
reused, an exported ladder is loaded instead of trained, and the summary's verdicts come from the
records."""

import pytest
import torch

from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import MdmprobError
from mdmprob.experiments import get_experiment, run_sweep
from mdmprob.experiments.arithmetic_orders import ORDERS, answer_decoder
from mdmprob.tasks import addition
from mdmprob.tasks.addition import answer_positions, encode_batch
from mdmprob.training import export_checkpoint


def test_quick_sweep_records_files_and_checkpoint_reuse(tmp_path):
    exp = get_experiment("arithmetic-orders")
    config = exp.make_config(**exp.quick)
    assert config.loss == "answer" and config.ladder_dir is None
    out = tmp_path / "run"
    result = run_sweep(exp, config, out, seed=0)
    acc = [r for r in result.records if r["metric"] == "accuracy"]
    assert acc
    assert {"D", "d_model", "steps", "train_seed", "model", "order", "k", "category", "value",
            "se", "ci_low", "ci_high", "correct", "n"} <= set(acc[0])
    ks = config.k_values(2)
    assert ks == [1, 2, 3]  # D = 2: three answer digits, k = 4 capped to all-at-once
    assert config.budgets() == [20, 60, 80]  # the last continues 60 with 20 decaying steps
    overall = {(r["steps"], r["order"], r["k"]) for r in acc if r["category"] == "overall"}
    assert overall == {(s, o, k) for s in config.budgets() for o in ORDERS for k in ks}
    for r in acc:
        assert 0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1
        assert r["se"] >= 0 and r["value"] == r["correct"] / r["n"]
    assert {r["category"] for r in acc} == {"overall", "easy", "medium", "hard", "extreme",
                                            "edge", "mixed"}
    pos = [r for r in result.records if r["metric"] == "position_nll"]
    assert sorted(r["position"] for r in pos) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # 3 digits x 3 models
    for steps in config.budgets():  # the mean of the per-position errors is the model error
        mean = [r["value"] for r in result.records
                if r["metric"] == "answer_nll" and r["steps"] == steps]
        per = [r["value"] for r in pos if r["steps"] == steps]
        assert abs(mean[0] - sum(per) / 3) < 1e-12
    trained = {r["steps"]: r["value"] for r in result.records if r["metric"] == "steps_trained_now"}
    assert trained == {20: 20, 60: 40, 80: 20}  # each model continues the previous one
    for name in ("records.csv", "meta.json", "arithmetic_orders.png", "arithmetic_orders.svg"):
        assert (out / name).exists()
    ckpts = sorted((out / "checkpoints").glob("*/checkpoint.pt"))
    assert len(ckpts) == 3 and all("_answer_seed0_" in p.parent.name for p in ckpts)
    assert [p.parent.name.endswith("_s80_decay20") for p in ckpts] == [False, False, True]
    rows = exp.summary(result.records, config)
    assert len(rows) == 2 and all(r["verdict"] in ("yes", "no", "inconclusive") for r in rows)
    assert all(r["holds"] == (r["verdict"] == "yes") for r in rows)

    # a resumed sweep (records lost, checkpoints kept) decodes again without retraining
    (out / "records.jsonl").unlink()
    again = run_sweep(exp, config, out, seed=0)
    assert all(r["value"] == 0 for r in again.records if r["metric"] == "steps_trained_now")
    key = [(r["steps"], r["order"], r["k"], r["category"], r["value"]) for r in acc]
    assert key == [(r["steps"], r["order"], r["k"], r["category"], r["value"])
                   for r in again.records if r["metric"] == "accuracy"]

    # an exported (weights-only) ladder is loaded, not trained, and gives the same records
    for p in ckpts:
        export_checkpoint(p.parent, tmp_path / "ladder" / p.parent.name)
    shipped = exp.make_config(**{**exp.quick, "ladder_dir": str(tmp_path / "ladder")})
    third = run_sweep(exp, shipped, tmp_path / "from_ladder", seed=0)
    assert all(r["value"] == 0 for r in third.records if r["metric"] == "steps_trained_now")
    assert not (tmp_path / "from_ladder" / "checkpoints").exists()
    assert key == [(r["steps"], r["order"], r["k"], r["category"], r["value"])
                   for r in third.records if r["metric"] == "accuracy"]


def test_old_import_of_answer_decoder_still_works():
    from mdmprob.experiments.arithmetic_orders import SHIPPED

    assert answer_decoder is addition.answer_decoder and ORDERS == addition.ORDERS
    config = get_experiment("arithmetic-orders").make_config()
    assert config.ladder_dir == "shipped" and config.ladder() == SHIPPED and SHIPPED.is_dir()


class _Copy(Denoiser):
    """A denoiser that is certain of the true answer digit (and of nothing else)."""

    vocab, device, dtype = 13, torch.device("cpu"), torch.float64

    def __init__(self, truth):
        self.truth, self.n_tokens = truth, truth.shape[1]

    def predict(self, tokens):
        logp = torch.full((*tokens.shape, 13), -30.0, dtype=torch.float64)
        return logp.scatter(-1, self.truth[..., None], 0.0).log_softmax(-1)


def test_decode_only_fills_answer_positions():
    truth = encode_batch([12, 99, 0], [5, 99, 7], 2)
    pos = answer_positions(2)
    for order in ORDERS:
        for k in (1, 2, 3):
            initial = truth.clone()
            initial[:, pos] = 13
            run = answer_decoder(order, k).run(_Copy(truth), len(truth), initial=initial)
            assert torch.equal(run.tokens, truth) and (run.nfe == -(-3 // k)).all()


def test_config_errors_name_the_field():
    exp = get_experiment("arithmetic-orders")
    for params, needle in (({"loss": "prompt"}, "loss='prompt'"), ({"headroom_D": 1}, "headroom_D"),
                           ({"D": 1}, "D"), ({"decay_steps": -1}, "decay_steps"),
                           ({"orders": ("up",)}, "up"), ({"error_size": 0}, "error_size"),
                           ({"lr_schedule": "cosine"}, "decay_steps")):
        with pytest.raises(MdmprobError, match=needle):
            exp.make_config(**params)
    config = exp.make_config(lr_schedule="cosine", decay_steps=0, ladder_dir="none")
    assert config.budgets() == [250, 500, 1000, 2000] and config.ladder() is None
    assert exp.make_config().budgets() == [250, 500, 1000, 2000, 3000]
    assert [(s["D"], s["d_model"]) for s in exp.settings(exp.make_config())].count((5, 16)) == 0
