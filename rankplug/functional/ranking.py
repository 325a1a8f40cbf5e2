"""Ranking losses across stages: RankGAN Eq. 4 and 6 (maths §3) and GoGAN Eq. 3-5 (maths §2).

The two families differ in *which discriminator* scores the previous generator's samples:

- RankGAN (:func:`stage_rank_loss`): the **current** critic ``D_i`` scores ``G_{i-1}(z)``, so
  ``prev_fake_scores`` carries a gradient into ``D_i``.
- GoGAN (:func:`gogan_rank_loss`): the **previous, frozen** critic ``D_i`` scores ``G_i(z)`` while
  ``D_{i+1}`` is trained, so ``prev_fake_scores`` must carry no gradient at all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rankplug._validation import (
    Reduction,
    check_markers,
    check_nonnegative,
    check_reduction,
    hinge,
    paired_scores,
    reduce,
)


def _markers(m_high: float | Tensor, m_low: float | Tensor) -> tuple[float | Tensor, float | Tensor]:
    """The validated markers as floats; while compiling, tensor markers pass as detached 0-d tensors.

    Validating a tensor marker reads it on the host (``.item()``), which a compiled graph cannot do; the eager
    call (and :meth:`rankplug.StageRankLoss.set_markers`, which stores floats) checks them.
    """
    if torch.compiler.is_compiling() and (isinstance(m_high, Tensor) or isinstance(m_low, Tensor)):
        high = m_high.detach().reshape(()) if isinstance(m_high, Tensor) else m_high
        low = m_low.detach().reshape(()) if isinstance(m_low, Tensor) else m_low
        return high, low
    return check_markers(m_high, m_low)


#: Where RankGAN's clamp (Eq. 6) is measured: on each sample, as printed, or on the batch means.
CLAMP_ON = ("sample", "batch")


def _clamp_terms(
    real: Tensor, prev_fake: Tensor, m_high: float | Tensor, m_low: float | Tensor, clamp_on: str = "sample"
) -> Tensor:
    # RankGAN Eq. 6: keep D_i(x) above the previous stage's real level and D_i(G_{i-1}(z)) below its fake level.
    if clamp_on == "batch":  # on the batch means, the quantities the markers are (one term, shared by every sample)
        return (hinge(m_high - real.mean()) + hinge(prev_fake.mean() - m_low)).expand_as(real)
    return hinge(m_high - real) + hinge(prev_fake - m_low)


def _check_clamp_on(clamp_on: object) -> str:
    if clamp_on not in CLAMP_ON:
        raise ValueError(f"clamp_on must be one of {CLAMP_ON}; got {clamp_on!r}")
    return str(clamp_on)


def clamp_penalty(
    real_scores: Tensor,
    prev_fake_scores: Tensor,
    *,
    m_high: float | Tensor,
    m_low: float | Tensor,
    reduction: Reduction = "mean",
    clamp_on: str = "sample",
) -> Tensor:
    r"""RankGAN's discriminator clamping penalty, Eq. 6. Full docs: :class:`rankplug.StageRankLoss`.

    .. math::
        \ell_k = [\, m_{high} - D_i(x_k) \,]_+ + [\, D_i(G_{i-1}(z_k)) - m_{low} \,]_+

    With ``clamp_on="batch"`` the two hinges take the batch means of the scores instead (every sample gets the same
    term): the markers are means, so a per-sample clamp is violated by about half the samples by construction,
    while the batch-mean clamp can be met.

    Args:
        real_scores: the **current** critic ``D_i`` on real samples.
        prev_fake_scores: the **current** critic ``D_i`` on the previous generator's samples ``G_{i-1}(z)``.
        m_high, m_low, reduction, clamp_on: the settings of :class:`rankplug.StageRankLoss`; the markers are
            constants.

    Shape:
        As for :class:`rankplug.StageRankLoss`, without ``fake_scores``. Output: scalar, or ``(N,)``.

    Example:
        >>> real = torch.tensor([0.5, 2.0], requires_grad=True)
        >>> prev_fake = torch.tensor([-1.0, 0.5], requires_grad=True)
        >>> loss = clamp_penalty(real, prev_fake, m_high=1.0, m_low=0.0)
        >>> loss
        tensor(0.5000, grad_fn=<MeanBackward0>)
        >>> loss.backward()
    """
    high, low = _markers(m_high, m_low)
    reduction = check_reduction(reduction)
    clamp_on = _check_clamp_on(clamp_on)
    real, prev_fake = paired_scores(real_scores=real_scores, prev_fake_scores=prev_fake_scores)
    return reduce(_clamp_terms(real, prev_fake, high, low, clamp_on), reduction)


def stage_rank_loss(
    real_scores: Tensor,
    fake_scores: Tensor,
    prev_fake_scores: Tensor,
    *,
    m_high: float | Tensor,
    m_low: float | Tensor,
    clamp_weight: float = 1000.0,
    reduction: Reduction = "mean",
    clamp_on: str = "sample",
) -> Tensor:
    r"""RankGAN's stage-``i`` critic loss: Eq. 4 plus ``clamp_weight`` times Eq. 6. Full docs: :class:`rankplug.StageRankLoss`.

    .. math::
        \ell_k = [\, D_i(G_i(z_k)) - D_i(G_{i-1}(z_k)) \,]_+
        + \lambda_{clamp} \big( [\, m_{high} - D_i(x_k) \,]_+ + [\, D_i(G_{i-1}(z_k)) - m_{low} \,]_+ \big)

    All three score tensors come from the **current** critic ``D_i`` (the one being trained); the same ``z``
    feeds ``G_i`` and ``G_{i-1}``. The gradient penalty of Eq. 7 is separate: :func:`gradient_penalty`.

    Args:
        real_scores: ``D_i(x)``.
        fake_scores: ``D_i(G_i(z))``, the current generator's samples.
        prev_fake_scores: ``D_i(G_{i-1}(z))``, the **current** critic on the previous generator's samples.
        m_high, m_low, clamp_weight, reduction, clamp_on: the settings of :class:`rankplug.StageRankLoss`.

    Shape:
        As for :class:`rankplug.StageRankLoss`. Output: scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> real = torch.tensor([1.5, 1.0], requires_grad=True)
        >>> fake = torch.tensor([0.5, -1.0], requires_grad=True)
        >>> prev_fake = torch.tensor([0.0, -0.5], requires_grad=True)
        >>> loss = stage_rank_loss(real, fake, prev_fake, m_high=1.0, m_low=0.0)
        >>> loss
        tensor(0.2500, grad_fn=<MeanBackward0>)
        >>> loss.backward()
    """
    high, low = _markers(m_high, m_low)
    weight = check_nonnegative(clamp_weight, "clamp_weight")
    reduction = check_reduction(reduction)
    clamp_on = _check_clamp_on(clamp_on)
    real, fake, prev_fake = paired_scores(
        real_scores=real_scores, fake_scores=fake_scores, prev_fake_scores=prev_fake_scores
    )
    return reduce(hinge(fake - prev_fake) + weight * _clamp_terms(real, prev_fake, high, low, clamp_on), reduction)


def stage_rank_generator_loss(
    real_scores: Tensor,
    fake_scores: Tensor,
    *,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""The generator half of RankGAN Eq. 4. Full docs: :class:`rankplug.StageRankLoss`.

    .. math::
        \ell_k = [\, D_i(x_k) - D_i(G_i(z_k)) \,]_+

    Args:
        real_scores: ``D_i(x)`` (usually detached: the generator step does not train ``D_i``).
        fake_scores: ``D_i(G_i(z))``, with a gradient into ``G_i``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        As for :class:`rankplug.StageRankLoss`, without ``prev_fake_scores``. Output: scalar, or ``(N,)``.

    Example:
        >>> real = torch.tensor([1.0, 1.0])
        >>> fake = torch.tensor([0.0, 0.5], requires_grad=True)
        >>> loss = stage_rank_generator_loss(real, fake)
        >>> loss
        tensor(0.7500, grad_fn=<MeanBackward0>)
        >>> loss.backward()
        >>> fake.grad
        tensor([-0.5000, -0.5000])
    """
    reduction = check_reduction(reduction)
    real, fake = paired_scores(real_scores=real_scores, fake_scores=fake_scores)
    return reduce(hinge(real - fake), reduction)


