"""Angular-margin loss: rankplug's AAMAuxClassifier against ArcFace peers, on speed and on NaN-robustness.

Forward plus backward time (gradients for the features and the class weights) of, on the same features, labels
and class weights:

- ``rankplug``: ``AAMAuxClassifier(d, C, scale=16, margin=0.3)``: ``head.loss(head(features), labels)``
  (label-geometry paper Eq. 7-8, MATH §6), plain torch ops differentiated by autograd;
- ``pml_arcface``: pytorch-metric-learning's ``ArcFaceLoss`` (margin in degrees: 0.3 rad), same ``W``;
- ``insightface_style``: a combined-margin loss ``cos(m1 theta + m2) - m3`` written for this benchmark (not
  insightface's code): ``theta = arccos(clamp(cos, -1, 1))`` for the target class, ArcFace's fallback
  ``cos(theta) - m2 sin(m2)`` past ``theta + m2 > pi``, scale, cross entropy; here ``m1 = 1, m2 = 0.3, m3 = 0``;
- ``linear_ce``: a bias-free ``nn.Linear`` plus cross entropy (the softmax head the margin replaces).

The **NaN probe** feeds 10,000 adversarial inputs to each loss and counts samples whose feature gradient holds a
NaN or an infinity (and batches whose weight gradient does): features equal to or opposite their class weight,
or another class's weight, at random scales; half the class weights are axis-aligned so that ``cos`` is exactly
+-1 after normalisation; each in float32 and under fp16 and bf16 autocast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rankplug
from benchmarks import _common

NAME = "aam"
SCALE, MARGIN = 16.0, 0.3
SHAPES = ((64, 512, 8), (256, 512, 100), (1024, 512, 1000))
TARGET_VS_PML = 1.0
PML_MISSING = (
    "pytorch-metric-learning is not installed; the peers need it: pip install pytorch-metric-learning "
    "(a benchmark-only dependency, not one of rankplug's)"
)


def require_pml() -> Any:
    """``pytorch_metric_learning.losses``, or a clear exit when it is missing."""
    try:
        from pytorch_metric_learning import losses
    except ImportError:
        raise SystemExit(PML_MISSING) from None
    return losses


class Peer(nn.Module):
    """A loss with class weights ``W`` of shape ``(C, d)``: ``forward(features, labels) -> scalar loss``."""

    def class_weight(self) -> Tensor:
        raise NotImplementedError

    def set_class_weight(self, weight: Tensor) -> None:
        with torch.no_grad():
            self.class_weight().copy_(weight.reshape(self.class_weight().shape))


class RankplugAAM(Peer):
    def __init__(self, d: int, num_classes: int) -> None:
        super().__init__()
        self.head = rankplug.AAMAuxClassifier(d, num_classes, scale=SCALE, margin=MARGIN)

    def class_weight(self) -> Tensor:
        return self.head.weight

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return self.head.loss(self.head(features), labels)


class PMLArcFace(Peer):
    def __init__(self, d: int, num_classes: int) -> None:
        super().__init__()
        losses = require_pml()
        self.loss = losses.ArcFaceLoss(num_classes, d, margin=math.degrees(MARGIN), scale=SCALE)

    def class_weight(self) -> Tensor:
        return self.loss.W  # PML stores W as (d, C)

    def set_class_weight(self, weight: Tensor) -> None:
        with torch.no_grad():
            self.loss.W.copy_(weight.t())

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return self.loss(features, labels)


class CombinedMarginLoss(Peer):
    """The combined margin ``s cos(m1 theta + m2) - s m3`` on the target class (ArcFace paper, Sec. 2.3).

    Written for this benchmark from the published formula, in the style of insightface's training code (cosines
    clamped to [-1, 1], the angle from ``arccos``). It is *not* NaN-safe: ``arccos`` has an infinite derivative
    at +-1, which is the point of the probe.
    """

    def __init__(self, d: int, num_classes: int, *, m1: float = 1.0, m2: float = MARGIN, m3: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, d))
        nn.init.xavier_uniform_(self.weight)
        self.m1, self.m2, self.m3 = m1, m2, m3

    def class_weight(self) -> Tensor:
        return self.weight

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        cosine = F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1)).float().clamp(-1, 1)
        index = labels.unsqueeze(1)
        target = cosine.gather(1, index)
        theta = torch.acos(target)
        margin = torch.cos(self.m1 * theta + self.m2) - self.m3
        # Past theta + m2 = pi the margin stops being monotone: ArcFace's linear fallback there.
        fallback = target - self.m2 * math.sin(self.m2)
        target_logit = torch.where(theta + self.m2 <= math.pi, margin, fallback)
        logits = cosine.scatter(1, index, target_logit) * SCALE
        return F.cross_entropy(logits, labels)


class LinearCE(Peer):
    def __init__(self, d: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, num_classes, bias=False)

    def class_weight(self) -> Tensor:
        return self.linear.weight

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(self.linear(features), labels)


class ArccosArcFace(Peer):
    """A deliberately unsafe reference: ``cos(arccos(cos) + m)`` with no clamp and no fallback.

    Not a peer: the tests use it to check that the probe does find non-finite gradients when they occur.
    """

    def __init__(self, d: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, d))
        nn.init.xavier_uniform_(self.weight)

    def class_weight(self) -> Tensor:
        return self.weight

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        cosine = F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1)).float()
        index = labels.unsqueeze(1)
        target = torch.cos(torch.acos(cosine.gather(1, index)) + MARGIN)
        return F.cross_entropy(cosine.scatter(1, index, target) * SCALE, labels)


PEERS: dict[str, type[Peer]] = {
    "rankplug": RankplugAAM,
    "pml_arcface": PMLArcFace,
    "insightface_style": CombinedMarginLoss,
    "linear_ce": LinearCE,
}


def make_peers(names: Sequence[str], d: int, num_classes: int, device: torch.device) -> dict[str, Peer]:
    """The named peers with one shared set of class weights."""
    weight = torch.empty(num_classes, d)
    nn.init.xavier_uniform_(weight)
    peers = {}
    for name in names:
        peer = PEERS[name](d, num_classes)
        peer.set_class_weight(weight)
        peers[name] = peer.to(device)
    return peers


def timing_step(peer: Peer, features: Tensor, labels: Tensor) -> Callable[[], Any]:
    params = [peer.class_weight()]

    def step() -> Any:
        return torch.autograd.grad(peer(features, labels), [features, *params])

    return step


def measure_speed(
    shapes: Sequence[tuple[int, int, int]],
    peers: Sequence[str],
    device: torch.device,
    *,
    rounds: int,
    block_s: float,
) -> list[dict[str, Any]]:
    """Forward + backward seconds per call of each peer at each ``(N, d, C)``, interleaved medians."""
    out = []
    for n, d, num_classes in shapes:
        torch.manual_seed(0)
        modules = make_peers(peers, d, num_classes, device)
        features = torch.randn(n, d, device=device, requires_grad=True)
        labels = torch.randint(num_classes, (n,), device=device)
        steps = {name: timing_step(module, features, labels) for name, module in modules.items()}
        times = _common.interleaved_medians(steps, device, rounds=rounds, block_s=block_s)
        entry: dict[str, Any] = {"N": n, "d": d, "C": num_classes, "times": times}
        t = {name: v["median_s"] for name, v in times.items()}
        ratios = {}
        for peer in ("pml_arcface", "linear_ce", "insightface_style"):
            if "rankplug" in t and peer in t:
                ratios[f"rankplug_over_{peer}"] = t["rankplug"] / t[peer]
        entry["ratios"] = ratios
        out.append(entry)
    return out


# ------------------------------------------------------------------------------------------------- NaN probe
KINDS = ("equal", "opposite", "equal_other", "opposite_other")


def adversarial_weights(num_classes: int, d: int, generator: torch.Generator) -> Tensor:
    """Class weights whose first half is axis-aligned (normalisation is exact, so cos is exactly +-1)."""
    weight = torch.randn(num_classes, d, generator=generator)
    aligned = min(num_classes // 2 + num_classes % 2, d)
    weight[:aligned] = 0.0
    signs = torch.randint(0, 2, (aligned,), generator=generator).float() * 2 - 1
    scales = torch.exp(torch.empty(aligned).uniform_(-2, 2, generator=generator))
    weight[torch.arange(aligned), torch.arange(aligned)] = signs * scales
    return weight


def adversarial_batch(kind: str, weight: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Features equal or opposite to their own class weight (``equal``, ``opposite``) or to another class's."""
    num_classes = weight.shape[0]
    labels = torch.randint(num_classes, (n,), generator=generator)
    source = labels
    if kind.endswith("_other"):
        source = (labels + torch.randint(1, max(num_classes, 2), (n,), generator=generator)) % num_classes
    sign = -1.0 if kind.startswith("opposite") else 1.0
    scales = torch.exp(torch.empty(n, 1).uniform_(-4, 4, generator=generator))  # 0.02 .. 55
    return sign * scales * weight[source], labels


