"""A compact StyleGAN2-ADA-style training loop for RankGAN / GoGAN stages, for users without the NVlabs repository.

It drives :class:`rankplug.integrations.stylegan2_ada.RankGANLoss` through the same phase interface as the host's
``training_loop``: ``Gmain`` / ``Greg`` / ``Dmain`` / ``Dreg`` with lazy regularisation (or ``Gboth`` / ``Dboth``),
gradient accumulation over rounds with ``sync`` on the last, ``gain`` = the phase's interval, an EMA generator,
and adaptive augmentation: a kornia pipe whose probability ``p`` follows the ``Loss/signs/real`` statistic toward a
target, as ADA does. The loop never asks which method it runs: the stage recipe (margin loss at stage 1, RankGAN
or GoGAN from stage 2, who scores ``G_{i-1}(z)``) is the loss's :class:`rankplug.StageObjective`, and the stage is
whether ``--previous`` names a snapshot. Under ``torchrun`` it trains with ``torch.distributed`` (gloo on CPU,
NCCL on GPU), the live networks DDP-wrapped and logging on rank 0.

The networks are tiny DCGAN-style ones (a few lines each, any power-of-two resolution from 4) in the host's call
shapes: ``G.mapping(z, c) -> ws``, ``G.synthesis(ws) -> img`` and ``D(img, c)``, so a stage runs on a CPU in
seconds::

    python examples/stylegan2_ada_compact_loop.py --run-dir runs/s1 --iterations 200
    python examples/stylegan2_ada_compact_loop.py --run-dir runs/s2 --iterations 200 \\
        --resume runs/s1/network-snapshot.pt --previous runs/s1/network-snapshot.pt --variant rankgan
    torchrun --nproc_per_node=2 --standalone examples/stylegan2_ada_compact_loop.py --run-dir runs/ddp

Snapshots are the state dicts of ``G``, ``D`` and ``G_ema`` (``torch.save``, read back with
``weights_only=True``), not the host's pickled modules: loading one runs no code, and the networks are rebuilt
from this file. Requires kornia (``pip install "rankplug[eval]"``), imported only when the augmentation pipe is
built.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from rankplug.integrations.stylegan2_ada import RankGANLoss

SNAPSHOT = "network-snapshot.pt"
LOGGED = ("Loss/scores/real", "Loss/scores/fake", "Loss/signs/real", "Loss/G/loss", "Loss/D/loss")
#: Logged from stage 2 on: the judge's scores of G_{i-1}(z) and, for RankGAN, the markers (absent at stage 1).
STAGE_LOGGED = ("Loss/scores/prev_fake", "Loss/markers/high", "Loss/markers/low")
#: The data a run can train on: the loop's own toy stripes, or rankplug's data sets (rankplug.app.data.open_dataset).
DATA_KINDS = ("toy", "digits", "folder", "cifar10")
#: RankGAN's lambda_clamp here: 1, the authors' code's value, not the core's default (the paper's 1000, set with the
#: paper's learning rates, 5e-5 / 1e-4). At this loop's StyleGAN2 learning rate (2e-3) the clamp, 1000 times the
#: ranking term, takes over the critic: on 64 16x16 stripe images, stage 2 after a 60-step stage 1, 120 steps,
#: clamp 1000 gave a critic loss of 56 at step 40 and scored the fakes above the data (14.2 vs 10.9), while clamp 1
#: kept the ladder, D(x) 6.2 > D(G_i(z)) -1.23 = D(G_{i-1}(z)) -1.23, at a critic loss of 0.12.
CLAMP_WEIGHT = 1.0


# ------------------------------------------------------------------------ networks in the host's call shapes
class Mapping(nn.Module):
    """``(z, c) -> ws`` of shape ``(N, 1, w_dim)``: one learned layer and a single style (so no style mixing)."""

    def __init__(self, z_dim: int, w_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(nn.Linear(z_dim, w_dim), nn.LeakyReLU(0.2))

    def forward(self, z: Tensor, c: Tensor, **host_options: Any) -> Tensor:
        # Unconditional: c is (N, 0). host_options: the host's keywords, e.g. skip_w_avg_update (no w_avg here).
        return self.net(z).unsqueeze(1)


def _doublings(resolution: int) -> int:
    """How many factor-2 steps lie between a ``4 x 4`` map and ``resolution``."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4; got {resolution}")
    return int(math.log2(resolution)) - 2


