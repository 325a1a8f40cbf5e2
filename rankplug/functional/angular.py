"""The additive angular margin (ArcFace) auxiliary classifier loss, label-geometry paper Eq. 7-8 (MATH §6)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torch.autograd.function import once_differentiable

from rankplug import _kernels
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
# torch.nn.functional.normalize's floor on a norm.
_NORM_EPS = 1e-12


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
    # cosine_with_margin on trusted input, for the hot path. torch.clamp propagates NaN, so the floor under the
    # square root keeps a NaN cosine NaN.
    c = as_float32(cosine)
    if margin == 0.0:
        return c
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    sin_theta = torch.sqrt(torch.clamp(1.0 - c * c, min=_SIN_SQUARED_FLOOR))
    shifted = c * cos_m - sin_theta * sin_m
    # theta + m <= pi  <=>  cos(theta) >= cos(pi - m) = -cos(m)
    return torch.where(c >= -cos_m, shifted, c - margin * sin_m)


def _check_cosine(cosine: object) -> Tensor:
    tensor = check_tensor(cosine, "cosine")
    if tensor.dim() != 2:
        raise ValueError(f"cosine has shape {shape_str(tensor)}; expected (N, C)")
    check_batch(tensor, "cosine")
    if tensor.shape[1] == 0:
        raise ValueError(f"cosine has shape {shape_str(tensor)}; expected at least one class (C >= 1)")
    return tensor


def check_targets(
    targets: object, cosine: Tensor, multi_label: bool, cosine_name: str = "cosine", *, check_values: bool = True
) -> Tensor:
    """Validate class labels (single-label) or multi-hot targets (multi-label) for an ``(N, C)`` score.

    Type, layout, shape and device (that of ``cosine``, named ``cosine_name`` in messages) are always
    checked. The label *values* need the host (one sync), so that check is skipped while ``torch.compile``
    traces (``torch.compiler.is_compiling()``): a compiled step trusts its labels, as
    ``torch.nn.functional.cross_entropy`` does on CUDA. ``check_values=False`` skips it too, for a caller whose
    kernels check the range themselves (CPU ``gather``) and that calls back here to word the error.
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
    if not check_values or torch.compiler.is_compiling():
        return targets if targets.dtype == torch.long else targets.long()
    # One reduction and one host sync on the happy path (four elementwise passes and a sync before); the first
    # offending label is only looked up when there is one.
    low, high = torch.aminmax(targets)
    if int(low) < 0 or int(high) >= num_classes:
        out_of_range = (targets < 0) | (targets >= num_classes)
        bad = int(targets[out_of_range][0].item())
        raise ValueError(f"targets must be class indices in [0, {num_classes - 1}]; found {bad}")
    return targets if targets.dtype == torch.long else targets.long()


def _margin_logits(cosine: Tensor, targets: Tensor, scale: float, margin: float, multi_label: bool) -> Tensor:
    c = as_float32(cosine)
    if multi_label:
        # Each attribute k is a two-way choice between W_k and -W_k. A positive (t=1) attribute gets
        # cos(theta + m); a negative one is ArcFace applied to the angle pi - theta from -W_k, whose logit in
        # W_k's terms is -psi(pi - theta, m). Both make the decision harder; at m = 0 both equal cos(theta).
        positive = _cosine_with_margin(c, margin)
        negative = -_cosine_with_margin(-c, margin)
        return scale * torch.where(targets > 0.5, positive, negative)
    index = targets.unsqueeze(1)
    target_cos = _cosine_with_margin(c.gather(1, index), margin)
    return (scale * c).scatter(1, index, scale * target_cos)


class MarginConstants(NamedTuple):
    """The constants of the fused AAM path for one ``(s, m)``, as 0-d tensors of the logits' dtype and device (a
    Python number in a tensor op costs a conversion per call; these are made once, see :func:`margin_constants`)."""

    scale: Tensor  # s
    scale_squared: Tensor  # s^2
    cos_m: Tensor
    fallback_shift: Tensor  # s m sin(m): ArcFace's fallback logit is s cos(theta) - s m sin(m)
    inside_low: Tensor  # -s cos(m): theta + m <= pi  <=>  s cos(theta) >= -s cos(m)
    floor: Tensor  # s^2 times the floor under sin^2
    zero: Tensor
    one: Tensor
    margin: float
    sin_m: float


