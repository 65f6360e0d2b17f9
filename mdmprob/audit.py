"""The sampler audit: run someone else's sampler against an exact target and measure its law.

``audit(sampler, structure)`` calls ``sampler`` — plain torch code that calls
``model(input_ids).logits`` — against an :class:`~mdmprob.lm.OracleLM` of the structure, collects
N sequences and reports, with standard errors or intervals:

* the exact ``log p(x)`` of every sample; the cross-entropy ``E_q[-log p]`` (nats, always);
  the plug-in ``KL(q‖p)`` with the Miller-Madow correction ``(K - 1) / 2N`` and a bootstrap
  interval where the sampler's support is small (K distinct outcomes <= N / 5); TV(q̂, p) and a
  chi-square goodness-of-fit test against p (when V^n is enumerable); incoherence at tau (mean
  over blocks of ``p(x_B | x_P) <= tau``) and the constraint violation rate;
* the same law tests against the exact q of named presets, and the presets ranked by the mean
  log-likelihood ``(1/N) sum_i log q_preset(x_i)`` of the samples ("which preset is this?");
* NFE per sequence (rows the model processed / sequences);
* detectors with verdicts: ``mask_tokens`` (mask or special ids in the output), ``prompt_changed``
  (a visible prefix or prompt token changed), ``tail`` (fewer samples in the reference law's tail
  than it predicts: low-precision Gumbel noise), ``seed`` (draws repeat across seeds),
  ``batch`` (rows of one call collide more often than rows of different calls, or the law of
  single-row calls differs from that of full batches), and ``law`` (chi-square against the
  reference: the named preset's q, or p).

Calling convention (see docs/audit.md): ``sampler(model, input_ids, **params)`` returning token
ids ``[B, L]`` (or ``[B, n]``); ``input_ids [B, L]`` holds the prefix, the prompt and mask ids. A
sampler whose signature has ``gen_length`` is called LLaDA-style instead:
``sampler(model, prompt, gen_length=n - m, **params)`` with ``prompt [B, len(prefix) + m]``.
``mask_id``, ``seed`` and ``generator`` are passed when the signature names them and ``params``
does not; the global torch RNG is seeded with the call's seed either way (and restored after).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mdmprob.checks import check_int, check_match, check_number
from mdmprob.errors import BudgetError, MdmprobError
from mdmprob.evaluate import block_log_p
from mdmprob.lm import OracleLM, SamplerError, SamplerTimeout
from mdmprob.outputs import dumps as json_dumps
from mdmprob.outputs import loads as json_loads
from mdmprob.outputs import write_text

ALPHA = 1e-3  # default significance of every statistical detector
TAUS = tuple(10.0 ** -k for k in range(1, 13))
EXACT_LIMIT = 2**16


@dataclass
class Finding:
    """One detector's verdict: ``passed`` is None when the check could not run (``message`` says
    why); ``p_value`` is the test's p-value (flagged when below ``threshold``)."""

    check: str
    passed: bool | None
    message: str
    statistic: float | None = None
    p_value: float | None = None
    threshold: float | None = None


@dataclass
class LawFit:
    """The samples against one exact law r (the target p or a preset's q): mean log r(x) with its
    standard error, plug-in KL(q̂‖r) (Miller-Madow corrected, bootstrap 95% interval), TV(q̂, r),
    and the chi-square statistic, degrees of freedom and p-value (cells with N r(x) < 5 pooled)."""

    name: str
    mean_log: float
    mean_log_se: float
    kl: float | None = None
    kl_low: float | None = None
    kl_high: float | None = None
    tv: float | None = None
    chi2: float | None = None
    dof: int | None = None
    p_value: float | None = None
    outside_support: int = 0


