"""Stand-in for upstream ``utils/ckpt.py``: checkpoints named ``model={G,D}-{when}-weights-step={step}.pth``."""

from __future__ import annotations

import glob
import os
from typing import Any

import torch


def save_model(model: str, when: str, step: int, ckpt_dir: str, states: dict[str, Any]) -> str:
    """Write ``states`` (with ``"state_dict"``), replacing the previous file of the same model and ``when``."""
    for old in glob.glob(os.path.join(glob.escape(ckpt_dir), f"model={model}-{when}-weights-step=*.pth")):
        os.remove(old)
    path = os.path.join(ckpt_dir, f"model={model}-{when}-weights-step={step}.pth")
    torch.save(states, path)
    return path


def load_latest(ckpt_dir: str, model: str, when: str = "current") -> dict[str, Any]:
    (path,) = glob.glob(os.path.join(glob.escape(ckpt_dir), f"model={model}-{when}-weights-step=*.pth"))
    return torch.load(path, map_location="cpu", weights_only=True)
