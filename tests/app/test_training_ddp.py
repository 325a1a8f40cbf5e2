"""``torchrun --standalone --nproc_per_node=2 -m rankplug train`` on CPU (gloo): one run directory, written by rank 0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(shutil.which("torchrun") is None and sys.platform == "win32", reason="needs torchrun")
def test_two_ranks_train_one_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "rankplug", "train", "--dir", str(run), "--method", "rankgan", "--stages", "2"]
    command += ["--steps-per-stage", "4", "--log-every", "2", "--size", "8", "--batch-size", "8", "--width", "8"]
    command += ["--marker-images", "32", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = sorted(p.name for p in run.iterdir())
    assert names == [
        ".rankplug.lock",
        "history.json",
        "models-stage1.safetensors",
        "models-stage2.safetensors",
        "run.json",
        "stage_manager.pt",
    ], names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no directory per rank
    history = json.loads((run / "history.json").read_text())
    assert history["generator_steps"] == 8
    markers = history["stages"][1]["markers"]
    assert (markers is not None and markers["m_high"] >= markers["m_low"]) or history["stages"][1]["markers_used"]
    # the summary line is printed once, by rank 0
    assert (done.stdout + done.stderr).count("generator steps in") == 1