@dataclass
class AuditReport:
    """Everything the audit measured (metrics in nats; ``*_se`` one standard error)."""

    sampler: str
    structure: str
    samples: int
    tokens: torch.Tensor  # [N, n] valid outputs as structure tokens
    log_p: torch.Tensor  # [N] exact log p(x | prompt)
    metrics: dict[str, float | None]
    target: LawFit | None
    presets: list[LawFit]  # ranked: most likely first
    findings: list[Finding]
    reference: str
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(f.passed is not False for f in self.findings)

    @property
    def failed(self) -> list[str]:
        return [f.check for f in self.findings if f.passed is False]

    def finding(self, check: str) -> Finding:
        return next(f for f in self.findings if f.check == check)

    def as_json(self) -> dict[str, Any]:
        def fit(f):
            return None if f is None else {k: _num(v) for k, v in f.__dict__.items()}
        return {"sampler": self.sampler, "structure": self.structure, "samples": self.samples,
                "reference": self.reference, "passed": self.passed,
                "metrics": {k: _num(v) for k, v in self.metrics.items()},
                "target": fit(self.target), "presets": [fit(f) for f in self.presets],
                "findings": [{k: _num(v) for k, v in f.__dict__.items()} for f in self.findings],
                "notes": self.notes}

    def summary(self) -> str:
        m = self.metrics
        lines = [f"audit of {self.sampler} on {self.structure}: {self.samples} samples, "
                 f"NFE/sequence {m['nfe']:.3g}",
                 f"  E_q[-log p] = {_pm(m['cross_entropy'], m['cross_entropy_se'])} nats"
                 + ("" if m.get("entropy_p") is None else f" (H(p) = {m['entropy_p']:.4g})"),
                 f"  incoherence@tau = {_pm(m['incoherence'], m['incoherence_se'])}, violation = "
                 f"{_pm(m['violation'], m['violation_se'])}"]
        for f in ([self.target] if self.target else []) + self.presets:
            lines.append(f"  vs {f.name}: mean log q = {_pm(f.mean_log, f.mean_log_se)}"
                         + ("" if f.kl is None else f", KL(q‖·) = {_fmt(f.kl)} "
                            f"[{_fmt(f.kl_low)}, {_fmt(f.kl_high)}]")
                         + ("" if f.tv is None else f", TV = {f.tv:.3g}")
                         + ("" if f.p_value is None else
                            f", chi2 = {f.chi2:.4g} (dof {f.dof}, p = {f.p_value:.3g})"))
        for f in self.findings:
            mark = {True: "pass", False: "FAIL", None: "n/a "}[f.passed]
            lines.append(f"  [{mark}] {f.check}: {f.message}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def audit(sampler, structure, *, samples: int = 1000, batch: int = 100,
          params: dict[str, Any] | None = None, prompt: Sequence[int] = (), seed: int = 0,
          presets: Sequence[str] | None = None, reference: str | None = None,
          lm_options: dict[str, Any] | None = None, time_limit: float = 300.0,
          size_check: int = 200, alpha: float = ALPHA, tau: float = 1e-8,
          exact_limit: int = EXACT_LIMIT, out: str | Path | None = None,
          denoiser=None, device=None, progress: Callable[[int, int], None] | None = None) -> AuditReport:
    """Audit ``sampler`` against ``structure`` (a Structure, or a zoo name).

    Args:
        sampler: a callable, or ``"path/to/file.py:function"``.
        samples: N, the sequences drawn.
        batch: rows per sampler call (call i gets seed ``seed + i``).
        params: keyword arguments for the sampler.
        prompt: structure tokens the first ``m`` positions are fixed to (visible in input_ids).
        presets: preset specs ``"name:key=value:..."`` compared exactly (None: a default list;
            ``()``: none); under a prompt each decodes from it (``initial=``).
        reference: the law the sampler claims: a preset spec, or ``"target"`` (p); default the
            first of ``presets`` if given explicitly, else p.
        lm_options: keywords for :class:`~mdmprob.lm.OracleLM` (mask_id, special_mass, dtype...).
        time_limit: seconds one sampler call may take (:class:`~mdmprob.lm.SamplerTimeout`).
        size_check: extra single-row calls for the batch-size check (0: skip it).
        alpha: significance of each statistical detector.
        out: a folder; each call's outputs are saved there and an interrupted audit resumes.
        denoiser: the model behind the OracleLM (default: the structure's exact Oracle); the
            presets' laws are computed with it too, p stays the structure's.
    """
    from mdmprob.structure import Structure, load_model

    if isinstance(structure, str):
        structure = load_model(structure)
    if not isinstance(structure, Structure):
        raise MdmprobError(f"structure must be a Structure or a model name, got "
                           f"{type(structure).__name__}")
    for name, v, lo in (("samples", samples, 2), ("batch", batch, 1), ("size_check", size_check, 0)):
        check_int(name, v, lo)
    check_number("alpha", alpha, 0, 1, low_open=True, high_open=True)
    fn, name = load_sampler(sampler)
    params = dict(params or {})
    if denoiser is not None:
        check_match(denoiser, structure)
    lm = OracleLM(structure if denoiser is None else denoiser, device=device,
                  **(lm_options or {}))
    n, V = structure.n_tokens, structure.vocab
    prompt = [int(v) for v in prompt]
    if len(prompt) >= n or any(not 0 <= v < V for v in prompt):
        raise MdmprobError(f"prompt={prompt} must be fewer than n={n} tokens in 0..{V - 1}")
    explicit = presets is not None
    presets = list(default_presets(structure) if presets is None else presets)
    if reference is None:
        reference = presets[0] if explicit and presets else "target"
    if reference != "target" and reference not in presets:
        presets.insert(0, reference)
    notes: list[str] = []
    start = lm.to_model(torch.tensor([prompt + [V] * (n - len(prompt))]))  # [1, L]
    run = _Runner(fn, name, lm, params, start, len(prompt), time_limit)
    calls = _resumable(out, name, structure, params, prompt, seed, batch, lm_options)
    n_calls = math.ceil(samples / batch)
    for i in range(n_calls):
        if i < len(calls):
            continue
        rows = min(batch, samples - i * batch)
        calls.append(run(rows, seed + i))
        _save(out, calls)
        if progress is not None:
            progress(i + 1, n_calls)
    singles = []
    for j in range(size_check):
        singles.append(run(1, seed + n_calls + j, record_nfe=False))

    outputs = torch.cat([c["ids"] for c in calls])  # [N, L] model ids
    L0 = len(lm.prefix) + len(prompt)
    findings = [_mask_tokens(lm, outputs), _prompt_changed(outputs, start, L0)]
    body = outputs[:, len(lm.prefix):]
    tokens_all = lm.token_of_id[body.to(lm.device)]
    valid = (tokens_all >= 0).all(-1) & (tokens_all < V).all(-1)
    tokens = tokens_all[valid]
    if len(tokens) == 0:
        raise SamplerError(f"sampler {name} returned no complete sequence: every output "
                           "holds a mask or special id")
    if prompt:  # a sampler that rewrote the prompt is scored as if it had kept it
        tokens[:, :len(prompt)] = torch.tensor(prompt, device=tokens.device)
    engine = structure.engine(device=lm.device)
    log_p = engine.log_prob(tokens) - _log_prompt(engine, prompt, n)
    metrics = _metrics(structure, engine, tokens, log_p, tau, calls)
    table = _target_table(structure, engine, prompt, exact_limit)
    if table is None:
        notes.append(f"V^n = {V}^{n} is over exact_limit={exact_limit}: no chi-square, TV or "
                     "plug-in KL against p")
    else:
        metrics["entropy_p"] = float(-(table.exp() * table.nan_to_num(neginf=0)).sum())
    target = _fit("target p", tokens, log_p, table, seed)
    fits, tables = [], {}
    code = _codes(tokens, V)
    for spec in presets:
        try:
            q = preset_table(spec, structure, device=lm.device, denoiser=denoiser,
                             prompt=prompt).reshape(-1)
        except BudgetError as e:
            notes.append(f"preset {spec} skipped: {e}")
            continue
        tables[spec] = q
        fits.append(_fit(spec, tokens, q[code], q, seed))
    fits.sort(key=lambda f: -f.mean_log if math.isfinite(f.mean_log) else math.inf)
    ref_fit = target if reference == "target" else next((f for f in fits if f.name == reference),
                                                          None)
    ref_table = table if reference == "target" else tables.get(reference)
    findings.append(_tail(tokens, ref_table, ref_fit, V, alpha))
    findings.append(_seed(calls, alpha))
    findings.append(_batch(calls, singles, alpha))
    findings.append(_law(ref_fit, alpha))
    report = AuditReport(name, structure.name, len(outputs), tokens, log_p, metrics,
                         target, fits, findings, reference, notes)
    if out is not None:
        write_text(Path(out) / "report.json", json_dumps(report.as_json(), indent=2))
    return report


