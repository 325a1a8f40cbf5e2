"""Shared hypothesis strategies and plain-Python references for the score-based losses."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

# Scores in a range where float64 sums are exact enough for 1e-9 comparisons.
score = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False, allow_infinity=False)
margin_value = st.floats(min_value=0.0, max_value=20.0, allow_nan=False, allow_infinity=False)
weight_value = st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False)


@st.composite
def score_batches(draw: st.DrawFn, count: int, min_size: int = 1, max_size: int = 16) -> list[list[float]]:
    """``count`` lists of scores of one common batch size."""
    n = draw(st.integers(min_value=min_size, max_value=max_size))
    return [draw(st.lists(score, min_size=n, max_size=n)) for _ in range(count)]


def as_tensor(values: list[float], *, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def reduce_list(values: list[float], reduction: str) -> list[float] | float:
    if reduction == "mean":
        return sum(values) / len(values)
    if reduction == "sum":
        return sum(values)
    return values


def hinge(u: float) -> float:
    return u if u > 0 else 0.0
