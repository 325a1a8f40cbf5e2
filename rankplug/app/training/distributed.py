"""Data parallelism under ``torchrun``: the process group, the rank's device, and gradient averaging.

``torchrun --nproc_per_node=N -m rankplug train ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
:func:`setup` then joins the group (NCCL on GPUs, gloo on CPUs) and each rank trains on its own shard of
batches. Gradients are averaged across ranks by :func:`average_gradients` after every backward pass, which
is what ``DistributedDataParallel`` computes, and which also covers the gradient penalty's double backward
(``DistributedDataParallel`` cannot: its reducer does not see ``torch.autograd.grad``). Rank 0 writes the run
directory; :class:`rankplug.StageManager` takes the markers over every rank's data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    """This process's place in the group: ``rank``, ``world`` size and its ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0


def setup(device: str) -> Context:
    """Join the ``torchrun`` group when ``WORLD_SIZE > 1``; the device is ``cuda:LOCAL_RANK`` for CUDA runs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    parsed = torch.device(device)
    if world <= 1:
        return Context(device=parsed)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if parsed.type == "cuda":
        parsed = torch.device("cuda", local)
        torch.cuda.set_device(parsed)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if parsed.type == "cuda" else "gloo")
    return Context(rank=dist.get_rank(), world=dist.get_world_size(), device=parsed)


def teardown(context: Context) -> None:
    """Leave the group (after a last barrier, so no rank exits while another still writes)."""
    if context.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast_parameters(module: nn.Module, context: Context) -> None:
    """Give every rank rank 0's parameters and buffers (identical starting points)."""
    if context.world == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def average_gradients(module: nn.Module, context: Context) -> None:
    """Average ``module``'s gradients over the ranks in place (one all-reduce of the flattened gradients)."""
    if context.world == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= context.world
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


__all__ = ["Context", "average_gradients", "broadcast_parameters", "setup", "teardown"]
