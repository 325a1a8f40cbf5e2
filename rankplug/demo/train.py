"""The demo's training loop: RankGAN / GoGAN stages, or a same-compute margin or WGAN-GP baseline.

It follows the README's stage loop (RankGAN Algorithm 1; MATH §1-§4):

- **Stage 1** (``rankgan``, ``gogan``, ``margin``): the margin critic loss ``[D(G(z)) + eps - D(x)]_+``
  (RankGAN Eq. 3) plus the gradient penalty (Eq. 5); ``wgan-gp`` uses the WGAN critic loss
  ``mean D(G(z)) - mean D(x)`` plus the same penalty. The generator uses the WGAN loss ``-D(G(z))``.
- **Stage i >= 2, rankgan**: :class:`rankplug.StageRankLoss` (Eq. 4 + 6) with markers from
  :meth:`rankplug.StageManager.compute_markers`; the *current* critic scores ``G_{i-1}(z)``.
- **Stage i >= 2, gogan**: :class:`rankplug.GoGANRankLoss` (GoGAN Eq. 3-5); the *frozen previous* critic
  scores ``G_{i-1}(z)``.
- **mbgan**: MBGAN's metric discriminator (MATH §5): the critic's linear score is replaced by
  :class:`rankplug.TripletMetricDiscriminatorHead` (``K = embed_dim``); ``D`` minimises the triplet loss of
  Eq. 1 with the detached data-dependent margin of Eq. 4 and ``G`` minimises Eq. 2. No gradient penalty; one
  critic step per generator step and Adam ``(0.5, 0.999)`` by default, as in the paper. The logged "scores"
  are negative distances to the anchor, ``-d(x_i, x_j)`` for the real and ``-d(x_i, G(z))`` for the fake, so
  the gap is ``d(x_i, G(z)) - d(x_i, x_j)``.
- **dcgan**: the DCGAN baseline for MBGAN: the non-saturating cross-entropy GAN loss, same networks, same
  defaults as ``mbgan``.
- **Baselines** (``margin``, ``wgan-gp``, and ``dcgan`` / ``mbgan``, which have no stages): no stage logic.
  They run the same number of generator steps (``stages * steps_per_stage``), which is what "same compute"
  means here; the run is cut into the same segments only for logging and checkpoints
  (:meth:`~rankplug.StageManager.advance` freezes a copy that no loss ever reads, so training is the same as
  one uninterrupted run).

**Markers out of order.** If the previous critic still scores its fakes above the data (``m_low > m_high``),
:class:`~rankplug.StageRankLoss` cannot take them. The demo then keeps the last valid markers (from an earlier
stage), clamped so that ``m_low <= m_high``; at stage 2, where there are none, it uses the midpoint for both,
``m_high = m_low = (m_high + m_low) / 2``. The markers actually used and a ``markers_fixed`` flag are in the
stage's entry of the returned history.

Everything draws from the global torch RNG, which :class:`~rankplug.StageManager` saves and restores, so a
run is deterministic for a seed on CPU and a resumed run continues bit for bit.
"""

from __future__ import annotations

import math
import random
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

from rankplug import functional as F
from rankplug._checkpoint import CheckpointError, atomic_save, safe_load
from rankplug._validation import check_choice, check_nonnegative, check_positive
from rankplug.demo.models import Discriminator, Encoder, Generator
from rankplug.heads import TripletMetricDiscriminatorHead
from rankplug.losses import GoGANRankLoss, HingeMarginLoss, StageRankLoss
from rankplug.stages import StageManager

METHODS = ("rankgan", "gogan", "margin", "wgan-gp", "mbgan", "dcgan")
STAGED_METHODS = ("rankgan", "gogan")
# Methods without a gradient-penalised critic: one critic step per generator step and Adam (0.5, 0.999), as in
# DCGAN and MBGAN; the others follow RankGAN Algorithm 1 (5 critic steps, Adam (0, 0.99)).
_DCGAN_STYLE = ("mbgan", "dcgan")
MODELS_NAME = "models-stage{stage}.pt"

Callback = Callable[[dict[str, Any]], None]


