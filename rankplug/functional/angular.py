"""The additive angular margin (ArcFace) auxiliary classifier loss, label-geometry paper Eq. 7-8 (maths §6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import Tensor

from rankplug._validation import (
    Reduction,
    as_float32,
    check_batch,
    check_dense,
    check_positive,
    check_real,
    check_reduction,
    check_same_device,
    check_tensor,
    reduce,
    shape_str,
)

# sin(theta) = sqrt(1 - cos^2) has derivative -cos/sin, infinite at cos = +-1 (a feature equal or opposite to a
# class weight), which backpropagates as inf/NaN. Flooring 1 - cos^2 at 1e-12 makes the derivative exactly 0 at
# cos = +-1 and at most 1e6 elsewhere, and moves the value by at most 1e-6 * sin(m). In float32 the largest
# cos below 1 is 1 - 6e-8, so the derivative there stays near 3e3; the gradient that reaches the features,
# -sin(theta + m) * dtheta/dphi, is bounded by s / ||phi||.
_SIN_SQUARED_FLOOR = 1e-12


def check_angular_margin(margin: object, name: str = "margin") -> float:
    """Raise unless ``margin`` is an angle in radians in ``[0, pi/2)``."""
    value = check_real(margin, name)
    if not 0.0 <= value < math.pi / 2:
        raise ValueError(f"{name} must be an angle in radians in [0, pi/2); got {value}")
    return value


def cosine_with_margin(cosine: Tensor, margin: float) -> Tensor:
    r"""``cos(theta + m)`` from ``cos(theta)`` without ``arccos``, with ArcFace's fallback past ``pi``.

    .. math::
        \psi(\theta, m) = \begin{cases}
            \cos\theta \cos m - \sin\theta \sin m & \theta + m \le \pi \\
            \cos\theta - m \sin m & \theta + m > \pi \quad \text{(ArcFace fallback)}
        \end{cases}

    ``arccos`` has an infinite derivative at ``cos = +-1`` (a feature equal or opposite to a class weight),
    which turns into NaN gradients; the angle-addition form avoids it. Past ``theta + m = pi``,
    ``cos(theta + m)`` starts to *increase* with the margin, rewarding the wrong class, so the logit falls back
    to the linear penalty ``cos(theta) - m sin(m)`` there. Computed in at least float32. A NaN cosine gives NaN.

    Args:
        cosine: ``cos(theta)``, a dense floating-point tensor.
        margin: ``m`` in radians, in ``[0, pi/2)``.

    Shape:
        - cosine: any shape. Output: same shape, float32 or float64.

    Example:
        >>> cosine_with_margin(torch.tensor([1.0, 0.0, -1.0]), 0.5)
        tensor([ 0.8776, -0.4794, -1.2397])
    """
    return _cosine_with_margin(check_tensor(cosine, "cosine"), check_angular_margin(margin))


def _cosine_with_margin(cosine: Tensor, margin: float) -> Tensor:
    # cosine_with_margin on checked input, for the losses. torch.clamp propagates NaN, so the floor under the
    # square root keeps a NaN cosine NaN.
    c = as_float32(cosine)
    if margin == 0.0:
        return c
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    sin_theta = torch.sqrt(torch.clamp(1.0 - c * c, min=_SIN_SQUARED_FLOOR))
    shifted = c * cos_m - sin_theta * sin_m
    # theta + m <= pi  <=>  cos(theta) >= cos(pi - m) = -cos(m)
    return torch.where(c >= -cos_m, shifted, c - margin * sin_m)


def _check_cosine(cosine: object, name: str = "cosine") -> Tensor:
    tensor = check_tensor(cosine, name)
    if tensor.dim() != 2:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected (N, C)")
    check_batch(tensor, name)
    if tensor.shape[1] == 0:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected at least one class (C >= 1)")
    return tensor


def check_targets(targets: object, cosine: Tensor, multi_label: bool, cosine_name: str = "cosine") -> Tensor:
    """Validate class labels (single-label) or multi-hot targets (multi-label) for an ``(N, C)`` score.

    Type, layout, shape and device (that of ``cosine``, named ``cosine_name`` in messages) are always
    checked. The label *values* need the host (one sync), so that check is skipped while ``torch.compile``
    traces (``torch.compiler.is_compiling()``): a compiled step trusts its labels, as
    ``torch.nn.functional.cross_entropy`` does on CUDA.
    """
    targets = check_dense(targets, "targets")
    num_samples, num_classes = cosine.shape[0], cosine.shape[1]
    if multi_label:
        if not targets.is_floating_point():
            raise TypeError(
                f"targets must be a multi-hot floating-point tensor when multi_label=True; got {targets.dtype}"
            )
        if targets.shape != (num_samples, num_classes):
            raise ValueError(
                f"targets has shape {shape_str(targets)}; expected ({num_samples}, {num_classes}) "
                f"multi-hot targets when multi_label=True"
            )
        check_same_device(**{cosine_name: cosine, "targets": targets})
        if not torch.compiler.is_compiling() and bool(((targets != 0) & (targets != 1)).any()):
            bad = targets[(targets != 0) & (targets != 1)][0].item()
            raise ValueError(f"targets must be multi-hot with values in {{0, 1}}; found {bad}")
        return targets
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(
            f"targets must be integer class indices (e.g. torch.long) when multi_label=False; got {targets.dtype}"
        )
    if targets.shape != (num_samples,):
        raise ValueError(
            f"targets has shape {shape_str(targets)}; expected ({num_samples},) class indices when multi_label=False"
        )
    check_same_device(**{cosine_name: cosine, "targets": targets})
    if torch.compiler.is_compiling():
        return targets if targets.dtype == torch.long else targets.long()
    # One reduction and one host sync on the happy path (four elementwise passes and a sync before); the first
    # offending label is only looked up when there is one.
    low, high = torch.aminmax(targets)
    if int(low) < 0 or int(high) >= num_classes:
        out_of_range = (targets < 0) | (targets >= num_classes)
        bad = int(targets[out_of_range][0].item())
        raise ValueError(f"targets must be class indices in [0, {num_classes - 1}]; found {bad}")
    return targets if targets.dtype == torch.long else targets.long()


def _margin_logits(scaled_cosine: Tensor, targets: Tensor, scale: float, margin: float, multi_label: bool) -> Tensor:
    # Eq. 8's logits from s cos(theta) (the head's output; the functions pass s * cosine): s cos(theta + m) at
    # the target, s cos(theta) elsewhere. Single-label, only the (N, 1) target column leaves scaled units.
    logits = as_float32(scaled_cosine)
    if multi_label:
        # Each attribute k is a two-way choice between W_k and -W_k. A positive (t=1) attribute gets
        # cos(theta + m); a negative one is ArcFace applied to the angle pi - theta from -W_k, whose logit in
        # W_k's terms is -psi(pi - theta, m). Both make the decision harder; at m = 0 both equal cos(theta).
        c = logits / scale
        positive = _cosine_with_margin(c, margin)
        negative = -_cosine_with_margin(-c, margin)
        return scale * torch.where(targets > 0.5, positive, negative)
    index = targets.unsqueeze(1)
    target_cos = logits.gather(1, index) / scale
    return logits.scatter(1, index, scale * _cosine_with_margin(target_cos, margin))


def _margin_loss(logits: Tensor, targets: Tensor, multi_label: bool, reduction: Reduction) -> Tensor:
    if multi_label:  # per sample, the sum over attributes of binary cross entropy
        per_sample = nnf.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").sum(1)
        return reduce(per_sample, reduction)
    return nnf.cross_entropy(logits, targets, reduction=check_reduction(reduction))


def scaled_cosine_margin_loss(
    scaled_cosine: Tensor,
    targets: Tensor,
    *,
    scale: float,
    margin: float,
    multi_label: bool,
    reduction: Reduction,
) -> Tensor:
    """:func:`additive_angular_margin_loss` of ``scaled_cosine = s cos(theta)`` (label-geometry paper Eq. 8, maths §6),
    for :meth:`rankplug.AAMAuxClassifier.loss`.

    ``scale`` and ``margin`` are trusted (the head validates them when they are set); the logits and targets
    are checked as in :func:`additive_angular_margin_loss`, with the same messages, naming ``logits``.
    """
    c = _check_cosine(scaled_cosine, "logits")
    t = check_targets(targets, c, multi_label, "logits")
    return _margin_loss(_margin_logits(c, t, scale, margin, multi_label), t, multi_label, reduction)


def scaled_cosine_margin_logits(
    scaled_cosine: Tensor,
    targets: Tensor,
    *,
    scale: float,
    margin: float,
    multi_label: bool,
) -> Tensor:
    """:func:`additive_angular_margin_logits` of ``scaled_cosine = s cos(theta)``, for
    :meth:`rankplug.AAMAuxClassifier.margin_logits`; checked as :func:`scaled_cosine_margin_loss` is."""
    c = _check_cosine(scaled_cosine, "logits")
    t = check_targets(targets, c, multi_label, "logits")
    return _margin_logits(c, t, scale, margin, multi_label)


def additive_angular_margin_logits(
    cosine: Tensor,
    targets: Tensor,
    *,
    scale: float,
    margin: float,
    multi_label: bool = False,
) -> Tensor:
    r"""Margin-adjusted logits of ArcFace, label-geometry paper Eq. 8. Full docs: :class:`rankplug.AAMAuxClassifier`.

    .. math::
        \text{logit}_{k,y_k} = s \cos(\theta_{k,y_k} + m), \qquad \text{logit}_{k,j} = s \cos\theta_{k,j} \ (j \ne y_k)

    With ``multi_label=True`` (rankplug's extension, maths §6), attribute ``j`` gets ``s cos(theta + m)`` where
    the target is 1 and ``-s cos(pi - theta + m)`` where it is 0. ``m`` is in radians.

    Args:
        cosine: ``cos(theta)`` between normalised features and normalised class weights.
        targets: class indices ``(N,)`` (integer), or multi-hot ``(N, C)`` floats when ``multi_label``.
        scale: ``s > 0``.
        margin: ``m`` in radians, in ``[0, pi/2)``.
        multi_label: per-attribute binary decisions instead of one softmax.

    Shape:
        - cosine: ``(N, C)``.
        - targets: ``(N,)`` or ``(N, C)``.
        - Output: ``(N, C)``, float32 (float64 for float64 input).

    Example:
        >>> cosine = torch.tensor([[1.0, 0.0]], requires_grad=True)
        >>> logits = additive_angular_margin_logits(cosine, torch.tensor([0]), scale=2.0, margin=0.5)
        >>> logits
        tensor([[1.7552, 0.0000]], grad_fn=<ScatterBackward0>)
        >>> logits.sum().backward()
    """
    s = check_positive(scale, "scale")
    m = check_angular_margin(margin)
    c = _check_cosine(cosine)
    t = check_targets(targets, c, multi_label)
    return _margin_logits(s * as_float32(c), t, s, m, multi_label)


def additive_angular_margin_loss(
    cosine: Tensor,
    targets: Tensor,
    *,
    scale: float,
    margin: float,
    multi_label: bool = False,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""ArcFace loss of the auxiliary classifier, label-geometry paper Eq. 8. Full docs: :class:`rankplug.AAMAuxClassifier`.

    .. math::
        \ell_k = -\log \frac{e^{s \cos(\theta_{k,y_k} + m)}}
        {e^{s \cos(\theta_{k,y_k} + m)} + \sum_{j \ne y_k} e^{s \cos\theta_{k,j}}}

    With ``multi_label=True`` the per-sample loss is the **sum** over attributes of binary cross entropy on
    the margin logits of :func:`additive_angular_margin_logits` (so ``reduction="mean"`` is StarGAN's
    ``BCE-sum / N``); at ``m = 0`` it is BCE on ``s cos(theta)``.

    Args:
        cosine: ``cos(theta)``, ``(N, C)``.
        targets: integer labels ``(N,)``, or multi-hot floats ``(N, C)`` when ``multi_label``.
        scale: ``s > 0``.
        margin: ``m`` in radians, in ``[0, pi/2)``.
        multi_label: see :func:`additive_angular_margin_logits`.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - cosine: ``(N, C)``; targets: ``(N,)`` or ``(N, C)``.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> cosine = torch.tensor([[0.9, 0.1], [0.2, 0.8]], requires_grad=True)
        >>> loss = additive_angular_margin_loss(cosine, torch.tensor([0, 1]), scale=16.0, margin=0.3)
        >>> loss.backward()
        >>> bool(torch.isfinite(cosine.grad).all())
        True
    """
    s = check_positive(scale, "scale")
    m = check_angular_margin(margin)
    reduction = check_reduction(reduction)
    c = _check_cosine(cosine)
    t = check_targets(targets, c, multi_label)
    return _margin_loss(_margin_logits(s * as_float32(c), t, s, m, multi_label), t, multi_label, reduction)
