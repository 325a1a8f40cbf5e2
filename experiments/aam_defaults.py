"""Choose the default ``scale`` (s) and ``margin`` (m) of :class:`rankplug.AAMAuxClassifier`.

A small, reproducible CPU experiment on scikit-learn's bundled ``load_digits`` (1797 8x8 images, 10 classes):
a two-layer MLP feature extractor (64 -> 128 -> ``feat_dim``) is trained with
``rankplug.AAMAuxClassifier(feat_dim, 10, scale=s, margin=m)`` and ``head.loss(head(features), labels)`` over a
grid of ``(s, m)``, plus a plain ``nn.Linear`` + cross-entropy baseline, for several seeds. The split is fixed;
the seed sets the initialisation and the batch order.

Measured per run (test set unless stated):

- ``acc``: test accuracy (argmax of the margin-free logits ``s cos(theta)``).
- ``intra_deg``: mean angle between a test feature and its own class weight (compactness; lower is tighter).
- ``gap_deg``: mean over test samples of (angle to the nearest other class weight - angle to its own).
- ``inter_min_deg``: the smallest angle between two class weight vectors (separation; the optimum for 10
  classes is the regular simplex, arccos(-1/9) = 96.38 deg).
- ``nonfinite``: whether any training loss or parameter gradient was NaN/inf.
- Gradients a GAN generator would receive, as the mean per-sample norm of d loss_i / d features_i:
  ``grad_init`` (untrained network, test images, true labels), ``grad_end`` (trained network, test images,
  true labels) and ``grad_end_wrong`` (trained network, test images paired with a wrong target label, the
  situation of a StarGAN fake that still looks like its source class). ``grad_end_noise`` uses uniform-noise
  images with random target labels (an early, unstructured fake). The matching mean loss values are stored
  too, because in ``L_G = L_adv + lambda_cls * L_cls^f`` it is the size of the class term relative to the
  adversarial term that ``s`` changes (Adam divides out the overall gradient scale, not the mix).
  ``pixgrad_end_wrong`` is the same gradient taken all the way back to the input pixels.

For the ``nn.Linear`` baseline the angles use its weight rows (its bias is ignored). The run takes about
2 minutes on 2 idle CPU cores; on a busy machine ``--threads 1`` avoids OpenMP threads spinning against other
jobs (results then differ in the last float bits, enough to move a few s=64 runs by one or two test images).

Run ``python experiments/aam_defaults.py --help``. Writes JSON to ``experiments/results/aam_defaults.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import rankplug

NUM_CLASSES = 10


@dataclass(frozen=True)
class Config:
    """One grid point: ``kind`` is ``"aam"`` or ``"linear"`` (the softmax baseline, which has no s or m)."""

    kind: str
    scale: float | None = None
    margin: float | None = None

    @property
    def name(self) -> str:
        if self.kind == "linear":
            return "linear+CE"
        return f"s={self.scale:g} m={self.margin:g}"


@dataclass(frozen=True)
class Data:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_data(split_seed: int, test_fraction: float) -> Data:
    """``load_digits`` scaled to [0, 1], with a fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=split_seed, stratify=y)
    return Data(torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te), torch.from_numpy(y_te))


def scale_lower_bound(num_classes: int, prob: float, margin: float = 0.0) -> float:
    """Smallest ``s`` at which the target probability can reach ``prob`` (NormFace's bound; margin-extended).

    Best case: the class weights form a regular simplex (pairwise cosine ``-1/(C-1)``) and every feature sits on
    its class weight, so the target logit is ``s cos(m)`` and the others ``-s/(C-1)``. Then
    ``p = 1 / (1 + (C-1) exp(-s (cos m + 1/(C-1))))`` and ``p >= prob`` needs
    ``s >= log((C-1) prob / (1-prob)) / (cos m + 1/(C-1))``, which at ``m = 0`` is NormFace's
    ``(C-1)/C * log((C-1) prob / (1-prob))``.
    """
    return math.log((num_classes - 1) * prob / (1.0 - prob)) / (math.cos(margin) + 1.0 / (num_classes - 1))


def binary_scale_lower_bound(prob: float, margin: float = 0.0) -> float:
    """The same bound for one attribute of the multi-label extension (a sigmoid on ``s cos(theta_k + m)``).

    At best the feature sits on ``+-W_k``, so ``sigmoid(s cos m) >= prob`` needs ``s >= logit(prob) / cos m``.
    """
    return math.log(prob / (1.0 - prob)) / math.cos(margin)


def adacos_fixed_scale(num_classes: int) -> float:
    """AdaCos's fixed scale ``sqrt(2) * log(C - 1)``."""
    return math.sqrt(2.0) * math.log(num_classes - 1)