class Synthesis(nn.Module):
    """``ws -> img`` of shape ``(N, channels, R, R)`` in ``[-1, 1]``: a ``4 x 4`` map from the style, doubled to R."""

    def __init__(self, w_dim: int, resolution: int, channels: int, width: int = 32) -> None:
        super().__init__()
        layers = [nn.Linear(w_dim, width * 16), nn.LeakyReLU(0.2), nn.Unflatten(1, (width, 4, 4))]
        for _ in range(_doublings(resolution)):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Conv2d(width, channels, 1), nn.Tanh())

    def forward(self, ws: Tensor, **host_options: Any) -> Tensor:
        return self.net(ws[:, 0])


class Generator(nn.Module):
    """``G(z, c)`` with the host's ``.mapping`` / ``.synthesis`` split and ``z_dim``, as :class:`RankGANLoss` uses."""

    def __init__(self, z_dim: int = 32, w_dim: int = 32, resolution: int = 16, channels: int = 3) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.mapping = Mapping(z_dim, w_dim)
        self.synthesis = Synthesis(w_dim, resolution, channels)

    def forward(self, z: Tensor, c: Tensor, **host_options: Any) -> Tensor:
        return self.synthesis(self.mapping(z, c))


class Discriminator(nn.Module):
    """``D(img, c) -> (N, 1)``: stride-2 convolutions down to ``4 x 4``, then a linear score; unconditional.

    No batch-dependent layer, so every score depends on its own image only (R1 is a per-sample gradient).
    """

    def __init__(self, resolution: int = 16, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        layers = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(_doublings(resolution)):
            layers += [nn.Conv2d(width, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * 16, 1))

    def forward(self, img: Tensor, c: Tensor) -> Tensor:
        return self.net(img)


class Networks(NamedTuple):
    """The live ``G`` and ``D`` and the EMA generator ``G_ema``: what a snapshot holds."""

    G: Generator
    D: Discriminator
    G_ema: Generator

    def modules(self) -> dict[str, nn.Module]:
        """``{"G": ..., "D": ..., "G_ema": ...}``, the layout :class:`RankGANLoss` reads as ``previous``."""
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}


def make_networks(*, resolution: int = 16, channels: int = 3, z_dim: int = 32, w_dim: int = 32) -> Networks:
    """Fresh networks, ``requires_grad`` off as the host keeps them (a phase switches its module on).

    Example:
        >>> nets, c = make_networks(), torch.zeros(2, 0)  # unconditional: empty labels
        >>> nets.G(torch.randn(2, 32), c).shape, nets.D(torch.zeros(2, 3, 16, 16), c).shape
        (torch.Size([2, 3, 16, 16]), torch.Size([2, 1]))
    """
    G = Generator(z_dim, w_dim, resolution, channels).train().requires_grad_(False)
    D = Discriminator(resolution, channels).train().requires_grad_(False)
    return Networks(G, D, copy.deepcopy(G).eval())


def save_snapshot(path: Path, networks: Networks) -> Path:
    """Write the state dicts of ``G``, ``D`` and ``G_ema`` (on the CPU) to ``path``; return ``path``."""
    states = {name: {k: v.cpu() for k, v in m.state_dict().items()} for name, m in networks.modules().items()}
    torch.save(states, path)
    return path


def load_networks(path: str | os.PathLike[str], **shape: int) -> Networks:
    """The networks of a snapshot from :func:`save_snapshot`, rebuilt with ``shape`` (see :func:`make_networks`)."""
    states = torch.load(path, map_location="cpu", weights_only=True)
    networks = make_networks(**shape)
    missing = [name for name in networks.modules() if name not in states]
    if missing:
        raise ValueError(f"{os.fspath(path)!r} has no {missing}; expected a snapshot of this loop with G, D and G_ema")
    for name, module in networks.modules().items():
        module.load_state_dict(states[name])
    return networks


