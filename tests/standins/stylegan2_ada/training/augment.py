"""Stand-in for upstream ``training.augment``: a differentiable augmentation pipe with a probability buffer ``p``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class AugmentPipe(nn.Module):
    """Per-sample x-flip, integer translation and brightness, each applied with probability ``p``.

    Accepts upstream's keyword settings (``xflip=1``, ``brightness=1``, ...) and ignores the ones it does not
    implement. Like upstream, gradients flow to the input images, so R1 can be taken through the pipe.
    """

    def __init__(self, xflip: float = 1, xint: float = 1, brightness: float = 1, **unused: Any) -> None:
        super().__init__()
        self.register_buffer("p", torch.ones([]))  # ADA adjusts this in place
        self.xflip, self.xint, self.brightness = float(xflip), float(xint), float(brightness)

    def forward(self, images: Tensor, debug_percentile: Tensor | None = None) -> Tensor:
        n = images.shape[0]
        p = self.p.to(images.dtype)

        def chosen(strength: float) -> Tensor:
            return (torch.rand(n, 1, 1, 1, device=images.device) < p * strength).to(images.dtype)

        if self.xflip > 0:
            mask = chosen(self.xflip)
            images = mask * images.flip(3) + (1 - mask) * images
        if self.xint > 0:
            mask = chosen(self.xint)
            shift = int(torch.randint(-2, 3, []))
            images = mask * images.roll(shift, dims=3) + (1 - mask) * images
        if self.brightness > 0:
            mask = chosen(self.brightness)
            images = images + mask * 0.2 * torch.randn(n, 1, 1, 1, device=images.device, dtype=images.dtype)
        return images
