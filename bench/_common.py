"""Timing helpers shared by the benchmarks: repeated timings (min and median), the load average,
CUDA synchronisation, peak memory, log-log slopes and number formatting.

A benchmark on a shared machine reports the load average next to its figures and prefers the
minimum over repetitions (the run least disturbed by other processes); ratios are always of two
timings taken in the same process, one after the other.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of ``len(times)`` calls after ``warmup`` untimed ones, and the process
    CPU seconds of each (less sensitive to other processes than wall time)."""

    times: tuple[float, ...]
    cpu_times: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_min(self) -> float:
        return min(self.cpu_times)

    def __str__(self) -> str:
        return f"min {fmt_s(self.min)}, median {fmt_s(self.median)} over {len(self.times)}"

    def as_dict(self) -> dict:
        return {"times_s": list(self.times), "cpu_times_s": list(self.cpu_times),
                "min_s": self.min, "median_s": self.median}


def sync(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


CPU = torch.device("cpu")


def timed(fn, device: torch.device = CPU):
    """``(wall seconds, CPU seconds, result)`` of one call, CUDA synchronised on both sides."""
    sync(device)
    cpu, start = time.process_time(), time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu, out


def repeat(fn, repeats: int, device: torch.device = CPU, warmup: int = 1,
           slow: float = math.inf) -> Timing:
    """Time ``repeats`` calls of ``fn`` after ``warmup`` untimed ones. A warm-up call slower than
    ``slow`` seconds is taken as the only timing (sizes too slow to repeat)."""
    for _ in range(warmup):
        wall, cpu, _ = timed(fn, device)
        if wall > slow:
            return Timing((wall,), (cpu,))
    runs = [timed(fn, device)[:2] for _ in range(repeats)]
    return Timing(tuple(w for w, _ in runs), tuple(c for _, c in runs))


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (NaN where the platform has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else [math.nan] * 3


def load_line() -> str:
    one, five, fifteen = loadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cpus"


def peak_memory_mib(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak RSS on the CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / (2**20 if sys.platform == "darwin" else 2**10)


def slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x): the scaling exponent."""
    if len(xs) < 2:
        return math.nan
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.2f} us"


def verdict(value: float, goal: float, at_most: bool = False) -> str:
    ok = value <= goal if at_most else value >= goal
    return "met" if ok else "NOT met"


def parse_with_preset(parser, argv, quick: dict, full: dict):
    """Parse ``argv``; every option of the preset (``quick`` with ``--quick``, else ``full``) left
    at ``None`` takes the preset's value."""
    args = parser.parse_args(argv)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args
