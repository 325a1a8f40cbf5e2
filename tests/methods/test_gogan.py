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


def test_a_constant_on_the_current_critic_satisfies_eq_4_unless_scores_are_anchored(scores):
    real, fake, prev = scores
    plain = StageObjective("gogan", margin=1.0, rank_weight=0.5)
    anchored = StageObjective("gogan", margin=1.0, rank_weight=0.5, anchor_scores=True)
    anchored.set_markers(float(prev.max()) + 0.5, float(prev.min()))
    shift = 100.0  # the shift solution: every score of D_i raised together
    assert plain.critic_loss(real + shift, fake + shift, prev, stage=2) < plain.critic_loss(real, fake, prev, stage=2)
    before = anchored.critic_loss(real, fake, prev, stage=2)
    assert torch.allclose(anchored.critic_loss(real + shift, fake + shift, prev, stage=2), before, atol=1e-4)
    assert anchored.hinge_activity(real + shift, fake + shift, prev, stage=2) == anchored.hinge_activity(
        real, fake, prev, stage=2
    )


def test_anchored_scores_put_the_real_mean_at_m_high():
    real, fake = torch.tensor([3.0, 5.0], requires_grad=True), torch.tensor([0.0, 0.0])
    prev = torch.tensor([1.0, 1.0])
    objective = StageObjective("gogan", margin=1.0, disc_weight=0.0, rank_weight=1.0, anchor_scores=True)
    objective.set_markers(2.0, 0.0)  # anchored real scores: 1 and 3; rank hinge [1 + 2 - s]_+ = 2 and 0
    loss = objective.critic_loss(real, fake, prev, stage=2)
    assert loss.item() == pytest.approx(1.0)
    (grad,) = torch.autograd.grad(loss, real)
    assert grad.tolist() == pytest.approx([-0.25, 0.25])  # only the spread moves: the mean is anchored
    assert objective.needs_markers(2) and not objective.needs_markers(1)
    assert not StageObjective("gogan").needs_markers(2)


def test_anchored_scores_need_markers_and_a_flag(scores):
    real, fake, prev = scores
    with pytest.raises(RuntimeError, match="set_markers"):
        StageObjective("gogan", anchor_scores=True).critic_loss(real, fake, prev, stage=2)
    with pytest.raises(TypeError, match="anchor_scores must be true or false"):
        StageObjective("gogan", anchor_scores=1)
