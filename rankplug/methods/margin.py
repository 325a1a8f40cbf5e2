"""MarginGAN: the margin critic loss (RankGAN Eq. 3, GoGAN Eq. 2) with the WGAN generator loss, at every stage."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from rankplug import functional as F
from rankplug._validation import per_sample_scores
from rankplug.losses import HingeMarginLoss
from rankplug.methods.base import StageObjective


class MarginGAN(StageObjective):
    r"""MarginGAN (RankGAN Eq. 3, GoGAN Eq. 2), one stage's recipe for every stage; stage 1 of RankGAN and GoGAN.

    .. math::
        L_D = \frac{1}{N}\sum_k [D(G(z_k)) + \epsilon - D(x_k)]_+ \;+\; \lambda_{gp}\,\text{GP},
        \qquad L_G = -\frac{1}{N}\sum_k D(G(z_k))

    ``epsilon`` is ``margin`` (score units). One hinge, ``margin``, for :meth:`hinge_activity`.

    Shape:
        - real, fake: scores ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``. Output: a scalar loss.

    Example:
        >>> objective = StageObjective("margin", margin=0.5)
        >>> real, fake = torch.tensor([1.0, 0.0], requires_grad=True), torch.tensor([0.0, 1.0], requires_grad=True)
        >>> loss = objective.critic_loss(real, fake, stage=1)   # mean of [0 + 0.5 - 1]_+ and [1 + 0.5 - 0]_+
        >>> loss
        tensor(0.7500, grad_fn=<MeanBackward0>)
        >>> loss.backward()
        >>> objective.hinge_activity(real, fake, stage=1)
        {'margin': 0.5}
    """

    variant = "margin"
    setting_names: ClassVar[tuple[str, ...]] = ("margin", "gp_weight")

    def _build(self) -> None:
        self.margin_loss = HingeMarginLoss(margin=self.settings.margin)

    def _critic_loss(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> Tensor:
        return self.margin_loss(real, fake)  # RankGAN Eq. 3

    def _generator_loss(self, fake: Tensor, *, stage: int, real: Tensor | None) -> Tensor:
        return F.wgan_generator_loss(fake)

    def _hinge_terms(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> dict[str, Tensor]:
        r, f = per_sample_scores(real, "real").detach(), per_sample_scores(fake, "fake").detach()
        return {"margin": f + self.margin_loss.margin - r}


class RankingStages(MarginGAN):
    """MarginGAN at stage 1, then a ranking loss against the frozen stage ``i - 1`` (RankGAN, GoGAN): what the two
    share. Not a method of its own (not registered)."""

    staged = True
    accepts_class_head = False

    def _hinge_terms(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> dict[str, Tensor]:
        if self.judge(stage) is None:  # stage 1: MarginGAN's hinge
            return super()._hinge_terms(real, fake, prev_fake, stage=stage, **inputs)
        return self._ranking_hinge_terms(*self._scores_of(real, fake, prev_fake))

    def _ranking_hinge_terms(self, real: Tensor, fake: Tensor, prev_fake: Tensor) -> dict[str, Tensor]:
        """The per-sample terms inside each hinge of a stage ``>= 2``, from detached per-sample scores."""
        raise NotImplementedError(f"{type(self).__name__} defines no ranking hinges")


__all__ = ["MarginGAN", "RankingStages"]
