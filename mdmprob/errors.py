"""Typed errors. Every message names the offending value and says what to do instead."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MdmprobError(ValueError):
    """Base class of every error mdmprob raises on bad input."""


class StructureError(MdmprobError):
    """A Pyro model or its token declaration cannot be compiled into a factor graph."""


class UnknownNameError(MdmprobError, KeyError):
    """An unknown model, parameter, decoder or experiment name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class EvidenceError(MdmprobError):
    """Tokens or a visibility mask that do not fit the structure."""


class BudgetError(MdmprobError):
    """An explicit table would exceed the memory budget."""


class EnumerationError(BudgetError):
    """Exact enumeration of a decoder's outcomes is too large; the same quantity is available by
    Monte Carlo (callers in ``mode="auto"`` fall back to it by catching this type)."""


def unknown_name(kind: str, name: str, known: Iterable[str], hint: str = "") -> UnknownNameError:
    """An `UnknownNameError` for `name` that suggests the closest known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    msg = f"unknown {kind} {name!r}"
    if close:
        msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
    msg += f" Known {kind}s: {', '.join(known) if known else '(none)'}."
    if hint:
        msg += " " + hint
    return UnknownNameError(msg)
