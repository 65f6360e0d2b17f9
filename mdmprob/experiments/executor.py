"""Run an experiment's grid of settings: in-process (default) or as Ray tasks.

The output folder belongs to one *run*: an experiment, its config, the sweep seed and the mdmprob
version, hashed into a run key. Records stream into ``<out>/records.jsonl`` as settings finish:
its first line describes the run, then one JSON line per finished setting. A rerun of the same
command resumes (settings already there are skipped: nothing lost, nothing repeated); a run whose
key differs is refused with a message naming the difference, unless ``fresh`` moves the old folder
aside. At the end (or at an interruption) the folder holds ``records.csv`` (tidy: one row per
setting and metric, with standard errors), ``meta.json`` (the run, versions, device, timings,
whether it is complete), describing exactly the records beside it, and, once complete, the figures.

Robustness: an exclusive lock on the folder makes a second concurrent run fail at once; each
journal line is written with one append and fsynced, a torn last line (a kill, a full disk) is
repaired when the folder is opened; SIGINT / SIGTERM drop the setting in flight, save the others
and raise :class:`Interrupted`; a full disk raises :class:`~mdmprob.outputs.OutputError`. Each
setting's seed is a hash of the sweep seed and the setting, so both backends give the same records.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdmprob.errors import MdmprobError
from mdmprob.experiments.base import Experiment, config_dict, setting_key, setting_seed
from mdmprob.outputs import disk_error, dumps, file_mode, loads, write_text

JOURNAL, CSV, META, LOCK = "records.jsonl", "records.csv", "meta.json", ".lock"


@dataclass
class SweepResult:
    experiment: str
    records: list[dict[str, Any]]
    meta: dict[str, Any]
    out_dir: Path
    figures: list[Path] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # setting key -> error message

    def as_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "records": self.records, "meta": self.meta}


class SweepError(MdmprobError):
    """Some settings failed; ``result`` holds the records of the others."""

    def __init__(self, result: SweepResult, message: str):
        super().__init__(message)
        self.result = result


class Interrupted(MdmprobError):
    """SIGINT or SIGTERM stopped the sweep; ``saved`` of ``total`` settings are in the folder.
    ``exit_code`` is the shell's convention, 128 + the signal number (130, 143)."""

    def __init__(self, signum: int, saved: int, total: int):
        super().__init__(f"interrupted: {saved} of {total} settings saved; rerun the same command "
                         "to resume")
        self.signum, self.saved, self.total = signum, saved, total
        self.exit_code = 128 + signum


class FolderInUseError(MdmprobError):
    """Another run holds the output folder's lock."""


class RunMismatchError(MdmprobError):
    """The output folder holds the records of a different run (experiment, config, seed or
    version)."""


def run_identity(experiment: Experiment, config, seed: int) -> dict[str, Any]:
    """What the records of a run depend on: experiment, config, sweep seed, mdmprob version; and
    ``run_key``, a hash of them."""
    from mdmprob import __version__

    identity = {"experiment": experiment.name, "config": config_dict(config), "seed": seed,
                "mdmprob": __version__}
    digest = hashlib.sha256(dumps(identity, sort_keys=True).encode()).hexdigest()
    return {**identity, "run_key": digest[:16]}


