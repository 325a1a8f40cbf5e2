"""Every equation has a function and a module, each documented with its equation, a Shape section and an example."""

from __future__ import annotations

import re

import pytest

import rankplug
from rankplug import functional as F

# Equation -> (function, module or module method) pairs. The module side of a head's loss is its method.
PAIRS = [
    (F.hinge_margin_loss, rankplug.HingeMarginLoss),
    (F.symmetric_hinge_loss, rankplug.SymmetricHingeLoss),
    (F.wgan_generator_loss, rankplug.HingeMarginLoss),
    (F.stage_rank_loss, rankplug.StageRankLoss),
    (F.stage_rank_generator_loss, rankplug.StageRankLoss),
    (F.clamp_penalty, rankplug.StageRankLoss),
    (F.gogan_rank_loss, rankplug.GoGANRankLoss),
    (F.gradient_penalty, rankplug.GradientPenalty),
    (F.data_dependent_margin, rankplug.TripletMetricDiscriminatorHead),
    (F.triplet_metric_discriminator_loss, rankplug.TripletMetricDiscriminatorLoss),
    (F.triplet_metric_discriminator_loss, rankplug.TripletMetricDiscriminatorHead),
    (F.triplet_metric_generator_loss, rankplug.TripletMetricGeneratorLoss),
    (F.additive_angular_margin_logits, rankplug.AAMAuxClassifier),
    (F.additive_angular_margin_loss, rankplug.AdditiveAngularMarginLoss),
    (F.additive_angular_margin_loss, rankplug.AAMAuxClassifier),
]
# A paper and an equation or section number, e.g. "RankGAN Eq. 3" or "MBGAN's data-dependent margin, Eq. 4", or,
# for a form that only the authors' code has, the section of the maths page (docs/maths.md) that specifies it.
CITATION = re.compile(r"(RankGAN|GoGAN|MBGAN|label-geometry paper)[^\n]{0,60}?(Eq|Sec)\. ?\d|maths §\d", re.IGNORECASE)


@pytest.mark.parametrize("obj", sorted({o for pair in PAIRS for o in pair}, key=lambda o: o.__name__))
def test_docstring_cites_equation_and_has_shape_and_example(obj):
    doc = obj.__doc__ or ""
    assert CITATION.search(doc), f"{obj.__name__} cites no equation"
    assert "Shape:" in doc and "Output" in doc, f"{obj.__name__} has no Shape section with the output"
    assert "Example:" in doc and ">>>" in doc, f"{obj.__name__} has no doctest example"
    assert ".. math::" in doc, f"{obj.__name__} has no math line"


def test_every_exported_loss_is_covered():
    covered = {o.__name__ for pair in PAIRS for o in pair}
    assert set(F.__all__) - covered <= {"cosine_with_margin", "embedding_distance"}
    assert set(rankplug.__all__) - covered == {
        "functional",
        "StageManager",
        "FrozenStage",
        "PreviousStageBank",
        "CheckpointError",
        "StageObjective",
        "load_generator",
    }
