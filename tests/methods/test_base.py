"""StageObjective, the base of every method: the name picks the class, the class facts, the judge, the penalty and
the checks every method shares, and the registry."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import rankplug
from rankplug import functional as F
from rankplug.methods import (
    DCGAN,
    MBGAN,
    METHODS,
    STAGED,
    VARIANTS,
    WGANGP,
    GoGAN,
    MarginGAN,
    RankGAN,
    StageObjective,
    critic_judge,
    register,
)

CLASSES = {"rankgan": RankGAN, "gogan": GoGAN, "margin": MarginGAN, "wgan-gp": WGANGP, "dcgan": DCGAN, "mbgan": MBGAN}


def test_the_name_builds_the_registered_class_and_every_method_constructs():
    assert rankplug.StageObjective is StageObjective
    assert VARIANTS == ("rankgan", "gogan", "margin", "wgan-gp", "dcgan", "mbgan") == tuple(METHODS)
    assert STAGED == ("rankgan", "gogan")
    for name, cls in CLASSES.items():
        objective = StageObjective(name)
        assert type(objective) is cls and objective.variant == name and isinstance(objective, StageObjective)
        assert type(cls()) is cls and type(cls(name)) is cls  # the subclass itself, with or without its name


@pytest.mark.parametrize(
    ("variant", "staged", "ranking_judge", "embeds", "has_penalty", "accepts_class_head"),
    [
        ("rankgan", True, "current", False, True, False),
        ("gogan", True, "previous", False, True, False),
        ("margin", False, None, False, True, True),
        ("wgan-gp", False, None, False, True, True),
        ("dcgan", False, None, False, False, True),
        ("mbgan", False, None, True, False, False),
    ],
)
def test_class_facts(variant, staged, ranking_judge, embeds, has_penalty, accepts_class_head):
    method = METHODS[variant]
    facts = (method.staged, method.ranking_judge, method.embeds, method.has_penalty, method.accepts_class_head)
    assert facts == (staged, ranking_judge, embeds, has_penalty, accepts_class_head)
    objective = method(gp_weight=1.0)
    assert objective.staged == staged and objective.embeds == embeds and objective.penalised == has_penalty
    assert not method(gp_weight=0.0).penalised


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


def test_penalty_is_eq_5_with_the_weight():
    critic = torch.nn.Linear(3, 1)
    real, fake = torch.randn(4, 3), torch.randn(4, 3)
    objective = StageObjective("rankgan", gp_weight=3.0)
    torch.manual_seed(0)
    got = objective.penalty(critic, real, fake)
    torch.manual_seed(0)
    assert torch.equal(got, F.gradient_penalty(critic, real, fake, weight=3.0))
    zero = StageObjective("dcgan", gp_weight=3.0).penalty(critic, real, fake)
    assert zero.item() == 0.0 and zero.dtype == torch.float32


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda o, r, f, p: o.critic_loss(r, f, p, stage=1), r"prev_fake for rankgan at stage 1: expected none"),
        (lambda o, r, f, p: o.critic_loss(r, f, stage=2), r"expected the current critic's output on G_\{i-1\}\(z\)"),
        (lambda o, r, f, p: o.generator_loss(f, stage=2), "needs real"),
        (lambda o, r, f, p: o.critic_loss(r, f, stage=0), "stage must be an int >= 1; got 0"),
        (lambda o, r, f, p: o.generator_loss(f, stage=0), "stage must be an int >= 1; got 0"),
        (lambda o, r, f, p: o.hinge_activity(r, f, stage=-1), "stage must be an int >= 1; got -1"),
    ],
)
def test_wrong_calls_are_clear_errors(scores, call, message):
    objective = StageObjective("rankgan")
    objective.set_markers(1.0, 0.0)
    with pytest.raises(ValueError, match=message):
        call(objective, *scores)


def test_bad_settings():
    with pytest.raises(ValueError, match="variant must be one of 'rankgan', 'gogan', 'margin'"):
        StageObjective("lsgan")
    with pytest.raises(ValueError, match="variant must be one of 'rankgan'"):
        StageObjective()
    with pytest.raises(ValueError, match=r"variant of RankGAN is 'rankgan' \(or leave it out\); got 'gogan'"):
        RankGAN("gogan")
    with pytest.raises(ValueError, match=r"margin must be >= 0; got -1\.0"):
        StageObjective("margin", margin=-1.0)
    with pytest.raises(ValueError, match=r"alpha must be >= 0; got -2\.0"):  # checked for every method
        StageObjective("wgan-gp", alpha=-2.0)
    with pytest.raises(ValueError, match="margin_norm must be one of 'mean', 'sum'; got 'max'"):
        StageObjective("mbgan", margin_norm="max")
    with pytest.raises(TypeError, match="unexpected keyword argument 'lr'"):
        StageObjective("rankgan", lr=1.0)
    with pytest.raises(ValueError, match="the markers m_high and m_low are not set"):
        StageObjective("rankgan").critic_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), stage=2)


def test_markers_are_checked_and_kept_by_every_method():
    for variant in VARIANTS:
        objective = StageObjective(variant)
        assert objective.markers is None
        objective.set_markers(2.0, -1.0)
        assert objective.markers == (2.0, -1.0)
        with pytest.raises(ValueError, match="m_low"):
            objective.set_markers(-1.0, 2.0)


def test_critic_judge_picks_the_network():
    current, previous = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    assert critic_judge(StageObjective("rankgan"), 2, current, previous) is current
    assert critic_judge(StageObjective("gogan"), 2, current, previous) is previous
    assert critic_judge(StageObjective("gogan"), 1, current, previous) is None
    assert critic_judge(StageObjective("margin"), 3, current, previous) is None
    with pytest.raises(ValueError, match="needs the frozen previous critic"):
        critic_judge(StageObjective("gogan"), 2, current, None)


def test_repr_names_the_settings_the_method_reads_and_rebuilds_it():
    objective = StageObjective("rankgan", clamp_weight=3.0, alpha=5.0)
    assert (
        repr(objective) == "StageObjective('rankgan', margin=1.0, clamp_weight=3.0, gp_weight=10.0, clamp_on='sample')"
    )
    assert repr(StageObjective("dcgan")) == "StageObjective('dcgan')"
    for variant in VARIANTS:
        objective = StageObjective(variant, margin=0.5, gp_weight=2.0, alpha=3.0, rank_weight=0.25)
        rebuilt = eval(repr(objective), {"StageObjective": StageObjective})
        assert type(rebuilt) is type(objective) and repr(rebuilt) == repr(objective)


def test_copies_keep_the_class_the_settings_and_the_markers():
    objective = StageObjective("rankgan", clamp_weight=3.0)
    objective.set_markers(1.0, 0.5)
    for copied in (copy.deepcopy(objective), pickle.loads(pickle.dumps(objective))):
        assert type(copied) is RankGAN and copied.settings == objective.settings and copied.markers == (1.0, 0.5)


class _Toy(StageObjective):
    variant = "toy"

    def _critic_loss(self, real, fake, prev_fake, *, stage, **inputs):
        return fake.mean() - real.mean()

    def _generator_loss(self, fake, *, stage, real):
        return -fake.mean()


def test_register_adds_a_method_and_refuses_a_bad_one():
    try:
        assert register(_Toy) is _Toy and METHODS["toy"] is _Toy
        assert register(_Toy) is _Toy  # again: the same class, nothing changes
        toy = StageObjective("toy", gp_weight=1.0)
        assert type(toy) is _Toy and toy.penalised and toy.hinge_activity(torch.zeros(2), torch.zeros(2), stage=1) == {}
        assert toy.critic_loss(torch.ones(2), torch.zeros(2), stage=1).item() == -1.0
    finally:
        del METHODS["toy"]

    class Taken(_Toy):
        variant = "rankgan"

    class Unnamed(_Toy):
        variant = ""

    class HalfStaged(_Toy):
        staged = True

    with pytest.raises(ValueError, match="variant 'rankgan' is already registered, by RankGAN"):
        register(Taken)
    with pytest.raises(ValueError, match=r"Unnamed\.variant must be a non-empty name"):
        register(Unnamed)
    with pytest.raises(ValueError, match="a staged method names its ranking_judge"):
        register(HalfStaged)
    with pytest.raises(TypeError, match="method must be a subclass of StageObjective"):
        register(StageObjective)
    with pytest.raises(TypeError, match="method must be a subclass of StageObjective"):
        register(int)  # type: ignore[type-var]
    assert "toy" not in METHODS and tuple(METHODS) == VARIANTS
