"""The sweep executor: tidy outputs, resume, failures that keep the other settings, Ray backend."""

import csv
import dataclasses
import json
import sys
import time

import pytest

from mdmprob.errors import MdmprobError, UnknownNameError
from mdmprob.experiments import Experiment, get_experiment, record, run_sweep
from mdmprob.experiments.executor import SweepError

TINY = dict(structures=("agreement:delta=0.1", "parity_block:k=3,eta=0.05"),
            decoders=("mean_field_blocks", "verified_blocks", "sequential:order=entropy"),
            samples=20, frontier=False)


def tiny_frontier(**overrides):
    exp = get_experiment("decoder-frontier")
    return exp, exp.make_config(**{**TINY, **overrides})


def test_outputs_are_tidy_and_seeded(tmp_path):
    exp, config = tiny_frontier()
    a = run_sweep(exp, config, tmp_path / "a", seed=3)
    b = run_sweep(exp, config, tmp_path / "b", seed=3)
    assert a.records == b.records and len(a.records) == 6 * 6
    rows = list(csv.DictReader(open(tmp_path / "a" / "records.csv")))
    assert {"structure", "decoder", "metric", "value", "se"} <= set(rows[0])
    assert len(rows) == len(a.records)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["samples"] == 20 and "torch" in meta["versions"]
    assert all(p.exists() for p in a.figures) and {p.suffix for p in a.figures} == {".png", ".svg"}


def test_resume_repeats_nothing(tmp_path):
    exp, config = tiny_frontier()
    run_sweep(exp, config, tmp_path, seed=0)
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    seen = []
    again = run_sweep(exp, config, tmp_path, seed=0, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (6, 6)  # everything was already there
    assert (tmp_path / "records.jsonl").read_text().splitlines() == lines
    assert len(again.records) == 36
    # an interrupted stream (a cut-off last line) reruns only that setting
    (tmp_path / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    seen.clear()
    run_sweep(exp, config, tmp_path, seed=0, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (5, 6)


class Failing(Experiment):
    """Settings 0..3; setting 1 meets a bug (rerunning may help), setting 2 a bad-input error that
    only the setting can find (rerunning cannot)."""

    name = "failing"

    @dataclasses.dataclass
    class Config:
        kinds: tuple = ("bug", "input")

    def settings(self, config):
        return [{"i": i} for i in range(4)]

    def run_setting(self, config, setting, seed):
        if setting["i"] == 1 and "bug" in config.kinds:
            raise RuntimeError("boom")
        if setting["i"] == 2 and "input" in config.kinds:
            raise MdmprobError("bad value found late")
        return [record(setting, "x", seed % 1000)]


def test_a_failing_setting_is_named_and_the_others_kept(tmp_path):
    exp = Failing()
    with pytest.raises(SweepError, match="RuntimeError: boom.*rerun the same command to retry") \
            as info:
        run_sweep(exp, exp.Config(), tmp_path / "a")
    assert {r["i"] for r in info.value.result.records} == {0, 3}
    assert len((tmp_path / "a" / "records.jsonl").read_text().splitlines()) == 1 + 2
    with pytest.raises(SweepError, match="fails the same way: change them") as info:
        run_sweep(exp, exp.Config(kinds=("input",)), tmp_path / "b")
    assert "rerun the same" not in str(info.value)
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["failed"] == 1 and meta["settings_done"] == 3 and meta["complete"] is False


def test_configuration_errors_come_before_any_setting(tmp_path):
    exp = get_experiment("decoder-frontier")
    with pytest.raises(MdmprobError, match="decoders: decoder 'llada:steps=0'"):
        exp.make_config(**{**TINY, "decoders": ("mean_field_blocks", "llada:steps=0")})
    with pytest.raises(UnknownNameError, match="unknown model 'nosuch'"):
        exp.make_config(**{**TINY, "structures": ("nosuch",)})


def test_bad_input(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean 'decoder-frontier'"):
        get_experiment("decoder-fronteir")
    exp = get_experiment("decoder-frontier")
    with pytest.raises(UnknownNameError, match="did you mean 'samples'"):
        exp.make_config(sample=3)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(MdmprobError, match="not writable"):
        run_sweep(exp, exp.make_config(**TINY), blocker / "out")
    with pytest.raises(MdmprobError, match="backend 'spark'"):
        run_sweep(exp, exp.make_config(**TINY), tmp_path / "x", backend="spark")


def test_ray_backend_matches_local_and_reports_failures(tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
    exp = Failing()
    config = exp.Config()
    with pytest.raises(SweepError, match="2 of 4 settings of 'failing' failed") as ray_error:
        run_sweep(exp, config, tmp_path / "ray", seed=1, backend="ray")
    assert sorted(ray_error.value.result.failures.values()) == [
        "MdmprobError: bad value found late", "RuntimeError: boom"]
    with pytest.raises(SweepError) as local_error:
        run_sweep(exp, config, tmp_path / "local", seed=1)
    assert ray_error.value.result.records and \
        sorted(map(json.dumps, ray_error.value.result.records)) == \
        sorted(map(json.dumps, local_error.value.result.records))


def test_ray_address_nobody_answers_fails_fast(tmp_path):
    pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")
    exp = Failing()
    t0 = time.perf_counter()
    with pytest.raises(MdmprobError, match="no Ray cluster answers at 127.0.0.1:1"):
        run_sweep(exp, exp.Config(), tmp_path, backend="ray", address="127.0.0.1:1")
    assert time.perf_counter() - t0 < 30
    with pytest.raises(MdmprobError, match="is not host:port"):
        run_sweep(exp, exp.Config(), tmp_path, backend="ray", address="nohost")
