"""Three seeded score batches, ``real``, ``fake`` and ``prev_fake``, for the method tests."""

from __future__ import annotations

import pytest
import torch

N = 16


@pytest.fixture
def scores() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(N, generator=g) for _ in range(3)]