def run_sweep(experiment: Experiment, config, out_dir: str | Path, *, seed: int = 0,
              backend: str = "local", address: str | None = None, device: str | None = None,
              progress: Callable[[int, int], None] | None = None, fresh: bool = False,
              notice: Callable[[str], None] | None = None) -> SweepResult:
    """Run every setting of ``experiment`` under ``config`` and write the output folder.

    ``fresh``: start over, moving an existing folder aside to ``<out>.old-<time>``; ``notice``
    receives one-line messages (a repaired journal, a folder moved aside)."""
    if backend not in ("local", "ray"):
        raise MdmprobError(f"backend {backend!r} must be 'local' or 'ray'")
    settings = experiment.settings(config)
    keys = [setting_key(s) for s in settings]
    if len(set(keys)) != len(keys):
        raise MdmprobError(f"experiment {experiment.name!r} produced duplicate settings")
    identity = run_identity(experiment, config, seed)
    with _Folder.open(out_dir, identity, fresh=fresh, notice=notice) as folder:
        experiment.workdir = folder.path
        done = folder.done(set(keys))
        todo = [(k, s) for k, s in zip(keys, settings, strict=True) if k not in done]
        failures: dict[str, tuple[str, bool]] = {}
        start = time.perf_counter()
        if progress:
            progress(len(done), len(settings))
        stopped: int | None = None

        with _Signals() as signals:
            def finished(key: str, records: list[dict] | None, seconds: float,
                         error: tuple[str, bool] | None):
                if error is not None:
                    failures[key] = error
                else:
                    with signals.deferred():  # a signal never separates the append from `done`
                        entry = {"key": key, "seconds": seconds, "records": records}
                        folder.append(entry, f"{len(done)} of {len(settings)} settings saved;")
                        done[key] = entry
                if progress:
                    progress(len(done) + len(failures), len(settings))

            try:
                if backend == "local":
                    _run_local(experiment, config, todo, seed, device, finished)
                else:
                    _run_ray(experiment, config, todo, seed, device, address, finished)
            except _Signal as s:
                stopped = s.signum
            with signals.deferred(then_raise=False):
                result = _finish(experiment, config, identity, folder.path, settings, keys, done,
                                 failures, backend, device, start, stopped)
            if signals.pending is not None and stopped is None:
                stopped = signals.pending
    if stopped is not None:
        raise Interrupted(stopped, len(done), len(settings))
    if failures:
        raise SweepError(result, _failure_message(experiment, settings, failures, folder.path))
    return result


# ------------------------------------------------------------------------ the output folder
class _Folder:
    """An output folder held under an exclusive lock, with its run checked and journal repaired."""

    def __init__(self, path: Path, identity: dict[str, Any], lock_fd: int):
        self.path, self.identity, self.lock_fd = path, identity, lock_fd
        self.journal = path / JOURNAL
        self.entries: dict[str, dict] = {}

    @classmethod
    @contextlib.contextmanager
    def open(cls, out_dir, identity, *, fresh: bool, notice) -> Iterator[_Folder]:
        path = writable_folder(Path(out_dir))
        lock_fd = _lock(path)
        try:
            previous = _recorded_run(path)
            if previous is not None and fresh:
                os.close(lock_fd)
                aside = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
                try:
                    path.rename(aside)
                except OSError as e:
                    raise disk_error(e, path) from e
                if notice:
                    notice(f"--fresh: the previous run's folder is kept as {aside}")
                path = writable_folder(path)
                lock_fd = _lock(path)
                previous = None
            if previous is not None and previous.get("run_key") != identity["run_key"]:
                raise RunMismatchError(_mismatch(path, previous, identity))
            folder = cls(path, identity, lock_fd)
            folder._load(notice)
            yield folder
        finally:
            with contextlib.suppress(OSError):
                os.close(lock_fd)

    def done(self, keys: set[str]) -> dict[str, dict]:
        return {k: v for k, v in self.entries.items() if k in keys}

    def append(self, entry: dict[str, Any], saved: str) -> None:
        """One line, one ``write`` on an O_APPEND descriptor, fsynced; a failed write is cut back
        so the journal never keeps a partial line."""
        _append_line(self.journal, dumps(entry) + "\n", saved)

    def _load(self, notice) -> None:
        header = {"run": {k: v for k, v in self.identity.items() if k != "run_key"},
                  "run_key": self.identity["run_key"]}
        if not self.journal.exists() or self.journal.stat().st_size == 0:
            _append_line(self.journal, dumps(header) + "\n", "")
            return
        try:
            data = self.journal.read_bytes()
        except OSError as e:
            raise disk_error(e, self.journal) from e
        lines = data.split(b"\n")
        torn = lines.pop()  # the bytes after the last newline: empty unless the tail was cut off
        kept, dropped = [], int(bool(torn.strip()))
        for raw in lines[1:]:
            try:
                entry = loads(raw.decode())
                assert isinstance(entry["key"], str) and isinstance(entry["records"], list)
                float(entry["seconds"])
            except (ValueError, UnicodeDecodeError, KeyError, TypeError, AssertionError):
                dropped += 1
                continue
            self.entries[entry["key"]] = entry
            kept.append(raw)
        if dropped:
            text = b"\n".join([dumps(header).encode(), *kept]).decode() + "\n"
            write_text(self.journal, text)
            if notice:
                notice(f"repaired {self.journal}: dropped {dropped} incomplete or corrupt "
                       f"line{'s' if dropped > 1 else ''} (those settings run again)")


