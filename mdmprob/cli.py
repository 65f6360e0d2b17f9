"""The ``mdmprob`` command: ``models``, ``decoders``, ``experiments``, ``info``, ``run``,
``reproduce``, ``train``.

``--json`` prints one strict JSON document on stdout (+inf as ``"+inf"``, see
:mod:`mdmprob.outputs`); progress and errors go to stderr. Exit status: 0 on success, 2 on bad
input or a failed run (with a message saying what to do), 130 / 143 when SIGINT / SIGTERM stopped
a run (what was finished is saved; rerunning the same command resumes).

Start-up is instant: this module imports neither torch nor Pyro. The listings read the zoo, the
presets and the experiments from their source (:mod:`mdmprob.catalog`); each command imports what
it computes with inside its own body. A new subcommand is one decorated function::

    @app.command()
    def audit(model: str, as_json: JsonOpt = False):
        \"\"\"One line of help.\"\"\"
        from mdmprob.something import work   # heavy imports here, not at the top

        emit(work(model), as_json, render=print)
"""

from __future__ import annotations

import json
import math
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mdmprob import __version__
from mdmprob.errors import MdmprobError, unknown_name

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Exact analysis of generation order and parallel decoding in masked "
                       "diffusion models.")
out = Console()
err = Console(stderr=True)

ParamOpt = Annotated[list[str] | None, typer.Option(
    "-p", "--param", help="Parameter as key=value (repeatable), e.g. -p eta=1e-8. Lists: "
                          "-p etas=1e-8,1e-4; specs: -p decoders=llada:steps=2:block_length=3,"
                          "mean_field_blocks.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda (default: MDMPROB_DEVICE or "
                                                    "cpu).")]


def _version(value: bool) -> None:
    if value:
        print(f"mdmprob {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False):
    """Exact analysis of generation order and parallel decoding in masked diffusion models."""


# ------------------------------------------------------------------------------ listings
@app.command()
def models(as_json: JsonOpt = False):
    """List the zoo's models with their parameters and defaults."""
    from mdmprob import catalog

    _print_listing("mdmprob models (load_model(name, **params) or a path to a .py file)", "model",
                   catalog.models(), as_json)


@app.command()
def decoders(as_json: JsonOpt = False):
    """List the decoder presets with their parameters and defaults."""
    from mdmprob import catalog

    _print_listing("mdmprob decoders (mdmprob.decoders.get_decoder(name, **params); in an "
                   "experiment: name:key=value:key=value)", "decoder", catalog.decoders(), as_json)


@app.command()
def experiments(as_json: JsonOpt = False):
    """List the experiments with their parameters and defaults."""
    from mdmprob import catalog

    _print_listing("mdmprob experiments (mdmprob run NAME -p key=value)", "experiment",
                   catalog.experiments(), as_json)


# ------------------------------------------------------------------------------ computing
@app.command()
def info(
    model: Annotated[str, typer.Argument(help="A zoo model name or a path to a model file.")],
    param: ParamOpt = None,
    as_json: JsonOpt = False,
    samples: Annotated[int, typer.Option(help="Monte Carlo sequences for blocks whose prefix "
                                              "space is too large to enumerate.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed of the Monte Carlo estimates.")] = 0,
    exact_limit: Annotated[int, typer.Option(help="Largest prefix space V^|P| enumerated "
                                                  "exactly.")] = 4096,
    device: DeviceOpt = None,
):
    """The structure of MODEL and, per decoding block (numbered from 1), its forward TC, the
    mean-field proposal's reverse TC and its violation rate (exact or Monte Carlo, as marked)."""
    _compute_setup()
    from mdmprob.blockwise import block_report
    from mdmprob.structure import load_model

    device = check_device(device)
    structure = load_model(model, **parse_params(model, param or []))
    if samples < 2:
        raise MdmprobError(f"--samples {samples} is too small; use at least 2")
    with _progress(f"{structure.name}: blocks", len(structure.blocks)) as tick:
        report = block_report(structure, samples=samples, seed=seed, exact_limit=exact_limit,
                              device=device, progress=tick)
    emit(report, as_json, _print_report)


@app.command("run")
def run_experiment(
    experiment: Annotated[str, typer.Argument(help="An experiment name (mdmprob experiments).")],
    param: ParamOpt = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Output folder (default: "
                                                "out/<experiment>).")] = None,
    seed: Annotated[int, typer.Option(help="Sweep seed; the same seed gives the same records.")] = 0,
    device: DeviceOpt = None,
    backend: Annotated[str, typer.Option(help="local (in-process) or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address host:port (default: "
                                                     "a local Ray instance).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over: move a folder holding "
                                        "another run aside (to <out>.old-<time>).")] = False,
    as_json: JsonOpt = False,
):
    """Run EXPERIMENT's grid of settings; write records.csv, meta.json and the figures to --out.
    Rerunning the same command resumes an interrupted run; a folder holding another run's records
    (other parameters or seed) is refused unless --fresh."""
    _compute_setup()
    from mdmprob.experiments import get_experiment, run_sweep

    device = check_device(device)
    if backend not in ("local", "ray"):
        raise MdmprobError(f"--backend {backend!r} must be local or ray")
    exp = get_experiment(experiment)
    config = exp.make_config(**parse_config(exp, param or []))
    target = out_dir or f"out/{exp.name}"
    with _progress(f"{exp.name}: settings", len(exp.settings(config))) as tick:
        result = run_sweep(exp, config, target, seed=seed, backend=backend, address=address,
                           device=device, progress=tick, fresh=fresh, notice=_notice)
    if as_json:
        emit(result.as_json(), True, None)
        return
    print_records(result.records, exp.title)
    for figure in result.figures:
        print(f"figure: {figure}")
    print(f"records: {result.out_dir / 'records.csv'}  meta: {result.out_dir / 'meta.json'}")


