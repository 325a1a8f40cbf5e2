"""MarginGAN, and stage 1 of RankGAN and GoGAN: the margin loss (RankGAN Eq. 3) and the WGAN generator loss."""

from __future__ import annotations

import pytest
import torch

from rankplug import functional as F
from rankplug.methods import StageObjective


@pytest.mark.parametrize("variant", ["rankgan", "gogan", "margin"])
def test_stage_one_is_the_margin_loss_and_the_wgan_generator_loss(scores, variant):
    real, fake, _ = scores
    objective = StageObjective(variant, margin=0.7)
    assert torch.equal(objective.critic_loss(real, fake, stage=1), F.hinge_margin_loss(real, fake, margin=0.7))
    assert torch.equal(objective.generator_loss(fake, stage=1), -fake.mean())


def test_margin_is_the_same_recipe_at_every_stage(scores):
    real, fake, prev = scores
    objective = StageObjective("margin", margin=0.7)
    assert torch.equal(objective.critic_loss(real, fake, stage=4), objective.critic_loss(real, fake, stage=1))
    with pytest.raises(ValueError, match="prev_fake for margin at stage 4: expected none"):
        objective.critic_loss(real, fake, prev, stage=4)


def test_margin_loss_is_a_loop_over_the_batch(scores):
    real, fake, _ = scores
    objective = StageObjective("margin", margin=0.3)
    expected = sum(max(f + 0.3 - r, 0.0) for r, f in zip(real.tolist(), fake.tolist())) / len(real)
    assert objective.critic_loss(real, fake, stage=1).item() == pytest.approx(expected, rel=1e-6)


def test_hinge_activity_counts_active_samples():
    real, fake = torch.tensor([2.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 0.5, -2.0, 0.0])
    # margin hinge fake + 1 - real > 0: samples 1 and 3 (and 2 is -1 < 0, 0 is -1 < 0)
    for variant in ("rankgan", "gogan", "margin"):
        assert StageObjective(variant, margin=1.0).hinge_activity(real, fake, stage=1) == {"margin": 0.5}
    report = StageObjective("margin", margin=1.0).hinge_report(real, fake, stage=1)
    assert report == {"active_margin": 0.5}
