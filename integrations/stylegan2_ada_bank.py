"""The previous-stage bank of :class:`rankplug.integrations.stylegan2_ada.RankGANLoss`: rows of host generator draws.

With ``bank_size = K > 0`` (opt-in; the bank itself, its filling, refreshing and drawing, is
:class:`rankplug.stages.PreviousStageBank`) the loss draws, at the first ``Dmain`` / ``Dboth``, ``K`` rows of
everything a host generator call draws, ``[z | c | z2 | cutoff]``: the latent ``z``, a label ``c`` (the data
set's label of a random image, as the host draws ``gen_c``; needs ``marker_dataset`` when ``c_dim > 0``), and
the style-mixing draw (with probability ``style_mixing_prob`` a second latent ``z2`` and the layer ``cutoff``
from which its ws take over; ``cutoff = 0`` for no mixing). The host draws the mixing per batch, a bank per row,
with the same per-sample distribution. The loss keeps the frozen ``G_{i-1}``'s images on the rows. Each
``Dmain`` round then takes its ``z``, ``c`` and mixing from ``N`` drawn rows instead of the host's ``gen_z`` /
``gen_c`` (the same distributions), feeds them to the live ``G_i`` and pairs the result with the kept
``G_{i-1}`` images, so each pair of RankGAN Eq. 4 / GoGAN Eq. 4 stays exact and ``G_{i-1}`` no longer runs per
step.

Two things differ from the per-step path, both only in how often a draw is reused: a kept image carries the
synthesis noise drawn at fill time, and the critic sees ``G_{i-1}`` on ``K`` rows until a refresh
(``bank_refresh_every`` draws; ``None``: once per run). Every critic input still goes through ``augment_pipe``
at use, at the current ADA probability, so the bank keeps un-augmented images; only GoGAN without an
``augment_pipe`` keeps the frozen critic's scores instead (``keep="scores"``, which also saves ``D_{i-1}``'s
forward).

**Memory**: ``4 K (2 z_dim + c_dim + 1 + C R^2)`` bytes on ``bank_device`` (``4 K (2 z_dim + c_dim + 2)`` for
scores): 3.0 GiB for ``K = 4096`` at 256x256 RGB with ``z_dim = 512``, so keep large banks on the CPU
(``bank_device="cpu"``; each draw copies ``N`` rows over). The host's snapshots do not hold the bank: a resumed
run fills a new one. Under DDP each rank fills its own from its own random state. Cost:
``docs/integrations_stylegan2_ada.md`` (``python -m benchmarks.stylegan2_ada_bank``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from rankplug.integrations.stylegan2_ada_host import DatasetSpec, DDPSync, dataset_labels


def bank_labels(spec: DatasetSpec | None, count: int, c_dim: int, device: torch.device) -> Tensor:
    """``count`` labels for the rows, the host's way (the label of a random image of ``spec``, the loss's
    ``marker_dataset``), on this rank's random state; empty labels for unconditional data (``c_dim = 0``).

    Example:
        >>> bank_labels(None, 3, 0, torch.device("cpu")).shape
        torch.Size([3, 0])
    """
    if c_dim == 0:
        return torch.zeros(count, 0, device=device)
    if spec is None:
        raise ValueError(
            "bank_size with conditional data (c_dim > 0) draws the bank's labels from the data set: pass "
            "marker_dataset (the launcher passes the training set)"
        )
    return dataset_labels(spec, count, c_dim, device)


def split_rows(rows: Tensor, c_dim: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A bank row's ``(z, c, z2, cutoff)``: ``[z | c | z2 | cutoff]``, cutoff 0 for no style mixing.

    Shape:
        - rows: ``(K, 2 z_dim + c_dim + 1)``. Output: ``(K, z_dim)``, ``(K, c_dim)``, ``(K, z_dim)``, ``(K,)`` long.

    Example:
        >>> z, c, z2, cutoff = split_rows(torch.tensor([[1.0, 2.0, 0.0, 3.0, 4.0, 2.0]]), c_dim=1)
        >>> z.tolist(), c.tolist(), z2.tolist(), cutoff.tolist()
        ([[1.0, 2.0]], [[0.0]], [[3.0, 4.0]], [2])
    """
    z_dim = (rows.shape[1] - c_dim - 1) // 2
    z, c, z2 = rows[:, :z_dim], rows[:, z_dim : z_dim + c_dim], rows[:, z_dim + c_dim : -1]
    return z, c, z2, rows[:, -1].round().long()


def mixed_ws(mapping: Callable[..., Tensor], z: Tensor, c: Tensor, z2: Tensor, cutoff: Tensor) -> Tensor:
    """The host's style mixing, per row: from layer ``cutoff`` on (``cutoff > 0``), the ws of ``z2``.

    Shape:
        - z, z2: ``(K, z_dim)``; c: ``(K, c_dim)``; cutoff: ``(K,)``. Output: ``(K, num_ws, w_dim)``.
    """
    ws = mapping(z, c)
    mixed = cutoff > 0
    if bool(mixed.any()):
        ws2 = mapping(z2, c, skip_w_avg_update=True)
        layers = torch.arange(ws.shape[1], device=ws.device)
        take = mixed[:, None] & (layers[None, :] >= cutoff[:, None])
        ws = torch.where(take[:, :, None], ws2, ws)
    return ws


