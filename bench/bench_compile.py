"""Benchmark of the compiler: tracing the Block-HMM, and what the replay check costs.

For n_blocks = 8, 16, ..., ``--max-blocks`` (the paper's Block-HMM, 8 tokens per block), in one
run: the compile without the replay check (trace under enumeration, grounding), the replay check
alone (reruns of the model on samples of the compiled graph: 3, one past 1000 sites), and, as
the baseline, one plain ``poutine.trace`` of the model (Pyro running it once, sampling).
Reported: seconds (median of ``--repeats``), the ratios compile / plain trace and replay /
compile, and log-log slopes of time vs n_blocks (linear: ~1).

    .venv/bin/python bench/bench_compile.py              # up to 512 blocks
    .venv/bin/python bench/bench_compile.py --quick      # up to 64 blocks
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import pyro
import pyro.poutine as poutine
import torch

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
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
