"""Loss modules: thin ``nn.Module`` wrappers over :mod:`rankplug.functional`, holding the full documentation.

Score conventions (maths page, "Conventions"): a critic score is a real number and **higher means more real**;
scores arrive as ``(N,)``, ``(N, 1)`` or PatchGAN maps ``(N, 1, H, W)`` (averaged per sample); tensor
arguments go real before fake, current before previous; pairwise terms pair the k-th real with the k-th fake.
A batch with nothing to learn from (every hinge inactive) returns a zero that stays in the autograd graph.

Every loss computes in float32, or in the input's dtype if wider (float64 stays float64), as torch's own
losses do under autocast: for float16 and bfloat16 scores the result is float32. NaN and inf scores are not
checked (that would cost a host sync) but propagate, so a diverged critic logs a NaN loss rather than a
finite one. All tensors must be dense and on one device. Every loss compiles with
``torch.compile(fullgraph=True)``, except :class:`GradientPenalty` (see there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rankplug import functional as F
from rankplug._validation import (
    Reduction,
    check_choice,
    check_markers,
    check_nonnegative,
    check_positive,
    check_reduction,
)
from rankplug.functional.angular import check_angular_margin
from rankplug.functional.metric import MARGIN_NORMS
from rankplug.functional.penalty import OutputSelector
from rankplug.functional.ranking import CLAMP_ON


class _PairwiseMarginLoss(nn.Module):
    """A stage-1 critic loss of paired real and fake scores with a margin, whose generator uses the WGAN loss.

    The settings, the generator loss and the repr shared by :class:`HingeMarginLoss` and
    :class:`SymmetricHingeLoss`; each subclass's ``forward`` is one call to its function.
    """

    def __init__(self, *, margin: float = 1.0, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.margin = check_nonnegative(margin, "margin")
        self.reduction: Reduction = check_reduction(reduction)

    def generator_loss(self, fake_scores: Tensor) -> Tensor:
        """The WGAN generator loss ``-D(G(z))`` (GoGAN Sec. 3.2); see :func:`rankplug.functional.wgan_generator_loss`."""
        return F.wgan_generator_loss(fake_scores, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}"


class HingeMarginLoss(_PairwiseMarginLoss):
    r"""Pairwise margin loss of the critic: MarginGAN, RankGAN Eq. 3, GoGAN Eq. 2 (maths §1).

    .. math::
        \ell_k = \big[\, D(G(z_k)) + \epsilon - D(x_k) \,\big]_+

    Each real score must beat its paired fake score by ``epsilon``. When ``epsilon`` exceeds every gap in the
    batch, all hinges are active and the loss equals the WGAN critic loss ``mean D(G(z)) - mean D(x)`` plus
    ``epsilon``, with identical gradients: this is the sense in which it generalises WGAN. The gradient with
    respect to each score is 0 or ``+-1/N`` (mean reduction), and adding one constant to every score changes
    nothing. The generator is trained with the WGAN generator loss, :meth:`generator_loss`.

    Args:
        margin: ``epsilon >= 0``, in score units.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``, as in ``torch.nn``.

    Shape:
        - real_scores: ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``.
        - fake_scores: the same batch size ``N``.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> criterion = HingeMarginLoss(margin=1.0)
        >>> real_scores = torch.randn(8, 1, requires_grad=True)
        >>> fake_scores = torch.randn(8, 1, requires_grad=True)
        >>> loss = criterion(real_scores, fake_scores)
        >>> loss.backward()
        >>> criterion.generator_loss(fake_scores).shape
        torch.Size([])
    """

    def forward(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return F.hinge_margin_loss(real_scores, fake_scores, margin=self.margin, reduction=self.reduction)


class SymmetricHingeLoss(_PairwiseMarginLoss):
    r"""The RankGAN authors' separable stage-1 critic loss, the "symmetric hinge" (maths §1).

    .. math::
        \ell_k = \tfrac12 \big( [\, m - D(x_k) \,]_+ + [\, m + D(G(z_k)) \,]_+ \big)

    Offered for reproducing the authors' code; the paper's stage-1 loss is :class:`HingeMarginLoss`. Unlike
    the pairwise margin loss it pins the scores around ``+-m`` and is not shift-invariant.

    Args:
        margin: ``m >= 0``, in score units.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - real_scores, fake_scores: ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``, the same ``N``.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> criterion = SymmetricHingeLoss(margin=1.0)
        >>> loss = criterion(torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True))
        >>> loss.backward()
    """

    def forward(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return F.symmetric_hinge_loss(real_scores, fake_scores, margin=self.margin, reduction=self.reduction)


class StageRankLoss(nn.Module):
    r"""RankGAN's stage-``i`` losses: ranking (Eq. 4) with discriminator clamping (Eq. 6), maths §3.

    Stage ``i >= 2`` trains ``D_i, G_i`` initialised from the frozen ``D_{i-1}, G_{i-1}``. **All scores come
    from the current critic** ``D_i``, including ``prev_fake_scores = D_i(G_{i-1}(z))``, which therefore
    carries a gradient into ``D_i``. (GoGAN's :class:`GoGANRankLoss` instead scores the previous samples with
    the *previous, frozen* critic.) The same ``z`` feeds ``G_i`` and ``G_{i-1}``.

    .. math::
        L_{disc} = \underbrace{[\, D_i(G_i(z)) - D_i(G_{i-1}(z)) \,]_+}_{\text{Eq. 4}}
        + \lambda_{clamp} \underbrace{\big( [\, m_{high} - D_i(x) \,]_+ + [\, D_i(G_{i-1}(z)) - m_{low} \,]_+ \big)}_{\text{Eq. 6}}

    .. math::
        L_{gen} = [\, D_i(x) - D_i(G_i(z)) \,]_+ \qquad \text{(Eq. 4, generator half)}

    The markers ``m_high = E[D_{i-1}(x)]`` and ``m_low = E[D_{i-1}(G_{i-1}(z))]`` are constants computed once
    at the start of the stage with the frozen previous stage (``rankplug.StageManager`` does this). The clamp
    stops the critic from letting ``D_i(x)`` and ``D_i(G_{i-1}(z))`` sink together. The gradient penalty of
    Eq. 7 is a separate term: :class:`GradientPenalty`.

    Args:
        m_high: marker ``E[D_{i-1}(x)]``; may be set later with :meth:`set_markers` or passed to ``forward``.
        m_low: marker ``E[D_{i-1}(G_{i-1}(z))]``, ``<= m_high``.
        clamp_weight: ``lambda_clamp >= 0``; paper 1000 (default), the authors' code 1.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        clamp_on: ``"sample"`` (Eq. 6 as printed, on each sample's scores) or ``"batch"`` (on the batch means of
            ``D_i(x)`` and ``D_i(G_{i-1}(z))``, which the markers are; rankplug's option, see
            :func:`rankplug.functional.clamp_penalty`).

    Shape:
        - real_scores, fake_scores, prev_fake_scores: ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``, the same ``N``.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> criterion = StageRankLoss(m_high=1.0, m_low=-1.0)
        >>> real_scores = torch.randn(8, requires_grad=True)       # D_i(x)
        >>> fake_scores = torch.randn(8, requires_grad=True)       # D_i(G_i(z))
        >>> prev_fake_scores = torch.randn(8, requires_grad=True)  # D_i(G_{i-1}(z)), current D_i
        >>> criterion(real_scores, fake_scores, prev_fake_scores).backward()
        >>> criterion.generator_loss(real_scores.detach(), fake_scores).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        m_high: float | Tensor | None = None,
        m_low: float | Tensor | None = None,
        clamp_weight: float = 1000.0,
        reduction: Reduction = "mean",
        clamp_on: str = "sample",
    ) -> None:
        super().__init__()
        self.clamp_weight = check_nonnegative(clamp_weight, "clamp_weight")
        self.clamp_on = check_choice(clamp_on, "clamp_on", CLAMP_ON)
        self.reduction: Reduction = check_reduction(reduction)
        self.m_high: float | None = None
        self.m_low: float | None = None
        if (m_high is None) != (m_low is None):
            raise ValueError("m_high and m_low must be given together; got only one of them")
        if m_high is not None and m_low is not None:
            self.set_markers(m_high, m_low)

    def set_markers(self, m_high: float | Tensor, m_low: float | Tensor) -> None:
        """Set the stage's markers (RankGAN Eq. 6); ``m_low <= m_high`` is required."""
        self.m_high, self.m_low = check_markers(m_high, m_low)

    def _markers(
        self, m_high: float | Tensor | None, m_low: float | Tensor | None
    ) -> tuple[float | Tensor, float | Tensor]:
        high = self.m_high if m_high is None else m_high
        low = self.m_low if m_low is None else m_low
        if high is None or low is None:
            raise ValueError(
                "the markers m_high and m_low are not set; pass them to StageRankLoss(...), set_markers(...) "
                "or the call"
            )
        return high, low

    def forward(
        self,
        real_scores: Tensor,
        fake_scores: Tensor,
        prev_fake_scores: Tensor,
        *,
        m_high: float | Tensor | None = None,
        m_low: float | Tensor | None = None,
    ) -> Tensor:
        high, low = self._markers(m_high, m_low)
        return F.stage_rank_loss(
            real_scores,
            fake_scores,
            prev_fake_scores,
            m_high=high,
            m_low=low,
            clamp_weight=self.clamp_weight,
            reduction=self.reduction,
            clamp_on=self.clamp_on,
        )

    def generator_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        """The generator half of Eq. 4, ``[D_i(x) - D_i(G_i(z))]_+``; see :func:`rankplug.functional.stage_rank_generator_loss`."""
        return F.stage_rank_generator_loss(real_scores, fake_scores, reduction=self.reduction)

    def clamp_penalty(
        self,
        real_scores: Tensor,
        prev_fake_scores: Tensor,
        *,
        m_high: float | Tensor | None = None,
        m_low: float | Tensor | None = None,
        reduction: Reduction | None = None,
    ) -> Tensor:
        """Eq. 6 on its own (unweighted); see :func:`rankplug.functional.clamp_penalty`."""
        high, low = self._markers(m_high, m_low)
        return F.clamp_penalty(
            real_scores,
            prev_fake_scores,
            m_high=high,
            m_low=low,
            reduction=self.reduction if reduction is None else reduction,
            clamp_on=self.clamp_on,
        )

    def get_extra_state(self) -> dict[str, Any]:
        return {"m_high": self.m_high, "m_low": self.m_low}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("m_high") is None or state.get("m_low") is None:
            self.m_high = self.m_low = None
        else:
            self.set_markers(state["m_high"], state["m_low"])

    def extra_repr(self) -> str:
        return (
            f"m_high={self.m_high}, m_low={self.m_low}, clamp_weight={self.clamp_weight}, reduction={self.reduction!r}"
        )


