"""Benchmark of the exact engine: per-position conditionals against Pyro, and scaling in length.

1. Ratio vs Pyro. All conditionals ``p(x_i | x_visible)`` of the default Block-HMM (64 tokens,
   8 blocks) for N random partial sequences: tokens drawn exactly from the model
   (``engine.sample`` on an all-masked batch), then each position masked independently with
   probability 0.5 (fixed seed). Ours: one ``engine.conditionals`` call on the whole batch
   (median of ``--repeats`` calls after one warm-up). Baseline: Pyro's
   ``TraceEnum_ELBO(max_plate_nesting=0).compute_marginals`` on the model conditioned on the
   visible tokens, one sequence per call, timed on the first M sequences and extrapolated per
   sequence. On those M sequences both must agree to 1e-8 in probability, or the run fails.
2. Scaling. Our time for the conditionals of N random partial sequences of ``block_hmm`` with
   n_blocks = 8, 16, ..., ``--max-blocks``; compile time (tracing the Pyro model + engine +
   elimination plan) apart from query time; time per block and a log-log slope (linear: ~1).
3. Device from ``MDMPROB_DEVICE`` (the engine's default), dtype from ``MDMPROB_DTYPE``. The Pyro
   baseline always runs on the CPU.

    .venv/bin/python bench/bench_engine.py                 # full run (make bench)
    .venv/bin/python bench/bench_engine.py --quick         # small sizes, ~30 s
    MDMPROB_DEVICE=cuda .venv/bin/python bench/bench_engine.py --json out/bench.json
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

from mdmprob.structure import Structure, load_model

TOLERANCE = 1e-8  # max |p_ours - p_pyro| allowed on the checked subset
RATIO_GOAL = 100.0
FULL = {"n": 1024, "m": 32, "repeats": 5, "max_blocks": 512}
QUICK = {"n": 256, "m": 8, "repeats": 3, "max_blocks": 64}


# ---------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device):
    """(wall seconds, process CPU seconds, result) of one call, CUDA synchronised on both sides.

    CPU time (all threads of this process) is printed next to wall time because it is far less
    sensitive to other processes on a shared machine."""
    _sync(device)
    cpu, start = time.process_time(), time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu, out


def _peak_memory_mib(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / (2**20 if sys.platform == "darwin" else 2**10)


def _fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.2f} us"


def random_partial(engine, n: int, seed: int):
    """``n`` sequences drawn exactly from the model, each position masked with prob 0.5."""
    gen = torch.Generator(device=engine.device).manual_seed(seed)
    hidden = torch.zeros(n, engine.n, dtype=torch.bool, device=engine.device)
    tokens = engine.sample(torch.zeros(n, engine.n, dtype=torch.long, device=engine.device),
                           hidden, generator=gen)
    visible = torch.rand(n, engine.n, generator=gen, device=engine.device) >= 0.5
    return tokens, visible


def _empty_guide() -> None:
    pass


def pyro_marginals(structure: Structure, tokens: torch.Tensor, visible: torch.Tensor) -> dict:
    """Pyro's exact marginals of every enumerated site for ONE sequence (1-d ``tokens``)."""
    data = {name: torch.tensor(int(t))
            for name, t, v in zip(structure.tokens, tokens.tolist(), visible.tolist(), strict=True)
            if v}
    conditioned = poutine.condition(structure.model, data=data)
    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    return elbo.compute_marginals(config_enumerate(conditioned), _empty_guide)


def _pyro_table(structure: Structure, marginals: dict, visible: torch.Tensor) -> torch.Tensor:
    """``[n, V]`` probabilities of the masked tokens from Pyro's marginals (NaN where visible)."""
    table = torch.full((structure.n_tokens, structure.vocab), math.nan, dtype=torch.float64)
    for i, name in enumerate(structure.tokens):
        if visible[i]:
            continue
        if name not in marginals:
            raise SystemExit(f"FAIL: Pyro returned no marginal for masked token site {name!r}")
        table[i] = marginals[name].probs.detach().to(torch.float64).reshape(-1)
    return table


