"""The stage recipe, once: which losses a method trains with at each stage, and who judges ``G_{i-1}(z)``.

Every host of rankplug (the trainer, the DCGAN criterion, the StyleGAN2-ADA loss, a user's own loop) asks a
:class:`StageObjective` for the critic loss and the generator loss of the current stage instead of writing the
recipe again:

=========  ===================================================  ======================  ===========================
variant    critic loss                                          judge of G_{i-1}(z)     generator loss
=========  ===================================================  ======================  ===========================
rankgan    stage 1: margin loss (RankGAN Eq. 3) + GP (Eq. 5);    stage >= 2: current D   stage 1: ``-D(G(z))``;
           stage >= 2: ranking + clamp (Eq. 4 + 6) + GP                                  stage >= 2: Eq. 4's half
gogan      stage 1: margin loss + GP; stage >= 2: GoGAN Eq. 3-5  stage >= 2: frozen      ``-D(G(z))``
           + GP                                                 ``D_{i-1}``
margin     margin loss (Eq. 3) + GP, every stage                none                    ``-D(G(z))``
wgan-gp    ``mean D(G(z)) - mean D(x)`` + GP                    none                    ``-D(G(z))``
dcgan      ``softplus(-D(x)) + softplus(D(G(z)))``              none                    ``softplus(-D(G(z)))``
mbgan      MBGAN's triplet loss (Eq. 1 + 4) on embeddings        none                    ``d(x_j, G(z))`` (Eq. 2)
=========  ===================================================  ======================  ===========================

For the score variants ``real``/``fake``/``prev_fake`` are critic scores (higher means more real); for
``mbgan`` they are the critic's embeddings (``real`` the anchor ``x_i``, ``positive`` a second real ``x_j``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from rankplug import functional as F
from rankplug._validation import check_choice, check_nonnegative, check_positive_int, per_sample_scores
from rankplug.functional.penalty import OutputSelector
from rankplug.losses import GoGANRankLoss, HingeMarginLoss, StageRankLoss, TripletMetricDiscriminatorLoss

VARIANTS = ("rankgan", "gogan", "margin", "wgan-gp", "dcgan", "mbgan")
STAGED = ("rankgan", "gogan")
Judge = Literal["current", "previous"]


def _activity(term: Tensor) -> float:
    """The fraction of samples whose hinge term is active (positive), as a plain float for logs."""
    return float((term.detach() > 0).float().mean()) if term.numel() else 0.0


class StageObjective:
    r"""A method's objective across stages (MATH §1-§5): critic loss, generator loss and judge per stage.

    Stage 1 of RankGAN and GoGAN is MarginGAN: the margin critic loss
    :math:`\ell_k = [D(G(z_k)) + \epsilon - D(x_k)]_+` (RankGAN Eq. 3, GoGAN Eq. 2) with the WGAN generator loss
    :math:`-D(G(z))`. From stage 2 on RankGAN ranks the previous generator's samples under the **current**
    critic (Eq. 4 + 6, :class:`rankplug.StageRankLoss`) and GoGAN under the **frozen previous** critic
    (Eq. 3-5, :class:`rankplug.GoGANRankLoss`). ``margin``, ``wgan-gp``, ``dcgan`` and ``mbgan`` have one stage's
    recipe for all stages. The module docstring's table lists every case.

    .. math::
        L^{(i)}_D = \begin{cases}
        [D(G(z)) + \epsilon - D(x)]_+ & i = 1 \\
        [D_i(G_i(z)) - D_i(G_{i-1}(z))]_+ + \lambda_{clamp}\,\text{clamp}(D_i) & i \ge 2,\ \text{rankgan}
        \end{cases}
        \;+\; \lambda_{gp}\,\text{GP}

    Args:
        variant: one of ``"rankgan"``, ``"gogan"``, ``"margin"``, ``"wgan-gp"``, ``"dcgan"``, ``"mbgan"``.
        margin: ``epsilon >= 0`` of the margin and GoGAN losses, in score units.
        clamp_weight: ``lambda_clamp`` of RankGAN Eq. 6 (paper 1000).
        gp_weight: ``lambda_gp`` of Eq. 5 for the penalised variants (all but ``dcgan`` and ``mbgan``).
        alpha: MBGAN's margin weight (Eq. 4); ``mbgan`` only.
        margin_norm: MBGAN's margin norm over pixels, ``"mean"`` or ``"sum"``; ``mbgan`` only.
        disc_weight, rank_weight: GoGAN's ``lambda_1``, ``lambda_2`` (Eq. 5).

    Shape:
        - real, fake, prev_fake: scores ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``; for ``mbgan`` embeddings
          ``(N, K)``. Output: a scalar loss.

    Example:
        >>> objective = StageObjective("rankgan", clamp_weight=1000.0)
        >>> objective.judge(1), objective.judge(2)      # who scores G_{i-1}(z) at stages 1 and 2
        (None, 'current')
        >>> real, fake = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
        >>> objective.critic_loss(real, fake, stage=1).backward()   # RankGAN Eq. 3
        >>> objective.set_markers(1.0, -1.0)                         # Eq. 6, from StageManager.compute_markers
        >>> prev = torch.randn(8, requires_grad=True)                # the current D on G_{i-1}(z)
        >>> objective.critic_loss(real, fake, prev, stage=2).backward()
        >>> objective.generator_loss(fake, real=real.detach(), stage=2).shape
        torch.Size([])
    """

    def __init__(
        self,
        variant: str,
        *,
        margin: float = 1.0,
        clamp_weight: float = 1000.0,
        gp_weight: float = 10.0,
        alpha: float = 20.0,
        margin_norm: str = "mean",
        disc_weight: float = 1.0,
        rank_weight: float = 1.0,
    ) -> None:
        self.variant = check_choice(variant, "variant", VARIANTS)
        self.gp_weight = check_nonnegative(gp_weight, "gp_weight")
        self.margin_loss = HingeMarginLoss(margin=margin)
        self.rank_loss = StageRankLoss(clamp_weight=clamp_weight)
        self.gogan_loss = GoGANRankLoss(margin=margin, disc_weight=disc_weight, rank_weight=rank_weight)
        self.triplet_loss = TripletMetricDiscriminatorLoss(alpha=alpha, margin_norm=margin_norm)

    # ------------------------------------------------------------------------------------------ what it needs
    @property
    def staged(self) -> bool:
        """Whether stage ``i >= 2`` trains against the frozen stage ``i - 1`` (RankGAN, GoGAN)."""
        return self.variant in STAGED

    @property
    def embeds(self) -> bool:
        """Whether the critic returns an embedding (MBGAN, MATH §5) rather than a score."""
        return self.variant == "mbgan"

    @property
    def penalised(self) -> bool:
        """Whether the critic loss includes the gradient penalty (RankGAN Eq. 5)."""
        return self.variant not in ("dcgan", "mbgan") and self.gp_weight > 0

    def judge(self, stage: int) -> Judge | None:
        """Who scores ``G_{i-1}(z)`` at ``stage``: the current critic (RankGAN Eq. 4), the frozen previous one
        (GoGAN Eq. 4), or nobody (``None``: stage 1 and the single-stage variants)."""
        stage = check_positive_int(stage, "stage")
        if not self.staged or stage == 1:
            return None
        return "current" if self.variant == "rankgan" else "previous"

    def needs_markers(self, stage: int) -> bool:
        """Whether ``stage`` needs RankGAN's markers (Eq. 6) before its first critic step."""
        return self.judge(stage) == "current"

    def set_markers(self, m_high: float | Tensor, m_low: float | Tensor) -> None:
        """Set RankGAN's markers ``m_high >= m_low`` (Eq. 6) for the stage that starts."""
        self.rank_loss.set_markers(m_high, m_low)

    @property
    def markers(self) -> tuple[float, float] | None:
        """The markers in use, or ``None`` before :meth:`set_markers`."""
        high, low = self.rank_loss.m_high, self.rank_loss.m_low
        return None if high is None or low is None else (high, low)

    # ---------------------------------------------------------------------------------------------- the losses
    def critic_loss(
        self,
        real: Tensor,
        fake: Tensor,
        prev_fake: Tensor | None = None,
        *,
        stage: int,
        positive: Tensor | None = None,
        positive_images: Tensor | None = None,
        fake_images: Tensor | None = None,
    ) -> Tensor:
        """The critic loss of ``stage`` without the gradient penalty (add :meth:`penalty`).

        ``prev_fake`` is the judge's output on ``G_{i-1}(z)`` (see :meth:`judge`) and is required exactly when
        there is a judge. ``mbgan`` needs ``positive`` (the embedding of a second real batch) and the images
        of Eq. 4's margin, ``positive_images`` and ``fake_images``.
        """
        judge = self.judge(stage)
        if (judge is None) != (prev_fake is None):
            needed = f"the {judge} critic's output on G_{{i-1}}(z)" if judge else "none"
            raise ValueError(f"prev_fake for {self.variant} at stage {stage}: expected {needed}")
        if self.embeds:
            if positive is None or positive_images is None or fake_images is None:
                raise ValueError("mbgan's critic loss needs positive, positive_images and fake_images (MBGAN Eq. 1, 4)")
            return self.triplet_loss(real, positive, fake, positive_images=positive_images, fake_images=fake_images)
        if judge == "current":
            assert prev_fake is not None  # checked above
            return self.rank_loss(real, fake, prev_fake)  # RankGAN Eq. 4 + 6
        if judge == "previous":
            assert prev_fake is not None
            return self.gogan_loss(real, fake, prev_fake)  # GoGAN Eq. 3-5
        if self.variant == "wgan-gp":
            return per_sample_scores(fake, "fake").mean() - per_sample_scores(real, "real").mean()
        if self.variant == "dcgan":
            return (
                nnf.softplus(-per_sample_scores(real, "real")).mean()
                + nnf.softplus(per_sample_scores(fake, "fake")).mean()
            )
        return self.margin_loss(real, fake)  # RankGAN Eq. 3

    def generator_loss(self, fake: Tensor, *, stage: int, real: Tensor | None = None) -> Tensor:
        """The generator loss of ``stage`` on the critic's output for ``G(z)``.

        ``real`` is required (detached) for RankGAN's stage >= 2 (Eq. 4's generator half ``[D(x) - D(G(z))]_+``)
        and for ``mbgan`` (the embedding of the real batch ``x_j``, Eq. 2).
        """
        judge = self.judge(stage)
        if judge == "current" or self.embeds:
            if real is None:
                raise ValueError(
                    f"the {self.variant} generator loss at stage {stage} needs real (the real batch's output)"
                )
            if self.embeds:
                return F.triplet_metric_generator_loss(real, fake)  # MBGAN Eq. 2
            return self.rank_loss.generator_loss(real, fake)  # RankGAN Eq. 4, generator half
        if self.variant == "dcgan":
            return nnf.softplus(-per_sample_scores(fake, "fake")).mean()  # non-saturating GAN loss
        return F.wgan_generator_loss(fake)

    def penalty(
        self,
        discriminator: Any,
        real: Tensor,
        fake: Tensor,
        *,
        output_selector: OutputSelector = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> Tensor:
        """The gradient penalty (RankGAN Eq. 5) with ``gp_weight``, or a zero for the variants without one."""
        if not self.penalised:
            return real.new_zeros((), dtype=torch.float32)
        return F.gradient_penalty(
            discriminator, real, fake, weight=self.gp_weight, output_selector=output_selector, scaler=scaler
        )

    def ladder_scores(self, real: Tensor, fake: Tensor, *, positive: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-sample numbers for the score ladder and the gap (GoGAN Eq. 6), detached.

        The critic's scores for the score variants. For ``mbgan``, whose critic gives embeddings, the negative
        distances to the anchor: ``-d(x_i, x_j)`` for the real pair (``positive`` is ``x_j``'s embedding) and
        ``-d(x_i, G(z))`` for the fake, so the gap is ``d(x_i, G(z)) - d(x_i, x_j)``; without ``positive`` the real
        number is 0 (a distance to itself).
        """
        if not self.embeds:
            return per_sample_scores(real, "real").detach(), per_sample_scores(fake, "fake").detach()
        real, fake = real.detach(), fake.detach()
        real_scores = (
            torch.zeros(real.shape[0], device=real.device)
            if positive is None
            else -F.embedding_distance(real, positive.detach())
        )
        return real_scores, -F.embedding_distance(real, fake)

    def hinge_activity(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None = None, *, stage: int
    ) -> dict[str, float]:
        """The fraction of samples whose hinges are active at ``stage``, per hinge, so a dead term is seen.

        Keys: ``margin`` (stage 1, Eq. 3), ``rank`` and ``clamp`` (RankGAN Eq. 4 and 6, the clamp counts a
        sample when either of its two hinges is active), ``gogan_disc`` and ``gogan_rank`` (GoGAN Eq. 3-4).
        Empty for the variants without hinges on scores.
        """
        if self.embeds or self.variant in ("wgan-gp", "dcgan"):
            return {}
        r, f = per_sample_scores(real, "real").detach(), per_sample_scores(fake, "fake").detach()
        judge = self.judge(stage)
        eps = self.margin_loss.margin
        if judge is None:
            return {"margin": _activity(f + eps - r)}
        p = per_sample_scores(prev_fake, "prev_fake").detach()  # type: ignore[arg-type]
        if judge == "current":
            high, low = self.markers or (float("nan"), float("nan"))
            clamp = torch.maximum(high - r, p - low)
            return {"rank": _activity(f - p), "clamp": _activity(clamp)}
        return {"gogan_disc": _activity(f + eps - r), "gogan_rank": _activity(p + 2 * eps - r)}

    def __repr__(self) -> str:
        return (
            f"StageObjective({self.variant!r}, margin={self.margin_loss.margin}, "
            f"clamp_weight={self.rank_loss.clamp_weight}, gp_weight={self.gp_weight})"
        )


def critic_judge(objective: StageObjective, stage: int, current: nn.Module, previous: nn.Module | None) -> Any:
    """The network that scores ``G_{i-1}(z)`` at ``stage``: ``current``, the frozen ``previous``, or ``None``."""
    judge = objective.judge(stage)
    if judge is None:
        return None
    if judge == "previous" and previous is None:
        raise ValueError(f"{objective.variant} stage {stage} needs the frozen previous critic; got None")
    return current if judge == "current" else previous


__all__ = ["STAGED", "VARIANTS", "StageObjective", "critic_judge"]
