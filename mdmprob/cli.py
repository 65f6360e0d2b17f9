"""The ``mdmprob`` command: ``mdmprob models``, ``mdmprob info MODEL [-p k=v ...] [--json]``.

``--json`` prints one JSON document on stdout; progress and errors go to stderr. Bad input
(unknown model or parameter, unparsable value) exits with status 2 and a message saying what
to do.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mdmprob.errors import MdmprobError, unknown_name

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Exact analysis of generation order and parallel decoding in masked "
                       "diffusion models.")
out = Console()
err = Console(stderr=True)

ParamOpt = Annotated[list[str] | None, typer.Option(
    "-p", "--param", help="Model parameter as key=value (repeatable), e.g. -p eta=1e-8.")]


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """List the zoo's models with their parameters and defaults."""
    from mdmprob.structure import list_models, model_parameters

    zoo = {name: {"description": desc, "params": {k: _plain(v) for k, v in
                                                   model_parameters(name).items()}}
           for name, desc in list_models().items()}
    if as_json:
        print(json.dumps(zoo, indent=2))
        return
    table = Table(title="mdmprob models (load_model(name, **params) or a path to a .py file)")
    table.add_column("model", style="bold")
    table.add_column("description")
    table.add_column("parameters (defaults)")
    for name, entry in zoo.items():
        params = ", ".join(f"{k}={v}" for k, v in entry["params"].items())
        table.add_row(name, entry["description"], params)
    out.print(table)


@app.command()
def info(
    model: Annotated[str, typer.Argument(help="A zoo model name or a path to a model file.")],
    param: ParamOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    samples: Annotated[int, typer.Option(help="Monte Carlo sequences for blocks whose prefix "
                                              "space is too large to enumerate.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed of the Monte Carlo estimates.")] = 0,
    exact_limit: Annotated[int, typer.Option(help="Largest prefix space V^|P| enumerated "
                                                  "exactly.")] = 4096,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: MDMPROB_DEVICE or "
                                                    "cpu).")] = None,
):
    """The structure of MODEL and, per decoding block, its forward TC, the mean-field
    proposal's reverse TC and its violation rate (exact or Monte Carlo, as marked)."""
    from mdmprob.blockwise import block_report
    from mdmprob.structure import load_model

    structure = load_model(model, **parse_params(model, param or []))
    if samples < 2:
        raise MdmprobError(f"--samples {samples} is too small; use at least 2")
    with _progress(f"{structure.name}: blocks", len(structure.blocks), quiet=False) as tick:
        report = block_report(structure, samples=samples, seed=seed, exact_limit=exact_limit,
                              device=device, progress=tick)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)