# ------------------------------------------------------------------------------ samplers
def load_sampler(sampler) -> tuple[Callable, str]:
    """``(callable, name)`` from a callable or ``"path/to/file.py:function"``."""
    if callable(sampler):
        return sampler, getattr(sampler, "__qualname__", repr(sampler))
    if not isinstance(sampler, str) or ":" not in sampler:
        raise SamplerError(f"sampler {sampler!r} must be a callable or 'path/to/file.py:function'")
    path, _, fname = sampler.rpartition(":")
    file = Path(path)
    if not path or not fname:
        raise SamplerError(f"sampler {sampler!r} must be 'path/to/file.py:function'")
    if not file.is_file():
        raise SamplerError(f"sampler file {path!r} does not exist; give 'path/to/file.py:function'")
    spec = importlib.util.spec_from_file_location(f"mdmprob_sampler_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    folder = str(file.resolve().parent)
    sys.path.insert(0, folder)  # a sampler file may import the modules next to it
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise SamplerError(f"importing sampler file {path!r} raised {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(folder)
    fn = getattr(module, fname, None)
    if not callable(fn):
        known = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
        raise SamplerError(f"{path!r} has no function {fname!r}; functions there: "
                           f"{', '.join(known) or '(none)'}")
    return fn, f"{file.name}:{fname}"


class _Runner:
    """Calls the sampler once per batch under the calling convention and validates its output."""

    def __init__(self, fn, name, lm: OracleLM, params, start, prompt_len, time_limit):
        self.fn, self.name, self.lm, self.params = fn, name, lm, params
        self.start, self.prompt_len, self.time_limit = start, prompt_len, time_limit
        try:
            sig = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            sig = {}
        self.sig = sig
        self.prompt_style = "gen_length" in sig

    def __call__(self, rows: int, seed: int, record_nfe: bool = True) -> dict:
        lm = self.lm
        ids = self.start.expand(rows, -1).clone()
        kwargs = dict(self.params)
        gen = torch.Generator(device=lm.device).manual_seed(seed)
        extra = {"mask_id": lm.mask_id, "seed": seed, "generator": gen}
        for k, v in extra.items():
            if k in self.sig and k not in kwargs:
                kwargs[k] = v
        m = ids.shape[1] - (lm.n_tokens - self.prompt_len)
        if self.prompt_style:
            args = (lm, ids[:, :m].clone())
            kwargs.setdefault("gen_length", lm.n_tokens - self.prompt_len)
        else:
            args = (lm, ids)
        calls0, rows0 = lm.calls, lm.rows
        lm.deadline = time.monotonic() + self.time_limit
        try:
            with torch.random.fork_rng(devices=[] if lm.device.type == "cpu" else [lm.device]), \
                    _alarm(self.time_limit, self.name):
                torch.manual_seed(seed)
                result = self.fn(*args, **kwargs)
        except (SamplerError, KeyboardInterrupt):
            raise
        except Exception as e:
            raise SamplerError(f"sampler {self.name} raised {type(e).__name__}: {e}") from e
        finally:
            lm.deadline = None
        out = self._check(result, rows)
        return {"ids": out, "seed": seed, "calls": lm.calls - calls0, "rows": lm.rows - rows0}

    def _check(self, result, rows: int) -> torch.Tensor:
        lm = self.lm
        if isinstance(result, tuple | list) and result and isinstance(result[0], torch.Tensor):
            result = result[0]  # (tokens, history) returns
        if not isinstance(result, torch.Tensor):
            raise SamplerError(f"sampler {self.name} returned {type(result).__name__}, not a "
                               f"LongTensor of token ids [B, {lm.seq_len}]")
        if result.dtype.is_floating_point or result.dtype.is_complex or result.dtype == torch.bool:
            raise SamplerError(f"sampler {self.name} returned a {result.dtype} tensor; token ids "
                               "must be integers (did it return logits or probabilities?)")
        gen = lm.n_tokens - self.prompt_len
        if result.dim() != 2 or result.shape[0] != rows or result.shape[1] not in (lm.seq_len, gen):
            raise SamplerError(f"sampler {self.name} returned shape {tuple(result.shape)}; "
                               f"expected [{rows}, {lm.seq_len}] (the whole row) or [{rows}, {gen}]"
                               " (the generated part)")
        result = result.to(lm.device, torch.long)
        if result.shape[1] != lm.seq_len:
            result = torch.cat([self.start.expand(rows, -1)[:, :lm.seq_len - gen], result], 1)
        bad = (result < 0) | (result >= lm.vocab_size)
        if bad.any():
            raise SamplerError(f"sampler {self.name} returned token id {result[bad][0].item()}, "
                               f"outside the model's vocabulary 0..{lm.vocab_size - 1}")
        return result


class _alarm:
    """A SIGALRM-based time limit for code that never calls the model (main thread, Unix only;
    elsewhere the OracleLM's own deadline still stops a sampler that calls it)."""

    def __init__(self, seconds: float, name: str):
        self.seconds, self.name = seconds, name
        self.active = hasattr(signal, "setitimer") and \
            threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if self.active:
            def handler(signum, frame):
                raise SamplerTimeout(f"sampler {self.name} ran past its time limit of "
                                     f"{self.seconds:g} s; raise time_limit or fix the loop")
            self.previous = signal.signal(signal.SIGALRM, handler)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


# ------------------------------------------------------------------------------ presets
def default_presets(structure) -> list[str]:
    """Presets compared by default: exact sequential orders and the common parallel samplers."""
    n = structure.n_tokens
    return ["sequential:order=l2r", "sequential:order=random", f"llada:steps={n}",
            f"llada:steps={max(1, n // 2)}", "fast_dllm_threshold:tau=0.9",
            "eb_sampler:gamma=0.1", "mean_field_blocks"]


def parse_preset(spec: str) -> tuple[str, dict[str, Any]]:
    """``"llada:steps=4:block_length=2"`` -> ``("llada", {"steps": 4, "block_length": 2})``
    (the experiments' spec syntax, :func:`mdmprob.experiments.base.parse_spec`)."""
    from mdmprob.decoders import PRESETS
    from mdmprob.errors import unknown_name
    from mdmprob.experiments.base import parse_spec

    name, params = parse_spec(spec)
    if name not in PRESETS:
        raise unknown_name("decoder", name, PRESETS)
    return name, params


def preset_table(spec: str, structure, device=None, denoiser=None,
                 prompt: Sequence[int] = ()) -> torch.Tensor:
    """The exact decoder-induced law ``log q`` of a preset run on ``denoiser`` (default: the
    structure's oracle) from ``prompt`` (the first tokens visible, the rest masked), shape
    ``[V] * n``."""
    from mdmprob.decoders import get_decoder
    from mdmprob.denoisers.oracle import Oracle

    name, params = parse_preset(spec)
    try:
        decoder = get_decoder(name, **params)
    except TypeError as e:
        raise MdmprobError(f"preset {spec!r}: {e}") from None
    if denoiser is None:
        denoiser = Oracle(structure, device=device)
    initial = None
    if prompt:
        initial = torch.full((structure.n_tokens,), denoiser.mask_id, dtype=torch.long,
                             device=denoiser.device)
        initial[:len(prompt)] = torch.tensor(list(prompt), device=denoiser.device)
    return decoder.distribution(denoiser, blocks=structure.blocks, target=structure,
                                initial=initial)


def parse_sampler_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``["steps=4", "remasking=random"]`` -> ``{"steps": 4, "remasking": "random"}`` (values
    read as JSON where they parse, else kept as strings)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise MdmprobError(f"sampler parameter {pair!r} is not key=value; write e.g. "
                               "-p steps=4")
        try:
            params[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            params[key.strip()] = text
    return params


def parse_prompt(text: str | None) -> list[int]:
    """``"0,2,1"`` -> ``[0, 2, 1]``."""
    if not text:
        return []
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise MdmprobError(f"prompt {text!r} must be comma-separated token ids, e.g. 0,2") from None


# ------------------------------------------------------------------------------ measures
def _metrics(structure, engine, tokens, log_p, tau, calls) -> dict[str, float | None]:
    from mdmprob import measures

    ce = measures.mc_mean(-log_p)
    block_lp = block_log_p(structure, engine, tokens)
    inc = measures.mc_rate((block_lp <= math.log(tau)).double().mean(-1))
    viol = structure.violations(tokens)
    vio = None if viol is None else measures.mc_mean(viol.double().reshape(len(tokens), -1).mean(-1))
    per_call = torch.tensor([c["rows"] / len(c["ids"]) for c in calls], dtype=torch.float64)
    weights = torch.tensor([len(c["ids"]) for c in calls], dtype=torch.float64)
    return {"cross_entropy": ce.value, "cross_entropy_se": ce.se,
            "incoherence": inc.value, "incoherence_se": inc.se,
            "violation": None if vio is None else vio.value,
            "violation_se": None if vio is None else vio.se,
            "nfe": float((per_call * weights).sum() / weights.sum()),
            "calls_per_batch": sum(c["calls"] for c in calls) / len(calls), "entropy_p": None}


def _log_prompt(engine, prompt, n) -> torch.Tensor | float:
    if not prompt:
        return 0.0
    x = torch.zeros(1, n, dtype=torch.long, device=engine.device)
    x[0, :len(prompt)] = torch.tensor(prompt, device=engine.device)
    vis = torch.zeros(1, n, dtype=torch.bool, device=engine.device)
    vis[0, :len(prompt)] = True
    lp = engine.log_prob_visible(x, vis)
    if lp.item() == -math.inf:
        raise MdmprobError(f"prompt {prompt} has probability 0 under the structure")
    return lp


def _target_table(structure, engine, prompt, exact_limit) -> torch.Tensor | None:
    """log p(x | prompt) for every x, flattened (None over ``exact_limit``)."""
    import itertools

    n, V = structure.n_tokens, structure.vocab
    if V ** n > exact_limit:
        return None
    xs = torch.tensor(list(itertools.product(range(V), repeat=n)), dtype=torch.long,
                      device=engine.device)
    lp = engine.log_prob(xs)
    if prompt:
        keep = (xs[:, :len(prompt)] == torch.tensor(prompt, device=xs.device)).all(-1)
        lp = torch.where(keep, lp - _log_prompt(engine, prompt, n), -math.inf)
    return lp


def _codes(tokens: torch.Tensor, V: int) -> torch.Tensor:
    n = tokens.shape[1]
    powers = V ** torch.arange(n - 1, -1, -1, device=tokens.device)
    return (tokens * powers).sum(-1)


def _fit(name, tokens, log_r, table, seed) -> LawFit:
    """Mean log r of the samples, and (when ``table`` holds r for every outcome) plug-in KL,
    TV and the chi-square test against r."""
    from mdmprob import measures

    est = measures.mc_mean(log_r.to(torch.float64))
    fit = LawFit(name, est.value, est.se, outside_support=int((log_r == -math.inf).sum()))
    if table is None:
        return fit
    N = len(tokens)
    V = round(table.numel() ** (1 / tokens.shape[1]))
    code = _codes(tokens, V)
    uniq, counts = torch.unique(code, return_counts=True)
    q_hat = counts.double() / N
    r = table.reshape(-1)[uniq].exp().double().cpu()
    q_hat = q_hat.cpu()
    fit.tv = float(0.5 * ((q_hat - r).abs().sum() + (1 - r.sum()).clamp(min=0)))
    if fit.outside_support:
        fit.kl = fit.kl_low = fit.kl_high = math.inf
    elif len(uniq) <= N / 5:
        K = len(uniq)
        kl = float((q_hat * (q_hat / r).log()).sum()) - (K - 1) / (2 * N)
        g = torch.Generator().manual_seed(seed)
        boot = _multinomial(q_hat, N, 200, g)
        qb = boot / N
        kb = torch.where(qb > 0, qb * (qb / r).log(), torch.zeros_like(qb)).sum(-1)
        kb = kb - ((qb > 0).sum(-1) - 1) / (2 * N)
        lo, hi = (float(x) for x in torch.quantile(kb, torch.tensor([0.025, 0.975],
                                                                    dtype=kb.dtype)))
        # the resampled estimates sit off the estimate by the estimator's remaining bias:
        # shift the percentile interval back by it
        shift = float(kb.mean()) - kl
        fit.kl, fit.kl_low, fit.kl_high = kl, max(0.0, lo - shift), max(0.0, hi - shift)
    fit.chi2, fit.dof, fit.p_value = _chi2_gof(code, table.reshape(-1).exp().double(), N)
    return fit


def _multinomial(probs: torch.Tensor, n: int, reps: int, g) -> torch.Tensor:
    draws = torch.multinomial(probs.float(), n * reps, replacement=True, generator=g)
    draws = draws.reshape(reps, n)
    return torch.zeros(reps, len(probs), dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(reps, n, dtype=torch.float64))


def _chi2_gof(code, r, N) -> tuple[float, int, float]:
    """Pearson chi-square of the observed outcome counts against N r, cells with N r < 5 pooled
    into one (its own cell when its expectation is >= 5, else merged into the smallest big one)."""
    r = r.cpu()
    counts = torch.bincount(code.cpu(), minlength=len(r)).double()
    expected = N * r
    if ((expected == 0) & (counts > 0)).any():
        return math.inf, 0, 0.0
    big = expected >= 5
    obs = counts[big].tolist()
    exp = expected[big].tolist()
    rest_o, rest_e = float(counts[~big].sum()), float(expected[~big].sum())
    if rest_e >= 5 or not exp:
        obs.append(rest_o)
        exp.append(rest_e)
    else:
        i = min(range(len(exp)), key=exp.__getitem__)
        obs[i] += rest_o
        exp[i] += rest_e
    if len(exp) < 2:
        return 0.0, 0, 1.0
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True) if e > 0)
    dof = len(exp) - 1
    return stat, dof, _chi2_sf(stat, dof)


def _chi2_sf(x: float, dof: int) -> float:
    """Pr[chi2_dof >= x] = Q(dof/2, x/2)."""
    if x == math.inf:
        return 0.0
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(x / 2, dtype=torch.float64)))


