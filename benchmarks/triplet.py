"""MBGAN's triplet critic loss against pytorch-metric-learning's TripletMarginLoss: speed and NaN-robustness.

Both losses get the same embeddings ``D(x_i), D(x_j), D(G(z))`` of shape ``(N, K)`` and the same ``N`` triplets
(anchor ``k``, positive ``k``, negative = fake ``k``):

- ``rankplug``: ``rankplug.functional.triplet_metric_discriminator_loss`` (MBGAN Eq. 1 with the detached
  data-dependent margin of Eq. 4, MATH §5), which also reads the images ``x_j`` and ``G(z)`` for the margin;
  ``TripletMetricDiscriminatorHead.discriminator_loss`` is one call to it;
- ``pml_triplet``: ``TripletMarginLoss(margin=1, distance=LpDistance(normalize_embeddings=False))`` with an
  explicit ``indices_tuple`` holding those ``N`` triplets (PML computes the full ``3N x 3N`` distance matrix and
  then picks the triplets' entries).

The NaN probe runs 10,000 adversarial triplets through a linear embedding head (``(N, F) -> (N, K)``) whose
inputs repeat so that embeddings coincide exactly (anchor = positive, anchor = fake, positive = fake, all three),
in float32 and under fp16 and bf16 autocast, and counts triplets whose input gradient holds a NaN or an infinity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import _common
from rankplug.functional import triplet_metric_discriminator_loss

NAME = "triplet"
ALPHA = 20.0
SHAPES = ((64, 500), (256, 500), (1024, 500))  # (N, K); the paper's K = 500
IMAGE_SHAPE = (3, 32, 32)
PML_MISSING = (
    "pytorch-metric-learning is not installed; the peer needs it: pip install pytorch-metric-learning "
    "(a benchmark-only dependency, not one of rankplug's)"
)

# A loss here: (anchor_emb, positive_emb, fake_emb, positive_images, fake_images) -> scalar.
TripletLoss = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def require_pml() -> Any:
    try:
        from pytorch_metric_learning import distances, losses
    except ImportError:
        raise SystemExit(PML_MISSING) from None
    return losses, distances


def rankplug_loss(
    anchor: Tensor, positive: Tensor, fake: Tensor, positive_images: Tensor, fake_images: Tensor
) -> Tensor:
    return triplet_metric_discriminator_loss(
        anchor, positive, fake, positive_images=positive_images, fake_images=fake_images, alpha=ALPHA
    )


def pml_loss() -> TripletLoss:
    """PML's TripletMarginLoss on exactly the ``N`` MBGAN triplets (a fixed margin: PML has no data-dependent one)."""
    losses, distances = require_pml()
    criterion = losses.TripletMarginLoss(margin=1.0, distance=distances.LpDistance(normalize_embeddings=False))

    def loss(anchor: Tensor, positive: Tensor, fake: Tensor, positive_images: Tensor, fake_images: Tensor) -> Tensor:
        n = anchor.shape[0]
        embeddings = torch.cat([anchor, positive, fake])
        labels = torch.cat([anchor.new_zeros(2 * n, dtype=torch.long), anchor.new_ones(n, dtype=torch.long)])
        index = torch.arange(n, device=anchor.device)
        return criterion(embeddings, labels, indices_tuple=(index, index + n, index + 2 * n))

    return loss


def naive_norm_loss(
    anchor: Tensor, positive: Tensor, fake: Tensor, positive_images: Tensor, fake_images: Tensor
) -> Tensor:
    """A deliberately unsafe reference: ``sqrt`` of the squared distance, whose derivative is infinite at 0.

    Not a peer: the tests use it to check that the probe finds non-finite gradients when they occur.
    """
    margin = ALPHA * (positive_images - fake_images).abs().flatten(1).mean(1).detach()
    d_ap = (anchor - positive).pow(2).sum(1).sqrt()
    d_af = (anchor - fake).pow(2).sum(1).sqrt()
    return torch.relu(margin + d_ap - d_af).mean()


def losses_available() -> dict[str, TripletLoss]:
    return {"rankplug": rankplug_loss, "pml_triplet": pml_loss()}


def _triplet_step(fn: TripletLoss, embeddings: Tensor, images: Tensor) -> Callable[[], Any]:
    def step() -> Any:
        loss = fn(embeddings[0], embeddings[1], embeddings[2], images[0], images[1])
        return torch.autograd.grad(loss, embeddings)

    return step


def measure_speed(
    shapes: Sequence[tuple[int, int]],
    loss_fns: dict[str, TripletLoss],
    device: torch.device,
    *,
    rounds: int,
    block_s: float,
) -> list[dict[str, Any]]:
    """Forward + backward seconds per call (gradient of the three embeddings), interleaved medians."""
    out = []
    for n, k in shapes:
        torch.manual_seed(0)
        embeddings = torch.randn(3, n, k, device=device, requires_grad=True)
        images = torch.rand(2, n, *IMAGE_SHAPE, device=device) * 2 - 1

        steps = {name: _triplet_step(fn, embeddings, images) for name, fn in loss_fns.items()}
        times = _common.interleaved_medians(steps, device, rounds=rounds, block_s=block_s)
        t = {name: v["median_s"] for name, v in times.items()}
        ratios = {f"rankplug_over_{name}": t["rankplug"] / t[name] for name in t if name != "rankplug"}
        out.append({"N": n, "K": k, "times": times, "ratios": ratios})
    return out


