"""RankGAN: from stage 2 the current critic ranks G_i(z) below G_{i-1}(z) (Eq. 4) with the clamp of Eq. 6."""

from __future__ import annotations

import pytest
import torch

from rankplug import functional as F
from rankplug.methods import RankGAN, StageObjective


def test_rankgan_stage_two_is_eq_4_and_6(scores):
    real, fake, prev = scores
    objective = StageObjective("rankgan", clamp_weight=100.0)
    objective.set_markers(0.5, -0.5)
    expected = F.stage_rank_loss(real, fake, prev, m_high=0.5, m_low=-0.5, clamp_weight=100.0)
    assert torch.equal(objective.critic_loss(real, fake, prev, stage=2), expected)
    assert torch.equal(objective.generator_loss(fake, real=real, stage=2), F.stage_rank_generator_loss(real, fake))
    assert objective.markers == (0.5, -0.5)


def test_stage_two_is_a_loop_over_the_batch(scores):
    real, fake, prev = scores
    objective = RankGAN(clamp_weight=2.0)
    objective.set_markers(0.5, -0.5)
    per_sample = [
        max(f - p, 0.0) + 2.0 * (max(0.5 - r, 0.0) + max(p + 0.5, 0.0))
        for r, f, p in zip(real.tolist(), fake.tolist(), prev.tolist())
    ]
    got = objective.critic_loss(real, fake, prev, stage=2).item()
    assert got == pytest.approx(sum(per_sample) / len(per_sample), rel=1e-6)


def test_the_markers_live_in_the_rank_loss():
    objective = RankGAN()
    assert objective.markers is None and objective.needs_markers(2) and not objective.needs_markers(1)
    objective.rank_loss.set_markers(1.0, 0.0)  # a host that keeps its own StageRankLoss sets them there
    assert objective.markers == (1.0, 0.0)


def test_hinge_activity_counts_active_samples():
    real, fake = torch.tensor([2.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 0.5, -2.0, 0.0])
    prev = torch.tensor([-2.0, 0.0, -3.0, 1.0])
    objective = StageObjective("rankgan", margin=1.0)
    objective.set_markers(1.0, -1.0)
    activity = objective.hinge_activity(real, fake, prev, stage=2)
    assert activity == {"rank": 0.75, "clamp": 0.75}  # rank: f > p for 0, 1, 2; clamp: 1, 2, 3 (real < 1 or p > -1)
    assert objective.hinge_report(real, fake, prev, stage=2) == {"active_rank": 0.75, "active_clamp": 0.75}
