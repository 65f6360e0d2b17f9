"""Benchmark of the command line's start-up: wall time of ``mdmprob --help``, ``--version``,
``models``, ``decoders`` and ``experiments`` in fresh processes, against two baselines measured
in the same run.

* floor: ``python -c pass`` (the interpreter's own start-up);
* import baseline: the same listings built by importing the zoo, the presets and the experiments
  (``mdmprob.catalog.*(from_source=False)``), which is what the command did before it read them
  from source, and ``python -c "import torch"`` alone.

Each command runs ``--repeats`` times; the median is reported with the ratio to the import
baseline and the time above the floor. The target is < 0.5 s per command.

    .venv/bin/python bench/bench_cli.py                 # make bench
    .venv/bin/python bench/bench_cli.py --repeats 3 --json out/bench_cli.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = ("from mdmprob.cli import main; import sys, io, contextlib\n"
       "with contextlib.redirect_stdout(io.StringIO()): sys.exit(main(sys.argv[1:]))")
IMPORTED = ("from mdmprob import catalog; import sys\n"
            "getattr(catalog, sys.argv[1])(from_source=False)")
COMMANDS = (["--help"], ["--version"], ["models"], ["decoders"], ["experiments"])


def timed(argv: list[str], repeats: int) -> float:
    """Median wall time (s) of running ``argv`` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="Also write the results to this file.")
    args = parser.parse_args()
    py = sys.executable
    floor = timed([py, "-c", "pass"], args.repeats)
    torch_alone = timed([py, "-c", "import torch"], args.repeats)
    rows = []
    for argv in COMMANDS:
        ours = timed([py, "-c", CLI, *argv], args.repeats)
        kind = argv[0] if argv[0] in ("models", "decoders", "experiments") else None
        base = timed([py, "-c", IMPORTED, kind], args.repeats) if kind else torch_alone
        rows.append({"command": "mdmprob " + " ".join(argv), "seconds": ours,
                     "baseline_seconds": base, "ratio_to_baseline": ours / base,
                     "above_floor_seconds": ours - floor, "target_met": ours < 0.5})
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"python start-up (floor) {floor:.3f} s; import torch alone {torch_alone:.3f} s; "
          f"load average {load[0]:.2f} on {os.cpu_count()} cores" if load else "")
    print(f"{'command':<28}{'ours [s]':>10}{'baseline [s]':>14}{'ratio':>8}{'above floor':>13}")
    for r in rows:
        print(f"{r['command']:<28}{r['seconds']:>10.3f}{r['baseline_seconds']:>14.3f}"
              f"{r['ratio_to_baseline']:>8.2f}{r['above_floor_seconds']:>13.3f}"
              f"{'' if r['target_met'] else '  (over 0.5 s)'}")
    print("baseline: listings built by importing the modules (--help, --version: import torch)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "floor_seconds": floor, "torch_import_seconds": torch_alone, "rows": rows,
            "load_average": load, "cpus": os.cpu_count(), "python": platform.python_version()},
            indent=2))


if __name__ == "__main__":
    main()