KINDS = ("anchor_eq_positive", "anchor_eq_fake", "positive_eq_fake", "all_equal")


def adversarial_inputs(kind: str, n: int, features: int, generator: torch.Generator) -> Tensor:
    """``(3, n, features)`` head inputs for (anchor, positive, fake) where the named pair is identical."""
    x = torch.randn(3, n, features, generator=generator) * torch.exp(
        torch.empty(1, n, 1).uniform_(-3, 3, generator=generator)
    )
    if kind == "anchor_eq_positive":
        x[1] = x[0]
    elif kind == "anchor_eq_fake":
        x[2] = x[0]
    elif kind == "positive_eq_fake":
        x[2] = x[1]
    elif kind == "all_equal":
        x[1] = x[0]
        x[2] = x[0]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return x


def nan_probe(
    loss_fns: dict[str, TripletLoss],
    device: torch.device,
    *,
    inputs: int = 10_000,
    features: int = 64,
    embed_dim: int = 128,
    batch: int = 250,
    precisions: Sequence[str] = _common.PRECISIONS,
) -> dict[str, Any]:
    """Non-finite input gradients of each loss over ``inputs`` adversarial triplets (kinds x precisions)."""
    cells = [(precision, kind) for precision in precisions for kind in KINDS]
    counts = _common.split_evenly(inputs, len(cells))
    report: dict[str, Any] = {}
    for name, fn in loss_fns.items():
        gen = torch.Generator().manual_seed(0)
        head = nn.Linear(features, embed_dim).to(device)
        with torch.no_grad():
            head.weight.copy_(torch.randn(embed_dim, features, generator=gen) / math.sqrt(features))
            head.bias.zero_()
        total = {"inputs": 0, "nonfinite_input_grads": 0, "nonfinite_head_grad_batches": 0, "batches": 0}
        total["nonfinite_losses"] = 0
        per_cell = {}
        for (precision, kind), count in zip(cells, counts):
            cell = {key: 0 for key in total}
            for size in _common.split_evenly(count, max(1, math.ceil(count / batch))):
                x = adversarial_inputs(kind, size, features, gen).to(device).requires_grad_(True)
                with _common.autocast_for(precision, device):
                    emb = head(x)  # (3, n, K), in the autocast dtype
                    loss = fn(emb[0], emb[1], emb[2], x[1].detach(), x[2].detach())
                grad_x, grad_w = torch.autograd.grad(loss.float(), [x, head.weight])
                cell["inputs"] += size
                cell["batches"] += 1
                cell["nonfinite_input_grads"] += _common.nonfinite_rows(grad_x.transpose(0, 1))
                cell["nonfinite_head_grad_batches"] += int(not bool(torch.isfinite(grad_w).all()))
                cell["nonfinite_losses"] += int(not bool(torch.isfinite(loss).all()))
            per_cell[f"{precision}/{kind}"] = cell
            for key in total:
                total[key] += cell[key]
        report[name] = {**total, "cells": per_cell}
    return report


SETTINGS = {
    "full": {"shapes": SHAPES, "rounds": 15, "block_s": 0.03, "probe_inputs": 10_000},
    "quick": {"shapes": ((64, 500), (256, 500)), "rounds": 3, "block_s": 0.005, "probe_inputs": 480},
}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    require_pml()
    device = _common.setup(args)
    machine = _common.machine_info(device)
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    settings.update(alpha=ALPHA, image_shape=IMAGE_SHAPE, quick=args.quick, probe_features=64, probe_K=128)
    fns = losses_available()
    speed = measure_speed(settings["shapes"], fns, device, rounds=settings["rounds"], block_s=settings["block_s"])
    print(
        _common.table(
            ["(N, K)", "rankplug ms", "PML TripletMarginLoss ms", "rankplug / PML"],
            [
                [
                    f"({e['N']}, {e['K']})",
                    1e3 * e["times"]["rankplug"]["median_s"],
                    1e3 * e["times"]["pml_triplet"]["median_s"],
                    e["ratios"]["rankplug_over_pml_triplet"],
                ]
                for e in speed
            ],
        )
    )
    # The naive sqrt reference shows that the probe does catch non-finite gradients when a loss has them.
    probe = nan_probe({**fns, "reference_naive_sqrt": naive_norm_loss}, device, inputs=settings["probe_inputs"])
    print(
        _common.table(
            ["loss", "triplets", "non-finite input grads", "non-finite head-grad batches", "non-finite losses"],
            [
                [
                    name,
                    v["inputs"],
                    v["nonfinite_input_grads"],
                    f"{v['nonfinite_head_grad_batches']} / {v['batches']}",
                    v["nonfinite_losses"],
                ]
                for name, v in probe.items()
            ],
        )
    )
    worst = max(e["ratios"]["rankplug_over_pml_triplet"] for e in speed)
    safe = probe["rankplug"]["nonfinite_input_grads"] == 0 and probe["rankplug"]["nonfinite_head_grad_batches"] == 0
    targets = {
        "vs_pml": {"target": 1.0, "worst": worst, "met": worst <= 1.0},
        "nan_probe": {"target": 0, "worst": probe["rankplug"]["nonfinite_input_grads"], "met": safe},
    }
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
