"""Old names that still work: each use warns with a ``DeprecationWarning`` naming the new one."""

from __future__ import annotations

import functools
import warnings

from mdmprob.errors import MdmprobError


def renamed(obj, old: str, new: str):
    """``obj.new``, with a ``DeprecationWarning`` saying that ``old`` is now ``new``."""
    warnings.warn(f"{type(obj).__name__}.{old} is now {new}", DeprecationWarning, stacklevel=3)
    return getattr(obj, new)


def moved_module(old: str, new: str) -> None:
    """Warn, at the import of module ``old``, that its contents now live in module ``new``."""
    warnings.warn(f"{old} is renamed {new}; import {new} instead", DeprecationWarning,
                  stacklevel=3)


def renamed_arguments(**old_to_new: str):
    """Decorator: keyword ``old=`` still works for ``new=`` (``renamed_arguments(den="denoiser")``),
    with a ``DeprecationWarning``; passing both raises :class:`~mdmprob.errors.MdmprobError`."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise MdmprobError(f"{fn.__name__}() got both {old}= and {new}=; pass {new}= "
                                       f"only ({old}= is its former name)")
                warnings.warn(f"{fn.__name__}({old}=...) is now {fn.__name__}({new}=...)",
                              DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner

    return wrap
