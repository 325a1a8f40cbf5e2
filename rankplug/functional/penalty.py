"""The WGAN-GP gradient penalty, RankGAN Eq. 5 (maths §3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import torch
from torch import Tensor

from rankplug._validation import (
    Reduction,
    as_float32,
    check_batch,
    check_nonnegative,
    check_reduction,
    check_same_device,
    check_tensor,
    per_sample_scores,
    reduce,
    shape_str,
)

OutputSelector = Union[int, str, Callable[[Any], Tensor], None]

# The largest factor the inner gradient is scaled by. A GradScaler's scale (2**16 by default) is meant for a
# loss whose gradient reaches each activation divided among many terms; the inner gradient here is seeded
# with d(sum of scores)/d(score) = 1, so seeding it with 2**16 is already inf in float16 (whose largest value
# is 65504) and every gradient behind it is NaN. A critic under the penalty has input gradients of norm near 1,
# so 2**8 lifts them far above float16's underflow and leaves a factor 2**8 of headroom below its overflow.
# (The outer backward, scaler.scale(loss).backward(), is the scaler's own business: if it overflows, the
# scaler skips the step and lowers its scale, as for any loss.)
_MAX_INNER_SCALE = 2.0**8


def select_scores(output: Any, output_selector: OutputSelector) -> Tensor:
    """Pick the realness score out of a discriminator's output.

    ``output_selector`` may be ``None`` (the output is the score tensor), an ``int`` (index into a tuple or
    list, e.g. ``0`` for StarGAN's ``(out_src, out_cls)``), a ``str`` (key into a dict) or a callable.
    """
    if output_selector is None:
        if isinstance(output, Tensor):
            return output
        raise TypeError(
            f"the discriminator returned a {type(output).__name__}, not a Tensor; pass output_selector "
            "(an index such as 0 for StarGAN's (out_src, out_cls), a dict key, or a callable) to pick the score"
        )
    if callable(output_selector):
        selected = output_selector(output)
    elif isinstance(output_selector, (int, str)) and not isinstance(output_selector, bool):
        try:
            selected = output[output_selector]
        except (IndexError, KeyError, TypeError) as error:
            raise ValueError(
                f"output_selector={output_selector!r} does not select anything from the discriminator's "
                f"{type(output).__name__} output ({error})"
            ) from None
    else:
        raise TypeError(
            f"output_selector must be None, an int, a str or a callable; got {type(output_selector).__name__}"
        )
    if not isinstance(selected, Tensor):
        raise TypeError(f"output_selector selected a {type(selected).__name__}; expected a Tensor of scores")
    return selected


def interpolate(real: Tensor, fake: Tensor, mix_weights: Tensor) -> Tensor:
    """``a * real + (1 - a) * fake`` with one weight ``a`` per sample, broadcast over the non-batch dims.

    Mixed dtypes (bfloat16 fakes from an autocast generator, float32 reals) are promoted first: ``torch.lerp``
    refuses to mix them.
    """
    dtype = torch.promote_types(real.dtype, fake.dtype)
    a = mix_weights.reshape(-1, *([1] * (real.dim() - 1))).to(dtype)
    return torch.lerp(fake.to(dtype), real.to(dtype), a)


def gradient_penalty(
    discriminator: Callable[[Tensor], Any],
    real: Tensor,
    fake: Tensor,
    *,
    weight: float = 10.0,
    output_selector: OutputSelector = None,
    mix_weights: Tensor | None = None,
    generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""WGAN-GP gradient penalty, RankGAN Eq. 5 (maths §3). Full docs: :class:`rankplug.GradientPenalty`.

    .. math::
        \ell_k = \lambda \big( \lVert \nabla_{\hat x} D(\hat x_k) \rVert_2 - 1 \big)^2,
        \qquad \hat x_k = a_k x_k + (1 - a_k) G(z_k), \quad a_k \sim U(0, 1)

    The norm is taken over the per-sample **flattened** gradient (all non-batch dimensions), not over
    ``dim=1`` of a 4-D gradient as in the RankGAN authors' code. A NaN or inf score makes that sample's
    penalty NaN. The double backward cannot be compiled by ``torch.compile`` today; compile ``D`` and the
    other losses and call this eagerly on the uncompiled ``D`` (:class:`rankplug.GradientPenalty` shows how).

    Args:
        discriminator: any callable ``D``; its output may be a tensor or a tuple/dict picked by ``output_selector``.
        real: real samples ``x``.
        fake: generated samples ``G(z)``; detached internally, so no gradient reaches the generator.
        weight: ``lambda_gp >= 0`` (paper: 10).
        output_selector: picks the score from a tuple/dict output (``0`` for StarGAN), or a callable.
        mix_weights: optional per-sample ``a``, finite and in ``[0, 1]`` (checked with one host sync), shape
            ``(N,)``; drawn from ``U(0, 1)`` if omitted.
        generator: optional ``torch.Generator`` for drawing ``a``.
        scaler: the ``torch.amp.GradScaler`` of a mixed-precision loop. The inner gradient is taken of the
            float32 sum of the scores scaled by ``min(scale, 2**8)`` and unscaled in float32 before the norm, so
            fp16 gradients neither underflow nor overflow (the full default scale, 2**16, is inf in fp16).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - real, fake: ``(N, *)``, identical shapes.
        - discriminator output (after selection): ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; float32 (float64 for float64 input), also
          under fp16/bf16 autocast.

    Example:
        >>> critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1))
        >>> real, fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
        >>> penalty = gradient_penalty(critic, real, fake, weight=10.0)
        >>> penalty.backward()
        >>> critic[1].weight.grad.shape
        torch.Size([1, 12])
    """
    lam = check_nonnegative(weight, "weight")
    reduction = check_reduction(reduction)
    check_tensor(real, "real")
    check_tensor(fake, "fake")
    n = check_batch(real, "real")
    check_batch(fake, "fake")
    if real.shape != fake.shape:
        raise ValueError(
            f"fake has shape {shape_str(fake)} but real has shape {shape_str(real)}; expected identical shapes"
        )
    check_same_device(real=real, fake=fake)
    if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"scaler must be a torch.amp.GradScaler or None; got {type(scaler).__name__}")
    if mix_weights is None:
        mix_weights = torch.rand(n, device=real.device, dtype=torch.float32, generator=generator)
    else:
        check_mix_weights(mix_weights, real)
    # Under torch.no_grad() (e.g. for logging) the penalty is still computed, just without a graph.
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        x_hat = interpolate(real.detach(), fake.detach(), mix_weights).requires_grad_(True)
        # per_sample_scores returns float32 (or float64) scores, so the sum below cannot overflow in fp16.
        scores = per_sample_scores(select_scores(discriminator(x_hat), output_selector), "discriminator output")
        if scores.shape[0] != n:
            raise ValueError(f"the discriminator returned {scores.shape[0]} scores for a batch of {n}")
        # Samples are independent (WGAN-GP critics have no batch-dependent layers), so the gradient of the
        # summed scores holds each sample's own input gradient.
        outputs = scores.sum()
        inner_scale = _inner_scale(scaler, outputs)
        if inner_scale is not None:
            outputs = outputs * inner_scale
        (grad,) = torch.autograd.grad(outputs, x_hat, create_graph=create_graph, materialize_grads=True)
    # Unscaled, normed and squared in float32: an fp16 gradient squared overflows above 256.
    grad = as_float32(grad)
    if inner_scale is not None:
        grad = grad / inner_scale
    norms = torch.linalg.vector_norm(grad.flatten(1), ord=2, dim=1)
    # A critic whose gradient does not depend on its input (a linear one) has a finite gradient even where its
    # score is NaN or inf; adding 0 * score (0 when finite, NaN otherwise) keeps a diverged score visible. The
    # score is detached, so this costs no backward pass.
    return reduce(lam * (norms - 1.0) ** 2 + 0.0 * scores.detach(), reduction)


