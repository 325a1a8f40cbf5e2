"""Shared helpers: machine details, interleaved timing with medians, tables and JSON records."""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rankplug.app import report

cpu_model = report.cpu_model
RESULTS = Path(__file__).resolve().parent / "results"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


#: The heap settings of ``--malloc tuned`` (glibc ``mallopt``): blocks up to 32 MiB (the most glibc allows) come
#: from the heap instead of fresh ``mmap`` pages, and the heap is never trimmed, so a freed block's pages are reused
#: instead of being handed back to the kernel and faulted in, zeroed, at the next allocation. Under the default
#: (dynamic) thresholds a CPU training step spends much of its time in those page faults, and how much depends on
#: the history of allocations, so it differs between configurations timed side by side. PyTorch's CPU performance
#: guide gives the same reason for swapping in jemalloc or tcmalloc; these settings need no install.
MALLOC_TUNED = {"mmap_threshold": 32 * 2**20, "trim_threshold": 2**31 - 1, "top_pad": 64 * 2**20}
_MALLOPT = {"trim_threshold": -1, "top_pad": -2, "mmap_threshold": -3}  # glibc's M_* parameter numbers
MALLOC_MODES = ("tuned", "default")
#: What :func:`set_malloc` did in this process, recorded by :func:`machine_info`.
MALLOC: dict[str, Any] = {"mode": "default"}


def set_malloc(mode: str) -> dict[str, Any]:
    """Apply ``--malloc``: ``"tuned"`` sets :data:`MALLOC_TUNED` with glibc's ``mallopt`` (where the C library is
    glibc; elsewhere it records that nothing was set), ``"default"`` leaves the allocator alone. Returns and keeps
    (:data:`MALLOC`) what was done."""
    if mode not in MALLOC_MODES:
        raise ValueError(f"malloc must be one of {', '.join(MALLOC_MODES)}; got {mode!r}")
    MALLOC.clear()
    if mode == "default":
        MALLOC["mode"] = "default"
        return dict(MALLOC)
    libc_name, _ = platform.libc_ver()
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt if libc_name == "glibc" else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        MALLOC.update(
            mode="default", note=f"--malloc tuned needs glibc; the C library here is {libc_name or 'unknown'}"
        )
        return dict(MALLOC)
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    failed = [key for key, value in MALLOC_TUNED.items() if mallopt(_MALLOPT[key], value) != 1]
    if failed:
        raise RuntimeError(f"glibc mallopt refused {', '.join(failed)}")
    MALLOC.update(mode="tuned", **MALLOC_TUNED)
    return dict(MALLOC)


