"""What the per-paper studies share: train a run directory, score its stages, and interval arithmetic.

Every study script (``experiments/*_study.py``) trains with the trainer's public API (:func:`rankplug.app.training.train`
through :func:`rankplug.app.runs.train_run`), scores each stage's checkpoint with the project's digits metrics
(:mod:`rankplug.app.eval.digits`) and writes one JSON with every seed's figures under ``experiments/results/``.
Runs are cached by directory: a run directory that already holds its last stage is read, not retrained, so an
interrupted study resumes where it stopped.

Intervals: a difference between two arms is paired by seed; its 95 % interval is the t interval of the
per-seed differences, with the percentile bootstrap (10,000 resamples of the seeds) beside it.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rankplug.app.report import machine_info
from rankplug.app.runs import load_stage_models, read_json, stage_files, train_run, write_json
from rankplug.app.training import TrainConfig

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SUMMARY = "study-run.json"


def _library_version() -> dict[str, Any]:
    """The commit the study starts from, and whether ``rankplug/`` differed from it (what the runs train with)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "../rankplug"], cwd=HERE, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "library_modified": None}
    return {"commit": head.stdout.strip(), "library_modified": bool(dirty.stdout.strip())}


#: Taken when a study script starts, and written into its JSON.
STARTED_AT = _library_version()


def train_cached(run_dir: Path, config: TrainConfig) -> dict[str, Any]:
    """Train ``config`` in ``run_dir`` (or read it back when it finished before) and return its summary.

    The summary holds ``cpu_seconds`` per stage (this process's CPU time while that stage trained, robust to
    other load on the machine), ``cpu_seconds_per_step`` (the rate between the stage's first and last record),
    ``steps`` per stage (the plateau rule may end a stage early), the markers, and per stage the mean activity
    of every hinge the trainer logged (``active_margin``, ``active_rank``, ``active_clamp``, ...) over the
    stage's first and last half.
    """
    done = run_dir / SUMMARY
    if done.is_file():
        summary = read_json(done)
        # compared as configs, so a setting added to TrainConfig later (with its default) keeps the cache valid
        if (
            not TrainConfig.from_dict(summary["config"]).differences(config)
            and summary["config"]["stages"] == config.stages
        ):
            return summary
    stamps: list[tuple[int, int, float]] = []
    events: list[dict[str, Any]] = []
    started = time.process_time()

    def record(event: dict[str, Any]) -> None:
        stamps.append((int(event["stage"]), int(event["step"]), time.process_time() - started))
        events.append(event)

    result = train_run(run_dir, config, progress=False, echo=lambda message: None, callback=record)
    if result["resumed"] and result["steps_this_call"] < result["generator_steps"]:
        raise RuntimeError(f"{run_dir} held a partial run; remove it to rerun the study cleanly")
    stages = sorted({s for s, _, _ in stamps})
    per_stage = []
    for stage in stages:
        mine = [e for e in events if e["stage"] == stage]
        end = max(t for s, _, t in stamps if s == stage)
        begin = max([t for s, _, t in stamps if s < stage], default=0.0)
        steps = mine[-1]["step"] - (max((e["step"] for e in events if e["stage"] < stage), default=0))
        # the stage's steady rate, between its first and last record (without stage 0, data loading, checkpoints)
        first_time, first_step = min((t, step) for s, step, t in stamps if s == stage)
        last_step = mine[-1]["step"]
        rate = (end - first_time) / (last_step - first_step) if last_step > first_step else None
        per_stage.append(
            {
                "stage": stage,
                "steps": steps,
                "generator_steps_end": mine[-1]["step"],
                "cpu_seconds": end - begin,
                "cpu_seconds_end": end,
                "cpu_seconds_per_step": rate,
                "markers": mine[-1].get("markers"),
                "hinges": _hinge_activity(mine),
                "gap_end": mine[-1]["gap"],
                "loss_d_end": mine[-1]["loss_d"],
            }
        )
    summary = {"config": config.to_dict(), "stages": per_stage, "finished": time.time()}
    write_json(done, summary)
    return summary


