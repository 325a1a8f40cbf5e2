"""tools/gpu_check.py runs end to end on a CPU (its CUDA paths are exercised on a GPU machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_cpu_and_writes_one_json(tmp_path: Path) -> None:
    output = tmp_path / "check.json"
    command = [sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--device", "cpu", "--skip-benchmarks"]
    command += ["--compile-backend", "aot_eager", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    record = json.loads(output.read_text())
    failed = {k: v for k, v in record["checks"].items() if not v["ok"]}
    assert done.returncode == 0 and record["ok"], (done.stdout, done.stderr, failed)
    expected = {"fp16_autocast_gradient_penalty", "amp_training", "bf16_losses", "compile_fullgraph", "process_group"}
    assert set(record["checks"]) == expected
    assert record["checks"]["process_group"]["backend"] == "gloo"
    assert record["checks"]["fp16_autocast_gradient_penalty"]["relative_error"] < 5e-2


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_refuses_cuda_without_cuda(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--output", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "CUDA is not available here" in done.stderr
    assert not (tmp_path / "x.json").exists()


def test_gpu_check_reports_a_process_group_that_hangs_instead_of_stalling() -> None:
    # A child that cannot print within the limit (here 0.01 s, far below its start-up time) is a failed check
    # with the reason, not a hung tool: torch's destroy_process_group is known to hang now and then.
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "tools"))
    record = gpu_check.check_process_group(__import__("torch").device("cpu"), timeout=0.01)
    assert record["ok"] is False and "printed nothing in 0.01 s" in record["error"]
