"""The margin loss of MarginGAN (RankGAN Eq. 3, GoGAN Eq. 2) and the WGAN generator loss (maths §1)."""

from __future__ import annotations

from torch import Tensor

from rankplug._validation import (
    Reduction,
    check_nonnegative,
    check_reduction,
    hinge,
    paired_scores,
    per_sample_scores,
    reduce,
)


def hinge_margin_loss(
    real_scores: Tensor, fake_scores: Tensor, *, margin: float = 1.0, reduction: Reduction = "mean"
) -> Tensor:
    r"""Pairwise margin loss of the critic, RankGAN Eq. 3 / GoGAN Eq. 2. Full docs: :class:`rankplug.HingeMarginLoss`.

    .. math::
        \ell_k = \big[\, D(G(z_k)) + \epsilon - D(x_k) \,\big]_+

    Args:
        real_scores: critic scores on real samples ``D(x)``; higher means more real.
        fake_scores: critic scores on generated samples ``D(G(z))``, paired with ``real_scores``.
        margin, reduction: the settings of :class:`rankplug.HingeMarginLoss`.

    Shape:
        As for :class:`rankplug.HingeMarginLoss`. Output: scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> real = torch.tensor([2.0, 0.5], requires_grad=True)
        >>> fake = torch.tensor([0.0, 0.0], requires_grad=True)
        >>> loss = hinge_margin_loss(real, fake, margin=1.0)  # mean of [0 + 1 - 2]_+ and [0 + 1 - 0.5]_+
        >>> loss
        tensor(0.2500, grad_fn=<MeanBackward0>)
        >>> loss.backward()
        >>> fake.grad  # only the active hinge passes a gradient, 1/N
        tensor([0.0000, 0.5000])
    """
    margin = check_nonnegative(margin, "margin")
    reduction = check_reduction(reduction)
    real, fake = paired_scores(real_scores=real_scores, fake_scores=fake_scores)
    return reduce(hinge(fake + margin - real), reduction)


def symmetric_hinge_loss(
    real_scores: Tensor, fake_scores: Tensor, *, margin: float = 1.0, reduction: Reduction = "mean"
) -> Tensor:
    r"""The RankGAN authors' separable stage-1 critic loss (maths §1). Full docs: :class:`rankplug.SymmetricHingeLoss`.

    .. math::
        \ell_k = \tfrac12 \big( [\, m - D(x_k) \,]_+ + [\, m + D(G(z_k)) \,]_+ \big)

    Arguments as for :func:`hinge_margin_loss`; the settings are those of :class:`rankplug.SymmetricHingeLoss`.

    Shape:
        As for :class:`rankplug.SymmetricHingeLoss`. Output: scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> real = torch.tensor([2.0, 0.5], requires_grad=True)
        >>> fake = torch.tensor([-2.0, 0.5], requires_grad=True)
        >>> loss = symmetric_hinge_loss(real, fake, margin=1.0)
        >>> loss
        tensor(0.5000, grad_fn=<MeanBackward0>)
        >>> loss.backward()
    """
    margin = check_nonnegative(margin, "margin")
    reduction = check_reduction(reduction)
    real, fake = paired_scores(real_scores=real_scores, fake_scores=fake_scores)
    return reduce(0.5 * (hinge(margin - real) + hinge(margin + fake)), reduction)


def wgan_generator_loss(fake_scores: Tensor, *, reduction: Reduction = "mean") -> Tensor:
    r"""The WGAN generator loss, used with the margin loss (GoGAN Sec. 3.2, maths §1).

    .. math::
        \ell_k = -D(G(z_k))

    Args:
        fake_scores: critic scores on generated samples.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - fake_scores: ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> fake = torch.tensor([0.5, -1.5], requires_grad=True)
        >>> loss = wgan_generator_loss(fake)
        >>> loss.backward()
        >>> loss.item(), fake.grad.tolist()  # -mean D(G(z)) and -1/N per sample
        (0.5, [-0.5, -0.5])
    """
    reduction = check_reduction(reduction)
    fake = per_sample_scores(fake_scores, "fake_scores")
    return reduce(-fake, reduction)
