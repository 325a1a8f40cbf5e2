"""MBGAN: the triplet critic loss with the data-dependent margin (Eq. 1 + 4), Eq. 2 for the generator, the
distances as the ladder, and the triplet hinge's activity and margin-to-distance ratio."""

from __future__ import annotations

import math

import pytest
import torch

from rankplug import functional as F
from rankplug.methods import MBGAN, StageObjective

N = 16

# A hand-made batch of four: the anchor at the origin; per sample the margin h (alpha 1, fake images at h, the
# positive images at 0), the positive and the fake embedding, and what Eq. 1's hinge holds.
#   sample  h   positive  fake     h + d(x_i, x_j) - d(x_i, G(z))
#   0       1   (0, 1)    (3, 0)   1 + 1 - 3 = -1   inactive
#   1       2   (0, 0)    (1, 0)   2 + 0 - 1 =  1   active
#   2       0   (0, 2)    (0, -2)  0 + 2 - 2 =  0   inactive (a hinge at 0 is not active)
#   3       1   (1, 0)    (0, 0)   1 + 1 - 0 =  2   active
MARGINS = torch.tensor([1.0, 2.0, 0.0, 1.0])
ANCHOR = torch.zeros(4, 2)
POSITIVE = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
FAKE = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
IMAGES = {"positive_images": torch.zeros(4, 1, 1, 2), "fake_images": MARGINS.view(4, 1, 1, 1).expand(4, 1, 1, 2)}


def test_mbgan_is_the_triplet_loss_of_eq_1_2_4():
    g = torch.Generator().manual_seed(1)
    anchor, positive, fake = (torch.randn(N, 8, generator=g) for _ in range(3))
    images = [torch.rand(N, 1, 4, 4, generator=g) for _ in range(2)]
    objective = StageObjective("mbgan", alpha=2.0, margin_norm="sum")
    got = objective.critic_loss(
        anchor, fake, positive=positive, positive_images=images[0], fake_images=images[1], stage=1
    )
    expected = F.triplet_metric_discriminator_loss(
        anchor, positive, fake, positive_images=images[0], fake_images=images[1], alpha=2.0, margin_norm="sum"
    )
    assert torch.equal(got, expected)
    assert torch.equal(
        objective.generator_loss(fake, real=positive, stage=1), F.triplet_metric_generator_loss(positive, fake)
    )
    assert objective.embeds and not objective.penalised
    assert objective.penalty(None, images[0], images[1]).item() == 0.0


def test_the_hand_made_batch_loss():
    loss = MBGAN(alpha=1.0).critic_loss(ANCHOR, FAKE, positive=POSITIVE, stage=1, **IMAGES)
    assert loss.item() == pytest.approx((0 + 1 + 0 + 2) / 4)


def test_hinge_activity_and_margin_ratio_on_the_hand_made_batch():
    objective = MBGAN(alpha=1.0)
    activity = objective.hinge_activity(ANCHOR, FAKE, positive=POSITIVE, stage=1, **IMAGES)
    assert activity == {"triplet": 0.5}  # samples 1 and 3
    report = objective.hinge_report(ANCHOR, FAKE, positive=POSITIVE, stage=1, **IMAGES)
    # mean margin (1 + 2 + 0 + 1) / 4 = 1 over the mean anchor-fake distance (3 + 1 + 2 + 0) / 4 = 1.5
    assert report == {"active_triplet": 0.5, "margin_ratio": pytest.approx(2 / 3)}


def test_the_margin_norm_and_alpha_scale_the_ratio():
    summed = MBGAN(alpha=3.0, margin_norm="sum").hinge_report(ANCHOR, FAKE, positive=POSITIVE, stage=1, **IMAGES)
    assert summed["margin_ratio"] == pytest.approx(3 * 2 * 2 / 3)  # two pixels summed, alpha 3
    assert summed["active_triplet"] == 0.75  # margins 6, 12, 0, 6: samples 0, 1 and 3 (and 2 at 0)


def test_hinge_activity_is_a_loop_over_the_batch():
    g = torch.Generator().manual_seed(2)
    anchor, positive, fake = (torch.randn(N, 4, generator=g) for _ in range(3))
    images = {
        "positive_images": torch.rand(N, 1, 3, 3, generator=g),
        "fake_images": torch.rand(N, 1, 3, 3, generator=g),
    }
    report = MBGAN(alpha=5.0).hinge_report(anchor, fake, positive=positive, stage=1, **images)
    active, margins, distances = 0, [], []
    for k in range(N):
        h = 5.0 * (images["positive_images"][k] - images["fake_images"][k]).abs().mean().item()
        to_positive, to_fake = (anchor[k] - positive[k]).norm().item(), (anchor[k] - fake[k]).norm().item()
        active += h + to_positive - to_fake > 0
        margins.append(h)
        distances.append(to_fake)
    assert report["active_triplet"] == active / N
    assert report["margin_ratio"] == pytest.approx(sum(margins) / sum(distances), rel=1e-5)


def test_a_fake_on_its_anchor_gives_an_infinite_ratio():
    report = MBGAN(alpha=1.0).hinge_report(
        ANCHOR, ANCHOR, positive=POSITIVE, positive_images=torch.zeros(4, 2), fake_images=torch.ones(4, 2), stage=1
    )
    assert report["active_triplet"] == 1.0 and math.isinf(report["margin_ratio"])


def test_the_ladder_is_the_negative_distance_to_the_anchor():
    real, fake = MBGAN().ladder_scores(ANCHOR, FAKE, positive=POSITIVE)
    assert torch.equal(real, -torch.tensor([1.0, 0.0, 2.0, 1.0])) and torch.equal(
        fake, -torch.tensor([3.0, 1.0, 2.0, 0.0])
    )
    assert torch.equal(MBGAN().ladder_scores(ANCHOR, FAKE)[0], torch.zeros(4))


@pytest.mark.parametrize("method", ["critic_loss", "hinge_activity", "hinge_report"])
def test_missing_inputs_are_clear_errors(method):
    with pytest.raises(ValueError, match=r"mbgan's .* needs positive, positive_images and fake_images"):
        getattr(StageObjective("mbgan"), method)(torch.zeros(2, 3), torch.zeros(2, 3), stage=1)
    with pytest.raises(ValueError, match="mbgan generator loss at stage 1 needs real"):
        StageObjective("mbgan").generator_loss(torch.zeros(2, 3), stage=1)
