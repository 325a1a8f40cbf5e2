"""AAM vs softmax cross entropy as the auxiliary classifier of a conditional digits GAN (issue #5).

Trains a conditional digits GAN per head with :func:`rankplug.runs.train_run` (``TrainConfig(method="wgan-gp",
class_head=...)``, both heads with the same seed and budget) for several seeds, scores it with
:func:`rankplug.eval.runs.digits_metrics`, and
writes ``experiments/results/conditional_aam_vs_ce.json`` (every per-seed number, the timings, the settings and
the printed table) plus one sample grid per head for the first seed, ``conditional_{head}_seed{seed}.png``
(rows = classes 0-9, columns = the same ``z`` for both heads).

Reproduce ``docs/results_conditional.md`` with::

    python experiments/conditional_aam_vs_ce.py

Timing: the script reports the wall and CPU time of each comparison (train both heads + evaluate both).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rankplug.eval.digits import digits_fid, gan_test, reference_classifier
from rankplug.eval.runs import digits_metrics, generate, held_out_images
from rankplug.report import mean_std
from rankplug.runs import load_stage_models, stage_files, train_run
from rankplug.training import TrainConfig

HEADS = ("aam", "ce")

ROOT = Path(__file__).resolve().parent
METRICS = (("gan_train", "GAN-train %", 100.0), ("gan_test", "GAN-test %", 100.0), ("digits_fid", "digits-FID", 1.0))


SOURCES = ("rankplug/training/loop.py", "rankplug/heads.py", "rankplug/functional/angular.py")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_head(head: str, seed: int, args: argparse.Namespace, cls_weight: float = 1.0) -> tuple[Any, dict[str, Any]]:
    """Train (or resume) one head's run and return its stage models and metrics (GAN-train, GAN-test per class too)."""
    config = TrainConfig(
        method="wgan-gp",
        stages=1,
        class_head=head,
        steps_per_stage=args.steps,
        log_every=args.steps,
        n_critic=args.n_critic,
        batch_size=args.batch_size,
        seed=seed,
        cls_weight=cls_weight,
    )
    run_dir = args.work / f"{head}-w{cls_weight:g}-seed{seed}"
    result = train_run(run_dir, config, progress=False)
    models = load_stage_models(stage_files(run_dir)[-1][1], config=config)
    count = 10 * args.samples_per_class
    metrics = digits_metrics(models, held_out_images(config, 450), count, seed)
    classifier, _ = reference_classifier(16)
    labels = torch.arange(count) % 10
    fakes = generate(models, count, seed + 3, labels=labels)
    metrics["gan_test_per_class"] = [gan_test(classifier, fakes[labels == k], labels[labels == k]) for k in range(10)]
    return models, {"metrics": metrics, "train_seconds": result["wall_time"], "log": result["log"]}


def real_reference() -> dict[str, float]:
    classifier, split = reference_classifier(16)
    accuracy = gan_test(classifier, split.test_images, split.test_labels)
    return {
        "classifier_accuracy": accuracy,
        "digits_fid": digits_fid(classifier, split.test_images, split.train_images),
    }


def class_samples(models: Any, *, per_class: int, seed: int) -> torch.Tensor:
    labels = torch.arange(10).repeat_interleave(per_class)
    samples = generate(models, 10 * per_class, seed, labels=labels)
    return samples.view(10, per_class, *samples.shape[1:])


