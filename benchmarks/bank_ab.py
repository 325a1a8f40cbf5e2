"""Paired A/B of the previous-stage bank on the digits: stage-2 metrics with the bank on and off, per seed.

For each method (GoGAN, RankGAN) and seed the same run is trained twice, with ``bank_size = 0`` and with the
bank (:class:`rankplug.stages.PreviousStageBank`, ``TrainConfig.bank_size``): 8x8 digits, 2 stages, one torch
thread. Stage 1 never uses the bank, so the two runs of a pair are identical up to the first stage-2 critic
step; from there the "off" run makes ``G_{i-1}(z)`` (and, for GoGAN, ``D_{i-1}(G_{i-1}(z))``) at every critic
step from fresh latents, the "on" run draws latents with those outputs from its bank.

Per run the figures are the stage-2 digits-FID (the digits classifier's Frechet distance of 1,000 samples to the
held-out digits, :func:`rankplug.app.eval.commands.digits_metrics`; lower is better; stage 1's too, the same for both arms
of a pair, to show how far stage 2 moved), the gap ``Gamma`` of GoGAN Eq. 6 at the end of stage 2 (mean of its
last 5 records) and the stage-2 CPU time per generator step (between its first and last records, so the bank's
one fill is left out: it costs ``K / 256`` frozen forwards once per stage). The verdict
compares the mean paired difference ``on - off`` of digits-FID with the seed-to-seed spread (standard deviation
over seeds of the "off" runs): "no loss" when the bank's mean FID is no worse than the off mean plus that spread.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import _common

NAME = "bank_ab"
METHODS = ("gogan", "rankgan")
SETTINGS = {
    "full": {"seeds": 3, "steps_per_stage": 300, "width": 32, "bank_size": 4096, "fid_samples": 1000},
    "quick": {"seeds": 2, "steps_per_stage": 4, "width": 4, "bank_size": 64, "fid_samples": 64},
}


def config_for(method: str, seed: int, bank_size: int, settings: dict[str, Any]) -> Any:
    """The run of one arm: 8x8 digits, 2 stages, batch 64, 5 critic steps, the method's defaults otherwise."""
    from rankplug.app.training import TrainConfig

    steps = settings["steps_per_stage"]
    return TrainConfig(
        method=method,
        stages=2,
        steps_per_stage=steps,
        log_every=10 if steps % 10 == 0 else 1,
        size=8,
        width=settings["width"],
        batch_size=64,
        marker_images=1024,
        seed=seed,
        bank_size=bank_size,
    )


