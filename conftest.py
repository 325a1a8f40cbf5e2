"""Doctest namespace: every docstring example may use ``torch`` and the rankplug names without importing them."""

import pytest
import torch

import rankplug
import rankplug.functional

# The tests use tiny tensors: one thread is faster and does not stall when the machine is busy.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    torch.manual_seed(0)
    doctest_namespace["torch"] = torch
    doctest_namespace["rankplug"] = rankplug
    for name in rankplug.__all__:
        doctest_namespace[name] = getattr(rankplug, name)
    for name in rankplug.functional.__all__:
        doctest_namespace[name] = getattr(rankplug.functional, name)


# Stand-ins of upstream scripts and the programs run in subprocesses are not test modules: pytest's doctest
# collection must not import them (a stand-in main.py trains at import, as the upstream script does).
collect_ignore_glob = ["tests/standins/*", "tests/stage_programs/*", "examples/*", "experiments/*", "tools/*"]
