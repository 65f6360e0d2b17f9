"""block-hmm-eta on its default reproduces the paper's three claims; the run command's contract."""

import json
import stat

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
    (["run", "block-hmm-eta", "-p", "etas=2"], "etas=2: 2 must be a number in [0, 0.5]"),
    (["run", "block-hmm-eta", "--device", "tpu"], "--device 'tpu'"),
    # found before the first setting runs, and never "rerun"
    (["run", "block-hmm-eta", "-p", "etas=abc"], "'abc' is not a number"),
    (["run", "block-hmm-eta", "-p", "etas=1e-8,abc"], "'abc' is not a number"),
    (["run", "block-hmm-eta", "-p", "decoders=nosuch"], "unknown decoder 'nosuch'"),
    (["run", "block-hmm-eta", "-p", "decoders=llada:steps=0"],
     "decoders: decoder 'llada:steps=0': steps=0 must be an integer >= 1"),
    (["run", "block-hmm-eta", "-p", "decoders=llada:stepz=3"], "did you mean 'steps'"),
    (["run", "block-hmm-eta", "-p", "taus=1.5"], "taus=1.5: 1.5 must be a number in (0, 1]"),
    (["run", "block-hmm-eta", "-p", "n_blocks=0"], "n_blocks=0: 0 must be an integer in [1, inf]"),
    (["run", "block-hmm-eta", "-p", "samples=1e8"], "1e+08 samples need about"),
    (["run", "block-hmm-eta", "-p", "samples=2.5"], "cannot parse parameter samples='2.5'"),
    (["run", "decoder-frontier", "-p", "structures=nosuch"], "unknown model 'nosuch'"),
    (["run", "decoder-frontier", "-p", "structures=parity_block:k=0"],
     "structures: structure 'parity_block:k=0'"),
])
def test_run_bad_input_exits_2(capsys, argv, needle, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert needle in err and "rerun" not in err.lower()
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_unwritable_output_folder_leaves_nothing(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", "block-hmm-eta", "--out", str(blocker / "out")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_folder_of_another_run_is_refused_not_reused(tmp_path, capsys):
    """The demo folder, then a smaller config or another seed into it: refused, naming the
    difference; records.csv and meta.json keep describing the first run."""
    small = ["-p", "block_size=3", "-p", "etas=1e-8", "-p", "samples=40", "-p", "taus=1e-8"]
    out = ["--out", str(tmp_path)]
    assert main(["run", "block-hmm-eta", *small, "-p", "n_blocks=3", *out, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    csv_before = (tmp_path / "records.csv").read_text()
    for extra, needle in ((["-p", "n_blocks=2"], "n_blocks=3 there, n_blocks=2 now"),
                          (["-p", "n_blocks=3", "--seed", "1"], "seed 0 there, 1 now")):
        assert main(["run", "block-hmm-eta", *small, *extra, *out]) == 2
        assert needle in " ".join(capsys.readouterr().err.split())
        assert (tmp_path / "records.csv").read_text() == csv_before
        assert json.loads((tmp_path / "meta.json").read_text())["config"]["n_blocks"] == 3
    # --fresh: the 2-block run computes its own numbers, equal to a fresh folder's
    assert main(["run", "block-hmm-eta", *small, "-p", "n_blocks=2", *out, "--fresh",
                 "--json"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert main(["run", "block-hmm-eta", *small, "-p", "n_blocks=2", "--out",
                 str(tmp_path / "elsewhere"), "--json"]) == 0
    assert fresh["records"] == json.loads(capsys.readouterr().out)["records"]
    assert fresh["records"] != first["records"]


def test_json_is_strict_and_verified_kl_is_exactly_zero(tmp_path, capsys):
    """+inf is written as "+inf" (no bare Infinity); a verified decoder's KL is 0 ± 0."""
    assert main(["run", "block-hmm-eta", "-p", "n_blocks=2", "-p", "block_size=3", "-p",
                 "etas=0", "-p", "samples=40", "-p", "taus=1e-8", "--out", str(tmp_path),
                 "--json"]) == 0
    text = capsys.readouterr().out
    assert "Infinity" not in text and "NaN" not in text
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    values = {(r["decoder"], r["metric"]): (r["value"], r["se"]) for r in doc["records"]}
    assert values["mean_field_blocks", "kl_qp"][0] == "+inf"  # eta = 0: hard zeros
    assert values["verified_blocks", "kl_qp"] == (0.0, 0.0)
    assert values["verified_blocks", "kl_pq"] == (0.0, 0.0)
    meta = (tmp_path / "meta.json").read_text()
    json.loads(meta, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode)
             for name in ("records.csv", "meta.json", "records.jsonl", "block_hmm_eta.png")}
    assert len(set(modes.values())) == 1, modes  # as readable as the figures (not 0600)


def test_one_spec_syntax_on_the_command_line(tmp_path, capsys):
    """``:`` separates a spec's parameters and ``,`` list items; the older ``,`` inside a spec is
    still one spec."""
    from mdmprob.cli import parse_config

    exp = get_experiment("block-hmm-eta")
    for text in ("llada:steps=2:block_length=3,mean_field_blocks",
                 "llada:steps=2,block_length=3,mean_field_blocks"):
        config = parse_config(exp, [f"decoders={text}"])
        assert len(config["decoders"]) == 2 and config["decoders"][1] == "mean_field_blocks"
        from mdmprob.experiments.base import parse_spec

        assert parse_spec(config["decoders"][0]) == ("llada", {"steps": 2, "block_length": 3})