def nan_probe(
    peer_factories: dict[str, Callable[[int, int], Peer]],
    device: torch.device,
    *,
    inputs: int = 10_000,
    d: int = 512,
    num_classes: int = 100,
    batch: int = 250,
    precisions: Sequence[str] = _common.PRECISIONS,
) -> dict[str, Any]:
    """Non-finite gradients of each loss over ``inputs`` adversarial samples (split over kinds and precisions).

    Returns per loss: ``inputs``, ``nonfinite_feature_grads`` (samples whose feature gradient holds a NaN or an
    infinity), ``nonfinite_weight_grad_batches`` / ``batches``, ``nonfinite_losses``, and the same per cell.
    """
    cells = [(precision, kind) for precision in precisions for kind in KINDS]
    counts = _common.split_evenly(inputs, len(cells))
    report: dict[str, Any] = {}
    for name, factory in peer_factories.items():
        gen = torch.Generator().manual_seed(0)  # every loss sees the same inputs
        weight = adversarial_weights(num_classes, d, gen)
        peer = factory(d, num_classes)
        peer.set_class_weight(weight)
        peer = peer.to(device)
        total = {"inputs": 0, "nonfinite_feature_grads": 0, "nonfinite_weight_grad_batches": 0, "batches": 0}
        total["nonfinite_losses"] = 0
        per_cell = {}
        for (precision, kind), count in zip(cells, counts):
            cell = {"inputs": 0, "nonfinite_feature_grads": 0, "nonfinite_weight_grad_batches": 0, "batches": 0}
            cell["nonfinite_losses"] = 0
            for size in _common.split_evenly(count, max(1, math.ceil(count / batch))):
                features, labels = adversarial_batch(kind, weight, size, gen)
                features = features.to(device).requires_grad_(True)
                labels = labels.to(device)
                params = [peer.class_weight()]
                with _common.autocast_for(precision, device):
                    loss = peer(features, labels)
                grad_features, grad_weight = torch.autograd.grad(loss.float(), [features, *params], allow_unused=True)
                cell["inputs"] += size
                cell["batches"] += 1
                cell["nonfinite_feature_grads"] += _common.nonfinite_rows(grad_features)
                weight_bad = grad_weight is not None and not bool(torch.isfinite(grad_weight).all())
                cell["nonfinite_weight_grad_batches"] += int(weight_bad)
                cell["nonfinite_losses"] += int(not bool(torch.isfinite(loss).all()))
            per_cell[f"{precision}/{kind}"] = cell
            for key in total:
                total[key] += cell[key]
        report[name] = {**total, "cells": per_cell}
    return report


