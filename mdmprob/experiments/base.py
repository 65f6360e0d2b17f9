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

from mdmprob.checks import check_budget, mc_bytes_per_sample, memory_budget  # noqa: F401
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
    ``"llada:steps=4:block_length=3"`` -> ``("llada", {"steps": 4, "block_length": 3})``.

    Syntax: ``name`` or ``name:key=value:key=value...``; values are int, float, None or text.
    The older ``name:key=value,key=value`` is still read (a ``,`` inside one spec), but on the
    command line ``,`` separates list items, so write ``:`` there (see :func:`split_list`)."""
    name, _, rest = str(spec).partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.replace(",", ":").split(":"))):
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise MdmprobError(f"spec {spec!r}: {item!r} is not key=value; write e.g. "
                               "'markov_chain:length=5:vocab=2'")
        if key.strip() in params:
            raise MdmprobError(f"spec {spec!r} sets {key.strip()!r} twice")
        params[key.strip()] = scalar(text.strip())
    if not name.strip():
        raise MdmprobError(f"spec {spec!r} has no name; write e.g. 'llada:steps=4'")
    return name.strip(), params


def split_list(text: str) -> list[str]:
    """A command-line list ``"a,b:k=1:j=2,c"`` -> ``["a", "b:k=1:j=2", "c"]``.

    ``,`` separates items. A piece that is only ``key=value`` cannot be an item (names have no
    ``=``), so it continues the spec before it: the older ``llada:steps=2,block_length=3`` stays
    one spec."""
    items: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        head = piece.partition("=")[0]
        if "=" in piece and ":" not in head and items and ":" in items[-1]:
            items[-1] += ":" + piece
        else:
            items.append(piece)
    return items


def check_decoder_specs(field: str, specs) -> None:
    """Every spec of ``field`` names a decoder preset with valid parameters (built once)."""
    from mdmprob.decoders import PRESETS, get_decoder

    if not specs:
        raise MdmprobError(f"{field} is empty; name at least one decoder, e.g. {field}=llada")
    for spec in specs:
        name, params = parse_spec(spec)
        if name not in PRESETS:
            raise unknown_name("decoder", name, PRESETS, hint=f"(in {field}: {spec!r})")
        _build_checked(f"{field}: decoder {spec!r}", PRESETS[name], params, get_decoder, name)


def check_structure_specs(field: str, specs, max_tokens: int | None = None) -> None:
    """Every spec of ``field`` names a zoo model (or model file) with valid parameters."""
    from mdmprob.structure import load_model

    if not specs:
        raise MdmprobError(f"{field} is empty; name at least one structure, e.g. "
                           f"{field}=parity_block:k=4")
    for spec in specs:
        name, params = parse_spec(spec)
        try:
            s = load_model(name, **params)
        except MdmprobError as e:
            raise type(e)(f"{field}: structure {spec!r}: {e}") from None
        if max_tokens is not None and s.n_tokens > max_tokens:
            raise MdmprobError(f"{field}: structure {spec!r} has {s.n_tokens} tokens, more than "
                               f"max_tokens={max_tokens}; choose a smaller instance")


def load_structure(spec: str, max_tokens: int):
    """The zoo model named by ``spec`` (see :func:`parse_spec`), at most ``max_tokens`` tokens."""
    from mdmprob.structure import load_model

    name, params = parse_spec(spec)
    structure = load_model(name, **params)
    if structure.n_tokens > max_tokens:
        raise MdmprobError(f"structure {spec!r} has {structure.n_tokens} tokens; exact mode here "
                           f"is for small structures (max_tokens={max_tokens})")
    return structure


def check_numbers(field: str, values, *, low: float | None = None, high: float | None = None,
                  low_open: bool = False, integer: bool = False, nonempty: bool = True) -> None:
    """Every element of ``values`` is a number (an integer if ``integer``) in the range
    ``[low, high]`` (``(low, high]`` if ``low_open``); ``values`` may be one number."""
    many = isinstance(values, tuple | list)
    items = list(values) if many else [values]
    if many and nonempty and not items:
        raise MdmprobError(f"{field} is empty; give at least one value")
    kind = "an integer" if integer else "a number"
    rng = (f" in {'(' if low_open else '['}{low if low is not None else '-inf'}, "
           f"{high if high is not None else 'inf'}]") if low is not None or high is not None else ""
    for v in items:
        ok = not isinstance(v, bool) and isinstance(v, int | float) and not (
            integer and not isinstance(v, int))
        if ok:
            ok = v == v and (low is None or (v > low if low_open else v >= low)) and (
                high is None or v <= high)
        if not ok:
            where = f"{field}={_show(values)}" if many else f"{field}={v!r}"
            raise MdmprobError(f"{where}: {v!r} must be {kind}{rng}")


def _build_checked(where: str, fn, params: dict[str, Any], build, name: str) -> None:
    import inspect

    known = inspect.signature(fn).parameters
    for key in params:
        if key not in known:
            raise unknown_name("parameter", key, known, hint=f"({where})")
    try:
        build(name, **params)
    except MdmprobError as e:
        raise type(e)(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise MdmprobError(f"{where}: {e}") from None


def _show(values) -> str:
    return ",".join(str(v) for v in values) if isinstance(values, tuple | list) else str(values)


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
