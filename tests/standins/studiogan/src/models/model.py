"""Stand-in for upstream ``models``: tiny conditional networks with upstream's call signatures.

``Generator(z, label, shared_label=None, eval=False)`` returns images ``(N, C, R, R)`` in ``[-1, 1]`` (with
BatchNorm, as StudioGAN's generators have); ``Discriminator(x, label, eval=False, adc_fake=False)`` returns a dict
with ``"h"`` (features), ``"adv_output"`` ``(N,)`` (projection-conditioned) and ``"label"``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, z_dim: int, img_size: int, img_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.z_dim, self.num_classes, self.img_size = z_dim, num_classes, img_size
        self.embed = nn.Embedding(num_classes, z_dim)
        self.start = img_size // 4
        self.linear = nn.Linear(z_dim, width * self.start * self.start)
        self.net = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(width, img_channels, 3, padding=1),
            nn.Tanh(),
        )  # fmt: skip
        self.width = width

    def forward(
        self, z: torch.Tensor, label: torch.Tensor, shared_label: Any = None, eval: bool = False
    ) -> torch.Tensor:
        h = self.linear(z * (1 + self.embed(label)))
        return self.net(h.view(z.shape[0], self.width, self.start, self.start))


class Discriminator(nn.Module):
    def __init__(self, img_size: int, img_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(img_channels, width, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
            nn.Linear(width * (img_size // 4) ** 2, width), nn.LeakyReLU(0.2),
        )  # fmt: skip
        self.linear1 = nn.Linear(width, 1)
        self.embedding = nn.Embedding(num_classes, width)

    def forward(
        self, x: torch.Tensor, label: torch.Tensor, eval: bool = False, adc_fake: bool = False
    ) -> dict[str, Any]:
        h = self.features(x)
        adv_output = self.linear1(h).squeeze(1) + (self.embedding(label) * h).sum(1) / h.shape[1] ** 0.5
        return {"h": h, "adv_output": adv_output, "label": label}