def _linearity(slope: float) -> str:
    if math.isnan(slope):
        return "n/a"
    if slope > 1.15:
        return "NOT linear (superlinear)"
    if slope < 0.85:
        return "sublinear (fixed per-call cost dominates the small sizes)"
    return "linear"


def _slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x)."""
    if len(xs) < 2:
        return math.nan
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


# ---------------------------------------------------------------------- 1. ratio vs Pyro
def bench_ratio(args, device: torch.device) -> dict:
    print(f"\n== 1. conditionals vs Pyro TraceEnum_ELBO.compute_marginals "
          f"(block_hmm defaults, N={args.n}, M={args.m}) ==")
    structure = load_model("block_hmm")
    engine = structure.engine()
    tokens, visible = random_partial(engine, args.n, args.seed)
    masked_frac = (~visible).float().mean().item()
    print(f"model: {structure}")
    print(f"batch: {args.n} sequences x {engine.n} tokens, masked fraction {masked_frac:.3f}, "
          f"seed {args.seed}")

    warm, _, _ = _timed(lambda: engine.conditionals(tokens, visible), device)
    times, cpu_times, ours = [], [], None
    for _ in range(args.repeats):
        dt, cpu, ours = _timed(lambda: engine.conditionals(tokens, visible), device)
        times.append(dt)
        cpu_times.append(cpu)
    ours_batch = statistics.median(times)
    ours_seq = ours_batch / args.n
    ours_cpu_seq = statistics.median(cpu_times) / args.n
    print(f"ours : warm-up {_fmt_s(warm)}; batch of {args.n}: median {_fmt_s(ours_batch)} over "
          f"{args.repeats} (min {_fmt_s(min(times))}, max {_fmt_s(max(times))}; CPU time "
          f"median {_fmt_s(statistics.median(cpu_times))})")
    print(f"ours : {_fmt_s(ours_seq)} per sequence")

    m = min(args.m, args.n)
    tok_cpu, vis_cpu = tokens[:m].cpu(), visible[:m].cpu()
    pyro.clear_param_store()
    pyro_warm, _, _ = _timed(lambda: pyro_marginals(structure, tok_cpu[0], vis_cpu[0]),
                             torch.device("cpu"))
    pyro_times, pyro_cpu, tables = [], [], []
    for b in range(m):
        dt, cpu, marg = _timed(lambda b=b: pyro_marginals(structure, tok_cpu[b], vis_cpu[b]),
                               torch.device("cpu"))
        pyro_times.append(dt)
        pyro_cpu.append(cpu)
        tables.append(_pyro_table(structure, marg, vis_cpu[b]))
    pyro_seq = sum(pyro_times) / m
    pyro_cpu_seq = sum(pyro_cpu) / m
    print(f"pyro : warm-up {_fmt_s(pyro_warm)}; {m} sequences one call each: total "
          f"{_fmt_s(sum(pyro_times))}, median {_fmt_s(statistics.median(pyro_times))}, "
          f"min {_fmt_s(min(pyro_times))}, max {_fmt_s(max(pyro_times))}; CPU time total "
          f"{_fmt_s(sum(pyro_cpu))}")
    print(f"pyro : {_fmt_s(pyro_seq)} per sequence (mean over {m}; CPU)")
    print(f"pyro : extrapolated to N={args.n}: {_fmt_s(pyro_seq * args.n)} "
          f"vs ours {_fmt_s(ours_batch)}")

    ratio = pyro_seq / ours_seq
    cpu_ratio = pyro_cpu_seq / ours_cpu_seq if ours_cpu_seq > 0 else math.nan
    print(f"RATIO: {ratio:.1f}x per sequence, wall clock (goal >= {RATIO_GOAL:.0f}x) "
          f"-> {'met' if ratio >= RATIO_GOAL else 'NOT met'}; by CPU time {cpu_ratio:.1f}x")

    probs = ours[:m].detach().to("cpu", torch.float64).exp()
    reference = torch.stack(tables)
    masked = ~vis_cpu
    diff = (probs - reference).abs()[masked]
    max_diff = diff.max().item() if diff.numel() else 0.0
    onehot = torch.nn.functional.one_hot(tok_cpu, structure.vocab).to(torch.float64)
    visible_diff = (probs - onehot).abs()[vis_cpu]
    max_visible_diff = visible_diff.max().item() if visible_diff.numel() else 0.0
    n_checked = int(masked.sum())
    print(f"check: {n_checked} masked positions on {m} sequences: max |p_ours - p_pyro| = "
          f"{max_diff:.3e} (must be < {TOLERANCE:g}); visible positions: max |p_ours - "
          f"indicator| = {max_visible_diff:.3e}")
    agree = max_diff < TOLERANCE and max_visible_diff < TOLERANCE
    result = {
        "n": args.n, "m": m, "repeats": args.repeats, "seed": args.seed,
        "masked_fraction": masked_frac,
        "ours_warmup_s": warm, "ours_batch_times_s": times, "ours_batch_median_s": ours_batch,
        "ours_per_seq_s": ours_seq, "ours_batch_cpu_times_s": cpu_times,
        "ours_cpu_per_seq_s": ours_cpu_seq, "pyro_cpu_times_s": pyro_cpu,
        "pyro_cpu_per_seq_s": pyro_cpu_seq, "cpu_ratio": cpu_ratio,
        "pyro_warmup_s": pyro_warm, "pyro_times_s": pyro_times, "pyro_per_seq_s": pyro_seq,
        "ratio": ratio, "ratio_goal": RATIO_GOAL,
        "max_abs_diff": max_diff, "max_abs_diff_visible": max_visible_diff,
        "positions_checked": n_checked, "tolerance": TOLERANCE, "agree": agree,
    }
    if not agree:
        print(f"FAIL: ours and Pyro disagree by {max(max_diff, max_visible_diff):.3e} "
              f">= {TOLERANCE:g}", file=sys.stderr)
    return result


# ---------------------------------------------------------------------- 2. scaling
def bench_scaling(args, device: torch.device) -> dict:
    sizes = [nb for nb in (8, 16, 32, 64, 128, 256, 512) if nb <= args.max_blocks]
    print(f"\n== 2. scaling: conditionals of {args.n} random partial sequences, block_hmm "
          f"n_blocks in {sizes} ==")
    print(f"(query = engine.conditionals, median of {args.repeats} after one warm-up; a size "
          f"whose warm-up call takes over {args.slow:g} s is timed by that one call. trace = "
          "load_model + tracing the Pyro model; plan = engine + min-fill order; fwd only = "
          "log_prob_visible on the same batch)")
    header = (f"{'blocks':>6} {'tokens':>6} {'trace':>9} {'plan':>9} {'compile':>9} "
              f"{'query':>10} {'runs':>4} {'query cpu':>10} {'fwd only':>10} {'per block':>10} "
              f"{'us/blk/seq':>10} {'slope':>6} {'peak MiB':>9}")
    print(header)
    rows = []
    for nb in sizes:
        row = _scale_one(nb, args, device, rows[-1] if rows else None)
        rows.append(row)
        print(f"{nb:>6} {row['n_tokens']:>6} {_fmt_s(row['trace_s']):>9} "
              f"{_fmt_s(row['plan_s']):>9} {_fmt_s(row['compile_s']):>9} "
              f"{_fmt_s(row['query_s']):>10} {len(row['query_times_s']):>4} "
              f"{_fmt_s(row['query_cpu_s']):>10} "
              f"{_fmt_s(row['forward_s']):>10} "
              f"{_fmt_s(row['per_block_s']):>10} {row['per_block_per_seq_s'] * 1e6:>10.3f} "
              f"{row['local_slope']:>6.2f} {row['peak_mib']:>9.0f}", flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    xs = [r["n_blocks"] for r in rows]
    slope = _slope(xs, [r["query_s"] for r in rows])
    tail = _slope(xs[-3:], [r["query_s"] for r in rows[-3:]])
    compile_slope = _slope(xs, [r["compile_s"] for r in rows])
    forward_slope = _slope(xs, [r["forward_s"] for r in rows])
    cpu_slope = _slope(xs, [r["query_cpu_s"] for r in rows])
    print(f"log-log slope of query time vs n_blocks: {slope:.2f} over {xs[0]}..{xs[-1]} blocks "
          f"(last 3 sizes: {tail:.2f}); goal ~1 (linear)")
    print(f"log-log slope of query CPU time vs n_blocks: {cpu_slope:.2f}")
    print(f"log-log slope of forward-only time (log_prob_visible) vs n_blocks: "
          f"{forward_slope:.2f}")
    print(f"log-log slope of compile time (trace + plan) vs n_blocks: {compile_slope:.2f}")

    profile = None
    if args.profile and rows:
        profile = _profile(xs[-1], args, device)
    return {"sizes": xs, "rows": rows, "slope": slope, "slope_last3": tail,
            "compile_slope": compile_slope, "forward_slope": forward_slope,
            "cpu_slope": cpu_slope,
            "profile": profile}


def _scale_one(nb: int, args, device: torch.device, previous: dict | None) -> dict:
    """Compile and time the conditionals of ``args.n`` random partial sequences at ``nb`` blocks."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    structure = load_model("block_hmm", n_blocks=nb)
    structure.factor_graph  # noqa: B018  (traces the Pyro model: the compile step)
    trace_s = time.perf_counter() - start
    start = time.perf_counter()
    engine = structure.engine()
    engine._plan((), False)  # min-fill order and cliques, cached for every later query
    _sync(device)
    plan_s = time.perf_counter() - start
    tokens, visible = random_partial(engine, args.n, args.seed)

    def query():
        return engine.conditionals(tokens, visible)

    warm, warm_cpu, _ = _timed(query, device)
    if warm > args.slow:
        runs = [(warm, warm_cpu)]
    else:
        runs = [_timed(query, device)[:2] for _ in range(args.repeats)]
    times = [wall for wall, _ in runs]
    median = statistics.median(times)
    cpu_median = statistics.median(cpu for _, cpu in runs)

    def forward():  # log p(x_visible): the same elimination without the adjoint pass
        return engine.log_prob_visible(tokens, visible)

    fwd_times = [_timed(forward, device)[0] for _ in range(1 if warm > args.slow else
                                                           1 + args.repeats)]
    forward_s = statistics.median(fwd_times[1:] or fwd_times)
    local = (math.log(median / previous["query_s"]) / math.log(nb / previous["n_blocks"])
             if previous else math.nan)
    return {"n_blocks": nb, "n_tokens": engine.n, "trace_s": trace_s, "plan_s": plan_s,
            "compile_s": trace_s + plan_s, "warmup_s": warm, "query_times_s": times,
            "query_s": median, "query_cpu_s": cpu_median, "forward_s": forward_s,
            "per_block_s": median / nb,
            "per_block_per_seq_s": median / nb / args.n, "local_slope": local,
            "peak_mib": _peak_memory_mib(device)}


