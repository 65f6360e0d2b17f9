"""Old names that still work: each use warns with a ``DeprecationWarning`` naming the new one."""

from __future__ import annotations

import warnings


def renamed(obj, old: str, new: str):
    """``obj.new``, with a ``DeprecationWarning`` saying that ``old`` is now ``new``."""
    warnings.warn(f"{type(obj).__name__}.{old} is now {new}", DeprecationWarning, stacklevel=3)
    return getattr(obj, new)


def moved_module(old: str, new: str) -> None:
    """Warn, at the import of module ``old``, that its contents now live in module ``new``."""
    warnings.warn(f"{old} is renamed {new}; import {new} instead", DeprecationWarning,
                  stacklevel=3)
