"""WGAN-GP: the Wasserstein critic loss with the gradient penalty (RankGAN Eq. 5), at every stage."""

from __future__ import annotations

from torch import Tensor

from rankplug import functional as F
from rankplug._validation import per_sample_scores
from rankplug.methods.base import StageObjective


class WGANGP(StageObjective):
    r"""WGAN-GP, the baseline RankGAN's stage 1 reduces to for a large margin (maths §1); no hinges.

    .. math::
        L_D = \frac{1}{N}\sum_k D(G(z_k)) - \frac{1}{N}\sum_k D(x_k) \;+\; \lambda_{gp}\,\text{GP}
        \quad \text{(RankGAN Eq. 5)}, \qquad L_G = -\frac{1}{N}\sum_k D(G(z_k))

    Shape:
        - real, fake: scores ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``. Output: a scalar loss.

    Example:
        >>> objective = StageObjective("wgan-gp", gp_weight=10.0)
        >>> real, fake = torch.tensor([2.0, 0.0], requires_grad=True), torch.tensor([0.0, 1.0], requires_grad=True)
        >>> loss = objective.critic_loss(real, fake, stage=1)   # 0.5 - 1.0
        >>> loss
        tensor(-0.5000, grad_fn=<SubBackward0>)
        >>> loss.backward()
    """

    variant = "wgan-gp"
    setting_names = ("gp_weight",)

    def _critic_loss(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> Tensor:
        return per_sample_scores(fake, "fake").mean() - per_sample_scores(real, "real").mean()

    def _generator_loss(self, fake: Tensor, *, stage: int, real: Tensor | None) -> Tensor:
        return F.wgan_generator_loss(fake)


__all__ = ["WGANGP"]