def _recorded_run(path: Path) -> dict[str, Any] | None:
    """The run the folder's records belong to (its journal header, else its meta.json), ``{}`` for
    records of unknown origin, None for a folder without records."""
    journal, meta = path / JOURNAL, path / META
    if journal.exists() and journal.stat().st_size:
        with open(journal, "rb") as f:
            first = f.readline()
        try:
            header = loads(first.decode())
            return {**header["run"], "run_key": header["run_key"]}
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            return {}
    if meta.exists():
        try:
            m = loads(meta.read_text())
            return {k: m.get(k) for k in ("experiment", "config", "seed", "mdmprob", "run_key")}
        except (ValueError, OSError):
            return {}
    if (path / CSV).exists():
        return {}
    return None


def _mismatch(path: Path, previous: dict[str, Any], identity: dict[str, Any]) -> str:
    diffs = []
    if not previous.get("run_key"):
        diffs.append("records written without a run description")
    else:
        for name in ("experiment", "seed", "mdmprob"):
            if previous.get(name) != identity[name]:
                label = "version" if name == "mdmprob" else name
                diffs.append(f"{label} {previous.get(name)!r} there, {identity[name]!r} now")
        old, new = previous.get("config") or {}, identity["config"]
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                diffs.append(f"{k}={_short(old.get(k, '(absent)'))} there, "
                             f"{k}={_short(new.get(k, '(absent)'))} now")
    return (f"output folder {str(path)!r} holds the records of another run "
            f"({'; '.join(diffs) or 'a different run key'}). Rerun with that run's parameters to "
            "resume it, choose another --out, or pass --fresh to start over (the old folder is "
            "kept aside as <out>.old-<time>)")


def _short(v) -> str:
    text = dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."


def writable_folder(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise MdmprobError(f"output folder {str(out_dir)!r} is not writable ({e.strerror}); "
                           "pass --out with a folder you can write to") from e
    return out_dir


def _lock(path: Path) -> int:
    """An exclusive, non-blocking lock on ``<path>/.lock`` (held until its descriptor closes)."""
    lock = path / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as e:
        raise disk_error(e, lock) from e
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: run unlocked
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FolderInUseError(f"output folder {str(path)!r} is in use by another mdmprob run "
                               f"(pid {holder}); wait for it to finish or pass another --out") \
            from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _append_line(path: Path, line: str, saved: str) -> None:
    data = line.encode()
    fd = None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode())
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(28, "No space left on device")  # short write: the disk is full
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    except OSError as e:
        raise disk_error(e, path, saved) from e
    finally:
        if fd is not None:
            os.close(fd)


# ------------------------------------------------------------------------ finishing
def _finish(experiment, config, identity, out_dir, settings, keys, done, failures, backend,
            device, start, stopped) -> SweepResult:
    records = [r for k in keys if k in done for r in done[k]["records"]]
    complete = len(done) == len(settings)
    meta = {
        **identity, "backend": backend, "device": device or os.environ.get("MDMPROB_DEVICE", "cpu"),
        "versions": _versions(), "settings": len(settings), "settings_done": len(done),
        "failed": len(failures), "complete": complete,
        "interrupted": signal.Signals(stopped).name if stopped is not None else None,
        "timings": {"total_seconds": time.perf_counter() - start,
                    "settings": {k: done[k]["seconds"] for k in keys if k in done}},
    }
    saved = f"{len(done)} of {len(settings)} settings saved in {out_dir / JOURNAL};"
    _write_csv(out_dir / CSV, records, saved)
    write_text(out_dir / META, dumps(meta, indent=2))
    figures = []
    if records and complete and stopped is None:
        try:
            figures = experiment.plot(records, config, out_dir)
        except OSError as e:
            raise disk_error(e, out_dir, saved) from e
    errors = {k: message for k, (message, _) in failures.items()}
    return SweepResult(experiment.name, records, meta, out_dir, figures, errors)


def _failure_message(experiment, settings, failures, out_dir) -> str:
    first_key, (first, _) = next(iter(failures.items()))
    message = (f"{len(failures)} of {len(settings)} settings of {experiment.name!r} failed; "
               f"first: setting {first_key}: {first}. The other settings' records are kept in "
               f"{out_dir / JOURNAL}")
    if all(config_error for _, config_error in failures.values()):
        return message + "; a rerun with these parameters fails the same way: change them."
    return message + "; rerun the same command to retry the failed settings."


