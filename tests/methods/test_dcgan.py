"""DCGAN: the non-saturating GAN loss on logits, with no gradient penalty and no hinges."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from rankplug.methods import StageObjective


def test_dcgan_is_the_non_saturating_loss(scores):
    real, fake, _ = scores
    dcgan = StageObjective("dcgan")
    assert torch.allclose(
        dcgan.critic_loss(real, fake, stage=1), nnf.softplus(-real).mean() + nnf.softplus(fake).mean()
    )
    assert torch.allclose(dcgan.generator_loss(fake, stage=1), nnf.softplus(-fake).mean())
    assert not dcgan.penalised and dcgan.hinge_activity(real, fake, stage=1) == {}


def test_dcgan_is_binary_cross_entropy_on_logits(scores):
    real, fake, _ = scores
    expected = nnf.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + nnf.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )
    assert torch.allclose(StageObjective("dcgan").critic_loss(real, fake, stage=2), expected)
