"""RankGAN / GoGAN stages for POSTECH-CVLab/PyTorch-StudioGAN, in place of its ``LOSS.d_loss`` / ``LOSS.g_loss``.

StudioGAN picks its adversarial loss by name in ``Configurations.define_losses`` (``LOSS.adv_loss`` ->
``utils.losses.d_<name>`` / ``g_<name>``), which ``WORKER.__init__`` calls, and its training loop
(``WORKER.train_discriminator`` / ``train_generator``) calls them as
``LOSS.d_loss(real_dict["adv_output"], fake_dict["adv_output"], DDP=...)`` and
``LOSS.g_loss(fake_dict["adv_output"], DDP=...)``, inside its autocast context and before its ``GradScaler``.
:func:`patch_worker` replaces both on a built ``WORKER`` with the stage recipe of :class:`rankplug.StageObjective`,
so the user's copy changes by two lines in ``src/loader.py``::

    import rankplug.integrations.studiogan
    ...
    rankplug.integrations.studiogan.patch_worker(worker, **rankplug.integrations.studiogan.options_from_env())

Stages (maths §1-§3): stage 1 (no ``previous``) the margin loss ``[D(G(z)) + eps - D(x)]_+`` and the WGAN
generator loss ``-D(G(z))``; stage ``i >= 2`` RankGAN (the live ``D_i`` also scores ``G_{i-1}(z)``, with the same
``z`` and labels as the step's fakes, plus the clamp with markers, Eq. 4 + 6) or GoGAN (the frozen ``D_{i-1}``
scores them, Eq. 3-5). StudioGAN's own regularisers (``apply_gp``, ``apply_r1_reg``, LeCam, CR, ...), its
augmentations, ``-DDP`` and ``-mpc`` keep working: the losses are plain functions of the logits they are given,
and the extra forwards run inside the worker's autocast context through the same (DDP-wrapped) ``Dis``.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rankplug._validation import check_choice, check_int_at_least, check_positive_int
from rankplug.integrations.settings import check_device_setting, check_variable_names
from rankplug.methods import METHODS, StageObjective
from rankplug.stages import BankDraw, PreviousStageBank, freeze, marker_statistics, unwrap

#: The environment variables :func:`options_from_env` reads, and the :func:`patch_worker` keyword each one sets.
ENVIRONMENT = {
    "RANKPLUG_PREVIOUS": ("previous", str),
    "RANKPLUG_VARIANT": ("variant", str),
    "RANKPLUG_MARGIN": ("margin", float),
    "RANKPLUG_CLAMP_WEIGHT": ("clamp_weight", float),
    "RANKPLUG_RANK_WEIGHT": ("rank_weight", float),
    "RANKPLUG_MARKER_STATISTIC": ("marker_statistic", str),
    "RANKPLUG_MARKER_IMAGES": ("marker_images", int),
    "RANKPLUG_BANK_SIZE": ("bank_size", int),
    "RANKPLUG_BANK_REFRESH_EVERY": ("bank_refresh_every", int),
    "RANKPLUG_BANK_DEVICE": ("bank_device", str),
}
#: The settings of the previous-stage bank, which only a stage >= 2 (``RANKPLUG_PREVIOUS``) has.
BANK_VARIABLES = ("RANKPLUG_BANK_SIZE", "RANKPLUG_BANK_REFRESH_EVERY", "RANKPLUG_BANK_DEVICE")
#: The variants a StudioGAN critic can train with: every score variant of the core (``mbgan`` needs embeddings).
SCORE_VARIANTS = tuple(name for name, method in METHODS.items() if not method.embeds)


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The :func:`patch_worker` options set in the environment (see :data:`ENVIRONMENT`); unset ones are left out.

    Refused, with a ``ValueError`` that names the variable: a ``RANKPLUG_*`` name that is not a setting (a typo,
    with the closest setting's name; rankplug's other variables, ``rankplug.integrations.settings.OTHER_VARIABLES``,
    are left alone), a value of the wrong type, a device this machine does not have in ``RANKPLUG_BANK_DEVICE``,
    and the bank variables (:data:`BANK_VARIABLES`) without ``RANKPLUG_PREVIOUS``: stage 1 has no bank.

    Example:
        >>> options_from_env({"RANKPLUG_PREVIOUS": "ckpts/run1", "RANKPLUG_CLAMP_WEIGHT": "1", "HOME": "/root"})
        {'previous': 'ckpts/run1', 'clamp_weight': 1.0}
    """
    environ = os.environ if environ is None else environ
    check_variable_names(environ, ENVIRONMENT)
    given = {name: text for name, text in environ.items() if name in ENVIRONMENT and text != ""}
    bank = [name for name in BANK_VARIABLES if name in given]
    if bank and "RANKPLUG_PREVIOUS" not in given:
        raise ValueError(
            f"{', '.join(bank)} set without RANKPLUG_PREVIOUS: the bank holds the previous stage's outputs, so it "
            "needs a previous stage (set RANKPLUG_PREVIOUS to its checkpoint folder, or unset the bank variables "
            "for stage 1)"
        )
    options: dict[str, Any] = {}
    for name, (keyword, kind) in ENVIRONMENT.items():
        if name not in given:
            continue
        try:
            options[keyword] = kind(given[name])
        except ValueError:
            raise ValueError(f"{name} must be a {kind.__name__}; got {given[name]!r}") from None
    if "bank_device" in options:
        check_device_setting(options["bank_device"], "RANKPLUG_BANK_DEVICE")
    return options


