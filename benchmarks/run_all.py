"""Run every benchmark in turn (``python -m benchmarks`` or ``python -m benchmarks.run_all``).

Each benchmark runs in a fresh Python process (``python -m benchmarks.<name>``), so one benchmark's memory and
warm caches never colour the next one's figures (``stage_memory`` reads the process's resident set). Options are
passed on (``--quick``, ``--device``, ``--threads``); ``--only`` picks some. Each writes its JSON record to
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BENCHMARKS = ("stage_overhead", "aam", "triplet", "stage_memory", "stylegan2_ada_bank")
ROOT = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = p.parse_args(argv)
    forwarded = ["--device", args.device, "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    seconds: dict[str, float] = {}
    failed = []
    start = time.perf_counter()
    for name in args.only:
        command = [sys.executable, "-m", f"benchmarks.{name}", *forwarded]
        print(f"\n## {name}: python -m benchmarks.{name} {' '.join(forwarded)}", flush=True)
        begin = time.perf_counter()
        if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:
            failed.append(name)
        seconds[name] = time.perf_counter() - begin
    total = time.perf_counter() - start
    print("\n" + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items()) + f"; total {total:.0f} s")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")
    return seconds


if __name__ == "__main__":
    main()
