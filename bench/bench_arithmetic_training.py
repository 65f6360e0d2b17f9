"""Benchmark of the arithmetic-orders ladder's training cost: seconds per optimizer step.

For each task size D and width of the ``arithmetic-orders`` default ladder, ``--steps`` optimizer
steps of :func:`mdmprob.training.train` are timed (``--repeats`` times after one warm-up; min and
median wall time and the min process CPU time) with the answer-only loss (the default) and, as
the baseline of the ratio, the full MDM loss in the same process. The ladder's cost follows: each
(D, width, seed) is one run of ``max(steps) + decay_steps`` optimizer steps (every rung continues
the previous one), so the ladder costs ``seeds x sum over (D, width) of steps x seconds/step``.

One torch thread. Wall time on a shared machine is skewed by other processes (the load average
is printed); the CPU time is less so.

    .venv/bin/python bench/bench_arithmetic_training.py --quick
    .venv/bin/python bench/bench_arithmetic_training.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_s, load_line, repeat  # noqa: E402


def main(argv=None) -> int:
    from mdmprob.experiments.arithmetic_orders import Config
    from mdmprob.tasks.addition import neural_config, training_source
    from mdmprob.training import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5 steps, 1 repeat")
    args = parser.parse_args(argv)
    steps, repeats = (5, 1) if args.quick else (args.steps, args.repeats)
    torch.set_num_threads(1)
    config = Config()
    per_run = config.budgets()[-1]
    print(f"arithmetic-orders ladder training, {steps} steps per timing, batch "
          f"{config.batch_size}, 1 thread; {load_line()}")
    total_cpu = 0.0
    for D, widths in config.tasks():
        for d in widths:
            cpu = {}
            for loss in ("full", "answer"):
                neural = neural_config(D, loss=loss, **config.neural_fields(d, steps, 0))
                source = training_source(D)
                t = repeat(lambda neural=neural, source=source: train(source, neural), repeats)
                cpu[loss] = t.cpu_min / steps
                print(f"D={D} d_model={d} loss={loss:6s}: {t}; CPU min {fmt_s(t.cpu_min)} = "
                      f"{fmt_s(cpu[loss])}/step")
            run = cpu["answer"] * per_run
            total_cpu += run * len(config.train_seeds)
            print(f"D={D} d_model={d}: answer/full CPU per step = "
                  f"{cpu['answer'] / cpu['full']:.2f}; one seed's run of {per_run} steps = "
                  f"{fmt_s(run)} CPU")
    print(f"whole ladder ({len(config.train_seeds)} seeds): {fmt_s(total_cpu)} CPU on one thread; "
          f"{load_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