class _RunInfo:
    """Bookkeeping saved with the checkpoint: the settings it belongs to, steps done and time spent."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = dict(settings)
        self.generator_steps = 0
        self.wall_time = 0.0
        self.effective_markers: dict[str, list[float]] = {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": dict(self.settings),
            "generator_steps": self.generator_steps,
            "wall_time": self.wall_time,
            "effective_markers": {k: list(v) for k, v in self.effective_markers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["settings"] != self.settings:
            raise ValueError(
                f"the checkpoint was written with settings {state['settings']}; this call has {self.settings}"
            )
        self.generator_steps = int(state["generator_steps"])
        self.wall_time = float(state["wall_time"])
        self.effective_markers = {k: [float(x) for x in v] for k, v in state["effective_markers"].items()}


def check_device(device: object, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine; ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a device name such as 'cpu' or 'cuda:0'; got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{name} {str(device)!r} is not a torch device (e.g. cpu, cuda, cuda:1): {error}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {str(device)!r}: CUDA is not available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type not in ("cpu", "meta"):
        try:
            torch.empty(0, device=parsed)
        except (RuntimeError, AssertionError) as error:  # torch raises either for a backend it was not built with
            raise ValueError(f"{name} {str(device)!r} is not usable on this machine: {error}") from None
    return parsed


def _int_in(low: int, high: int) -> Callable[[object, str], int]:
    def check(value: object, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int in [{low}, {high}]; got {type(value).__name__}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be an int in [{low}, {high}]; got {value}")
        return value

    return check


def _optional(check: Callable[[object, str], Any]) -> Callable[[object, str], Any]:
    return lambda value, name: None if value is None else check(value, name)


def _one_of(*allowed: int) -> Callable[[object, str], int]:
    def check(value: object, name: str) -> int:
        if isinstance(value, bool) or value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return int(value)  # type: ignore[call-overload]

    return check


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false; got {value!r}")
    return value


# Every setting of :func:`train` with its check. The upper bounds keep a run directory (or an edited checkpoint)
# from asking for an absurd network: a width of 10^6 is a 512 GB allocation, not a typo to honour.
_SETTING_CHECKS: dict[str, Callable[[object, str], Any]] = {
    "method": lambda v, n: check_choice(v, n, METHODS),
    "stages": _int_in(1, 10_000),
    "steps_per_stage": _int_in(1, 100_000_000),
    "batch_size": _int_in(1, 65_536),
    "n_critic": _optional(_int_in(1, 1_000)),
    "lr_d": check_positive,
    "lr_g": check_positive,
    "size": _one_of(16, 32),
    "channels": _one_of(1, 3),
    "nz": _int_in(1, 4_096),
    "width": _int_in(1, 1_024),
    "margin": check_nonnegative,
    "clamp_weight": check_nonnegative,
    "gp_weight": check_nonnegative,
    "embed_dim": _optional(_int_in(1, 65_536)),
    "alpha": _optional(check_nonnegative),
    "encoder": _flag,
    "encoder_epochs": _optional(_int_in(1, 10_000)),
    "log_every": _int_in(1, 100_000_000),
    "seed": _int_in(-(2**63), 2**63 - 1),
    "device": check_device,
    "amp": _flag,
}


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validate settings of :func:`train` (any subset, by keyword); return them normalised.

    Each value is checked for its type and range; an unknown key raises ``TypeError`` as an unknown keyword
    would, and ``log_every`` must divide ``steps_per_stage`` when both are given. Used before anything is
    written (``rankplug train``) and on every settings block read back from a file.
    """
    out = {}
    for key, value in settings.items():
        check = _SETTING_CHECKS.get(key)
        if check is None:
            raise TypeError(f"unknown setting {key!r}; expected one of {', '.join(sorted(_SETTING_CHECKS))}")
        out[key] = check(value, key)
    if "steps_per_stage" in out and "log_every" in out and out["steps_per_stage"] % out["log_every"]:
        raise ValueError(f"log_every must divide steps_per_stage; got {out['log_every']} and {out['steps_per_stage']}")
    return out


