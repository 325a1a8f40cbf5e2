"""Frozen copies of networks (maths §3): eval mode that survives a parent's ``.train()``, no gradients, and
BatchNorm statistics that never change; :class:`rankplug.StageManager` builds its stages from them.

:func:`freeze`, :func:`unwrap`, :func:`use_batch_statistics` and :class:`FrozenStage` are public through
:mod:`rankplug.stages`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def unwrap(module: nn.Module) -> nn.Module:
    """The user's module inside ``DistributedDataParallel``, ``DataParallel`` or ``torch.compile`` wrappers."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


class _StayInEval:
    """A frozen module's ``train``: a parent's ``.train(True)`` leaves BatchNorm statistics and dropout in eval mode.

    A small class rather than a closure, so frozen copies still deep-copy and pickle correctly.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        nn.Module.train(self.module, False)
        return self.module


class _NoGradForward:
    """A frozen module's ``forward``: the class's own forward under ``torch.no_grad()``."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return type(self.module).forward(self.module, *args, **kwargs)


def freeze_in_place(module: nn.Module) -> None:
    """Freeze ``module`` itself (what :func:`freeze` does to its copy): eval mode for good, no gradients."""
    for sub in module.modules():
        object.__setattr__(sub, "train", _StayInEval(sub))
        # Every submodule, not only the top: hosts call parts directly (StyleGAN's G.mapping, G.synthesis).
        object.__setattr__(sub, "forward", _NoGradForward(sub))
    nn.Module.train(module, False)
    for parameter in module.parameters():
        parameter.requires_grad_(False)


@contextlib.contextmanager
def use_batch_statistics(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module``'s BatchNorm layers on the statistics of each batch, leaving their running statistics alone.

    Inside the block a BatchNorm layer normalises with the batch's own mean and variance, as in train mode, but
    its running statistics are neither used nor updated (they are set aside and put back afterwards). Other
    layers keep their mode, so dropout stays off in a frozen copy.
    """
    saved = []
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.running_mean is not None:
            saved.append((sub, sub.running_mean, sub.running_var))
            sub.running_mean = None
            sub.running_var = None
    try:
        yield module
    finally:
        for sub, mean, var in saved:
            sub.running_mean = mean
            sub.running_var = var


def freeze(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` (unwrapped first).

    The copy is in eval mode and stays there when a parent calls ``.train()``; its parameters have
    ``requires_grad=False``; its forward, and that of every submodule, runs under ``torch.no_grad()``, so it
    builds no autograd graph and its BatchNorm running statistics never change. Updating ``module`` never
    changes the copy.
    """
    frozen = copy.deepcopy(unwrap(module))
    freeze_in_place(frozen)
    return frozen


@dataclass
class FrozenStage:
    """The frozen networks of one finished stage."""

    stage: int
    generator: nn.Module
    discriminator: nn.Module
    ema_generator: nn.Module | None = None

    def modules(self) -> dict[str, nn.Module]:
        out = {"generator": self.generator, "discriminator": self.discriminator}
        if self.ema_generator is not None:
            out["ema_generator"] = self.ema_generator
        return out


__all__ = ["FrozenStage", "freeze", "freeze_in_place", "unwrap", "use_batch_statistics"]