def margin_constants(scale: float, margin: float, like: Tensor) -> MarginConstants:
    """:class:`MarginConstants` of ``s = scale``, ``m = margin`` (radians) in ``like``'s dtype and device."""
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    values = (scale, scale * scale, cos_m, scale * margin * sin_m, -scale * cos_m, scale * scale * _SIN_SQUARED_FLOOR)
    s, s2, cm, shift, low, floor, zero, one = torch.tensor((*values, 0.0, 1.0), dtype=like.dtype, device=like.device)
    return MarginConstants(s, s2, cm, shift, low, floor, zero, one, margin=margin, sin_m=sin_m)


def _scaled_margin(target: Tensor, k: MarginConstants) -> tuple[Tensor, Tensor | None]:
    """``s psi(cos theta_y)`` (:func:`cosine_with_margin`) and ``psi'`` from the target column ``t = s cos theta_y``.

    In scaled units, with ``s^2 sin^2 theta = s^2 - t^2`` floored at ``s^2 * 1e-12`` (the floor of
    :func:`cosine_with_margin`): ``s psi = cos(m) t - sin(m) s sin(theta)`` where ``theta + m <= pi``, else ArcFace's
    ``t - s m sin(m)``. The slope ``psi'`` is exactly the derivative autograd takes of :func:`cosine_with_margin`:
    ``cos m + sin m cos(theta) / sin(theta)`` on the angle-addition branch where the floor is not active (there
    autograd's ``clamp`` passes no gradient to ``sin(theta)``, so ``cos m`` is left, e.g. at ``cos = +-1``); 1 on
    the fallback branch; ``None`` (1) for ``m = 0``. A NaN cosine gives NaN. Shapes: ``(N, 1)``.
    """
    if k.margin == 0.0:
        return target, None
    sin_squared = torch.addcmul(k.scale_squared, target, target, value=-1.0)  # s^2 sin^2(theta)
    sin_theta = sin_squared.clamp_min(k.floor).sqrt_()  # s sin(theta), floored
    inside = torch.ge(target, k.inside_low)
    psi = torch.where(inside, torch.add(target * k.cos_m, sin_theta, alpha=-k.sin_m), target - k.fallback_shift)
    ratio = torch.where(sin_squared >= k.floor, target / sin_theta, k.zero)  # cos(theta) / sin(theta)
    slope = torch.where(inside, torch.add(k.cos_m, ratio, alpha=k.sin_m), k.one)
    return psi, slope


class _TargetMarginCrossEntropy(torch.autograd.Function):
    r"""Cross entropy of ``s cos(theta)`` with the margin on the target column, reduced, fused (label-geometry
    paper Eq. 8, MATH §6).

    Forward: ``logit_y = s psi(cos theta_y)`` with :func:`cosine_with_margin` as ``psi``, the other logits are
    ``s cos(theta_j)`` as given, then ``-log softmax`` at the target, reduced (``"mean"``, ``"sum"`` or
    ``"none"``). Backward, written out: ``d loss / d logit_j = p_j`` for ``j != y`` and
    ``(p_y - 1) psi'(cos theta_y)`` for the target, times the reduction's weight; ``psi'`` (the derivative autograd
    would take of :func:`cosine_with_margin`, clamp included) is computed with ``psi`` in the forward, on the
    ``(N, 1)`` target column (:func:`_scaled_margin`). The composite of gather, scatter, ``cross_entropy`` and the
    reduction builds the same gradient from more full ``(N, C)`` passes (a scatter copy, the gather's zero-filled
    gradient, its accumulation, the NLL's one-hot, the mean's expansion); this is the hot path of
    :meth:`rankplug.AAMAuxClassifier.loss`. Not twice differentiable (no loss in rankplug needs that).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, scaled_cosine: Tensor, targets: Tensor, constants: MarginConstants, reduction: str
    ) -> Tensor:
        loss, log_probs, index, slope = _margin_cross_entropy(scaled_cosine, targets, constants, reduction)
        ctx.save_for_backward(log_probs, index, slope)
        ctx.reduction = reduction
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        log_probs, index, slope = ctx.saved_tensors
        return _margin_cross_entropy_backward(grad_loss, log_probs, index, slope, ctx.reduction), None, None, None


def _margin_cross_entropy(
    scaled_cosine: Tensor, targets: Tensor, constants: MarginConstants, reduction: str
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The forward of :class:`_TargetMarginCrossEntropy`: the loss and what its backward needs."""
    index = targets.unsqueeze(1)
    target = scaled_cosine.gather(1, index)  # s cos(theta_y), (N, 1); CPU kernels check the index range
    psi, slope = _scaled_margin(target, constants)
    log_probs = torch.log_softmax(scaled_cosine.scatter(1, index, psi), dim=1)
    return nnf.nll_loss(log_probs, targets, reduction=reduction), log_probs, index, slope


