"""Run every CUDA path of rankplug once and write one JSON record: ``python tools/gpu_check.py``.

The paths a CPU test cannot reach: fp16 autocast with a default ``GradScaler`` (the gradient penalty and a
short training run), bf16 autocast, ``torch.compile(fullgraph=True)`` of every loss with the default inductor
backend, a one-rank NCCL process group driving ``StageManager`` markers under DDP, and the benchmarks with
``--device cuda --quick``. Each check records ``ok``, its seconds and what it measured or the error; the
script exits 1 if any check failed. The whole run takes a few minutes on one GPU.

``--device cpu`` runs the same checks where a CPU can (bf16 and fp16 autocast on the CPU, gloo instead of
NCCL, compile), as a smoke test of the script itself; tests run it that way with ``--skip-benchmarks``.

Usage::

    python tools/gpu_check.py                                   # -> tools/results/gpu_check.json
    python tools/gpu_check.py --device cpu --skip-benchmarks --compile-backend aot_eager --output /tmp/check.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rankplug  # noqa: E402
from rankplug import functional as F  # noqa: E402
from rankplug.app.report import machine_info  # noqa: E402


def _critic(channels: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, 32, 4, 2, 1), nn.Flatten(), nn.LazyLinear(1)
    )


def check_fp16_penalty(device: torch.device) -> dict[str, Any]:
    """Gradient penalty under fp16 autocast with a default GradScaler (init scale 2^16) against fp32."""
    torch.manual_seed(0)
    D = _critic().to(device)
    real, fake = torch.randn(16, 3, 16, 16, device=device), torch.randn(16, 3, 16, 16, device=device)
    a = torch.rand(16, device=device)
    D(real)  # materialise the lazy layer
    exact = float(F.gradient_penalty(D, real, fake, mix_weights=a).detach())
    scaler = torch.amp.GradScaler(device.type)
    with torch.autocast(device.type, dtype=torch.float16):
        penalty = F.gradient_penalty(D, real, fake, mix_weights=a, scaler=scaler)
    opt = torch.optim.Adam(D.parameters())
    scaler.scale(penalty).backward()
    scaler.step(opt)
    scaler.update()
    value = float(penalty.detach())
    rel = abs(value - exact) / max(abs(exact), 1e-12)
    return {"ok": torch.isfinite(penalty).item() and rel < 5e-2, "fp16": value, "fp32": exact, "relative_error": rel}


def check_training(device: torch.device, amp: bool) -> dict[str, Any]:
    """A short RankGAN run (2 stages) with autocast: fp16 + GradScaler on CUDA, bf16 on a CPU."""
    from rankplug.app.data import DigitsDataset
    from rankplug.app.training import TrainConfig, train

    config = TrainConfig(
        method="rankgan", stages=2, steps_per_stage=6, log_every=3, batch_size=16, size=16, device=str(device), amp=amp
    )
    result = train(config, dataset=DigitsDataset(16))
    gaps = [g for stage in result["stages"] for g in stage["gap"]]
    finite = all(torch.isfinite(torch.tensor(g)).item() for g in gaps)
    return {"ok": finite, "amp": amp, "gaps": gaps, "generator_steps": result["generator_steps"]}


def check_bf16_losses(device: torch.device) -> dict[str, Any]:
    """Every score loss on bf16 scores equals the fp32 loss of the same (rounded) scores."""
    torch.manual_seed(0)
    real, fake, prev = (torch.randn(4096, device=device) * 50 for _ in range(3))
    real16, fake16, prev16 = real.bfloat16(), fake.bfloat16(), prev.bfloat16()
    cases: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "hinge_margin": lambda r, f, p: F.hinge_margin_loss(r, f, margin=1.5, reduction="sum"),
        "stage_rank": lambda r, f, p: F.stage_rank_loss(r, f, p, m_high=10.0, m_low=-10.0, reduction="sum"),
        "gogan_rank": lambda r, f, p: F.gogan_rank_loss(r, f, p.detach(), margin=1.0, reduction="sum"),
    }
    out: dict[str, Any] = {"ok": True}
    for name, loss in cases.items():
        low = float(loss(real16, fake16, prev16))
        ref = float(loss(real16.float(), fake16.float(), prev16.float()))
        rel = abs(low - ref) / max(abs(ref), 1e-12)
        out[name] = {"bf16_input": low, "fp32": ref, "relative_error": rel}
        out["ok"] = out["ok"] and rel < 1e-5
    return out


def check_compile(device: torch.device, backend: str) -> dict[str, Any]:
    """``torch.compile(fullgraph=True)`` of every public loss and head equals eager (inductor by default)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    n = 32
    real, fake, prev = torch.randn(n, device=device), torch.randn(n, device=device), torch.randn(n, device=device)
    emb = [torch.randn(n, 16, device=device) for _ in range(3)]
    images = [torch.randn(n, 1, 8, 8, device=device) for _ in range(2)]
    feats, labels = torch.randn(n, 24, device=device), torch.randint(0, 10, (n,), device=device)
    aam = rankplug.AAMAuxClassifier(24, 10).to(device)
    head = rankplug.TripletMetricDiscriminatorHead(24, embed_dim=16).to(device)
    cases: dict[str, Callable[[], torch.Tensor]] = {
        "HingeMarginLoss": lambda: rankplug.HingeMarginLoss()(real, fake),
        "SymmetricHingeLoss": lambda: rankplug.SymmetricHingeLoss()(real, fake),
        "StageRankLoss": lambda: rankplug.StageRankLoss(m_high=1.0, m_low=-1.0)(real, fake, prev),
        "GoGANRankLoss": lambda: rankplug.GoGANRankLoss()(real, fake, prev),
        "TripletMetricDiscriminatorLoss": lambda: rankplug.TripletMetricDiscriminatorLoss()(
            *emb, positive_images=images[0], fake_images=images[1]
        ),
        "TripletMetricGeneratorLoss": lambda: rankplug.TripletMetricGeneratorLoss()(emb[0], emb[1]),
        "AdditiveAngularMarginLoss": lambda: rankplug.AdditiveAngularMarginLoss(scale=16.0, margin=0.3)(
            torch.tanh(feats[:, :10]), labels
        ),
        "AAMAuxClassifier": lambda: aam.loss(aam(feats), labels),
        "TripletMetricDiscriminatorHead": lambda: head(feats).sum(),
    }
    out: dict[str, Any] = {"ok": True, "backend": backend}
    for name, call in cases.items():
        eager = call()
        try:
            compiled = torch.compile(call, fullgraph=True, backend=backend)()
            diff = float((compiled - eager).abs().max())
            scale = max(1.0, float(eager.detach().abs().max()))
            out[name] = {"max_abs_difference": diff, "ok": diff <= 1e-5 * scale}
        except Exception as error:  # report every case, not only the first failure
            out[name] = {"ok": False, "error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
        out["ok"] = out["ok"] and out[name]["ok"]
    return out


def _process_group_child(device: torch.device, store: Path) -> None:
    """The one-rank group itself: prints its record as one JSON line *before* leaving the group."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    G = nn.parallel.DistributedDataParallel(nn.Linear(4, 8).to(device))
    D = nn.parallel.DistributedDataParallel(nn.Linear(8, 1).to(device))
    manager = rankplug.StageManager(G, D, latent_shape=(4,))
    manager.advance()
    real = [torch.randn(16, 8, device=device) + 3 for _ in range(3)]
    high, low = manager.compute_markers(real)
    ones = torch.ones(1, device=device)
    dist.all_reduce(ones)
    print(json.dumps({"ok": float(ones) == 1.0, "backend": backend, "m_high": high, "m_low": low}), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def check_process_group(device: torch.device, timeout: float = 300.0, teardown_timeout: float = 60.0) -> dict[str, Any]:
    """A one-rank process group (NCCL on CUDA, gloo on a CPU): DDP-wrapped stages and markers over the group.

    It runs in a child process, so a hang cannot stall the whole check: torch's ``destroy_process_group`` is
    known to hang now and then (pytorch/pytorch#75097). The child prints its record before it leaves the group;
    a child that hangs only while leaving is killed and recorded with ``teardown_hung``, one that never prints
    is a failure.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, str(Path(__file__).resolve()), "--device", str(device)]
        command += ["--process-group-child", str(Path(scratch) / "store")]
        log = Path(scratch) / "stderr.txt"
        with log.open("w") as stderr:
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        line = _read_line(child, timeout)
        if not line:
            child.kill()
            child.wait()
            error = f"the one-rank group printed nothing in {timeout:g} s"
            return {"ok": False, "error": error, "stderr": log.read_text()[-2000:]}
        record: dict[str, Any] = json.loads(line)
        try:
            child.wait(timeout=teardown_timeout)
            record["teardown_hung"] = False
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            record["teardown_hung"] = True
        if not record["teardown_hung"] and child.returncode != 0:
            error = f"the child exited with {child.returncode}"
            record.update(ok=False, error=error, stderr=log.read_text()[-2000:])
        return record


def _read_line(child: subprocess.Popen, timeout: float) -> str:
    """The child's first stdout line, or '' when none arrives within ``timeout`` seconds."""
    import threading

    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(child.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return lines[0].strip() if lines else ""


def check_benchmarks(device: torch.device) -> dict[str, Any]:
    """``python -m benchmarks --device <device> --quick`` in a subprocess, into a scratch folder."""
    command = [sys.executable, "-m", "benchmarks", "--device", str(device), "--quick"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    return {"ok": done.returncode == 0, "command": " ".join(command[1:]), "tail": done.stdout[-2000:]}


def _run(name: str, check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        record = check()
    except Exception as error:
        record = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    record["seconds"] = time.perf_counter() - started
    print(f"{'ok  ' if record['ok'] else 'FAIL'} {name} ({record['seconds']:.1f} s)", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke test")
    parser.add_argument("--output", type=Path, default=ROOT / "tools" / "results" / "gpu_check.json")
    parser.add_argument("--skip-benchmarks", action="store_true", help="leave out the benchmark subprocess")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager: quicker)")
    parser.add_argument("--process-group-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.process_group_child is not None:
        _process_group_child(device, args.process_group_child)
        return 0
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; run it on a GPU machine, or pass --device cpu", file=sys.stderr)
        return 2
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "fp16_autocast_gradient_penalty": lambda: check_fp16_penalty(device),
        "amp_training": lambda: check_training(device, amp=True),
        "bf16_losses": lambda: check_bf16_losses(device),
        "compile_fullgraph": lambda: check_compile(device, args.compile_backend),
        "process_group": lambda: check_process_group(device),
    }
    if not args.skip_benchmarks:
        checks["benchmarks"] = lambda: check_benchmarks(device)
    started = time.perf_counter()
    results = {name: _run(name, check) for name, check in checks.items()}
    record = {
        "machine": machine_info(device),
        "seconds": time.perf_counter() - started,
        "ok": all(r["ok"] for r in results.values()),
        "checks": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(args.output)
    print(f"{'all ok' if record['ok'] else 'FAILED'} in {record['seconds']:.0f} s; wrote {args.output}")
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
