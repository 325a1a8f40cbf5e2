"""The angular-margin paper's claim, its own way: AAM against cross entropy and a cosine softmax, each tuned.

The label-geometry paper (Sec. 4, Table 1) replaces the conditional GAN's softmax cross-entropy auxiliary
classifier by an additive angular margin (ArcFace) head and reports better class-conditional samples, with the
class-loss weight swept. Replacing cross entropy by AAM changes three things at once (feature and weight
normalisation, the scale s, the margin m), so this study has three heads on the same WGAN-GP conditional GAN
(the trainer's ``aam`` preset: StarGAN's objective, Adam 1e-4 (0.5, 0.999), 5 critic steps): ``ce`` (linear +
softmax cross entropy), ``cosine`` (normalised, s = 16, m = 0) and ``aam`` (s = 16, m = 0.3). Each head's class
weight ``lambda_cls`` is tuned over a grid on the tuning seeds by GAN-train, the primary metric (a classifier
trained on samples, scored on held-out real digits: right and diverse samples); the headline then runs each
head at its own best weight on fresh seeds, paired by seed, with GAN-test and digits-FID beside it.

    python experiments/aam_study.py                                   # grid x 2 seeds + 5 seeds (about 25 min)
    python experiments/aam_study.py --tune-seeds 0 --seeds 10 --steps 20 --output /tmp/a.json   # a smoke run
    python experiments/aam_study.py --data cifar10 --data-root DIR --size 32 --width 128 --steps 20000 \
        --device cuda   # CIFAR-10 at 32 px on a GPU (GAN-train then needs a CIFAR-10 classifier)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _study import (
    add_common_arguments,
    command_line,
    data_settings,
    fmt_interval,
    paired_difference,
    run_tasks,
    stage_scores,
    t_interval,
    train_cached,
    write_record,
)

from rankplug.app.training import TrainConfig

HEADS = ("ce", "cosine", "aam")
WEIGHTS = (0.3, 1.0, 3.0)


def config(args: argparse.Namespace, head: str, weight: float, seed: int) -> TrainConfig:
    data = data_settings(args)
    return TrainConfig.from_preset(
        "aam",
        class_head=head,
        cls_weight=weight,
        seed=seed,
        size=args.size,
        width=args.width,
        steps_per_stage=args.steps,
        log_every=max(1, args.steps // 20),
        device=args.device,
        **data,
    )


def one_run(head: str, weight: float, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(args.work) / f"{head}-w{weight:g}-seed{seed}"
    summary = train_cached(run_dir, config(args, head, weight, seed))
    return {"head": head, "weight": weight, "seed": seed, "train": summary, "scores": stage_scores(run_dir)[1]}


def real_reference(size: int) -> dict[str, float]:
    """GAN-test and GAN-train of real digits: the reference classifier on the held-out digits, and the GAN-train
    recipe trained on the real training digits."""
    from rankplug.app.eval.digits import gan_test, gan_train, reference_classifier

    classifier, split = reference_classifier(size)
    return {
        "gan_test_real": gan_test(classifier, split.test_images, split.test_labels),
        "gan_train_real": gan_train(split.train_images, split.train_labels, split.test_images, split.test_labels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14], help="the headline's seeds")
    parser.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS))
    parser.add_argument("--steps", type=int, default=600)
    add_common_arguments(parser, "aam")
    args = parser.parse_args()

    tuning = run_tasks(
        [(h, w, s, args) for h in HEADS for w in args.weights for s in args.tune_seeds], one_run, args.jobs
    )
    grid: dict[str, dict[str, Any]] = {}
    for head in HEADS:
        grid[head] = {}
        for weight in args.weights:
            runs = [r for r in tuning if r["head"] == head and r["weight"] == weight]
            grid[head][f"{weight:g}"] = {
                m: t_interval([r["scores"][m] for r in runs]) for m in ("gan_train", "gan_test", "digits_fid")
            }
    best = {head: max(args.weights, key=lambda w: grid[head][f"{w:g}"]["gan_train"]["mean"]) for head in HEADS}
    headline = run_tasks([(h, best[h], s, args) for h in HEADS for s in args.seeds], one_run, args.jobs)
    reference = real_reference(args.size)
    analysis = analyse(args, grid, best, headline, reference)
    print(analysis["text"])
    command = command_line("aam_study.py", args)
    record = {
        "seeds": args.seeds,
        "tune_seeds": args.tune_seeds,
        "settings": {h: config(args, h, best[h], args.seeds[0]).to_dict() for h in HEADS},
        "tuning_runs": tuning,
        "headline_runs": headline,
        "reference": reference,
        "analysis": analysis,
    }
    write_record(Path(args.output), record, command)


def analyse(
    args: argparse.Namespace,
    grid: dict[str, Any],
    best: dict[str, float],
    headline: list[dict[str, Any]],
    reference: dict[str, float],
) -> dict[str, Any]:
    metrics = ("gan_train", "gan_test", "digits_fid")
    values = {h: {m: [r["scores"][m] for r in headline if r["head"] == h] for m in metrics} for h in HEADS}
    out: dict[str, Any] = {"grid": grid, "best_weight": best, "headline": {}, "differences": {}}
    lines = [
        f"Tuning (seeds {args.tune_seeds}): GAN-train % by class weight lambda_cls",
        "",
        "| head | " + " | ".join(f"lambda_cls = {w:g}" for w in args.weights) + " |",
        "|---|" + "---|" * len(args.weights),
    ]
    for head in HEADS:
        cells = [f"{100 * grid[head][f'{w:g}']['gan_train']['mean']:.1f}" for w in args.weights]
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Headline (seeds {args.seeds}, each head at its best lambda_cls; mean [95 % t interval]):",
        "",
        "| head | lambda_cls | GAN-train % ↑ | GAN-test % | digits-FID ↓ |",
        "|---|---|---|---|---|",
    ]
    for head in HEADS:
        out["headline"][head] = {m: t_interval(values[head][m]) for m in metrics}
        pct = {m: t_interval([100 * v for v in values[head][m]]) for m in ("gan_train", "gan_test")}
        lines.append(
            f"| {head} | {best[head]:g} | {fmt_interval(pct['gan_train'], 1)} | {fmt_interval(pct['gan_test'], 1)} "
            f"| {fmt_interval(out['headline'][head]['digits_fid'], 1)} |"
        )
    lines += [
        f"| real digits | - | {100 * reference['gan_train_real']:.1f} | {100 * reference['gan_test_real']:.1f} | - |",
        "",
        "Paired differences (percentage points for GAN-train / GAN-test):",
        "",
        "| comparison | GAN-train | GAN-test | digits-FID |",
        "|---|---|---|---|",
    ]
    for a, b, label in (
        ("aam", "ce", "AAM - CE"),
        ("cosine", "ce", "cosine - CE"),
        ("aam", "cosine", "AAM - cosine (the margin)"),
    ):
        row = {}
        for m in metrics:
            scale = 100.0 if m != "digits_fid" else 1.0
            row[m] = paired_difference([scale * v for v in values[a][m]], [scale * v for v in values[b][m]])
        out["differences"][label] = row
        lines.append(f"| {label} | " + " | ".join(fmt_interval(row[m], 1) for m in metrics) + " |")
    out["text"] = "\n".join(lines)
    return out


if __name__ == "__main__":
    main()
