"""Stand-in for upstream ``utils/misc.py``: the helpers the worker and loader use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def peel_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DataParallel`` / ``DistributedDataParallel``."""
    if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return model.module
    return model


def toggle_grad(model: torch.nn.Module, grad: bool) -> None:
    for param in peel_model(model).parameters():
        param.requires_grad = grad


@contextlib.contextmanager
def dummy_context_mgr() -> Iterator[None]:
    yield


def untrack_bn_statistics(module: torch.nn.Module) -> None:
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        module.track_running_stats = False


def track_bn_statistics(module: torch.nn.Module) -> None:
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        module.track_running_stats = True
