"""Docstring examples of rankplug.integrations run too (integrations/ is outside pytest's doctest paths, since
it is imported as rankplug.integrations, not as a top-level package)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import rankplug
import rankplug.integrations

MODULES = [
    info.name
    for info in pkgutil.walk_packages(rankplug.integrations.__path__, prefix="rankplug.integrations.")
    if not info.name.rsplit(".", 1)[-1].startswith("_")
]


@pytest.mark.parametrize("name", ["rankplug.integrations", *MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    result = doctest.testmod(
        module, extraglobs={"torch": torch, "rankplug": rankplug}, optionflags=doctest.NORMALIZE_WHITESPACE
    )
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
