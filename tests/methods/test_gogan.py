"""GoGAN: from stage 2 the frozen previous critic's scores set a doubled margin (Eq. 3-5); WGAN's generator loss."""

from __future__ import annotations

import pytest
import torch

from rankplug import functional as F
from rankplug.methods import StageObjective


def test_gogan_stage_two_is_eq_3_to_5(scores):
    real, fake, prev = scores
    objective = StageObjective("gogan", margin=0.3, disc_weight=2.0, rank_weight=0.5)
    expected = F.gogan_rank_loss(real, fake, prev, margin=0.3, disc_weight=2.0, rank_weight=0.5)
    assert torch.equal(objective.critic_loss(real, fake, prev, stage=2), expected)
    assert torch.equal(objective.generator_loss(fake, stage=2), -fake.mean())


def test_stage_two_is_a_loop_over_the_batch(scores):
    real, fake, prev = scores
    objective = StageObjective("gogan", margin=0.3, disc_weight=2.0, rank_weight=0.5)
    per_sample = [
        2.0 * max(f + 0.3 - r, 0.0) + 0.5 * max(p + 0.6 - r, 0.0)
        for r, f, p in zip(real.tolist(), fake.tolist(), prev.tolist())
    ]
    got = objective.critic_loss(real, fake, prev, stage=2).item()
    assert got == pytest.approx(sum(per_sample) / len(per_sample), rel=1e-6)


def test_hinge_activity_counts_active_samples():
    real, fake = torch.tensor([2.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 0.5, -2.0, 0.0])
    prev = torch.tensor([-2.0, 0.0, -3.0, 1.0])
    gogan = StageObjective("gogan", margin=1.0).hinge_activity(real, fake, prev, stage=2)
    assert gogan == {"gogan_disc": 0.5, "gogan_rank": 0.5}
