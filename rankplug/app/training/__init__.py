"""The trainer: one loop for every method (:func:`train`), its settings and presets (:class:`TrainConfig`), and
the networks (:mod:`rankplug.app.training.models`)."""

from rankplug.app.training.config import PRESETS, TrainConfig
from rankplug.app.training.loop import MODELS_NAME, train
from rankplug.app.training.models import ClassHead, Discriminator, Encoder, Generator

__all__ = ["MODELS_NAME", "PRESETS", "ClassHead", "Discriminator", "Encoder", "Generator", "TrainConfig", "train"]
