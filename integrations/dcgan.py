"""Adapter for the DCGAN of pytorch/examples (``dcgan/main.py``): margin and RankGAN critics from one changed line.

Upstream trains ``netD`` as a classifier: ``netD.main`` ends with ``nn.Sigmoid()`` (index 12), ``netD`` returns
``(N,)`` probabilities and every loss is ``criterion = nn.BCELoss()``, called three times per batch in a fixed
order:

1. ``criterion(netD(real), label)`` with ``label`` filled with 1, then ``errD_real.backward()``;
2. ``criterion(netD(fake.detach()), label)`` with ``label`` filled with 0, then ``errD_fake.backward()`` and
   ``optimizerD.step()``;
3. ``criterion(netD(fake), label)`` with ``label`` filled with 1, then ``errG.backward()`` and
   ``optimizerG.step()``.

:func:`margin_criterion` replaces that one line. It swaps the Sigmoid for ``nn.Identity()`` (the layer has no
parameters, so the ``state_dict`` keys are unchanged) and returns a :class:`DCGANCriterion`, which recognises the
three calls by their order and label value and turns them into a critic trained with the pairwise margin loss of
RankGAN Eq. 3 / GoGAN Eq. 2 (maths §1) on raw scores, and a generator trained with the WGAN generator loss
(GoGAN Sec. 3.2). With ``prev_fake_scores`` passed to call 2 it trains RankGAN's stage ``i >= 2`` instead
(Eq. 4 + 6, maths §3); see ``docs/integrations_dcgan.md``. The losses themselves come from a
:class:`rankplug.StageObjective`, the core's stage recipe: the criterion only maps upstream's three calls to its
critic and generator losses.

This module never imports upstream code; it only relies on the structure described above.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rankplug.losses import StageRankLoss
from rankplug.methods import MarginGAN, RankGAN, StageObjective
from rankplug.stages import StageManager

__all__ = ["DCGANCriterion", "batch_statistics_markers", "margin_criterion", "strip_sigmoid"]

# The three calls of one upstream batch, in order.
_CALLS = (
    "call 1 of a batch: the real scores netD(real) with the real label",
    "call 2 of a batch: the fake scores netD(fake.detach()) with the fake label",
    "call 3 of a batch: the generator's scores netD(fake) with the real label",
)


def _main_of(discriminator: nn.Module) -> nn.Sequential:
    if not isinstance(discriminator, nn.Module):
        raise TypeError(f"discriminator must be a torch.nn.Module; got {type(discriminator).__name__}")
    # DataParallel / DistributedDataParallel keep the user's module as .module.
    module: nn.Module = discriminator
    inner = getattr(module, "module", None)
    if not hasattr(module, "main") and isinstance(inner, nn.Module):
        module = inner
    main = getattr(module, "main", None)
    if not isinstance(main, nn.Sequential) or len(main) == 0:
        raise ValueError(
            f"discriminator has no non-empty nn.Sequential attribute 'main' (got {type(main).__name__}); expected "
            "the Discriminator of pytorch/examples dcgan/main.py, whose main ends with nn.Sigmoid()"
        )
    return main


def strip_sigmoid(discriminator: nn.Module) -> nn.Module:
    """Replace the final ``nn.Sigmoid()`` of ``discriminator.main`` by ``nn.Identity()``, in place.

    The critic then returns raw scores (higher means more real, maths page, "Conventions"). Neither layer has
    parameters or buffers, so ``state_dict()`` keys and checkpoints are unchanged. A discriminator whose last
    layer is already ``nn.Identity()`` is left as it is, so calling this twice is harmless.

    Args:
        discriminator: upstream's ``netD`` (or a ``DataParallel`` / ``DistributedDataParallel`` wrapping it).

    Returns:
        The same ``discriminator`` object.

    Raises:
        ValueError: if ``discriminator.main`` is missing or its last layer is neither ``nn.Sigmoid`` nor
            ``nn.Identity``.

    Example:
        >>> netD = torch.nn.Module()
        >>> netD.main = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Sigmoid())
        >>> keys = list(netD.state_dict())
        >>> strip_sigmoid(netD).main[-1]
        Identity()
        >>> list(netD.state_dict()) == keys
        True
    """
    main = _main_of(discriminator)
    last = main[-1]
    if isinstance(last, nn.Identity):
        return discriminator
    if not isinstance(last, nn.Sigmoid):
        raise ValueError(
            f"discriminator.main[-1] is {type(last).__name__}; expected nn.Sigmoid (upstream's last layer, "
            "main[12]) or nn.Identity (already stripped)"
        )
    main[-1] = nn.Identity()
    return discriminator


def _label_value(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    return float(value)


def _criterion_objective(
    margin: float | None, rank: StageRankLoss | None, objective: StageObjective | None
) -> StageObjective:
    """The recipe the criterion runs: ``objective`` as given, or one built from the ``margin`` / ``rank`` options."""
    if objective is not None:
        if not isinstance(objective, StageObjective):
            raise TypeError(f"objective must be a rankplug.StageObjective or None; got {type(objective).__name__}")
        if margin is not None or rank is not None:
            raise ValueError(
                "pass either objective or margin / rank, not both: the objective has its own margin and rank loss"
            )
        if objective.embeds:
            raise ValueError(
                f"objective {objective.variant!r} trains on embeddings and images; DCGANCriterion gets the scores "
                "of upstream's netD, so use a score variant ('rankgan', 'gogan', 'margin', 'wgan-gp' or 'dcgan')"
            )
        return objective
    if rank is not None and not isinstance(rank, StageRankLoss):
        raise TypeError(f"rank must be a rankplug.StageRankLoss or None; got {type(rank).__name__}")
    margin = 1.0 if margin is None else margin
    # gp_weight 0: with these options the script adds its own gradient penalty (Eq. 5) to call 2's result.
    if rank is None:
        return MarginGAN(margin=margin, gp_weight=0.0)
    built = RankGAN(margin=margin, clamp_weight=rank.clamp_weight, gp_weight=0.0)
    # The user's rank loss itself, not a copy: the markers (and reduction) they set on it are the ones used.
    built.rank_loss = rank
    return built


class DCGANCriterion(nn.Module):
    r"""Stateful stand-in for upstream's ``nn.BCELoss()`` that trains ``netD`` as a margin critic (maths §1).

    It recognises upstream's three calls per batch by their order and label value:

    ==============  =====================================  ======  =====================================================
    call            scores                                 label   returns
    ==============  =====================================  ======  =====================================================
    1 (errD_real)   ``D(x)``                               real    a zero leaf; ``D(x)`` is kept, graph and all
    2 (errD_fake)   ``D(G(z))``, ``fake.detach()``         fake    the full critic loss on ``D(x)`` and ``D(G(z))``
    3 (errG)        ``D(G(z))``                            real    the generator loss
    ==============  =====================================  ======  =====================================================

    .. math::
        \text{call 2:}\ \ell_k = \big[\, D(G(z_k)) + \epsilon - D(x_k) \,\big]_+ \quad\text{(RankGAN Eq. 3)},
        \qquad \text{call 3:}\ \ell_k = -D(G(z_k)) \quad\text{(GoGAN Sec. 3.2)}

    **Why call 1 returns a zero that is not connected to** ``D(x)``: the pairwise loss needs the fake scores, which
    do not exist yet at call 1, and upstream calls ``errD_real.backward()`` without ``retain_graph``, which would
    free the graph of ``netD(real)`` if the returned value depended on it. So call 1 returns a fresh zero leaf
    (``requires_grad=True``; its backward touches nothing else) and keeps ``D(x)`` with its graph alive; call 2
    returns the whole loss, whose backward reaches ``netD``'s parameters through both ``D(x)`` and ``D(G(z))``.
    After ``errD_real.backward(); errD_fake.backward()`` the gradients of ``netD`` are exactly those of the
    margin loss, and upstream's printed ``errD = errD_real + errD_fake`` is the margin loss's value. The scores
    that upstream prints as ``D(x)`` and ``D(G(z))`` are raw critic scores, no longer probabilities.

    **RankGAN stages** (Eq. 4 + 6, maths §3): pass ``rank`` and give call 2 the current critic's scores of the
    previous generator's samples, ``criterion(output, label, prev_fake_scores=netD(G_prev(noise)))``. Call 2 then
    returns ``rank(D_i(x), D_i(G_i(z)), D_i(G_{i-1}(z)))`` and call 3 the generator half of Eq. 4,
    ``[D_i(x) - D_i(G_i(z))]_+``, where ``D_i(x)`` is call 1's real scores, detached (taken before this batch's
    critic step). Add the gradient penalty (Eq. 5) to call 2's result in the script.

    **Any score recipe**: pass ``objective=rankplug.StageObjective(variant, ...)`` instead of ``margin`` / ``rank``.
    Call 2 returns ``objective.critic_loss`` and call 3 ``objective.generator_loss``, at stage 1 without
    ``prev_fake_scores`` and at stage 2 (any stage ``i >= 2``: only whether a previous stage exists matters) with
    them; ``prev_fake_scores`` are the scores of the critic that ``objective.judge(stage)`` names, the current
    ``netD`` for RankGAN and the frozen ``D_{i-1}`` for GoGAN (:func:`rankplug.methods.critic_judge`).
    ``objective.penalty(netD, real, fake)`` is the gradient penalty to add to call 2's result. ``margin`` and
    ``rank`` are shorthands for ``StageObjective("margin", margin=margin)`` and for a ``"rankgan"`` objective
    that uses ``rank`` itself (its markers, clamp weight and reduction).

    The order is strict: a label that does not fit the expected call raises ``ValueError``; :meth:`reset`
    starts a new batch. Scripts with several critic steps per generator step do not fit this protocol: use
    :class:`rankplug.HingeMarginLoss` directly there.

    Args:
        margin: ``epsilon >= 0`` of the margin loss, in score units; ``None`` means 1.0 (``None`` rather than 1.0
            so that a margin passed along with ``objective`` is an error instead of being ignored).
        rank: a :class:`rankplug.StageRankLoss` for RankGAN stages ``i >= 2`` (used when call 2 gets
            ``prev_fake_scores``).
        objective: a :class:`rankplug.StageObjective` with a score variant, instead of ``margin`` and ``rank``.
        real_label: the value upstream fills ``label`` with for real samples (``real_label = 1``).
        fake_label: the value for fake samples (``fake_label = 0``).

    Shape:
        - scores: ``(N,)`` as upstream's ``netD`` returns (``(N, 1)`` and ``(N, 1, H, W)`` also work).
        - label: ``(N,)``, every entry equal to ``real_label`` or every entry equal to ``fake_label``.
        - Output: scalar.

    Example:
        >>> netD = torch.nn.Module()
        >>> netD.main = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Sigmoid())
        >>> netD.forward = lambda x: netD.main(x).view(-1)
        >>> criterion = margin_criterion(netD, margin=1.0)  # replaces criterion = nn.BCELoss()
        >>> label = torch.full((8,), 1.0)
        >>> errD_real = criterion(netD(torch.randn(8, 4) + 1.0), label)
        >>> errD_real.backward()  # a zero: the real scores wait for the fakes
        >>> errD_fake = criterion(netD(torch.randn(8, 4)), label.fill_(0.0))
        >>> errD_fake.backward()  # RankGAN Eq. 3 through D(x) and D(G(z))
        >>> errG = criterion(netD(torch.randn(8, 4)), label.fill_(1.0))  # -mean D(G(z))
        >>> errG.backward()
    """

    def __init__(
        self,
        *,
        margin: float | None = None,
        rank: StageRankLoss | None = None,
        objective: StageObjective | None = None,
        real_label: float = 1.0,
        fake_label: float = 0.0,
    ) -> None:
        super().__init__()
        self.objective = _criterion_objective(margin, rank, objective)
        self.real_label = _label_value(real_label, "real_label")
        self.fake_label = _label_value(fake_label, "fake_label")
        if self.real_label == self.fake_label:
            raise ValueError(
                f"real_label and fake_label must differ; got {self.real_label} for both, so the calls cannot be told apart"
            )
        self.reset()

    @property
    def margin(self) -> float:
        """``epsilon`` of the objective's margin loss (RankGAN Eq. 3)."""
        return self.objective.settings.margin

    @property
    def rank(self) -> StageRankLoss | None:
        """The RankGAN ranking loss (Eq. 4 + 6) the objective uses from stage 2 on, or ``None`` for other variants."""
        return self.objective.rank_loss if isinstance(self.objective, RankGAN) else None

    def reset(self) -> None:
        """Forget the current batch; the next call must be call 1 (real scores with the real label)."""
        self._call = 0
        self._real_scores: Tensor | None = None
        self._stage = 1

    @property
    def expected_call(self) -> int:
        """The number (1, 2 or 3) of the call the criterion expects next."""
        return self._call + 1

    def _which_label(self, scores: Tensor, label: Tensor) -> str:
        if not isinstance(scores, Tensor):
            raise TypeError(f"scores must be a torch.Tensor; got {type(scores).__name__}")
        if not isinstance(label, Tensor):
            raise TypeError(f"label must be a torch.Tensor; got {type(label).__name__}")
        if scores.dim() == 0:
            raise ValueError("scores must have a batch dimension; got a 0-d tensor of shape ()")
        if label.dim() != 1 or label.shape[0] != scores.shape[0]:
            raise ValueError(
                f"label has shape {tuple(label.shape)} but scores have batch size {scores.shape[0]}; "
                f"expected label of shape ({scores.shape[0]},)"
            )
        if label.numel() > 0 and bool((label == self.real_label).all()):
            return "real"
        if label.numel() > 0 and bool((label == self.fake_label).all()):
            return "fake"
        found = sorted({float(v) for v in label.detach().flatten()[:8].tolist()})
        raise ValueError(
            f"label must be filled with real_label={self.real_label} or fake_label={self.fake_label}; "
            f"found values {found}"
        )

    def _out_of_order(self, got: str) -> ValueError:
        wanted = "real" if self._call in (0, 2) else "fake"
        value = self.real_label if wanted == "real" else self.fake_label
        got_value = self.real_label if got == "real" else self.fake_label
        return ValueError(
            f"out-of-order call: expected {_CALLS[self._call]} ({wanted} label {value}); got the {got} label "
            f"{got_value}. The calls must follow dcgan/main.py's order: real (label 1), fake (label 0), "
            "generator (label 1); call reset() to start a new batch"
        )

    def forward(self, scores: Tensor, label: Tensor, *, prev_fake_scores: Tensor | None = None) -> Tensor:
        kind = self._which_label(scores, label)
        expected = "fake" if self._call == 1 else "real"
        if kind != expected:
            raise self._out_of_order(kind)
        if prev_fake_scores is not None and self._call != 1:
            raise ValueError(
                f"prev_fake_scores belongs to call 2 (the fake scores with the fake label); got it at call {self._call + 1}"
            )

        if self._call == 0:
            self._real_scores = scores
            self._call = 1
            # A fresh leaf, not connected to scores: its backward must not free the graph of netD(real).
            return torch.zeros((), dtype=scores.dtype, device=scores.device, requires_grad=True)

        real = self._real_scores
        assert real is not None  # set by call 1; internal invariant, not user input
        if scores.shape[0] != real.shape[0]:
            what = "call 2 (fake scores)" if self._call == 1 else "call 3 (generator scores)"
            raise ValueError(
                f"{what} has batch size {scores.shape[0]} but call 1 (real scores) had batch size "
                f"{real.shape[0]}; the pairwise terms pair the k-th real with the k-th fake sample, so the batch "
                "sizes must be equal"
            )

        if self._call == 1:
            return self._critic_loss(real, scores, prev_fake_scores)
        stage, self._stage = self._stage, 1
        self._real_scores = None
        self._call = 0
        return self.objective.generator_loss(scores, stage=stage, real=real)

    def _critic_loss(self, real: Tensor, fake: Tensor, prev_fake: Tensor | None) -> Tensor:
        """Call 2: the objective's critic loss, at stage 2 when the previous fakes' scores are given, else stage 1."""
        stage = 1 if prev_fake is None else 2
        if stage == 2 and self.objective.judge(stage) is None:
            raise ValueError(
                f"prev_fake_scores was given but the criterion's {self.objective.variant!r} objective has no rank "
                "loss; pass rank=rankplug.StageRankLoss(...) or objective=rankplug.StageObjective('rankgan' or "
                "'gogan') to margin_criterion for stages i >= 2"
            )
        loss = self.objective.critic_loss(real, fake, prev_fake, stage=stage)
        # Call 3 needs the real scores only as constants; drop the graph now that call 2 owns it.
        self._real_scores = real.detach()
        self._stage = stage
        self._call = 2
        return loss

    def extra_repr(self) -> str:
        return (
            f"objective={self.objective!r}, real_label={self.real_label}, fake_label={self.fake_label}, "
            f"expected_call={self.expected_call}"
        )


