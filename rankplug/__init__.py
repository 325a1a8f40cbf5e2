"""rankplug: margin-, ranking- and metric-based discriminator training for existing PyTorch GAN code.

Losses and heads are ``nn.Module`` s exported here; each has a pure-function twin in
:mod:`rankplug.functional`. Adapters for host codebases live in :mod:`rankplug.integrations`, which the
core never imports.
"""

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
from rankplug.stages import FrozenStage, StageManager

__version__ = "0.1.0"

__all__ = [
    "AAMAuxClassifier",
    "AdditiveAngularMarginLoss",
    "FrozenStage",
    "GoGANRankLoss",
    "GradientPenalty",
    "HingeMarginLoss",
    "StageManager",
    "StageRankLoss",
    "SymmetricHingeLoss",
    "TripletMetricDiscriminatorHead",
    "TripletMetricDiscriminatorLoss",
    "TripletMetricGeneratorLoss",
    "functional",
]
