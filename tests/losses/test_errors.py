"""Bad input to the score-based losses: every case in the README's table raises the documented error.

(The MBGAN and AAM cases live in test_metric.py and test_angular.py.)
"""

from __future__ import annotations

import functools
import re

import pytest
import torch

import rankplug
from rankplug import functional as F

GOOD = torch.zeros(4)


def frozen(t):
    return t.detach()


# Each entry: a name and a callable taking (real, fake, prev) score tensors; settings are fixed and valid.
SCORE_LOSSES = {
    "hinge_margin_loss": lambda r, f, p: F.hinge_margin_loss(r, f),
    "symmetric_hinge_loss": lambda r, f, p: F.symmetric_hinge_loss(r, f),
    "wgan_generator_loss": lambda r, f, p: F.wgan_generator_loss(f),
    "stage_rank_loss": lambda r, f, p: F.stage_rank_loss(r, f, p, m_high=1.0, m_low=0.0),
    "stage_rank_generator_loss": lambda r, f, p: F.stage_rank_generator_loss(r, f),
    "clamp_penalty": lambda r, f, p: F.clamp_penalty(r, p, m_high=1.0, m_low=0.0),
    "gogan_rank_loss": lambda r, f, p: F.gogan_rank_loss(r, f, p),
    "HingeMarginLoss": lambda r, f, p: rankplug.HingeMarginLoss()(r, f),
    "HingeMarginLoss.generator_loss": lambda r, f, p: rankplug.HingeMarginLoss().generator_loss(f),
    "SymmetricHingeLoss": lambda r, f, p: rankplug.SymmetricHingeLoss()(r, f),
    "StageRankLoss": lambda r, f, p: rankplug.StageRankLoss(m_high=1.0, m_low=0.0)(r, f, p),
    "StageRankLoss.generator_loss": lambda r, f, p: rankplug.StageRankLoss().generator_loss(r, f),
    "GoGANRankLoss": lambda r, f, p: rankplug.GoGANRankLoss()(r, f, p),
}
ALL = list(SCORE_LOSSES)
# The generator-only losses read fake_scores alone; every other loss reads real_scores too.
FAKE_ONLY = ("wgan_generator_loss", "HingeMarginLoss.generator_loss")
USES_REAL = [name for name in ALL if name not in FAKE_ONLY]


def call(name, real=GOOD, fake=GOOD, prev=GOOD):
    return SCORE_LOSSES[name](real, fake, prev)


@pytest.mark.parametrize("name", ALL)
def test_all_losses_accept_good_input(name):
    assert torch.isfinite(call(name))


@pytest.mark.parametrize("name", USES_REAL)
@pytest.mark.parametrize(
    "bad_shape",
    [(4, 3), (4, 2, 5, 5), (4, 1, 5), (), (4, 1, 1, 1, 1)],
)
def test_unsupported_score_shape(name, bad_shape):
    shape_text = re.escape(str(tuple(bad_shape)).replace(",)", ",)"))
    with pytest.raises(
        ValueError,
        match=rf"real_scores (has shape {shape_text}; expected \(N,\), \(N, 1\) or"
        rf" \(N, 1, H, W\)|must have a batch dimension)",
    ):
        call(name, real=torch.zeros(bad_shape))


@pytest.mark.parametrize("name", ALL)
def test_batch_sizes_that_differ(name):
    if name in USES_REAL and name != "clamp_penalty":
        with pytest.raises(ValueError, match=r"fake_scores has batch size 3 but real_scores has batch size 4"):
            call(name, fake=torch.zeros(3))
    elif name == "clamp_penalty":
        with pytest.raises(ValueError, match=r"prev_fake_scores has batch size 3 but real_scores has batch size 4"):
            call(name, prev=torch.zeros(3))
    else:  # generator losses of fake scores alone have nothing to pair
        assert call(name, fake=torch.zeros(3)).shape == ()


@pytest.mark.parametrize("name", ["stage_rank_loss", "gogan_rank_loss", "StageRankLoss", "GoGANRankLoss"])
def test_previous_batch_size_that_differs(name):
    with pytest.raises(ValueError, match=r"prev_fake_scores has batch size 5 but real_scores has batch size 4"):
        call(name, prev=torch.zeros(5))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_scores(name, dtype):
    with pytest.raises(TypeError, match=rf"_scores must have a floating-point dtype .*; got {dtype}"):
        call(name, real=torch.zeros(4, dtype=dtype), fake=torch.zeros(4, dtype=dtype), prev=torch.zeros(4, dtype=dtype))


@pytest.mark.parametrize("name", ALL)
def test_non_tensor_scores(name):
    with pytest.raises(TypeError, match=r"_scores must be a torch.Tensor; got list"):
        call(name, real=[0.0] * 4, fake=[0.0] * 4, prev=[0.0] * 4)


@pytest.mark.parametrize("name", ALL)
def test_empty_batch(name):
    with pytest.raises(ValueError, match=r"_scores is an empty batch \(shape \(0,\)\); expected N >= 1"):
        call(name, real=torch.zeros(0), fake=torch.zeros(0), prev=torch.zeros(0))


