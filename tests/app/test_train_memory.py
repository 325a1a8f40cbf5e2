"""``rankplug train`` on an image folder streams it: peak memory with 4,000 images stays within 80 MB of 400."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MEASURE = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if done.returncode == 0 else -1)"
)


def _folder(root: Path, count: int) -> Path:
    from PIL import Image

    root.mkdir()
    for k in range(count):
        colour = (k % 256, (7 * k) % 256, (13 * k) % 256)
        Image.new("RGB", (64, 64), colour).save(root / f"{k:05d}.png", compress_level=1)
    return root


def _peak_kib(images: Path, run: Path) -> int:
    command = [sys.executable, "-m", "rankplug", "train", "--dir", str(run), "--data", "folder"]
    command += ["--data-root", str(images), "--size", "64", "--stages", "1", "--steps-per-stage", "2"]
    command += ["--log-every", "1", "--batch-size", "16", "--width", "8", "--n-critic", "1", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, env=env, timeout=600
    )
    peak = int(out.stdout.strip().splitlines()[-1])
    assert peak > 0, out.stderr[-2000:]
    return peak


@pytest.mark.skipif(sys.platform == "win32", reason="resource is POSIX-only")
def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    small = _peak_kib(_folder(tmp_path / "small", 400), tmp_path / "run-small")
    large = _peak_kib(_folder(tmp_path / "large", 4000), tmp_path / "run-large")
    record = {"peak_kib_400": small, "peak_kib_4000": large, "growth_mib": (large - small) / 1024}
    print(json.dumps(record))
    assert large - small < 80 * 1024, record  # the bound: within 80 MB
