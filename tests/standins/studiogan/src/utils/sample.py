"""Stand-in for upstream ``utils/sample.py``: latents, labels and the generator call of a training step."""

from __future__ import annotations

from typing import Any

import torch


def sample_zy(
    z_prior: str, batch_size: int, z_dim: int, num_classes: int, radius: Any, device: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    labels = torch.randint(num_classes, (batch_size,), device=device)
    if z_prior == "gaussian":
        zs = torch.randn(batch_size, z_dim, device=device)
    elif z_prior == "uniform":
        zs = torch.rand(batch_size, z_dim, device=device) * 2 - 1
    else:
        raise NotImplementedError(z_prior)
    zs_eps = zs + radius * torch.randn_like(zs) if isinstance(radius, float) and radius > 0 else None
    return zs, labels, zs_eps


def generate_images(
    z_prior: str,
    batch_size: int,
    z_dim: int,
    num_classes: int,
    radius: Any,
    generator: torch.nn.Module,
    device: Any,
    is_train: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, None, None, None, None]:
    """``(fake_images, fake_labels, fake_images_eps, trsp_cost, ws, info_discrete_c, info_conti_c)`` as upstream.

    The generator is called as ``generator(zs, labels, eval=not is_train)``, and a second time on the perturbed
    latents when ``radius`` > 0 (zCR).
    """
    zs, labels, zs_eps = sample_zy(z_prior, batch_size, z_dim, num_classes, radius, device)
    fake_images = generator(zs, labels, eval=not is_train)
    fake_images_eps = None if zs_eps is None else generator(zs_eps, labels, eval=not is_train)
    return fake_images, labels, fake_images_eps, None, None, None, None
