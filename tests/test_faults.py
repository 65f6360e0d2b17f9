"""Fault injection: runs killed (SIGINT, SIGTERM, SIGKILL) at random points, a full disk, a
corrupt journal, two runs on one folder, seed and config changed between runs. Each time the
final ``records.csv`` must equal an uninterrupted run's, nothing finished may be lost, and
nothing stale may ever be reported (``meta.json`` describes exactly the records beside it).

The toy experiment (``tests/fault_toy.py``) draws every value from its setting's seed, so a
record from another seed, another config or a lost setting changes the file. The many-kill
variants are marked slow.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import fault_toy
import pytest

from mdmprob.experiments.executor import (
    FolderInUseError,
    RunMismatchError,
    run_identity,
    run_sweep,
)
from mdmprob.outputs import OutputError

TOY = Path(fault_toy.__file__)
ROOT = TOY.parents[1]


def cli(out: Path, *args: str, delay: float = 0.0, wait: bool = True):
    """``mdmprob run fault-toy --out OUT ARGS`` in a subprocess (its Popen when not ``wait``)."""
    env = {**os.environ, "MDMPROB_TOY_DELAY": str(delay), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(TOY), "run", "fault-toy", "--out", str(out), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


@pytest.fixture
def inproc(monkeypatch, capsys):
    """``mdmprob run fault-toy --out OUT ARGS`` in this process: (status, stdout, stderr)."""
    from mdmprob.cli import main
    from mdmprob.experiments import base

    known = base.registry
    monkeypatch.setattr(base, "registry", lambda: {**known(), "fault-toy": fault_toy.EXPERIMENT})

    def run(out, *args):
        code = main(["run", "fault-toy", "--out", str(out), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """records.csv of uninterrupted runs, in process: {(seed, scale): text}."""
    root = tmp_path_factory.mktemp("reference")
    out = {}
    for seed, scale in ((0, 1.0), (1, 1.0), (0, 2.0)):
        folder = root / f"s{seed}x{scale}"
        run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(scale=scale), folder,
                  seed=seed)
        out[seed, scale] = (folder / "records.csv").read_text()
    assert out[0, 1.0] != out[1, 1.0] and out[0, 1.0] != out[0, 2.0]
    return out


def journal_entries(out: Path) -> list[dict]:
    lines = (out / "records.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"", "the journal ends with a complete line"
    return [json.loads(line) for line in lines[1:-1]]


def wait_for_entries(out: Path, k: int, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        path = out / "records.jsonl"
        if path.exists() and path.read_bytes().count(b"\n") >= k + 1:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {k} settings saved in {timeout} s")


def assert_consistent(out: Path, seed: int = 0, scale: float = 1.0) -> None:
    """meta.json names this run, and records.csv holds exactly the journal's settings."""
    meta = json.loads((out / "meta.json").read_text())
    identity = run_identity(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(scale=scale),
                            seed)
    assert meta["run_key"] == identity["run_key"] and meta["seed"] == seed
    rows = list(csv.DictReader(open(out / "records.csv")))
    saved = {e["key"] for e in journal_entries(out)}
    assert meta["settings_done"] == len(saved) == len({r["i"] for r in rows})
    assert meta["complete"] == (len(saved) == meta["settings"])


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_what_finished_and_the_rerun_completes(tmp_path, reference, sig, code):
    proc = cli(tmp_path, delay=0.25, wait=False)
    wait_for_entries(tmp_path, 2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    saved = len(journal_entries(tmp_path))
    assert proc.returncode == code, stderr
    assert f"interrupted: {saved} of 8 settings saved; rerun the same command to resume" in \
        " ".join(stderr.split())
    assert 2 <= saved < 8
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["complete"] is False and meta["interrupted"] == sig.name
    assert_consistent(tmp_path)
    rc, stdout, stderr = cli(tmp_path)
    assert rc == 0, stderr
    assert (tmp_path / "records.csv").read_text() == reference[0, 1.0]
    assert_consistent(tmp_path)


def kill_and_resume(tmp_path, reference, rng, kills: int) -> None:
    for _ in range(kills):
        proc = cli(tmp_path, delay=0.05, wait=False)
        time.sleep(rng.uniform(0.0, 2.5))  # start-up, a setting, or a journal write
        proc.kill()
        proc.wait()
    rc, _, stderr = cli(tmp_path)
    assert rc == 0, stderr
    assert (tmp_path / "records.csv").read_text() == reference[0, 1.0]
    assert_consistent(tmp_path)


def test_sigkill_at_random_points_loses_nothing(tmp_path, reference):
    kill_and_resume(tmp_path, reference, random.Random(0), kills=2)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(6))
def test_sigkill_many_times(tmp_path, reference, trial):
    kill_and_resume(tmp_path, reference, random.Random(100 + trial), kills=5)


