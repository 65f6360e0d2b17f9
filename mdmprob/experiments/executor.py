"""Run an experiment's grid of settings: in-process (default) or as Ray tasks.

Records stream into ``<out>/records.jsonl`` as settings finish (one JSON line per setting, with
its key); a rerun on the same folder skips the settings already there (resume: nothing lost,
nothing repeated). At the end the folder holds ``records.csv`` (tidy: one row per setting and
metric, with standard errors), ``meta.json`` (config, seed, package versions, device, timings)
and the figures (PNG and SVG). Files are written to a temporary name and renamed, so an
interrupted run never leaves a half-written file. Each setting's seed is a hash of the sweep
seed and the setting, so both backends give the same records.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdmprob.errors import MdmprobError
from mdmprob.experiments.base import Experiment, config_dict, setting_key, setting_seed


@dataclass
class SweepResult:
    experiment: str
    records: list[dict[str, Any]]
    meta: dict[str, Any]
    out_dir: Path
    figures: list[Path] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # setting key -> error message

    def as_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "records": self.records, "meta": self.meta}


def run_sweep(experiment: Experiment, config, out_dir: str | Path, *, seed: int = 0,
              backend: str = "local", address: str | None = None, device: str | None = None,
              progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run every setting of ``experiment`` under ``config`` and write the output folder."""
    out_dir = _prepare(out_dir)
    experiment.workdir = out_dir
    settings = experiment.settings(config)
    keys = [setting_key(s) for s in settings]
    if len(set(keys)) != len(keys):
        raise MdmprobError(f"experiment {experiment.name!r} produced duplicate settings")
    stream = out_dir / "records.jsonl"
    done = _load_stream(stream, set(keys))
    todo = [(k, s) for k, s in zip(keys, settings, strict=True) if k not in done]
    timings: dict[str, float] = {k: v["seconds"] for k, v in done.items()}
    failures: dict[str, str] = {}
    start = time.perf_counter()
    if progress:
        progress(len(done), len(settings))

    def finished(key: str, records: list[dict] | None, seconds: float, error: str | None):
        if error is not None:
            failures[key] = error
        else:
            entry = {"key": key, "seconds": seconds, "records": records}
            done[key] = entry
            timings[key] = seconds
            with open(stream, "a") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if progress:
            progress(len(done) + len(failures), len(settings))

    if backend == "local":
        _run_local(experiment, config, todo, seed, device, finished)
    elif backend == "ray":
        _run_ray(experiment, config, todo, seed, device, address, finished)
    else:
        raise MdmprobError(f"backend {backend!r} must be 'local' or 'ray'")
    records = [r for k in keys if k in done for r in done[k]["records"]]
    meta = {
        "experiment": experiment.name, "config": config_dict(config), "seed": seed,
        "backend": backend, "device": device or os.environ.get("MDMPROB_DEVICE", "cpu"),
        "versions": _versions(), "timings": {"total_seconds": time.perf_counter() - start,
                                             "settings": timings},
        "settings": len(settings), "failed": len(failures),
    }
    _write_csv(out_dir / "records.csv", records)
    _write_text(out_dir / "meta.json", json.dumps(meta, indent=2, default=str))
    figures = experiment.plot(records, config, out_dir) if records and not failures else []
    result = SweepResult(experiment.name, records, meta, out_dir, figures, failures)
    if failures:
        first = next(iter(failures.items()))
        raise SweepError(result, f"{len(failures)} of {len(settings)} settings of "
                                 f"{experiment.name!r} failed; first: setting {first[0]}: {first[1]}. "
                                 f"The other settings' records are kept in {stream}; rerun to retry.")
    return result


class SweepError(MdmprobError):
    """Some settings failed; ``result`` holds the records of the others."""

    def __init__(self, result: SweepResult, message: str):
        super().__init__(message)
        self.result = result


def _run_local(experiment, config, todo, seed, device, finished):
    for key, setting in todo:
        t0 = time.perf_counter()
        try:
            records = _call_setting(experiment, config, setting, setting_seed(seed, setting), device)
        except MdmprobError as e:
            finished(key, None, 0.0, f"{type(e).__name__}: {e}")
            continue
        except Exception as e:  # a bug in one setting must not lose the others
            finished(key, None, 0.0, f"{type(e).__name__}: {e}")
            continue
        finished(key, records, time.perf_counter() - t0, None)


def _run_ray(experiment, config, todo, seed, device, address, finished):
    try:
        import ray
    except ImportError as e:
        raise MdmprobError("--backend ray needs Ray: pip install -c constraints-cpu.txt "
                           "'mdmprob[ray]'") from e
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": os.cpu_count() or 1}
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False,
                 **kwargs)
    try:
        gpus = 1 if (device or "").startswith("cuda") else 0
        remote = ray.remote(num_gpus=gpus)(_timed_setting)
        pending = {remote.remote(experiment, config, s, setting_seed(seed, s), device): k
                   for k, s in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ready[0])
            try:
                records, seconds = ray.get(ready[0])
                finished(key, records, seconds, None)
            except Exception as e:  # RayTaskError wraps the setting's own exception
                cause = getattr(e, "cause", None) or e
                finished(key, None, 0.0, f"{type(cause).__name__}: {cause}")
    finally:
        if started_here:
            ray.shutdown()


def _timed_setting(experiment, config, setting, seed, device):
    import torch

    torch.set_num_threads(1)  # one task per core; the engine's tensors are small
    t0 = time.perf_counter()
    records = _call_setting(experiment, config, setting, seed, device)
    return records, time.perf_counter() - t0


def _call_setting(experiment, config, setting, seed, device):
    if device:
        os.environ["MDMPROB_DEVICE"] = device
    return experiment.run_setting(config, dict(setting), seed)


def _prepare(out_dir) -> Path:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise MdmprobError(f"output folder {str(out_dir)!r} is not writable ({e.strerror}); "
                           "pass --out with a folder you can write to") from e
    return out_dir


def _load_stream(stream: Path, keys: set[str]) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if not stream.exists():
        return done
    with open(stream) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by an interruption: that setting reruns
            if entry.get("key") in keys:
                done[entry["key"]] = entry
    return done


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for r in records:
        for k in r:
            if k not in columns and k not in ("metric", "value", "se"):
                columns.append(k)
    columns += ["metric", "value", "se"]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("mdmprob", "torch", "pyro-ppl", "numpy", "networkx", "arviz", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