def margin_criterion(
    discriminator: nn.Module,
    *,
    margin: float | None = None,
    rank: StageRankLoss | None = None,
    objective: StageObjective | None = None,
    real_label: float = 1.0,
    fake_label: float = 0.0,
) -> DCGANCriterion:
    """Replace ``criterion = nn.BCELoss()`` in dcgan/main.py: a margin critic (RankGAN Eq. 3) from one line.

    Swaps ``discriminator.main[-1]`` (upstream's ``nn.Sigmoid()``) for ``nn.Identity()`` in place with
    :func:`strip_sigmoid` and returns a :class:`DCGANCriterion`, whose docs describe the three calls.

    Args:
        discriminator: upstream's ``netD``.
        margin: ``epsilon >= 0`` of the margin loss, in score units (``None``: 1.0).
        rank: optional :class:`rankplug.StageRankLoss` for RankGAN stages ``i >= 2``.
        objective: optional :class:`rankplug.StageObjective` (a score variant) instead of ``margin`` and ``rank``.
        real_label: upstream's ``real_label`` (1).
        fake_label: upstream's ``fake_label`` (0).

    Returns:
        The criterion; use it exactly as upstream uses ``nn.BCELoss()``.

    Example:
        >>> netD = torch.nn.Module()
        >>> netD.main = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Sigmoid())
        >>> criterion = margin_criterion(netD, margin=0.5)
        >>> netD.main[-1], criterion.expected_call
        (Identity(), 1)
        >>> gogan = margin_criterion(netD, objective=StageObjective("gogan"))  # GoGAN stages: the frozen D_{i-1}
        >>> gogan.objective.judge(2)                                          # scores G_{i-1}(z) for call 2
        'previous'
    """
    criterion = DCGANCriterion(
        margin=margin, rank=rank, objective=objective, real_label=real_label, fake_label=fake_label
    )
    strip_sigmoid(discriminator)
    return criterion


