"""``rankplug train`` on a shared CPU: the trainer's default thread count against torch's own, side by side.

Each arm runs ``rankplug train`` (RankGAN, 16 px, 2 stages of ``--steps`` generator steps) in a fresh process, with
and without busy neighbour processes (each a Python loop that never sleeps, the load of another job on the
machine). The arms are interleaved, ``--repeats`` times, and the medians of their wall times are compared:

- ``default``: no ``--threads`` given (what the trainer chooses);
- ``one``: ``--threads 1``;
- ``all_cores``: ``--threads <cores>``, what torch would use by default.

Run: ``python -m benchmarks.trainer_threads`` (writes ``benchmarks/results/trainer_threads.json``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import _common

_SPIN = "while True: pass"


def _train_seconds(threads: int | None, steps: int, folder: Path) -> float:
    run_dir = tempfile.mkdtemp(dir=folder)
    command = [sys.executable, "-m", "rankplug", "train", "--dir", run_dir, "--stages", "2", "--steps-per-stage",
               str(steps), "--size", "16", "--no-progress"]  # fmt: skip
    if threads is not None:
        command += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.splitlines()[0], malloc="default")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="generator steps per stage")
    p.add_argument("--neighbours", type=int, nargs="+", default=[0, 1], help="busy neighbour processes per setting")
    args = p.parse_args(argv)
    device = _common.setup(args)
    cores = os.cpu_count() or 1
    repeats, steps = (1, 4) if args.quick else (args.repeats, args.steps)
    arms: dict[str, int | None] = {"default": None, "one": 1, "all_cores": cores}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for neighbours in args.neighbours:
            spinners = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(neighbours)]
            try:
                times: dict[str, list[float]] = {name: [] for name in arms}
                for _ in range(repeats):
                    for name, threads in arms.items():
                        times[name].append(_train_seconds(threads, steps, Path(scratch)))
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
            medians = {name: statistics.median(values) for name, values in times.items()}
            results[f"neighbours_{neighbours}"] = {
                "seconds": times,
                "median_seconds": medians,
                "default_over_one": medians["default"] / medians["one"],
                "all_cores_over_one": medians["all_cores"] / medians["one"],
            }
            print(
                f"{neighbours} busy neighbour(s): median s default {medians['default']:.1f}, one thread "
                f"{medians['one']:.1f}, {cores} threads {medians['all_cores']:.1f}; default / one "
                f"{medians['default'] / medians['one']:.2f}, {cores} threads / one "
                f"{medians['all_cores'] / medians['one']:.2f}",
                flush=True,
            )
    settings = {"stages": 2, "steps_per_stage": steps, "size": 16, "repeats": repeats, "cores": cores}
    path = _common.write_record(
        _common.default_output("trainer_threads", args, device), "trainer_threads", argv,
        _common.machine_info(device), settings, results,
    )  # fmt: skip
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
