"""Crash-safe, checksummed checkpoint files: atomic writes, and loads that never unpickle code.

File layout (all rankplug checkpoints: ``stage_manager.pt``, ``stage-<i>.pt``, the demo's ``models-stage<i>.pt``,
the digits classifier cache)::

    offset  bytes  field
    0       16     magic b"\\x89RANKPLUG-CKPT1\\n" (the "1" is the layout version)
    16      8      payload length n, unsigned little-endian
    24      32     SHA-256 of the payload
    56      n      payload: the bytes of torch.save(obj), a zip archive

Writing: the file is written to a temporary file in the same directory, flushed and fsync'ed, then renamed over
the old one with ``os.replace`` (atomic on POSIX and Windows), and the directory is fsync'ed so the rename itself
survives a power cut. A process killed at any instant leaves either the old file or the new one, never a
half-written file under the real name. The temporary file is ``.<name>.tmp-<pid>-<random>-<host>``, created
exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``, mode ``0o600``, so the checkpoint is readable by its owner only):
a symlink or file planted at that name is never followed or overwritten. Temporary files of the same target
left by a killed process (same host, a pid that is no longer alive) are removed by the next save.

Loading: the magic, the length and the digest are checked before anything is unpickled, so a bit flip, a
truncated copy or an edited file raises :class:`CheckpointError` saying the file is corrupt. The payload is then
read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a file holding a pickled
callable is refused instead of executed. A file without the header that starts like a ``torch.save`` file (a
zip archive or a pickle: checkpoints written before the header existed, or by plain ``torch.save``) is loaded
the same way, with ``weights_only=True`` but without a checksum to verify; anything else is refused as corrupt.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import re
import secrets
import socket
import struct
from pathlib import Path
from typing import Any

import torch

from rankplug.errors import CheckpointError

# Bytes written per chunk; module-level so that a test can slow writes down to kill a save midway.
CHUNK_BYTES = 1 << 20
MAGIC = b"\x89RANKPLUG-CKPT1\n"
_LENGTH = struct.Struct("<Q")
HEADER_BYTES = len(MAGIC) + _LENGTH.size + hashlib.sha256().digest_size
# What a headerless torch.save file starts with: a zip archive (the default since torch 1.6) or a pickle.
_LEGACY_SIGNATURES = (b"PK\x03\x04", b"\x80")
_OPEN_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL  # with O_CREAT: fail on any existing name, a symlink included, instead of following it
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_TEMP_ATTEMPTS = 16


def _what_was_refused(error: pickle.UnpicklingError) -> str:
    """The line of torch's refusal that names the object, without its advice to load with ``weights_only=False``
    (which would run the file's code)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line]  # "... unsupported GLOBAL posix.system ..."
    return named[0] if named else "an unsupported object"


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


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"


def _temp_path(target: Path, pid: int, token: str) -> Path:
    """The temporary file of ``target`` written by process ``pid`` on this host: ``.<name>.tmp-<pid>-<token>-<host>``."""
    return target.with_name(f".{target.name}.tmp-{pid}-{token}-{_host()}")


def _alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows: assume it is alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    return True


def _remove_stale_temps(target: Path) -> None:
    """Remove ``target``'s temporary files left on this host by processes that are no longer alive."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.tmp-(\d+)-[0-9a-f]+-{re.escape(_host())}")
    with contextlib.suppress(OSError), os.scandir(target.parent) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)  # unlink never follows a symlink: only the name goes


def _create_temp(target: Path) -> tuple[Path, io.BufferedWriter]:
    for _ in range(_TEMP_ATTEMPTS):
        tmp = _temp_path(target, os.getpid(), secrets.token_hex(8))
        try:
            fd = os.open(tmp, _OPEN_FLAGS, 0o600)
        except FileExistsError:  # a planted name, or a (very unlikely) collision: draw another suffix
            continue
        return tmp, os.fdopen(fd, "wb")
    raise FileExistsError(f"could not create a temporary file next to {target}: every name tried exists")


def atomic_write(path: str | os.PathLike[str], *parts: bytes | memoryview) -> Path:
    """Write ``parts`` one after another to ``path`` atomically: an exclusive temporary file, fsync, rename.

    The crash-safety of :func:`atomic_save` for any bytes (JSON, ``.npz`` statistics). Raises ``OSError`` when
    the file cannot be written; the old file at ``path``, if any, is intact and no temporary file is left.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp, handle = _create_temp(target)
    try:
        with handle:
            for part in parts:
                _write_chunks(handle, memoryview(part))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)
    return target


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` ``obj`` to ``path`` with a checksum header, atomically (see the module docstring).

    Raises:
        OSError: the file could not be written (a full disk: ``errno.ENOSPC``); the old file at ``path``, if
            any, is intact and no temporary file is left.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getbuffer()
    try:
        header = MAGIC + _LENGTH.pack(len(payload)) + hashlib.sha256(payload).digest()
        return atomic_write(path, header, payload)
    finally:
        payload.release()


def _read_payload(source: Path) -> bytes | None:
    """The verified payload of a file with the header; ``None`` for a headerless ``torch.save`` file."""
    with open(source, "rb") as handle:
        head = handle.read(HEADER_BYTES)
        if not head.startswith(MAGIC):
            if MAGIC.startswith(head):  # an empty file too
                raise CheckpointError(f"checkpoint {source} is truncated: it ends inside its header")
            if head.startswith(_LEGACY_SIGNATURES):
                return None
            raise CheckpointError(
                f"checkpoint {source} is corrupt or not a checkpoint: it starts with neither the rankplug "
                "checkpoint header nor a torch.save signature"
            )
        if len(head) < HEADER_BYTES:
            raise CheckpointError(f"checkpoint {source} is truncated: it ends inside its header")
        payload = handle.read()
    (length,) = _LENGTH.unpack_from(head, len(MAGIC))
    if len(payload) < length:
        raise CheckpointError(
            f"checkpoint {source} is truncated or corrupt: it holds {len(payload)} of the {length} payload bytes "
            "its header declares"
        )
    if len(payload) > length or hashlib.sha256(payload).digest() != head[len(MAGIC) + _LENGTH.size :]:
        raise CheckpointError(
            f"checkpoint {source} is corrupt: its contents do not match the SHA-256 in its header (a bit flip, "
            "a damaged copy or an edit after it was written)"
        )
    return payload


def safe_load(path: str | os.PathLike[str], *, map_location: Any = None) -> Any:
    """Verify and load a checkpoint (see the module docstring); never unpickles code.

    Raises:
        CheckpointError: the file is missing, unreadable, truncated or corrupt (checksum mismatch), or holds
            objects other than tensors and plain data.
    """
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"no checkpoint at {source}")
    try:
        payload = _read_payload(source)
        data: Any = source if payload is None else io.BytesIO(payload)  # BytesIO shares the bytes, no copy
        return torch.load(data, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refusing to load {source}: it holds objects other than tensors and plain data ({_what_was_refused(error)})"
        ) from error
    except CheckpointError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {source} is unreadable or truncated: {error}") from error


__all__ = ["CHUNK_BYTES", "HEADER_BYTES", "MAGIC", "CheckpointError", "atomic_save", "atomic_write", "safe_load"]
