"""Input checks and the reduction helper shared by every loss.

Every public loss validates its input through these helpers, so that each error names the argument,
the expected value and the value it got, the same way everywhere. Checks raise ``ValueError`` or
``TypeError`` explicitly (never ``assert``, which ``python -O`` strips).
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")

SCORE_SHAPES = "(N,), (N, 1) or (N, 1, H, W)"


def shape_str(tensor: Tensor) -> str:
    """``(8, 3)``-style text for a tensor's shape, as used in every error message."""
    dims = tuple(tensor.shape)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def check_reduction(reduction: object) -> Reduction:
    """Return ``reduction`` if it is one of ``"mean"``, ``"sum"``, ``"none"``; raise otherwise."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum' or 'none'; got {reduction!r}")
    return reduction  # type: ignore[return-value]


def reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    """Apply a torch.nn-style reduction to a ``(N,)`` tensor of per-sample losses."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def check_tensor(value: object, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a floating-point tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype (float16, bfloat16, float32 or float64); got {value.dtype}"
        )
    return value


def check_batch(tensor: Tensor, name: str) -> int:
    """Raise ``ValueError`` for a 0-d tensor or an empty batch; return the batch size ``N``."""
    if tensor.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension; got a 0-d tensor of shape ()")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {shape_str(tensor)}); expected N >= 1")
    return int(tensor.shape[0])


def per_sample_scores(scores: object, name: str) -> Tensor:
    """Validate discriminator scores and return one score per sample, shape ``(N,)``.

    Accepts ``(N,)``, ``(N, 1)`` and PatchGAN maps ``(N, 1, H, W)``; a PatchGAN map's per-sample score is
    the mean over its non-batch dimensions (MATH "Conventions").
    """
    tensor = check_tensor(scores, name)
    ok = tensor.dim() == 1 or (tensor.dim() in (2, 4) and tensor.shape[1] == 1)
    if not ok:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected {SCORE_SHAPES}")
    check_batch(tensor, name)
    if tensor.dim() == 1:
        return tensor
    return tensor.flatten(1).mean(dim=1)


def check_same_batch(**tensors: Tensor) -> int:
    """Raise ``ValueError`` unless every tensor has the same batch size; return it."""
    names = list(tensors)
    first = names[0]
    n = int(tensors[first].shape[0])
    for name in names[1:]:
        other = int(tensors[name].shape[0])
        if other != n:
            raise ValueError(
                f"{name} has batch size {other} but {first} has batch size {n}; "
                f"pairwise terms pair the k-th samples, so the batch sizes must be equal"
            )
    return n


def check_real(value: object, name: str) -> float:
    """Raise ``TypeError`` unless ``value`` is a real Python number (or a one-element tensor)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a number or a one-element tensor; got shape {shape_str(value)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite; got {result}")
    return result


def check_nonnegative(value: object, name: str) -> float:
    """Raise unless ``value`` is a finite real number ``>= 0``."""
    result = check_real(value, name)
    if result < 0:
        raise ValueError(f"{name} must be >= 0; got {result}")
    return result


def check_positive(value: object, name: str) -> float:
    """Raise unless ``value`` is a finite real number ``> 0``."""
    result = check_real(value, name)
    if result <= 0:
        raise ValueError(f"{name} must be > 0; got {result}")
    return result


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value


def check_markers(m_high: object, m_low: object) -> tuple[float, float]:
    """Validate RankGAN's markers (Eq. 6) and return them as floats; ``m_low <= m_high`` is required."""
    high = check_real(m_high, "m_high")
    low = check_real(m_low, "m_low")
    if low > high:
        raise ValueError(f"m_low must be <= m_high; got m_low={low} and m_high={high}")
    return high, low


def as_float32(tensor: Tensor) -> Tensor:
    """Upcast half-precision tensors to float32 (float64 stays float64) for numerically fragile maths."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


def check_positive_int(value: object, name: str) -> int:
    """Raise unless ``value`` is an ``int >= 1`` (sizes such as ``in_features``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 1; got {type(value).__name__}")
    if int(value) < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value}")
    return int(value)


def flat_features(features: object, name: str, in_features: int) -> Tensor:
    """Validate ``(N, *)`` features whose non-batch dimensions hold ``in_features`` values; return ``(N, in_features)``."""
    tensor = check_tensor(features, name)
    check_batch(tensor, name)
    flat = tensor.flatten(1) if tensor.dim() > 1 else tensor.unsqueeze(1)
    if flat.shape[1] != in_features:
        raise ValueError(
            f"{name} has shape {shape_str(tensor)}, i.e. {flat.shape[1]} features per sample; "
            f"expected (N, *) with {in_features} features per sample"
        )
    return flat