def _poisson_cdf(k: int, lam: float) -> float:
    """Pr[Poisson(lam) <= k] = Q(k + 1, lam)."""
    return float(torch.special.gammaincc(torch.tensor(k + 1.0, dtype=torch.float64),
                                         torch.tensor(lam, dtype=torch.float64)))


def _binom_sf(k: int, n: int, p: float) -> float:
    """Pr[Binomial(n, p) >= k] (exact, by the log-pmf sum)."""
    if k <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    i = torch.arange(k, n + 1, dtype=torch.float64)
    lp = (torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(i + 1)
          - torch.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p))
    return float(lp.logsumexp(0).exp().clamp(max=1))


# ------------------------------------------------------------------------------ detectors
def _mask_tokens(lm: OracleLM, outputs) -> Finding:
    body = outputs[:, len(lm.prefix):]
    special = torch.isin(body, lm.special_ids.to(body.device))
    rows = int(special.any(-1).sum())
    if rows == 0:
        return Finding("mask_tokens", True, "no mask or special id in any output", 0.0)
    ids = sorted(set(body[special].tolist()))
    names = [k for k, v in lm.special_tokens.items() if v in ids]
    return Finding("mask_tokens", False, f"{rows} of {len(outputs)} outputs hold special ids "
                   f"{ids} ({', '.join(names)}): suppress them before sampling, not after",
                   float(rows))


