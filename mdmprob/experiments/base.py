"""Experiments as data: a config dataclass, a grid of independent settings, tidy records, a plot.

An :class:`Experiment` declares ``Config`` (a dataclass of parameters with defaults),
``settings(config)`` (the grid: a list of dicts of setting columns), ``run_setting(config,
setting, seed)`` (the records of one setting: dicts with the setting's columns plus ``metric``,
``value``, ``se``) and ``plot(records, config, out_dir)`` (figures written as PNG and SVG). The
executor (:mod:`mdmprob.experiments.executor`) runs the grid in-process or on Ray, streams records
to the output folder, resumes interrupted sweeps and writes the CSV, JSON and figures.

Each module of this package that defines ``EXPERIMENT`` is registered under its name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import pkgutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from mdmprob.errors import MdmprobError, unknown_name


class Experiment:
    """Base class of experiments; subclasses set ``name``, ``title``, ``Config`` and implement
    ``settings``, ``run_setting`` and ``plot``."""

    name: ClassVar[str] = "experiment"
    title: ClassVar[str] = ""
    Config: ClassVar[type] = object
    paper: ClassVar[dict[str, Any]] = {}  # the paper's claims this experiment checks, if any
    quick: ClassVar[dict[str, Any]] = {}  # parameters of a small configuration (reproduce --quick)
    workdir: Path | None = None  # the running sweep's output folder (for caches), set by run_sweep

    def settings(self, config) -> list[dict[str, Any]]:
        raise NotImplementedError

    def run_setting(self, config, setting: dict[str, Any], seed: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def plot(self, records: list[dict[str, Any]], config, out_dir: Path) -> list[Path]:
        return []

    def summary(self, records: list[dict[str, Any]], config) -> list[dict[str, Any]]:
        """Rows comparing our numbers with the paper's (for the reproduce report)."""
        return []

    # ---------------------------------------------------------------- config handling
    def make_config(self, **params: Any):
        """``Config(**params)``; unknown names get a suggestion, values are type-checked."""
        fields = {f.name: f for f in dataclasses.fields(self.Config)}
        for key in params:
            if key not in fields:
                raise unknown_name("parameter", key, fields, hint=f"(experiment {self.name!r})")
        config = self.Config(**params)
        check = getattr(config, "check", None)
        if check is not None:
            check()
        return config


def record(setting: dict[str, Any], metric: str, value, se=None, **extra) -> dict[str, Any]:
    """One tidy record: the setting's columns, ``metric``, ``value`` and ``se`` (None if exact)."""
    return {**setting, **extra, "metric": metric, "value": _num(value), "se": _num(se)}


def records_from(setting: dict[str, Any], metrics, keys: Iterable[str], **extra):
    """Records for ``keys`` of a mapping with ``<key>_se`` entries (e.g. an Evaluation)."""
    return [record(setting, k, metrics[k], metrics.get(k + "_se"), **extra) for k in keys
            if k in metrics]


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """A named thing with parameters, as experiments' configs write it:
    ``"llada:steps=4,block_length=3"`` -> ``("llada", {"steps": 4, "block_length": 3})``.
    Pairs are separated by ``,`` or ``:``; values are int, float, None or text."""
    name, _, rest = str(spec).partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.replace(":", ",").split(","))):
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise MdmprobError(f"spec {spec!r}: {item!r} is not key=value; write e.g. "
                               "'markov_chain:length=5,vocab=2'")
        params[key.strip()] = scalar(text.strip())
    if not name.strip():
        raise MdmprobError(f"spec {spec!r} has no name")
    return name.strip(), params


def scalar(text: str):
    """``"4"`` -> 4, ``"1e-8"`` -> 1e-08, ``"None"`` -> None, anything else stays text."""
    if text in ("None", "none"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def setting_key(setting: dict[str, Any]) -> str:
    """A canonical string naming a setting (its columns as sorted JSON)."""
    return json.dumps(setting, sort_keys=True, default=str)


def setting_seed(seed: int, setting: dict[str, Any]) -> int:
    """The seed of one setting: a hash of the sweep seed and the setting, the same on every
    backend and independent of the order settings run in."""
    digest = hashlib.sha256(f"{seed}|{setting_key(setting)}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def registry() -> dict[str, Experiment]:
    """Every experiment module of this package that defines ``EXPERIMENT``."""
    import mdmprob.experiments as package

    found: dict[str, Experiment] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in ("base", "executor", "report", "plotting") or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"mdmprob.experiments.{info.name}")
        experiment = getattr(module, "EXPERIMENT", None)
        if experiment is not None:
            found[experiment.name] = experiment
    return dict(sorted(found.items()))


def get_experiment(name: str) -> Experiment:
    experiments = registry()
    if name not in experiments:
        raise unknown_name("experiment", name, experiments)
    return experiments[name]


def config_dict(config) -> dict[str, Any]:
    return {k: _plain(v) for k, v in dataclasses.asdict(config).items()}


def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _num(v):
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        raise MdmprobError("a record value is NaN; report None (not available) or +inf instead")
    return v