def _profile(nb: int, args, device: torch.device) -> str:
    """cProfile of one conditionals call at ``nb`` blocks (after a warm-up)."""
    structure = load_model("block_hmm", n_blocks=nb)
    engine = structure.engine()
    tokens, visible = random_partial(engine, args.n, args.seed)
    engine.conditionals(tokens, visible)
    profiler = cProfile.Profile()
    profiler.enable()
    engine.conditionals(tokens, visible)
    _sync(device)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    text = out.getvalue()
    print(f"\ncProfile of one conditionals call, {nb} blocks, {args.n} sequences "
          f"(sorted by own time):\n{text}")
    return text


# ---------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, help=f"sequences per batch (default {FULL['n']}; "
                        f"quick {QUICK['n']})")
    parser.add_argument("--m", type=int, help="sequences run through Pyro, one call each "
                        f"(default {FULL['m']}; quick {QUICK['m']})")
    parser.add_argument("--repeats", type=int, help="timed calls after the warm-up "
                        f"(default {FULL['repeats']}; quick {QUICK['repeats']})")
    parser.add_argument("--max-blocks", type=int, help="largest n_blocks of the scaling sweep "
                        f"(default {FULL['max_blocks']}; quick {QUICK['max_blocks']})")
    parser.add_argument("--quick", action="store_true", help="small sizes (about 30 s)")
    parser.add_argument("--seed", type=int, default=0, help="torch.Generator seed (default 0)")
    parser.add_argument("--slow", type=float, default=20.0, help="scaling sizes whose warm-up "
                        "call takes longer than this many seconds are timed by that call alone "
                        "(default 20)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1, as the mdmprob command uses)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile one conditionals call at the largest scaling size")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("n", "m", "repeats", "max_blocks", "threads"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    structure = load_model("block_hmm")
    engine = structure.engine()  # device and dtype from MDMPROB_DEVICE / MDMPROB_DTYPE
    device, dtype = engine.device, engine.dtype
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    env = {
        "python": platform.python_version(), "torch": torch.__version__,
        "pyro": pyro.__version__, "device": str(device), "dtype": str(dtype),
        "MDMPROB_DEVICE": os.environ.get("MDMPROB_DEVICE"),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "loadavg_start": list(load), "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "quick": args.quick,
    }
    print("== mdmprob engine benchmark" + (" (--quick)" if args.quick else "") + " ==")
    print(f"torch {env['torch']}, pyro {env['pyro']}, python {env['python']}")
    print(f"device {device}" + (f" ({env['gpu']})" if env["gpu"] else "") +
          f" (MDMPROB_DEVICE={env['MDMPROB_DEVICE'] or 'unset'}), dtype {dtype}, "
          f"torch threads {env['threads']}, cpus {env['cpu_count']}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"options: n={args.n} m={args.m} repeats={args.repeats} "
          f"max_blocks={args.max_blocks} seed={args.seed}")
    del structure, engine

    ratio = bench_ratio(args, device)
    results = {"env": env, "ratio": ratio}
    if ratio["agree"]:
        results["scaling"] = bench_scaling(args, device)
    total = time.perf_counter() - start
    results["total_s"] = total
    env["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    print("\n== summary ==")
    print(f"ratio vs Pyro   : {ratio['ratio']:.1f}x per sequence (ours "
          f"{_fmt_s(ratio['ours_per_seq_s'])}, Pyro {_fmt_s(ratio['pyro_per_seq_s'])}; "
          f"goal >= {RATIO_GOAL:.0f}x: {'met' if ratio['ratio'] >= RATIO_GOAL else 'NOT met'}; "
          f"by CPU time {ratio['cpu_ratio']:.1f}x)")
    print(f"agreement       : max |dp| = {ratio['max_abs_diff']:.3e} on {ratio['m']} sequences "
          f"({'OK' if ratio['agree'] else 'FAIL'}, tolerance {TOLERANCE:g})")
    if "scaling" in results:
        sc = results["scaling"]
        print(f"scaling slope   : {sc['slope']:.2f} (log-log, {sc['sizes'][0]}..{sc['sizes'][-1]} "
              f"blocks; last 3 sizes {sc['slope_last3']:.2f}; by CPU time "
              f"{sc['cpu_slope']:.2f}; goal ~1: {_linearity(sc['slope'])})")
    else:
        print("scaling slope   : not measured (agreement check failed)")
    load = env["loadavg_end"] or [math.nan] * 3
    print(f"total runtime   : {total:.1f} s (load average at the end {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f})")
    cpus = os.cpu_count() or 1  # the end figure includes this benchmark's own threads
    if env["loadavg_start"][0] > cpus / 2 or load[0] > cpus + 1:
        print(f"WARNING: load average {env['loadavg_start'][0]:.2f} (start) / {load[0]:.2f} "
              f"(end) on {cpus} cpus: other processes were running and skew these wall-clock "
              "figures (try --threads 1, or an idle machine)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {args.json}")
    if not ratio["agree"]:
        print("FAIL: conditionals disagree with Pyro beyond tolerance", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
