"""WGAN-GP: mean D(G(z)) - mean D(x) with the gradient penalty, at every stage; no hinges."""

from __future__ import annotations

import torch

from rankplug.methods import StageObjective


def test_wgan_gp_is_the_score_difference(scores):
    real, fake, _ = scores
    wgan = StageObjective("wgan-gp")
    assert torch.allclose(wgan.critic_loss(real, fake, stage=3), fake.mean() - real.mean())
    assert torch.equal(wgan.generator_loss(fake, stage=3), -fake.mean())
    assert wgan.penalised and wgan.hinge_activity(real, fake, stage=1) == {}
    assert wgan.hinge_report(real, fake, stage=1) == {}


def test_patch_scores_are_averaged_per_sample():
    real, fake = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    got = StageObjective("wgan-gp").critic_loss(real, fake, stage=1)
    assert torch.allclose(got, fake.flatten(1).mean(1).mean() - real.flatten(1).mean(1).mean())