def batch_statistics_markers(
    stages: StageManager,
    real_batches: Iterable[Any],
    *,
    statistic: Literal["mean", "median"] = "mean",
) -> tuple[float, float]:
    """RankGAN's markers (Eq. 6) for a BatchNorm critic, scored as upstream trains it: with batch statistics.

    :meth:`rankplug.StageManager.compute_markers` scores with the frozen ``D_{i-1}`` in eval mode, i.e. with its
    BatchNorm running statistics. Upstream's ``netD`` is only ever run in train mode, on batches that are all real
    or all fake, so its eval-mode scores live on another scale (they can even rank fakes above the data) than the
    train-mode scores the losses see, ``prev_fake_scores`` included. This helper scores a copy of ``D_{i-1}``
    in train mode, one batch at a time, under ``torch.no_grad()`` (the live ``netD`` and its running statistics
    are untouched):

    ``m_high`` = statistic of ``D_{i-1}(x)`` over the real batches, ``m_low`` = statistic of
    ``D_{i-1}(G_{i-1}(z))`` over as many latents from :meth:`~rankplug.StageManager.sample_latent`, the fakes
    batched like the real data, over every rank under ``torch.distributed``. The markers are also stored in
    ``stages.markers``.

    Args:
        stages: the manager, after :meth:`~rankplug.StageManager.advance`.
        real_batches: tensors ``x`` or ``(x, ...)`` tuples, as a data loader yields.
        statistic: ``"mean"`` (the paper's expectation) or ``"median"`` (the authors' code).

    Returns:
        ``(m_high, m_low)``.

    Raises:
        ValueError: before the first :meth:`~rankplug.StageManager.advance`, for an empty ``real_batches`` or an
            unknown ``statistic``.

    Example:
        >>> G = torch.nn.Sequential(torch.nn.Linear(4, 8))
        >>> D = torch.nn.Sequential(torch.nn.Linear(8, 1), torch.nn.BatchNorm1d(1))
        >>> stages = StageManager(G, D, latent_shape=(4,))
        >>> stages.advance()
        >>> m_high, m_low = batch_statistics_markers(stages, [torch.randn(16, 8) for _ in range(2)])
        >>> abs(m_high) < 1e-5 and abs(m_low) < 1e-5  # batch-normalised scores: mean 0 per batch
        True
    """
    return stages.compute_markers(real_batches, statistic=statistic, batch_statistics=True)
