"""One training loop for every method, blind to which one it runs (RankGAN Algorithm 1's schedule).

The method's objective comes from :class:`rankplug.StageObjective` (which loss at which stage, who judges
``G_{i-1}(z)``); the stages, markers, checkpoints and random state from :class:`rankplug.StageManager`; a
conditional GAN's auxiliary classifier from :class:`~rankplug.app.training.models.ClassHead`. Per generator step the
loop makes ``n_critic`` critic steps and one generator step, records the score ladder every ``log_every`` steps,
and at the end of a stage writes ``models-stage{i}.pt`` and the manager's checkpoint, freezes the stage and,
for RankGAN, takes the markers of the next one over ``marker_images`` real images. With ``bank_size`` the critic
steps of stage >= 2 draw their latents from the manager's :class:`~rankplug.stages.PreviousStageBank` and reuse
the frozen stage's outputs on them (``G_{i-1}(z)`` for RankGAN, ``D_{i-1}(G_{i-1}(z))`` for GoGAN) instead of
running the frozen networks at every step.

**RNG policy.** Everything draws from the global torch RNG, which the manager saves and restores; the real
batches come from a sampler re-seeded from it at every stage start. A run is deterministic for a seed on CPU and a
resumed run continues bit for bit. Under ``torchrun`` each rank re-seeds with its rank added, so ranks see
different batches and latents.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from rankplug.app.training import distributed
from rankplug.app.training.batches import RealBatches
from rankplug.app.training.config import TrainConfig
from rankplug.app.training.models import Discriminator, Encoder, Generator
from rankplug.app.weights import WEIGHTS_NAME, save_stage_weights
from rankplug.methods import METHODS, StageObjective, critic_judge
from rankplug.stages import BankDraw, BankKeep, PreviousStageBank, StageManager

logger = logging.getLogger(__name__)

MODELS_NAME = WEIGHTS_NAME
#: The settings of a TrainConfig that are StageObjective's keywords of the same names.
OBJECTIVE_SETTINGS = (
    "margin",
    "clamp_weight",
    "gp_weight",
    "alpha",
    "margin_norm",
    "disc_weight",
    "rank_weight",
    "clamp_on",
    "anchor_scores",
)
Callback = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------------------------- the state
class RunInfo:
    """What the checkpoint holds besides networks and optimizers: the config, progress, markers and the log."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.generator_steps = 0
        self.wall_time = 0.0
        self.markers_used: dict[str, list[float]] = {}
        self.log: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "generator_steps": self.generator_steps,
            "wall_time": self.wall_time,
            "markers_used": {k: list(v) for k, v in self.markers_used.items()},
            "log": list(self.log),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        differ = self.config.differences(TrainConfig.from_dict(state["config"]), there="in the checkpoint")
        if differ:
            raise ValueError(f"the checkpoint was written with other settings ({differ})")
        self.generator_steps = int(state["generator_steps"])
        self.wall_time = float(state["wall_time"])
        self.markers_used = {k: [float(x) for x in v] for k, v in state["markers_used"].items()}
        self.log = list(state["log"])


class Networks:
    """The run's modules, optimizers, scaler and EMA, built from a config."""

    def __init__(self, config: TrainConfig, channels: int, num_classes: int, device: torch.device) -> None:
        c = config
        classes = num_classes if c.conditional else 0
        self.G = Generator(c.nz, c.width, c.size, channels, num_classes=classes).to(device)
        self.D = Discriminator(
            c.width,
            c.size,
            channels,
            norm=c.critic_norm,
            embed_dim=c.embed_dim if METHODS[c.method].embeds else None,
            alpha=c.alpha,
            margin_norm=c.margin_norm,
            class_head=c.class_head if c.conditional else None,
            num_classes=max(num_classes, 1),
            aam_scale=c.aam_scale,
            aam_margin=c.aam_margin,
        ).to(device)
        self.E = Encoder(c.nz, c.width, c.size, channels).to(device) if c.encoder else None
        self.ema: nn.Module | None = None
        if c.ema > 0:
            ema_fn = torch.optim.swa_utils.get_ema_multi_avg_fn(c.ema)
            self.ema = torch.optim.swa_utils.AveragedModel(self.G, multi_avg_fn=ema_fn, use_buffers=True)
        self.opt_g, self.opt_d = _optimizer(c, self.G), _optimizer(c, self.D)
        self.amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(device.type, enabled=c.amp and self.amp_dtype == torch.float16)
        self.device, self.amp = device, c.amp

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def sample_generator(self) -> nn.Module:
        """The generator that samples and is evaluated: the EMA copy when there is one."""
        return self.G if self.ema is None else self.ema.module  # type: ignore[return-value]


