"""RankGAN: MarginGAN at stage 1, then the current critic ranks ``G_i(z)`` below ``G_{i-1}(z)`` (Eq. 4 + 6)."""

from __future__ import annotations

import torch
from torch import Tensor

from rankplug.losses import StageRankLoss
from rankplug.methods.margin import RankingStages


class RankGAN(RankingStages):
    r"""RankGAN (maths §3): stage 1 is :class:`~rankplug.methods.MarginGAN` (Eq. 3); from stage 2 on the
    **current** critic scores the frozen previous generator's samples and ranks them (Eq. 4) with the clamp on
    the markers of Eq. 6, and the generator takes Eq. 4's generator half.

    .. math::
        L^{(i \ge 2)}_D = [D_i(G_i(z)) - D_i(G_{i-1}(z))]_+
        + \lambda_{clamp}\big([m_{high} - D_i(x)]_+ + [D_i(G_{i-1}(z)) - m_{low}]_+\big) + \lambda_{gp}\,\text{GP},
        \qquad L^{(i \ge 2)}_G = [D_i(x) - D_i(G_i(z))]_+

    The markers come from :meth:`set_markers` (``StageManager.compute_markers`` at the start of each stage) and
    live in :attr:`rank_loss`, a :class:`rankplug.StageRankLoss`. Hinges for :meth:`hinge_activity`: ``margin`` at
    stage 1, ``rank`` (Eq. 4) and ``clamp`` (Eq. 6, either of its hinges) after.

    Shape:
        - real, fake, prev_fake: scores ``(N,)``, ``(N, 1)`` or ``(N, 1, H, W)``. Output: a scalar loss.

    Example:
        >>> objective = StageObjective("rankgan", clamp_weight=1.0)
        >>> objective.needs_markers(2), objective.judge(2)
        (True, 'current')
        >>> objective.set_markers(1.0, -1.0)
        >>> real = torch.tensor([2.0, 0.0], requires_grad=True)
        >>> fake, prev = torch.tensor([0.0, 0.5], requires_grad=True), torch.tensor([-2.0, 0.0], requires_grad=True)
        >>> loss = objective.critic_loss(real, fake, prev, stage=2)   # rank [2, 0.5] and clamp [0, 1 + 1] / 2
        >>> loss
        tensor(2.2500, grad_fn=<MeanBackward0>)
        >>> loss.backward()
        >>> objective.hinge_activity(real, fake, prev, stage=2)
        {'rank': 1.0, 'clamp': 0.5}
    """

    variant = "rankgan"
    ranking_judge = "current"
    setting_names = ("margin", "clamp_weight", "gp_weight", "clamp_on")

    def _build(self) -> None:
        super()._build()
        self.rank_loss = StageRankLoss(clamp_weight=self.settings.clamp_weight, clamp_on=self.settings.clamp_on)

    def needs_markers(self, stage: int) -> bool:
        return self.judge(stage) is not None

    def set_markers(self, m_high: float | Tensor, m_low: float | Tensor) -> None:
        self.rank_loss.set_markers(m_high, m_low)

    @property
    def markers(self) -> tuple[float, float] | None:
        high, low = self.rank_loss.m_high, self.rank_loss.m_low
        return None if high is None or low is None else (high, low)

    def _critic_loss(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> Tensor:
        if prev_fake is None:  # stage 1 (critic_loss checked prev_fake against the judge)
            return super()._critic_loss(real, fake, prev_fake, stage=stage, **inputs)
        return self.rank_loss(real, fake, prev_fake)  # RankGAN Eq. 4 + 6

    def _generator_loss(self, fake: Tensor, *, stage: int, real: Tensor | None) -> Tensor:
        if self.judge(stage) is None:
            return super()._generator_loss(fake, stage=stage, real=real)
        return self.rank_loss.generator_loss(self._require_real(real, stage), fake)  # Eq. 4, generator half

    def _ranking_hinge_terms(self, real: Tensor, fake: Tensor, prev_fake: Tensor) -> dict[str, Tensor]:
        high, low = self.markers or (float("nan"), float("nan"))
        if self.settings.clamp_on == "batch":  # one clamp for the batch: active for every sample or for none
            clamp = torch.maximum(high - real.mean(), prev_fake.mean() - low).expand_as(real)
        else:
            clamp = torch.maximum(high - real, prev_fake - low)
        return {"rank": fake - prev_fake, "clamp": clamp}


__all__ = ["RankGAN"]
