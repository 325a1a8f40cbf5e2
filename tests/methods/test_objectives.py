"""StageObjective: the stage recipe of every variant equals the loss it names, and refuses a wrong call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

import rankplug
from rankplug import functional as F
from rankplug.objectives import VARIANTS, StageObjective, critic_judge

N = 16


@pytest.fixture
def scores():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(N, generator=g) for _ in range(3)]


@pytest.mark.parametrize(
    ("variant", "stage", "judge"),
    [
        ("rankgan", 1, None),
        ("rankgan", 2, "current"),
        ("rankgan", 5, "current"),
        ("gogan", 1, None),
        ("gogan", 3, "previous"),
        ("margin", 2, None),
        ("wgan-gp", 2, None),
        ("dcgan", 2, None),
        ("mbgan", 2, None),
    ],
)
def test_judge_per_variant_and_stage(variant, stage, judge):
    objective = StageObjective(variant)
    assert objective.judge(stage) == judge
    assert objective.needs_markers(stage) == (judge == "current")
    assert objective.staged == (variant in ("rankgan", "gogan"))


def test_stage_one_is_the_margin_loss_and_the_wgan_generator_loss(scores):
    real, fake, _ = scores
    for variant in ("rankgan", "gogan", "margin"):
        objective = StageObjective(variant, margin=0.7)
        assert torch.equal(objective.critic_loss(real, fake, stage=1), F.hinge_margin_loss(real, fake, margin=0.7))
        assert torch.equal(objective.generator_loss(fake, stage=1), -fake.mean())


def test_rankgan_stage_two_is_eq_4_and_6(scores):
    real, fake, prev = scores
    objective = StageObjective("rankgan", clamp_weight=100.0)
    objective.set_markers(0.5, -0.5)
    expected = F.stage_rank_loss(real, fake, prev, m_high=0.5, m_low=-0.5, clamp_weight=100.0)
    assert torch.equal(objective.critic_loss(real, fake, prev, stage=2), expected)
    assert torch.equal(objective.generator_loss(fake, real=real, stage=2), F.stage_rank_generator_loss(real, fake))
    assert objective.markers == (0.5, -0.5)


def test_gogan_stage_two_is_eq_3_to_5(scores):
    real, fake, prev = scores
    objective = StageObjective("gogan", margin=0.3, disc_weight=2.0, rank_weight=0.5)
    expected = F.gogan_rank_loss(real, fake, prev, margin=0.3, disc_weight=2.0, rank_weight=0.5)
    assert torch.equal(objective.critic_loss(real, fake, prev, stage=2), expected)
    assert torch.equal(objective.generator_loss(fake, stage=2), -fake.mean())


def test_single_stage_variants(scores):
    real, fake, _ = scores
    wgan = StageObjective("wgan-gp")
    assert torch.allclose(wgan.critic_loss(real, fake, stage=3), fake.mean() - real.mean())
    dcgan = StageObjective("dcgan")
    assert torch.allclose(
        dcgan.critic_loss(real, fake, stage=1), nnf.softplus(-real).mean() + nnf.softplus(fake).mean()
    )
    assert torch.allclose(dcgan.generator_loss(fake, stage=1), nnf.softplus(-fake).mean())
    assert not dcgan.penalised and wgan.penalised


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


def test_penalty_is_eq_5_with_the_weight():
    critic = torch.nn.Linear(3, 1)
    real, fake, a = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4)
    objective = StageObjective("rankgan", gp_weight=3.0)
    torch.manual_seed(0)
    got = objective.penalty(critic, real, fake)
    torch.manual_seed(0)
    assert torch.equal(got, F.gradient_penalty(critic, real, fake, weight=3.0))
    del a


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda o, r, f, p: o.critic_loss(r, f, p, stage=1), r"prev_fake for rankgan at stage 1: expected none"),
        (lambda o, r, f, p: o.critic_loss(r, f, stage=2), r"expected the current critic's output on G_\{i-1\}\(z\)"),
        (lambda o, r, f, p: o.generator_loss(f, stage=2), "needs real"),
        (lambda o, r, f, p: o.critic_loss(r, f, stage=0), "stage must be an int >= 1; got 0"),
    ],
)
def test_wrong_calls_are_clear_errors(scores, call, message):
    objective = StageObjective("rankgan")
    objective.set_markers(1.0, 0.0)
    with pytest.raises(ValueError, match=message):
        call(objective, *scores)


def test_bad_settings():
    with pytest.raises(ValueError, match="variant must be one of 'rankgan'"):
        StageObjective("lsgan")
    with pytest.raises(ValueError, match=r"margin must be >= 0; got -1\.0"):
        StageObjective("margin", margin=-1.0)
    with pytest.raises(ValueError, match="the markers m_high and m_low are not set"):
        StageObjective("rankgan").critic_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), stage=2)
    with pytest.raises(ValueError, match="mbgan's critic loss needs positive"):
        StageObjective("mbgan").critic_loss(torch.zeros(2, 3), torch.zeros(2, 3), stage=1)


def test_hinge_activity_counts_active_samples():
    real, fake = torch.tensor([2.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 0.5, -2.0, 0.0])
    objective = StageObjective("rankgan", margin=1.0)
    # margin hinge fake + 1 - real > 0: samples 1 and 3 (and 2 is -1 < 0, 0 is -1 < 0)
    assert objective.hinge_activity(real, fake, stage=1) == {"margin": 0.5}
    objective.set_markers(1.0, -1.0)
    prev = torch.tensor([-2.0, 0.0, -3.0, 1.0])
    activity = objective.hinge_activity(real, fake, prev, stage=2)
    assert activity == {"rank": 0.75, "clamp": 0.75}  # rank: f > p for 0, 1, 2; clamp: 1, 2, 3 (real < 1 or p > -1)
    gogan = StageObjective("gogan", margin=1.0).hinge_activity(real, fake, prev, stage=2)
    assert gogan == {"gogan_disc": 0.5, "gogan_rank": 0.5}
    assert StageObjective("wgan-gp").hinge_activity(real, fake, stage=1) == {}


def test_critic_judge_picks_the_network():
    current, previous = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    assert critic_judge(StageObjective("rankgan"), 2, current, previous) is current
    assert critic_judge(StageObjective("gogan"), 2, current, previous) is previous
    assert critic_judge(StageObjective("gogan"), 1, current, previous) is None
    with pytest.raises(ValueError, match="needs the frozen previous critic"):
        critic_judge(StageObjective("gogan"), 2, current, None)


def test_exported_and_every_variant_constructs():
    assert rankplug.StageObjective is StageObjective
    assert {StageObjective(v).variant for v in VARIANTS} == set(VARIANTS)
