"""block-hmm-eta on its default reproduces the paper's three claims; the run command's contract."""

import json

import pytest

from mdmprob.cli import main
from mdmprob.experiments import get_experiment, run_sweep


def test_default_reproduces_the_paper_claims(tmp_path):
    exp = get_experiment("block-hmm-eta")
    config = exp.make_config()
    result = run_sweep(exp, config, tmp_path, seed=0)
    rows = exp.summary(result.records, config)
    assert rows and all(row["holds"] for row in rows), rows

    def value(metric, decoder, eta):
        (r,) = [r for r in result.records if r["metric"] == metric and r["decoder"] == decoder
                and r["eta"] == eta]
        return r["value"], r["se"]

    kl_qp, se = value("kl_qp", "mean_field_blocks", 1e-8)
    assert kl_qp - 4 * se > 70  # "> 70 nats"
    for eta in config.etas:
        kl_pq, se = value("kl_pq", "mean_field_blocks", eta)
        assert 11 < kl_pq - 4 * se and kl_pq + 4 * se < 13  # "11-13 nats"
    inc, se = value("incoherence", "mean_field_blocks", 1e-8)
    assert abs(inc - 0.497) < 4 * se + 5e-3  # "close to 50%" (exact per-block rate 0.497)
    for metric in ("kl_qp", "kl_pq"):
        assert abs(value(metric, "verified_blocks", 1e-8)[0]) < 1e-9
    assert value("incoherence", "verified_blocks", 1e-8)[0] == 0


def test_run_command_json_and_files(tmp_path, capsys):
    code = main(["run", "block-hmm-eta", "-p", "etas=1e-8", "-p", "samples=50", "--out",
                 str(tmp_path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["experiment"] == "block-hmm-eta"
    assert {"decoder", "eta", "metric", "value", "se"} <= set(doc["records"][0])
    assert {"config", "seed", "versions", "device", "timings"} <= set(doc["meta"])
    for name in ("records.csv", "meta.json", "block_hmm_eta.png", "block_hmm_eta.svg"):
        assert (tmp_path / name).exists()


@pytest.mark.parametrize("argv,needle", [
    (["run", "block-hmm-et"], "did you mean 'block-hmm-eta'"),
    (["run", "block-hmm-eta", "-p", "eta=1"], "did you mean 'etas'"),
    (["run", "block-hmm-eta", "-p", "samples=many"], "cannot parse parameter samples='many'"),
    (["run", "block-hmm-eta", "-p", "etas=2"], "etas=(2,) must be numbers in [0, 0.5]"),
    (["run", "block-hmm-eta", "--device", "tpu"], "--device 'tpu'"),
])
def test_run_bad_input_exits_2(capsys, argv, needle):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_unwritable_output_folder_leaves_nothing(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", "block-hmm-eta", "--out", str(blocker / "out")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
