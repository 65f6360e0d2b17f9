"""Caches of compiled structures: in the process, and on disk across runs.

Tracing a large model and planning its eliminations cost seconds (a 512-block Block-HMM: 4096
tokens, tens of thousands of sites); both are functions of the model alone. An entry is keyed by a
SHA-256 of everything that determines it: the model's code and the values it closes over (tensors
by their bytes, functions by their code, recursively), the token sites, V and the compile options,
the versions of Python, torch, pyro and mdmprob, and the source of the modules that compute it.
A model whose closure holds an object of unknown kind has no key and is never cached. Code and
values reached through a module attribute (``helpers.TABLE``) are identified by the module's name
and version only: a model that reads a module's changing contents should set ``MDMPROB_CACHE=off``.

On disk, one file per entry under :func:`cache_dir`: ``$MDMPROB_CACHE`` (a directory; ``off``
disables the disk cache), else ``$XDG_CACHE_HOME/mdmprob`` or ``~/.cache/mdmprob``. Files are
written atomically (a temporary file, then a rename) and carry their key and a checksum of their
body; a file that cannot be read, whose key or checksum differs, or that fails the caller's
validation is rebuilt and rewritten, never trusted. A disk that cannot be written leaves the
computation uncached (a warning, not an error).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
import types
import warnings
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

FORMAT = 1  # bump when the layout of an entry changes
OFF = ("off", "0", "none", "false", "no")
# functions and classes of these packages are keyed by name (their version is in the key)
LIBRARIES = frozenset({"torch", "pyro", "numpy", "opt_einsum", "funsor", "builtins"})


class Unhashable(Exception):
    """An input the key cannot identify (the computation then runs uncached)."""


def cache_dir() -> Path | None:
    """The disk cache directory, or None when ``MDMPROB_CACHE`` disables it."""
    env = os.environ.get("MDMPROB_CACHE")
    if env is not None:
        return None if env.strip().lower() in OFF or not env.strip() else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mdmprob"


def environment() -> tuple:
    """The versions an entry depends on."""
    import pyro

    import mdmprob

    return (FORMAT, platform.python_version(), torch.__version__, pyro.__version__,
            mdmprob.__version__)


def source_digest(*modules) -> str:
    """SHA-256 of the source files of ``modules`` (a changed compiler misses every entry)."""
    h = hashlib.sha256()
    for module in modules:
        h.update(_file_digest(module.__file__).encode())
    return h.hexdigest()


@lru_cache(maxsize=64)
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fingerprint(*parts: Any) -> str:
    """SHA-256 (hex) of ``parts``: plain values, tensors, containers and functions (code,
    defaults, closure and the globals they name, recursively). Raises :class:`Unhashable` on an
    object of another kind."""
    h = hashlib.sha256()
    _digest(parts, h, set())
    return h.hexdigest()


def _digest(obj, h, seen: set) -> None:  # noqa: C901 - one case per kind
    def put(tag: str, data: bytes | str = b"") -> None:
        data = data.encode() if isinstance(data, str) else data
        h.update(f"{tag}:{len(data)}:".encode())
        h.update(data)

    if obj is None or isinstance(obj, bool | int | float | complex | str):
        put(type(obj).__name__, repr(obj))
    elif isinstance(obj, bytes):
        put("bytes", obj)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        put("tensor", f"{t.dtype}{tuple(t.shape)}")
        put("data", t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, torch.dtype | torch.device | range | slice):
        put(type(obj).__name__, repr(obj))
    elif isinstance(obj, tuple | list | set | frozenset):
        items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
        put(type(obj).__name__, str(len(items)))
        for item in items:
            _digest(item, h, seen)
    elif isinstance(obj, dict):
        put("dict", str(len(obj)))
        for key in sorted(obj, key=repr):
            _digest(key, h, seen)
            _digest(obj[key], h, seen)
    elif isinstance(obj, types.ModuleType):
        put("module", f"{obj.__name__}=={getattr(obj, '__version__', '')}")
    elif isinstance(obj, type | types.BuiltinFunctionType) or (
            isinstance(obj, types.FunctionType) and _library(obj)):
        put("named", f"{getattr(obj, '__module__', '')}.{obj.__qualname__}")
    elif isinstance(obj, types.CodeType):
        put("code", obj.co_code)
        put("names", repr((obj.co_names, obj.co_varnames, obj.co_freevars)))
        _digest(obj.co_consts, h, seen)
    elif isinstance(obj, types.FunctionType):
        if id(obj) in seen:  # recursion: the function is already being hashed
            put("again", obj.__qualname__)
            return
        seen.add(id(obj))
        put("function", obj.__qualname__)
        _digest(obj.__code__, h, seen)
        _digest((obj.__defaults__, obj.__kwdefaults__), h, seen)
        cells = obj.__closure__ or ()
        _digest([c.cell_contents if _filled(c) else None for c in cells], h, seen)
        named = sorted(_global_names(obj.__code__))
        _digest({k: obj.__globals__[k] for k in named if k in obj.__globals__}, h, seen)
    elif isinstance(obj, types.MethodType):
        _digest((obj.__func__, obj.__self__), h, seen)
    else:
        raise Unhashable(f"cannot key a {type(obj).__qualname__}")


def _library(fn) -> bool:
    root = (getattr(fn, "__module__", None) or "").split(".")[0]
    return root in LIBRARIES or root in sys.stdlib_module_names


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


# ---------------------------------------------------------------------------- the entries
MEMORY_ENTRIES = 256  # in-process entries kept (least recently used dropped first)
_MEMORY: OrderedDict[tuple[str, str], Any] = OrderedDict()


def cached(kind: str, parts: tuple, build, encode, decode):
    """``(value, key)``: the entry of ``kind`` keyed by ``parts`` (and :func:`environment`),
    from the process, else from the disk (``decode(body)``; None or an exception means not
    valid), else ``build()``, stored (``encode(value)``). ``key`` is None, and nothing cached,
    when ``parts`` hold something :func:`fingerprint` cannot key."""
    try:
        key = fingerprint(kind, environment(), parts)
    except Unhashable:
        return build(), None
    value = remembered(kind, key)
    if value is not None:
        return value, key
    body = read(kind, key)
    if body is not None:
        try:
            with gc_paused():
                value = decode(body)
        except Exception:  # noqa: BLE001 - a body that does not decode is rebuilt
            value = None
    if value is None:
        with gc_paused():
            value = build()
        write(kind, key, encode(value))
    remember(kind, key, value)
    return value, key


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector paused while a structure, a plan or a message tree is
    built: they are tens of thousands of small tuples and tensors, and the collector would walk
    the whole heap every few hundred of them (most of the time of reading a plan back). Cycles
    made meanwhile are collected when it resumes."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def remembered(kind: str, key: str):
    """The in-process entry, or None."""
    value = _MEMORY.get((kind, key))
    if value is not None:
        _MEMORY.move_to_end((kind, key))
    return value


def remember(kind: str, key: str, value) -> None:
    _MEMORY[(kind, key)] = value
    _MEMORY.move_to_end((kind, key))
    while len(_MEMORY) > MEMORY_ENTRIES:
        _MEMORY.popitem(last=False)


def forget() -> None:
    """Drop every in-process entry (the disk cache stays)."""
    _MEMORY.clear()


def path_of(kind: str, key: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / kind / f"{key}.pt"


def read(kind: str, key: str) -> dict | None:
    """The body stored under ``key``, or None when absent, unreadable, or not what was written
    (another key in its header, or a payload whose checksum differs)."""
    path = path_of(kind, key)
    if path is None or not path.is_file():
        return None
    try:
        data = path.read_bytes()
        head, _, payload = data.partition(b"\n")
        header = json.loads(head)
        if header.get("key") != key or header.get("sha256") != hashlib.sha256(payload).hexdigest():
            return None
        stored = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        body = json.loads(stored["json"])
        body.update(stored["tensors"])
        return body
    except Exception:  # noqa: BLE001 - any failure to read means: rebuild
        return None


def write(kind: str, key: str, body: dict) -> Path | None:
    """Store ``body`` (a dict of JSON values and tensors; tuples read back as lists) under
    ``key`` atomically: a JSON header line (key, format, SHA-256 of the payload), then the
    payload (``torch.save`` of the tensors and one JSON string of the rest: fast to read back
    with ``weights_only``). None when the disk cache is off or cannot be written."""
    path = path_of(kind, key)
    if path is None:
        return None
    tensors = {k: v for k, v in body.items() if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in body.items() if k not in tensors}
    buffer = io.BytesIO()
    torch.save({"json": json.dumps(plain), "tensors": tensors}, buffer)
    payload = buffer.getvalue()
    header = json.dumps({"key": key, "format": FORMAT, "kind": kind,
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header + b"\n" + payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        warnings.warn(f"mdmprob cache: could not write {path} ({e}); set MDMPROB_CACHE to a "
                      "writable directory, or MDMPROB_CACHE=off", stacklevel=3)
        return None
    return path


__all__ = ["Unhashable", "cache_dir", "cached", "environment", "fingerprint", "forget", "gc_paused",
           "read", "remember", "remembered", "source_digest", "write"]
