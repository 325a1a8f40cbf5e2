"""Input checks, the computation dtype and the reduction helper shared by every loss.

Every public loss validates its input through these helpers, so that each error names the argument,
the expected value and the value it got, the same way everywhere. Checks raise ``ValueError`` or
``TypeError`` explicitly (never ``assert``, which ``python -O`` strips). The tensor checks read only metadata
(shape, dtype, layout, device), so they cost no host sync and hold while compiling; NaN and inf are not checked but
propagate through the maths, so a diverged run logs non-finite losses.
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
    """Apply a torch.nn-style reduction to a ``(N,)`` tensor of per-sample losses.

    An unknown reduction raises rather than falling through to ``"none"``: a module's ``reduction`` attribute
    set after construction reaches this helper unchecked.
    """
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction != "none":
        check_reduction(reduction)  # raises: "mean" and "sum" returned above, so this is no reduction
    return per_sample


def hinge(value: Tensor) -> Tensor:
    """``[u]_+ = max(0, u)`` that keeps a non-finite ``u`` non-finite.

    ``torch.relu`` propagates NaN but maps ``-inf`` to 0, so a critic whose real scores diverged to ``+inf``
    would log a finite, zero loss (with zero gradients) instead of showing the divergence. ``0 * u`` is 0 for
    every finite ``u`` and NaN for ``+-inf`` and NaN, so the sum is exactly the hinge for finite input and
    NaN otherwise, with no host sync.
    """
    # relu(u) + 0 * u as one add with alpha = 0: the same numbers (signed zeros included) without turning the
    # Python 0.0 into a tensor at every call (torch 2.13 materialises a wrapped number as a 0-d tensor copy).
    return torch.add(torch.relu(value), value, alpha=0.0)


def check_dense(value: object, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a dense (strided) tensor, of any dtype."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if value.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor; got layout {value.layout} (call .to_dense())")
    return value


def check_tensor(value: object, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a dense (strided) floating-point tensor."""
    tensor = check_dense(value, name)
    if not tensor.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype (float16, bfloat16, float32 or float64); got {tensor.dtype}"
        )
    return tensor


def check_same_device(**tensors: Tensor) -> None:
    """Raise ``ValueError`` unless every tensor is on the device of the first one.

    Devices are metadata, so the check needs no host sync and holds while compiling.
    """
    names = list(tensors)
    first = names[0]
    device = tensors[first].device
    for name in names[1:]:
        other = tensors[name].device
        if other != device:
            raise ValueError(f"{name} is on {other} but {first} is on {device}; move both to one device")


def check_batch(tensor: Tensor, name: str) -> int:
    """Raise ``ValueError`` for a 0-d tensor or an empty batch; return the batch size ``N``."""
    if tensor.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension; got a 0-d tensor of shape ()")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {shape_str(tensor)}); expected N >= 1")
    return int(tensor.shape[0])


def per_sample_scores(scores: object, name: str) -> Tensor:
    """Validate discriminator scores and return one score per sample, shape ``(N,)``, in the computation dtype.

    Accepts ``(N,)``, ``(N, 1)`` and PatchGAN maps ``(N, 1, H, W)``; a PatchGAN map's per-sample score is
    the mean over its non-batch dimensions (maths page, "Conventions"). The result is float32 for float16 and
    bfloat16 scores (float32 and float64 stay as they are; see :func:`compute_dtype`).
    """
    tensor = check_tensor(scores, name)
    ok = tensor.dim() == 1 or (tensor.dim() in (2, 4) and tensor.shape[1] == 1)
    if not ok:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected {SCORE_SHAPES}")
    check_batch(tensor, name)
    if tensor.dim() == 4 and tensor.shape[2] * tensor.shape[3] == 0:
        # The mean of an empty map is 0/0 = NaN, which would pass for a diverged critic.
        raise ValueError(
            f"{name} has shape {shape_str(tensor)}, an empty score map; expected (N, 1, H, W) with H, W >= 1"
        )
    if tensor.dim() == 1 or tensor.numel() == tensor.shape[0]:
        # (N,), (N, 1) and 1x1 maps hold one score per sample: a view (a mean over one value would add a
        # reduction and its backward to every loss call, about 30 ATen calls, for the same numbers).
        return as_float32(tensor if tensor.dim() == 1 else tensor.view(tensor.shape[0]))
    # Averaged in the computation dtype directly, without a float32 copy of the whole map.
    return tensor.flatten(1).mean(dim=1, dtype=compute_dtype(tensor))


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