def _prompt_changed(outputs, start, L0) -> Finding:
    if L0 == 0:
        return Finding("prompt_changed", None, "no prefix or prompt to keep")
    changed = (outputs[:, :L0] != start[:, :L0].to(outputs.device)).any(-1)
    rows = int(changed.sum())
    if rows == 0:
        return Finding("prompt_changed", True, f"all {L0} visible leading ids kept", 0.0)
    col = int((outputs[:, :L0] != start[:, :L0].to(outputs.device)).any(0).nonzero()[0])
    return Finding("prompt_changed", False, f"{rows} of {len(outputs)} outputs changed a "
                   f"visible prompt id (first at column {col}): commit only masked positions",
                   float(rows))


def _tail(tokens, ref_table, ref_fit, V, alpha) -> Finding:
    """Observed vs expected counts of samples with r(x) <= tau under the reference law r, for
    each tau of a grid whose expected count is >= 10; one-sided Poisson test (Bonferroni)."""
    if ref_table is None:
        return Finding("tail", None, "the reference law is not enumerable")
    N = len(tokens)
    r = ref_table.reshape(-1).double()
    lr = r[_codes(tokens, V)]
    tested, worst = [], (1.0, None)
    for t in TAUS:
        lt = math.log(t)
        exp = N * float(torch.where(r <= lt, r.exp(), torch.zeros_like(r)).sum())
        if exp < 10:
            continue
        obs = int((lr <= lt).sum())
        p = _poisson_cdf(obs, exp)
        tested.append(t)
        if p <= worst[0]:
            worst = (p, (t, obs, exp))
    if not tested:
        return Finding("tail", None, "the reference law has too little tail mass for N samples "
                       "(< 10 expected below every tau)")
    p = min(1.0, worst[0] * len(tested))
    if worst[1] is None:
        return Finding("tail", True, "tail counts as expected", p_value=p, threshold=alpha)
    t, obs, exp = worst[1]
    msg = f"{obs} samples with r(x) <= {t:.0e} where {exp:.1f} were expected under {ref_fit.name}"
    if p < alpha:
        return Finding("tail", False, msg + " (tail cut: low-precision Gumbel noise, or a lower "
                       "temperature than the reference)", float(obs), p, alpha)
    return Finding("tail", True, msg, float(obs), p, alpha)


