"""Stages for RankGAN and GoGAN (maths §2-§4), one module per concept.

- :mod:`~rankplug.stages.manager`: :class:`StageManager`, the object a training loop holds.
- :mod:`~rankplug.stages.frozen`: frozen copies of networks (:func:`freeze`, :class:`FrozenStage`).
- :mod:`~rankplug.stages.bank`: the previous-stage bank (:class:`PreviousStageBank`, :func:`bank_bytes`).
- :mod:`~rankplug.stages.markers`: RankGAN's markers over every rank (:func:`marker_statistics`).
- :mod:`~rankplug.stages.encoder`: RankGAN's encoder latents and its VAE pretraining (stage 0).
- :mod:`~rankplug.stages.state`: what a manager's checkpoint holds, and how a load is checked and undone.
- :mod:`~rankplug.stages.checkpoint`: the checkpoint file: atomic, checksummed writes and loads that run no code.
"""

from __future__ import annotations

from rankplug.errors import CheckpointError
from rankplug.stages.bank import BankDraw, BankKeep, PreviousStageBank, bank_bytes
from rankplug.stages.frozen import FrozenStage, freeze, unwrap, use_batch_statistics
from rankplug.stages.manager import CHECKPOINT_NAME, StageManager
from rankplug.stages.markers import marker_statistics
from rankplug.stages.state import FORMAT_VERSION, Stateful

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "BankDraw",
    "BankKeep",
    "CheckpointError",
    "FrozenStage",
    "PreviousStageBank",
    "StageManager",
    "Stateful",
    "bank_bytes",
    "freeze",
    "marker_statistics",
    "unwrap",
    "use_batch_statistics",
]