def style_layers(generator: nn.Module, z: Tensor, c: Tensor) -> int:
    """How many ws ``generator``'s synthesis takes: 1 for a generator without the host's mapping / synthesis split.

    The host's ``G`` has ``num_ws``; otherwise its mapping runs once on ``(z[:1], c[:1])`` to tell.
    """
    mapping = getattr(generator, "mapping", None)
    if mapping is None or getattr(generator, "synthesis", None) is None:
        return 1  # no style mixing to draw
    num_ws = getattr(generator, "num_ws", None)
    if isinstance(num_ws, int):
        return num_ws
    with torch.no_grad():
        return int(mapping(z[:1], c[:1]).shape[1])


def make_rows(z: Tensor, c: Tensor, z2: Tensor, *, num_ws: int, style_mixing_prob: float) -> Tensor:
    """Rows ``[z | c | z2 | cutoff]`` from drawn latents and labels, with the host's style-mixing draw per row.

    With probability ``style_mixing_prob`` (and ``num_ws >= 2``) a row's ``cutoff`` is a layer in
    ``[1, num_ws)``, else 0.

    Example:
        >>> rows = make_rows(torch.randn(3, 4), torch.zeros(3, 0), torch.randn(3, 4), num_ws=1, style_mixing_prob=0.9)
        >>> rows.shape, rows[:, -1].tolist()  # one ws: nothing to mix
        (torch.Size([3, 9]), [0.0, 0.0, 0.0])
    """
    count, device = z.shape[0], z.device
    cutoff = torch.zeros(count, device=device)
    if style_mixing_prob > 0 and num_ws >= 2:  # the host's draw, per row instead of per batch
        mixed = torch.rand(count, device=device) < style_mixing_prob
        cutoff = torch.where(mixed, torch.randint(1, num_ws, (count,), device=device), 0).float()
    return torch.cat([z, c, z2, cutoff[:, None]], dim=1)


def draw_rows(
    generator: nn.Module,
    count: int,
    z_dim: int,
    c_dim: int,
    *,
    labels_from: DatasetSpec | None,
    style_mixing_prob: float,
    device: torch.device,
) -> Tensor:
    """``count`` fresh rows ``[z | c | z2 | cutoff]`` for ``generator`` (its ``num_ws`` bounds the cutoff), the
    labels from the data set ``labels_from`` (:func:`bank_labels`), on ``device`` and the global random state.

    Example:
        >>> draw_rows(torch.nn.Linear(4, 4), 5, 4, 0, labels_from=None, style_mixing_prob=0.9, device="cpu").shape
        torch.Size([5, 9])
    """
    z, z2 = torch.randn(count, z_dim, device=device), torch.randn(count, z_dim, device=device)
    c = bank_labels(labels_from, count, c_dim, device)
    return make_rows(z, c, z2, num_ws=style_layers(generator, z, c), style_mixing_prob=style_mixing_prob)


def frozen_generator(generator: nn.Module, z: Tensor, c: Tensor, z2: Tensor, cutoff: Tensor) -> Tensor:
    """A frozen generator (``G_{i-1}``) under no_grad, with per-row style mixing when it has the host's split.

    Shape:
        - z, z2: ``(N, z_dim)``; c: ``(N, c_dim)``; cutoff: ``(N,)``, 0 for no mixing. Output: its images.
    """
    with torch.no_grad():
        mapping, synthesis = getattr(generator, "mapping", None), getattr(generator, "synthesis", None)
        if mapping is None or synthesis is None:
            return generator(z, c)  # a generator without the host's split: no style mixing to repeat
        return synthesis(mixed_ws(mapping, z, c, z2, cutoff))


def live_generator_on_rows(
    G_mapping: Callable[..., Tensor], G_synthesis: Callable[..., Tensor], rows: Tensor, c_dim: int, ddp_sync: DDPSync
) -> Tensor:
    """The live (possibly DDP-wrapped) generator on bank rows, under no_grad and without gradient sync.

    In a ``D`` phase ``G`` does not train: the rows' own ``z``, ``c`` and style mixing, run the host's way.
    """
    z, c, z2, cutoff = split_rows(rows, c_dim)
    with torch.no_grad():
        with ddp_sync(G_mapping, False):
            ws = mixed_ws(G_mapping, z, c, z2, cutoff)
        with ddp_sync(G_synthesis, False):
            return G_synthesis(ws)


__all__ = [
    "bank_labels",
    "frozen_generator",
    "live_generator_on_rows",
    "make_rows",
    "mixed_ws",
    "split_rows",
    "style_layers",
]
