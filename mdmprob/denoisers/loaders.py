"""A denoiser from a spec: ``"oracle"`` or ``"path/to/file.py:function"``.

``load_denoiser(spec, structure)`` is what ``mdmprob audit --denoiser`` calls. A file's function
receives the structure and returns a :class:`~mdmprob.denoisers.base.Denoiser` of the same
vocabulary and length (for instance a :class:`~mdmprob.denoisers.huggingface.HuggingFaceMLM`
around a local checkpoint); the function name defaults to ``denoiser``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mdmprob.checks import check_match
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import MdmprobError


def load_denoiser(spec: str, structure) -> Denoiser:
    """The denoiser named by ``spec`` for ``structure`` (checked to match its V and n)."""
    from mdmprob.denoisers.oracle import Oracle

    if spec == "oracle":
        return Oracle(structure)
    path, sep, fname = spec.rpartition(":") if spec.rpartition(":")[0].endswith(".py") else \
        (spec, "", "denoiser")
    file = Path(path)
    if not path.endswith(".py") or not file.is_file():
        raise MdmprobError(f"denoiser {spec!r} must be 'oracle' or an existing "
                           "path/to/file.py[:function]")
    module_spec = importlib.util.spec_from_file_location(f"mdmprob_denoiser_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise MdmprobError(f"importing denoiser file {path!r} raised {type(e).__name__}: "
                           f"{e}") from e
    fn = getattr(module, fname or "denoiser", None)
    if not callable(fn):
        raise MdmprobError(f"{path!r} has no function {fname or 'denoiser'!r} returning a "
                           "Denoiser")
    den = fn(structure)
    if not isinstance(den, Denoiser):
        raise MdmprobError(f"{spec} returned {type(den).__name__}, not a Denoiser")
    check_match(den, structure)
    return den
