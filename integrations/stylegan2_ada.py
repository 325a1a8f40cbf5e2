"""RankGAN / GoGAN stages for NVlabs/stylegan2-ada-pytorch, as a drop-in for its ``training.loss.StyleGAN2Loss``.

The host's ``training_loop`` builds its loss with ``dnnlib.util.construct_class_by_name(device=..., G_mapping=...,
G_synthesis=..., D=..., augment_pipe=..., **loss_kwargs)`` and drives it through
``accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, sync, gain)``. :class:`RankGANLoss` implements
that interface, so the host needs only the loss's class path in ``loss_kwargs``, which the launcher
:mod:`rankplug.integrations.stylegan2_ada_launch` sets without changing any upstream file::

    python -m rankplug.integrations.stylegan2_ada_launch STYLEGAN2_ADA_DIR --previous=PKL -- --outdir=runs --data=...

Nothing from the host is imported at import time; ``torch_utils.training_stats`` and ``torch_utils.misc`` are
imported when a phase runs (the host repository is on ``sys.path`` then). Stages (maths §1-§3):

- **stage 1** (``previous=None``): the pairwise margin loss ``[D(G(z)) + eps - D(x)]_+`` for ``D`` and the WGAN
  loss ``-D(G(z))`` for ``G``;
- **stage i >= 2, RankGAN** (``variant="rankgan"``): the *current* ``D_i`` scores the frozen previous generator's
  samples; ``D`` minimises ``[D_i(G_i(z)) - D_i(G_{i-1}(z))]_+ + clamp_weight * clamp`` (Eq. 4 + 6) and ``G``
  minimises ``[D_i(x) - D_i(G_i(z))]_+``;
- **stage i >= 2, GoGAN** (``variant="gogan"``): the *frozen previous* ``D_i`` scores ``G_i(z)``; ``D`` minimises
  ``[D(G(z)) + eps - D(x)]_+ + rank_weight * [D_prev(G_prev(z)) + 2 eps - D(x)]_+`` and ``G`` the WGAN loss.

The recipe (which loss at which stage, which critic scores ``G_{i-1}(z)``) is the core's
:class:`rankplug.StageObjective`; this module maps it onto the host's phases. R1 (``r1_gamma``) runs in ``Dreg`` /
``Dboth`` and path-length regularisation (``pl_weight``) in ``Greg`` / ``Gboth``, as in the host's own loss.
Every discriminator input, the previous stage's fakes included, goes through ``augment_pipe``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Optional

import torch
from torch import Tensor, nn

from rankplug._validation import check_choice, check_int_at_least, check_nonnegative, check_positive_int
from rankplug.integrations.settings import check_device_setting
from rankplug.integrations.stylegan2_ada_bank import (
    draw_rows,
    frozen_generator,
    live_generator_on_rows,
    split_rows,
)
from rankplug.integrations.stylegan2_ada_host import (
    PreviousStage,
    cat_scores,
    dataset_marker_batches,
    global_count,
    host_ddp_sync,
    host_report,
    load_snapshot,
    marker_data_batches,
    open_host_dataset,
    previous_networks,
    rank_and_world,
)
from rankplug.methods import STAGED, Judge, StageObjective
from rankplug.stages import BankDraw, PreviousStageBank, freeze, marker_statistics, unwrap

PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")

#: A ``Dmain`` round's ``D(aug(G_i(z)))`` and, from stage 2, the judge's scores of ``G_{i-1}(z)``.
FakeScores = tuple[Tensor, Optional[Tensor]]


# ------------------------------------------------------------------------------------------------- the loss
class RankGANLoss:
    r"""StyleGAN2-ADA loss for RankGAN / GoGAN stages (maths §1-§3), with R1, path-length regularisation and ADA.

    A drop-in for the host's ``training.loss.StyleGAN2Loss``: the same constructor arguments (the loop passes
    ``device``, ``G_mapping``, ``G_synthesis``, ``D`` and ``augment_pipe``; the rest come from ``loss_kwargs``)
    and the same ``accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, sync, gain)``, with the six
    phases ``Gmain``, ``Greg``, ``Gboth``, ``Dmain``, ``Dreg``, ``Dboth``. Every loss is averaged over the
    batch and multiplied by ``gain`` (the host's lazy-regularisation interval) before ``backward``. The ``D`` and
    ``G`` losses below are those of :attr:`objective`, a :class:`rankplug.StageObjective` built from ``variant``,
    ``margin``, ``clamp_weight`` and ``rank_weight`` (R1 takes the place of its gradient penalty); the loss asks it
    which critic scores ``G_{i-1}(z)`` and runs that critic the host's way.

    .. math::
        \text{stage 1:}\quad L_D = [\, D(G(z)) + \epsilon - D(x) \,]_+, \qquad L_G = -D(G(z))

    .. math::
        \text{RankGAN:}\quad L_D = [\, D_i(G_i(z)) - D_i(G_{i-1}(z)) \,]_+
        + \lambda_{clamp} \big( [m_{high} - D_i(x)]_+ + [D_i(G_{i-1}(z)) - m_{low}]_+ \big),
        \qquad L_G = [\, D_i(x) - D_i(G_i(z)) \,]_+

    .. math::
        \text{GoGAN:}\quad L_D = [\, D_{i+1}(G_{i+1}(z)) + \epsilon - D_{i+1}(x) \,]_+
        + \lambda_2 [\, D_i(G_i(z)) + 2\epsilon - D_{i+1}(x) \,]_+, \qquad L_G = -D_{i+1}(G_{i+1}(z))

    plus, as in the host, ``r1_gamma / 2 * ||grad_x D(x)||^2`` in ``Dreg`` and the path-length penalty
    ``pl_weight * (||J_w^T y||_2 - a)^2`` in ``Greg``. Every ``D`` input is ``augment_pipe(img)``; R1 takes the
    gradient with respect to the un-augmented reals, as the host does.

    **The previous stage.** ``previous`` is the stage-``i-1`` snapshot pickle the host wrote (a path), its
    loaded dict, or a ``(G, D)`` pair. Its networks are frozen copies (:func:`rankplug.stages.freeze`: eval
    mode, ``requires_grad=False``), moved to ``device``, never DDP-wrapped, and run under ``torch.no_grad()``;
    the same ``z`` (and the same style-mixing draw) feeds the live and the previous generator. With DDP the
    live modules' gradients are all-reduced once per accumulation round through the host's ``misc.ddp_sync``:
    the fake forwards run without sync and the last (real) forward with ``sync``, followed by one backward.

    **Markers** (RankGAN, Eq. 6): ``m_high = stat D_{i-1}(aug(x))`` and ``m_low = stat D_{i-1}(aug(G_{i-1}(z)))``
    with ``stat`` = ``marker_statistic`` (``"mean"`` as in the paper, or ``"median"`` as in the authors' code).
    Pass them as ``markers=(m_high, m_low)``, or they are computed once per stage (once per loss), lazily, on
    the first ``Dmain`` / ``Dboth`` call, from one of:

    - ``marker_dataset`` (JSON-friendly, so it fits ``train.py``'s ``loss_kwargs``): a data set path or the
      host's ``training_set_kwargs`` dict (:func:`open_host_dataset`). ``min(marker_images, len(data set))``
      images, a seeded choice that is the same on every rank, split among the ranks; ``m_low`` from as many
      fresh latents, with the chosen images' labels. The launcher
      (:mod:`rankplug.integrations.stylegan2_ada_launch`) passes the training set here;
    - ``marker_data``: up to ``marker_batches`` batches of real images in the host's ``[-1, 1]`` range (or
      ``(img, c)`` pairs), and ``marker_batches`` batches of fresh latents with that call's labels;
    - neither: that call's real batch (one batch per rank: a rough estimate).

    Under ``torch.distributed`` the statistic covers every rank's samples, so every rank gets the same markers.
    Read them back from :attr:`markers` and the sample sizes from :attr:`marker_sample_sizes`.

    **The previous-stage bank** (``bank_size = K > 0``, opt-in; :class:`rankplug.stages.PreviousStageBank`).
    At the first ``Dmain`` / ``Dboth`` the frozen ``G_{i-1}`` runs once on ``K`` drawn rows (``z``, a label and
    the style-mixing draw, :mod:`rankplug.integrations.stylegan2_ada_bank`); each ``Dmain`` round then feeds ``N``
    of those rows to the live ``G_i`` and pairs the result with their kept ``G_{i-1}`` images, so each pair of
    RankGAN / GoGAN Eq. 4 stays exact. That module's docstring says what is kept, what differs from the per-step
    path (only reuse) and the memory (``bank_device="cpu"`` for large banks).

    **ADA.** The host adapts the augmentation probability from ``Loss/signs/real``. Margin and ranking losses
    leave the score's offset free (adding a constant to every score changes nothing), so the sign of the raw
    score says nothing about over-fitting. With ``sign_reference="midpoint"`` (default) the signs are taken
    relative to the midpoint ``(mean D(x) + mean D(G(z))) / 2`` of the latest ``Dmain`` batch, the analogue of
    the logistic loss's decision boundary at 0; ``"zero"`` reports ``sign(D(x))`` as the host's own loss does.

    Statistics reported through the host's ``training_stats.report`` (the host's names, plus rankplug's own):
    ``Loss/scores/fake``, ``Loss/signs/fake``, ``Loss/scores/real``, ``Loss/signs/real``, ``Loss/G/loss`` and
    ``Loss/D/loss`` (batch means), ``Loss/r1_penalty``, ``Loss/D/reg``, ``Loss/pl_penalty``, ``Loss/G/reg``;
    from stage 2 on also ``Loss/scores/prev_fake`` (the critic of the loss on the previous stage's fakes) and,
    for RankGAN, ``Loss/markers/high`` and ``Loss/markers/low``.

    Args:
        device: the device of the live networks (the host passes it).
        G_mapping: the live mapping network ``(z, c) -> ws``, possibly DDP-wrapped.
        G_synthesis: the live synthesis network ``ws -> img``, possibly DDP-wrapped.
        D: the live discriminator ``(img, c) -> (N, 1)``, possibly DDP-wrapped.
        augment_pipe: the host's ``AugmentPipe`` (or any ``img -> img`` module), or ``None``.
        style_mixing_prob: probability of mixing two latents' styles at a random layer, as in the host.
        r1_gamma: R1 weight ``gamma``; 0 disables R1.
        pl_batch_shrink: the path-length batch is ``N // pl_batch_shrink`` (at least 1).
        pl_decay: decay of the running path-length target ``a``.
        pl_weight: path-length weight; 0 disables it.
        previous: the previous stage (see above); ``None`` trains stage 1.
        variant: ``"rankgan"`` or ``"gogan"``, for stages ``>= 2``.
        margin: ``epsilon >= 0`` of the stage-1 margin loss and of GoGAN.
        clamp_weight: RankGAN's ``lambda_clamp >= 0`` (paper 1000, authors' code 1).
        rank_weight: GoGAN's ``lambda_2 >= 0``.
        markers: RankGAN's ``(m_high, m_low)``; computed lazily when ``None``.
        marker_statistic: ``"mean"`` or ``"median"``.
        marker_data: optional iterable of real batches for the markers.
        marker_batches: how many batches the lazy markers use with ``marker_data`` or the call's batch.
        marker_dataset: a data set path or the host's ``training_set_kwargs`` for the markers (see above).
        marker_images: at most this many real images of ``marker_dataset`` (>= 1; default 5000).
        sign_reference: ``"midpoint"`` or ``"zero"``, for ``Loss/signs/*``.
        previous_generator: which snapshot entry is ``G_{i-1}``: ``"G"`` (the trained weights, default, as
            RankGAN freezes the live networks) or ``"G_ema"``.
        report: where statistics go, ``report(name, value)``; ``None`` (default) uses the host's
            ``torch_utils.training_stats.report`` (a no-op without the host). rankplug's own loop passes its sink.
        bank_size: ``K >= 0`` rows in the previous-stage bank (see above); 0 (default) runs ``G_{i-1}`` at every
            ``Dmain`` round. Unused at stage 1.
        bank_refresh_every: re-draw the bank after this many ``Dmain`` rounds (``None``: never).
        bank_device: where the bank lives (``None``: ``device``), e.g. ``"cpu"`` for large images.

    Example:
        >>> G = torch.nn.Linear(4, 3)  # stand-ins for (z, c) -> ws, ws -> img and (img, c) -> score
        >>> mapping = lambda z, c, **kwargs: G(z).unsqueeze(1)
        >>> synthesis = lambda ws, **kwargs: ws[:, 0].reshape(-1, 3, 1, 1)
        >>> D = lambda img, c: img.flatten(1).sum(1, keepdim=True)
        >>> loss = RankGANLoss("cpu", mapping, synthesis, D, style_mixing_prob=0, r1_gamma=1.0, pl_weight=0)
        >>> real, z, c = torch.randn(8, 3, 1, 1), torch.randn(8, 4), torch.zeros(8, 0)
        >>> loss.accumulate_gradients("Gboth", real, c, z, c, sync=True, gain=1)
        >>> G.weight.grad.shape
        torch.Size([3, 4])
        >>> loss.stage
        1
    """

    def __init__(
        self,
        device: torch.device | str,
        G_mapping: Callable[..., Tensor],
        G_synthesis: Callable[..., Tensor],
        D: Callable[..., Tensor],
        augment_pipe: Callable[[Tensor], Tensor] | None = None,
        style_mixing_prob: float = 0.9,
        r1_gamma: float = 10,
        pl_batch_shrink: int = 2,
        pl_decay: float = 0.01,
        pl_weight: float = 2,
        *,
        previous: PreviousStage = None,
        variant: Literal["rankgan", "gogan"] = "rankgan",
        margin: float = 1.0,
        clamp_weight: float = 1000.0,
        rank_weight: float = 1.0,
        markers: tuple[float, float] | None = None,
        marker_statistic: Literal["mean", "median"] = "mean",
        marker_data: Iterable[Any] | None = None,
        marker_batches: int = 4,
        marker_dataset: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        marker_images: int = 5000,
        sign_reference: Literal["midpoint", "zero"] = "midpoint",
        previous_generator: Literal["G", "G_ema"] = "G",
        report: Callable[[str, Any], Any] | None = None,
        bank_size: int = 0,
        bank_refresh_every: int | None = None,
        bank_device: str | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.G_mapping = G_mapping
        self.G_synthesis = G_synthesis
        self.D = D
        self.augment_pipe = augment_pipe
        self.style_mixing_prob = check_nonnegative(style_mixing_prob, "style_mixing_prob")
        self.r1_gamma = check_nonnegative(r1_gamma, "r1_gamma")
        self.pl_batch_shrink = check_positive_int(pl_batch_shrink, "pl_batch_shrink")
        self.pl_decay = check_nonnegative(pl_decay, "pl_decay")
        self.pl_weight = check_nonnegative(pl_weight, "pl_weight")
        # The recipe: stage 1 the margin loss, stage >= 2 RankGAN or GoGAN. gp_weight 0: R1 regularises D here,
        # as in the host, instead of RankGAN's gradient penalty (Eq. 5).
        self.objective = StageObjective(
            check_choice(variant, "variant", STAGED),
            margin=margin,
            clamp_weight=clamp_weight,
            rank_weight=rank_weight,
            gp_weight=0.0,
        )
        check_choice(marker_statistic, "marker_statistic", ("mean", "median"))
        self.marker_statistic = marker_statistic
        self.marker_data = marker_data
        self.marker_batches = check_positive_int(marker_batches, "marker_batches")
        if marker_dataset is not None and marker_data is not None:
            raise ValueError("pass marker_data (batches) or marker_dataset (the host's data set), not both")
        if marker_dataset is not None and not isinstance(marker_dataset, (str, os.PathLike, Mapping)):
            raise TypeError(
                "marker_dataset must be a data set path or the host's training_set_kwargs dict; "
                f"got {type(marker_dataset).__name__}"
            )
        self.marker_dataset = marker_dataset
        self.marker_images = check_positive_int(marker_images, "marker_images")
        #: ``(real, fake)``: how many samples, over every rank, the markers in use were computed from.
        self.marker_sample_sizes: tuple[int, int] | None = None
        self.sign_reference = check_choice(sign_reference, "sign_reference", ("midpoint", "zero"))
        generator_key = check_choice(previous_generator, "previous_generator", ("G", "G_ema"))
        self.report = report
        if markers is not None:
            if not (isinstance(markers, Sequence) and len(markers) == 2):
                raise ValueError(f"markers must be a pair (m_high, m_low); got {markers!r}")
            self.objective.set_markers(markers[0], markers[1])
        # The running path-length target ``a``, as in the host's loss; a constant for the gradient.
        self.pl_mean = torch.zeros([], device=self.device)
        # Reference level for Loss/signs/*: the latest Dmain batch's real/fake midpoint (see sign_reference).
        self.sign_midpoint: float | None = None
        self.previous_G: nn.Module | None = None
        self.previous_D: nn.Module | None = None
        if previous is not None:
            generator, discriminator = previous_networks(previous, generator_key)
            # Frozen deep copies: the host's requires_grad_(True) on the live phase module never reaches them,
            # and they are plain modules, so DDP never sees them.
            self.previous_G = freeze(generator).to(self.device)
            self.previous_D = freeze(discriminator).to(self.device)
        #: The previous-stage bank (``None`` without ``bank_size``); see the class docstring.
        self.bank: PreviousStageBank | None = None
        if check_int_at_least(bank_size, "bank_size", 0) > 0:
            # Kept scores are only exact when nothing random stands between G_{i-1}(z) and D_{i-1}: no augmentation.
            keep: Literal["images", "scores"] = (
                "scores" if self.objective.judge(2) == "previous" and augment_pipe is None else "images"
            )
            device = check_device_setting(bank_device, "bank_device")
            self.bank = PreviousStageBank(bank_size, keep=keep, device=device, refresh_every=bank_refresh_every)

    # ---------------------------------------------------------------------------------------------- helpers
    @property
    def stage(self) -> int:
        """1 without a previous stage, else 2 (the loss only needs to know whether a previous stage exists)."""
        return 1 if self.previous_G is None else 2

    @property
    def variant(self) -> str:
        """``"rankgan"`` or ``"gogan"``: the objective's variant for stages ``>= 2``."""
        return self.objective.variant

    @property
    def markers(self) -> tuple[float, float] | None:
        """RankGAN's ``(m_high, m_low)`` (Eq. 6) in use, or ``None`` before they are passed or computed."""
        return self.objective.markers

    def _augment(self, img: Tensor) -> Tensor:
        return img if self.augment_pipe is None else self.augment_pipe(img)

    def _mix_styles(self, ws: Tensor, z: Tensor, c: Tensor, mapping: Callable[..., Tensor]) -> tuple[Tensor, Any]:
        """Style mixing as in the host: from a random layer on, the ws of a second latent take over."""
        num_ws = ws.shape[1]
        if self.style_mixing_prob <= 0 or num_ws < 2 or float(torch.rand([])) >= self.style_mixing_prob:
            return ws, None
        cutoff = int(torch.randint(1, num_ws, []))
        z2 = torch.randn_like(z)
        ws2 = mapping(z2, c, skip_w_avg_update=True)
        return torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1), (z2, cutoff)

    def _run_generator(self, z: Tensor, c: Tensor, sync: bool) -> tuple[Tensor, Tensor, Any]:
        ddp_sync = host_ddp_sync()
        with ddp_sync(self.G_mapping, sync):
            ws = self.G_mapping(z, c)
            ws, mix = self._mix_styles(ws, z, c, self.G_mapping)
        with ddp_sync(self.G_synthesis, sync):
            img = self.G_synthesis(ws)
        return img, ws, mix

    def _run_previous_generator(self, z: Tensor, c: Tensor, mix: Any) -> Tensor:
        """``G_{i-1}(z)`` under no_grad, with the live generator's style-mixing draw so both see the same latents."""
        assert self.previous_G is not None  # callers check the stage; an internal invariant, not user input
        z2, cutoff = mix if mix is not None else (z, 0)
        return frozen_generator(self.previous_G, z, c, z2, torch.full((z.shape[0],), cutoff, device=z.device))

    def _run_discriminator(self, img: Tensor, c: Tensor, sync: bool) -> Tensor:
        img = self._augment(img)
        with host_ddp_sync()(self.D, sync):
            return self.D(img, c)

    def _run_previous_discriminator(self, img: Tensor, c: Tensor) -> Tensor:
        discriminator = self.previous_D
        assert discriminator is not None
        with torch.no_grad():
            return discriminator(self._augment(img), c)

    def _signs(self, scores: Tensor) -> Tensor:
        reference = self.sign_midpoint if self.sign_reference == "midpoint" and self.sign_midpoint is not None else 0.0
        return (scores.detach() - reference).sign()

    # ---------------------------------------------------------------------------------------------- markers
    def compute_markers(self, real_img: Tensor, real_c: Tensor, gen_c: Tensor) -> tuple[float, float]:
        """RankGAN's markers (Eq. 6) with the frozen previous stage; see the class docstring. Stored in :attr:`markers`.

        Shape:
            - real_img: ``(N, C, H, W)``; real_c, gen_c: ``(N, c_dim)``. Output: ``(m_high, m_low)``.
        """
        if self.previous_G is None:
            raise ValueError("markers need a previous stage; stage 1 (previous=None) has none")
        real_scores, fake_scores = [], []
        with torch.no_grad():
            if self.marker_dataset is not None:
                # As many fakes as reals, each with a real image's label: the data's label distribution.
                real_batches = list(
                    dataset_marker_batches(
                        self.marker_dataset, self.marker_images, real_img.shape[0], real_c.shape[1], self.device
                    )
                )
                fake_labels = [c for _, c in real_batches]
            else:
                real_batches = marker_data_batches(self.marker_data, self.marker_batches, real_img, real_c, self.device)
                fake_labels = [gen_c] * self.marker_batches
            for img, c in real_batches:
                real_scores.append(self._run_previous_discriminator(img, c).flatten(1).mean(1))
            z_dim = self._z_dim()
            for c in fake_labels:
                z = torch.randn(c.shape[0], z_dim, device=self.device)
                fake = self._run_previous_generator(z, c, None)
                fake_scores.append(self._run_previous_discriminator(fake, c).flatten(1).mean(1))
        real_cat, fake_cat = cat_scores(real_scores, self.device), cat_scores(fake_scores, self.device)
        high, low = marker_statistics(real_cat, fake_cat, statistic=self.marker_statistic)
        self.marker_sample_sizes = (global_count(real_cat), global_count(fake_cat))
        if low > high:
            raise ValueError(
                f"the previous stage's discriminator scores its fakes above the real data (m_low={low:.4g} > "
                f"m_high={high:.4g}); RankGAN's clamp needs m_low <= m_high: train the previous stage longer or "
                "pass markers=(m_high, m_low)"
            )
        self.objective.set_markers(high, low)
        if self.marker_dataset is not None and rank_and_world()[0] == 0:
            real_count, fake_count = self.marker_sample_sizes
            print(
                f"rankplug: markers m_high={high:.4g}, m_low={low:.4g} ({self.marker_statistic}) from {real_count} "
                f"real images and {fake_count} previous-stage fakes"
            )
        return high, low

    def _z_dim(self) -> int:
        for module in (self.previous_G, unwrap(self.G_mapping) if isinstance(self.G_mapping, nn.Module) else None):
            z_dim = getattr(module, "z_dim", None)
            if isinstance(z_dim, int):
                return z_dim
        raise ValueError("cannot tell z_dim: neither the previous generator nor G_mapping has a z_dim attribute")

    # -------------------------------------------------------------------------------------------------- bank
    def fill_bank(self, c_dim: int) -> PreviousStageBank:
        """Draw the bank's ``K`` rows and keep the frozen stage's outputs on them (done at the first ``Dmain``).

        Shape:
            - c_dim: the host's label width (``gen_c.shape[1]``). The bank's ``z``: ``(K, 2 z_dim + c_dim + 1)``
              rows ``[z | c | z2 | cutoff]``; its images ``(K, C, R, R)`` or scores ``(K,)``.
        """
        bank = self.bank
        if bank is None or self.previous_G is None:
            raise ValueError("fill_bank needs bank_size > 0 and a previous stage")
        previous_G, mixing = self.previous_G, self.style_mixing_prob
        rows = draw_rows(previous_G, bank.size, self._z_dim(), c_dim, labels_from=self.marker_dataset,
                         style_mixing_prob=mixing, device=self.device)  # fmt: skip
        bank.fill(
            2,
            rows,
            lambda chunk: frozen_generator(previous_G, *split_rows(chunk, c_dim)),
            lambda img, chunk: self._run_previous_discriminator(img, split_rows(chunk, c_dim)[1]),
            lambda scores: scores.flatten(1).mean(1),
            critic_sees_latents=True,  # the frozen critic gets each row's label
        )
        return bank

    def _draw_bank(self, n: int, c_dim: int) -> BankDraw:
        bank = self.bank
        assert bank is not None
        if bank.due(2):
            self.fill_bank(c_dim)
        return bank.draw(n, self.device)

    # ------------------------------------------------------------------------------------------------ phases
    def accumulate_gradients(
        self,
        phase: str,
        real_img: Tensor,
        real_c: Tensor,
        gen_z: Tensor,
        gen_c: Tensor,
        sync: bool,
        gain: float,
    ) -> None:
        """Run one phase on one accumulation round and call ``backward`` on its loss times ``gain``.

        Args:
            phase: ``"Gmain"``, ``"Greg"``, ``"Gboth"``, ``"Dmain"``, ``"Dreg"`` or ``"Dboth"``.
            real_img: real images in ``[-1, 1]``, ``(N, C, H, W)``.
            real_c: their labels, ``(N, c_dim)`` (``c_dim`` may be 0).
            gen_z: latents, ``(N, z_dim)``.
            gen_c: labels for the generated images, ``(N, c_dim)``.
            sync: whether this round's backward all-reduces the gradients (the last round of a phase).
            gain: the multiplier of every loss term (the host passes the phase's interval).
        """
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}; got {phase!r}")
        do_gmain = phase in ("Gmain", "Gboth")
        do_gpl = phase in ("Greg", "Gboth") and self.pl_weight != 0
        do_dmain = phase in ("Dmain", "Dboth")
        do_dr1 = phase in ("Dreg", "Dboth") and self.r1_gamma != 0
        report = self.report if self.report is not None else host_report()
        if do_gmain:
            # When the path-length pass follows, it syncs G's gradients; this pass only accumulates them locally.
            self._generator_main(real_img, real_c, gen_z, gen_c, sync and not do_gpl, gain, report)
        if do_gpl:
            self._path_length(gen_z, gen_c, sync, gain, report)
        if do_dmain or do_dr1:
            fakes = self._discriminator_fakes(real_img, real_c, gen_z, gen_c) if do_dmain else None
            self._discriminator(real_img, real_c, fakes, sync, gain, report, r1=do_dr1)

    def _generator_main(
        self, real_img: Tensor, real_c: Tensor, gen_z: Tensor, gen_c: Tensor, sync: bool, gain: float, report: Any
    ) -> None:
        fake_img, _, _ = self._run_generator(gen_z, gen_c, sync)
        fake_scores = self._run_discriminator(fake_img, gen_c, sync=False)  # D does not train in a G phase
        report("Loss/scores/fake", fake_scores)
        report("Loss/signs/fake", self._signs(fake_scores))
        real_scores = None
        # Only RankGAN's generator half of Eq. 4, [D_i(x) - D_i(G_i(z))]_+, asks for D_i(x), the current critic's
        # scores: skip that forward (and its augmentation draw) for the other stages.
        if self.objective.judge(self.stage) == "current":
            with torch.no_grad():  # D_i(x) is a target for G: no graph
                real_scores = self._run_discriminator(real_img, real_c, sync=False)
        loss = self.objective.generator_loss(fake_scores, stage=self.stage, real=real_scores)
        report("Loss/G/loss", loss)
        loss.mul(gain).backward()

    def _path_length(self, gen_z: Tensor, gen_c: Tensor, sync: bool, gain: float, report: Any) -> None:
        # StyleGAN2's path-length regulariser: for y ~ N(0, I) / sqrt(H W), the per-sample length ||J_w^T y||
        # (squared over w_dim, averaged over the ws) should stay at its running mean a.
        n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        img, ws, _ = self._run_generator(gen_z[:n], gen_c[:n], sync)
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grad_ws,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grad_ws.square().sum(2).mean(1).sqrt()
        target = torch.lerp(self.pl_mean, lengths.mean().detach(), self.pl_decay)
        self.pl_mean.copy_(target)
        penalty = (lengths - target).square()
        report("Loss/pl_penalty", penalty)
        loss = penalty * self.pl_weight
        report("Loss/G/reg", loss)
        # The 0 * img term puts every synthesis parameter in the graph (the toRGB bias does not reach J^T y);
        # otherwise DDP would wait forever for gradients of unused parameters.
        (loss.mean() + 0.0 * img.mean()).mul(gain).backward()

    def _discriminator_fakes(self, real_img: Tensor, real_c: Tensor, gen_z: Tensor, gen_c: Tensor) -> FakeScores:
        """``D(aug(G(z)))`` and, from stage 2, the judge's scores of ``G_{i-1}(z)`` (all without sync).

        RankGAN's markers are computed first when they are still missing (the first ``Dmain`` / ``Dboth``).
        """
        if self.objective.needs_markers(self.stage) and self.markers is None:
            self.compute_markers(real_img, real_c, gen_c)
        judge = self.objective.judge(self.stage)
        if judge is not None and self.bank is not None:
            return self._discriminator_fakes_from_bank(judge, gen_z.shape[0], gen_c.shape[1])
        with torch.no_grad():  # G does not train in a D phase
            fake_img, _, mix = self._run_generator(gen_z, gen_c, sync=False)
            prev_img = None if judge is None else self._run_previous_generator(gen_z, gen_c, mix)
        fake_scores = self._run_discriminator(fake_img, gen_c, sync=False)
        if judge is None or prev_img is None:
            return fake_scores, None
        return fake_scores, self._judge_scores(judge, prev_img, gen_c)

    def _discriminator_fakes_from_bank(self, judge: Judge, n: int, c_dim: int) -> FakeScores:
        """As :meth:`_discriminator_fakes`, with ``z``, ``c``, the mixing and ``G_{i-1}(z)`` from ``n`` bank rows."""
        draw = self._draw_bank(n, c_dim)
        c = split_rows(draw.z, c_dim)[1]
        fake_img = live_generator_on_rows(self.G_mapping, self.G_synthesis, draw.z, c_dim, host_ddp_sync())
        fake_scores = self._run_discriminator(fake_img, c, sync=False)
        if draw.scores is not None:  # GoGAN without augmentation: the frozen critic's kept scores
            return fake_scores, draw.scores.reshape(fake_scores.shape[0], *([1] * (fake_scores.dim() - 1)))
        assert draw.images is not None
        return fake_scores, self._judge_scores(judge, draw.images, c)

    def _judge_scores(self, judge: Judge, prev_img: Tensor, c: Tensor) -> Tensor:
        """The judge's scores of ``G_{i-1}(z)``: the live ``D_i`` with a gradient (RankGAN Eq. 4) or the frozen
        ``D_{i-1}`` without one (GoGAN Eq. 4), each run the host's way."""
        if judge == "current":
            return self._run_discriminator(prev_img, c, sync=False)
        return self._run_previous_discriminator(prev_img, c)

    def _discriminator(
        self,
        real_img: Tensor,
        real_c: Tensor,
        fakes: FakeScores | None,
        sync: bool,
        gain: float,
        report: Any,
        *,
        r1: bool,
    ) -> None:
        """The ``D`` phases' backward: the ``Dmain`` loss on ``fakes`` (from :meth:`_discriminator_fakes`, ``None``
        for ``Dreg``) and / or R1."""
        # The real forward comes last and alone carries ``sync``: DDP then all-reduces once, in the single
        # backward below, the gradients accumulated from all of this round's forwards.
        real = real_img.detach().requires_grad_(r1)
        real_scores = self._run_discriminator(real, real_c, sync=sync)
        if fakes is not None:
            fake_scores = fakes[0]
            self.sign_midpoint = float((real_scores.detach().mean() + fake_scores.detach().mean()) / 2)
            report("Loss/scores/fake", fake_scores)
            report("Loss/signs/fake", self._signs(fake_scores))
        report("Loss/scores/real", real_scores)
        report("Loss/signs/real", self._signs(real_scores))
        # 0 * scores keeps every D parameter in the graph even when only R1 runs (DDP needs all of them).
        total = 0.0 * real_scores.flatten(1).mean(1)
        if fakes is not None:
            loss = self._discriminator_loss(real_scores, *fakes, report)
            report("Loss/D/loss", loss)
            total = total + loss
        if r1:
            (grad,) = torch.autograd.grad(real_scores.sum(), real, create_graph=True)
            penalty = grad.square().flatten(1).sum(1)
            report("Loss/r1_penalty", penalty)
            reg = penalty * (self.r1_gamma / 2)
            report("Loss/D/reg", reg)
            total = total + reg
        total.mean().mul(gain).backward()

    def _discriminator_loss(
        self, real_scores: Tensor, fake_scores: Tensor, prev_scores: Tensor | None, report: Any
    ) -> Tensor:
        """The batch-mean ``Dmain`` loss of the stage (the class docstring's ``L_D``), from the objective."""
        if prev_scores is not None:
            report("Loss/scores/prev_fake", prev_scores)
        if self.objective.needs_markers(self.stage) and self.markers is not None:
            m_high, m_low = self.markers
            report("Loss/markers/high", [m_high])
            report("Loss/markers/low", [m_low])
        return self.objective.critic_loss(real_scores, fake_scores, prev_scores, stage=self.stage)


__all__ = ["PHASES", "RankGANLoss", "load_snapshot", "open_host_dataset"]