def _hinge_activity(events: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    keys = sorted({k for e in events for k in e if k.startswith("active_")})
    half = max(1, len(events) // 2)
    out = {}
    for key in keys:
        values = [float(e[key]) for e in events if e.get(key) is not None and math.isfinite(float(e[key]))]
        first, last = values[:half], values[half:] or values[-1:]
        out[key.removeprefix("active_")] = {
            "first_half": statistics.mean(first) if first else float("nan"),
            "last_half": statistics.mean(last) if last else float("nan"),
        }
    return out


def stage_scores(
    run_dir: Path, *, fid_samples: int = 1000, seed: int = 1234, stages: Sequence[int] | None = None
) -> dict[int, dict[str, Any]]:
    """Per stage checkpoint: digits-FID on the held-out digits, the class histogram of ``fid_samples`` samples
    by the reference classifier, and GAN-train / GAN-test when the generator is conditional."""
    from rankplug.app.eval import digits as digits_eval
    from rankplug.app.eval.commands import digits_metrics, generate, held_out_images
    from rankplug.app.runs import read_run_config

    config = read_run_config(run_dir)
    classifier, _ = digits_eval.reference_classifier(config.size)
    held_out = held_out_images(config, 450)
    out = {}
    for stage, path in stage_files(run_dir):
        if stages is not None and stage not in stages:
            continue
        models = load_stage_models(path, config=config)
        metrics = digits_metrics(models, held_out, fid_samples, seed)
        if not models.num_classes:
            with torch.no_grad():
                predicted = classifier(generate(models, fid_samples, seed + 7)).argmax(1)
            metrics["class_histogram"] = torch.bincount(predicted, minlength=10).tolist()
        out[stage] = metrics
    return out


def completion_scores(run_dir: Path, stage: int, images: int = 200, steps: int = 100) -> dict[str, Any]:
    """GoGAN Table 2's measurement for one stage checkpoint: PSNR / SSIM of the completed held-out digits at
    the five occlusions (:data:`rankplug.app.eval.completion.COVERAGES`), latent search from ``z`` drawn with
    seed 0, so every model starts from the same ``z`` (:func:`rankplug.app.eval.completion_table`)."""
    from rankplug.app.eval import completion_table
    from rankplug.app.eval.commands import held_out_images
    from rankplug.app.runs import read_run_config

    config = read_run_config(run_dir)
    models = load_stage_models(dict(stage_files(run_dir))[stage], config=config)
    rows = completion_table(
        {"stage": (models.generator, models.discriminator)},
        held_out_images(config, images),
        latent_shape=(config.nz,),
        steps=steps,
        perceptual_weight=0.1,
        generator_seed=0,
    )
    return {k: list(rows[0][k]) for k in ("coverages", "psnr", "ssim", "hole_psnr")}


def t_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % t interval of ``values`` (``n`` >= 2; the interval is ``None`` for one value)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "t95": None, "n": n}
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "t95": [mean - half, mean + half], "sd": statistics.stdev(values), "n": n}


def paired_difference(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000) -> dict[str, Any]:
    """``a - b`` paired by position (seed): mean, 95 % t interval and 95 % percentile-bootstrap interval."""
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"paired arms need one value per seed each; got {len(a)} and {len(b)}")
    diff = [x - y for x, y in zip(a, b)]
    out = t_interval(diff)
    if len(diff) >= 2:
        rng = np.random.default_rng(0)
        values = np.asarray(diff)
        means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
        out["bootstrap95"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    out["per_seed"] = diff
    return out


def fmt_interval(entry: dict[str, Any], digits: int = 2) -> str:
    """``"-3.21 [-5.00, -1.42]"``, or the mean alone when there is no interval."""
    if entry.get("t95") is None:
        return f"{entry['mean']:.{digits}f}"
    lo, hi = entry["t95"]
    return f"{entry['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def write_record(path: Path, record: dict[str, Any], command: str, version: dict[str, Any] | None = None) -> None:
    """The study's JSON: ``command``, ``seeds`` (in ``record``), the machine, and everything measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(
        record,
        command=command,
        machine=machine_info(),
        torch_threads=torch.get_num_threads(),
        **(version or STARTED_AT),
    )
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


def add_common_arguments(parser: Any, name: str, *, size: int = 8, width: int = 64) -> None:
    """The options every study takes: data, image size, network width, device, parallel runs, where to work."""
    parser.add_argument("--size", type=int, default=size)
    parser.add_argument("--width", type=int, default=width)
    parser.add_argument("--data", default="digits", help="digits (bundled), folder or cifar10")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once (one torch thread each)")
    parser.add_argument("--work", default=f"/tmp/rankplug-study/{name}", help="where the run directories go")
    parser.add_argument("--output", default=str(RESULTS / f"{name}_study.json"))


def data_settings(args: Any) -> dict[str, Any]:
    """The TrainConfig data settings of the parsed options (nothing for the bundled digits)."""
    return {} if args.data == "digits" else {"data": args.data, "data_root": args.data_root}


def command_line(script: str, args: Any, skip: Sequence[str] = ()) -> str:
    """The command that reproduces a study: every option but where it works and writes, as typed."""
    parts = []
    for key, value in vars(args).items():
        if key in ("work", "output", "jobs", *skip) or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts.append(
            flag if value is True else f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}"
        )
    return f"python experiments/{script} " + " ".join(parts)


def run_tasks(tasks: Sequence[tuple[Any, ...]], worker: Any, jobs: int) -> list[Any]:
    """``worker(*task)`` for every task, in ``jobs`` processes of one torch thread each (results in task order)."""
    if jobs <= 1:
        torch.set_num_threads(1)
        return [worker(*task) for task in tasks]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = [pool.submit(worker, *task) for task in tasks]
        return [future.result() for future in futures]


__all__ = [
    "add_common_arguments",
    "command_line",
    "completion_scores",
    "data_settings",
    "fmt_interval",
    "paired_difference",
    "run_tasks",
    "stage_scores",
    "t_interval",
    "train_cached",
    "write_record",
]