class GoGANRankLoss(nn.Module):
    r"""GoGAN's critic loss across stages, Eq. 3-5 (maths §2).

    While stage ``i+1`` is trained, **the previous, frozen critic** ``D_i`` scores the previous generator's
    samples: ``prev_fake_scores = D_i(G_i(z))``, computed without gradient (a tensor that requires grad raises
    ``ValueError``). This is the opposite of :class:`StageRankLoss`, where the *current* critic scores them.

    .. math::
        \ell_k = \lambda_1 \underbrace{[\, D_{i+1}(G_{i+1}(z_k)) + \epsilon - D_{i+1}(x_k) \,]_+}_{\text{Eq. 3}}
        + \lambda_2 \underbrace{[\, D_i(G_i(z_k)) + 2\epsilon - D_{i+1}(x_k) \,]_+}_{\text{Eq. 4}}

    Together the terms ask for ``D_{i+1}(x) >= D_{i+1}(G_{i+1}(z)) + epsilon`` and
    ``D_{i+1}(x) >= D_i(G_i(z)) + 2 epsilon``. A third-party implementation used ``epsilon = 1``,
    ``lambda_1 = 1``, ``lambda_2 = 0.5``. The generator uses the WGAN loss, :meth:`generator_loss`.

    Args:
        margin: ``epsilon >= 0``; the ranking term uses ``2 * epsilon``.
        disc_weight: ``lambda_1 >= 0``.
        rank_weight: ``lambda_2 >= 0``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - real_scores, fake_scores: ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``, the same ``N``.
        - prev_fake_scores: the same shapes and ``N``, with ``requires_grad=False`` (frozen ``D_i``).
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> criterion = GoGANRankLoss(margin=1.0, rank_weight=0.5)
        >>> real_scores = torch.randn(8, requires_grad=True)   # D_{i+1}(x)
        >>> fake_scores = torch.randn(8, requires_grad=True)   # D_{i+1}(G_{i+1}(z))
        >>> with torch.no_grad():
        ...     prev_fake_scores = torch.randn(8)              # frozen D_i(G_i(z))
        >>> criterion(real_scores, fake_scores, prev_fake_scores).backward()
    """

    def __init__(
        self, *, margin: float = 1.0, disc_weight: float = 1.0, rank_weight: float = 1.0, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        self.margin = check_nonnegative(margin, "margin")
        self.disc_weight = check_nonnegative(disc_weight, "disc_weight")
        self.rank_weight = check_nonnegative(rank_weight, "rank_weight")
        self.reduction: Reduction = check_reduction(reduction)

    def forward(self, real_scores: Tensor, fake_scores: Tensor, prev_fake_scores: Tensor) -> Tensor:
        return F.gogan_rank_loss(
            real_scores,
            fake_scores,
            prev_fake_scores,
            margin=self.margin,
            disc_weight=self.disc_weight,
            rank_weight=self.rank_weight,
            reduction=self.reduction,
        )

    def generator_loss(self, fake_scores: Tensor) -> Tensor:
        """The WGAN generator loss ``-D_{i+1}(G_{i+1}(z))``."""
        return F.wgan_generator_loss(fake_scores, reduction=self.reduction)

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, disc_weight={self.disc_weight}, rank_weight={self.rank_weight}, "
            f"reduction={self.reduction!r}"
        )


