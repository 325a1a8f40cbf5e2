"""The WGAN-GP gradient penalty, RankGAN Eq. 5 (MATH §3)."""

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
    check_tensor,
    per_sample_scores,
    reduce,
    shape_str,
)

OutputSelector = Union[int, str, Callable[[Any], Tensor], None]


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
    r"""WGAN-GP gradient penalty, RankGAN Eq. 5 (MATH §3). Full docs: :class:`rankplug.GradientPenalty`.

    .. math::
        \ell_k = \lambda \big( \lVert \nabla_{\hat x} D(\hat x_k) \rVert_2 - 1 \big)^2,
        \qquad \hat x_k = a_k x_k + (1 - a_k) G(z_k), \quad a_k \sim U(0, 1)

    The norm is taken over the per-sample **flattened** gradient (all non-batch dimensions), not over
    ``dim=1`` of a 4-D gradient as in the RankGAN authors' code.

    Args:
        discriminator: any callable ``D``; its output may be a tensor or a tuple/dict picked by ``output_selector``.
        real: real samples ``x``.
        fake: generated samples ``G(z)``; detached internally, so no gradient reaches the generator.
        weight: ``lambda_gp >= 0`` (paper: 10).
        output_selector: picks the score from a tuple/dict output (``0`` for StarGAN), or a callable.
        mix_weights: optional per-sample ``a`` in ``[0, 1]``, shape ``(N,)``; drawn from ``U(0, 1)`` if omitted.
        generator: optional ``torch.Generator`` for drawing ``a``.
        scaler: the ``torch.amp.GradScaler`` of a mixed-precision loop. The inner gradient is taken of the
            *scaled* scores and unscaled before the norm, so fp16 gradients neither underflow nor overflow.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - real, fake: ``(N, *)``, identical shapes.
        - discriminator output (after selection): ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``.

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
    if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"scaler must be a torch.amp.GradScaler or None; got {type(scaler).__name__}")
    if mix_weights is None:
        mix_weights = torch.rand(n, device=real.device, dtype=torch.float32, generator=generator)
    else:
        check_tensor(mix_weights, "mix_weights")
        if mix_weights.shape != (n,):
            raise ValueError(f"mix_weights has shape {shape_str(mix_weights)}; expected ({n},)")
    # Under torch.no_grad() (e.g. for logging) the penalty is still computed, just without a graph.
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        x_hat = interpolate(real.detach(), fake.detach(), mix_weights).requires_grad_(True)
        scores = per_sample_scores(select_scores(discriminator(x_hat), output_selector), "discriminator output")
        if scores.shape[0] != n:
            raise ValueError(f"the discriminator returned {scores.shape[0]} scores for a batch of {n}")
        # Samples are independent (WGAN-GP critics have no batch-dependent layers), so the gradient of the
        # summed scores holds each sample's own input gradient.
        outputs = scores.sum()
        if scaler is not None and scaler.is_enabled():
            outputs = scaler.scale(outputs)
        (grad,) = torch.autograd.grad(outputs, x_hat, create_graph=create_graph, materialize_grads=True)
    # Norms and squares in float32: an fp16 gradient squared overflows above 256.
    grad = as_float32(grad)
    if scaler is not None and scaler.is_enabled():
        grad = grad / scaler.get_scale()
    norms = torch.linalg.vector_norm(grad.flatten(1), ord=2, dim=1)
    return reduce(lam * (norms - 1.0) ** 2, reduction)
