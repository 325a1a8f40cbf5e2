"""The stage manager for RankGAN and GoGAN (maths §2-§4): frozen snapshots, markers, latents, the previous-stage
bank and crash-safe resume, in one object a training loop holds."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rankplug._validation import check_choice, check_nonnegative, check_positive_int, per_sample_scores
from rankplug.functional.penalty import OutputSelector, select_scores
from rankplug.stages.bank import BankDraw, PreviousStageBank
from rankplug.stages.checkpoint import CheckpointError, atomic_save, safe_load
from rankplug.stages.encoder import encode, pretrain_encoder, real_images
from rankplug.stages.frozen import FrozenStage, freeze, unwrap
from rankplug.stages.markers import broadcast_module, marker_statistics, previous_stage_scores, rank, world_size
from rankplug.stages.state import (
    FORMAT_VERSION,
    LoadTarget,
    Stateful,
    backup,
    bank_entry,
    check_state,
    gather_bank,
    load_bank,
    load_networks,
    restore,
    rng_state,
    set_rng_state,
)

CHECKPOINT_NAME = "stage_manager.pt"
# The manager's plain fields a failed load puts back (with the weights, registered state, bank and RNG).
_RESTORED_FIELDS = ("stage", "previous", "markers", "history", "_plateau_reference", "_plateau_count")


class StageManager:
    r"""Stages for RankGAN and GoGAN: frozen snapshots, markers, encoder latents and crash-safe resume.

    Stage ``i`` trains the live ``generator`` / ``discriminator`` against a frozen copy of stage ``i - 1``
    (RankGAN Algorithm 1, GoGAN Sec. 3). The manager

    - snapshots and freezes the previous stage on :meth:`advance` while **the live modules keep training in
      place**, so the user's optimizers keep working;
    - keeps only the immediately previous stage in memory (older ones go to ``directory`` when given), so memory
      is flat in the number of stages;
    - computes RankGAN's markers ``m_high = E[D_{i-1}(x)]`` and ``m_low = E[D_{i-1}(G_{i-1}(z))]`` (Eq. 6) with
      the frozen previous stage, over all ranks under ``torch.distributed``;
    - draws latents ``z ~ N(0, I)``, or ``z ~ N(mu(x), sigma(x))`` from an encoder (RankGAN Sec. 3.3);
    - optionally keeps a :class:`PreviousStageBank` of latents with the frozen stage's outputs on them, so that a
      critic step draws ``z``, ``G_{i-1}(z)`` and ``D_{i-1}(G_{i-1}(z))`` (:meth:`draw_previous`) instead of
      running the frozen networks, with the pairs of RankGAN Eq. 4 and GoGAN Eq. 4 exact;
    - decides when a stage ends (fixed length, or a plateau of the gap ``Gamma`` of GoGAN Eq. 6) and records
      ``Gamma`` and the score ladder ``D_i(x)``, ``D_i(G_i(z))``, ``D_i(G_{i-1}(z))`` per stage;
    - saves and resumes everything atomically: weights, optimizers, scaler, EMA, RNG states, history. The file
      carries a SHA-256 checksum, and a load is all or nothing: a checkpoint that is corrupt or does not fit
      raises :class:`~rankplug.CheckpointError` and changes nothing.

    Args:
        generator: the live ``G`` (plain, ``DistributedDataParallel`` or ``DataParallel``).
        discriminator: the live ``D``.
        encoder: optional ``E`` returning ``(mu, logvar)`` of ``q(z | x)``, each ``(N, *latent_shape)``.
        ema_generator: optional EMA copy of ``G``, snapshotted with the stage.
        directory: where :meth:`save` writes and where stages older than the previous one are kept.
        latent_shape: shape of one latent code, e.g. ``(100, 1, 1)`` for DCGAN; needed by :meth:`sample_latent`.
        latent_distribution: the prior of :meth:`sample_latent` without an encoder, ``"normal"`` (``N(0, I)``) or
            ``"uniform"`` (``U(0, 1)``, MBGAN Sec. 4).
        output_selector: picks the score from ``D``'s output for markers (``0`` for StarGAN's tuple).
        stage_length: end a stage after this many :meth:`record` calls (``None``: no fixed length).
        plateau_patience: end a stage once ``Gamma`` has stayed within ``plateau_tolerance`` of a reference
            value for this many consecutive :meth:`record` calls (``None``: off).
        plateau_tolerance: the band for the plateau test, in score units.
        bank: an opt-in :class:`PreviousStageBank` (``None``: off), emptied at every :meth:`advance`, filled at
            the first :meth:`draw_previous` of a stage (or by :meth:`fill_bank`), saved with the checkpoint.

    Example:
        >>> G = torch.nn.Sequential(torch.nn.Linear(4, 8))
        >>> D = torch.nn.Sequential(torch.nn.Linear(8, 1))
        >>> _ = torch.nn.init.constant_(D[0].weight, 0.1)  # a critic that scores the data (mean 5) higher
        >>> manager = StageManager(G, D, latent_shape=(4,))
        >>> manager.stage, manager.previous
        (1, None)
        >>> manager.advance()                       # freeze stage 1; G and D keep training as stage 2
        >>> manager.stage, manager.previous.generator.training
        (2, False)
        >>> z = manager.sample_latent(3)            # z ~ N(0, I), shape (3, 4)
        >>> prev_fake = manager.previous.generator(z)
        >>> prev_fake.requires_grad                 # frozen forwards build no graph
        False
        >>> real_batches = [torch.randn(16, 8) + 5.0 for _ in range(4)]
        >>> m_high, m_low = manager.compute_markers(real_batches, statistic="median")  # RankGAN Eq. 6
        >>> m_high > m_low
        True
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        encoder: nn.Module | None = None,
        ema_generator: nn.Module | None = None,
        directory: str | Path | None = None,
        latent_shape: int | tuple[int, ...] | None = None,
        latent_distribution: Literal["normal", "uniform"] = "normal",
        output_selector: OutputSelector = None,
        stage_length: int | None = None,
        plateau_patience: int | None = None,
        plateau_tolerance: float = 0.05,
        bank: PreviousStageBank | None = None,
    ) -> None:
        for name, module in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module; got {type(module).__name__}")
        for name, optional in (("encoder", encoder), ("ema_generator", ema_generator)):
            if optional is not None and not isinstance(optional, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module or None; got {type(optional).__name__}")
        self.generator = generator
        self.discriminator = discriminator
        self.encoder = encoder
        self.ema_generator = ema_generator
        self.directory = Path(directory) if directory is not None else None
        if isinstance(latent_shape, int):
            latent_shape = (latent_shape,)
        if latent_shape is not None:
            latent_shape = tuple(check_positive_int(d, "latent_shape") for d in latent_shape)
        self.latent_shape: tuple[int, ...] | None = latent_shape
        self.latent_distribution = check_choice(latent_distribution, "latent_distribution", ("normal", "uniform"))
        self.output_selector = output_selector
        self.stage_length = None if stage_length is None else check_positive_int(stage_length, "stage_length")
        self.plateau_patience = (
            None if plateau_patience is None else check_positive_int(plateau_patience, "plateau_patience")
        )
        self.plateau_tolerance = check_nonnegative(plateau_tolerance, "plateau_tolerance")
        if bank is not None and not isinstance(bank, PreviousStageBank):
            raise TypeError(f"bank must be a PreviousStageBank or None; got {type(bank).__name__}")
        if bank is not None and latent_shape is not None:
            bank.check_fits(latent_shape, None, self._device())  # the images' shape is known at the first fill
        self.bank = bank
        self.stage = 1
        self.previous: FrozenStage | None = None
        self.markers: tuple[float, float] | None = None
        self.history: list[dict[str, Any]] = [self._new_stage_record(1)]
        self._registered: dict[str, Stateful] = {}
        self._plateau_reference: float | None = None
        self._plateau_count = 0

    # ----------------------------------------------------------------------------------------------- registry
    def register(self, name: str, obj: Stateful) -> None:
        """Save and restore ``obj`` (an optimizer, ``GradScaler``, EMA helper, ...) with the manager."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string; got {name!r}")
        if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
            raise TypeError(f"{name} must have state_dict() and load_state_dict(); got {type(obj).__name__}")
        self._registered[name] = obj

    @property
    def registered(self) -> dict[str, Stateful]:
        return dict(self._registered)

    # ---------------------------------------------------------------------------------------------- the stages
    @staticmethod
    def _new_stage_record(stage: int) -> dict[str, Any]:
        return {"stage": stage, "markers": None, "gap": [], "real": [], "fake": [], "prev_fake": []}

    def _live(self) -> dict[str, nn.Module]:
        out = {"generator": self.generator, "discriminator": self.discriminator}
        if self.ema_generator is not None:
            out["ema_generator"] = self.ema_generator
        return out

    def advance(self, *, reset_optimizers: bool = False) -> None:
        """Finish the current stage: freeze copies of the live networks as the new ``previous`` and start the next.

        The live modules are not replaced: they keep training in place, initialised from the stage that just
        ended (RankGAN Algorithm 1). The stage before the old ``previous`` is written to ``directory`` (if
        given, by rank 0) and dropped from memory. With ``reset_optimizers=True`` the per-parameter state (Adam
        moments, step counts) of every registered ``torch.optim.Optimizer`` is cleared; learning rates are kept.

        Raises:
            OSError: the outgoing stage could not be written (a full disk: ``errno.ENOSPC``). It is written
                before anything changes, so the manager is as it was (same ``stage``, same ``previous``) and
                ``advance()`` can be called again once there is room. Under ``torch.distributed`` every rank
                raises.
        """
        old = self.previous
        if old is not None:
            self._write_old_stage(old)
        snapshot = {name: freeze(module) for name, module in self._live().items()}
        for module in snapshot.values():
            broadcast_module(module)  # identical frozen copies on every rank
        self.previous = FrozenStage(stage=self.stage, **snapshot)
        del old
        if reset_optimizers:
            for obj in self._registered.values():
                if isinstance(obj, torch.optim.Optimizer):
                    obj.state.clear()
        self.stage += 1
        self.markers = None
        if self.bank is not None:
            self.bank.clear()  # its outputs were the old previous stage's
        self.history.append(self._new_stage_record(self.stage))
        self._plateau_reference, self._plateau_count = None, 0

    def _write_old_stage(self, stage: FrozenStage) -> None:
        """Write ``stage`` to ``directory`` (if any) on rank 0; raise ``OSError`` on every rank if that failed."""
        failure: OSError | None = None
        if rank() == 0 and self.directory is not None:
            weights = {name: module.state_dict() for name, module in stage.modules().items()}
            try:
                atomic_save({"stage": stage.stage, "weights": weights}, self.directory / f"stage-{stage.stage:04d}.pt")
            except OSError as error:
                failure = error
        if world_size() > 1:
            # Every rank takes part (a directory may be set on rank 0 only): the others must not move on to a
            # stage that rank 0 could not keep.
            flag = torch.tensor([0 if failure is None else 1], device=self._device())
            dist.broadcast(flag, src=0)
            if failure is None and int(flag.item()):
                raise OSError(f"rank 0 could not write stage {stage.stage} to its directory; nothing changed")
        if failure is not None:
            raise failure

    def memory_footprint(self) -> dict[str, int]:
        """Number and bytes of the distinct parameter and buffer tensors the manager holds in memory (and the bank's)."""
        seen: dict[int, int] = {}
        modules = list(self._live().values())
        if self.encoder is not None:
            modules.append(self.encoder)
        if self.previous is not None:
            modules.extend(self.previous.modules().values())
        for module in modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                seen[id(tensor)] = tensor.numel() * tensor.element_size()
        held = self.bank.tensors().values() if self.bank is not None else ()
        for kept in held:
            if kept is not None:
                seen[id(kept)] = kept.numel() * kept.element_size()
        return {"tensors": len(seen), "bytes": sum(seen.values())}

    # ------------------------------------------------------------------------------------------------ latents
    def _device(self) -> torch.device:
        for tensor in unwrap(self.generator).parameters():
            return tensor.device
        return torch.device("cpu")

    def sample_latent(self, n: int, *, real: Tensor | None = None) -> Tensor:
        """Draw ``n`` latent codes: ``z ~ N(0, I)`` (or ``U(0, 1)`` with ``latent_distribution="uniform"``, MBGAN's
        prior), or with an encoder ``z ~ N(mu(x), sigma(x))`` for ``real``.

        With an encoder and a real batch, ``n`` must equal the batch size and the encoder's ``(mu, logvar)``
        give ``z = mu + exp(logvar / 2) * eps`` (RankGAN Sec. 3.3). Without a real batch, the prior.

        Shape:
            - real: ``(n, *)``. Output: ``(n, *latent_shape)``.
        """
        n = check_positive_int(n, "n")
        if real is not None and self.encoder is not None:
            if real.shape[0] != n:
                raise ValueError(f"real has batch size {real.shape[0]}; expected n = {n}")
            return encode(self.encoder, real, self.latent_shape)
        if self.latent_shape is None:
            raise ValueError("latent_shape is not set; pass StageManager(..., latent_shape=...) to sample z ~ N(0, I)")
        draw = torch.rand if self.latent_distribution == "uniform" else torch.randn
        return draw(n, *self.latent_shape, device=self._device())

    def pretrain_encoder(
        self,
        batches: Iterable[Any],
        *,
        epochs: int = 1,
        lr: float = 1e-3,
        kl_weight: float = 1.0,
        progress: bool = False,
    ) -> list[float]:
        r"""Stage 0 of RankGAN (Sec. 3.3): train the encoder with the live generator as the VAE decoder, then freeze
        the encoder; returns the mean loss per epoch. The loss and its settings are those of
        :func:`rankplug.stages.encoder.pretrain_encoder`."""
        if self.encoder is None:
            raise ValueError("pretrain_encoder needs an encoder; pass StageManager(..., encoder=...)")
        return pretrain_encoder(
            self.encoder,
            self.generator,
            batches,
            latent_shape=self.latent_shape,
            device=self._device(),
            epochs=epochs,
            lr=lr,
            kl_weight=kl_weight,
            progress=progress,
        )

    # -------------------------------------------------------------------------------------------------- bank
    def _require_bank(self) -> PreviousStageBank:
        if self.bank is None:
            raise ValueError("this manager has no bank; pass StageManager(..., bank=PreviousStageBank(size))")
        if self.previous is None:
            raise ValueError("the bank holds the previous stage's outputs; call advance() first (stage 1 has none)")
        return self.bank

    def fill_bank(self, real_batches: Iterable[Any] | None = None) -> PreviousStageBank:
        """Fill the bank now with ``K`` fresh latents and the frozen previous stage's outputs on them.

        The latents come from :meth:`sample_latent`: the prior, or with an encoder ``z ~ N(mu(x), sigma(x))`` of
        the first ``K`` images of ``real_batches`` (required then: batches of ``x`` or ``(x, y, ...)``). Each
        rank under ``torch.distributed`` fills its own bank from its own random state (no collectives).

        Raises:
            ValueError: no bank, stage 1, an encoder with fewer than ``K`` real images, or a bank too large for the
                memory of its device (:meth:`PreviousStageBank.check_fits`).
        """
        bank = self._require_bank()
        assert self.previous is not None  # checked by _require_bank
        bank.check_fits(self.latent_shape, None, self._device())  # before K latents are drawn
        if self.encoder is None:
            latents = self.sample_latent(bank.size)
        else:
            if real_batches is None:
                raise ValueError(
                    f"with an encoder the bank's latents come from real images: pass real_batches holding at least "
                    f"{bank.size} images to fill_bank (draw_previous cannot fill it)"
                )
            parts, count = [], 0
            for batch in real_batches:
                x = real_images(batch).to(self._device())
                parts.append(self.sample_latent(x.shape[0], real=x))
                count += x.shape[0]
                if count >= bank.size:
                    break
            if count < bank.size:
                raise ValueError(f"real_batches hold {count} images; the bank needs {bank.size}")
            latents = torch.cat(parts)[: bank.size]
        bank.fill(self.stage, latents, self.previous.generator, self.previous.discriminator, self._scores)
        return bank

    def draw_previous(self, n: int) -> BankDraw:
        """``n`` latents with ``G_{i-1}(z)`` and/or ``D_{i-1}(G_{i-1}(z))`` from the bank (RankGAN / GoGAN Eq. 4).

        Feed ``draw.z`` to the live generator: its samples then pair exactly with ``draw.images`` (scored by the
        current critic, RankGAN) or ``draw.scores`` (the frozen critic's scores, GoGAN). Without an encoder the
        bank fills itself when it is empty or its refresh is due; with one, call :meth:`fill_bank` then (see
        :attr:`bank_due`).

        Shape:
            - Output: ``z`` ``(n, *latent_shape)``, ``images`` ``(n, *image_shape)``, ``scores`` ``(n,)``, on the
              generator's device.
        """
        bank = self._require_bank()
        if bank.due(self.stage):
            self.fill_bank()
        return bank.draw(n, self._device())

    @property
    def bank_due(self) -> bool:
        """Whether the next :meth:`draw_previous` fills the bank first (``False`` without a bank or at stage 1)."""
        return self.bank is not None and self.previous is not None and self.bank.due(self.stage)

    # ------------------------------------------------------------------------------------------------ markers
    def compute_markers(
        self,
        real_batches: Iterable[Any],
        *,
        statistic: Literal["mean", "median"] = "mean",
        batch_statistics: bool = False,
    ) -> tuple[float, float]:
        """RankGAN's markers (Eq. 6, Algorithm 1) from the frozen previous stage over the batches given.

        ``m_high`` is the statistic of ``D_{i-1}(x)`` over every real sample, ``m_low`` that of
        ``D_{i-1}(G_{i-1}(z))`` over as many latents (drawn with :meth:`sample_latent`, from the encoder when
        there is one). ``"mean"`` is the paper's expectation; ``"median"`` the authors' code (the usual median:
        the mean of the two middle values for an even count). Under ``torch.distributed`` the statistic covers
        every rank's batches, so all ranks get the numbers one process would get over the union of the data;
        ranks may hold different numbers of batches and samples.

        ``batch_statistics=True`` is for critics with BatchNorm that are only ever run in train mode on batches
        that are all real or all fake (DCGAN's ``netD``): the frozen critic then scores each batch with that
        batch's statistics, the scale the stage's losses see, instead of its running statistics, which put such
        a critic's scores on another scale. The frozen generator stays in eval mode, as when it makes
        ``G_{i-1}(z)`` during the stage. See :func:`use_batch_statistics`.

        Returns:
            ``(m_high, m_low)``, also stored in :attr:`markers` and the stage's history.
        """
        statistic = check_choice(statistic, "statistic", ("mean", "median"))  # type: ignore[assignment]
        batch_statistics_ = bool(batch_statistics)
        if self.previous is None:
            raise ValueError("markers need a previous stage; call advance() first (stage 1 has none)")
        real, fake = previous_stage_scores(
            self.previous,
            real_batches,
            lambda x: self.sample_latent(x.shape[0], real=x),
            self._scores,
            device=self._device(),
            batch_statistics=batch_statistics_,
        )
        high, low = marker_statistics(real, fake, statistic=statistic)
        if low > high:
            warnings.warn(
                f"the previous stage's critic scores its fakes above the real data (m_low={low:.4g} > "
                f"m_high={high:.4g}); StageRankLoss needs m_low <= m_high, so train the previous stage longer",
                RuntimeWarning,
                stacklevel=2,
            )
        self.markers = (high, low)
        self.history[-1]["markers"] = {
            "m_high": high,
            "m_low": low,
            "statistic": statistic,
            "batch_statistics": batch_statistics_,
        }
        return self.markers

    def _scores(self, output: Any) -> Tensor:
        return per_sample_scores(select_scores(output, self.output_selector), "discriminator output").detach()

    # ---------------------------------------------------------------------------------------- end of a stage
    def record(
        self,
        real_scores: Tensor,
        fake_scores: Tensor,
        prev_fake_scores: Tensor | None = None,
    ) -> float:
        """Log the current critic's score ladder and the gap ``Gamma = mean D(x) - mean D(G(z))`` (GoGAN Eq. 6).

        Call it at whatever interval defines a "record" for ``stage_length`` / ``plateau_patience`` (a step, an
        epoch). Returns ``Gamma``. A non-finite ``Gamma`` (NaN or inf: a diverged critic) is logged and counts
        towards ``stage_length``, but the plateau test ignores it (it neither resets nor extends the plateau)
        and a ``RuntimeWarning`` says so.
        """
        real = float(per_sample_scores(real_scores, "real_scores").detach().double().mean())
        fake = float(per_sample_scores(fake_scores, "fake_scores").detach().double().mean())
        gap = real - fake
        entry = self.history[-1]
        entry["real"].append(real)
        entry["fake"].append(fake)
        entry["gap"].append(gap)
        if prev_fake_scores is not None:
            prev = per_sample_scores(prev_fake_scores, "prev_fake_scores").detach().double().mean()
            entry["prev_fake"].append(float(prev))
        if not math.isfinite(gap):
            # NaN compares false with everything, so it would land on the "plateau" side of the test below and
            # end the stage; a diverged record says nothing about a plateau, so it is logged and skipped.
            warnings.warn(
                f"the gap Gamma = mean D(x) - mean D(G(z)) is not finite ({gap}; mean D(x) = {real}, mean "
                f"D(G(z)) = {fake}); it is logged, counts towards stage_length, and is ignored by the plateau test",
                RuntimeWarning,
                stacklevel=2,
            )
        elif self._plateau_reference is None or abs(gap - self._plateau_reference) > self.plateau_tolerance:
            self._plateau_reference, self._plateau_count = gap, 0
        else:
            self._plateau_count += 1
        return gap

    @property
    def stage_done(self) -> bool:
        """Whether the current stage has reached ``stage_length`` records or a plateau of ``Gamma``."""
        records = len(self.history[-1]["gap"])
        if self.stage_length is not None and records >= self.stage_length:
            return True
        return self.plateau_patience is not None and self._plateau_count >= self.plateau_patience

    # -------------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: stage, markers, live and frozen weights, registered state, RNG, history."""
        state: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "stage": self.stage,
            "markers": None if self.markers is None else list(self.markers),
            "live": {name: unwrap(module).state_dict() for name, module in self._live().items()},
            "encoder": None if self.encoder is None else self.encoder.state_dict(),
            "previous": None,
            "registered": {name: obj.state_dict() for name, obj in self._registered.items()},
            "rng": rng_state(),
            "history": copy.deepcopy(self.history),
            "plateau": [self._plateau_reference, self._plateau_count],
        }
        if self.previous is not None:
            state["previous"] = {
                "stage": self.previous.stage,
                "weights": {name: module.state_dict() for name, module in self.previous.modules().items()},
            }
        if self.bank is not None:  # the key exists only with a bank, so checkpoints without one are as before
            state["bank"] = bank_entry(self.bank, [self.bank.tensors()])
        return state

    def load_state_dict(self, state: Mapping[str, Any], *, restore_rng: bool = True) -> None:
        """Restore :meth:`state_dict`'s output, all or nothing; frozen copies are rebuilt from the live modules.

        The whole checkpoint is checked first: its keys and their types, every tensor's shape and dtype against
        the live modules (and the encoder; frozen copies have the live modules' structure), the registered
        objects (optimizers: their groups, parameters and per-parameter state shapes), the history and plateau
        structure, ``stage`` an int >= 1 with the previous stage ``stage - 1`` (none at stage 1), ``markers``
        None or two finite floats. Only then is it applied; if applying fails anyway (a registered object
        refuses its state, say), everything applied so far is undone.

        Raises:
            CheckpointError: the checkpoint does not fit this manager or is malformed; the manager, its modules
                and registered objects (and, with ``restore_rng``, the RNG states) are exactly as before.
        """
        target = self._target()
        check_state(state, target)
        saved, fields = backup(target), tuple(getattr(self, name) for name in _RESTORED_FIELDS)
        try:
            self._apply_state(state, target, restore_rng=restore_rng)
        except BaseException as error:
            unrestored = restore(target, saved)
            for name, value in zip(_RESTORED_FIELDS, fields):
                setattr(self, name, value)
            if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: undone, then passed on
                raise
            if unrestored:  # only a registered object that refuses its own state_dict() gets here
                raise CheckpointError(
                    f"could not load the checkpoint ({error}), and registered objects {unrestored} refused their "
                    "previous state back: they may be half-loaded"
                ) from error
            raise CheckpointError(f"could not load the checkpoint (nothing was changed): {error}") from error

    def _target(self) -> LoadTarget:
        live = {name: unwrap(module) for name, module in self._live().items()}
        return LoadTarget(live, self.encoder, dict(self._registered), self.bank, self.latent_shape, self._device())

    def _apply_state(self, state: Mapping[str, Any], target: LoadTarget, *, restore_rng: bool) -> None:
        """Apply a checked state; the frozen copies are built before anything is changed."""
        self.previous = load_networks(state, target)
        self.stage = state["stage"]
        self.markers = None if state["markers"] is None else (float(state["markers"][0]), float(state["markers"][1]))
        self.history = copy.deepcopy(list(state["history"]))
        reference, count = state["plateau"]
        self._plateau_reference, self._plateau_count = reference, count
        load_bank(self.bank, state.get("bank"))
        if restore_rng:
            set_rng_state(state["rng"])

    def save(self, directory: str | Path | None = None) -> Path | None:
        """Write the checkpoint atomically to ``directory`` (default: the manager's), on rank 0 only.

        A process killed at any instant during the save leaves the previous checkpoint intact and loadable; the
        file layout (a SHA-256 header, then the ``torch.save`` payload) is described in
        :mod:`rankplug.stages.checkpoint`. Returns the path written (``None`` on other ranks). With a bank under
        ``torch.distributed`` every rank's bank is gathered into the one file (a collective: call ``save`` on every
        rank, as its barrier already requires), and each rank gets its own back at :meth:`load` when the number of
        ranks is the same.

        Raises:
            OSError: the file could not be written (a full disk); the previous checkpoint is intact.
        """
        target = self._directory(directory)
        state = self.state_dict()  # every rank builds it: state_dict involves no collectives
        if self.bank is not None and world_size() > 1:
            ranks = gather_bank(self.bank, self._device())  # collective: each rank's own bank goes into the one file
            state["bank"] = None if ranks is None else bank_entry(self.bank, ranks)
        path = None
        if rank() == 0:
            path = atomic_save(state, target / CHECKPOINT_NAME)
        if world_size() > 1:
            dist.barrier()
        return path

    def load(self, directory: str | Path | None = None, *, restore_rng: bool = True) -> None:
        """Load the checkpoint in ``directory`` (default: the manager's), all or nothing (:meth:`load_state_dict`).

        Raises:
            CheckpointError: the file is missing, truncated, corrupt (its checksum does not match), holds pickled
                code, or does not fit this manager; nothing is changed.
        """
        target = self._directory(directory)
        state = safe_load(target / CHECKPOINT_NAME, map_location=self._device())
        self.load_state_dict(state, restore_rng=restore_rng)

    def has_checkpoint(self, directory: str | Path | None = None) -> bool:
        return (self._directory(directory) / CHECKPOINT_NAME).is_file()

    def _directory(self, directory: str | Path | None) -> Path:
        if directory is not None:
            return Path(directory)
        if self.directory is None:
            raise ValueError("no directory: pass one to save()/load() or StageManager(..., directory=...)")
        return self.directory


__all__ = ["CHECKPOINT_NAME", "StageManager"]
