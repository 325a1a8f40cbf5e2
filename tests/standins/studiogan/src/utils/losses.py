"""Stand-in for upstream ``utils/losses.py``: the adversarial losses ``define_losses`` picks by name.

Each discriminator loss takes ``(d_logit_real, d_logit_fake, DDP)`` and each generator loss ``(d_logit_fake,
DDP)``, logits of shape ``(N,)``, and returns a scalar.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def d_vanilla(d_logit_real: torch.Tensor, d_logit_fake: torch.Tensor, DDP: bool) -> torch.Tensor:
    return F.softplus(-d_logit_real).mean() + F.softplus(d_logit_fake).mean()


def g_vanilla(d_logit_fake: torch.Tensor, DDP: bool) -> torch.Tensor:
    return F.softplus(-d_logit_fake).mean()


def d_hinge(d_logit_real: torch.Tensor, d_logit_fake: torch.Tensor, DDP: bool) -> torch.Tensor:
    return (1 - d_logit_real).clamp(min=0).mean() + (1 + d_logit_fake).clamp(min=0).mean()


def g_hinge(d_logit_fake: torch.Tensor, DDP: bool) -> torch.Tensor:
    return -d_logit_fake.mean()


def d_wasserstein(d_logit_real: torch.Tensor, d_logit_fake: torch.Tensor, DDP: bool) -> torch.Tensor:
    return d_logit_fake.mean() - d_logit_real.mean()


def g_wasserstein(d_logit_fake: torch.Tensor, DDP: bool) -> torch.Tensor:
    return -d_logit_fake.mean()


def cal_grad_penalty(
    real_images: torch.Tensor,
    real_labels: torch.Tensor,
    fake_images: torch.Tensor,
    discriminator: torch.nn.Module,
    device: torch.device,
) -> torch.Tensor:
    """WGAN-GP on per-sample interpolates, through the discriminator's ``"adv_output"``."""
    alpha = torch.rand(real_images.shape[0], 1, 1, 1, device=real_images.device)
    mixed = (alpha * real_images + (1 - alpha) * fake_images).detach().requires_grad_(True)
    scores = discriminator(mixed, real_labels)["adv_output"]
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()