def _write_csv(path: Path, records: list[dict[str, Any]], saved: str) -> None:
    columns: list[str] = []
    for r in records:
        for k in r:
            if k not in columns and k not in ("metric", "value", "se"):
                columns.append(k)
    columns += ["metric", "value", "se"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    try:
        write_text(path, buffer.getvalue())
    except MdmprobError as e:
        raise type(e)(f"{e} ({saved.rstrip(';')})") from e


# ------------------------------------------------------------------------ signals
class _Signal(BaseException):
    """Raised by the handler; a BaseException so a setting's ``except Exception`` cannot eat it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """SIGINT / SIGTERM raise :class:`_Signal` in the main thread, except inside ``deferred()``
    blocks (a journal append, the final files), where the signal waits for the block's end."""

    def __init__(self):
        self.depth, self.pending, self.previous = 0, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False

    @contextlib.contextmanager
    def deferred(self, then_raise: bool = True):
        """Hold signals until the block ends; then raise the held one if ``then_raise``."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if then_raise and self.depth == 0 and self.pending is not None:
            signum, self.pending = self.pending, None
            raise _Signal(signum)

    def _handle(self, signum, frame):
        if self.depth:
            self.pending = signum
        else:
            raise _Signal(signum)


# ------------------------------------------------------------------------ backends
def _run_local(experiment, config, todo, seed, device, finished):
    for key, setting in todo:
        t0 = time.perf_counter()
        try:
            records = _call_setting(experiment, config, setting, setting_seed(seed, setting), device)
        except MdmprobError as e:
            finished(key, None, 0.0, (f"{type(e).__name__}: {e}", True))
            continue
        except Exception as e:  # a bug in one setting must not lose the others
            finished(key, None, 0.0, (f"{type(e).__name__}: {e}", False))
            continue
        finished(key, records, time.perf_counter() - t0, None)


def _run_ray(experiment, config, todo, seed, device, address, finished):
    try:
        import ray
    except ImportError as e:
        raise MdmprobError("--backend ray needs Ray: pip install -c constraints-cpu.txt "
                           "'mdmprob[ray]'") from e
    import logging

    started_here = not ray.is_initialized()
    if started_here:
        if address and address != "auto":
            _probe_ray(address)
        kwargs = {"address": address} if address else {"num_cpus": os.cpu_count() or 1}
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        try:
            ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False,
                     logging_level=logging.ERROR, **kwargs)
        except (ConnectionError, RuntimeError, TimeoutError) as e:
            raise MdmprobError(f"cannot start Ray{f' at {address}' if address else ''}: {e}; "
                               "check --address or use --backend local") from e
    pending = {}
    try:
        gpus = 1 if (device or "").startswith("cuda") else 0
        remote = ray.remote(num_gpus=gpus)(_timed_setting)
        pending = {remote.remote(experiment, config, s, setting_seed(seed, s), device): k
                   for k, s in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ready[0])
            try:
                records, seconds = ray.get(ready[0])
            except Exception as e:  # RayTaskError wraps the setting's own exception
                cause = getattr(e, "cause", None) or e
                finished(key, None, 0.0, (f"{type(cause).__name__}: {cause}",
                                          isinstance(cause, MdmprobError)))
                continue
            finished(key, records, seconds, None)
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


def _probe_ray(address: str, timeout: float = 5.0) -> None:
    """Fail fast (``timeout`` seconds) when nothing listens at ``host:port``: ``ray.init`` would
    otherwise retry for minutes."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise MdmprobError(f"--address {address!r} is not host:port (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise MdmprobError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one "
                           "with `ray start --head`, fix --address, or drop it for a local "
                           "Ray") from None


def _timed_setting(experiment, config, setting, seed, device):
    import torch

    torch.set_num_threads(1)  # one task per core; the engine's tensors are small
    t0 = time.perf_counter()
    records = _call_setting(experiment, config, setting, seed, device)
    return records, time.perf_counter() - t0


def _call_setting(experiment, config, setting, seed, device):
    from mdmprob.config import use_device

    with use_device(device):
        return experiment.run_setting(config, dict(setting), seed)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("mdmprob", "torch", "pyro-ppl", "numpy", "networkx", "arviz", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