def _seed(calls, alpha) -> Finding:
    """Row r of consecutive calls (different seeds) vs rows r != r' of those calls: under
    independent seeds both match with the collision probability sum_x q(x)^2."""
    if len(calls) < 2:
        return Finding("seed", None, "needs at least two calls (samples > batch)")
    paired = pairs = cross = cross_pairs = 0
    for a, b in zip(calls, calls[1:], strict=False):
        ka, kb = a["ids"], b["ids"]
        m = min(len(ka), len(kb))
        eq = (ka[:m, None, :] == kb[None, :m, :]).all(-1)
        paired += int(eq.diagonal().sum())
        pairs += m
        cross += int(eq.sum()) - int(eq.diagonal().sum())
        cross_pairs += m * m - m
    if cross_pairs == 0:
        return Finding("seed", None, "needs batches of at least two rows")
    c = (cross + 1) / (cross_pairs + 1)
    p = _binom_sf(paired, pairs, c)
    msg = (f"{paired} of {pairs} same-row pairs across seeds identical; {c * pairs:.1f} expected "
           f"from the collision rate of other pairs")
    if p < alpha:
        return Finding("seed", False, msg + ": the sampler ignores the seed it is given",
                       float(paired), p, alpha)
    return Finding("seed", True, msg, float(paired), p, alpha)


