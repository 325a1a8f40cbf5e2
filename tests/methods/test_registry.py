"""A method is one subclass and one registry entry: a toy method, registered here and nowhere else, trains in the
trainer (its name passes the config, the loop asks it for its losses and logs its hinge)."""

from __future__ import annotations

import math

import pytest

from rankplug.app.data import DigitsDataset
from rankplug.app.training import TrainConfig, train
from rankplug.methods import METHODS, GoGAN, StageObjective, register

TINY = {"steps_per_stage": 1, "log_every": 1, "size": 8, "batch_size": 8, "width": 4, "n_critic": 1}


class LeastSquares(StageObjective):
    """LSGAN's losses (Mao et al. 2017), with a hinge of its own to log: whether a fake scores above 0."""

    variant = "toy-lsgan"
    has_penalty = False
    setting_names = ()

    def _critic_loss(self, real, fake, prev_fake, *, stage, **inputs):
        return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()

    def _generator_loss(self, fake, *, stage, real):
        return 0.5 * ((fake - 1) ** 2).mean()

    def _hinge_terms(self, real, fake, prev_fake, *, stage, **inputs):
        return {"fooled": fake.detach().flatten()}


class StagedToy(GoGAN):
    """GoGAN's recipe under another name: a staged toy, judged by the frozen previous critic."""

    variant = "toy-staged"


@pytest.fixture
def toys():
    for method in (LeastSquares, StagedToy):
        register(method)
    yield
    for method in (LeastSquares, StagedToy):
        del METHODS[method.variant]


@pytest.mark.usefixtures("toys")
def test_a_registered_method_trains_one_step_in_the_trainer():
    config = TrainConfig(method="toy-lsgan", stages=1, **TINY)
    result = train(config, dataset=DigitsDataset(8))
    assert result["method"] == "toy-lsgan" and result["generator_steps"] == 1
    (event,) = result["log"]
    assert math.isfinite(event["loss_d"]) and math.isfinite(event["loss_g"]) and 0 <= event["active_fooled"] <= 1
    assert TrainConfig(method="toy-lsgan", class_head="aam", stages=1, **TINY).conditional  # a fact: accepted


@pytest.mark.usefixtures("toys")
def test_a_registered_staged_method_trains_its_second_stage_against_the_frozen_one():
    result = train(TrainConfig(method="toy-staged", stages=2, bank_size=8, **TINY), dataset=DigitsDataset(8))
    first, second = result["log"]
    assert second["stage"] == 2 and second["prev_fake"] is not None and "active_gogan_rank" in second
    assert math.isfinite(second["loss_d"]) and "active_margin" in first
    with pytest.raises(ValueError, match="class_head 'aam' is for the score variants without stages"):
        TrainConfig(method="toy-staged", class_head="aam", **TINY)


def test_an_unregistered_method_is_refused_by_the_config():
    with pytest.raises(ValueError, match="method must be one of 'rankgan'"):
        TrainConfig(method="toy-lsgan", **TINY)
    with pytest.raises(ValueError, match="variant must be one of 'rankgan'"):
        StageObjective("toy-lsgan")