# ------------------------------------------------------------------------------------ adaptive augmentation
class AdaptiveAugment(nn.Module):
    """ADA-style augmentation on kornia: x-flip, brightness, contrast and noise, each with probability ``p``.

    ``p`` is a buffer the loop adjusts (:func:`ada_adjust`). Every op is differentiable twice with respect to the
    images, so R1 can be taken through the pipe; geometric warps (``grid_sample``) are left out because their
    double backward is not implemented in PyTorch. Images are in ``[-1, 1]`` and are not clipped.

    Example:
        >>> pipe = AdaptiveAugment()
        >>> pipe.p.fill_(0.0)  # doctest: +ELLIPSIS
        tensor(0.)
        >>> x = torch.randn(4, 3, 8, 8)
        >>> torch.equal(pipe(x), x)
        True
    """

    p: Tensor  # a registered buffer; declared so that type checkers know it is a tensor

    def __init__(self, initial_p: float = 0.0) -> None:
        super().__init__()
        try:
            import kornia.augmentation as K
        except ImportError as error:  # an optional dependency: say how to get it
            raise ImportError('AdaptiveAugment needs kornia: pip install "rankplug[eval]"') from error
        self.register_buffer("p", torch.tensor(float(initial_p)))
        self.ops = nn.ModuleList(
            [
                K.RandomHorizontalFlip(p=0.0),
                K.RandomBrightness((0.75, 1.25), clip_output=False, p=0.0),
                K.RandomContrast((0.75, 1.25), clip_output=False, p=0.0),
                K.RandomGaussianNoise(std=0.05, p=0.0),
            ]
        )

    def forward(self, images: Tensor) -> Tensor:
        p = float(self.p)
        if p <= 0:
            return images
        x = (images + 1) / 2  # kornia's colour ops assume [0, 1]
        for op in self.ops:
            # kornia reads p at every call. nn.Module's __setattr__ is typed for tensors and modules only, while
            # kornia's p is a float attribute.
            op.p = p  # type: ignore[assignment]
            x = op(x)
        return x * 2 - 1


def ada_adjust(augment: AdaptiveAugment, signs_mean: float, *, target: float, step: float) -> None:
    """Move ``p`` by ``step`` toward more augmentation when ``signs_mean > target``, less when below; keep ``[0, 1]``.

    Example:
        >>> pipe = AdaptiveAugment()
        >>> ada_adjust(pipe, 0.9, target=0.6, step=0.1)  # D is too sure of the training data: augment more
        >>> round(float(pipe.p), 3)
        0.1
        >>> ada_adjust(pipe, 0.2, target=0.6, step=0.5)  # never below 0
        >>> float(pipe.p)
        0.0
    """
    if math.isfinite(signs_mean) and signs_mean != target:
        augment.p.copy_((augment.p + math.copysign(step, signs_mean - target)).clamp(0.0, 1.0))