@app.command()
def reproduce(
    out_dir: Annotated[str, typer.Option("--out", help="Output folder.")] = "out/reproduce",
    quick: Annotated[bool, typer.Option("--quick", help="Small configurations (minutes); their "
                                        "verdicts are marked as quick-mode.")] = False,
    seed: Annotated[int, typer.Option(help="Sweep seed.")] = 0,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start every experiment over (old "
                                        "folders are moved aside).")] = False,
):
    """Run every experiment and write one Markdown report (ours beside the paper's numbers)."""
    _compute_setup()
    from mdmprob.experiments.report import reproduce as run_all

    path = run_all(out_dir, quick=quick, seed=seed, fresh=fresh, notice=_notice,
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
    device: DeviceOpt = None,
):
    """Train a small transformer MDM on exact samples of MODEL; print the checkpoint path and its
    exact model error KL(p || p_theta) against the oracle."""
    _compute_setup()
    from pathlib import Path

    from mdmprob.denoisers import Oracle, model_error
    from mdmprob.denoisers.neural import NeuralConfig
    from mdmprob.structure import load_model
    from mdmprob.training import CHECKPOINT
    from mdmprob.training import train as train_model

    device = check_device(device)
    if not out_dir:
        raise MdmprobError("train needs --out DIR, the folder for checkpoint.pt")
    structure = load_model(model, **parse_params(model, param or []))
    extra = {} if steps is None else {"steps": steps}
    config = NeuralConfig(vocab=structure.vocab, n_tokens=structure.n_tokens, seed=seed, **extra)
    with _progress(f"{structure.name}: training steps", config.steps) as tick:
        neural, history = train_model(structure, config, out_dir, progress=tick, device=device)
    error = model_error(neural, Oracle(structure, device=neural.device), seed=seed)
    if history:
        print(f"final loss: {history[-1]['loss']:.4g} (step {history[-1]['step']})")
    print(f"checkpoint: {Path(out_dir) / CHECKPOINT}")
    print(f"model error KL(p‖p_theta) = {_pm(error.kl_pq.value, error.kl_pq.se)} "
          f"nats, KL(p_theta‖p) = {_pm(error.kl_qp.value, error.kl_qp.se)} nats")


# ------------------------------------------------------------------------------ helpers
def emit(document: Any, as_json: bool, render) -> None:
    """Print ``document`` as strict JSON (``as_json``) or with ``render(document)``."""
    if as_json:
        from mdmprob.outputs import dumps

        print(dumps(document, indent=2))
    else:
        render(document)


def check_device(device: str | None) -> str | None:
    """``device`` if torch can use it (cpu, cuda, cuda:N), else a typed error saying why."""
    if device is None:
        return None
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not (kind == "cuda" and index.isdigit())):
        raise MdmprobError(f"--device {device!r} must be cpu, cuda or cuda:N")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise MdmprobError(f"--device {device}: this torch build sees no CUDA device "
                               f"(torch {torch.__version__}, cuda available: False); use --device "
                               "cpu or install a CUDA build of torch")
        if index and int(index) >= torch.cuda.device_count():
            raise MdmprobError(f"--device {device}: only {torch.cuda.device_count()} CUDA "
                               "device(s); use cuda:0")
    return device


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
    with _progress(f"{sampler}: calls", math.ceil(samples / max(batch, 1))) as tick:
        report = audit(sampler, structure, samples=samples, batch=batch,
                       params=parse_sampler_params(param or []), prompt=parse_prompt(prompt),
                       seed=seed,
                       presets=preset, reference=reference, lm_options=lm_options,
                       denoiser=None if denoiser is None else load_denoiser(denoiser, structure),
                       time_limit=time_limit, out=out_dir, progress=tick)
    emit(report.as_json(), as_json, lambda _: print(report.summary()))
    if not report.passed:
        raise SystemExit(1)  # typer.Exit's code is dropped outside standalone mode