def run_arm(method: str, seed: int, bank_size: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Train one arm in a temporary run directory and score its stages 1 and 2."""
    from rankplug.app.eval.commands import digits_metrics, held_out_images
    from rankplug.app.runs import load_stage_models
    from rankplug.app.training import train

    config = config_for(method, seed, bank_size, settings)
    stage2: list[tuple[int, float]] = []  # (generator step, CPU seconds) at each stage-2 record

    def callback(event: dict[str, Any]) -> None:
        if event["stage"] == 2:
            stage2.append((event["step"], time.process_time()))

    with tempfile.TemporaryDirectory() as directory:
        result = train(config, callback=callback, directory=directory)
        held_out = held_out_images(config, 10_000)
        fid = {
            stage: digits_metrics(
                load_stage_models(Path(directory) / f"models-stage{stage}.pt"), held_out, settings["fid_samples"], seed
            )["digits_fid"]
            for stage in (1, 2)
        }
    (first_step, first_s), (last_step, last_s) = stage2[0], stage2[-1]
    per_step = (last_s - first_s) / max(1, last_step - first_step)  # between records: no save, markers or fill
    gaps = result["stages"][1]["gap"]
    return {
        "method": method,
        "seed": seed,
        "bank_size": bank_size,
        "digits_fid": fid[2],
        "stage1_digits_fid": fid[1],
        "gap_end": statistics.fmean(gaps[-5:]),
        "stage2_cpu_s_per_step": per_step,
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method: mean and spread of each arm, the paired differences, and the verdict on digits-FID."""
    out: dict[str, Any] = {}
    for method in sorted({r["method"] for r in runs}):
        pairs: dict[int, dict[str, dict[str, Any]]] = {}
        for r in runs:
            if r["method"] == method:
                pairs.setdefault(r["seed"], {})["on" if r["bank_size"] else "off"] = r
        seeds = sorted(s for s, p in pairs.items() if set(p) == {"on", "off"})
        entry: dict[str, Any] = {"seeds": seeds}
        for key in ("digits_fid", "stage1_digits_fid", "gap_end", "stage2_cpu_s_per_step"):
            off = [pairs[s]["off"][key] for s in seeds]
            on = [pairs[s]["on"][key] for s in seeds]
            diff = [b - a for a, b in zip(off, on)]
            entry[key] = {
                "off_mean": _mean_std(off)[0],
                "off_std": _mean_std(off)[1],
                "on_mean": _mean_std(on)[0],
                "on_std": _mean_std(on)[1],
                "diff_mean": _mean_std(diff)[0],
                "diff_std": _mean_std(diff)[1],
            }
        fid = entry["digits_fid"]
        entry["no_loss"] = fid["on_mean"] <= fid["off_mean"] + fid["off_std"]
        entry["stage2_speedup"] = entry["stage2_cpu_s_per_step"]["off_mean"] / entry["stage2_cpu_s_per_step"]["on_mean"]
        out[method] = entry
    return out


def table(summary: dict[str, Any]) -> str:
    rows = []
    for method, entry in summary.items():
        fid, gap, t = entry["digits_fid"], entry["gap_end"], entry["stage2_cpu_s_per_step"]
        stage1 = entry["stage1_digits_fid"]
        rows.append(
            [
                method,
                len(entry["seeds"]),
                f"{stage1['off_mean']:.2f} ± {stage1['off_std']:.2f}",
                f"{fid['off_mean']:.2f} ± {fid['off_std']:.2f}",
                f"{fid['on_mean']:.2f} ± {fid['on_std']:.2f}",
                f"{fid['diff_mean']:+.2f} ± {fid['diff_std']:.2f}",
                f"{gap['off_mean']:.3f} ± {gap['off_std']:.3f}",
                f"{gap['on_mean']:.3f} ± {gap['on_std']:.3f}",
                f"{1e3 * t['off_mean']:.0f} / {1e3 * t['on_mean']:.0f}",
                "yes" if entry["no_loss"] else "NO",
            ]
        )
    return _common.table(
        [
            "method",
            "seeds",
            "stage-1 digits-FID (shared)",
            "stage-2 digits-FID, bank off",
            "bank on",
            "paired on - off",
            "stage-2 end gap, off",
            "on",
            "stage-2 CPU ms / step, off / on",
            "no loss (on <= off + spread)",
        ],
        rows,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.splitlines()[0], malloc="default")  # training metrics, not timings
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default: 3; 2 with --quick)")
    args = p.parse_args(argv)
    device = _common.setup(args)
    if device.type != "cpu":
        raise SystemExit("bank_ab trains on the CPU (one thread, so the figures repeat); drop --device")
    machine = _common.machine_info(device)
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    if args.seeds is not None:
        settings["seeds"] = max(2, int(args.seeds))
    settings.update(methods=args.methods, quick=args.quick, size=8, stages=2, batch_size=64)
    runs = []
    for method in args.methods:
        for seed in range(settings["seeds"]):
            for bank_size in (0, settings["bank_size"]):  # the two arms of a pair back to back
                torch.set_num_threads(max(1, int(args.threads)))
                run = run_arm(method, seed, bank_size, settings)
                runs.append(run)
                print(
                    f"{method} seed {seed} bank {bank_size}: stage-2 digits-FID {run['digits_fid']:.2f}, "
                    f"(stage 1 {run['stage1_digits_fid']:.2f}), gap {run['gap_end']:.3f}, "
                    f"{1e3 * run['stage2_cpu_s_per_step']:.0f} CPU ms per step",
                    flush=True,
                )
    summary = summarise(runs)
    print(table(summary))
    path = _common.write_record(
        _common.default_output(NAME, args, device), NAME, argv, machine, settings, {"runs": runs, "summary": summary}
    )
    print(f"wrote {path}")
    return {"runs": runs, "summary": summary, "path": str(path)}


if __name__ == "__main__":
    main()
