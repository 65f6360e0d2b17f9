"""Benchmark of the compiler: tracing the Block-HMM, and what the replay check costs.

For n_blocks = 8, 16, ..., ``--max-blocks`` (the paper's Block-HMM, 8 tokens per block), in one
run: the compile without the replay check (trace under enumeration, grounding), the replay check
alone (reruns of the model on samples of the compiled graph: 3, one past 1000 sites), and, as
the baseline, one plain ``poutine.trace`` of the model (Pyro running it once, sampling).
Reported: seconds (median of ``--repeats``), the ratios compile / plain trace and replay /
compile, and log-log slopes of time vs n_blocks (linear: ~1).

Then the caches (:mod:`mdmprob.cache`): building the structure and planning its engine's
message trees (trace + plan, as ``load_model(...).engine()`` and its first query do) cold (an
empty disk cache in a temporary ``MDMPROB_CACHE``), from the disk cache (the in-process cache
dropped, as in a new run) and from the in-process cache; the ratio cold / disk; and whether the
cached graph is equal to the cold one (names, cards, every table).

    .venv/bin/python bench/bench_compile.py              # up to 512 blocks
    .venv/bin/python bench/bench_compile.py --quick      # up to 64 blocks
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time

import pyro
import pyro.poutine as poutine
import torch

from mdmprob import cache
from mdmprob.compile import compile_model
from mdmprob.structure import load_model


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _slope(xs, ys) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum(
        (a - mx) ** 2 for a in lx)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-blocks", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="up to 64 blocks")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("MDMPROB_THREADS", "1")))
    max_blocks = 64 if args.quick else args.max_blocks
    sizes = [8]
    while sizes[-1] * 2 <= max_blocks:
        sizes.append(sizes[-1] * 2)
    print(f"{'blocks':>6} {'tokens':>6} {'plain':>8} {'compile':>8} {'replay':>8} "
          f"{'compile/plain':>13} {'replay/compile':>14}")
    rows = []
    for nb in sizes:
        s = load_model("block_hmm", n_blocks=nb)

        def plain(model=s.model):
            with pyro.validation_enabled(False), torch.no_grad():
                poutine.trace(model).get_trace()

        plain_s = _median_time(plain, args.repeats)
        compile_s = _median_time(lambda s=s: compile_model(s.model, s.tokens, 2,
                                                           replay_check=False), args.repeats)
        checked_s = _median_time(lambda s=s: compile_model(s.model, s.tokens, 2), args.repeats)
        replay_s = max(checked_s - compile_s, 0.0)
        rows.append((nb, plain_s, compile_s, replay_s))
        print(f"{nb:>6} {nb * 8:>6} {plain_s:>8.3f} {compile_s:>8.3f} {replay_s:>8.3f} "
              f"{compile_s / plain_s:>13.2f} {replay_s / compile_s:>14.2f}", flush=True)
    if len(rows) > 1:
        xs = [r[0] for r in rows]
        print(f"log-log slope vs n_blocks: compile {_slope(xs, [r[2] for r in rows]):.2f}, "
              f"compile + replay {_slope(xs, [r[2] + r[3] for r in rows]):.2f}")
    bench_cache(sizes, args.repeats)
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return 0


def _trace_and_plan(nb: int):
    s = load_model("block_hmm", n_blocks=nb)
    engine = s.engine()
    engine.message_tree(shallow=True)  # the plans whole-sequence and incremental queries use
    engine.message_tree(shallow=False)
    return s


def _same_graph(a, b) -> bool:
    return (a.names == b.names and a.cards == b.cards and a.n_tokens == b.n_tokens
            and len(a.factors) == len(b.factors)
            and all(f.variables == g.variables and torch.equal(f.table, g.table)
                    for f, g in zip(a.factors, b.factors, strict=True)))


def bench_cache(sizes, repeats: int) -> None:
    print(f"\n{'blocks':>6} {'cold':>8} {'disk':>8} {'process':>8} {'cold/disk':>9} "
          f"{'same graph':>10}   (trace + plan, s; median of {repeats})")
    before = os.environ.get("MDMPROB_CACHE")
    rows = []
    try:
        for nb in sizes:
            cold, disk, memory, same = [], [], [], True
            for _ in range(repeats):
                with tempfile.TemporaryDirectory() as folder:
                    os.environ["MDMPROB_CACHE"] = folder
                    cache.forget()
                    start = time.perf_counter()
                    first = _trace_and_plan(nb)
                    cold.append(time.perf_counter() - start)
                    cache.forget()  # a new run: only the disk cache is left
                    start = time.perf_counter()
                    second = _trace_and_plan(nb)
                    disk.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    _trace_and_plan(nb)
                    memory.append(time.perf_counter() - start)
                    same = same and _same_graph(first.factor_graph, second.factor_graph)
            c, d, m = (statistics.median(x) for x in (cold, disk, memory))
            rows.append((nb, c, d, m))
            print(f"{nb:>6} {c:>8.3f} {d:>8.3f} {m:>8.3f} {c / d:>9.1f} {str(same):>10}",
                  flush=True)
    finally:
        cache.forget()
        if before is None:
            os.environ.pop("MDMPROB_CACHE", None)
        else:
            os.environ["MDMPROB_CACHE"] = before
    if len(rows) > 1:
        xs = [r[0] for r in rows]
        print(f"log-log slope vs n_blocks: cold {_slope(xs, [r[1] for r in rows]):.2f}, "
              f"disk {_slope(xs, [r[2] for r in rows]):.2f}; at {xs[-1]} blocks cold "
              f"{rows[-1][1]:.2f} s, from disk {rows[-1][2]:.2f} s "
              f"({rows[-1][1] / rows[-1][2]:.1f}x), in process {rows[-1][3]:.3f} s")


if __name__ == "__main__":
    raise SystemExit(main())