def gogan_rank_loss(
    real_scores: Tensor,
    fake_scores: Tensor,
    prev_fake_scores: Tensor,
    *,
    margin: float = 1.0,
    disc_weight: float = 1.0,
    rank_weight: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""GoGAN's stage-``i+1`` critic loss, Eq. 3-5. Full docs: :class:`rankplug.GoGANRankLoss`.

    .. math::
        \ell_k = \lambda_1 [\, D_{i+1}(G_{i+1}(z_k)) + \epsilon - D_{i+1}(x_k) \,]_+
        + \lambda_2 [\, D_i(G_i(z_k)) + 2\epsilon - D_{i+1}(x_k) \,]_+

    Unlike :func:`stage_rank_loss`, ``prev_fake_scores`` is the **previous, frozen** critic ``D_i`` on the
    previous generator's samples ``G_i(z)``. It must not require grad; a tensor that does raises
    ``ValueError`` (it almost always means the current critic was used by mistake).

    Args:
        real_scores: ``D_{i+1}(x)``, the critic being trained.
        fake_scores: ``D_{i+1}(G_{i+1}(z))``.
        prev_fake_scores: ``D_i(G_i(z))`` from the **frozen previous** critic, with no gradient.
        margin, disc_weight, rank_weight, reduction: the settings of :class:`rankplug.GoGANRankLoss`.

    Shape:
        As for :class:`rankplug.GoGANRankLoss`. Output: scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> real = torch.tensor([3.0, 1.0], requires_grad=True)
        >>> fake = torch.tensor([1.0, 1.0], requires_grad=True)
        >>> prev_fake = torch.tensor([0.0, 0.0])  # frozen D_i on G_i(z): no grad
        >>> loss = gogan_rank_loss(real, fake, prev_fake, margin=1.0)
        >>> loss  # mean of (0 + 0) and ([1 + 1 - 1]_+ + [0 + 2 - 1]_+)
        tensor(1., grad_fn=<MeanBackward0>)
        >>> loss.backward()
    """
    margin = check_nonnegative(margin, "margin")
    lambda_disc = check_nonnegative(disc_weight, "disc_weight")
    lambda_rank = check_nonnegative(rank_weight, "rank_weight")
    reduction = check_reduction(reduction)
    real, fake, prev_fake = paired_scores(
        real_scores=real_scores, fake_scores=fake_scores, prev_fake_scores=prev_fake_scores
    )
    if prev_fake.requires_grad:
        raise ValueError(
            "prev_fake_scores requires grad; expected scores of the previous, frozen discriminator D_i "
            "(computed under torch.no_grad() or from a frozen copy). If you meant the current discriminator "
            "on the previous generator's samples, that is RankGAN's StageRankLoss"
        )
    disc = hinge(fake + margin - real)  # GoGAN Eq. 3
    rank = hinge(prev_fake + 2.0 * margin - real)  # GoGAN Eq. 4: the 2-epsilon ranking margin
    return reduce(lambda_disc * disc + lambda_rank * rank, reduction)
