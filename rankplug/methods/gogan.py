"""GoGAN: MarginGAN at stage 1, then the frozen previous critic sets a second, doubled margin (Eq. 3-5)."""

from __future__ import annotations

from torch import Tensor

from rankplug._validation import per_sample_scores
from rankplug.losses import GoGANRankLoss
from rankplug.methods.margin import RankingStages


class GoGAN(RankingStages):
    r"""GoGAN (maths §2): stage 1 is :class:`~rankplug.methods.MarginGAN` (Eq. 2); from stage 2 on the **frozen
    previous** critic ``D_{i-1}`` scores the previous generator's samples and the current critic must rank the
    data above them by ``2 epsilon`` (Eq. 3-5). The generator loss is WGAN's at every stage.

    .. math::
        L^{(i \ge 2)}_D = \lambda_1 [D_i(G_i(z)) + \epsilon - D_i(x)]_+
        + \lambda_2 [D_{i-1}(G_{i-1}(z)) + 2\epsilon - D_i(x)]_+ + \lambda_{gp}\,\text{GP},
        \qquad L_G = -D_i(G_i(z))

    ``prev_fake`` is ``D_{i-1}(G_{i-1}(z))``, computed without gradient. Hinges for :meth:`hinge_activity`:
    ``margin`` at stage 1, ``gogan_disc`` (Eq. 3) and ``gogan_rank`` (Eq. 4) after.

    **Anchored scores** (``anchor_scores=True``, rankplug's option, maths §2): with a gradient penalty in place
    of the paper's weight clipping nothing fixes the current critic's offset, so raising every score of ``D_i``
    by a constant satisfies Eq. 4 without changing Eq. 3 or the penalty (the shift solution). With the option,
    ``D_i``'s scores are shifted by ``m_high - mean_k D_i(x_k)`` before the hinges, ``m_high = E[D_{i-1}(x)]``
    being the frozen previous critic's mean on the data (:meth:`set_markers`, taken by
    :meth:`rankplug.StageManager.compute_markers` at the stage's start): the loss no longer changes when a
    constant is added to ``D_i``, and Eq. 4 compares the two critics at a common level.

    Shape:
        - real, fake, prev_fake: scores ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``. Output: a scalar loss.

    Example:
        >>> objective = StageObjective("gogan", margin=1.0, rank_weight=0.5)
        >>> objective.judge(2)                          # the frozen D_{i-1} scores G_{i-1}(z)
        'previous'
        >>> real, fake = torch.tensor([2.0, 0.0], requires_grad=True), torch.tensor([0.0, 0.5], requires_grad=True)
        >>> prev = torch.tensor([-2.0, 0.0])            # D_{i-1}(G_{i-1}(z)), no gradient
        >>> loss = objective.critic_loss(real, fake, prev, stage=2)   # mean of [0, 1.5] + 0.5 * [0, 2]
        >>> loss
        tensor(1.2500, grad_fn=<MeanBackward0>)
        >>> loss.backward()
        >>> anchored = StageObjective("gogan", margin=1.0, rank_weight=0.5, anchor_scores=True)
        >>> anchored.needs_markers(2)
        True
        >>> anchored.set_markers(0.0, -2.0)             # m_high = E[D_{i-1}(x)], m_low (unused)
        >>> shifted = anchored.critic_loss(real + 5.0, fake + 5.0, prev, stage=2)
        >>> torch.allclose(shifted, anchored.critic_loss(real, fake, prev, stage=2))   # no shift solution
        True
    """

    variant = "gogan"
    ranking_judge = "previous"
    setting_names = ("margin", "disc_weight", "rank_weight", "gp_weight", "anchor_scores")

    def _build(self) -> None:
        super()._build()
        s = self.settings
        self.gogan_loss = GoGANRankLoss(margin=s.margin, disc_weight=s.disc_weight, rank_weight=s.rank_weight)

    def needs_markers(self, stage: int) -> bool:
        return self.settings.anchor_scores and self.judge(stage) is not None

    def _anchored(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """The current critic's scores shifted so that the real batch's mean is ``m_high`` (when anchored)."""
        if not self.settings.anchor_scores:
            return real, fake
        if self.markers is None:
            raise RuntimeError("gogan with anchor_scores=True needs set_markers(m_high, m_low) before stage 2")
        shift = self.markers[0] - per_sample_scores(real, "real").float().mean()
        return real + shift.to(real.dtype), fake + shift.to(fake.dtype)

    def _critic_loss(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> Tensor:
        if prev_fake is None:  # stage 1 (critic_loss checked prev_fake against the judge)
            return super()._critic_loss(real, fake, prev_fake, stage=stage, **inputs)
        return self.gogan_loss(*self._anchored(real, fake), prev_fake)  # GoGAN Eq. 3-5

    def _ranking_hinge_terms(self, real: Tensor, fake: Tensor, prev_fake: Tensor) -> dict[str, Tensor]:
        real, fake = self._anchored(real, fake)
        eps = self.gogan_loss.margin
        return {"gogan_disc": fake + eps - real, "gogan_rank": prev_fake + 2 * eps - real}


__all__ = ["GoGAN"]