class GradientPenalty(nn.Module):
    r"""WGAN-GP gradient penalty, RankGAN Eq. 5 (maths §3).

    .. math::
        \ell_k = \lambda \big( \lVert \nabla_{\hat x} D(\hat x_k) \rVert_2 - 1 \big)^2,
        \qquad \hat x_k = a_k x_k + (1 - a_k) G(z_k), \quad a_k \sim U(0, 1)

    The norm is over the per-sample **flattened** gradient, i.e. all non-batch dimensions. (The RankGAN
    authors' code takes ``norm(dim=1)`` of a 4-D gradient, which is wrong.) The penalty builds a graph
    through the inner gradient (``create_graph=True``), so it trains ``D``.

    Discriminators that return ``(N,)``, ``(N, 1)`` or PatchGAN ``(N, 1, H, W)`` scores work as they are; for
    one that returns a tuple or dict, such as StarGAN's ``(out_src, out_cls)``, ``output_selector`` picks the
    score (``0``, a key, or a callable).

    Mixed precision: call it inside ``torch.autocast`` as you call ``D``, and pass ``scaler=`` the loop's
    ``torch.amp.GradScaler``. As in PyTorch's AMP recipe for gradient penalties, the inner gradient is taken
    of the scaled scores and unscaled in float32 before the norm; the scores are summed in float32 and the
    factor is the scaler's scale capped at ``2**8``, because the inner gradient starts from 1 per sample and
    the default scale ``2**16`` alone is inf in float16 (largest value 65504). The result is float32 (float64
    for float64 input). If the loop's outer ``scaler.scale(loss).backward()`` overflows, the scaler skips the
    step and lowers its scale, as for any loss.

    ``torch.compile``: the penalty differentiates twice (``torch.autograd.grad`` with ``create_graph=True``),
    which torch cannot compile today: dynamo refuses ``torch.autograd.grad`` (with its experimental
    ``trace_autograd_ops`` the double backward still fails), and the backward of a compiled module cannot be
    differentiated again ("torch.compile with aot_autograd does not currently support double backward").
    So compile ``D`` and the other losses for the main terms, and call the penalty eagerly on the
    **uncompiled** ``D`` (the same module, so the same parameters), as in the second example.

    Args:
        weight: ``lambda_gp >= 0``; paper 10.
        output_selector: ``None``, an index, a key, or a callable that maps ``D``'s output to the scores.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - real, fake: ``(N, *)``, identical shapes.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1))
        >>> penalty = GradientPenalty(weight=10.0)
        >>> loss = penalty(critic, torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2))
        >>> loss.backward()

        A compiled critic step: ``D`` and the margin loss compiled, the penalty eager on the uncompiled ``D``:

        >>> compiled_critic = torch.compile(critic, fullgraph=True, backend="aot_eager")
        >>> critic_loss = torch.compile(HingeMarginLoss(margin=1.0), fullgraph=True, backend="aot_eager")
        >>> real, fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
        >>> loss = critic_loss(compiled_critic(real), compiled_critic(fake)) + penalty(critic, real, fake)
        >>> loss.backward()
    """

    def __init__(
        self,
        *,
        weight: float = 10.0,
        output_selector: OutputSelector = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.weight = check_nonnegative(weight, "weight")
        self.output_selector = output_selector
        self.reduction: Reduction = check_reduction(reduction)

    def forward(
        self,
        discriminator: Callable[[Tensor], Any],
        real: Tensor,
        fake: Tensor,
        *,
        mix_weights: Tensor | None = None,
        generator: torch.Generator | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> Tensor:
        """The penalty of ``discriminator`` at ``x_hat = a x + (1 - a) G(z)``; see :func:`rankplug.functional.gradient_penalty`."""
        return F.gradient_penalty(
            discriminator,
            real,
            fake,
            weight=self.weight,
            output_selector=self.output_selector,
            mix_weights=mix_weights,
            generator=generator,
            scaler=scaler,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"weight={self.weight}, reduction={self.reduction!r}"


class TripletMetricDiscriminatorLoss(nn.Module):
    r"""MBGAN's triplet critic loss, Eq. 1 with the detached data-dependent margin of Eq. 4 (maths §5).

    Parameter-free twin of :func:`rankplug.functional.triplet_metric_discriminator_loss`; the learnable
    embedding lives in :class:`rankplug.TripletMetricDiscriminatorHead`, whose docs explain the maths.

    .. math::
        \ell_k = \big[\, h(x_{j,k}, G(z_k)) + d(x_{i,k}, x_{j,k}) - d(x_{i,k}, G(z_k)) \,\big]_+

    Args:
        alpha: margin weight ``alpha >= 0`` (paper 20).
        margin_norm: ``"mean"`` (per-pixel mean L1, default) | ``"sum"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - anchor_emb, positive_emb, fake_emb: ``(N, K)``; positive_images, fake_images: ``(N, *)``.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> criterion = TripletMetricDiscriminatorLoss(alpha=20.0)
        >>> emb = torch.randn(3, 4, 16, requires_grad=True)
        >>> loss = criterion(emb[0], emb[1], emb[2],
        ...                  positive_images=torch.rand(4, 1, 8, 8), fake_images=torch.rand(4, 1, 8, 8))
        >>> loss.backward()
    """

    def __init__(self, *, alpha: float = 20.0, margin_norm: str = "mean", reduction: Reduction = "mean") -> None:
        super().__init__()
        self.alpha = check_nonnegative(alpha, "alpha")
        self.margin_norm = check_choice(margin_norm, "margin_norm", MARGIN_NORMS)
        self.reduction: Reduction = check_reduction(reduction)

    def forward(
        self,
        anchor_emb: Tensor,
        positive_emb: Tensor,
        fake_emb: Tensor,
        *,
        positive_images: Tensor,
        fake_images: Tensor,
    ) -> Tensor:
        return F.triplet_metric_discriminator_loss(
            anchor_emb,
            positive_emb,
            fake_emb,
            positive_images=positive_images,
            fake_images=fake_images,
            alpha=self.alpha,
            margin_norm=self.margin_norm,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, margin_norm={self.margin_norm!r}, reduction={self.reduction!r}"


class TripletMetricGeneratorLoss(nn.Module):
    r"""MBGAN's generator loss, Eq. 2 (maths §5): ``d(x_j, G(z)) = ||D(x_j) - D(G(z))||_2``.

    .. math::
        \ell_k = \lVert D(x_{j,k}) - D(G(z_k)) \rVert_2

    The distance has a finite (zero) gradient where the two embeddings coincide.

    Args:
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - positive_emb, fake_emb: ``(N, K)``.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> fake_emb = torch.randn(4, 16, requires_grad=True)
        >>> TripletMetricGeneratorLoss()(torch.randn(4, 16), fake_emb).backward()
    """

    def __init__(self, *, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction: Reduction = check_reduction(reduction)

    def forward(self, positive_emb: Tensor, fake_emb: Tensor) -> Tensor:
        return F.triplet_metric_generator_loss(positive_emb, fake_emb, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class AdditiveAngularMarginLoss(nn.Module):
    r"""ArcFace loss on given cosines, label-geometry paper Eq. 8 (maths §6).

    Parameter-free twin of :func:`rankplug.functional.additive_angular_margin_loss`, for code that computes
    ``cos(theta)`` itself. The learnable head that does so is :class:`rankplug.AAMAuxClassifier`, whose docs
    explain the maths, the numerics and the multi-label extension.

    A NaN or ``+inf`` cosine anywhere in a sample, or ``-inf`` in its target column, makes that sample's loss
    NaN or inf. Cosines lie in ``[-1, 1]``; the one non-finite input with a finite loss is ``-inf`` in a
    non-target column of the single-label loss, cross entropy's masking (that class gets probability 0). The
    head never produces it: features that diverge give NaN cosines.

    .. math::
        \ell_k = -\log \frac{e^{s \cos(\theta_{k,y_k} + m)}}
        {e^{s \cos(\theta_{k,y_k} + m)} + \sum_{j \ne y_k} e^{s \cos\theta_{k,j}}}

    Args:
        scale: ``s > 0``.
        margin: ``m`` in radians, in ``[0, pi/2)``.
        multi_label: multi-hot targets with per-attribute binary decisions (rankplug's extension).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - cosine: ``(N, C)``; targets: ``(N,)`` integers, or ``(N, C)`` multi-hot floats.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> cosine = torch.rand(4, 10, requires_grad=True) * 2 - 1
        >>> AdditiveAngularMarginLoss(scale=16.0, margin=0.3)(cosine, torch.tensor([1, 2, 3, 4])).backward()
    """

    def __init__(
        self,
        *,
        scale: float,
        margin: float,
        multi_label: bool = False,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.scale = check_positive(scale, "scale")
        self.margin = check_angular_margin(margin)
        self.multi_label = bool(multi_label)
        self.reduction: Reduction = check_reduction(reduction)

    def forward(self, cosine: Tensor, targets: Tensor) -> Tensor:
        return F.additive_angular_margin_loss(
            cosine,
            targets,
            scale=self.scale,
            margin=self.margin,
            multi_label=self.multi_label,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"scale={self.scale}, margin={self.margin}, multi_label={self.multi_label}, reduction={self.reduction!r}"
