"""The demo's training loop: RankGAN / GoGAN stages, or a same-compute margin or WGAN-GP baseline.

It follows the README's stage loop (RankGAN Algorithm 1; MATH §1-§4):

- **Stage 1** (``rankgan``, ``gogan``, ``margin``): the margin critic loss ``[D(G(z)) + eps - D(x)]_+``
  (RankGAN Eq. 3) plus the gradient penalty (Eq. 5); ``wgan-gp`` uses the WGAN critic loss
  ``mean D(G(z)) - mean D(x)`` plus the same penalty. The generator uses the WGAN loss ``-D(G(z))``.
- **Stage i >= 2, rankgan**: :class:`rankplug.StageRankLoss` (Eq. 4 + 6) with markers from
  :meth:`rankplug.StageManager.compute_markers`; the *current* critic scores ``G_{i-1}(z)``.
- **Stage i >= 2, gogan**: :class:`rankplug.GoGANRankLoss` (GoGAN Eq. 3-5); the *frozen previous* critic
  scores ``G_{i-1}(z)``.
- **Baselines** (``margin``, ``wgan-gp``): no stage logic. They run the same number of generator steps
  (``stages * steps_per_stage``), which is what "same compute" means here; the run is cut into the same
  segments only for logging and checkpoints (:meth:`~rankplug.StageManager.advance` freezes a copy that no
  loss ever reads, so training is the same as one uninterrupted run).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rankplug import functional as F
from rankplug._validation import check_positive_int
from rankplug.demo.models import Discriminator, Generator
from rankplug.losses import GoGANRankLoss, HingeMarginLoss, StageRankLoss
from rankplug.stages import StageManager

METHODS = ("rankgan", "gogan", "margin", "wgan-gp")

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
    n_critic: int = 5,
    lr_d: float = 2e-4,
    lr_g: float = 2e-4,
    size: int = 16,
    nz: int = 32,
    width: int = 32,
    margin: float = 1.0,
    clamp_weight: float = 1.0,
    gp_weight: float = 10.0,
    log_every: int = 10,
    seed: int = 0,
    directory: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    callback: Callback | None = None,
) -> dict[str, Any]:
    """Train one demo run and return its history; resume from ``directory`` when it holds a checkpoint.

    Args:
        method: ``"rankgan"``, ``"gogan"``, ``"margin"`` or ``"wgan-gp"`` (see the module docstring).
        images: real images in ``[-1, 1]``, ``(M, C, size, size)``, e.g. ``rankplug.data.load_digits(16)[0]``.
        stages: number of stages (segments for the baselines).
        steps_per_stage: generator steps per stage; the run makes ``stages * steps_per_stage`` in all.
        batch_size: real and fake batch size.
        n_critic: critic steps per generator step (RankGAN Algorithm 1: 5).
        lr_d, lr_g: Adam learning rates (betas ``(0, 0.99)``, Algorithm 1).
        size, nz, width: image side, latent size and network width.
        margin: ``eps`` of the margin losses (stage 1 and GoGAN).
        clamp_weight: ``lambda_clamp`` of RankGAN Eq. 7 (paper 1000, authors' code 1).
        gp_weight: ``lambda_gp`` (Eq. 5).
        log_every: generator steps between two :meth:`~rankplug.StageManager.record` calls; must divide
            ``steps_per_stage``.
        seed: seeds torch and Python's ``random``.
        directory: where a checkpoint is saved at the end of every stage; a later call with the same
            directory and settings resumes from it (``resumed`` in the result) instead of starting over.
        device: torch device.
        progress: print one line per record to stderr.
        callback: called with ``{"stage", "step", "gap", "real", "fake", "prev_fake"}`` at every record.

    Returns:
        A dict. ``generator`` and ``discriminator`` are the trained modules; every other entry is plain
        JSON-ready data: ``method``, ``stages`` (per stage: ``stage``, ``gap``, ``real``, ``fake``,
        ``prev_fake`` per record, ``markers`` as computed, ``markers_used``, ``markers_fixed``),
        ``generator_steps`` (in all), ``steps_this_call``, ``wall_time`` (seconds, all calls),
        ``resumed`` and ``settings``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[2:]) != (size, size):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images has shape {shape}; expected (M, C, {size}, {size})")
    stages = check_positive_int(stages, "stages")
    steps_per_stage = check_positive_int(steps_per_stage, "steps_per_stage")
    batch_size = check_positive_int(batch_size, "batch_size")
    n_critic = check_positive_int(n_critic, "n_critic")
    log_every = check_positive_int(log_every, "log_every")
    if steps_per_stage % log_every:
        raise ValueError(f"log_every must divide steps_per_stage; got {log_every} and {steps_per_stage}")
    started = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    random.seed(seed)
    images = images.to(device)
    channels = images.shape[1]

    G = Generator(nz=nz, ngf=width, size=size, channels=channels).to(device)
    D = Discriminator(ndf=width, size=size, channels=channels).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=(0.0, 0.99))  # RankGAN Algorithm 1's betas
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.0, 0.99))
    manager = StageManager(G, D, latent_shape=nz, directory=directory, stage_length=steps_per_stage // log_every)
    # Settings that must match for a resume; ``stages`` may grow between calls.
    info = _RunInfo(
        {
            "method": method,
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
            "log_every": log_every,
            "seed": seed,
        }
    )
    manager.register("opt_g", opt_g)
    manager.register("opt_d", opt_d)
    manager.register("run", info)
    resumed = directory is not None and manager.has_checkpoint()
    if resumed:
        manager.load()
    staged = method in ("rankgan", "gogan")
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

    while True:
        if manager.stage_done:
            if directory is not None and info.generator_steps != steps_before:
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
            x, z = real_batch(), manager.sample_latent(batch_size)
            fake = G(z).detach()
            real_scores, fake_scores = D(x), D(fake)
            if previous is None:
                if method == "wgan-gp":
                    loss_d = fake_scores.mean() - real_scores.mean()  # WGAN critic loss
                else:
                    loss_d = margin_loss(real_scores, fake_scores)  # RankGAN Eq. 3
                prev_scores = None
            elif method == "rankgan":
                prev_scores = D(previous.generator(z))  # current D_i on G_{i-1}(z): Eq. 4
                loss_d = rank_loss(real_scores, fake_scores, prev_scores)  # Eq. 4 + 6
            else:
                prev_scores = previous.discriminator(previous.generator(z))  # frozen D_i(G_i(z)): GoGAN Eq. 4
                loss_d = gogan_loss(real_scores, fake_scores, prev_scores)
            opt_d.zero_grad(set_to_none=True)
            (loss_d + F.gradient_penalty(D, x, fake, weight=gp_weight)).backward()  # Eq. 7
            opt_d.step()
        fake_scores = D(G(z))
        if method == "rankgan" and previous is not None:
            loss_g = rank_loss.generator_loss(real_scores.detach(), fake_scores)  # Eq. 4, generator half
        else:
            loss_g = F.wgan_generator_loss(fake_scores)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        info.generator_steps += 1
        if info.generator_steps % log_every == 0:
            prev_detached = None if prev_scores is None else prev_scores.detach()
            gap = manager.record(real_scores.detach(), fake_scores.detach(), prev_detached)
            entry = manager.history[-1]
            event = {
                "stage": stage,
                "step": info.generator_steps,
                "gap": gap,
                "real": entry["real"][-1],
                "fake": entry["fake"][-1],
                "prev_fake": entry["prev_fake"][-1] if prev_detached is not None else None,
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


def _stage_entry(entry: dict[str, Any]) -> dict[str, Any]:
    out = {key: entry[key] for key in ("stage", "gap", "real", "fake", "prev_fake", "markers")}
    out["markers_used"] = entry.get("markers_used")
    out["markers_fixed"] = bool(entry.get("markers_fixed", False))
    return out


__all__ = ["METHODS", "train"]
