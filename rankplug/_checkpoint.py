"""Crash-safe checkpoint files: atomic writes and loads that never unpickle code.

A checkpoint is written to a temporary file in the same directory, flushed and fsync'ed, then renamed over the
old one with ``os.replace`` (atomic on POSIX and Windows), and the directory is fsync'ed so the rename itself
survives a power cut. A process killed at any instant leaves either the old file or the new one, never a
half-written file under the real name. Loading uses ``torch.load(weights_only=True)``: tensors and plain
containers only, so a file holding a pickled callable is refused instead of executed.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

# Bytes written per chunk; module-level so that a test can slow writes down to kill a save midway.
CHUNK_BYTES = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or holds something other than tensors and plain data."""


def _write_chunks(handle: io.BufferedWriter, data: memoryview) -> None:
    for start in range(0, len(data), CHUNK_BYTES):
        handle.write(data[start : start + CHUNK_BYTES])


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows; the rename is still atomic
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically: temporary file, fsync, rename, fsync of the directory."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            _write_chunks(handle, buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_directory(target.parent)
    return target


def safe_load(path: str | os.PathLike[str], *, map_location: Any = None) -> Any:
    """Load a checkpoint with ``torch.load(weights_only=True)``; raise :class:`CheckpointError` if it is unsafe."""
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"no checkpoint at {source}")
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refusing to load {source}: it holds objects other than tensors and plain data (weights_only=True "
            f"rejected it: {str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {source} is unreadable or truncated: {error}") from error