def _checkpoint(directory: str, model: str, when: str) -> str:
    """The newest ``model={model}-{when}-weights-step=N.pth`` in ``directory`` (StudioGAN's checkpoint names)."""
    paths = glob.glob(os.path.join(glob.escape(directory), f"model={model}-{when}-weights-step=*.pth"))
    if not paths:
        raise FileNotFoundError(
            f"previous {directory!r} holds no model={model}-{when}-weights-step=*.pth; expected a StudioGAN "
            "checkpoint folder (RUN.ckpt_dir of the previous stage's run)"
        )
    return max(paths, key=lambda path: int(re.findall(r"step=(\d+)", path)[-1]))


def _state_dict(path: str) -> dict[str, Tensor]:
    # weights_only: the tensors and plain values StudioGAN saves load without running pickled code.
    states = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(states, Mapping) or "state_dict" not in states:
        raise ValueError(f"{path!r} is not a StudioGAN checkpoint (a dict with 'state_dict')")
    return dict(states["state_dict"])


class StudioGANStageLoss:
    r"""StudioGAN's ``d_loss`` / ``g_loss`` pair for RankGAN / GoGAN stages (maths §1-§3), bound to a ``WORKER``.

    .. math::
        \text{stage 1:}\quad L_D = [\, D(G(z)) + \epsilon - D(x) \,]_+, \qquad L_G = -D(G(z))

    .. math::
        \text{RankGAN, } i \ge 2:\quad L_D = [\, D_i(G_i(z)) - D_i(G_{i-1}(z)) \,]_+
        + \lambda_{clamp} \big( [m_{high} - D_i(x)]_+ + [D_i(G_{i-1}(z)) - m_{low}]_+ \big),
        \qquad L_G = [\, D_i(x) - D_i(G_i(z)) \,]_+

    GoGAN (``variant="gogan"``) and the single-stage score variants come from the same
    :class:`rankplug.StageObjective` (:attr:`objective`). Batch means, like StudioGAN's losses.

    **The same z.** A forward pre-hook on the live generator records the latents and labels of its latest call;
    in a discriminator round that is the call that made the fakes, so ``G_{i-1}`` gets the same ``z`` and labels.
    zCR (``LOSS.apply_zcr``, a second generator call on perturbed latents), InfoGAN codes, StyleGAN backbones
    (whose style mixing calls the mapping twice) and several GPUs without ``-DDP`` (``DataParallel`` replicas
    each see a chunk of ``z``) are refused from stage 2 on.

    **The previous stage** is the previous run's StudioGAN checkpoint folder (its ``RUN.ckpt_dir``): its
    ``model=G-{when}-weights-step=N.pth`` and ``model=D-...`` state dicts are loaded into frozen copies of the
    live networks (:func:`rankplug.stages.freeze`: eval mode, no gradients, never DDP-wrapped). With
    ``init_from_previous`` the live ``Gen``, ``Dis`` (and ``Gen_ema``) start from them too (RankGAN Algorithm 1).
    ``"auto"`` does so unless the run resumes a checkpoint of its own (``-ckpt``: ``RUN.ckpt_dir`` holds one).

    **Markers** (RankGAN Eq. 6) are computed once, here, before training starts: the frozen ``D_{i-1}`` on up to
    ``marker_images`` real images of ``worker.train_dataloader`` (split among the ranks under ``-DDP``, the
    statistic gathered over all of them, so every rank gets the same markers) and on as many ``G_{i-1}(z)``
    with the images' labels; both through ``AUG.series_augment``.

    **The previous-stage bank** (``bank_size = K > 0``, opt-in; :class:`rankplug.stages.PreviousStageBank`). The
    worker draws each fake batch's labels itself and gives them to its critic too, so the bank is drawn per
    class: ``ceil(K / DATA.num_classes)`` latents from ``MODEL.z_prior`` for every class, with the frozen
    ``G_{i-1}``'s images on them (GoGAN without augmentation -- no ``AUG.apply_diffaug`` / ``apply_ada`` /
    ``apply_apa`` -- keeps the frozen critic's scores instead). In a critic round (``worker.train_discriminator``,
    which the loss wraps) the hook swaps the fakes' ``z`` for bank latents of the very labels the worker drew, so
    the live ``G_i`` and the kept ``G_{i-1}`` image share ``z`` and label and each pair of RankGAN Eq. 4 stays
    exact; ``G_{i-1}`` no longer runs per round. Generator rounds keep their fresh ``z``. Kept images are
    augmented at use. The bank is filled at the first critic round (under the worker's autocast, as the per-round
    ``G_{i-1}`` runs), re-drawn every ``bank_refresh_every`` critic rounds (``None``: once per run), not saved in
    StudioGAN's checkpoints (a resumed run fills a new one), and filled by each rank from its own random state
    under ``-DDP``. Memory: ``K' (z_dim + 1 + C H W)`` values (``K' (z_dim + 2)`` for scores), ``K' = C
    ceil(K / C)``; see ``docs/integrations_studiogan.md``.

    Args:
        worker: StudioGAN's built ``WORKER`` (its ``Gen``, ``Dis``, ``LOSS``, ``MODEL``, ``RUN``, ``AUG``,
            ``train_dataloader``, ``local_rank``).
        previous: the previous stage's checkpoint folder; ``None`` trains stage 1.
        variant: ``"rankgan"`` (default), ``"gogan"``, or a single-stage score variant (``"margin"``, ...).
        margin: ``epsilon >= 0`` of the margin and GoGAN losses.
        clamp_weight: RankGAN's ``lambda_clamp >= 0`` (paper 1000, authors' code 1).
        rank_weight: GoGAN's ``lambda_2 >= 0``.
        markers: RankGAN's ``(m_high, m_low)``; computed from the data when ``None``.
        marker_statistic: ``"mean"`` (the paper) or ``"median"`` (the authors' code).
        marker_images: at most this many real images for the markers (>= 1).
        init_from_previous: ``"auto"``, ``True`` or ``False`` (see above).
        previous_when: ``"current"`` (default) or ``"best"``: which checkpoint of the previous run.
        bank_size: ``K >= 0`` latents in the previous-stage bank (see above); 0 (default): ``G_{i-1}`` runs in
            every critic round. Unused at stage 1.
        bank_refresh_every: re-draw the bank after this many critic rounds (``None``: never).
        bank_device: where the bank lives (``None``: the device of the fakes), e.g. ``"cpu"``.

    Example:
        >>> import types
        >>> G = torch.nn.Linear(4, 3)
        >>> D = lambda images, labels: {"adv_output": images.sum(1)}
        >>> worker = types.SimpleNamespace(Gen=G, Dis=D, LOSS=types.SimpleNamespace(adv_loss="hinge"))
        >>> loss = StudioGANStageLoss(worker)  # stage 1: the margin loss
        >>> real, fake = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
        >>> loss.d_loss(real, fake, DDP=False).backward()
        >>> loss.g_loss(fake, DDP=False).shape, loss.stage
        (torch.Size([]), 1)
    """

    def __init__(
        self,
        worker: Any,
        *,
        previous: str | os.PathLike[str] | None = None,
        variant: str = "rankgan",
        margin: float = 1.0,
        clamp_weight: float = 1000.0,
        rank_weight: float = 1.0,
        markers: tuple[float, float] | None = None,
        marker_statistic: str = "mean",
        marker_images: int = 5000,
        init_from_previous: bool | str = "auto",
        previous_when: str = "current",
        bank_size: int = 0,
        bank_refresh_every: int | None = None,
        bank_device: str | None = None,
    ) -> None:
        for name in ("Gen", "Dis", "LOSS"):
            if not hasattr(worker, name):
                raise TypeError(f"worker must be StudioGAN's WORKER; it has no {name!r} attribute")
        if getattr(worker.LOSS, "adv_loss", None) == "MH":
            raise ValueError("LOSS.adv_loss 'MH' (multi-hinge) calls d_loss with class logits; pick another adv_loss")
        self.worker = worker
        self.objective = StageObjective(
            check_choice(variant, "variant", SCORE_VARIANTS),
            margin=margin,
            clamp_weight=clamp_weight,
            rank_weight=rank_weight,
            gp_weight=0.0,  # StudioGAN's own LOSS.apply_gp / apply_r1_reg regularise D
        )
        self.marker_statistic = check_choice(marker_statistic, "marker_statistic", ("mean", "median"))
        self.marker_images = check_positive_int(marker_images, "marker_images")
        if init_from_previous not in ("auto", True, False):
            raise ValueError(f"init_from_previous must be 'auto', True or False; got {init_from_previous!r}")
        previous_when = check_choice(previous_when, "previous_when", ("current", "best"))
        if previous is not None and not isinstance(previous, (str, os.PathLike)):
            raise TypeError(f"previous must be a checkpoint folder path or None; got {type(previous).__name__}")
        self.previous_G: nn.Module | None = None
        self.previous_D: nn.Module | None = None
        self.last_real: Tensor | None = None
        self._latents: tuple[Tensor, Tensor] | None = None
        self.marker_sample_sizes: tuple[int, int] | None = None
        #: Running means of the latest critic round, for logs: ``real``, ``fake`` and ``prev_fake`` scores.
        self.latest: dict[str, float] = {}
        if previous is not None and not self.objective.staged:
            raise ValueError(f"variant {variant!r} has one stage; previous is for 'rankgan' and 'gogan' only")
        if previous is not None:
            self._check_host_for_stages()
            self._load_previous(os.fspath(previous), previous_when, init_from_previous)
        if markers is not None:
            if not (isinstance(markers, (tuple, list)) and len(markers) == 2):
                raise ValueError(f"markers must be a pair (m_high, m_low); got {markers!r}")
            self.objective.set_markers(markers[0], markers[1])
        elif self.objective.needs_markers(self.stage):
            self.compute_markers()
        #: The previous-stage bank (``None`` without ``bank_size`` or at stage 1); see the class docstring.
        self.bank: PreviousStageBank | None = None
        self._per_class = 0  # bank rows per class: class y holds rows [y * _per_class, (y + 1) * _per_class)
        self._critic_round = False
        self._drawn: BankDraw | None = None  # the bank rows behind the latest generator call of a critic round
        if check_int_at_least(bank_size, "bank_size", 0) > 0 and self.previous_G is not None:
            self._make_bank(bank_size, bank_refresh_every, bank_device)
        if self.previous_G is not None:
            # After the frozen copies are made, so they do not carry the hook.
            unwrap(worker.Gen).register_forward_pre_hook(self._record_latents, with_kwargs=True)

    # ---------------------------------------------------------------------------------------------- set-up
    @property
    def stage(self) -> int:
        """1 without a previous stage, else 2 (the recipe only needs to know whether one exists)."""
        return 1 if self.previous_G is None else 2

    @property
    def markers(self) -> tuple[float, float] | None:
        """RankGAN's ``(m_high, m_low)`` in use, or ``None``."""
        return self.objective.markers

    def _check_host_for_stages(self) -> None:
        worker = self.worker
        if getattr(worker, "is_stylegan", False):
            raise ValueError(
                "stages >= 2 on StudioGAN's StyleGAN backbones are not supported (style mixing calls the mapping "
                "twice, so G_{i-1} cannot get the fakes' latents); use rankplug.integrations.stylegan2_ada"
            )
        gen = worker.Gen
        if isinstance(gen, nn.DataParallel) and len(gen.device_ids) > 1:
            raise ValueError(
                "several GPUs without -DDP: DataParallel runs the generator in replicas, one chunk of z each, so the "
                "fakes' latents cannot be recorded whole; train stages >= 2 with -DDP"
            )
        if getattr(worker.LOSS, "apply_zcr", False):
            raise ValueError(
                "LOSS.apply_zcr calls the generator again on perturbed latents; turn it off for stages >= 2"
            )
        if getattr(worker.MODEL, "info_type", "N/A") not in ("N/A", None):
            raise ValueError("InfoGAN codes (MODEL.info_type) are not supported for stages >= 2")

    def _load_previous(self, directory: str, when: str, init: bool | str) -> None:
        worker = self.worker
        g_state = _state_dict(_checkpoint(directory, "G", when))
        d_state = _state_dict(_checkpoint(directory, "D", when))
        if init == "auto":
            own = getattr(worker.RUN, "ckpt_dir", None)
            init = not (own and glob.glob(os.path.join(glob.escape(own), "model=G-*-weights-step=*.pth")))
        if init:
            unwrap(worker.Gen).load_state_dict(g_state)
            unwrap(worker.Dis).load_state_dict(d_state)
            if getattr(worker, "Gen_ema", None) is not None:
                try:
                    ema_state = _state_dict(_checkpoint(directory, "G_ema", when))
                except FileNotFoundError:
                    ema_state = g_state
                unwrap(worker.Gen_ema).load_state_dict(ema_state)
        self.previous_G, self.previous_D = freeze(worker.Gen), freeze(worker.Dis)
        self.previous_G.load_state_dict(g_state)
        self.previous_D.load_state_dict(d_state)

    def _record_latents(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        z = args[0] if args else kwargs.get("z")
        label = args[1] if len(args) > 1 else kwargs.get("label")
        if not (isinstance(z, Tensor) and isinstance(label, Tensor)):
            return None
        self._drawn = None
        if self.bank is None or not self._critic_round:
            self._latents = (z.detach(), label.detach())
            return None
        # A critic round with the bank: bank latents of the worker's own labels take the place of its z.
        self._drawn = self._draw_bank(label, z.device)
        bank_z = self._drawn.z[:, :-1].to(z.dtype)
        self._latents = (bank_z, label.detach())
        if args:
            return (bank_z, *args[1:]), kwargs
        return args, {**kwargs, "z": bank_z}

    # ------------------------------------------------------------------------------------------------ bank
    def _augments(self) -> bool:
        aug = getattr(self.worker, "AUG", None)
        return any(bool(getattr(aug, flag, False)) for flag in ("apply_diffaug", "apply_ada", "apply_apa"))

    def _make_bank(self, size: int, refresh_every: int | None, device: str | None) -> None:
        worker = self.worker
        if not callable(getattr(worker, "train_discriminator", None)):
            raise TypeError("bank_size needs StudioGAN's WORKER.train_discriminator (the critic rounds it marks)")
        classes = int(getattr(getattr(worker, "DATA", None), "num_classes", 1) or 1)
        self._per_class = -(-size // classes)
        # Kept scores are only exact when nothing random stands between G_{i-1}(z) and D_{i-1}: no augmentation.
        previous_judge = self.objective.judge(2) == "previous"
        keep: Literal["images", "scores"] = "scores" if previous_judge and not self._augments() else "images"
        device = check_device_setting(device, "bank_device")
        self.bank = PreviousStageBank(classes * self._per_class, keep=keep, device=device, refresh_every=refresh_every)
        train_discriminator = worker.train_discriminator

        def critic_round(*args: Any, **kwargs: Any) -> Any:  # marks the generator calls whose z the bank supplies
            self._critic_round = True
            try:
                return train_discriminator(*args, **kwargs)
            finally:
                self._critic_round = False

        worker.train_discriminator = critic_round

    def fill_bank(self, device: Any) -> PreviousStageBank:
        """Draw the bank's latents, ``ceil(K / C)`` per class, and keep the frozen stage's outputs on them.

        Shape:
            - The bank's ``z``: ``(K', z_dim + 1)`` rows ``[z | label]``, class by class (``K' = C ceil(K / C)``);
              its images ``(K', C_img, H, W)`` or scores ``(K',)``. Done at the first critic round.
        """
        bank = self.bank
        if bank is None or self.previous_G is None or self.previous_D is None:
            raise ValueError("fill_bank needs bank_size > 0 and a previous stage")
        classes = bank.size // self._per_class
        labels = torch.arange(classes, device=device).repeat_interleave(self._per_class)
        rows = torch.cat([self._sample_z(bank.size, device), labels[:, None].float()], dim=1)
        previous_G, previous_D = self.previous_G, self.previous_D
        bank.fill(
            2,
            rows,
            lambda chunk: previous_G(chunk[:, :-1], chunk[:, -1].long()),
            lambda images, chunk: previous_D(images, chunk[:, -1].long())["adv_output"],
            lambda scores: scores.float().flatten(),
            critic_sees_latents=True,  # the frozen critic gets each row's label
        )
        return bank

    def _draw_bank(self, label: Tensor, device: Any) -> BankDraw:
        bank = self.bank
        assert bank is not None
        if bank.due(2):
            self.fill_bank(device)
        assert bank.z is not None
        classes = bank.size // self._per_class
        label = label.detach().long().reshape(-1)
        if label.numel() and (int(label.min()) < 0 or int(label.max()) >= classes):
            raise ValueError(
                f"the fakes' labels must lie in [0, DATA.num_classes = {classes}) for the bank; got "
                f"{int(label.min())}..{int(label.max())}"
            )
        label = label.to(bank.z.device)
        offsets = torch.randint(self._per_class, (label.numel(),), device=bank.z.device)
        return bank.take(label * self._per_class + offsets, torch.device(device))

    def _sample_z(self, n: int, device: Any) -> Tensor:
        prior = getattr(self.worker.MODEL, "z_prior", "gaussian")
        z_dim = self.worker.MODEL.z_dim
        if prior == "uniform":
            return torch.rand(n, z_dim, device=device) * 2 - 1
        return torch.randn(n, z_dim, device=device)

    def _augment(self, images: Tensor) -> Tensor:
        augment = getattr(getattr(self.worker, "AUG", None), "series_augment", None)
        return images if augment is None else augment(images)

    def compute_markers(self) -> tuple[float, float]:
        """RankGAN's markers from the data (see the class docstring); stored in :attr:`markers`.

        Shape:
            - Output: ``(m_high, m_low)``, floats, the same on every rank.
        """
        if self.previous_G is None or self.previous_D is None:
            raise ValueError("markers need a previous stage; stage 1 (previous=None) has none")
        rank, world = _rank_and_world()
        quota = self.marker_images // world + (rank < self.marker_images % world)
        device = self.worker.local_rank
        real_scores, fake_scores, seen = [], [], 0
        with torch.no_grad():
            for images, labels in self.worker.train_dataloader:
                if seen >= quota:
                    break
                images, labels = images[: quota - seen].to(device), labels[: quota - seen].to(device)
                real_scores.append(self.previous_D(self._augment(images), labels)["adv_output"].float().flatten())
                fakes = self.previous_G(self._sample_z(images.shape[0], images.device), labels)
                fake_scores.append(self.previous_D(self._augment(fakes), labels)["adv_output"].float().flatten())
                seen += images.shape[0]
        empty = torch.zeros(0, device=device)
        real = torch.cat(real_scores) if real_scores else empty
        fake = torch.cat(fake_scores) if fake_scores else empty
        high, low = marker_statistics(real, fake, statistic=self.marker_statistic)  # type: ignore[arg-type]
        if low > high:
            raise ValueError(
                f"the previous stage's discriminator scores its fakes above the data (m_low={low:.4g} > "
                f"m_high={high:.4g}); train the previous stage longer or pass markers=(m_high, m_low)"
            )
        self.objective.set_markers(high, low)
        counts = torch.tensor([real.numel(), fake.numel()], device=real.device)
        if world > 1:
            torch.distributed.all_reduce(counts)
        self.marker_sample_sizes = (int(counts[0]), int(counts[1]))
        if rank == 0:
            print(
                f"rankplug: markers m_high={high:.4g}, m_low={low:.4g} ({self.marker_statistic}) from "
                f"{self.marker_sample_sizes[0]} real images and {self.marker_sample_sizes[1]} previous-stage fakes"
            )
        return high, low

    # ---------------------------------------------------------------------------------------------- losses
    def _previous_scores(self) -> Tensor | None:
        """The judge's scores of ``G_{i-1}(z)`` for the fakes' ``z`` and labels, or ``None`` without a judge."""
        judge = self.objective.judge(self.stage)
        if judge is None:
            return None
        if self._latents is None:
            raise RuntimeError("no generator call was recorded before d_loss: G_{i-1}(z) needs the fakes' latents")
        assert self.previous_G is not None and self.previous_D is not None  # stage 2 has both
        z, labels = self._latents
        drawn, self._drawn = self._drawn, None  # a draw pairs with one d_loss
        if drawn is not None and drawn.scores is not None:  # GoGAN without augmentation: the kept D_{i-1} scores
            return drawn.scores
        with torch.no_grad():
            kept = drawn.images if drawn is not None else None
            images = self._augment(kept if kept is not None else self.previous_G(z, labels))
        if judge == "current":  # RankGAN Eq. 4: the live D_i, with its gradient, through the worker's (DDP) Dis
            return self.worker.Dis(images, labels)["adv_output"]
        with torch.no_grad():  # GoGAN Eq. 4: the frozen D_{i-1}
            return self.previous_D(images, labels)["adv_output"]

    def d_loss(self, d_logit_real: Tensor, d_logit_fake: Tensor, DDP: bool = False, **unused: Any) -> Tensor:
        """StudioGAN's ``d_loss(d_logit_real, d_logit_fake, DDP)``: the stage's critic loss (class docstring).

        Shape:
            - d_logit_real, d_logit_fake: ``(N,)``. Output: a scalar.
        """
        prev = self._previous_scores()
        self.last_real = d_logit_real.detach()
        self.latest = {
            "real": float(d_logit_real.detach().float().mean()),
            "fake": float(d_logit_fake.detach().float().mean()),
        }
        if prev is not None:
            self.latest["prev_fake"] = float(prev.detach().float().mean())
        return self.objective.critic_loss(d_logit_real, d_logit_fake, prev, stage=self.stage)

    def g_loss(self, d_logit_fake: Tensor, DDP: bool = False, **unused: Any) -> Tensor:
        """StudioGAN's ``g_loss(d_logit_fake, DDP)``: the stage's generator loss (class docstring).

        RankGAN's stage-``i >= 2`` loss needs ``D_i(x)``: the real logits of the latest ``d_loss`` call
        (detached; StudioGAN's default ``OPTIMIZATION.d_first`` runs the critic first), the first ``N`` of them.

        Shape:
            - d_logit_fake: ``(N,)``. Output: a scalar.
        """
        real = None
        if self.objective.judge(self.stage) == "current":
            n = d_logit_fake.shape[0]
            if self.last_real is None or self.last_real.shape[0] < n:
                raise ValueError(
                    "RankGAN's generator loss at stage >= 2 needs D_i(x) for "
                    f"{n} samples from a critic step first (set OPTIMIZATION.d_first: True)"
                )
            real = self.last_real[:n]
        return self.objective.generator_loss(d_logit_fake, real=real, stage=self.stage)

    def summary(self) -> dict[str, Any]:
        """The stage, the markers, their sample sizes and :attr:`latest`, as plain values (for logs)."""
        markers = self.markers
        out = {
            "stage": self.stage,
            "variant": self.objective.variant,
            "markers": list(markers) if markers is not None else None,
            "marker_sample_sizes": list(self.marker_sample_sizes) if self.marker_sample_sizes else None,
            "latest": dict(self.latest),
        }
        if self.bank is not None:
            out["bank"] = {"size": self.bank.size, "keep": self.bank.keep, "fills": self.bank.fills,
                           "draws": self.bank.draws}  # fmt: skip
        return out


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def patch_worker(worker: Any, **options: Any) -> StudioGANStageLoss:
    """Replace ``worker.LOSS.d_loss`` and ``worker.LOSS.g_loss`` with the stage loss; returns it (also ``worker.rankplug``).

    Call it once, right after ``worker = WORKER(...)`` in ``src/loader.py`` (``WORKER.__init__`` sets the losses
    from ``LOSS.adv_loss``; this replaces them before training starts). ``options`` are
    :class:`StudioGANStageLoss`'s keywords, e.g. from :func:`options_from_env`.

    Example:
        >>> import types
        >>> worker = types.SimpleNamespace(Gen=torch.nn.Linear(2, 2), Dis=None, LOSS=types.SimpleNamespace(adv_loss="hinge"))
        >>> loss = patch_worker(worker, variant="rankgan", margin=0.5)
        >>> worker.LOSS.d_loss == loss.d_loss, worker.rankplug is loss
        (True, True)
        >>> round(float(worker.LOSS.d_loss(torch.tensor([1.0]), torch.tensor([0.8]))), 4)  # [0.8 + 0.5 - 1.0]_+
        0.3
    """
    loss = StudioGANStageLoss(worker, **options)
    worker.LOSS.d_loss, worker.LOSS.g_loss = loss.d_loss, loss.g_loss
    worker.rankplug = loss
    return loss


__all__ = ["BANK_VARIABLES", "ENVIRONMENT", "SCORE_VARIANTS", "StudioGANStageLoss", "options_from_env", "patch_worker"]
