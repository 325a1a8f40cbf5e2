"""``rankplug demo``: RankGAN stages and a same-compute WGAN-GP baseline on the bundled digits, and
``rankplug demo --conditional``: the angular-margin auxiliary classifier against softmax cross entropy.

The demo is a thin user of the library: it picks the settings (:class:`~rankplug.training.TrainConfig`),
trains the run directories (:func:`rankplug.runs.train_run`), evaluates them (:mod:`rankplug.eval.runs`) and
writes a report (:mod:`rankplug.report`). Run again, it resumes from the last checkpoints and says so.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rankplug.errors import RunDirectoryError
from rankplug.report import fmt, gap_summary, machine_info, mean, plot_score_ladder, save_grid
from rankplug.runs import check_directory_argument, read_json, train_run, write_json
from rankplug.training.config import TrainConfig

DEMO_FILE = "demo.json"
# The demo's RankGAN: eps = 10 in stage 1. With eps = 1 every hinge of the margin loss goes inactive once the
# critic separates real from fake by more than 1, after which stage 1 learns only from the gradient penalty and
# its samples stay noise (docs/demo_timing.md); eps = 10 keeps the hinges active, as the WGAN limit of MATH §1.
DEMO_MARGIN = 10.0
# lambda_clamp of the committed demo results (the authors' code's value); the paper's 1000 is the preset's.
DEMO_CLAMP = 1.0
# Relative cost of one generator step of a stage >= 2 RankGAN step against a stage-1 step (docs/demo_timing.md).
STAGE_COST = 1.3
# The timed steps run faster than a whole run does, so the budget plans with 85 % of the measured rate.
RATE_MARGIN = 0.85
Printer = Callable[[str], None]


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def choose_steps_per_stage(
    *, budget_seconds: float, stages: int, baseline: bool, size: int = 16, echo: Printer = _echo
) -> tuple[int, float]:
    """Generator steps per stage that fit ``budget_seconds`` of training on this machine, and the measured rate.

    Times steps 3 to 14 of a short stage-1 run (the first two warm up) and assumes a stage >= 2 step costs
    :data:`STAGE_COST` stage-1 steps and a baseline step one; it plans with :data:`RATE_MARGIN` of the measured
    rate. The result is a multiple of 10 in ``[20, 300]``.
    """
    from rankplug.training import train

    stamps: list[float] = []
    config = TrainConfig(method="margin", stages=1, steps_per_stage=14, log_every=1, size=size, seed=0)
    train(config, callback=lambda event: stamps.append(time.perf_counter()))
    rate = (len(stamps) - 2) / (stamps[-1] - stamps[1])
    work = 1 + STAGE_COST * (stages - 1) + (stages if baseline else 0)
    steps = max(20, min(300, int(budget_seconds * RATE_MARGIN * rate / work) // 10 * 10))
    echo(f"[demo] this machine runs {rate:.1f} generator steps/s; {steps} steps per stage fit {budget_seconds:.0f} s")
    return steps, rate


def _demo_configs(size: int, stages: int, steps: int, seed: int, quick: bool, baseline: bool) -> dict[str, TrainConfig]:
    common: dict[str, Any] = {"size": size, "seed": seed, "stages": stages, "steps_per_stage": steps}
    common.update({"log_every": 2, "batch_size": 16, "n_critic": 2, "width": 8} if quick else {"log_every": 10})
    runs = {"rankgan": TrainConfig(method="rankgan", margin=DEMO_MARGIN, clamp_weight=DEMO_CLAMP, **common)}
    if baseline:
        runs["baseline"] = TrainConfig(method="wgan-gp", **common)
    return runs


def _steps_per_stage(directory: Path, wanted: dict[str, Any], steps: int | None, budget: float, echo: Printer) -> int:
    demo_file = directory / DEMO_FILE
    if demo_file.is_file():
        saved = read_json(demo_file)
        differing = sorted(k for k in wanted if saved.get(k) != wanted[k] and k != "baseline")
        if differing:
            options = ", ".join(f"{k}={saved.get(k)!r}" for k in differing)
            raise ValueError(f"{directory} holds a demo run with {options}; use another --dir or the same options")
        saved_steps = saved.get("steps_per_stage")
        if isinstance(saved_steps, bool) or not isinstance(saved_steps, int) or saved_steps < 1:
            raise RunDirectoryError(f"{demo_file}: steps_per_stage must be an int >= 1; got {saved_steps!r}")
        if steps is not None and steps != saved_steps:
            raise ValueError(f"{directory} was started with steps_per_stage={saved_steps}; got {steps}")
        echo(f"[demo] found the run in {directory}: resuming from its last checkpoints ({saved_steps} steps/stage)")
        return saved_steps
    if wanted["quick"]:
        steps = steps or 4
    elif steps is None:
        steps, _ = choose_steps_per_stage(
            budget_seconds=budget, stages=wanted["stages"], baseline=wanted["baseline"], size=wanted["size"], echo=echo
        )
    write_json(demo_file, dict(wanted, steps_per_stage=steps, machine=machine_info()))
    return steps


def run_demo(
    directory: str | Path = "rankplug-demo",
    *,
    baseline: bool = True,
    size: int = 16,
    stages: int = 3,
    steps_per_stage: int | None = None,
    budget_seconds: float = 170.0,
    seed: int = 0,
    quick: bool = False,
    inception_weights: str | None = None,
    progress: bool = True,
    echo: Printer = _echo,
) -> dict[str, Any]:
    """RankGAN stages and a same-compute WGAN-GP baseline on the digits, evaluated and reported.

    Writes into ``directory``: ``rankgan/`` and ``baseline/`` run directories (checkpoints per stage,
    ``samples-stage{i}.png``), ``score_ladder.png``, ``metrics.json`` and ``report.md``; the steps per stage the
    first call chose are kept in ``demo.json``. ``steps_per_stage=None`` times this machine and picks the most
    that fit ``budget_seconds`` (:func:`choose_steps_per_stage`); ``quick`` is a few steps, for tests.

    Returns:
        The content of ``metrics.json``.
    """
    from rankplug.eval.runs import evaluate_run

    started = time.perf_counter()
    directory = check_directory_argument(directory, "--dir")
    _demo_configs(size, stages, steps_per_stage or 10, seed, quick, baseline)  # validates before writing
    if not (isinstance(budget_seconds, (int, float)) and math.isfinite(budget_seconds) and budget_seconds > 0):
        raise ValueError(f"budget_seconds must be a finite number of seconds > 0; got {budget_seconds!r}")
    directory.mkdir(parents=True, exist_ok=True)
    wanted = {"size": size, "stages": stages, "seed": seed, "quick": quick, "baseline": baseline}
    steps = _steps_per_stage(directory, wanted, steps_per_stage, budget_seconds, echo)
    configs = _demo_configs(size, stages, steps, seed, quick, baseline)
    results, timings = {}, {}
    for name, config in configs.items():
        t0 = time.perf_counter()
        results[name] = train_run(directory / name, config, progress=progress, echo=echo)
        timings[f"train_{name}_seconds_this_call"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    eval_kwargs: dict[str, Any] = {"inception_weights": inception_weights, "progress": progress, "echo": echo}
    if quick:
        eval_kwargs.update(completion_images=8, completion_steps=2, fid_samples=64)
    evaluation = {name: evaluate_run(directory / name, **eval_kwargs) for name in configs}
    timings["eval_seconds_this_call"] = time.perf_counter() - t0
    plot_score_ladder({name: results[name] for name in configs}, directory / "score_ladder.png")
    metrics = {
        "settings": read_json(directory / DEMO_FILE),
        "reference": _digits_reference(size),
        "runs": {name: _run_summary(results[name], evaluation[name]) for name in configs},
        "timing": dict(timings, total_seconds_this_call=time.perf_counter() - started),
        "machine": machine_info(),
    }
    write_json(directory / "metrics.json", metrics)
    (directory / "report.md").write_text(render_report(metrics))
    echo(f"[demo] done in {time.perf_counter() - started:.0f} s: see {directory / 'report.md'}")
    return metrics


def _run_summary(result: dict[str, Any], evaluation: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "method": result["method"],
        "generator_steps": result["generator_steps"],
        "train_seconds": result["wall_time"],
        "gap_per_stage": [gap_summary(entry) for entry in result["stages"]],
        "markers_per_stage": [{"stage": e["stage"], "markers_used": e["markers_used"]} for e in result["stages"]],
        "stages": [{k: v for k, v in e.items() if k != "eval_settings"} for e in evaluation],
    }


def _digits_reference(size: int) -> dict[str, float]:
    """digits-FID of real digits the GAN trained on against the held-out ones: the floor a GAN can reach."""
    from rankplug.eval import digits as digits_eval

    classifier, split = digits_eval.reference_classifier(size)
    return {"digits_fid_train_vs_held_out": digits_eval.digits_fid(classifier, split.test_images, split.train_images)}


def render_report(metrics: dict[str, Any]) -> str:
    """``report.md``: stage against metrics next to the baseline, the completion table and the pictures."""
    from rankplug.eval import format_table

    s = metrics["settings"]
    lines = [
        "# rankplug demo report",
        "",
        f"Digits ({s['size']}x{s['size']}, scikit-learn's bundled set: 1,347 to train on, 450 held out), "
        f"{s['stages']} stages of {s['steps_per_stage']} generator steps, seed {s['seed']}. RankGAN: stage 1 margin "
        f"loss (eps = {DEMO_MARGIN:g}) + gradient penalty, stages 2-3 ranking + clamp (RankGAN Eq. 3-7). Baseline: "
        "WGAN-GP for the same number of generator steps.",
        "",
        "## Stage against metrics",
        "",
        "| run | stage | generator steps | gap Γ (end) | digits-FID ↓ | completion PSNR (dB) ↑, mean over occlusions "
        "| SSIM ↑ |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = []
    for name, run in metrics["runs"].items():
        for e in run["stages"]:
            psnr, ssim = mean(e["completion"]["psnr"]), mean(e["completion"]["ssim"])
            lines.append(
                f"| {name} | {e['stage']} | {e['generator_steps']} | {fmt(e.get('gap_end'), 3)} "
                f"| {fmt(e.get('digits_fid'))} | {fmt(psnr)} | {fmt(ssim, 3)} |"
            )
            rows.append(dict(e["completion"], model=f"{name} stage {e['stage']}"))
    floor = metrics["reference"]["digits_fid_train_vs_held_out"]
    lines += ["", f"digits-FID of the real training digits against the held-out ones (the floor): {floor:.2f}.", ""]
    lines += [
        "## Image completion (GoGAN Table 2 layout: PSNR dB / SSIM per occluded fraction)",
        "",
        format_table(rows),
    ]
    lines += ["", "## Score ladder and gap", "", "![score ladder](score_ladder.png)", ""]
    for name, run in metrics["runs"].items():
        for gap in run["gap_per_stage"]:
            prev = f", D(G_i-1(z)) {fmt(gap['prev_fake_end'])}" if gap["prev_fake_end"] is not None else ""
            lines.append(
                f"- {name} stage {gap['stage']}: Γ at the end {fmt(gap['gap_end'], 3)} (mean over the stage "
                f"{fmt(gap['gap_mean'], 3)}); last batch D(x) {fmt(gap['real_end'])}, D(G_i(z)) "
                f"{fmt(gap['fake_end'])}{prev}"
            )
    lines += ["", "## Samples (fixed z)", ""]
    for name, run in metrics["runs"].items():
        lines += [
            f"- {name} stage {e['stage']}: ![{name} stage {e['stage']}]({name}/{e['samples']})" for e in run["stages"]
        ]
    machine, seconds = metrics["machine"], metrics["timing"]["total_seconds_this_call"]
    lines += [
        "",
        f"Time of this call: {seconds:.0f} s. Machine: {machine['platform']}, torch {machine['torch']}, "
        f"{machine['torch_threads']} threads.",
        "",
    ]
    return "\n".join(lines)


HEADS = ("aam", "ce")


def run_conditional_demo(
    directory: str | Path = "rankplug-demo",
    *,
    steps: int = 800,
    n_critic: int = 2,
    seed: int = 0,
    quick: bool = False,
    progress: bool = True,
    echo: Printer = _echo,
) -> dict[str, Any]:
    """The angular-margin auxiliary classifier (``aam``) against softmax cross entropy (``ce``), same budget.

    A conditional digits GAN with the WGAN-GP adversarial loss and each head (label-geometry paper Eq. 5-6),
    trained with the same seed and steps and scored with GAN-train, GAN-test and digits-FID on the held-out
    digits. Writes ``conditional/metrics.json``, ``conditional/report.md`` and ``conditional/samples-{head}.png``
    (one row per class); the runs are ``conditional/{head}/`` run directories and a second call resumes there.
    """
    from rankplug.eval.runs import digits_metrics, generate
    from rankplug.runs import load_stage_models, stage_files

    started = time.perf_counter()
    out = check_directory_argument(directory, "--dir") / "conditional"
    options: dict[str, Any] = (
        {"batch_size": 16, "n_critic": 1, "log_every": 1, "steps_per_stage": 3}
        if quick
        else {"n_critic": n_critic, "steps_per_stage": steps, "log_every": 10 if steps % 10 == 0 else 1}
    )
    fid_samples = 50 if quick else 1350
    runs: dict[str, dict[str, Any]] = {}
    for head in HEADS:
        config = TrainConfig(method="wgan-gp", stages=1, class_head=head, seed=seed, **options)
        train_run(out / head, config, progress=progress, echo=echo)
        models = load_stage_models(stage_files(out / head)[-1][1], config=config)
        from rankplug.eval.runs import held_out_images

        metrics = digits_metrics(models, held_out_images(config, 450), fid_samples, 1234)
        labels = torch.arange(10).repeat_interleave(8)
        save_grid(generate(models, 80, 1234, labels=labels), out / f"samples-{head}.png", nrow=8)
        runs[head] = {"metrics": metrics, "generator_steps": models.generator_steps}
    reference = _digits_reference(16)
    result = {
        "runs": runs,
        "reference": reference,
        "machine": machine_info(),
        "seconds_this_call": time.perf_counter() - started,
    }
    write_json(out / "metrics.json", result)
    lines = [
        "# rankplug demo --conditional",
        "",
        f"Conditional digits GAN, {options['steps_per_stage']} generator steps per head, seed {seed}; the same "
        "networks, data and budget, only the auxiliary classifier differs (AAM: `rankplug.AAMAuxClassifier`; "
        "CE: linear + softmax cross entropy).",
        "",
        "| head | GAN-train % ↑ | GAN-test % ↑ | digits-FID ↓ |",
        "|---|---|---|---|",
    ]
    for head, run in runs.items():
        m = run["metrics"]
        lines.append(f"| {head} | {100 * m['gan_train']:.2f} | {100 * m['gan_test']:.2f} | {m['digits_fid']:.2f} |")
    lines += ["", *(f"- {head}: ![{head}](samples-{head}.png) (one row per class 0-9)" for head in runs), ""]
    (out / "report.md").write_text("\n".join(lines))
    echo(f"[conditional] done in {result['seconds_this_call']:.0f} s: see {out / 'report.md'}")
    return result


__all__ = ["choose_steps_per_stage", "render_report", "run_conditional_demo", "run_demo"]