def parse_params(model: str, pairs: list[str]) -> dict[str, Any]:
    """``["k=6", "eta=0.01"]`` -> ``{"k": 6, "eta": 0.01}``, typed by the parameter's default."""
    from mdmprob.structure import model_parameters

    return _parse_pairs(pairs, model_parameters(model), f"(model {model!r})")


def parse_config(exp, pairs: list[str]) -> dict[str, Any]:
    """An experiment's ``-p key=value`` pairs, typed by the Config field's default."""
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


def _parse_value(key: str, text: str, default: Any) -> Any:
    from mdmprob.experiments.base import scalar, split_list

    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            try:
                return int(text)
            except ValueError:  # 1e8 is an integer too
                value = float(text)
                if not value.is_integer():
                    raise
                return int(value)
        if isinstance(default, float):
            value = float(text)
            if math.isnan(value):
                raise ValueError
            return value
        if isinstance(default, tuple | list):
            if text.startswith("["):
                value = json.loads(text)
                if not isinstance(value, list):
                    raise ValueError
                return tuple(value)
            items = split_list(text)
            kinds = {type(x) for x in default if not isinstance(x, bool)}
            values = tuple(scalar(t) for t in items)
            if kinds and kinds <= {int, float}:  # a list of numbers: every item must be one
                bad = [t for t, v in zip(items, values, strict=True)
                       if isinstance(v, str) or v is None]
                if bad:
                    raise MdmprobError(f"cannot parse parameter {key}={text!r}: {bad[0]!r} is not "
                                       f"a number (default {','.join(map(str, default))})")
            return values
        if default is None:
            return json.loads(text)
        return text
    except MdmprobError:
        raise
    except (ValueError, json.JSONDecodeError):
        kind = type(default).__name__ if default is not None else "JSON"
        raise MdmprobError(f"cannot parse parameter {key}={text!r} as {kind} "
                           f"(default {default!r})") from None


def _print_listing(title: str, kind: str, entries: dict[str, dict], as_json: bool) -> None:
    if as_json:
        emit(entries, True, None)
        return
    table = Table(title=title)
    table.add_column(kind, style="bold")
    table.add_column("description")
    table.add_column("parameters (defaults)")
    for name, entry in entries.items():
        table.add_row(name, entry["description"],
                      ", ".join(f"{k}={v}" for k, v in entry["params"].items()))
    out.print(table)


def print_records(records: list[dict[str, Any]], title: str) -> None:
    """The records as a wide table: one row per setting, one column per metric (value ± se).
    Columns only some records have (e.g. ``tau``) go into the metric's column name."""
    if not records:
        out.print(f"{title}: no records")
        return
    keys = [k for k in records[0] if k not in ("metric", "value", "se")]
    setting_cols = [k for k in keys if all(k in r for r in records)]
    rows: dict[tuple, dict[str, str]] = {}
    metrics: list[str] = []
    for r in records:
        extra = [f"{k}={r[k]:g}" if isinstance(r[k], float) else f"{k}={r[k]}"
                 for k in r if k not in setting_cols and k not in ("metric", "value", "se")]
        name = r["metric"] + (f" ({', '.join(extra)})" if extra else "")
        if name not in metrics:
            metrics.append(name)
        rows.setdefault(tuple(r[k] for k in setting_cols), {})[name] = _pm(r["value"], r["se"])
    table = Table(title=title, caption="kl_qp = KL(q‖p) (sampling risk), kl_pq = KL(p‖q) "
                                       "(information loss), in nats; ± one standard error")
    for col in setting_cols:
        table.add_column(col, justify="left", no_wrap=True)
    for name in metrics:
        table.add_column(name, justify="right", no_wrap=True)
    for key, values in rows.items():
        table.add_row(*[_cell(v) for v in key], *[values.get(m, "") for m in metrics])
    # a wide table is read whole: never squeeze it into 80 columns when stdout is a file or pipe
    console = out if out.is_terminal else Console(width=max(out.width, 400))
    console.print(table, crop=False)


