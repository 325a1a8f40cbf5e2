"""The runnable examples train: finite numbers, and the generator moves towards the data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("loss", ["margin", "wgan"])
def test_swap_one_loss_line_trains(loss, capsys):
    result = load("swap_one_loss_line").main(["--loss", loss, "--steps", "150"])
    # The generator starts near the origin, about 2.2 from the data's mean.
    assert result["distance"] < 1.0, result
    assert capsys.readouterr().out.count("step") >= 5
