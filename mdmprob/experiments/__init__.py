"""Experiments: config dataclasses, settings grids, tidy records and figures (see ``base``)."""

from mdmprob.experiments.base import Experiment, get_experiment, record, records_from, registry
from mdmprob.experiments.executor import SweepResult, run_sweep

__all__ = ["Experiment", "SweepResult", "get_experiment", "record", "records_from", "registry",
           "run_sweep"]
