"""Stand-in for upstream ``torch_utils.training_stats``: ``report`` records values so tests can read them.

Upstream broadcasts reported scalars to ``Collector`` objects across processes; here every reported value is
kept, flattened to float64, in :data:`records`, keyed by name, in report order.
"""

from __future__ import annotations

from typing import Any

import torch

records: dict[str, list[torch.Tensor]] = {}


def report(name: str, value: Any) -> Any:
    """Record ``value`` (a tensor, number, list or array) under ``name``; returns ``value`` as upstream does."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().to("cpu", torch.float64).flatten()
    else:
        flat = torch.as_tensor(value, dtype=torch.float64).flatten()
    records.setdefault(name, []).append(flat)
    return value


def report0(name: str, value: Any) -> Any:
    """Upstream reports only on rank 0; a single process is rank 0."""
    return report(name, value)


def values(name: str) -> torch.Tensor:
    """Every scalar reported under ``name`` so far, concatenated (empty if none)."""
    chunks = records.get(name, [])
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.float64)


def mean(name: str) -> float:
    """The mean of every scalar reported under ``name`` (NaN if none, as upstream's empty statistic)."""
    data = values(name)
    return float(data.mean()) if data.numel() else float("nan")


def reset() -> None:
    """Forget everything reported so far."""
    records.clear()