def save_grid(generator: Any, path: Path, *, per_class: int = 10, seed: int = 0, zoom: int = 3) -> None:
    """A PNG with one row per class (0 at the top) and ``per_class`` columns, each pixel ``zoom`` times."""
    from PIL import Image

    samples = class_samples(generator, per_class=per_class, seed=seed)  # type: ignore[arg-type]
    rows, cols, _, side, _ = samples.shape
    pad = 1
    canvas = torch.ones(rows * (side + pad) + pad, cols * (side + pad) + pad)
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (side + pad), pad + c * (side + pad)
            canvas[top : top + side, left : left + side] = samples[r, c, 0]
    pixels = ((canvas.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    image = Image.fromarray(pixels.numpy(), mode="L")
    image = image.resize((image.width * zoom, image.height * zoom), Image.Resampling.NEAREST)
    image.save(path, optimize=True)


def table(per_seed: list[dict[str, Any]], reference: dict[str, float]) -> str:
    lines = [
        "| head | GAN-train % ↑ | GAN-test % ↑ | digits-FID ↓ |",
        "| --- | ---: | ---: | ---: |",
    ]
    for head in per_seed[0]:
        cells = [mean_std([run[head][key] for run in per_seed], factor=factor) for key, _, factor in METRICS]
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    acc, fid = 100 * reference["classifier_accuracy"], reference["digits_fid"]
    lines.append(f"| real digits | {acc:.2f} (real training digits) | {acc:.2f} (held-out real digits) | {fid:.2f} |")
    return "\n".join(lines)


def per_class_table(per_seed: list[dict[str, Any]]) -> str:
    """GAN-test of each class, mean over the seeds."""
    lines = ["| head | " + " | ".join(str(k) for k in range(10)) + " |", "| --- |" + " ---: |" * 10]
    for head in per_seed[0]:
        means = [statistics.fmean(run[head]["gan_test_per_class"][k] for run in per_seed) for k in range(10)]
        lines.append(f"| {head} | " + " | ".join(f"{100 * m:.1f}" for m in means) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=800, help="generator steps per head")
    parser.add_argument("--n-critic", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples-per-class", type=int, default=135)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: bit-reproducible numbers)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "conditional_aam_vs_ce.json")
    parser.add_argument("--no-grids", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rankplug-conditional"), help="run directories")
    parser.add_argument(
        "--ce-control-cls-weight",
        type=float,
        default=3.0,
        help="also train a CE run with this lambda_cls (0: skip); 3 matches the AAM term's initial size",
    )
    args = parser.parse_args(argv)
    sources = {name: _sha256(ROOT.parent / name) for name in SOURCES}  # hashed when imported, not at the end
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    per_seed: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    reference: dict[str, float] = {}
    for seed in args.seeds:
        wall, cpu = time.perf_counter(), time.process_time()
        models, plain = {}, {}
        for head in HEADS:
            models[head], plain[head] = run_head(head, seed, args)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        reference = real_reference()
        per_seed.append({head: plain[head]["metrics"] for head in HEADS})
        record: dict[str, Any] = {"seed": seed, "runs": plain, "comparison_wall_s": wall, "comparison_cpu_s": cpu}
        runs.append(record)
        summary = "  ".join(
            f"{head}: train {m['gan_train']:.3f} test {m['gan_test']:.3f} fid {m['digits_fid']:.1f}"
            for head, m in per_seed[-1].items()
        )
        print(f"seed {seed}: {summary}  ({wall:.1f} s wall, {cpu:.1f} s CPU)", flush=True)
        if args.ce_control_cls_weight > 0:
            # Control: AAM's class term starts about 3x larger than CE's (docs/aam_defaults.md §3), so a CE run
            # with a larger lambda_cls separates "a stronger class term" from "the angular geometry".
            name = f"ce, cls_weight {args.ce_control_cls_weight:g}"
            _, control = run_head("ce", seed, args, cls_weight=args.ce_control_cls_weight)
            per_seed[-1][name] = control["metrics"]
            record["control"] = control
            m = control["metrics"]
            print(f"  control {name}: train {m['gan_train']:.3f} test {m['gan_test']:.3f} fid {m['digits_fid']:.1f}")
        if not args.no_grids and seed == args.seeds[0]:
            for head in HEADS:
                save_grid(models[head], args.out.parent / f"conditional_{head}_seed{seed}.png")

    text = table(per_seed, reference)
    classes = per_class_table(per_seed)
    walls, cpus = [run["comparison_wall_s"] for run in runs], [run["comparison_cpu_s"] for run in runs]
    timing = (
        f"one comparison (both heads, training and evaluation): {statistics.fmean(walls):.1f} s wall, "
        f"{statistics.fmean(cpus):.1f} s CPU on average, {args.threads} torch thread(s)"
    )
    print(f"\n{len(args.seeds)} seeds, {args.steps} generator steps per head, n_critic {args.n_critic}\n")
    print(text)
    print("\nGAN-test per class (%), mean over the seeds\n")
    print(classes)
    print(f"\n{timing}")
    payload = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            # the AAM numbers move with float rounding in these files, so record exactly which code ran
            "sha256": sources,
        },
        "reference": reference,
        "per_seed": [{"seed": seed, **metrics} for seed, metrics in zip(args.seeds, per_seed)],
        "runs": runs,
        "table": text,
        "per_class_table": classes,
        "timing": timing,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