def _optimizer(config: TrainConfig, module: nn.Module) -> torch.optim.Optimizer:
    lr = config.lr_g if isinstance(module, Generator) else config.lr_d
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(module.parameters(), lr=lr)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=config.betas)


# ------------------------------------------------------------------------------------------------ the loop
class Trainer:
    """One run: build, resume, train every stage, checkpoint. :func:`train` is the function to call."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset[Any],
        *,
        num_classes: int,
        directory: str | Path | None,
        context: distributed.Context,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> None:
        self.config, self.context, self.callback, self.progress = config, context, callback, progress
        self.directory = None if directory is None else Path(directory)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        channels = int(dataset[0][0].shape[0])
        self.nets = Networks(config, channels, num_classes, context.device)
        for module in (self.nets.G, self.nets.D, self.nets.E):
            if module is not None:
                distributed.broadcast_parameters(module, context)
        self.num_classes = num_classes
        self.reals = RealBatches(dataset, config.batch_size, config.workers, context.device)
        self.objective = StageObjective(config.method, **{name: getattr(config, name) for name in OBJECTIVE_SETTINGS})
        bank = None
        if config.bank_size:  # the current critic scores G_{i-1}(z) (RankGAN Eq. 4), or the frozen one (GoGAN Eq. 4)
            keep: BankKeep = "images" if self.objective.judge(2) == "current" else "scores"
            bank = PreviousStageBank(config.bank_size, keep=keep, refresh_every=config.bank_refresh or None)
        self.manager = StageManager(
            self.nets.G,
            self.nets.D,
            encoder=self.nets.E,
            ema_generator=self.nets.ema,
            directory=self.directory,
            latent_shape=config.nz,
            latent_distribution="uniform" if config.latent == "uniform" else "normal",
            stage_length=config.steps_per_stage // cast(int, config.log_every),
            plateau_patience=config.plateau_patience,
            plateau_tolerance=config.plateau_tolerance,
            bank=bank,
        )
        self.info = RunInfo(config)
        for name, obj in (("opt_g", self.nets.opt_g), ("opt_d", self.nets.opt_d), ("scaler", self.nets.scaler)):
            self.manager.register(name, obj)
        self.manager.register("run", self.info)
        self.writer = _tensorboard(self.directory, config) if context.main else None

    # ---------------------------------------------------------------------------------------------- start
    def start(self) -> bool:
        """Resume from the directory's checkpoint, or run the encoder's stage 0; ``True`` when resumed."""
        if self.directory is not None and self.manager.has_checkpoint():
            self.manager.load()
            saved = self.info.markers_used.get(str(self.manager.stage))
            if saved is not None:
                self.objective.set_markers(*saved)
            return True
        if self.nets.E is not None:
            self.reals.restart(self.context.rank)
            self.manager.pretrain_encoder(self.reals.epoch(), epochs=self.config.encoder_epochs, progress=self.progress)
        return False

    def run(self) -> dict[str, Any]:
        """Train until the last stage is done; returns the result of :func:`train`."""
        started = time.perf_counter()
        resumed = self.start()
        steps_before = self.info.generator_steps
        if not (resumed and self.manager.stage_done):  # a checkpoint ends a stage: next_stage restarts the data
            self.reals.restart(self.context.rank)
        while True:
            if self.manager.stage_done:
                if self.info.generator_steps != steps_before:
                    self.info.wall_time += time.perf_counter() - started
                    started = time.perf_counter()
                    self.save_stage()
                if self.manager.stage >= self.config.stages:
                    break
                self.next_stage()
            self.step()
        self.info.wall_time += time.perf_counter() - started
        if self.writer is not None:
            self.writer.close()
        return self.result(resumed, steps_before)

    def next_stage(self) -> None:
        """Freeze the finished stage; for RankGAN take the next stage's markers (Eq. 6) over real images."""
        self.manager.advance()
        self.reals.restart(self.context.rank)
        stage = self.loss_stage
        if self.objective.needs_markers(stage):
            per_rank = math.ceil(self.config.marker_images / self.context.world)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # m_low > m_high is handled below and logged
                high, low = self.manager.compute_markers(self.reals.take(per_rank))
            used = _usable_markers(high, low, self.info.markers_used)
            self.objective.set_markers(*used)
            self.info.markers_used[str(stage)] = list(used)
            self.manager.history[-1]["markers_used"] = list(used)

    # ---------------------------------------------------------------------------------------------- a step
    @property
    def loss_stage(self) -> int:
        """The stage whose losses train now: the manager's stage, or 1 for the same-steps control."""
        return 1 if self.config.control else self.manager.stage

    def latents(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``z`` (from the encoder of ``x`` when there is one) and, when conditional, uniform class labels."""
        z = self.manager.sample_latent(x.shape[0], real=x if self.nets.E is not None else None)
        labels = torch.randint(self.num_classes, (x.shape[0],), device=x.device) if self.config.conditional else None
        return z, labels

    def bank_draw(self, n: int) -> BankDraw | None:
        """A batch of latents with the frozen stage's outputs from the bank, ``None`` without one. With an encoder
        the bank is refilled from ``bank_size`` real images when it is due (its latents are ``z ~ q(z | x)``)."""
        manager = self.manager
        if manager.bank is None:
            return None
        with self.nets.autocast():  # the frozen outputs in the precision the step would compute them in
            if manager.bank_due and self.nets.E is not None:
                manager.fill_bank(self.reals.take(self.config.bank_size))
            return manager.draw_previous(n)

    def critic(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The critic's output (float32) and class logits (``None`` unless conditional)."""
        if self.config.conditional:
            out, logits = self.nets.D.with_logits(x)
            return out.float(), logits.float()
        return self.nets.D(x).float(), None

    def critic_pair(self, x: Tensor, fake: Tensor) -> tuple[tuple[Tensor, Tensor | None], tuple[Tensor, Tensor | None]]:
        """The critic on the real and the fake batch: one forward of both together when the critic has no
        batch-dependent layer (the same numbers, one pass), else one forward each (BatchNorm sees one kind)."""
        if self.config.critic_norm == "batch":
            return self.critic(x), self.critic(fake)
        out, logits = self.critic(torch.cat([x, fake]))
        n = x.shape[0]
        split = (None, None) if logits is None else (logits[:n], logits[n:])
        return (out[:n], split[0]), (out[n:], split[1])

    def class_loss(self, logits: Tensor | None, labels: Tensor | None) -> Tensor | None:
        """The auxiliary classifier's loss (label-geometry paper Eq. 3-4), ``None`` for an unconditional run."""
        head = self.nets.D.classes
        if logits is None or labels is None or head is None:
            return None
        return head.loss(logits, labels)

    def critic_step(self) -> dict[str, Any]:
        nets, stage, objective = self.nets, self.loss_stage, self.objective
        x, y = self.reals.next()
        previous = self.manager.previous if objective.staged else None
        judge = critic_judge(objective, stage, nets.D, None if previous is None else previous.discriminator)
        draw = None if judge is None else self.bank_draw(x.shape[0])
        # With the bank, z comes with G_{i-1}(z) (or its frozen score): the same z feeds G_i, so Eq. 4 pairs exactly.
        # The staged methods are unconditional (TrainConfig), so a drawn z needs no labels.
        z, c = self.latents(x) if draw is None else (draw.z, None)
        with torch.no_grad(), nets.autocast():
            fake = nets.G(z, c).float()
        extra: dict[str, Tensor] = {}
        with nets.autocast():
            (real_out, real_logits), (fake_out, _) = self.critic_pair(x, fake)
            prev = None
            if draw is not None and draw.scores is not None:  # GoGAN: the frozen critic's score, kept
                prev = draw.scores.float()
            elif judge is not None:  # the judge on G_{i-1}(z), kept in the bank or made now
                prev_fake = previous.generator(z) if draw is None else draw.images  # type: ignore[union-attr]
                prev = judge(prev_fake).float()
            if objective.embeds:  # MBGAN Eq. 1 needs a second real sample x_j and the images of Eq. 4
                positive, _ = self.reals.next()
                extra = {"positive": self.critic(positive)[0], "positive_images": positive, "fake_images": fake}
            loss = objective.critic_loss(real_out, fake_out, prev, stage=stage, **extra)
            cls = self.class_loss(real_logits, y)
            if cls is not None:
                loss = loss + self.config.cls_weight * cls  # label-geometry paper Eq. 5
        loss = loss + objective.penalty(nets.D, x, fake, scaler=nets.scaler)  # RankGAN Eq. 5 / 7
        self._update(nets.opt_d, nets.D, loss)
        if self.config.weight_clip > 0:  # WGAN's (and GoGAN's) Lipschitz constraint in place of the penalty
            with torch.no_grad():
                for parameter in nets.D.parameters():
                    parameter.clamp_(-self.config.weight_clip, self.config.weight_clip)
        real_s, fake_s = objective.ladder_scores(real_out, fake_out, positive=extra.get("positive"))
        return {
            "x": x,
            "real": real_s,
            "fake": fake_s,
            "prev": prev,
            "out": (real_out, fake_out),
            "inputs": {key: value.detach() for key, value in extra.items()},  # for the hinges of the record
            "loss_d": loss,
            "cls_real": cls,
            "acc_real": _accuracy(real_logits, y),
        }

    def generator_step(self, critic: dict[str, Any]) -> dict[str, Any]:
        nets, stage, objective = self.nets, self.loss_stage, self.objective
        x = critic["x"]
        z, c = self.latents(x)
        nets.D.requires_grad_(False)  # a fixed judge here: no parameter gradients to compute
        try:
            with nets.autocast():
                out, logits = self.critic(nets.G(z, c))
                if objective.embeds:  # MBGAN Eq. 2 pulls G(z) towards a real embedding D(x_j)
                    with torch.no_grad():
                        real = self.critic(x)[0]
                else:
                    real = critic["out"][0].detach()  # RankGAN Eq. 4's generator half uses D_i(x)
                loss = objective.generator_loss(out, stage=stage, real=real)
                cls = self.class_loss(logits, c)
                if cls is not None:
                    loss = loss + self.config.cls_weight * cls  # Eq. 6
        finally:
            nets.D.requires_grad_(True)
        self._update(nets.opt_g, nets.G, loss)
        if nets.ema is not None:
            nets.ema.update_parameters(nets.G)  # type: ignore[operator]
        fake_s = objective.ladder_scores(real, out.detach())[1]
        return {"fake": fake_s, "loss_g": loss, "cls_fake": cls, "acc_fake": _accuracy(logits, c)}

    def _update(self, optimizer: torch.optim.Optimizer, module: nn.Module, loss: Tensor) -> None:
        scaler = self.nets.scaler
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        distributed.average_gradients(module, self.context)
        scaler.step(optimizer)
        scaler.update()

    def step(self) -> None:
        self.nets.G.train()
        self.nets.D.train()
        for _ in range(self.config.n_critic):
            critic = self.critic_step()
        gen = self.generator_step(critic)
        self.info.generator_steps += 1
        if self.info.generator_steps % cast(int, self.config.log_every) == 0:
            self.record(critic, gen)

    # -------------------------------------------------------------------------------------------- records
    def record(self, critic: dict[str, Any], gen: dict[str, Any]) -> None:
        stage, loss_stage = self.manager.stage, self.loss_stage
        gap = self.manager.record(critic["real"], gen["fake"], critic["prev"])
        entry = self.manager.history[-1]
        event: dict[str, Any] = {
            "stage": stage,
            "step": self.info.generator_steps,
            "gap": gap,
            "real": entry["real"][-1],
            "fake": entry["fake"][-1],
            "prev_fake": entry["prev_fake"][-1] if critic["prev"] is not None else None,
            "loss_d": float(critic["loss_d"].detach()),
            "loss_g": float(gen["loss_g"].detach()),
            "markers": self.objective.markers if self.objective.needs_markers(loss_stage) else None,
        }
        real_out, fake_out = critic["out"]
        # active_<hinge> per hinge, and what a method adds of its own (MBGAN's margin_ratio)
        event.update(
            self.objective.hinge_report(real_out, fake_out, critic["prev"], stage=loss_stage, **critic["inputs"])
        )
        for key in ("cls_real", "acc_real"):
            if critic[key] is not None:
                event[key] = float(critic[key].detach()) if isinstance(critic[key], Tensor) else critic[key]
        for key in ("cls_fake", "acc_fake"):
            if gen[key] is not None:
                event[key] = float(gen[key].detach()) if isinstance(gen[key], Tensor) else gen[key]
        self.info.log.append(event)
        if self.writer is not None:
            for key, value in event.items():
                if isinstance(value, (int, float)) and key not in ("stage", "step") and math.isfinite(value):
                    self.writer.add_scalar(f"stage{stage}/{key}", value, self.info.generator_steps)
        if self.progress and self.callback is None:
            logger.info(f"[{self.config.method}] stage {stage} step {event['step']}: gap {gap:.4f}")
        if self.callback is not None:
            self.callback(event)

    def save_stage(self) -> None:
        """``models-stage{i}.safetensors`` (networks, EMA, encoder, the settings) and the manager's checkpoint, on
        rank 0."""
        if self.directory is not None and self.context.main:
            nets = self.nets
            save_stage_weights(
                self.directory / MODELS_NAME.format(stage=self.manager.stage),
                {
                    "generator": nets.G,
                    "discriminator": nets.D,
                    "encoder": nets.E,
                    "ema_generator": None if nets.ema is None else nets.sample_generator(),
                },
                stage=self.manager.stage,
                generator_steps=self.info.generator_steps,
                config=self.config.to_dict(),
                num_classes=self.num_classes,
                channels=nets.G.channels,
            )
        if self.directory is not None:
            if self.manager.bank is not None:
                # The stage is over and advance() empties the bank: writing it would only grow the file.
                self.manager.bank.clear()
            self.manager.save()  # rank 0 writes; every rank meets at its barrier

    def result(self, resumed: bool, steps_before: int) -> dict[str, Any]:
        self.nets.G.eval()
        return {
            "method": self.config.method,
            "stages": [_stage_entry(entry) for entry in self.manager.history],
            "log": list(self.info.log),
            "generator_steps": self.info.generator_steps,
            "steps_this_call": self.info.generator_steps - steps_before,
            "wall_time": self.info.wall_time,
            "resumed": resumed,
            "config": self.config.to_dict(),
            "generator": self.nets.sample_generator(),
            "discriminator": self.nets.D,
        }


def _accuracy(logits: Tensor | None, labels: Tensor | None) -> float | None:
    if logits is None or labels is None:
        return None
    return float((logits.detach().argmax(1) == labels).float().mean())


def _usable_markers(high: float, low: float, earlier: dict[str, list[float]]) -> tuple[float, float]:
    """The markers to use when the previous critic still ranks its fakes above the data (``m_low > m_high``).

    :class:`rankplug.StageRankLoss` needs ``m_low <= m_high``: keep the last valid markers (clamped into order),
    or at the first ranked stage the midpoint for both. What was used is logged as ``markers_used``.
    """
    if low <= high:
        return high, low
    if earlier:
        prev_high, prev_low = earlier[max(earlier, key=int)]
        return prev_high, min(prev_low, prev_high)
    middle = 0.5 * (high + low)
    return middle, middle


def _stage_entry(entry: dict[str, Any]) -> dict[str, Any]:
    out = {key: entry[key] for key in ("stage", "gap", "real", "fake", "prev_fake", "markers")}
    out["markers_used"] = entry.get("markers_used")
    return out


def _tensorboard(directory: Path | None, config: TrainConfig) -> Any:
    if directory is None or not config.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ModuleNotFoundError(
            'tensorboard logging needs the tensorboard package: pip install "rankplug[tensorboard]"'
        ) from error
    return SummaryWriter(log_dir=str(directory / "tensorboard"))


def train(
    config: TrainConfig,
    *,
    dataset: Dataset[Any] | None = None,
    num_classes: int | None = None,
    directory: str | Path | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train (or resume) one run of ``config``; the loop of :mod:`rankplug.app.training.loop`.

    Args:
        config: every setting (:class:`~rankplug.app.training.TrainConfig`).
        dataset: the real training images, a dataset of ``(image (C, S, S) in [-1, 1], label)``; by default
            the training part of ``config.data`` (:func:`rankplug.app.data.open_dataset`).
        num_classes: classes of the labels (for a conditional GAN); by default the dataset's ``num_classes``,
            else 10.
        directory: where checkpoints go; a later call with the same directory and config resumes there.
        callback: called with every record (a dict: ``stage``, ``step``, ``gap``, ``real``, ``fake``,
            ``prev_fake``, the losses, ``active_<hinge>`` (and ``margin_ratio`` for MBGAN: the method's
            :meth:`~rankplug.StageObjective.hinge_report`), and the class terms of a conditional run).
        progress: print a line per record to stderr when there is no callback.

    Returns:
        ``generator`` (the EMA copy when ``config.ema``) and ``discriminator``, and JSON-ready ``method``,
        ``stages`` (per stage: ``gap``, ``real``, ``fake``, ``prev_fake`` per record, ``markers`` and
        ``markers_used``), ``log``, ``generator_steps``, ``steps_this_call``, ``wall_time``, ``resumed``,
        ``config``.

    Example:
        >>> from rankplug.app.data import DigitsDataset
        >>> config = TrainConfig(method="wgan-gp", stages=1, steps_per_stage=2, log_every=1, size=8,
        ...                      batch_size=8, width=4, n_critic=1)
        >>> train(config, dataset=DigitsDataset(8))["generator_steps"]
        2
    """
    context = distributed.setup(config.device)
    try:
        if dataset is None:
            from rankplug.app.data import open_dataset

            dataset = open_dataset(config.data, config.data_root, config.size, split="train")
        classes = num_classes if num_classes is not None else int(getattr(dataset, "num_classes", 10) or 10)
        trainer = Trainer(
            config,
            dataset,
            num_classes=classes,
            directory=directory,
            context=context,
            callback=callback,
            progress=progress,
        )
        return trainer.run()
    finally:
        with contextlib.suppress(RuntimeError):
            distributed.teardown(context)


__all__ = ["MODELS_NAME", "Trainer", "train"]