@app.command()
def decoders(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """List the decoder presets with their parameters and defaults."""
    import inspect

    from mdmprob.decoders import PRESETS

    table = {name: {"description": (fn.__doc__ or "").strip().split("\n")[0],
                    "params": {p.name: _plain(p.default) for p in
                               inspect.signature(fn).parameters.values()
                               if p.default is not inspect.Parameter.empty}}
             for name, fn in sorted(PRESETS.items())}
    _print_listing("mdmprob decoders (mdmprob.decoders.get_decoder(name, **params))", "decoder",
                   table, as_json)


@app.command()
def experiments(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """List the experiments with their parameters and defaults."""
    import dataclasses

    from mdmprob.experiments import registry

    table = {name: {"description": exp.title,
                    "params": {f.name: _plain(f.default) for f in dataclasses.fields(exp.Config)}}
             for name, exp in registry().items()}
    _print_listing("mdmprob experiments (mdmprob run NAME -p key=value)", "experiment", table,
                   as_json)


@app.command("run")
def run_experiment(
    experiment: Annotated[str, typer.Argument(help="An experiment name (mdmprob experiments).")],
    param: ParamOpt = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Output folder (default: "
                                                "out/<experiment>).")] = None,
    seed: Annotated[int, typer.Option(help="Sweep seed; the same seed gives the same records.")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: MDMPROB_DEVICE or "
                                                    "cpu).")] = None,
    backend: Annotated[str, typer.Option(help="local (in-process) or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local "
                                                     "Ray instance).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
):
    """Run EXPERIMENT's grid of settings; write records.csv, meta.json and the figures to --out.
    An interrupted run resumes from what is already in the folder."""
    from mdmprob.experiments import get_experiment, run_sweep

    if device is not None and device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MdmprobError(f"--device {device!r} must be cpu or cuda")
    exp = get_experiment(experiment)
    config = exp.make_config(**_parse_config(exp, param or []))
    out = out_dir or f"out/{exp.name}"
    with _progress(f"{exp.name}: settings", len(exp.settings(config)), quiet=False) as tick:
        result = run_sweep(exp, config, out, seed=seed, backend=backend, address=address,
                           device=device, progress=tick)
    if as_json:
        print(json.dumps(result.as_json(), indent=2, default=str))
        return
    _print_records(result.records, exp.title)
    for figure in result.figures:
        print(f"figure: {figure}")
    print(f"records: {result.out_dir / 'records.csv'}  meta: {result.out_dir / 'meta.json'}")


@app.command()
def reproduce(
    out_dir: Annotated[str, typer.Option("--out", help="Output folder.")] = "out/reproduce",
    quick: Annotated[bool, typer.Option("--quick", help="Small configurations (minutes).")] = False,
    seed: Annotated[int, typer.Option(help="Sweep seed.")] = 0,
):
    """Run every experiment and write one Markdown report (ours beside the paper's numbers)."""
    from mdmprob.experiments.report import reproduce as run_all

    path = run_all(out_dir, quick=quick, seed=seed,
                   progress=lambda name: err.print(f"running {name} ...", highlight=False))
    print(f"report: {path}")


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="A zoo model name or a path to a model file.")],
    param: ParamOpt = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Output folder for checkpoint.pt "
                                                "(required; an interrupted training resumes "
                                                "from it).")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (default: NeuralConfig's "
                                                   "2000).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the weights, the data and the masks.")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: MDMPROB_DEVICE or "
                                                    "cpu).")] = None,
):
    """Train a small transformer MDM on exact samples of MODEL; print the checkpoint path and its
    exact model error KL(p || p_theta) against the oracle."""
    from pathlib import Path

    from mdmprob.denoisers import Oracle, model_error
    from mdmprob.denoisers.neural import NeuralConfig
    from mdmprob.structure import load_model
    from mdmprob.training import CHECKPOINT
    from mdmprob.training import train as train_model

    if device is not None and device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MdmprobError(f"--device {device!r} must be cpu or cuda")
    if not out_dir:
        raise MdmprobError("train needs --out DIR, the folder for checkpoint.pt")
    structure = load_model(model, **parse_params(model, param or []))
    extra = {} if steps is None else {"steps": steps}
    config = NeuralConfig(vocab=structure.vocab, n_tokens=structure.n_tokens, seed=seed, **extra)
    with _progress(f"{structure.name}: training steps", config.steps, quiet=False) as tick:
        neural, history = train_model(structure, config, out_dir, progress=tick, device=device)
    error = model_error(neural, Oracle(structure, device=neural.device), seed=seed)
    if history:
        print(f"final loss: {history[-1]['loss']:.4g} (step {history[-1]['step']})")
    print(f"checkpoint: {Path(out_dir) / CHECKPOINT}")
    print(f"model error KL(p‖p_theta) = {_pm(error.kl_true_model.value, error.kl_true_model.se)} "
          f"nats, KL(p_theta‖p) = {_pm(error.kl_model_true.value, error.kl_model_true.se)} nats")


