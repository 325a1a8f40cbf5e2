"""RankGAN's markers (Eq. 6) from the frozen previous stage over every rank, and the ``torch.distributed`` helpers
the stage code shares.

Without an initialised process group every helper is the single-process identity: rank 0 of a world of 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rankplug._validation import check_choice
from rankplug.stages.encoder import real_images
from rankplug.stages.frozen import FrozenStage, use_batch_statistics


def rank() -> int:
    """This process's rank under ``torch.distributed`` (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of ranks under ``torch.distributed`` (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_all(values: Tensor) -> Tensor:
    """Concatenate 1-D tensors of possibly different lengths from every rank (same result on every rank).

    Shape:
        - values: ``(N_r,)`` on rank ``r``. Output: ``(N_0 + N_1 + ...,)``, in rank order.
    """
    if world_size() == 1:
        return values
    length = torch.tensor([values.numel()], device=values.device, dtype=torch.long)
    lengths = [torch.zeros_like(length) for _ in range(world_size())]
    dist.all_gather(lengths, length)
    longest = int(max(int(n.item()) for n in lengths))
    padded = torch.zeros(longest, device=values.device, dtype=values.dtype)
    padded[: values.numel()] = values
    chunks = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(chunks, padded)
    return torch.cat([chunk[: int(n.item())] for chunk, n in zip(chunks, lengths)])


def broadcast_module(module: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers of ``module`` (a collective; nothing without one)."""
    if world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def marker_statistics(
    real_scores: Tensor,
    fake_scores: Tensor,
    *,
    statistic: Literal["mean", "median"] = "mean",
) -> tuple[float, float]:
    r"""``(m_high, m_low)`` of RankGAN Eq. 6 from per-sample scores, over every rank under ``torch.distributed``.

    .. math::
        m_{high} = \mathbb{E}[D_{i-1}(x)], \qquad m_{low} = \mathbb{E}[D_{i-1}(G_{i-1}(z))]

    Each rank passes its own scores (lengths may differ between ranks); every rank gets the statistic of the
    union. ``"median"`` is the usual median (the mean of the two middle values for an even count).

    Shape:
        - real_scores, fake_scores: ``(N,)`` per rank. Output: two floats.

    Example:
        >>> marker_statistics(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([-1.0, 0.0]), statistic="median")
        (2.0, -0.5)
    """
    statistic = check_choice(statistic, "statistic", ("mean", "median"))  # type: ignore[assignment]
    real = gather_all(real_scores.detach().flatten().double())
    fake = gather_all(fake_scores.detach().flatten().double())
    if real.numel() == 0 or fake.numel() == 0:
        raise ValueError("markers need at least one real and one fake score; got none")
    if statistic == "mean":
        return float(real.mean()), float(fake.mean())
    return float(torch.quantile(real, 0.5)), float(torch.quantile(fake, 0.5))


def previous_stage_scores(
    previous: FrozenStage,
    real_batches: Iterable[Any],
    latents: Callable[[Tensor], Tensor],
    scores_of: Callable[[Any], Tensor],
    *,
    device: torch.device,
    batch_statistics: bool = False,
) -> tuple[Tensor, Tensor]:
    """The frozen critic's per-sample scores ``D_{i-1}(x)`` on every real image of ``real_batches``, and
    ``D_{i-1}(G_{i-1}(z))`` on as many latents ``z = latents(x)``: what :func:`marker_statistics` summarises.

    ``scores_of`` turns the critic's output into per-sample scores; with ``batch_statistics`` the critic's BatchNorm
    layers normalise each batch with its own statistics (:func:`~rankplug.stages.use_batch_statistics`).

    Shape:
        - real_batches: ``x`` or ``(x, y, ...)`` with ``x`` ``(n, *image_shape)``, moved to ``device``. Output: two
          ``(N,)`` tensors, ``N`` the number of real images.
    """
    generator, critic = previous.generator, previous.discriminator
    real_scores, fake_scores = [], []
    with use_batch_statistics(critic) if batch_statistics else contextlib.nullcontext():
        for batch in real_batches:
            x = real_images(batch).to(device)
            z = latents(x)
            real_scores.append(scores_of(critic(x)))
            fake_scores.append(scores_of(critic(generator(z))))
    if not real_scores:
        raise ValueError("real_batches is empty; expected at least one batch")
    return torch.cat(real_scores), torch.cat(fake_scores)


__all__ = ["broadcast_module", "gather_all", "marker_statistics", "previous_stage_scores", "rank", "world_size"]