def _print_report(r: dict[str, Any]) -> None:
    out.print(f"[bold]{r['model']}[/bold]  {r['params']}")
    out.print(f"tokens {r['n_tokens']}, vocab {r['vocab']}, blocks {len(r['blocks'])}, "
              f"latents {r['n_latents']}, factors {r['n_factors']}, "
              f"elimination width {r['elimination_width']}")
    from rich.markup import escape

    out.print(f"token sites: {_names(r['tokens'])}", highlight=False)
    table = Table(title="per decoding block (nats); ± = one standard error (Monte Carlo)")
    for col in ("block", "positions", "tokens", "forward TC  E_p", "reverse TC of mean-field  E_q",
                "mean-field violation", "exact"):
        table.add_column(col, justify="right")
    for b in r["blocks"]:
        pos = b["positions"]
        span = f"{pos[0]}..{pos[-1]}" if pos == list(range(pos[0], pos[-1] + 1)) else str(pos)
        first, last = r["tokens"][pos[0]], r["tokens"][pos[-1]]
        table.add_row(str(b["block"]), span, escape(first if first == last else f"{first}..{last}"),
                      _pm(b["forward_tc"], b["forward_tc_se"]),
                      _pm(b["reverse_tc_mean_field"], b["reverse_tc_mean_field_se"]),
                      _pm(b["violation_mean_field"], b["violation_mean_field_se"]),
                      "exact" if b["exact"] else f"MC n={r['samples']}")
    out.print(table)
    out.print(f"KL(p‖q_MF) (information loss) = sum of forward TCs = "
              f"{_pm(r['kl_pq_mean_field'], r['kl_pq_mean_field_se'])} nats")
    out.print(f"KL(q_MF‖p) (sampling risk)    = sum of reverse TCs = "
              f"{_pm(r['kl_qp_mean_field'], r['kl_qp_mean_field_se'])} nats")


def _names(names: list[str], keep: int = 4) -> str:
    """``a, b, c, d, e, f`` -> ``a, b, …, f`` past ``2 * keep`` names (rich markup escaped)."""
    from rich.markup import escape

    shown = names if len(names) <= 2 * keep else [*names[:keep], "…", *names[-keep:]]
    return escape(", ".join(shown))


def _cell(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _pm(value, se) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value:.4g}" if se is None else f"{value:.4g} ± {se:.2g}"


def _notice(message: str) -> None:
    from rich.text import Text

    err.print(Text.assemble(("note: ", "bold yellow"), message), soft_wrap=True)


def _compute_setup() -> None:
    """Before a computing command: one intra-op torch thread (the engine's tensors are small and
    many; ``MDMPROB_THREADS`` overrides)."""
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("MDMPROB_THREADS", "1")))


class _progress:
    """A rich progress bar on stderr (hidden when stderr is not a terminal)."""

    def __init__(self, label: str, total: int):
        from rich.progress import Progress

        self.progress = Progress(console=err, transient=True)
        self.label, self.total = label, total

    def __enter__(self):
        self.progress.__enter__()
        task = self.progress.add_task(self.label, total=self.total)
        return lambda done, total: self.progress.update(task, completed=done, total=total)

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mdmprob`` console script; returns the exit status."""
    from rich.text import Text

    try:
        result = app(args=argv, prog_name="mdmprob", standalone_mode=False)
    except MdmprobError as e:
        code = getattr(e, "exit_code", 2)
        label = ("interrupted: ", "bold yellow") if code != 2 else ("error: ", "bold red")
        message = str(e).removeprefix("interrupted: ")
        err.print(Text.assemble(label, message), soft_wrap=True)
        return code
    except KeyboardInterrupt:
        err.print(Text.assemble(("interrupted", "bold yellow")))
        return 130
    except (typer.Exit, SystemExit) as e:
        code = int(getattr(e, "exit_code", getattr(e, "code", 0)) or 0)
        if code == 130:  # typer's answer to Ctrl-C outside a run
            err.print(Text.assemble(("interrupted", "bold yellow")))
        return code
    except Exception as e:  # click usage errors (unknown option, missing argument), Abort
        # typer may bundle its own click: recognise its exceptions by what they can do
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show(file=sys.stderr)
            return 2
        if type(e).__name__ == "Abort":  # click's answer to Ctrl-C
            err.print(Text.assemble(("interrupted", "bold yellow")))
            return 130
        raise
    if result == 130:  # typer returns 130 for Ctrl-C outside a run (commands return None)
        err.print(Text.assemble(("interrupted", "bold yellow")))
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script wrapper: exits with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