@app.command("audit")
def audit_sampler(
    sampler: Annotated[str, typer.Argument(help="The sampler: path/to/file.py:function.")],
    model: Annotated[str, typer.Option("--model", "-m", help="The exact target: a zoo model or "
                                       "a model file.")] = "markov_chain",
    model_param: Annotated[list[str] | None, typer.Option(
        "--model-param", "-M", help="Model parameter key=value (repeatable).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "-p", "--param", help="Sampler keyword key=value (repeatable; JSON values).")] = None,
    samples: Annotated[int, typer.Option(help="Sequences to draw.")] = 1000,
    batch: Annotated[int, typer.Option(help="Rows per sampler call.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the first call (call i: seed + i).")] = 0,
    preset: Annotated[list[str] | None, typer.Option(
        "--preset", help="Preset to compare exactly, name:key=value,... (repeatable; default: "
                         "a standard list).")] = None,
    reference: Annotated[str | None, typer.Option(help="The law the sampler claims: a preset "
                                                      "spec or 'target' (p).")] = None,
    prompt: Annotated[str | None, typer.Option(help="Leading structure tokens, e.g. 0,2.")] = None,
    denoiser: Annotated[str | None, typer.Option(help="The model behind the sampler: 'oracle' "
                                                      "or path/to/file.py:function.")] = None,
    special_mass: Annotated[float, typer.Option(help="Probability the model gives its special "
                                                     "ids at masked positions.")] = 0.0,
    mask_id: Annotated[int | None, typer.Option(help="The model's mask id (default V).")] = None,
    time_limit: Annotated[float, typer.Option(help="Seconds one sampler call may take.")] = 300.0,
    out_dir: Annotated[str | None, typer.Option("--out", help="Folder for the outputs and "
                                                "report.json; an interrupted audit resumes.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
):
    """Run SAMPLER against the exact MODEL and measure its law: exact log p, KL, chi-square
    against p and the presets, and detectors. Exits with status 1 when a check fails."""
    from mdmprob.audit import audit, parse_prompt, parse_sampler_params
    from mdmprob.denoisers.loaders import load_denoiser
    from mdmprob.structure import load_model

    structure = load_model(model, **parse_params(model, model_param or []))
    lm_options = {"special_mass": special_mass}
    if mask_id is not None:
        lm_options["mask_id"] = mask_id
    with _progress(f"{sampler}: calls", math.ceil(samples / max(batch, 1)), quiet=False) as tick:
        report = audit(sampler, structure, samples=samples, batch=batch,
                       params=parse_sampler_params(param or []), prompt=parse_prompt(prompt),
                       seed=seed,
                       presets=preset, reference=reference, lm_options=lm_options,
                       denoiser=None if denoiser is None else load_denoiser(denoiser, structure),
                       time_limit=time_limit, out=out_dir, progress=tick)
    if as_json:
        print(json.dumps(report.as_json(), indent=2, default=str))
    else:
        print(report.summary())
    if not report.passed:
        raise SystemExit(1)  # typer.Exit's code is dropped outside standalone mode


def parse_params(model: str, pairs: list[str]) -> dict[str, Any]:
    """``["k=6", "eta=0.01"]`` -> ``{"k": 6, "eta": 0.01}``, typed by the parameter's default."""
    from mdmprob.structure import model_parameters

    return _parse_pairs(pairs, model_parameters(model), f"(model {model!r})")


def _parse_config(exp, pairs: list[str]) -> dict[str, Any]:
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(exp.Config)}
    return _parse_pairs(pairs, defaults, f"(experiment {exp.name!r})")


def _parse_pairs(pairs: list[str], defaults: dict[str, Any], where: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MdmprobError(f"parameter {pair!r} is not key=value; write e.g. -p eta=1e-8")
        if key not in defaults:
            raise unknown_name("parameter", key, defaults, hint=where)
        params[key] = _parse_value(key, text.strip(), defaults[key])
    return params


def _print_listing(title: str, kind: str, entries: dict[str, dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(entries, indent=2, default=str))
        return
    table = Table(title=title)
    table.add_column(kind, style="bold")
    table.add_column("description")
    table.add_column("parameters (defaults)")
    for name, entry in entries.items():
        table.add_row(name, entry["description"],
                      ", ".join(f"{k}={v}" for k, v in entry["params"].items()))
    out.print(table)


def _print_records(records: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    columns: list[str] = []
    for r in records:
        columns += [k for k in r if k not in columns and k not in ("metric", "value", "se")]
    for col in columns + ["metric", "value"]:
        table.add_column(col, justify="right")
    for r in records:
        table.add_row(*[str(r.get(c, "")) for c in columns], r["metric"],
                      _pm(r["value"], r["se"]))
    out.print(table)


def _parse_value(key: str, text: str, default: Any) -> Any:
    from mdmprob.experiments.base import scalar

    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple | list):
            value = json.loads(text) if text.startswith("[") else [
                scalar(t.strip()) for t in text.split(",") if t.strip()]
            return tuple(value)
        if default is None:
            return json.loads(text)
        return text
    except (ValueError, json.JSONDecodeError):
        kind = type(default).__name__ if default is not None else "JSON"
        raise MdmprobError(f"cannot parse parameter {key}={text!r} as {kind} "
                           f"(default {default!r})") from None


def _print_report(r: dict[str, Any]) -> None:
    out.print(f"[bold]{r['model']}[/bold]  {r['params']}")
    out.print(f"tokens {r['n_tokens']}, vocab {r['vocab']}, blocks {len(r['blocks'])}, "
              f"latents {r['n_latents']}, factors {r['n_factors']}, "
              f"elimination width {r['elimination_width']}")
    table = Table(title="per decoding block (nats); ± = one standard error (Monte Carlo)")
    for col in ("block", "positions", "forward TC  E_p", "reverse TC of mean-field  E_q",
                "mean-field violation", "exact"):
        table.add_column(col, justify="right")
    for b in r["blocks"]:
        pos = b["positions"]
        span = f"{pos[0]}..{pos[-1]}" if pos == list(range(pos[0], pos[-1] + 1)) else str(pos)
        table.add_row(str(b["index"]), span, _pm(b["forward_tc"], b["forward_tc_se"]),
                      _pm(b["reverse_tc_mean_field"], b["reverse_tc_mean_field_se"]),
                      _pm(b["violation_mean_field"], b["violation_mean_field_se"]),
                      "exact" if b["exact"] else f"MC n={r['samples']}")
    out.print(table)
    out.print(f"KL(p‖q_MF) (information loss) = sum of forward TCs = "
              f"{_pm(r['forward_kl_mean_field'], r['forward_kl_mean_field_se'])} nats")
    out.print(f"KL(q_MF‖p) (sampling risk)    = sum of reverse TCs = "
              f"{_pm(r['reverse_kl_mean_field'], r['reverse_kl_mean_field_se'])} nats")


def _pm(value, se) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "+inf"
    return f"{value:.4g}" if se is None else f"{value:.4g} ± {se:.2g}"


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


class _progress:
    """A rich progress bar on stderr (hidden when stderr is not a terminal)."""

    def __init__(self, label: str, total: int, quiet: bool):
        from rich.progress import Progress

        self.progress = Progress(console=err, transient=True, disable=quiet)
        self.label, self.total = label, total

    def __enter__(self):
        self.progress.__enter__()
        task = self.progress.add_task(self.label, total=self.total)
        return lambda done, total: self.progress.update(task, completed=done, total=total)

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mdmprob`` console script."""
    import os

    import torch

    # The engine's tensors are small and many: one intra-op thread is fastest on a CPU
    # (MDMPROB_THREADS overrides).
    torch.set_num_threads(int(os.environ.get("MDMPROB_THREADS", "1")))
    try:
        app(args=argv, prog_name="mdmprob", standalone_mode=False)
    except MdmprobError as e:
        from rich.text import Text

        err.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)
        return 2
    except (typer.Exit, SystemExit) as e:
        return int(getattr(e, "exit_code", getattr(e, "code", 0)) or 0)
    except Exception as e:  # click usage errors (unknown option, missing argument)
        # typer may bundle its own click: recognise its exceptions by what they can do
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show(file=sys.stderr)
            return 2
        if type(e).__name__ == "Abort":
            return 130
        raise
    return 0


def run() -> None:
    """Console-script wrapper: exits with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