def _markers_for_stage(
    manager: StageManager, images: Tensor, batch_size: int, info: _RunInfo
) -> tuple[tuple[float, float], bool]:
    """Markers from the frozen previous stage over the whole data set; fall back when ``m_low > m_high``."""
    batches = list(images.split(batch_size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # handled below, and reported in the history
        high, low = manager.compute_markers(batches)
    if low <= high:
        return (high, low), False
    earlier = [info.effective_markers[k] for k in sorted(info.effective_markers, key=int)]
    if earlier:
        prev_high, prev_low = earlier[-1]
        return (prev_high, min(prev_low, prev_high)), True
    middle = 0.5 * (high + low)
    return (middle, middle), True


def train(
    method: str,
    *,
    images: Tensor,
    stages: int = 3,
    steps_per_stage: int = 300,
    batch_size: int = 64,
    n_critic: int | None = None,
    lr_d: float = 2e-4,
    lr_g: float = 2e-4,
    size: int = 16,
    nz: int = 32,
    width: int = 32,
    margin: float = 1.0,
    clamp_weight: float = 1.0,
    gp_weight: float = 10.0,
    embed_dim: int = 500,
    alpha: float = 20.0,
    encoder: bool = False,
    encoder_epochs: int = 2,
    log_every: int = 10,
    seed: int = 0,
    directory: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    callback: Callback | None = None,
    amp: bool = False,
) -> dict[str, Any]:
    """Train one demo run and return its history; resume from ``directory`` when it holds a checkpoint.

    Args:
        method: one of :data:`METHODS`: ``"rankgan"``, ``"gogan"``, ``"margin"``, ``"wgan-gp"``, ``"mbgan"``,
            ``"dcgan"`` (see the module docstring).
        images: real images in ``[-1, 1]``, ``(M, C, size, size)``, e.g. ``rankplug.data.load_digits(16)[0]``.
        stages: number of stages (segments for the baselines).
        steps_per_stage: generator steps per stage; the run makes ``stages * steps_per_stage`` in all.
        batch_size: real and fake batch size.
        n_critic: critic steps per generator step; default 5 (RankGAN Algorithm 1), 1 for ``mbgan`` / ``dcgan``.
        lr_d, lr_g: Adam learning rates (betas ``(0, 0.99)``, Algorithm 1).
        size, nz, width: image side, latent size and network width.
        margin: ``eps`` of the margin losses (stage 1 and GoGAN).
        clamp_weight: ``lambda_clamp`` of RankGAN Eq. 7 (paper 1000, authors' code 1).
        gp_weight: ``lambda_gp`` (Eq. 5).
        embed_dim, alpha: MBGAN's embedding size ``K`` and margin weight (Eq. 4); ``mbgan`` only.
        encoder: RankGAN's encoder (Sec. 3.3): before stage 1, :meth:`~rankplug.StageManager.pretrain_encoder`
            trains it as a VAE with ``G`` as the decoder for ``encoder_epochs`` passes over ``images``; then
            every latent is drawn from ``q(z | x)`` of a real batch. It is saved with the stage models and gives
            image completion its starting ``z``.
        log_every: generator steps between two :meth:`~rankplug.StageManager.record` calls; must divide
            ``steps_per_stage``.
        seed: seeds torch and Python's ``random``.
        directory: where a checkpoint is saved at the end of every stage; a later call with the same
            directory and settings resumes from it (``resumed`` in the result) instead of starting over. The
            end of stage ``i`` also writes ``models-stage{i}.pt`` (the settings and both networks' weights,
            read by :func:`load_stage_models`).
        device: torch device.
        progress: print one line per record to stderr.
        callback: called with ``{"stage", "step", "gap", "real", "fake", "prev_fake"}`` at every record.
        amp: run the forward passes under ``torch.autocast`` (bfloat16 on a CPU, float16 with a
            ``GradScaler`` on CUDA). The losses compute in float32 either way.

    Returns:
        A dict. ``generator`` and ``discriminator`` are the trained modules; every other entry is plain
        JSON-ready data: ``method``, ``stages`` (per stage: ``stage``, ``gap``, ``real``, ``fake``,
        ``prev_fake`` per record, ``markers`` as computed, ``markers_used``, ``markers_fixed``),
        ``generator_steps`` (in all), ``steps_this_call``, ``wall_time`` (seconds, all calls),
        ``resumed`` and ``settings``.
    """
    checked = check_settings(
        {
            "method": method,
            "stages": stages,
            "steps_per_stage": steps_per_stage,
            "batch_size": batch_size,
            "n_critic": n_critic,
            "lr_d": lr_d,
            "lr_g": lr_g,
            "size": size,
            "nz": nz,
            "width": width,
            "margin": margin,
            "clamp_weight": clamp_weight,
            "gp_weight": gp_weight,
            "embed_dim": embed_dim,
            "alpha": alpha,
            "encoder": encoder,
            "encoder_epochs": encoder_epochs,
            "log_every": log_every,
            "seed": seed,
            "device": device,
            "amp": amp,
        }
    )
    if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[2:]) != (size, size):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images has shape {shape}; expected (M, C, {size}, {size})")
    dcgan_style = method in _DCGAN_STYLE
    n_critic = (1 if dcgan_style else 5) if n_critic is None else n_critic
    device = torch.device(checked["device"])
    started = time.perf_counter()
    torch.manual_seed(seed)
    random.seed(seed)
    images = images.to(device)
    channels = images.shape[1]

    settings = {
        "method": method,
        "steps_per_stage": steps_per_stage,
        "batch_size": batch_size,
        "n_critic": n_critic,
        "lr_d": lr_d,
        "lr_g": lr_g,
        "size": size,
        "channels": channels,
        "nz": nz,
        "width": width,
        "margin": margin,
        "clamp_weight": clamp_weight,
        "gp_weight": gp_weight,
        "embed_dim": embed_dim if method == "mbgan" else None,
        "alpha": alpha if method == "mbgan" else None,
        "log_every": log_every,
        "seed": seed,
        "amp": bool(amp),
        "encoder": bool(encoder),
        "encoder_epochs": encoder_epochs if encoder else None,
    }
    G, D, E = build_models(settings)
    G, D = G.to(device), D.to(device)
    E = E.to(device) if E is not None else None
    betas = (0.5, 0.999) if dcgan_style else (0.0, 0.99)  # DCGAN / MBGAN papers; RankGAN Algorithm 1
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas)
    use_amp = bool(amp)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp)

    manager = StageManager(
        G, D, latent_shape=nz, encoder=E, directory=directory, stage_length=steps_per_stage // log_every
    )
    # Settings that must match for a resume; ``stages`` may grow between calls.
    info = _RunInfo(settings)
    manager.register("opt_g", opt_g)
    manager.register("opt_d", opt_d)
    manager.register("run", info)
    manager.register("scaler", scaler)
    resumed = directory is not None and manager.has_checkpoint()
    if resumed:
        manager.load()
    elif E is not None:
        manager.pretrain_encoder(list(images.split(batch_size)), epochs=encoder_epochs)
    staged = method in STAGED_METHODS
    margin_loss = HingeMarginLoss(margin=margin)
    rank_loss = StageRankLoss(clamp_weight=clamp_weight)
    gogan_loss = GoGANRankLoss(margin=margin)
    if staged and manager.stage > 1:
        saved = info.effective_markers.get(str(manager.stage))
        if method == "rankgan" and saved is not None:
            rank_loss.set_markers(*saved)
    steps_before = info.generator_steps
    count = images.shape[0]

    def real_batch() -> Tensor:
        return images[torch.randint(count, (batch_size,), device=device)]

    metric_head = D.head if isinstance(D.head, TripletMetricDiscriminatorHead) else None

    def critic_step(z: Tensor, previous: Any) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """One critic update; returns the logged real, fake and previous-fake scores and the real batch."""
        x = real_batch()
        with torch.no_grad(), autocast():
            fake = G(z).float()
        prev_scores = None
        if metric_head is not None:  # mbgan
            positive = real_batch()
            with autocast():
                anchor_emb, positive_emb, fake_emb = D(torch.cat([x, positive, fake])).float().chunk(3)
            # Eq. 1 with the detached margin of Eq. 4
            loss_d = metric_head.discriminator_loss(
                anchor_emb, positive_emb, fake_emb, positive_images=positive, fake_images=fake
            )
            real_scores = -F.embedding_distance(anchor_emb, positive_emb).detach()
            fake_scores = -F.embedding_distance(anchor_emb, fake_emb).detach()
        else:
            with autocast():
                real_scores, fake_scores = D(torch.cat([x, fake])).float().chunk(2)  # no batch-dependent layer
                if previous is not None:
                    prev_fake = previous.generator(z)
                    # RankGAN Eq. 4 ranks G_{i-1}(z) under the current D_i; GoGAN Eq. 4 under the frozen D_{i-1}
                    judge = D if method == "rankgan" else previous.discriminator
                    prev_scores = judge(prev_fake).float()
            if method == "dcgan":
                loss_d = functional.softplus(-real_scores).mean() + functional.softplus(fake_scores).mean()
            elif previous is None:
                if method == "wgan-gp":
                    loss_d = fake_scores.mean() - real_scores.mean()  # WGAN critic loss
                else:
                    loss_d = margin_loss(real_scores, fake_scores)  # RankGAN Eq. 3
            elif method == "rankgan":
                loss_d = rank_loss(real_scores, fake_scores, prev_scores)  # Eq. 4 + 6
            else:
                loss_d = gogan_loss(real_scores, fake_scores, prev_scores)  # GoGAN Eq. 3-5
            if not dcgan_style:
                loss_d = loss_d + F.gradient_penalty(D, x, fake, weight=gp_weight, scaler=scaler)  # Eq. 7
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss_d).backward()
        scaler.step(opt_d)
        scaler.update()
        return real_scores.detach(), fake_scores.detach(), None if prev_scores is None else prev_scores.detach(), x

    def generator_step(z: Tensor, previous: Any, real_scores: Tensor, x: Tensor) -> Tensor:
        with autocast():
            fake_out = D(G(z)).float()
        if metric_head is not None:  # mbgan
            with torch.no_grad(), autocast():
                positive_emb = D(x).float()
            loss_g = metric_head.generator_loss(positive_emb, fake_out)  # MBGAN Eq. 2
            fake_scores = -F.embedding_distance(positive_emb, fake_out.detach())
        elif method == "dcgan":
            loss_g = functional.softplus(-fake_out).mean()  # non-saturating GAN loss
            fake_scores = fake_out.detach()
        elif method == "rankgan" and previous is not None:
            loss_g = rank_loss.generator_loss(real_scores, fake_out)  # Eq. 4, generator half
            fake_scores = fake_out.detach()
        else:
            loss_g = F.wgan_generator_loss(fake_out)
            fake_scores = fake_out.detach()
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
        scaler.step(opt_g)
        scaler.update()
        return fake_scores

    def save_stage_models(stage: int) -> None:
        assert directory is not None
        atomic_save(
            {
                "stage": stage,
                "generator_steps": info.generator_steps,
                "settings": dict(info.settings),
                "generator": {k: v.detach().cpu() for k, v in G.state_dict().items()},
                "discriminator": {k: v.detach().cpu() for k, v in D.state_dict().items()},
                "encoder": None if E is None else {k: v.detach().cpu() for k, v in E.state_dict().items()},
            },
            Path(directory) / MODELS_NAME.format(stage=stage),
        )

    while True:
        if manager.stage_done:
            if directory is not None and info.generator_steps != steps_before:
                save_stage_models(manager.stage)
                info.wall_time += time.perf_counter() - started
                started = time.perf_counter()
                manager.save()
            if manager.stage >= stages:
                break
            manager.advance()
            history = manager.history[-1]
            history["markers_used"], history["markers_fixed"] = None, False
            if method == "rankgan":
                used, fixed = _markers_for_stage(manager, images, batch_size, info)
                rank_loss.set_markers(*used)
                info.effective_markers[str(manager.stage)] = list(used)
                history["markers_used"], history["markers_fixed"] = list(used), fixed
        stage = manager.stage
        previous = manager.previous if staged and stage > 1 else None
        G.train()
        D.train()
        for _ in range(n_critic):
            z = manager.sample_latent(batch_size, real=real_batch() if E is not None else None)
            real_scores, _, prev_scores, x = critic_step(z, previous)
        fake_scores = generator_step(z, previous, real_scores, x)
        info.generator_steps += 1
        if info.generator_steps % log_every == 0:
            gap = manager.record(real_scores, fake_scores, prev_scores)
            entry = manager.history[-1]
            event = {
                "stage": stage,
                "step": info.generator_steps,
                "gap": gap,
                "real": entry["real"][-1],
                "fake": entry["fake"][-1],
                "prev_fake": entry["prev_fake"][-1] if prev_scores is not None else None,
            }
            if not math.isfinite(gap):
                warnings.warn(
                    f"{method}: the gap is {gap} at step {info.generator_steps}", RuntimeWarning, stacklevel=2
                )
            if progress:
                print(
                    f"[{method}] stage {stage} step {info.generator_steps}: gap {gap:.4f} "
                    f"D(x) {event['real']:.3f} D(G(z)) {event['fake']:.3f}",
                    file=sys.stderr,
                )
            if callback is not None:
                callback(event)

    info.wall_time += time.perf_counter() - started
    G.eval()
    return {
        "method": method,
        "stages": [_stage_entry(entry) for entry in manager.history],
        "generator_steps": info.generator_steps,
        "steps_this_call": info.generator_steps - steps_before,
        "wall_time": info.wall_time,
        "resumed": resumed,
        "settings": dict(info.settings, stages=stages),
        "generator": G,
        "discriminator": D,
    }