def _margin_cross_entropy_backward(
    grad_loss: Tensor, log_probs: Tensor, index: Tensor, slope: Tensor | None, reduction: str
) -> Tensor:
    """The backward of :class:`_TargetMarginCrossEntropy`: ``d loss / d (s cos theta)``, ``(N, C)``."""
    if reduction == "none":
        g = grad_loss.unsqueeze(1)
    else:  # a scalar: the mean's 1/N rides on it
        g = grad_loss / log_probs.shape[0] if reduction == "mean" else grad_loss
    grad = log_probs.exp().mul_(g)  # p_j * g, the softmax gradient of every logit but the target's
    # (p_y - 1) * g, chained through logit_y = s psi(l_y / s): d/dl_y = psi'(cos theta_y).
    target = grad.gather(1, index).sub_(g)
    if slope is not None:
        target.mul_(slope)
    return grad.scatter_(1, index, target)


class _ScaledCosine(torch.autograd.Function):
    r"""``s cos(theta_j) = s (phi . W_j) / (||phi|| ||W_j||)`` of :class:`rankplug.AAMAuxClassifier` (label-geometry
    paper Eq. 7), with the gradient written out.

    With ``f_i`` the feature rows, ``w_j`` the class weights, ``G`` the incoming gradient, ``M_i = (s / ||f_i||)
    sum_j G_ij w^_j`` and ``P_j = sum_i G_ij s f_i / ||f_i||`` (the two matrix products a linear layer's backward
    makes):

    .. math::
        \frac{\partial L}{\partial f_i} = M_i - \hat f_i (\hat f_i \cdot M_i), \qquad
        \frac{\partial L}{\partial w_j} = \frac{1}{\lVert w_j \rVert} \big(P_j - \hat w_j (\hat w_j \cdot P_j)\big)

    which is what autograd takes of ``normalize`` and ``linear``, instead of the normalisations' own backward
    graphs. With fewer classes than feature values (``C <= d``) ``s / ||f_i||`` scales the ``(N, C)`` output and
    the radial dot products ``f_i . M_i = sum_j G_ij out_ij`` and ``w^_j . P_j = sum_i G_ij out_ij`` are the row and
    column sums of one ``(N, C)`` product; otherwise it scales the ``(N, d)`` features and the radial parts are
    row dot products of the ``(N, d)`` and ``(C, d)`` tensors. Norms are floored at ``1e-12`` as in
    ``torch.nn.functional.normalize``; a zero row gets a zero cosine and the first term only. Not twice
    differentiable.
    """

    @staticmethod
    def forward(ctx: Any, features: Tensor, weight: Tensor, scale: Tensor) -> Tensor:  # type: ignore[override]
        feature_inv = torch.linalg.vector_norm(features, dim=1, keepdim=True).clamp_min_(_NORM_EPS).reciprocal_()
        weight_inv = torch.linalg.vector_norm(weight, dim=1, keepdim=True).clamp_min_(_NORM_EPS).reciprocal_()
        weight_hat = weight * weight_inv
        feature_scale = feature_inv * scale  # s / ||f_i||
        if weight.shape[0] <= features.shape[1]:  # C <= d: scale the (N, C) product
            scaled_features = None
            out = features.mm(weight_hat.transpose(0, 1)).mul_(feature_scale)
        else:  # C > d: scale the (N, d) features, which the backward's P reuses
            scaled_features = features * feature_scale
            out = scaled_features.mm(weight_hat.transpose(0, 1))
        kept_out = out if scaled_features is None else None  # C <= d: the radial sums from G * out (class docs)
        # weight last: the fused loss (:class:`_CosineMarginCrossEntropy`) routes its gradient to it.
        ctx.save_for_backward(
            features, weight_hat, feature_inv, feature_scale, weight_inv, scaled_features, kept_out, weight
        )
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        needs = ctx.needs_input_grad
        grad_features, grad_weight = _scaled_cosine_backward(grad_out, ctx.saved_tensors, needs[0], needs[1])
        return grad_features, grad_weight, None


