"""Stand-in for upstream ``torch_utils.misc``: the DDP gradient-sync switch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Run the body with DDP gradient all-reduce switched off unless ``sync``; plain modules are left alone."""
    if isinstance(module, torch.nn.parallel.DistributedDataParallel) and not sync:
        with module.no_sync():
            yield
    else:
        yield
