"""rankplug's optional compiled CPU kernels: built from the package's own C++ source on first use, cached by torch.

Only one today: the fused additive angular margin head (``csrc/aam_cpu.cpp``, MATH §6), which
:class:`rankplug.AAMAuxClassifier` uses on the CPU for float32 / float64 tensors. Everything else, and every tensor
that does not fit (another device, another dtype, ``torch.compile`` tracing), takes the eager PyTorch path, which
computes the same numbers (tested to float rounding).

- **Building.** The first call in a process loads the extension with ``torch.utils.cpp_extension.load``; the first
  call on a machine (or after a change of the source or of torch) compiles it, which needs a C++ compiler and
  ninja and takes about a minute; rankplug says so on stderr before it starts. On Linux x86-64 it is compiled for
  the machine's CPU (``-march=native``). torch keeps the build in ``$TORCH_EXTENSIONS_DIR`` (default
  ``~/.cache/torch_extensions``) under a name holding a SHA-256 of the source and of the CPU's model and flags (so
  a cache shared by machines with other CPUs never hands one a library built for another), and serialises
  concurrent builds with a lock file, so two processes never load a half-written library.
- **Failure** (no compiler, no ninja, a read-only cache): one ``RuntimeWarning`` naming the cause, then the eager
  path for the rest of the process. Nothing else changes.
- **Opting out:** ``RANKPLUG_KERNELS=0`` (or ``off``, ``false``, ``no``) in the environment, read when a process
  first needs the kernel: the eager path, no build. :func:`kernel_status` says which path a process is on.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

_SOURCE = Path(__file__).with_name("csrc") / "aam_cpu.cpp"
_DISABLED_VALUES = frozenset({"0", "off", "false", "no"})
_lock = threading.Lock()
_state: dict[str, Any] = {"module": None, "status": "not loaded"}


def kernels_disabled() -> bool:
    """True when ``RANKPLUG_KERNELS`` turns the compiled kernels off (``0``, ``off``, ``false`` or ``no``)."""
    return os.environ.get("RANKPLUG_KERNELS", "").strip().lower() in _DISABLED_VALUES


def _cpu_identity() -> str | None:
    """The CPU's model and instruction-set flags on Linux x86-64 (``/proc/cpuinfo``), else ``None``."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    wanted = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "|".join(sorted(set(wanted))) or None


def _build_settings(source: bytes) -> tuple[str, list[str]]:
    """The extension's name and compiler flags. With a known CPU the kernel is compiled for it (``-march=native``)
    and the name holds a hash of the CPU's model and flags with the source's, so a cache directory shared by
    machines with other CPUs never hands one a library built for another."""
    cpu = _cpu_identity()
    flags = ["-O3"] if cpu is None else ["-O3", "-march=native"]
    digest = hashlib.sha256(source + b"\0" + (cpu or "generic").encode()).hexdigest()[:16]
    return f"rankplug_aam_cpu_{digest}", flags


def _cpp_extension() -> ModuleType:
    """``torch.utils.cpp_extension``, imported without its warning about ``CUDA_HOME`` on a machine without CUDA
    (it does not concern a CPU-only extension)."""
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        cpp_logger.setLevel(level)
    return cpp_extension


def _build_directory(name: str) -> Path | None:
    """Where torch builds the extension ``name`` (``$TORCH_EXTENSIONS_DIR/name`` or torch's default cache)."""
    try:
        return Path(_cpp_extension()._get_build_directory(name, verbose=False))
    except Exception:  # a private helper of torch's: only used to word the "compiling" message
        return None


def _load() -> ModuleType:
    name, flags = _build_settings(_SOURCE.read_bytes())
    cpp_extension = _cpp_extension()
    build = _build_directory(name)
    if build is None or not any(build.glob(f"{name}*.so")):
        print(
            f"rankplug: compiling the fused angular-margin CPU kernel (once per machine and torch version, about a "
            f"minute; RANKPLUG_KERNELS=0 skips it) into {build or 'the torch extensions cache'}",
            file=sys.stderr,
            flush=True,
        )
    module: ModuleType = cpp_extension.load(
        name=name,
        sources=[str(_SOURCE)],
        extra_cflags=flags,
        with_cuda=False,
        verbose=False,
    )
    return module


def aam_cpu() -> ModuleType | None:
    """The loaded fused AAM extension, or ``None`` for the eager path (disabled, or it could not be built).

    ``RANKPLUG_KERNELS`` is read at the first call in a process (:func:`reset` reads it again)."""
    if _state["status"] == "loaded":  # the hot path: one dictionary lookup
        return _state["module"]  # type: ignore[no-any-return]
    if _state["status"] != "not loaded":
        return None
    with _lock:
        if _state["status"] == "not loaded":
            if kernels_disabled():
                _state["status"] = "disabled"
                return None
            try:
                _state["module"] = _state.get("built") or _load()
                _state["built"] = _state["module"]
                _state["status"] = "loaded"
            except Exception as error:  # no compiler, no ninja, a read-only cache, ...
                lines = str(error).strip().splitlines() or [""]
                cause = next((line.strip() for line in lines if "error:" in line), lines[-1].strip())[:300]
                _state["status"] = f"failed: {type(error).__name__}: {cause}"
                warnings.warn(
                    f"rankplug: the fused angular-margin CPU kernel could not be built ({_state['status'][8:]}); "
                    f"using the eager path (the same results, slower). Set RANKPLUG_KERNELS=0 to skip the attempt.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _state["module"] if _state["status"] == "loaded" else None


def reset() -> None:
    """Forget the outcome of the first :func:`aam_cpu` call, so that the next one reads ``RANKPLUG_KERNELS`` and
    loads (or skips) the kernel again; an extension this process has loaded is kept and reused."""
    with _lock:
        _state["module"] = None
        _state["status"] = "not loaded"


@contextlib.contextmanager
def eager_path() -> Iterator[None]:
    """Inside the block the AAM head takes the eager path (for side-by-side benchmarks and tests; not thread-safe:
    it changes this process's state, which it restores on exit)."""
    with _lock:
        saved = dict(_state)
        _state["module"], _state["status"] = None, "disabled"
    try:
        yield
    finally:
        with _lock:
            _state.clear()
            _state.update(saved)


def kernel_status() -> dict[str, Any]:
    """Which path the AAM head takes in this process: ``{"aam_cpu": "loaded" | "disabled" | "not loaded" |
    "failed: ...", "extension": name, "flags": compiler flags}``."""
    name, flags = _build_settings(_SOURCE.read_bytes())
    return {"aam_cpu": _state["status"], "extension": name, "flags": flags}
