"""What every method shares: the stage plumbing (judge, markers, penalty, ladder scores, checks) and the registry.

A method is a subclass of :class:`StageObjective` that sets its class facts (``variant``, ``staged``,
``ranking_judge``, ``embeds``, ``has_penalty``, ``accepts_class_head``, ``setting_names``), builds its losses in
``_build`` and overrides ``_critic_loss``, ``_generator_loss`` and ``_hinge_terms``. :func:`register` adds it to
:data:`METHODS`, where ``StageObjective(name, ...)``, the trainer, the command line and the integrations find it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal, TypeVar, cast

import torch
from torch import Tensor, nn

from rankplug import functional as F
from rankplug._validation import (
    check_choice,
    check_flag,
    check_markers,
    check_nonnegative,
    check_positive_int,
    per_sample_scores,
)
from rankplug.functional.metric import MARGIN_NORMS
from rankplug.functional.penalty import OutputSelector
from rankplug.functional.ranking import CLAMP_ON

Judge = Literal["current", "previous"]
_Objective = TypeVar("_Objective", bound="StageObjective")
_Method = TypeVar("_Method", bound="type[StageObjective]")

_CHOICES = {"margin_norm": MARGIN_NORMS, "clamp_on": CLAMP_ON}
#: Every method by name (its ``variant``), in the order the command line lists them.
METHODS: dict[str, type[StageObjective]] = {}


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    """The keyword settings every method takes, validated once; a method reads those in its ``setting_names``.

    ``margin``, ``clamp_weight``, ``gp_weight``, ``alpha``, ``disc_weight`` and ``rank_weight`` must be finite and
    ``>= 0``; ``margin_norm`` is ``"mean"`` or ``"sum"``; ``clamp_on`` (RankGAN's clamp) ``"sample"`` or ``"batch"``;
    ``anchor_scores`` (GoGAN's anchored scores) ``True`` or ``False``.
    """

    margin: float = 1.0
    clamp_weight: float = 1000.0
    gp_weight: float = 10.0
    alpha: float = 20.0
    margin_norm: str = "mean"
    disc_weight: float = 1.0
    rank_weight: float = 1.0
    clamp_on: str = "sample"
    anchor_scores: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "anchor_scores":
                check_flag(value, field.name)
            elif field.name in _CHOICES:
                check_choice(value, field.name, _CHOICES[field.name])
            else:
                object.__setattr__(self, field.name, check_nonnegative(value, field.name))


def active_fraction(term: Tensor) -> float:
    """The fraction of samples whose hinge term is active (positive), as a plain float for logs; 0 when empty."""
    return float((term.detach() > 0).float().mean()) if term.numel() else 0.0


class StageObjective:
    r"""A method's objective across stages (maths §1-§5): critic loss, generator loss and judge per stage.

    ``StageObjective("rankgan", ...)`` returns the registered method of that name (:data:`METHODS`), here a
    :class:`~rankplug.methods.RankGAN`. Stage 1 of RankGAN and GoGAN is MarginGAN: the margin critic loss
    :math:`\ell_k = [D(G(z_k)) + \epsilon - D(x_k)]_+` (RankGAN Eq. 3, GoGAN Eq. 2) with the WGAN generator loss
    :math:`-D(G(z))`. From stage 2 on RankGAN ranks the previous generator's samples under the **current**
    critic (Eq. 4 + 6, :class:`rankplug.StageRankLoss`) and GoGAN under the **frozen previous** critic
    (Eq. 3-5, :class:`rankplug.GoGANRankLoss`). ``margin``, ``wgan-gp``, ``dcgan`` and ``mbgan`` have one stage's
    recipe for all stages. The table in :mod:`rankplug.methods` lists every case.

    .. math::
        L^{(i)}_D = \begin{cases}
        [D(G(z)) + \epsilon - D(x)]_+ & i = 1 \\
        [D_i(G_i(z)) - D_i(G_{i-1}(z))]_+ + \lambda_{clamp}\,\text{clamp}(D_i) & i \ge 2,\ \text{rankgan}
        \end{cases}
        \;+\; \lambda_{gp}\,\text{GP}

    Class facts, read by the application without building an objective (``METHODS[name].embeds``):
    ``variant`` (the registry name), ``staged`` (stage ``i >= 2`` trains against the frozen stage ``i - 1``),
    ``ranking_judge`` (who scores ``G_{i-1}(z)`` from stage 2 on), ``embeds`` (the critic gives embeddings and
    the critic loss needs a second real batch and the images), ``has_penalty`` (the critic loss takes the
    gradient penalty), ``accepts_class_head`` (an auxiliary classifier may train beside it) and
    ``setting_names`` (the settings it reads).

    Args:
        variant: the method's name, one of :data:`METHODS` (``"rankgan"``, ``"gogan"``, ``"margin"``,
            ``"wgan-gp"``, ``"dcgan"``, ``"mbgan"``); may be left out when calling a subclass.
        margin: ``epsilon >= 0`` of the margin and GoGAN losses, in score units.
        clamp_weight: ``lambda_clamp`` of RankGAN Eq. 6 (paper 1000).
        gp_weight: ``lambda_gp`` of Eq. 5 for the penalised methods (all but ``dcgan`` and ``mbgan``).
        alpha: MBGAN's margin weight (Eq. 4); ``mbgan`` only.
        margin_norm: MBGAN's margin norm over pixels, ``"mean"`` or ``"sum"``; ``mbgan`` only.
        disc_weight, rank_weight: GoGAN's ``lambda_1``, ``lambda_2`` (Eq. 5).
        clamp_on: where RankGAN's clamp (Eq. 6) is measured: ``"sample"`` (as printed) or ``"batch"`` (on the batch
            means, which the markers are); ``rankgan`` only.
        anchor_scores: GoGAN's rank hinge (Eq. 4) on the current critic's scores shifted so that their mean on the
            real batch is the frozen previous critic's mean on the data (``m_high``, from
            :meth:`set_markers`), which closes the shift solution (maths §2); ``gogan`` only.

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

    variant: ClassVar[str] = ""
    staged: ClassVar[bool] = False
    ranking_judge: ClassVar[Judge | None] = None
    embeds: ClassVar[bool] = False
    has_penalty: ClassVar[bool] = True
    accepts_class_head: ClassVar[bool] = True
    setting_names: ClassVar[tuple[str, ...]] = ()

    def __new__(cls: type[_Objective], variant: str | None = None, /, **settings: Any) -> _Objective:
        chosen: type[StageObjective] = cls
        if cls is StageObjective:  # the public constructor: the method registered under that name
            chosen = METHODS[check_choice(variant, "variant", tuple(METHODS))]
        elif variant is not None and variant != cls.variant:
            raise ValueError(f"variant of {cls.__name__} is {cls.variant!r} (or leave it out); got {variant!r}")
        return cast(_Objective, object.__new__(chosen))

    def __init__(
        self,
        variant: str | None = None,
        /,
        *,
        margin: float = 1.0,
        clamp_weight: float = 1000.0,
        gp_weight: float = 10.0,
        alpha: float = 20.0,
        margin_norm: str = "mean",
        disc_weight: float = 1.0,
        rank_weight: float = 1.0,
        clamp_on: str = "sample",
        anchor_scores: bool = False,
    ) -> None:
        del variant  # __new__ chose the class from it
        self.settings = MethodSettings(
            margin=margin,
            clamp_weight=clamp_weight,
            gp_weight=gp_weight,
            alpha=alpha,
            margin_norm=margin_norm,
            disc_weight=disc_weight,
            rank_weight=rank_weight,
            clamp_on=clamp_on,
            anchor_scores=anchor_scores,
        )
        self.gp_weight = self.settings.gp_weight
        self._markers: tuple[float, float] | None = None
        self._build()

    # ------------------------------------------------------------------------------------ what a method defines
    def _build(self) -> None:
        """Build the method's loss modules from :attr:`settings`."""

    def _critic_loss(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> Tensor:
        """The critic loss of ``stage``; ``prev_fake`` is already checked against :meth:`judge`."""
        raise NotImplementedError(f"{type(self).__name__} defines no critic loss")

    def _generator_loss(self, fake: Tensor, *, stage: int, real: Tensor | None) -> Tensor:
        """The generator loss of ``stage``."""
        raise NotImplementedError(f"{type(self).__name__} defines no generator loss")

    def _hinge_terms(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None, *, stage: int, **inputs: Tensor | None
    ) -> dict[str, Tensor]:
        """The per-sample terms inside each hinge of ``stage``, by hinge name; none by default."""
        return {}

    # ------------------------------------------------------------------------------------------ what it needs
    @property
    def penalised(self) -> bool:
        """Whether the critic loss includes the gradient penalty (RankGAN Eq. 5): ``has_penalty`` and a weight."""
        return self.has_penalty and self.gp_weight > 0

    def judge(self, stage: int) -> Judge | None:
        """Who scores ``G_{i-1}(z)`` at ``stage``: the current critic (RankGAN Eq. 4), the frozen previous one
        (GoGAN Eq. 4), or nobody (``None``: stage 1 and the single-stage methods)."""
        stage = check_positive_int(stage, "stage")
        return None if stage == 1 else self.ranking_judge

    def needs_markers(self, stage: int) -> bool:
        """Whether ``stage`` needs RankGAN's markers (Eq. 6) before its first critic step."""
        check_positive_int(stage, "stage")
        return False

    def set_markers(self, m_high: float | Tensor, m_low: float | Tensor) -> None:
        """Set RankGAN's markers ``m_high >= m_low`` (Eq. 6) for the stage that starts (kept, unused, by the
        methods without markers)."""
        self._markers = check_markers(m_high, m_low)

    @property
    def markers(self) -> tuple[float, float] | None:
        """The markers in use, or ``None`` before :meth:`set_markers`."""
        return self._markers

    def _require_real(self, real: Tensor | None, stage: int) -> Tensor:
        """``real`` for a generator loss that needs the real batch's output, else a ``ValueError``."""
        if real is None:
            raise ValueError(f"the {self.variant} generator loss at stage {stage} needs real (the real batch's output)")
        return real

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
        there is a judge. A method that ``embeds`` (``mbgan``) needs ``positive`` (the embedding of a second real
        batch) and the images of Eq. 4's margin, ``positive_images`` and ``fake_images``.
        """
        stage = check_positive_int(stage, "stage")
        judge = self.judge(stage)
        if (judge is None) != (prev_fake is None):
            needed = f"the {judge} critic's output on G_{{i-1}}(z)" if judge else "none"
            raise ValueError(f"prev_fake for {self.variant} at stage {stage}: expected {needed}")
        return self._critic_loss(
            real,
            fake,
            prev_fake,
            stage=stage,
            positive=positive,
            positive_images=positive_images,
            fake_images=fake_images,
        )

    def generator_loss(self, fake: Tensor, *, stage: int, real: Tensor | None = None) -> Tensor:
        """The generator loss of ``stage`` on the critic's output for ``G(z)``.

        ``real`` is required (detached) for RankGAN's stage >= 2 (Eq. 4's generator half ``[D(x) - D(G(z))]_+``)
        and for ``mbgan`` (the embedding of the real batch ``x_j``, Eq. 2).
        """
        return self._generator_loss(fake, stage=check_positive_int(stage, "stage"), real=real)

    def penalty(
        self,
        discriminator: Any,
        real: Tensor,
        fake: Tensor,
        *,
        output_selector: OutputSelector = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> Tensor:
        """The gradient penalty (RankGAN Eq. 5) with ``gp_weight``, or a zero for the methods without one."""
        if not self.penalised:
            return real.new_zeros((), dtype=torch.float32)
        return F.gradient_penalty(
            discriminator, real, fake, weight=self.gp_weight, output_selector=output_selector, scaler=scaler
        )

    # ------------------------------------------------------------------------------------------------ the logs
    @staticmethod
    def _scores_of(real: Tensor, fake: Tensor, prev_fake: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The three per-sample score vectors, detached, for the hinge terms of a ranking stage."""
        scores = [per_sample_scores(x, name).detach() for x, name in ((real, "real"), (fake, "fake"))]
        return scores[0], scores[1], per_sample_scores(prev_fake, "prev_fake").detach()  # type: ignore[arg-type]

    def ladder_scores(self, real: Tensor, fake: Tensor, *, positive: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-sample numbers for the score ladder and the gap (GoGAN Eq. 6), detached: the critic's scores
        (higher means more real). A method whose critic embeds says what stands for a score."""
        return per_sample_scores(real, "real").detach(), per_sample_scores(fake, "fake").detach()

    def hinge_activity(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None = None, *, stage: int, **inputs: Tensor | None
    ) -> dict[str, float]:
        """The fraction of samples whose hinges are active at ``stage``, per hinge, so a dead term is seen.

        Keys: ``margin`` (stage 1, Eq. 3), ``rank`` and ``clamp`` (RankGAN Eq. 4 and 6, the clamp counts a
        sample when either of its two hinges is active), ``gogan_disc`` and ``gogan_rank`` (GoGAN Eq. 3-4),
        ``triplet`` (MBGAN Eq. 1 with the margin of Eq. 4). Empty for the methods without hinges. ``inputs``: what
        :meth:`critic_loss` takes beside the scores (MBGAN's ``positive``, ``positive_images``, ``fake_images``).
        """
        unknown = sorted(set(inputs) - {"positive", "positive_images", "fake_images"})
        if unknown:
            raise TypeError(f"hinge_activity() got unexpected keyword argument(s) {', '.join(unknown)}")
        terms = self._hinge_terms(real, fake, prev_fake, stage=check_positive_int(stage, "stage"), **inputs)
        return {name: active_fraction(term) for name, term in terms.items()}

    def hinge_report(
        self, real: Tensor, fake: Tensor, prev_fake: Tensor | None = None, *, stage: int, **inputs: Tensor | None
    ) -> dict[str, float]:
        """What a training log records about the hinges: ``active_<hinge>`` for each :meth:`hinge_activity`, and
        the numbers a method adds of its own (MBGAN: ``margin_ratio``). Takes what :meth:`critic_loss` took
        (``inputs``: MBGAN's ``positive``, ``positive_images`` and ``fake_images``)."""
        activity = self.hinge_activity(real, fake, prev_fake, stage=stage, **inputs)
        return {f"active_{name}": value for name, value in activity.items()}

    def __repr__(self) -> str:
        settings = "".join(f", {name}={getattr(self.settings, name)!r}" for name in self.setting_names)
        return f"StageObjective({self.variant!r}{settings})"


def register(method: _Method) -> _Method:
    """Add ``method`` (a :class:`StageObjective` subclass) to :data:`METHODS` under its ``variant``; a decorator.

    Example:
        >>> @register
        ... class LeastSquares(StageObjective):
        ...     variant = "least-squares"
        ...     def _critic_loss(self, real, fake, prev_fake, *, stage, **inputs):
        ...         return ((real - 1) ** 2).mean() + (fake**2).mean()
        ...     def _generator_loss(self, fake, *, stage, real):
        ...         return ((fake - 1) ** 2).mean()
        >>> StageObjective("least-squares", gp_weight=0.0)
        StageObjective('least-squares')
        >>> del METHODS["least-squares"]
    """
    if not (isinstance(method, type) and issubclass(method, StageObjective)) or method is StageObjective:
        raise TypeError(f"method must be a subclass of StageObjective; got {method!r}")
    name = method.variant
    if not isinstance(name, str) or not name:
        raise ValueError(f"{method.__name__}.variant must be a non-empty name; got {name!r}")
    if METHODS.get(name, method) is not method:
        raise ValueError(f"variant {name!r} is already registered, by {METHODS[name].__name__}")
    if method.staged != (method.ranking_judge is not None):
        raise ValueError(
            f"{method.__name__}: a staged method names its ranking_judge ('current' or 'previous') and a single-stage "
            f"one none; got staged={method.staged}, ranking_judge={method.ranking_judge!r}"
        )
    METHODS[name] = method
    return method


def critic_judge(objective: StageObjective, stage: int, current: nn.Module, previous: nn.Module | None) -> Any:
    """The network that scores ``G_{i-1}(z)`` at ``stage``: ``current``, the frozen ``previous``, or ``None``."""
    judge = objective.judge(stage)
    if judge is None:
        return None
    if judge == "previous" and previous is None:
        raise ValueError(f"{objective.variant} stage {stage} needs the frozen previous critic; got None")
    return current if judge == "current" else previous


__all__ = ["METHODS", "Judge", "MethodSettings", "StageObjective", "active_fraction", "critic_judge", "register"]
