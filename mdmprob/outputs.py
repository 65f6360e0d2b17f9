"""Output files: strict JSON, atomic writes with ordinary file modes, typed disk errors.

Strict JSON: every JSON mdmprob writes (``--json``, ``meta.json``, ``records.jsonl``) parses with
any JSON parser. JSON has no infinities, so +inf is written as the string ``"+inf"`` and -inf as
``"-inf"`` (a KL can be +inf); NaN is never written (records refuse it). :func:`loads` reads the
strings back as floats.

Files are written to a temporary name in the same folder and renamed, so a reader never sees a
half-written file; they get the mode an ordinary ``open()`` would (0666 less the umask), not the
0600 of a temporary file. A full disk or a read-only folder raises :class:`OutputError`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from mdmprob.errors import MdmprobError

INF, NEG_INF = "+inf", "-inf"


class OutputError(MdmprobError):
    """An output file could not be written (disk full, no permission)."""


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` with ±inf as ``"+inf"`` / ``"-inf"``; NaN raises (strict JSON only).
    Numpy and torch scalars are written as their Python values, anything else unknown as text."""
    return json.dumps(plain(obj), allow_nan=False, default=_scalar, **kwargs)


def loads(text: str) -> Any:
    """``json.loads`` that reads ``"+inf"`` / ``"-inf"`` back as floats."""
    return _unplain(json.loads(text))


def plain(obj: Any) -> Any:
    """``obj`` with infinite floats as strings and tuples as lists (NaN is left to raise)."""
    if isinstance(obj, float):
        if math.isinf(obj):
            return INF if obj > 0 else NEG_INF
        return obj
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + rename), with an ordinary mode."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise disk_error(e, path) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def disk_error(e: OSError, path: Path, saved: str = "") -> OutputError:
    """An :class:`OutputError` for an ``OSError`` met writing ``path``, saying what to do."""
    what = saved + " " if saved else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"disk full writing {str(path)!r}; {what}free some space and rerun "
                           "the same command to resume")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {str(path)!r} ({e.strerror}); {what}pass --out with a "
                           "folder you can write to")
    return OutputError(f"cannot write {str(path)!r} ({e.strerror or e}); {what}rerun the same "
                       "command to resume")


def _scalar(obj: Any) -> Any:
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return plain(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(obj)


def _unplain(obj: Any) -> Any:
    if obj == INF:
        return math.inf
    if obj == NEG_INF:
        return -math.inf
    if isinstance(obj, dict):
        return {k: _unplain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unplain(v) for v in obj]
    return obj