# --------------------------------------------------------------------------------------------- statistics
class Stats:
    """A ``report(name, value)`` sink for :class:`RankGANLoss`: sums and counts per name, reduced across ranks."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def report(self, name: str, value: Any) -> Any:
        data = torch.as_tensor(value.detach() if isinstance(value, Tensor) else value, dtype=torch.float64)
        self.sums[name] += float(data.sum())
        self.counts[name] += data.numel()
        return value

    def means(self, names: Sequence[str]) -> dict[str, float]:
        """Means over every rank's reports (a collective under ``torch.distributed``: call on all ranks)."""
        totals = torch.tensor(
            [[self.sums.get(n, 0.0), float(self.counts.get(n, 0))] for n in names], dtype=torch.float64
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        return {n: float(s / c) if c else float("nan") for n, (s, c) in zip(names, totals.tolist())}

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()


class ADA:
    """ADA's heuristic: every ``interval`` steps, move ``p`` by the mean ``Loss/signs/real`` since the last move.

    ``p`` moves by ``batch * interval / (kimg * 1000)`` per adjustment, so it can go from 0 to 1 in ``kimg``
    thousand images; ``target=None`` keeps ``p`` fixed.
    """

    def __init__(
        self, augment: AdaptiveAugment, *, target: float | None, interval: int, kimg: float, batch: int
    ) -> None:
        self.augment, self.target, self.interval = augment, target, interval
        self.step_size = batch * interval / (kimg * 1000)
        self.signs = Stats()  # the window since the last adjustment

    def report(self, name: str, value: Any) -> None:
        if name == "Loss/signs/real":
            self.signs.report(name, value)

    def update(self, step: int) -> None:
        """Adjust ``p`` after ``step`` (counted from 1) when an interval ends; a collective under torch.distributed."""
        if self.target is None or step % self.interval:
            return
        signs = self.signs.means(["Loss/signs/real"])["Loss/signs/real"]  # all ranks: p stays identical
        self.signs.reset()
        ada_adjust(self.augment, signs, target=self.target, step=self.step_size)


# ---------------------------------------------------------------------------------------------- the loop
class Phase(NamedTuple):
    """One of the host's phases: its name, the module it trains, that module's optimizer and its interval."""

    name: str
    module: nn.Module
    opt: torch.optim.Optimizer
    interval: int


def make_phases(
    networks: Networks, *, lr: float, G_reg_interval: int | None, D_reg_interval: int | None
) -> list[Phase]:
    """``Gboth`` / ``Dboth`` without lazy regularisation, else ``main`` every step and ``reg`` every interval."""
    phases = []
    for name, module, interval in (("G", networks.G, G_reg_interval), ("D", networks.D, D_reg_interval)):
        if interval is None:
            opt = torch.optim.Adam(module.parameters(), lr=lr, betas=(0.0, 0.99))
            phases.append(Phase(name + "both", module, opt, 1))
        else:  # lazy regularisation: the main phase's Adam settings compensate for the skipped steps
            ratio = interval / (interval + 1)
            opt = torch.optim.Adam(module.parameters(), lr=lr * ratio, betas=(0.0, 0.99**ratio))
            phases += [Phase(name + "main", module, opt, 1), Phase(name + "reg", module, opt, interval)]
    return phases


def run_phases(loss: RankGANLoss, phases: Sequence[Phase], rounds: Sequence[Tensor], step: int, z_dim: int) -> None:
    """Every phase due at ``step``, as the host runs it: one accumulation round per real batch, ``sync`` on the last."""
    for phase in phases:
        if step % phase.interval:
            continue
        phase.opt.zero_grad(set_to_none=True)
        phase.module.requires_grad_(True)
        for index, real in enumerate(rounds):
            z = torch.randn(real.shape[0], z_dim, device=real.device)
            c = real.new_zeros(real.shape[0], 0)  # unconditional: empty labels
            loss.accumulate_gradients(phase.name, real, c, z, c, sync=index == len(rounds) - 1, gain=phase.interval)
        phase.module.requires_grad_(False)
        for param in phase.module.parameters():
            if param.grad is not None:  # one bad step must not poison Adam's moments
                torch.nan_to_num_(param.grad, nan=0.0, posinf=1e5, neginf=-1e5)
        phase.opt.step()


def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """``G_ema <- lerp(G, G_ema, beta)`` for the parameters; the buffers (BatchNorm statistics) are copied."""
    with torch.no_grad():
        for p_ema, p in zip(G_ema.parameters(), G.parameters()):
            p_ema.copy_(torch.lerp(p, p_ema, beta))
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


def toy_images(n: int, resolution: int, channels: int, generator: torch.Generator) -> Tensor:
    """Toy data in ``[-1, 1]``: sinusoidal stripes with random phase, frequency and orientation."""
    u = torch.linspace(0, 1, resolution)
    flip = torch.randint(0, 2, (n, 1, 1, 1), generator=generator).float()
    grid = (u[:, None] + (2 * flip - 1) * u[None, :]).expand(n, 1, resolution, resolution)
    phase = torch.rand(n, 1, 1, 1, generator=generator) * 2 * math.pi
    freq = 1 + torch.randint(0, 3, (n, 1, 1, 1), generator=generator).float()
    return torch.sin(2 * math.pi * freq * grid + phase).expand(n, channels, resolution, resolution).contiguous()


def real_batches(data: Tensor | None, n: int, shape: dict[str, int], generator: torch.Generator) -> Iterator[Tensor]:
    """Endless batches of ``n`` real images: rows of ``data`` drawn at random, or :func:`toy_images`."""
    while True:
        if data is None:
            yield toy_images(n, shape["resolution"], shape["channels"], generator)
        else:
            yield data[torch.randint(0, data.shape[0], (n,), generator=generator)]


def dataset_batches(dataset: Dataset[Any], n: int, *, seed: int, rank: int, world: int) -> Iterator[Tensor]:
    """Endless batches of ``n`` images of ``dataset`` (``(image, label)`` items) through ``rankplug.app.data.make_loader``.

    Under ``torch.distributed`` each rank reads its own shard (a ``DistributedSampler``), a new order per epoch.
    """
    from rankplug.app.data import make_loader

    sampler = None
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, seed=seed, drop_last=True)
    loader = make_loader(dataset, n, seed=seed, sampler=sampler)
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for images, _ in loader:
            yield images
        epoch += 1