def _scaled_cosine_backward(
    grad_out: Tensor, saved: tuple[Tensor, ...], needs_features: bool, needs_weight: bool
) -> tuple[Tensor | None, Tensor | None]:
    """The backward of :class:`_ScaledCosine` (its class docs) from its saved tensors."""
    features, weight_hat, feature_inv, feature_scale, weight_inv, scaled_features, out = saved[:7]
    if scaled_features is None:
        scaled = grad_out * feature_scale
        along_features, along_weight = scaled.mm(weight_hat), scaled.transpose(0, 1).mm(features)  # M, P
    else:
        along_features = grad_out.mm(weight_hat).mul_(feature_scale)
        along_weight = grad_out.transpose(0, 1).mm(scaled_features)
    # f_i . M_i = sum_j G_ij out_ij and w^_j . P_j = sum_i G_ij out_ij: from the (N, C) product when smaller.
    product = None if out is None else grad_out * out
    grad_features = grad_weight = None
    if needs_features:  # M - f (f . M) / ||f||^2
        if product is None:
            radial = torch.linalg.vecdot(features, along_features, dim=1).unsqueeze_(1)
        else:
            radial = product.sum(1, keepdim=True)
        grad_features = along_features.addcmul_(features, radial.mul_(feature_inv * feature_inv), value=-1.0)
    if needs_weight:  # (P - w^ (w^ . P)) / ||w||
        if product is None:
            radial = torch.linalg.vecdot(weight_hat, along_weight, dim=1).unsqueeze_(1)
        else:
            radial = product.sum(0).unsqueeze_(1)
        grad_weight = along_weight.addcmul_(weight_hat, radial, value=-1.0).mul_(weight_inv)
    return grad_features, grad_weight


class _CosineMarginCrossEntropy(torch.autograd.Function):
    r""":class:`_TargetMarginCrossEntropy` of the output of a :class:`_ScaledCosine`, differentiated straight to that
    function's features and class weights: one autograd node (and one backward call) instead of two.

    :meth:`rankplug.AAMAuxClassifier.loss` uses it when its logits are still the output of the head's forward (their
    ``grad_fn`` is the :class:`_ScaledCosine` node): it takes that node's saved tensors, so the forward's work is not
    repeated, and its backward is the two backward bodies chained, the same numbers as the two nodes give. The
    logits' own node stays in their graph for any other use of them. Not twice differentiable.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        features: Tensor,
        weight: Tensor,
        scaled_cosine: Tensor,
        targets: Tensor,
        constants: MarginConstants,
        reduction: str,
        cosine_saved: tuple[Tensor, ...],
    ) -> Tensor:
        loss, log_probs, index, slope = _margin_cross_entropy(scaled_cosine, targets, constants, reduction)
        ctx.save_for_backward(log_probs, index, slope, *cosine_saved[:7])
        ctx.reduction = reduction
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        log_probs, index, slope, *cosine_saved = ctx.saved_tensors
        grad_out = _margin_cross_entropy_backward(grad_loss, log_probs, index, slope, ctx.reduction)
        needs = ctx.needs_input_grad
        grad_features, grad_weight = _scaled_cosine_backward(grad_out, tuple(cosine_saved), needs[0], needs[1])
        return grad_features, grad_weight, None, None, None, None, None


def cosine_logits(features: Tensor, weight: Tensor, scale: Tensor) -> Tensor:
    """``s cos(theta)`` of ``(N, d)`` features and ``(C, d)`` class weights (label-geometry paper Eq. 7) on trusted
    input, ``scale`` a 0-d tensor (:attr:`MarginConstants.scale`); computed in float32 at least and outside autocast:
    :meth:`rankplug.AAMAuxClassifier.forward`'s hot path."""
    if torch.is_autocast_enabled(features.device.type):
        # Under fp16/bf16 autocast the normalisation and the 1 - cos^2 of the margin lose too much precision
        # near cos = +-1, so the head runs in (at least) float32.
        with torch.autocast(device_type=features.device.type, enabled=False):
            return cosine_logits(features, weight, scale)
    if features.dtype != weight.dtype or features.dtype in (torch.float16, torch.bfloat16):
        dtype = torch.promote_types(as_float32(features).dtype, as_float32(weight).dtype)
        features, weight = features.to(dtype), weight.to(dtype)
    kernels = _fused_cpu(features)
    if kernels is not None:  # the compiled CPU kernel (rankplug._kernels): the same numbers, one C++ node
        fused: Tensor = kernels.scaled_cosine(features.contiguous(), weight.contiguous(), float(scale))
        return fused
    out: Tensor = _ScaledCosine.apply(features, weight, scale if scale.dtype == features.dtype else scale.to(features))
    return out


_REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}  # as rankplug/csrc/aam_cpu.cpp takes them
_FUSED_DTYPES = (torch.float32, torch.float64)  # the dtypes the compiled kernel takes


def _fused_cpu(tensor: Tensor) -> Any:
    """:func:`rankplug._kernels.aam_cpu` when ``tensor`` (and so the rest of the call, checked to share its device
    and dtype) suits the compiled kernel: a dense float32 / float64 CPU tensor outside ``torch.compile`` and
    TorchScript; else ``None`` (the eager path)."""
    if (
        tensor.device.type != "cpu"
        or tensor.dtype not in _FUSED_DTYPES
        or tensor.layout != torch.strided
        or torch.compiler.is_compiling()
        or torch.jit.is_scripting()
    ):
        return None
    return _kernels.aam_cpu()


def _per_sample_loss(logits: Tensor, targets: Tensor, multi_label: bool) -> Tensor:
    if multi_label:
        return nnf.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").sum(dim=1)
    return nnf.cross_entropy(logits, targets, reduction="none")


def scaled_cosine_margin_loss(
    scaled_cosine: Tensor,
    targets: Tensor,
    *,
    scale: float,
    margin: float,
    multi_label: bool,
    reduction: Reduction,
    constants: MarginConstants | None = None,
) -> Tensor:
    """:func:`additive_angular_margin_loss` of ``scaled_cosine = s cos(theta)`` (label-geometry paper Eq. 8, MATH §6),
    for :meth:`rankplug.AAMAuxClassifier.loss`.

    ``scale`` and ``margin`` are trusted (the head validates them when they are set); the cosines and targets
    are checked as in :func:`additive_angular_margin_loss`, with the same messages. ``constants`` are
    :func:`margin_constants` of ``(scale, margin)`` in the computation dtype (the head keeps them), made here when
    ``None``.
    """
    c = _check_cosine(scaled_cosine)
    # On the CPU the label values are checked by gather's own bounds check inside the fused loss (no extra
    # reduction or host sync); an out-of-range label then gets check_targets' message from the slow path below.
    on_cpu = c.device.type == "cpu"
    t = check_targets(targets, c, multi_label, "logits", check_values=multi_label or not on_cpu)
    if multi_label:
        logits = _margin_logits(as_float32(c) / scale, t, scale, margin, True)
        return reduce(_per_sample_loss(logits, t, True), reduction)
    if reduction not in ("mean", "sum", "none"):
        check_reduction(reduction)  # raises
    c = as_float32(c)
    kernels = _fused_cpu(c)
    if kernels is None and (
        constants is None or constants.scale.dtype != c.dtype or constants.scale.device != c.device
    ):
        constants = margin_constants(scale, margin, c)
    try:
        if kernels is not None:  # the compiled CPU kernel (rankplug._kernels): one C++ node, checks its labels
            fused: Tensor = kernels.margin_cross_entropy(
                c.contiguous(), t.contiguous(), float(scale), float(margin), _REDUCTION_CODES[reduction]
            )
            return fused
        assert constants is not None
        node = None if torch.compiler.is_compiling() else c.grad_fn  # dynamo cannot trace a grad_fn
        if type(node) is _ScaledCosine._backward_cls:
            # The logits are a _ScaledCosine's output, unmodified (an in-place change would have replaced the
            # grad_fn): one fused node from its features and weights (a RuntimeError here, e.g. a saved tensor
            # changed in place since, is what the two nodes' backward would raise).
            saved = node.saved_tensors  # type: ignore[union-attr]
            out: Tensor = _CosineMarginCrossEntropy.apply(
                saved[0], saved[7], c.detach(), t, constants, reduction, saved
            )
        else:
            out = _TargetMarginCrossEntropy.apply(c, t, constants, reduction)
    except RuntimeError:
        if on_cpu:
            check_targets(t, c, False, "logits")  # raises the ValueError naming the label, if that was the cause
        raise
    return out


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
    c = _check_cosine(scaled_cosine)
    t = check_targets(targets, c, multi_label, "logits")
    return _margin_logits(as_float32(c) / scale, t, scale, margin, multi_label)


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

    With ``multi_label=True`` (rankplug's extension, MATH §6), attribute ``j`` gets ``s cos(theta + m)`` where
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
    return _margin_logits(c, t, s, m, multi_label)


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
    return reduce(_per_sample_loss(_margin_logits(c, t, s, m, multi_label), t, multi_label), reduction)