def test_torn_and_corrupt_journal_lines_are_repaired(tmp_path, reference):
    run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(), tmp_path)
    path = tmp_path / "records.jsonl"
    lines = path.read_bytes().split(b"\n")[:-1]
    # line 3 garbled, the last one cut off mid-way (no newline): a kill or a full disk
    damaged = lines[:3] + [b'{"key": garbage'] + lines[4:-1] + [lines[-1][: len(lines[-1]) // 2]]
    path.write_bytes(b"\n".join(damaged))
    notes = []
    result = run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(), tmp_path,
                       notice=notes.append)
    assert len(notes) == 1 and "dropped 2" in notes[0]
    assert (tmp_path / "records.csv").read_text() == reference[0, 1.0]
    assert len(journal_entries(tmp_path)) == 8 and len(result.records) == 16
    # the next run appends after a clean last line and repeats nothing
    run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(), tmp_path,
              notice=notes.append)
    assert len(notes) == 1 and len(journal_entries(tmp_path)) == 8


def test_a_full_disk_is_a_typed_error_and_nothing_is_torn(tmp_path, reference, monkeypatch):
    real_write, calls = os.write, []

    def write(fd, data):  # the 4th journal append gets half its bytes on disk, then ENOSPC
        if os.readlink(f"/proc/self/fd/{fd}").endswith("records.jsonl"):
            calls.append(fd)
            if len(calls) == 4:
                real_write(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to find which file a write goes to")
    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OutputError, match="disk full .* 2 of 8 settings saved; free some space "
                                          "and rerun the same command to resume"):
        run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(), tmp_path)
    monkeypatch.undo()
    assert len(journal_entries(tmp_path)) == 2  # the torn bytes were cut back
    run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(), tmp_path)
    assert (tmp_path / "records.csv").read_text() == reference[0, 1.0]
    assert_consistent(tmp_path)


def test_a_full_disk_while_writing_records_csv(tmp_path, reference, monkeypatch):
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(OutputError, match="disk full writing .*records.csv.*8 of 8 settings saved"):
        run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(), tmp_path)
    monkeypatch.setattr(tempfile, "mkstemp", real)
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(), tmp_path)
    assert (tmp_path / "records.csv").read_text() == reference[0, 1.0]


def test_a_second_run_on_the_same_folder_fails_at_once(tmp_path, reference, inproc):
    first = cli(tmp_path, delay=0.5, wait=False)
    wait_for_entries(tmp_path, 1)
    rc, _, stderr = inproc(tmp_path)
    # the second run failed while the first still runs: it did not wait for the lock
    assert first.poll() is None, "the first run is still running"
    assert rc == 2 and "is in use by another mdmprob run" in " ".join(stderr.split())
    with pytest.raises(FolderInUseError, match=f"pid {first.pid}"):
        run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(), tmp_path)
    assert first.wait(timeout=60) == 0
    assert (tmp_path / "records.csv").read_text() == reference[0, 1.0]


def test_another_seed_or_config_is_refused_and_fresh_starts_over(tmp_path, reference, inproc):
    proc = cli(tmp_path, delay=0.2, wait=False)
    wait_for_entries(tmp_path, 2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    before = (tmp_path / "records.csv").read_text()
    for args, needle in ((["--seed", "1"], "seed 0 there, 1 now"),
                         (["-p", "scale=2"], "scale=1.0 there, scale=2.0 now")):
        rc, stdout, stderr = inproc(tmp_path, *args)
        message = " ".join(stderr.split())
        assert rc == 2 and needle in message and "--fresh" in message and "Rerun" in message
        assert (tmp_path / "records.csv").read_text() == before  # nothing stale reported
    with pytest.raises(RunMismatchError):
        run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(), tmp_path, seed=1)
    rc, _, stderr = inproc(tmp_path, "--seed", "1", "--fresh")
    assert rc == 0, stderr
    assert (tmp_path / "records.csv").read_text() == reference[1, 1.0]
    assert_consistent(tmp_path, seed=1)
    (aside,) = tmp_path.parent.glob(f"{tmp_path.name}.old-*")
    assert (aside / "records.csv").read_text() == before  # the old run is kept aside, intact
    rc, _, stderr = inproc(aside)  # and can still be resumed
    assert rc == 0 and (aside / "records.csv").read_text() == reference[0, 1.0]


def test_errors_a_rerun_cannot_fix_come_before_the_first_setting(tmp_path, inproc):
    for args, needle in ((["-p", "scale=abc"], "cannot parse parameter scale='abc'"),
                         (["-p", "n=0"], "n=0: 0 must be an integer in [1, inf]"),
                         (["-p", "scale=-1"], "scale=-1.0: -1.0 must be a number in [0, inf]")):
        rc, stdout, stderr = inproc(tmp_path / "x", *args)
        message = " ".join(stderr.split())
        assert rc == 2 and needle in message and "rerun" not in message, message
        assert not (tmp_path / "x" / "records.jsonl").exists()


def test_an_empty_journal_from_a_failed_first_write_is_started_again(tmp_path, reference):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "records.jsonl").write_bytes(b"")  # a full disk cut back the run's first line
    run_sweep(fault_toy.EXPERIMENT, fault_toy.EXPERIMENT.make_config(), tmp_path)
    assert (tmp_path / "records.csv").read_text() == reference[0, 1.0]
    assert_consistent(tmp_path)