def marker_batches(
    dataset: Dataset[Any] | None, count: int, n: int, shape: dict[str, int], *, rank: int, world: int
) -> list[Tensor]:
    """This rank's share of ``count`` real images for RankGAN's markers (Eq. 6), in batches of ``n``.

    From ``dataset``: the same seeded choice of ``min(count, len(dataset))`` images on every rank, every
    ``world``-th of them here; without one, ``count`` toy images split the same way. The loss gathers the scores
    over the ranks, so the markers cover the whole choice once and agree on every rank.
    """
    if dataset is None:
        images = toy_images(count, shape["resolution"], shape["channels"], torch.Generator().manual_seed(12345))
        share = images[rank::world]
    else:
        chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: min(count, len(dataset))]
        share = torch.stack([dataset[int(i)][0] for i in chosen[rank::world]]) if len(chosen) > rank else None
    if share is None or share.shape[0] == 0:
        return []
    return list(share.split(n))


def open_data(kind: str, root: str | None, resolution: int, channels: int) -> Dataset[Any] | None:
    """``None`` for the toy stripes, else ``rankplug.app.data.open_dataset(kind, root, resolution, split="train")``."""
    if kind not in DATA_KINDS:
        raise ValueError(f"data kind must be one of {DATA_KINDS}; got {kind!r}")
    if kind == "toy":
        return None
    from rankplug.app.data import open_dataset

    return open_dataset(kind, root, resolution, split="train", channels=channels if kind == "folder" else None)


def _setup_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _stage_networks(
    resume: str | os.PathLike[str] | None,
    previous: str | os.PathLike[str] | None,
    shape: dict[str, int],
    device: torch.device,
    loss_kwargs: dict[str, Any] | None,
) -> tuple[Networks, dict[str, Any]]:
    """The live networks (from ``resume``, else fresh) on ``device``, and the loss's keywords with ``previous``."""
    loss_kwargs = dict(loss_kwargs or {})
    if previous is not None:
        if "previous" in loss_kwargs:
            raise ValueError("pass the previous stage either as previous= or in loss_kwargs, not both")
        loss_kwargs["previous"] = load_networks(previous, **shape).modules()  # the loss freezes copies on device
    networks = make_networks(**shape) if resume is None else load_networks(resume, **shape)
    for module in networks.modules().values():
        module.to(device)
    return networks, loss_kwargs


