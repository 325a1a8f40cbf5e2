"""Doctest namespace: every docstring example may use ``torch`` and the rankplug names without importing them."""

import os

import pytest
import torch

import rankplug
import rankplug.functional

# The tests use tiny tensors: one thread is faster and does not stall when the machine is busy.
torch.set_num_threads(1)


def _share_the_kernel_build() -> None:
    # Tests that run commands in a sandbox set HOME to it; torch's default extensions cache follows HOME, so
    # without this every such subprocess would compile the AAM kernel (rankplug/_kernels.py) again.
    from rankplug import _kernels

    build = _kernels._build_directory(_kernels._build_settings(_kernels._SOURCE.read_bytes())[0])
    if build is not None:
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(build.parent))


_share_the_kernel_build()


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