def _batch(calls, singles, alpha) -> Finding:
    """(1) rows (0, 1), (2, 3), ... of a call collide no more often than rows of different calls
    (one-sided binomial on disjoint pairs); (2) single-row calls and full calls have one law
    (chi-square homogeneity). Bonferroni over the two."""
    within = wpairs = cross = cpairs = 0
    for a, b in zip(calls, calls[1:], strict=False):
        eq = (a["ids"][:, None, :] == b["ids"][None, :, :]).all(-1)
        cross += int(eq.sum())
        cpairs += eq.numel()
    for a in calls:
        k = a["ids"][: len(a["ids"]) // 2 * 2]
        within += int((k[0::2] == k[1::2]).all(-1).sum())
        wpairs += len(k) // 2
    messages, ps = [], []
    if wpairs and cpairs:
        c = (cross + 1) / (cpairs + 1)
        ps.append(_binom_sf(within, wpairs, c))
        messages.append(f"{within} of {wpairs} row pairs within calls identical, "
                        f"{c * wpairs:.1f} expected")
    if singles:
        one = torch.cat([s["ids"] for s in singles])
        full = torch.cat([c["ids"] for c in calls])
        stat, dof, p = _homogeneity(one, full)
        ps.append(p)
        messages.append(f"single-row vs batched law: chi2 = {stat:.3g} (dof {dof})")
    if not ps:
        return Finding("batch", None, "needs several calls of several rows")
    p = min(1.0, min(ps) * len(ps))
    msg = "; ".join(messages)
    if p < alpha:
        return Finding("batch", False, msg + ": a row's output depends on the other rows of "
                       "its batch", None, p, alpha)
    return Finding("batch", True, msg, None, p, alpha)


def _homogeneity(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int, float]:
    """Chi-square test that two samples of rows come from one law; outcomes whose expected count
    in the smaller sample is < 5 are pooled into one cell."""
    rows = torch.cat([a, b])
    _, inv = torch.unique(rows, dim=0, return_inverse=True)
    ca = torch.bincount(inv[:len(a)], minlength=int(inv.max()) + 1).double()
    cb = torch.bincount(inv[len(a):], minlength=int(inv.max()) + 1).double()
    na, nb = len(a), len(b)
    pooled = (ca + cb) / (na + nb)
    big = pooled * min(na, nb) >= 5
    cells_a, cells_b = ca[big], cb[big]
    rest_a, rest_b = ca[~big].sum(), cb[~big].sum()
    if float(pooled[~big].sum()) * min(na, nb) >= 5 or len(cells_a) == 0:
        cells_a, cells_b = torch.cat([cells_a, rest_a[None]]), torch.cat([cells_b, rest_b[None]])
    else:  # too small for its own cell: merged into the smallest one
        i = int((cells_a + cells_b).argmin())
        cells_a[i] += rest_a
        cells_b[i] += rest_b
    if len(cells_a) < 2:
        return 0.0, 0, 1.0
    tot = cells_a + cells_b
    ea, eb = tot * na / (na + nb), tot * nb / (na + nb)
    stat = float(((cells_a - ea) ** 2 / ea + (cells_b - eb) ** 2 / eb).sum())
    dof = len(cells_a) - 1
    return stat, dof, _chi2_sf(stat, dof)


def _law(fit: LawFit | None, alpha) -> Finding:
    if fit is None or fit.p_value is None:
        return Finding("law", None, "no enumerable reference law to test against")
    msg = (f"vs {fit.name}: chi2 = {_fmt(fit.chi2)} (dof {fit.dof}), p = {fit.p_value:.3g}, "
           f"TV = {fit.tv:.3g}")
    if fit.outside_support:
        return Finding("law", False, f"{fit.outside_support} samples have probability 0 under "
                       f"{fit.name}", fit.chi2, 0.0, alpha)
    if fit.p_value < alpha:
        return Finding("law", False, msg + ": the sampler's law differs from the reference",
                       fit.chi2, fit.p_value, alpha)
    return Finding("law", True, msg, fit.chi2, fit.p_value, alpha)


# ------------------------------------------------------------------------------ resume
def _resumable(out, name, structure, params, prompt, seed, batch, lm_options) -> list[dict]:
    if out is None:
        return []
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    key = {"sampler": name, "structure": structure.name, "params": repr(sorted(params.items())),
           "prompt": prompt, "seed": seed, "batch": batch,
           "lm_options": repr(sorted((lm_options or {}).items()))}
    meta = folder / "audit.json"
    if meta.exists():
        old = json_loads(meta.read_text())
        if old != key:
            diff = [k for k in key if old.get(k) != key[k]]
            raise MdmprobError(f"{folder} holds an audit with other settings ({', '.join(diff)});"
                               " use another --out folder or delete it")
    else:
        write_text(meta, json_dumps(key, indent=2))
    path = folder / "calls.pt"
    return list(torch.load(path, weights_only=True)) if path.exists() else []


def _save(out, calls) -> None:
    if out is None:
        return
    path = Path(out) / "calls.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(list(calls), tmp)
    tmp.replace(path)


# ------------------------------------------------------------------------------ formatting
def _num(v):
    """NaN (an undefined statistic) as None; +-inf are written by :mod:`mdmprob.outputs`."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _fmt(v) -> str:
    return "-" if v is None else ("+inf" if v == math.inf else f"{v:.4g}")


def _pm(v, se) -> str:
    return _fmt(v) if se is None or v is None or not math.isfinite(v) else f"{v:.4g} ± {se:.2g}"


__all__ = ["ALPHA", "AuditReport", "Finding", "LawFit", "SamplerError", "SamplerTimeout",
           "audit", "default_presets", "load_sampler", "parse_preset", "parse_prompt",
           "parse_sampler_params", "preset_table"]