def paired_scores(**scores: object) -> tuple[Tensor, ...]:
    """Validate score tensors that pair sample by sample and return each one per sample, in the given order.

    Each is checked by :func:`per_sample_scores` in turn (so ``(N,)``, in the computation dtype), then the batch
    sizes and the devices are compared, so an error names the first argument at fault, as the losses document.
    Pass the tensors by their argument names, real before fake, current before previous:
    ``real, fake = paired_scores(real_scores=real_scores, fake_scores=fake_scores)``.
    """
    tensors = {name: per_sample_scores(value, name) for name, value in scores.items()}
    check_same_batch(**tensors)
    check_same_device(**tensors)
    return tuple(tensors.values())


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


def compute_dtype(tensor: Tensor) -> torch.dtype:
    """The dtype every rankplug loss computes in: float32, or the input's dtype if wider (float64).

    torch's own losses do the same under autocast: a float16 hinge overflows above 65504 (a clamp weight of
    1000 times a score gap of 66 is enough), a float16 sum of a few thousand scores overflows, and bfloat16's
    8-bit significand turns ``255 + 1.5 - 256`` into 0.
    """
    return torch.promote_types(tensor.dtype, torch.float32)


def as_float32(tensor: Tensor) -> Tensor:
    """Upcast half-precision tensors to float32 (float64 stays float64), i.e. to :func:`compute_dtype`."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


def check_int_at_least(value: object, name: str, minimum: int) -> int:
    """Raise unless ``value`` is an ``int`` (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}; got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value}")
    return int(value)


def check_positive_int(value: object, name: str) -> int:
    """Raise unless ``value`` is an ``int >= 1`` (sizes such as ``in_features``)."""
    return check_int_at_least(value, name, 1)


def flat_features(features: object, name: str, in_features: int) -> Tensor:
    """Validate ``(N, *)`` features whose non-batch dimensions hold ``in_features`` values; return ``(N, in_features)``."""
    tensor = check_tensor(features, name)
    check_batch(tensor, name)
    dim = tensor.dim()
    flat = tensor if dim == 2 else tensor.flatten(1) if dim > 2 else tensor.unsqueeze(1)  # (N, d): no call
    if flat.shape[1] != in_features:
        raise ValueError(
            f"{name} has shape {shape_str(tensor)}, i.e. {flat.shape[1]} features per sample; "
            f"expected (N, *) with {in_features} features per sample"
        )
    return flat


def check_int_in(value: object, name: str, low: int, high: int) -> int:
    """Raise unless ``value`` is an ``int`` (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int in [{low}, {high}]; got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}]; got {value}")
    return int(value)


def check_real_in(value: object, name: str, low: float, high: float, *, open_low: bool = False) -> float:
    """Raise unless ``value`` is a finite real number in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result) or not low <= result <= high or (open_low and result == low):
        raise ValueError(f"{name} must be finite and in {'(' if open_low else '['}{low}, {high}]; got {result}")
    return result


def check_one_of(value: object, name: str, allowed: tuple[object, ...]) -> object:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed`` (numbers or strings; a bool never matches)."""
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_flag(value: object, name: str) -> bool:
    """Raise ``TypeError`` unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false; got {value!r}")
    return value


IMAGE_SIZES: tuple[int, ...] = (8, 16, 32, 64, 128, 256)


def check_image_size(size: object, name: str = "size") -> int:
    """Raise unless ``size`` is an image side rankplug's data and networks support: a power of two, 8 to 256."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"{name} must be an int, a power of two from 8 to 256; got {type(size).__name__}")
    if int(size) not in IMAGE_SIZES:
        raise ValueError(f"{name} must be a power of two from 8 to 256 (one of {IMAGE_SIZES}); got {size}")
    return int(size)
