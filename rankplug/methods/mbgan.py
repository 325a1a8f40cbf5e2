"""MBGAN: a critic that embeds, trained with the triplet loss (Eq. 1) and its data-dependent margin (Eq. 4)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from rankplug import functional as F
from rankplug.losses import TripletMetricDiscriminatorLoss
from rankplug.methods.base import StageObjective


class MBGAN(StageObjective):
    r"""MBGAN (maths §5): the critic embeds (``embeds``), the data are pulled together and the fakes pushed away by
    a margin that grows with how far ``G(z)`` is from the data (Eq. 1 + 4); the generator pulls ``G(z)`` towards a
    real embedding (Eq. 2). One stage's recipe for every stage, no gradient penalty.

    .. math::
        L_D = \frac{1}{N}\sum_k \big[\, h_k + d(x_{i,k}, x_{j,k}) - d(x_{i,k}, G(z_k)) \,\big]_+,
        \quad h_k = \alpha\,\lVert x_{j,k} - G(z_k) \rVert_1, \qquad L_G = \frac{1}{N}\sum_k d(x_{j,k}, G(z_k))

    with ``d(a, b) = ||D(a) - D(b)||_2``. ``real`` is the anchor ``D(x_i)``, ``positive`` a second real batch's
    ``D(x_j)``; ``positive_images`` and ``fake_images`` are ``x_j`` and ``G(z)``, for the margin only.
    :meth:`hinge_activity` reports ``triplet``, the fraction of samples whose hinge is active, and
    :meth:`hinge_report` adds ``margin_ratio``, the mean margin ``h`` over the mean ``d(x_i, G(z))``: far above 1
    the margin cannot be met and the hinge is always active (``alpha`` too large for the embedding's scale).

    Shape:
        - real, positive, fake: embeddings ``(N, K)``; positive_images, fake_images: ``(N, *)``.
        - Output: a scalar loss; :meth:`ladder_scores` gives ``(N,)`` twice.

    Example:
        >>> objective = StageObjective("mbgan", alpha=20.0)
        >>> anchor = torch.tensor([[0.0, 0.0]], requires_grad=True)
        >>> positive, fake = torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 0.0]], requires_grad=True)
        >>> images = {"positive_images": torch.zeros(1, 4), "fake_images": torch.full((1, 4), 0.1)}  # h = 2
        >>> loss = objective.critic_loss(anchor, fake, positive=positive, stage=1, **images)  # [2 + 1 - 2]_+
        >>> loss
        tensor(1., grad_fn=<MeanBackward0>)
        >>> loss.backward()
        >>> objective.hinge_report(anchor, fake, positive=positive, stage=1, **images)
        {'active_triplet': 1.0, 'margin_ratio': 1.0}
    """

    variant = "mbgan"
    embeds = True
    has_penalty = False
    accepts_class_head = False
    setting_names = ("alpha", "margin_norm")

    def _build(self) -> None:
        self.triplet_loss = TripletMetricDiscriminatorLoss(
            alpha=self.settings.alpha, margin_norm=self.settings.margin_norm
        )

    def _triplet_inputs(self, what: str, inputs: Mapping[str, Tensor | None]) -> tuple[Tensor, Tensor, Tensor]:
        positive, positive_images, fake_images = (inputs.get(k) for k in ("positive", "positive_images", "fake_images"))
        if positive is None or positive_images is None or fake_images is None:
            raise ValueError(f"mbgan's {what} needs positive, positive_images and fake_images (MBGAN Eq. 1, 4)")
        return positive, positive_images, fake_images

    def _critic_loss(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> Tensor:
        positive, positive_images, fake_images = self._triplet_inputs("critic loss", inputs)
        return self.triplet_loss(real, positive, fake, positive_images=positive_images, fake_images=fake_images)

    def _generator_loss(self, fake: Tensor, *, stage: int, real: Tensor | None) -> Tensor:
        return F.triplet_metric_generator_loss(self._require_real(real, stage), fake)  # MBGAN Eq. 2

    def _margin_and_distances(self, real: Tensor, fake: Tensor, **inputs: Tensor | None) -> tuple[Tensor, ...]:
        """Eq. 4's margin ``h``, ``d(x_i, x_j)`` and ``d(x_i, G(z))`` per sample, detached."""
        positive, positive_images, fake_images = self._triplet_inputs("hinge activity", inputs)
        s = self.settings
        with torch.no_grad():
            margin = F.data_dependent_margin(positive_images, fake_images, alpha=s.alpha, margin_norm=s.margin_norm)
            return margin, F.embedding_distance(real, positive), F.embedding_distance(real, fake)

    def _hinge_terms(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> dict[str, Tensor]:
        margin, to_positive, to_fake = self._margin_and_distances(real, fake, **inputs)
        return {"triplet": margin + to_positive - to_fake}  # the inside of Eq. 1's hinge

    def hinge_report(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None = None, *, stage: int, **inputs: Tensor | None
    ) -> dict[str, float]:
        report = super().hinge_report(real, fake, prev_fake, stage=stage, **inputs)
        margin, _, to_fake = self._margin_and_distances(real, fake, **inputs)
        # inf (or NaN with a zero margin) when every fake embedding sits on its anchor: reported as it is.
        report["margin_ratio"] = float(margin.mean() / to_fake.mean())
        return report

    def ladder_scores(self, real: Tensor, fake: Tensor, *, positive: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The negative distances to the anchor: ``-d(x_i, x_j)`` for the real pair (``positive`` is ``x_j``'s
        embedding) and ``-d(x_i, G(z))`` for the fake, so the gap is ``d(x_i, G(z)) - d(x_i, x_j)``; without
        ``positive`` the real number is 0 (a distance to itself). Detached."""
        real, fake = real.detach(), fake.detach()
        real_scores = (
            torch.zeros(real.shape[0], device=real.device)
            if positive is None
            else -F.embedding_distance(real, positive.detach())
        )
        return real_scores, -F.embedding_distance(real, fake)


__all__ = ["MBGAN"]