SETTINGS = {
    "full": {"shapes": SHAPES, "rounds": 21, "block_s": 0.03, "probe_inputs": 10_000},
    "quick": {"shapes": ((64, 512, 8), (256, 512, 100)), "rounds": 3, "block_s": 0.005, "probe_inputs": 600},
}


def profile(shapes: Sequence[tuple[int, int, int]], device: torch.device, peers: Sequence[str]) -> None:
    """Print ``torch.profiler`` tables of each peer's forward + backward at each shape (evidence, not timing)."""
    for n, d, num_classes in shapes:
        torch.manual_seed(0)
        modules = make_peers(peers, d, num_classes, device)
        features = torch.randn(n, d, device=device, requires_grad=True)
        labels = torch.randint(num_classes, (n,), device=device)
        for name, module in modules.items():
            out = _common.profile_table(timing_step(module, features, labels), calls=3 if n >= 1024 else 50)
            print(
                f"\n### {name} at (N, d, C) = ({n}, {d}, {num_classes}): {out['aten_calls_per_call']:.0f} ATen calls "
                f"and {out['self_cpu_ms_per_call']:.3f} ms self CPU per forward + backward (under the profiler)"
            )
            print(out["table"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--profile", action="store_true", help="print torch.profiler tables instead of timing")
    args = p.parse_args(argv)
    if args.profile:
        device = _common.setup(args)
        profile(SHAPES, device, ["rankplug", "linear_ce"])
        return {}
    require_pml()
    device = _common.setup(args)
    machine = _common.machine_info(device)
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    settings.update(scale=SCALE, margin=MARGIN, quick=args.quick, probe_d=512, probe_C=100)
    peers = list(PEERS)
    speed = measure_speed(settings["shapes"], peers, device, rounds=settings["rounds"], block_s=settings["block_s"])
    rows = []
    for entry in speed:
        t = {name: 1e3 * v["median_s"] for name, v in entry["times"].items()}
        r = entry["ratios"]
        rows.append(
            [
                f"({entry['N']}, {entry['d']}, {entry['C']})",
                t["rankplug"],
                t["pml_arcface"],
                t["insightface_style"],
                t["linear_ce"],
                r["rankplug_over_pml_arcface"],
                r["rankplug_over_linear_ce"],
            ]
        )
    print(
        _common.table(
            [
                "(N, d, C)",
                "rankplug ms",
                "PML ArcFace ms",
                "insightface-style ms",
                "linear+CE ms",
                "rankplug / PML",
                "rankplug / linear+CE",
            ],
            rows,
        )
    )
    # The unsafe arccos reference shows that the probe does catch non-finite gradients when a loss has them.
    probe = nan_probe(
        {**{name: PEERS[name] for name in peers}, "reference_unsafe_arccos": ArccosArcFace},
        device,
        inputs=settings["probe_inputs"],
        d=settings["probe_d"],
        num_classes=settings["probe_C"],
    )
    print(
        _common.table(
            ["loss", "inputs", "non-finite feature grads", "non-finite weight-grad batches", "non-finite losses"],
            [
                [
                    name,
                    v["inputs"],
                    v["nonfinite_feature_grads"],
                    f"{v['nonfinite_weight_grad_batches']} / {v['batches']}",
                    v["nonfinite_losses"],
                ]
                for name, v in probe.items()
            ],
        )
    )
    worst_pml = max(e["ratios"]["rankplug_over_pml_arcface"] for e in speed)
    targets = {
        "vs_pml": {"target": TARGET_VS_PML, "worst": worst_pml, "met": worst_pml <= TARGET_VS_PML},
        "nan_probe": {"target": 0, "worst": probe["rankplug"]["nonfinite_feature_grads"]},
    }
    targets["nan_probe"]["met"] = (
        probe["rankplug"]["nonfinite_feature_grads"] == 0 and probe["rankplug"]["nonfinite_weight_grad_batches"] == 0
    )
    for key, value in targets.items():
        print(
            f"target {key}: {'met' if value['met'] else 'NOT met'} (worst {value['worst']:.3g}, target {value['target']})"
        )
    path = _common.write_record(
        _common.default_output(NAME, args, device),
        NAME,
        argv,
        machine,
        settings,
        {"speed": speed, "nan_probe": probe, "targets": targets},
    )
    print(f"wrote {path}")
    return {"speed": speed, "nan_probe": probe, "targets": targets, "path": str(path)}


if __name__ == "__main__":
    main()