def build_models(settings: dict[str, Any]) -> tuple[Generator, Discriminator, Encoder | None]:
    """The demo's ``(G, D, E)`` for a run's settings (``settings`` of :func:`train`'s result or checkpoint)."""
    G = Generator(nz=settings["nz"], ngf=settings["width"], size=settings["size"], channels=settings["channels"])
    D = Discriminator(
        ndf=settings["width"],
        size=settings["size"],
        channels=settings["channels"],
        embed_dim=settings.get("embed_dim"),
        alpha=settings.get("alpha") or 20.0,
    )
    E = None
    if settings.get("encoder"):
        E = Encoder(nz=settings["nz"], ndf=settings["width"], size=settings["size"], channels=settings["channels"])
    return G, D, E


def load_stage_models(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Generator, Discriminator, Encoder | None, dict[str, Any]]:
    """Load ``models-stage{i}.pt`` written by :func:`train`: ``(G, D, E, info)``, the networks in eval mode.

    The file is read with ``weights_only=True`` (:func:`rankplug._checkpoint.safe_load`); ``E`` is ``None``
    for a run without an encoder; ``info`` holds ``stage``, ``generator_steps`` and ``settings``.
    """
    payload = safe_load(Path(path), map_location=device)
    keys = {"stage", "generator_steps", "settings", "generator", "discriminator", "encoder"}
    if not isinstance(payload, dict) or not keys <= set(payload) or not isinstance(payload["settings"], dict):
        raise CheckpointError(f"{path} is not a rankplug demo stage checkpoint (models-stage<i>.pt)")
    try:
        # the settings decide the networks' sizes: check them before anything is allocated
        settings = check_settings(payload["settings"])
        _int_in(1, 10_000)(payload["stage"], "stage")
        _int_in(0, 10**12)(payload["generator_steps"], "generator_steps")
        G, D, E = build_models(settings)
        G.load_state_dict(payload["generator"])
        D.load_state_dict(payload["discriminator"])
        if E is not None:
            E.load_state_dict(payload["encoder"])
    except (ValueError, TypeError, RuntimeError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{path} is not a valid rankplug stage checkpoint: {error}") from error
    for module in (G, D) if E is None else (G, D, E):
        module.to(device).eval().requires_grad_(False)
    info = {k: payload[k] for k in ("stage", "generator_steps", "settings")}
    return G, D, E, info


def _stage_entry(entry: dict[str, Any]) -> dict[str, Any]:
    out = {key: entry[key] for key in ("stage", "gap", "real", "fake", "prev_fake", "markers")}
    out["markers_used"] = entry.get("markers_used")
    out["markers_fixed"] = bool(entry.get("markers_fixed", False))
    return out


__all__ = [
    "METHODS",
    "MODELS_NAME",
    "STAGED_METHODS",
    "build_models",
    "check_device",
    "check_settings",
    "load_stage_models",
    "train",
]
