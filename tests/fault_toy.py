"""A tiny experiment for the fault-injection tests, and a command line that knows it.

``python tests/fault_toy.py run fault-toy --out DIR ...`` is ``mdmprob run`` with this experiment
registered. Each setting sleeps ``MDMPROB_TOY_DELAY`` seconds (default 0; the environment, not
the config, so a slowed run and a fast one are the same run) and returns records drawn from its
setting seed, so any stale or mixed-up record changes ``records.csv``.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdmprob.experiments import base  # noqa: E402
from mdmprob.experiments.base import Experiment, check_numbers, record  # noqa: E402


@dataclass
class Config:
    """n: settings; scale: multiplies every value (a config change that changes the records)."""

    n: int = 8
    scale: float = 1.0

    def check(self):
        check_numbers("n", self.n, low=1, integer=True)
        check_numbers("scale", self.scale, low=0)


class FaultToy(Experiment):
    name = "fault-toy"
    title = "fault-injection toy"
    Config = Config

    def settings(self, config):
        return [{"i": i} for i in range(config.n)]

    def run_setting(self, config, setting, seed):
        time.sleep(float(os.environ.get("MDMPROB_TOY_DELAY", "0")))
        rng = random.Random(seed)
        return [record(setting, "x", config.scale * rng.random(), 0.01),
                record(setting, "kl", math.inf if setting["i"] % 3 == 0 else rng.random())]


EXPERIMENT = FaultToy()


def register() -> None:
    """Add the toy to the experiment registry of this process."""
    known = base.registry

    def registry():
        return {**known(), EXPERIMENT.name: EXPERIMENT}

    base.registry = registry


if __name__ == "__main__":
    register()
    from mdmprob.cli import main

    sys.exit(main(sys.argv[1:]))
