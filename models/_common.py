"""Parameter checks shared by the zoo's models."""

from __future__ import annotations

from mdmprob.errors import MdmprobError


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise MdmprobError(f"parameter {name}={value!r} must be an integer {bound}")
    return value


def check_prob(name: str, value, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise MdmprobError(f"parameter {name}={value!r} must be a number in [{low}, {high}]")
    return float(value)