FUNCTIONS_WITH_REDUCTION = {
    "hinge_margin_loss": lambda red: F.hinge_margin_loss(GOOD, GOOD, reduction=red),
    "symmetric_hinge_loss": lambda red: F.symmetric_hinge_loss(GOOD, GOOD, reduction=red),
    "wgan_generator_loss": lambda red: F.wgan_generator_loss(GOOD, reduction=red),
    "stage_rank_loss": lambda red: F.stage_rank_loss(GOOD, GOOD, GOOD, m_high=1, m_low=0, reduction=red),
    "stage_rank_generator_loss": lambda red: F.stage_rank_generator_loss(GOOD, GOOD, reduction=red),
    "clamp_penalty": lambda red: F.clamp_penalty(GOOD, GOOD, m_high=1, m_low=0, reduction=red),
    "gogan_rank_loss": lambda red: F.gogan_rank_loss(GOOD, GOOD, GOOD, reduction=red),
    "gradient_penalty": lambda red: F.gradient_penalty(
        lambda x: x.sum(1), torch.zeros(4, 2), GOOD.new_ones(4, 2), reduction=red
    ),
    "HingeMarginLoss": lambda red: rankplug.HingeMarginLoss(reduction=red),
    "SymmetricHingeLoss": lambda red: rankplug.SymmetricHingeLoss(reduction=red),
    "StageRankLoss": lambda red: rankplug.StageRankLoss(reduction=red),
    "GoGANRankLoss": lambda red: rankplug.GoGANRankLoss(reduction=red),
    "GradientPenalty": lambda red: rankplug.GradientPenalty(reduction=red),
}


@pytest.mark.parametrize("name", list(FUNCTIONS_WITH_REDUCTION))
@pytest.mark.parametrize("bad", ["avg", "elementwise_mean", None, "MEAN"])
def test_unknown_reduction(name, bad):
    with pytest.raises(
        ValueError, match=rf"reduction must be one of 'mean', 'sum' or 'none'; got {re.escape(repr(bad))}"
    ):
        FUNCTIONS_WITH_REDUCTION[name](bad)


NEGATIVE_SETTINGS = [
    ("margin", functools.partial(F.hinge_margin_loss, GOOD, GOOD)),
    ("margin", functools.partial(F.symmetric_hinge_loss, GOOD, GOOD)),
    ("margin", functools.partial(F.gogan_rank_loss, GOOD, GOOD, GOOD)),
    ("disc_weight", functools.partial(F.gogan_rank_loss, GOOD, GOOD, GOOD)),
    ("rank_weight", functools.partial(F.gogan_rank_loss, GOOD, GOOD, GOOD)),
    ("clamp_weight", functools.partial(F.stage_rank_loss, GOOD, GOOD, GOOD, m_high=1.0, m_low=0.0)),
    ("weight", functools.partial(F.gradient_penalty, lambda x: x.sum(1), torch.zeros(4, 2), torch.ones(4, 2))),
    ("margin", rankplug.HingeMarginLoss),
    ("margin", rankplug.SymmetricHingeLoss),
    ("margin", rankplug.GoGANRankLoss),
    ("disc_weight", rankplug.GoGANRankLoss),
    ("rank_weight", rankplug.GoGANRankLoss),
    ("clamp_weight", rankplug.StageRankLoss),
    ("weight", rankplug.GradientPenalty),
]


@pytest.mark.parametrize(("setting", "target"), NEGATIVE_SETTINGS)
def test_negative_margin_or_weight(setting, target):
    with pytest.raises(ValueError, match=rf"{setting} must be >= 0; got -0.5"):
        target(**{setting: -0.5})
    with pytest.raises(ValueError, match=rf"{setting} must be finite; got nan"):
        target(**{setting: float("nan")})
    with pytest.raises(TypeError, match=rf"{setting} must be a real number; got str"):
        target(**{setting: "1.0"})


def test_markers_given_alone_or_not_numbers():
    with pytest.raises(ValueError, match="m_high and m_low must be given together"):
        rankplug.StageRankLoss(m_high=1.0)
    with pytest.raises(TypeError, match=r"m_high must be a number or a one-element tensor; got shape \(2,\)"):
        F.clamp_penalty(GOOD, GOOD, m_high=torch.zeros(2), m_low=0.0)


def test_gradient_penalty_bad_tensors():
    critic = lambda x: x.flatten(1).sum(1)  # noqa: E731
    with pytest.raises(ValueError, match=r"fake has shape \(4, 3\) but real has shape \(4, 2\); expected identical"):
        F.gradient_penalty(critic, torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(TypeError, match=r"real must have a floating-point dtype"):
        F.gradient_penalty(critic, torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"real is an empty batch"):
        F.gradient_penalty(critic, torch.zeros(0, 2), torch.zeros(0, 2))
    with pytest.raises(ValueError, match=r"mix_weights has shape \(4, 1\); expected \(4,\)"):
        F.gradient_penalty(critic, torch.zeros(4, 2), torch.zeros(4, 2), mix_weights=torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"the discriminator returned 1 scores for a batch of 4"):
        F.gradient_penalty(lambda x: x.sum().reshape(1), torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"discriminator output has shape \(4, 2\); expected"):
        F.gradient_penalty(lambda x: x, torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(TypeError, match=r"scaler must be a torch.amp.GradScaler or None; got str"):
        F.gradient_penalty(critic, torch.zeros(4, 2), torch.zeros(4, 2), scaler="yes")