def machine_info(device: torch.device) -> dict[str, Any]:
    """Everything that decides what a timing means (:func:`rankplug.app.report.machine_info`), with the load at the start
    and the allocator's settings (:func:`set_malloc`)."""
    info = report.machine_info(device)
    info["malloc"] = dict(MALLOC)
    info["date_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    info["cpu_cores"] = info["cpu_count"]
    info["load_average_start"] = load_average()
    if "cuda_version" in info:
        info["cuda"] = info["cuda_version"]
    return info


def parser(description: str, *, malloc: str = "tuned") -> argparse.ArgumentParser:
    """The benchmarks' common options; ``malloc`` is this benchmark's default for ``--malloc`` (:func:`set_malloc`)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a short run for a smoke test (figures are not reported)")
    p.add_argument("--device", default="cpu", help="'cpu' (default) or 'cuda' / 'cuda:N'")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU (default 1: least noise)")
    p.add_argument("--output", type=Path, default=None, help="JSON path (default: benchmarks/results/<name>.json)")
    p.add_argument(
        "--malloc",
        choices=MALLOC_MODES,
        default=malloc,
        help=f"'tuned': glibc heap settings that stop page-fault churn (see MALLOC_TUNED); 'default': glibc's own "
        f"(default here: {malloc})",
    )
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """The device asked for (``cuda`` must exist when asked), with the thread count, the allocator's settings
    (``--malloc``) and a fixed seed."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} was asked for but torch.cuda.is_available() is False")
    torch.set_num_threads(max(1, int(args.threads)))
    set_malloc(getattr(args, "malloc", "default"))
    torch.manual_seed(0)
    random.seed(0)
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _usage() -> tuple[float, int]:
    """The process's system CPU seconds and minor page faults so far (zeros where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return 0.0, 0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_stime, usage.ru_minflt


def interleaved_medians(
    functions: Mapping[str, Callable[[], Any]],
    device: torch.device,
    *,
    rounds: int,
    iterations: int | None = None,
    block_s: float = 0.02,
    warmup: int = 2,
) -> dict[str, dict[str, Any]]:
    """Per-call seconds of each function: median (and spread) over ``rounds``, with the functions interleaved.

    Each round runs every function ``iterations`` times in a fresh random order, so slow phases of a shared
    machine hit all configurations alike; a ratio of two medians is far steadier than either time. With
    ``iterations=None`` each function gets as many calls per round as fill about ``block_s`` seconds.

    Two clocks run: wall time (``perf_counter``) and the process's CPU time (``process_time``). On CUDA the
    wall clock is the measure (after a synchronize). On CPU the CPU time is: on a shared machine a process
    that is descheduled keeps accruing wall time but not CPU time, so CPU time measures the work itself
    (with one thread it is the latency of an unloaded core; cache sharing with other processes still shows).
    """
    clock = "wall" if device.type == "cuda" else "cpu"
    counts: dict[str, int] = {}
    for name, fn in functions.items():
        for _ in range(warmup):
            fn()
        if iterations is None:
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            counts[name] = max(1, min(10_000, int(block_s / max(time.perf_counter() - start, 1e-7))))
        else:
            counts[name] = iterations
    synchronize(device)
    samples: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": [], "sys": [], "faults": []} for name in functions
    }
    order = list(functions)
    shuffle = random.Random(1234)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for name in order:
            fn = functions[name]
            synchronize(device)
            usage = _usage()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(counts[name]):
                fn()
            synchronize(device)
            samples[name]["cpu"].append((time.process_time() - cpu) / counts[name])
            samples[name]["wall"].append((time.perf_counter() - wall) / counts[name])
            after = _usage()
            samples[name]["sys"].append((after[0] - usage[0]) / counts[name])
            samples[name]["faults"].append((after[1] - usage[1]) / counts[name])
    out = {}
    for name, by_clock in samples.items():
        values = by_clock[clock]
        ordered = sorted(values)
        quart = max(0, len(ordered) // 4)
        out[name] = {
            "median_s": statistics.median(values),
            "q1_s": ordered[quart],
            "q3_s": ordered[len(ordered) - 1 - quart],
            "clock": clock,
            "wall_median_s": statistics.median(by_clock["wall"]),
            "cpu_median_s": statistics.median(by_clock["cpu"]),
            # Of the CPU time, the kernel's share (page faults, mostly) and the minor page faults, per call, as
            # means over the rounds: faults come in bursts (when the heap is trimmed), so a median hides them.
            "sys_mean_s": statistics.fmean(by_clock["sys"]),
            "minor_faults_mean": statistics.fmean(by_clock["faults"]),
            "rounds": len(values),
            "iterations": counts[name],
            "samples_s": values,
        }
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (printable and pasteable)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def default_output(name: str, args: argparse.Namespace, device: torch.device) -> Path:
    if args.output is not None:
        return Path(args.output)
    suffix = "" if device.type == "cpu" else f".{device.type}"
    return RESULTS / f"{name}{suffix}{'.quick' if args.quick else ''}.json"


def write_record(
    path: Path,
    name: str,
    argv: Sequence[str] | None,
    machine: dict[str, Any],
    settings: dict[str, Any],
    results: Any,
) -> Path:
    """Write ``{"benchmark", "command", "machine", "settings", "results"}`` as JSON; return the path."""
    machine = dict(machine)
    machine["load_average_end"] = load_average()
    args = list(sys.argv[1:] if argv is None else argv)
    record = {
        "benchmark": name,
        "command": " ".join(["python -m benchmarks." + name, *args]),
        "machine": machine,
        "settings": settings,
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


RECORD_KEYS = ("benchmark", "command", "machine", "settings", "results")
MACHINE_KEYS = ("date_utc", "cpu", "cpu_cores", "torch", "device", "torch_threads", "load_average_start")


#: The precisions of the NaN probes: plain float32, then fp16 and bf16 autocast (CPU autocast supports both in
#: torch >= 2.1 for matmul-type ops; the probe records which ones ran).
PRECISIONS = ("fp32", "fp16_autocast", "bf16_autocast")


def autocast_for(precision: str, device: torch.device) -> Any:
    """The autocast context of one probe precision on ``device``."""
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = {"fp16_autocast": torch.float16, "bf16_autocast": torch.bfloat16}[precision]
    return torch.autocast(device.type, dtype=dtype)


def nonfinite_rows(grad: torch.Tensor | None) -> int:
    """How many samples (rows) of a gradient hold a NaN or an infinity; a missing gradient counts as none."""
    if grad is None:
        return 0
    return int((~torch.isfinite(grad.reshape(grad.shape[0], -1))).any(dim=1).sum())


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by at most one and sum to ``total``."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def profile_table(fn: Any, *, calls: int, row_limit: int = 12, warmup: int = 3) -> dict[str, Any]:
    """``torch.profiler`` evidence for one function: its table (sorted by self CPU time), ATen calls per call and
    self CPU time per call (the profiler's own overhead included, so compare such figures only with each other)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    events = prof.key_averages()
    aten_calls = sum(e.count for e in events if e.key.startswith("aten::"))
    self_cpu_us = sum(e.self_cpu_time_total for e in events)
    return {
        "by_op": {e.key: (e.count / calls, e.self_cpu_time_total / calls / 1e3) for e in events},
        "table": events.table(sort_by="self_cpu_time_total", row_limit=row_limit, max_name_column_width=48),
        "aten_calls_per_call": aten_calls / calls,
        "self_cpu_ms_per_call": self_cpu_us / calls / 1e3,
    }
