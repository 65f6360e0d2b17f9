"""Parameter checks of the zoo's models: :mod:`mdmprob.checks` with ``parameter`` in the message."""

from __future__ import annotations

from mdmprob import checks


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    return checks.check_int(f"parameter {name}", value, low, high)


def check_prob(name: str, value, low: float = 0.0, high: float = 1.0) -> float:
    return checks.check_prob(f"parameter {name}", value, low, high)
