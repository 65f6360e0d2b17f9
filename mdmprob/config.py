"""Default device and dtype, read from ``MDMPROB_DEVICE`` and ``MDMPROB_DTYPE``.

Float64 on the CPU unless the environment says otherwise; every tensor mdmprob creates
is placed with :func:`default_device` / :func:`default_dtype` or follows its inputs.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from mdmprob.errors import MdmprobError

_DEVICE: ContextVar[str | None] = ContextVar("mdmprob_device", default=None)
_DTYPES = {"float64": torch.float64, "double": torch.float64, "float32": torch.float32,
           "float": torch.float32}


def default_device() -> torch.device:
    """The device of the innermost :func:`use_device` block, else the one named by
    ``MDMPROB_DEVICE`` (default ``cpu``)."""
    name = _DEVICE.get() or os.environ.get("MDMPROB_DEVICE", "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise MdmprobError(f"MDMPROB_DEVICE={name!r} is not a torch device; use cpu or cuda") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MdmprobError(f"MDMPROB_DEVICE={name!r} but torch sees no CUDA device; use cpu")
    return device


@contextmanager
def use_device(device):
    """Within the block, :func:`default_device` is ``device`` (``None``: no change). Scoped to
    the calling context: the process environment is left as it is."""
    token = _DEVICE.set(str(device) if device else None)
    try:
        yield
    finally:
        _DEVICE.reset(token)


def default_dtype() -> torch.dtype:
    """The floating dtype named by ``MDMPROB_DTYPE`` (default ``float64``)."""
    name = os.environ.get("MDMPROB_DTYPE", "float64")
    if name not in _DTYPES:
        raise MdmprobError(f"MDMPROB_DTYPE={name!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[name]