def confident_angle_deg(num_classes: int, scale: float, margin: float, prob: float = 0.99) -> float | None:
    """Largest angle from its class weight at which a sample still gets target probability ``prob``.

    With the other ``C-1`` class weights at 90 degrees (cos = 0: unrelated classes in a high-dimensional space,
    and every class at initialisation), ``p = e^{s cos(theta+m)} / (e^{s cos(theta+m)} + C - 1)``, so
    ``p >= prob`` iff ``theta <= arccos(log((C-1) prob / (1-prob)) / s) - m``. ``None`` when no angle reaches it.
    The larger this angle, the earlier the loss saturates (little pull towards the class weight); the smaller,
    the longer every sample, real or fake, keeps a gradient.
    """
    need = math.log((num_classes - 1) * prob / (1.0 - prob)) / scale
    if need > 1.0 or math.acos(need) < margin:
        return None
    return math.degrees(math.acos(need) - margin)


def confident_angle_binary_deg(scale: float, margin: float, prob: float = 0.99) -> float | None:
    """:func:`confident_angle_deg` for one multi-label attribute, a sigmoid on ``s cos(theta + m)``."""
    need = math.log(prob / (1.0 - prob)) / scale
    if need > 1.0 or math.acos(need) < margin:
        return None
    return math.degrees(math.acos(need) - margin)


def far_fake_loss(num_classes: int, scale: float, margin: float) -> float:
    """Loss of a sample orthogonal to every class weight (cos = 0 everywhere): ``log(1 + (C-1) e^{s sin m})``."""
    return math.log1p((num_classes - 1) * math.exp(scale * math.sin(margin)))


class Model(nn.Module):
    """MLP feature extractor + either an AAM head or a biased linear softmax head."""

    def __init__(self, config: Config, feat_dim: int, hidden: int) -> None:
        super().__init__()
        self.config = config
        self.features = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, feat_dim))
        self.head: nn.Module
        if config.kind == "aam":
            if config.scale is None or config.margin is None:
                raise ValueError(f"an AAM config needs a scale and a margin; got {config}")
            self.head = rankplug.AAMAuxClassifier(feat_dim, NUM_CLASSES, scale=config.scale, margin=config.margin)
        else:
            self.head = nn.Linear(feat_dim, NUM_CLASSES)

    def class_weight(self) -> Tensor:
        return self.head.weight.detach()

    def logits(self, feats: Tensor) -> Tensor:
        return self.head(feats)

    def loss(self, feats: Tensor, labels: Tensor) -> Tensor:
        """Mean loss over the batch: ``head.loss(head(features), labels)`` or cross entropy."""
        if isinstance(self.head, rankplug.AAMAuxClassifier):
            return self.head.loss(self.head(feats), labels)
        return nn.functional.cross_entropy(self.head(feats), labels)


def per_sample_feature_grad(model: Model, feats: Tensor, labels: Tensor) -> tuple[float, float, float]:
    """Mean per-sample ``||d loss_i / d feature_i||``, the same times ``||feature_i||`` (scale-free), mean loss."""
    f = feats.detach().clone().requires_grad_(True)
    loss = model.loss(f, labels)
    # The mean loss times N is the sum of per-sample losses; feature i only enters loss i.
    (grad,) = torch.autograd.grad(loss * f.shape[0], f)
    norms = grad.norm(dim=1)
    return float(norms.mean()), float((norms * f.detach().norm(dim=1)).mean()), float(loss.detach())


def per_sample_pixel_grad(model: Model, images: Tensor, labels: Tensor) -> float:
    """Mean per-sample ``||d loss_i / d image_i||`` through the (eval-mode) feature extractor."""
    x = images.detach().clone().requires_grad_(True)
    loss = model.loss(model.features(x), labels)
    (grad,) = torch.autograd.grad(loss * x.shape[0], x)
    return float(grad.norm(dim=1).mean())