def fan_out(*sinks: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """One ``report(name, value)`` for :class:`RankGANLoss` that reports to every sink and returns ``value``."""

    def report(name: str, value: Any) -> Any:
        for sink in sinks:
            sink(name, value)
        return value

    return report


def _loss_modules(networks: Networks, world: int) -> dict[str, nn.Module]:
    """The modules the loss trains, DDP-wrapped under ``torch.distributed`` as the host wraps them."""
    modules: dict[str, nn.Module] = {"G_mapping": networks.G.mapping, "G_synthesis": networks.G.synthesis}
    modules["D"] = networks.D
    if world > 1:  # as the host: wrappers built with requires_grad on, then switched off again
        for name, module in modules.items():
            module.requires_grad_(True)
            modules[name] = nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)
            module.requires_grad_(False)
    return modules


class RunLog:
    """The run's log: ``stats.jsonl`` (and, with ``verbose``, a printed line) on rank 0, the entries on every rank."""

    def __init__(self, path: Path | None, verbose: bool) -> None:
        self.file: IO[str] | None = None if path is None else open(path, "w")  # closed in close()
        self.verbose = verbose
        self.history: list[dict[str, float]] = []

    def write(self, stats: Stats, step: int, augment_p: float) -> None:
        entry = stats.means(LOGGED + STAGE_LOGGED)  # a collective: every rank calls it
        for name in STAGE_LOGGED:  # not reported at stage 1 (or by GoGAN, for the markers): left out, not NaN
            if math.isnan(entry[name]):
                del entry[name]
        entry.update(step=step, augment_p=augment_p)
        stats.reset()
        self.history.append(entry)
        if self.file is not None:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()
            if self.verbose:
                print(" ".join(f"{k.split('/', 1)[-1]}={v:.4g}" for k, v in entry.items()), flush=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def train(
    *,
    run_dir: str | os.PathLike[str],
    iterations: int = 200,
    batch: int = 16,
    batch_gpu: int = 8,
    resolution: int = 16,
    channels: int = 3,
    z_dim: int = 32,
    w_dim: int = 32,
    lr: float = 2e-3,
    G_reg_interval: int | None = 4,
    D_reg_interval: int | None = 16,
    ema_kimg: float = 0.5,
    augment_p: float = 0.0,
    ada_target: float | None = 0.6,
    ada_interval: int = 4,
    ada_kimg: float = 10.0,
    resume: str | os.PathLike[str] | None = None,
    previous: str | os.PathLike[str] | None = None,
    log_every: int = 10,
    seed: int = 0,
    data: Tensor | None = None,
    dataset: Dataset[Any] | None = None,
    marker_images: int = 5000,
    loss_kwargs: dict[str, Any] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train G and D for ``iterations`` steps with :class:`RankGANLoss`; write stats and a snapshot to ``run_dir``.

    ``batch`` is the global batch per step, split over the ranks and into rounds of ``batch_gpu``. ``resume`` is a
    snapshot whose ``G``, ``D`` and ``G_ema`` initialise the networks (the next stage starts from the previous
    one); ``previous`` is the previous stage's snapshot (``None``: stage 1); ``loss_kwargs`` go to
    :class:`RankGANLoss` (``variant=``, ``margin=``, ``clamp_weight=``, ...; ``clamp_weight`` defaults to
    :data:`CLAMP_WEIGHT` here, see there why). The real images are ``dataset`` (a map-style data set of
    ``(image (C, R, R) in [-1, 1], label)``, e.g. from :func:`rankplug.app.data.open_dataset`, read through
    :func:`rankplug.app.data.make_loader`), else ``data``, an ``(M, C, R, R)`` tensor in ``[-1, 1]``, else toy stripes.
    At a RankGAN stage ``>= 2`` the markers (Eq. 6) come from ``marker_images`` real images, split among the
    ranks (:func:`marker_batches`). Rank 0 writes ``stats.jsonl`` (one line per ``log_every`` steps, with
    ``Loss/scores/prev_fake`` and the markers from stage 2 on) and ``network-snapshot.pt`` and, with ``verbose``,
    prints each log line.

    Returns:
        ``{"history": [...], "augment_p": float, "snapshot": path or None}`` (the same on every rank).

    Example:
        >>> import tempfile
        >>> out = train(run_dir=tempfile.mkdtemp(), iterations=2, batch=4, batch_gpu=4, log_every=1, verbose=False)
        >>> len(out["history"]), sorted(out["history"][0])[:2]
        (2, ['Loss/D/loss', 'Loss/G/loss'])
    """
    rank, world, device = _setup_distributed()
    if batch % (batch_gpu * world):
        raise ValueError(f"batch must be a multiple of batch_gpu * world size = {batch_gpu * world}; got {batch}")
    run_dir = Path(run_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    shape = {"resolution": resolution, "channels": channels, "z_dim": z_dim, "w_dim": w_dim}
    torch.manual_seed(seed)  # identical initial weights on every rank (DDP also broadcasts them)
    networks, loss_kwargs = _stage_networks(resume, previous, shape, device, loss_kwargs)
    loss_kwargs.setdefault("clamp_weight", CLAMP_WEIGHT)
    if previous is not None and loss_kwargs.get("variant", "rankgan") == "rankgan" and "markers" not in loss_kwargs:
        if dataset is None and data is not None:
            chosen = data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))[:marker_images]]
            share = list(chosen[rank::world].split(batch_gpu))
        else:
            share = marker_batches(dataset, marker_images, batch_gpu, shape, rank=rank, world=world)
        loss_kwargs.setdefault("marker_data", share)
        loss_kwargs.setdefault("marker_batches", max(len(share), 1))
    torch.manual_seed(seed * world + rank)  # from here on, each rank draws its own latents and augmentations
    augment = AdaptiveAugment(augment_p).train().to(device)
    ada = ADA(augment, target=ada_target, interval=ada_interval, kimg=ada_kimg, batch=batch)
    stats = Stats()  # the log window
    report = fan_out(ada.report, stats.report)
    loss = RankGANLoss(device, augment_pipe=augment, report=report, **_loss_modules(networks, world), **loss_kwargs)
    phases = make_phases(networks, lr=lr, G_reg_interval=G_reg_interval, D_reg_interval=D_reg_interval)
    if dataset is not None:
        reals = dataset_batches(dataset, batch // world, seed=seed, rank=rank, world=world)
    else:
        reals = real_batches(data, batch // world, shape, torch.Generator().manual_seed(seed * world + rank))
    ema_beta = 0.5 ** (batch / max(ema_kimg * 1000, 1e-8))
    log = RunLog(run_dir / "stats.jsonl" if rank == 0 else None, verbose)
    if verbose and rank == 0 and previous is not None:
        print(f"previous stage: {previous} ({loss.variant})", flush=True)
    try:
        for step in range(1, iterations + 1):
            run_phases(loss, phases, next(reals).to(device).split(batch_gpu), step - 1, z_dim)
            update_ema(networks.G_ema, networks.G, ema_beta)
            ada.update(step)
            if step == 1 and verbose and rank == 0 and loss.markers is not None:
                print(
                    f"markers m_high={loss.markers[0]:.4g} m_low={loss.markers[1]:.4g} from "
                    f"{loss.marker_sample_sizes[0] if loss.marker_sample_sizes else '?'} real images",
                    flush=True,
                )
            if step % log_every == 0 or step == iterations:
                log.write(stats, step, float(augment.p))
    finally:
        log.close()
    snapshot = save_snapshot(run_dir / SNAPSHOT, networks) if rank == 0 else None
    if world > 1:
        dist.barrier()
    return {"history": log.history, "augment_p": float(augment.p), "snapshot": snapshot}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python examples/stylegan2_ada_compact_loop.py",
        description="StyleGAN2-ADA-style RankGAN/GoGAN training on tiny networks (CPU or GPU, torchrun-aware).",
    )
    parser.add_argument("--run-dir", required=True, help=f"where stats.jsonl and {SNAPSHOT} go")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16, help="global batch per step")
    parser.add_argument("--batch-gpu", type=int, default=8, help="samples per accumulation round per rank")
    parser.add_argument("--resolution", type=int, default=16, help="a power of two >= 4")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--r1-gamma", type=float, default=1.0)
    parser.add_argument("--pl-weight", type=float, default=2.0)
    parser.add_argument("--augment-p", type=float, default=0.0, help="initial augmentation probability")
    parser.add_argument("--ada-target", type=float, default=0.6, help="target of Loss/signs/real; <0 disables ADA")
    parser.add_argument("--ada-interval", type=int, default=4)
    parser.add_argument("--ada-kimg", type=float, default=10.0, help="kimg for p to move by 1")
    parser.add_argument("--resume", help="snapshot to initialise G, D and G_ema from")
    parser.add_argument("--previous", help="the previous stage's snapshot (omit for stage 1)")
    parser.add_argument("--variant", choices=("rankgan", "gogan"), default="rankgan")
    parser.add_argument("--margin", type=float, default=1.0)
    parser.add_argument(
        "--clamp-weight",
        type=float,
        default=CLAMP_WEIGHT,
        help=f"RankGAN lambda_clamp [{CLAMP_WEIGHT:g}, the authors' code's: the paper's 1000 swamps the ranking term "
        "at this loop's learning rate]",
    )
    parser.add_argument("--marker-statistic", choices=("mean", "median"), default="mean")
    parser.add_argument("--data", choices=DATA_KINDS, default="toy", help="toy stripes or a rankplug data set [toy]")
    parser.add_argument("--data-root", help="the image folder (--data folder) or CIFAR-10 root (--data cifar10)")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="image channels [3; 1 for --data digits]")
    parser.add_argument("--marker-images", type=int, default=5000, help="real images for RankGAN's markers [5000]")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry: ``python examples/stylegan2_ada_compact_loop.py --help``."""
    args = parse_args(argv)
    channels = args.channels or (1 if args.data == "digits" else 3)
    dataset = open_data(args.data, args.data_root, args.resolution, channels)
    loss_kwargs = {
        "r1_gamma": args.r1_gamma,
        "pl_weight": args.pl_weight,
        "variant": args.variant,
        "margin": args.margin,
        "clamp_weight": args.clamp_weight,
        "marker_statistic": args.marker_statistic,
    }
    try:
        result = train(
            run_dir=args.run_dir,
            iterations=args.iterations,
            batch=args.batch,
            batch_gpu=args.batch_gpu,
            resolution=args.resolution,
            lr=args.lr,
            augment_p=args.augment_p,
            ada_target=None if args.ada_target < 0 else args.ada_target,
            ada_interval=args.ada_interval,
            ada_kimg=args.ada_kimg,
            resume=args.resume,
            previous=args.previous,
            log_every=args.log_every,
            seed=args.seed,
            channels=channels,
            dataset=dataset,
            marker_images=args.marker_images,
            loss_kwargs=loss_kwargs,
        )
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank is done with the group before any leaves it
        return result
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def leave_process(status: int = 0) -> NoReturn:
    """End a ``torchrun`` rank at once, without Python's interpreter shutdown (call after :func:`main` returns).

    torch's gloo backend runs each collective on a worker thread, and ``destroy_process_group`` leaves those threads
    running. The gradient all-reduces that DDP starts inside ``backward`` carry a Python object (the context
    ``backward`` stashes in thread-local state). If a worker thread lets go of the last one while the interpreter
    shuts down, it must take the GIL to release that object; Python ends such a thread with ``pthread_exit``, and the
    C++ runtime aborts the process: "terminate called without an active exception", exit code -6 (SIGABRT), at
    random, more often on a busy machine. :func:`main` has met every rank at a barrier, left the process group and
    closed its files by then, so skipping the shutdown loses nothing; only the output buffers are flushed here.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun rank, done: see leave_process
        leave_process(0)