def check_mix_weights(mix_weights: object, real: Tensor) -> Tensor:
    """Raise unless ``mix_weights`` is a dense floating-point ``(N,)`` tensor on ``real``'s device, of finite
    values in ``[0, 1]``.

    The range is checked on the host (one sync), only when weights are given; while compiling it is skipped.
    """
    tensor = check_tensor(mix_weights, "mix_weights")
    n = real.shape[0]
    if tensor.shape != (n,):
        raise ValueError(f"mix_weights has shape {shape_str(tensor)}; expected ({n},)")
    check_same_device(real=real, mix_weights=tensor)
    if not torch.compiler.is_compiling():
        # NaN fails both comparisons, so ~(0 <= a <= 1) catches it along with the values out of range.
        outside = ~((tensor >= 0) & (tensor <= 1))
        if bool(outside.any()):
            bad = tensor[outside][0].item()
            raise ValueError(f"mix_weights must be finite and in [0, 1]; found {bad}")
    return tensor


def _inner_scale(scaler: torch.amp.GradScaler | None, outputs: Tensor) -> Tensor | None:
    """The factor for the inner gradient: the scaler's scale capped at ``_MAX_INNER_SCALE``, or ``None``.

    ``scaler.scale`` of a one gives the scale as a tensor on the outputs' device, with no host sync (unlike
    ``scaler.get_scale()``, which calls ``.item()``).
    """
    if scaler is None or not scaler.is_enabled():
        return None
    scale = scaler.scale(torch.ones((), device=outputs.device, dtype=outputs.dtype))
    return scale.clamp(max=_MAX_INNER_SCALE)
