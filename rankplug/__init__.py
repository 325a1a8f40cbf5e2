"""rankplug: margin-, ranking- and metric-based discriminator training for existing PyTorch GAN code.

Losses and heads are ``nn.Module`` s exported here; each has a pure-function twin in
:mod:`rankplug.functional`. Adapters for host codebases live in :mod:`rankplug.integrations`, which the
core never imports. :class:`PreviousStageBank` is the opt-in bank of the frozen stage's outputs that a
:class:`StageManager` can keep. :class:`StageObjective` is the stage recipe (which loss at which stage, who judges the
previous generator's samples) that the trainer, the integrations and your own loop share.
:class:`CheckpointError` is what :meth:`StageManager.load` and :meth:`StageManager.load_state_dict` raise
for a checkpoint that is missing, corrupt or does not fit (nothing is changed then).

The names below are imported on first use (PEP 562), so ``import rankplug`` and the ``rankplug`` command start
without loading torch; ``rankplug.HingeMarginLoss`` and ``from rankplug import StageManager`` work as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rankplug.errors import CheckpointError

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "AAMAuxClassifier": "rankplug.heads",
    "TripletMetricDiscriminatorHead": "rankplug.heads",
    "AdditiveAngularMarginLoss": "rankplug.losses",
    "GoGANRankLoss": "rankplug.losses",
    "GradientPenalty": "rankplug.losses",
    "HingeMarginLoss": "rankplug.losses",
    "StageRankLoss": "rankplug.losses",
    "SymmetricHingeLoss": "rankplug.losses",
    "TripletMetricDiscriminatorLoss": "rankplug.losses",
    "TripletMetricGeneratorLoss": "rankplug.losses",
    "FrozenStage": "rankplug.stages",
    "PreviousStageBank": "rankplug.stages",
    "StageManager": "rankplug.stages",
    "StageObjective": "rankplug.methods",
    "load_generator": "rankplug.app.runs",
}

if TYPE_CHECKING:
    from rankplug import functional
    from rankplug.heads import AAMAuxClassifier, TripletMetricDiscriminatorHead
    from rankplug.losses import (
        AdditiveAngularMarginLoss,
        GoGANRankLoss,
        GradientPenalty,
        HingeMarginLoss,
        StageRankLoss,
        SymmetricHingeLoss,
        TripletMetricDiscriminatorLoss,
        TripletMetricGeneratorLoss,
    )
    from rankplug.methods import StageObjective
    from rankplug.stages import FrozenStage, PreviousStageBank, StageManager


def __getattr__(name: str) -> Any:
    if name == "functional":
        return importlib.import_module("rankplug.functional")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rankplug' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AAMAuxClassifier",
    "AdditiveAngularMarginLoss",
    "CheckpointError",
    "FrozenStage",
    "GoGANRankLoss",
    "GradientPenalty",
    "HingeMarginLoss",
    "PreviousStageBank",
    "StageManager",
    "StageObjective",
    "StageRankLoss",
    "SymmetricHingeLoss",
    "TripletMetricDiscriminatorHead",
    "TripletMetricDiscriminatorLoss",
    "TripletMetricGeneratorLoss",
    "functional",
    "load_generator",
]
