"""Stand-in for upstream ``training.networks``: tiny networks with upstream's names, signatures and shapes.

``Generator(z_dim, c_dim, w_dim, img_resolution, img_channels)`` has ``.mapping`` (``(z, c) -> ws`` of shape
``(N, num_ws, w_dim)``), ``.synthesis`` (``ws -> img`` of shape ``(N, img_channels, R, R)``) and ``num_ws``;
``Discriminator(c_dim, img_resolution, img_channels)`` maps ``(img, c)`` to ``(N, 1)``. The layers are plain
convolutions with per-channel style scales: enough for losses to train and for gradients to flow like upstream.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class MappingNetwork(nn.Module):
    """``z, c -> ws``, tracking the average ``w`` in the ``w_avg`` buffer during training as upstream does."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 2,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        self.embed = nn.Linear(c_dim, w_dim) if c_dim > 0 else None
        features = z_dim + (w_dim if c_dim > 0 else 0)
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            layers += [nn.Linear(features, w_dim), nn.LeakyReLU(0.2)]
            features = w_dim
        self.net = nn.Sequential(*layers)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: Tensor,
        c: Tensor,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        skip_w_avg_update: bool = False,
    ) -> Tensor:
        # Unit second moment per sample, like upstream's normalisation of z.
        x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        if self.embed is not None:
            y = self.embed(c.to(x.dtype))
            x = torch.cat([x, y * (y.square().mean(1, keepdim=True) + 1e-8).rsqrt()], dim=1)
        w = self.net(x)
        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            self.w_avg.copy_(torch.lerp(w.detach().mean(0), self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return w
        ws = w.unsqueeze(1).expand(-1, self.num_ws, -1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            truncated = torch.lerp(self.w_avg.expand_as(ws), ws, truncation_psi)
            ws = torch.cat([truncated[:, :cutoff], ws[:, cutoff:]], dim=1)
        return ws


class SynthesisNetwork(nn.Module):
    """``ws -> img``: a learned 4x4 constant, upsampled to ``img_resolution``; one ``w`` per layer plus toRGB."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channels: int = 16) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4; got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_layers = int(math.log2(img_resolution)) - 1  # 4x4, 8x8, ..., R x R
        self.num_ws = self.num_layers + 1  # one w per layer and one for toRGB
        self.const = nn.Parameter(torch.randn(channels, 4, 4))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(self.num_layers))
        self.styles = nn.ModuleList(nn.Linear(w_dim, channels) for _ in range(self.num_ws))
        self.noise_strength = nn.Parameter(torch.zeros(self.num_layers))
        self.to_rgb = nn.Conv2d(channels, img_channels, 1)

    def forward(self, ws: Tensor, noise_mode: str = "random", **block_kwargs: Any) -> Tensor:
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws has shape {tuple(ws.shape)}; expected (N, {self.num_ws}, {self.w_dim})")
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        for i, conv in enumerate(self.convs):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = conv(x) * (1 + self.styles[i](ws[:, i]))[:, :, None, None]
            if noise_mode == "random":
                x = x + torch.randn_like(x[:, :1]) * self.noise_strength[i]
            x = F.leaky_relu(x, 0.2)
        x = x * (1 + self.styles[-1](ws[:, -1]))[:, :, None, None]
        return self.to_rgb(x)


class Generator(nn.Module):
    """``G(z, c) -> img`` of shape ``(N, img_channels, img_resolution, img_resolution)``."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict[str, Any] | None = None,
        synthesis_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **(synthesis_kwargs or {}))
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws=self.num_ws, **(mapping_kwargs or {}))

    def forward(
        self,
        z: Tensor,
        c: Tensor,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        **synthesis_kwargs: Any,
    ) -> Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)


class Discriminator(nn.Module):
    """``D(img, c) -> (N, 1)`` logits; conditional by projection onto an embedding of ``c`` when ``c_dim > 0``."""

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, channels: int = 16) -> None:
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        layers: list[nn.Module] = [nn.Conv2d(img_channels, channels, 3, padding=1), nn.LeakyReLU(0.2)]
        resolution = img_resolution
        while resolution > 4:
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            resolution //= 2
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 16, channels), nn.LeakyReLU(0.2))
        self.out = nn.Linear(channels, 1)
        self.cmap = nn.Linear(c_dim, channels) if c_dim > 0 else None

    def forward(self, img: Tensor, c: Tensor, **block_kwargs: Any) -> Tensor:
        shape = (self.img_channels, self.img_resolution, self.img_resolution)
        if img.dim() != 4 or img.shape[1:] != shape:
            raise ValueError(f"img has shape {tuple(img.shape)}; expected (N, {', '.join(map(str, shape))})")
        h = self.features(img)
        logits = self.out(h)
        if self.cmap is not None:
            logits = logits + (h * self.cmap(c.to(h.dtype))).sum(1, keepdim=True) / math.sqrt(h.shape[1])
        return logits
