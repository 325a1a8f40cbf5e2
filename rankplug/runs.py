"""Run directories: reading their files safely, and a lock so that one process at a time writes into one.

A run directory (``rankplug train --dir``, the demo's ``rankgan/`` and ``baseline/``) is read back by
``rankplug eval`` and ``complete``, perhaps on another machine and from a copy someone sent. So nothing read
from it may run code or build something unbounded: JSON files are parsed and checked by :func:`read_json`,
checkpoints go through :func:`rankplug._checkpoint.safe_load` (``weights_only=True`` and a checksum), settings
are validated before any network is built, and CIFAR-10 batches named by ``run.json`` are read with an
unpickler that only admits arrays (:func:`rankplug.data.read_cifar_batch`).

While a process trains or evaluates in a directory it holds :func:`lock_run`: an exclusive lock on
``.rankplug.lock`` (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows). A second process is refused with
the first one's pid. The operating system drops the lock when its holder dies, however it dies, so a lock
left by a killed process is stale by construction and the next process takes it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rankplug.errors import RunDirectoryError, RunLockedError

Result = TypeVar("Result")

LOCK_NAME = ".rankplug.lock"


def read_json(path: str | os.PathLike[str], *, expect: type = dict) -> Any:
    """Parse a JSON file of a run directory; raise :class:`RunDirectoryError` naming the file if it is malformed.

    NaN and infinities (which Python's ``json`` writes and reads by default) are refused like any other
    non-JSON token, and the top-level value must be an ``expect`` (a ``dict`` by default).
    """
    source = Path(path)

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not a JSON number")

    try:
        value = json.loads(source.read_text(encoding="utf-8"), parse_constant=refuse)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise RunDirectoryError(f"{source} is not a readable JSON file: {error}") from error
    if not isinstance(value, expect):
        raise RunDirectoryError(f"{source} must hold a JSON {expect.__name__}; got {type(value).__name__}")
    return value


def check_directory_argument(path: object, name: str = "--dir") -> Path:
    """A directory the caller will write into: non-empty, not an existing file, and creatable/writable.

    Nothing is created. Raises ``ValueError`` naming ``name``.
    """
    if not isinstance(path, (str, os.PathLike)) or str(path).strip() == "":
        raise ValueError(f"{name} must be a directory path; got {path!r}")
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{name} {str(directory)!r} exists and is not a directory")
    existing = directory
    while not existing.exists():  # the nearest existing ancestor decides whether we may create it
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {str(directory)!r} is not writable ({str(existing)!r} is read-only for this user)")
    return directory


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def lock_run(directory: str | os.PathLike[str], *, command: str = "rankplug") -> Iterator[Path]:
    """Hold the run directory's lock for the block; raise :class:`RunLockedError` if a live process holds it.

    The directory must exist. The lock file is opened without following a symlink, records the holder's pid,
    host and start time (for the refusal message), and is left in place afterwards (deleting it would let two
    processes lock two different files).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     with lock_run(run_dir):
        ...         pass  # train, save, evaluate
    """
    path = Path(directory) / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        raise RunDirectoryError(f"cannot open the lock file {path}: {error.strerror or error}") from error
    try:
        if not _try_lock(fd):
            raise RunLockedError(
                f"{Path(directory)} is in use by {_holder(fd)}; wait for it to finish or use another directory"
            )
        os.ftruncate(fd, 0)
        stamp = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.write(fd, (json.dumps(dict(stamp, command=command)) + "\n").encode())
        yield Path(directory)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def holds_run_lock(command: str) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Decorate a job whose first argument is an existing run directory so that it runs under :func:`lock_run`."""

    def decorate(job: Callable[..., Result]) -> Callable[..., Result]:
        @functools.wraps(job)
        def locked(run_dir: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Result:
            if not Path(run_dir).is_dir():
                raise FileNotFoundError(f"{run_dir} is not a run directory: no such directory")
            with lock_run(run_dir, command=command):
                return job(run_dir, *args, **kwargs)

        return locked

    return decorate


__all__ = [
    "LOCK_NAME",
    "RunDirectoryError",
    "RunLockedError",
    "check_directory_argument",
    "holds_run_lock",
    "lock_run",
    "read_json",
]
