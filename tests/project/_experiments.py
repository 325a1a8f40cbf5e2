"""Import a study script of ``experiments/`` (they import each other by name, as ``python experiments/x.py`` does)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def import_experiment(name: str) -> ModuleType:
    """``experiments/<name>.py`` as a module, with ``experiments/`` on ``sys.path`` only while it imports."""
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EXPERIMENTS))
