"""DCGAN: the non-saturating GAN loss on logits, without a gradient penalty, at every stage."""

from __future__ import annotations

import torch.nn.functional as nnf
from torch import Tensor

from rankplug._validation import per_sample_scores
from rankplug.methods.base import StageObjective


class DCGAN(StageObjective):
    r"""The non-saturating GAN loss (Goodfellow et al. 2014) that DCGAN trains with, on the critic's logits.

    The baseline without a margin: no gradient penalty (``gp_weight`` is not read) and no hinges.

    .. math::
        L_D = \frac{1}{N}\sum_k \big(\text{softplus}(-D(x_k)) + \text{softplus}(D(G(z_k)))\big),
        \qquad L_G = \frac{1}{N}\sum_k \text{softplus}(-D(G(z_k)))

    Shape:
        - real, fake: logits ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``. Output: a scalar loss.

    Example:
        >>> objective = StageObjective("dcgan")
        >>> real, fake = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
        >>> loss = objective.critic_loss(real, fake, stage=1)   # 2 log 2
        >>> loss
        tensor(1.3863, grad_fn=<AddBackward0>)
        >>> loss.backward()
        >>> objective.penalised
        False
    """

    variant = "dcgan"
    has_penalty = False

    def _critic_loss(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> Tensor:
        return (
            nnf.softplus(-per_sample_scores(real, "real")).mean() + nnf.softplus(per_sample_scores(fake, "fake")).mean()
        )

    def _generator_loss(self, fake: Tensor, *, stage: int, real: Tensor | None) -> Tensor:
        return nnf.softplus(-per_sample_scores(fake, "fake")).mean()  # non-saturating


__all__ = ["DCGAN"]