def angles_deg(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise angles in degrees between the rows of ``a`` and ``b``, in float64."""
    cos = nn.functional.normalize(a.double(), dim=1) @ nn.functional.normalize(b.double(), dim=1).T
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def wrong_labels(labels: Tensor, generator: torch.Generator) -> Tensor:
    shift = torch.randint(1, NUM_CLASSES, labels.shape, generator=generator)
    return (labels + shift) % NUM_CLASSES


def run_one(config: Config, seed: int, data: Data, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = Model(config, args.feat_dim, args.hidden)
    probe = torch.Generator().manual_seed(10_000 + seed)
    wrong = wrong_labels(data.y_test, probe)
    noise = torch.rand(args.noise_samples, 64, generator=probe)
    noise_labels = torch.randint(0, NUM_CLASSES, (args.noise_samples,), generator=probe)

    model.eval()
    with torch.no_grad():
        feats0 = model.features(data.x_test)
    grad_init, grad_init_unit, loss_init = per_sample_feature_grad(model, feats0, data.y_test)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(seed)
    n = data.x_train.shape[0]
    nonfinite = False
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(n, generator=order)
        for start in range(0, n, args.batch_size):
            idx = perm[start : start + args.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(model.features(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            if not torch.isfinite(loss) or any(
                p.grad is not None and not bool(torch.isfinite(p.grad).all()) for p in model.parameters()
            ):
                nonfinite = True
            optimizer.step()

    model.eval()
    with torch.no_grad():
        feats = model.features(data.x_test)
        noise_feats = model.features(noise)
        pred = model.logits(feats).argmax(dim=1)
    acc = float((pred == data.y_test).double().mean())
    weight = model.class_weight()
    feat_to_class = angles_deg(feats, weight)  # (N, C)
    own = feat_to_class.gather(1, data.y_test.unsqueeze(1)).squeeze(1)
    others = feat_to_class.scatter(1, data.y_test.unsqueeze(1), float("inf")).min(dim=1).values
    between = angles_deg(weight, weight)
    between.fill_diagonal_(float("inf"))

    grad_end, grad_end_unit, loss_end = per_sample_feature_grad(model, feats, data.y_test)
    grad_wrong, grad_wrong_unit, loss_wrong = per_sample_feature_grad(model, feats, wrong)
    grad_noise, grad_noise_unit, loss_noise = per_sample_feature_grad(model, noise_feats, noise_labels)
    pixgrad_wrong = per_sample_pixel_grad(model, data.x_test, wrong)
    values = [grad_init, grad_end, grad_wrong, grad_noise, loss_init, loss_end, loss_wrong, loss_noise]
    nonfinite = nonfinite or not all(math.isfinite(v) for v in values)
    return {
        "seed": seed,
        "acc": acc,
        "intra_deg": float(own.mean()),
        "gap_deg": float((others - own).mean()),
        "inter_min_deg": float(between.min()),
        "nonfinite": nonfinite,
        "loss_init": loss_init,
        "loss_end": loss_end,
        "loss_end_wrong": loss_wrong,
        "loss_end_noise": loss_noise,
        "grad_init": grad_init,
        "grad_end": grad_end,
        "grad_end_wrong": grad_wrong,
        "grad_end_noise": grad_noise,
        "grad_init_unit": grad_init_unit,
        "grad_end_unit": grad_end_unit,
        "grad_end_wrong_unit": grad_wrong_unit,
        "grad_end_noise_unit": grad_noise_unit,
        "pixgrad_end_wrong": pixgrad_wrong,
        "feat_norm_end": float(feats.norm(dim=1).mean()),
    }


METRICS = (
    "acc",
    "intra_deg",
    "gap_deg",
    "inter_min_deg",
    "loss_init",
    "loss_end",
    "loss_end_wrong",
    "loss_end_noise",
    "grad_init",
    "grad_end",
    "grad_end_wrong",
    "grad_end_noise",
    "grad_init_unit",
    "grad_end_unit",
    "grad_end_wrong_unit",
    "grad_end_noise_unit",
    "pixgrad_end_wrong",
    "feat_norm_end",
)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"nonfinite_any": any(r["nonfinite"] for r in runs)}
    for key in METRICS:
        vals = [r[key] for r in runs]
        out[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    return out


def format_table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'config':<16} {'test acc %':>13} {'intra deg':>11} {'gap deg':>8} {'inter min':>9} {'NaN':>4} "
        f"{'loss0':>6} {'|g|0':>6} {'|g|end':>7} {'|g|wrong':>8} {'L wrong':>8} {'|g|noise':>8} {'L noise':>8}"
    )
    lines = [header, "-" * len(header)]
    for entry in results:
        s = entry["summary"]
        acc = f"{100 * s['acc']['mean']:6.2f}±{100 * s['acc']['std']:.2f}"
        intra = f"{s['intra_deg']['mean']:5.1f}±{s['intra_deg']['std']:.1f}"
        lines.append(
            f"{entry['config']:<16} {acc:>13} {intra:>11} {s['gap_deg']['mean']:8.1f} "
            f"{s['inter_min_deg']['mean']:9.1f} {'yes' if s['nonfinite_any'] else 'no':>4} "
            f"{s['loss_init']['mean']:6.2f} {s['grad_init']['mean']:6.2f} {s['grad_end']['mean']:7.3f} "
            f"{s['grad_end_wrong']['mean']:8.2f} {s['loss_end_wrong']['mean']:8.2f} "
            f"{s['grad_end_noise']['mean']:8.2f} {s['loss_end_noise']['mean']:8.2f}"
        )
    return "\n".join(lines)


def bounds_table(class_counts: list[int], probs: list[float], margins: list[float]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"C": "binary", **{f"p={p:g},m={m:g}": binary_scale_lower_bound(p, m) for p in probs for m in margins}}
    ]
    for c in class_counts:
        row: dict[str, Any] = {"C": c, "adacos_fixed": adacos_fixed_scale(c)}
        for p in probs:
            for m in margins:
                row[f"p={p:g},m={m:g}"] = scale_lower_bound(c, p, m)
        rows.append(row)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[4.0, 8.0, 16.0, 32.0, 64.0])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--feat-dim", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--noise-samples", type=int, default=512)
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true", help="skip the nn.Linear + cross-entropy baseline")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "aam_defaults.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cpu_started = time.process_time()
    data = load_data(args.split_seed, args.test_fraction)

    bounds = bounds_table([5, 8, 10, 100, 85742], [0.9, 0.99], [0.0, 0.3, 0.5])
    print("Lower bound on s (features on their class weight, weights a regular simplex; 'binary' is one")
    print("multi-label attribute, a sigmoid on s cos(theta + m)). C=85742 is ArcFace's MS1MV2.")
    for row in bounds:
        cells = "  ".join(f"{k}: {v:6.2f}" for k, v in row.items() if k != "C")
        print(f"  C={row['C']!s:<6} {cells}")
    print()

    angle_cases: list[tuple[str, float, float]] = [
        (f"s={sc:g} m={mg:g}", sc, mg) for sc in args.scales for mg in (0.0, 0.3, 0.5)
    ]
    angle_classes = [5, 8, 10, 100, 85742]
    angles: list[dict[str, Any]] = []
    print("theta_99: largest angle (deg) from the class weight with p >= 0.99, other classes at 90 deg ('-': never)")
    print(f"  {'':<14} {'binary':>7} " + " ".join(f"{'C=' + str(c):>8}" for c in angle_classes))
    for label, sc, mg in angle_cases:
        row = {"scale": sc, "margin": mg, "binary": confident_angle_binary_deg(sc, mg)}
        row.update({str(c): confident_angle_deg(c, sc, mg) for c in angle_classes})
        angles.append(row)
        cells = " ".join(f"{'-' if row[str(c)] is None else format(row[str(c)], '.1f'):>8}" for c in angle_classes)
        binary = "-" if row["binary"] is None else format(row["binary"], ".1f")
        print(f"  {label:<14} {binary:>7} {cells}")
    print()

    configs: list[Config] = []
    if not args.no_baseline:
        configs.append(Config("linear"))
    configs += [Config("aam", s, m) for s in args.scales for m in args.margins]

    results: list[dict[str, Any]] = []
    for config in configs:
        t0, c0 = time.perf_counter(), time.process_time()
        runs = [run_one(config, seed, data, args) for seed in args.seeds]
        entry = {
            "config": config.name,
            "kind": config.kind,
            "scale": config.scale,
            "margin": config.margin,
            "far_fake_loss_formula": (
                far_fake_loss(NUM_CLASSES, config.scale, config.margin) if config.kind == "aam" else None
            ),
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "runs": runs,
            "summary": summarise(runs),
        }
        results.append(entry)
        print(f"done {config.name:<16} in {entry['seconds']:.1f}s (CPU {entry['cpu_seconds']:.1f}s)", flush=True)

    elapsed = time.perf_counter() - started
    cpu_elapsed = time.process_time() - cpu_started
    table = format_table(results)
    print()
    print(table)
    # CPU time is summed over threads; on a shared machine it is a steadier measure than wall time.
    print(f"\nTotal wall time: {elapsed:.1f}s; CPU time (all threads): {cpu_elapsed:.1f}s")

    payload = {
        "command": " ".join(["python", *map(shlex.quote, [os.path.relpath(sys.argv[0]), *sys.argv[1:]])]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "sklearn_version": __import__("sklearn").__version__,
        "python_version": platform.python_version(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "data": {
            "dataset": "sklearn.datasets.load_digits",
            "n_train": int(data.x_train.shape[0]),
            "n_test": int(data.x_test.shape[0]),
        },
        "wall_seconds": elapsed,
        "cpu_seconds": cpu_elapsed,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "scale_lower_bounds": bounds,
        "confident_angle_99_deg": angles,
        "table": table,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
