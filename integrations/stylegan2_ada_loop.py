"""A compact StyleGAN2-ADA-style training loop for RankGAN / GoGAN stages, for users without the NVlabs repository.

It drives :class:`rankplug.integrations.stylegan2_ada.RankGANLoss` through the same phase interface as the host's
``training_loop``: ``Gmain`` / ``Greg`` / ``Dmain`` / ``Dreg`` with lazy regularisation (or ``Gboth`` / ``Dboth``),
gradient accumulation over rounds with ``sync`` on the last, ``gain`` = the phase's interval, an EMA generator,
and adaptive augmentation: a kornia pipe whose probability ``p`` follows the ``Loss/signs/real`` statistic toward a
target, as ADA does. Under ``torchrun`` it trains with ``torch.distributed`` (gloo on CPU, NCCL on GPU), the live
networks DDP-wrapped and logging on rank 0. The networks are tiny, so it runs on a CPU in seconds::

    python -m rankplug.integrations.stylegan2_ada_loop --run-dir runs/s1 --iterations 200
    python -m rankplug.integrations.stylegan2_ada_loop --run-dir runs/s2 --iterations 200 \\
        --resume runs/s1/network-snapshot.pkl --previous runs/s1/network-snapshot.pkl --variant rankgan
    torchrun --nproc_per_node=2 --standalone -m rankplug.integrations.stylegan2_ada_loop --run-dir runs/ddp

Requires kornia (``pip install "rankplug[eval]"``), imported only when the augmentation pipe is built.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pickle
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from rankplug.integrations.stylegan2_ada import RankGANLoss, load_snapshot


# ------------------------------------------------------------------------------------------- tiny networks
class MappingNetwork(nn.Module):
    """``(z, c) -> ws`` of shape ``(N, num_ws, w_dim)``; tracks the mean ``w`` in ``w_avg`` while training."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, c_dim, w_dim, num_ws, w_avg_beta
        self.embed = nn.Linear(c_dim, z_dim) if c_dim > 0 else None
        self.net = nn.Sequential(
            nn.Linear(z_dim * (2 if c_dim > 0 else 1), w_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(w_dim, w_dim),
            nn.LeakyReLU(0.2),
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor, c: Tensor, truncation_psi: float = 1, skip_w_avg_update: bool = False) -> Tensor:
        x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()  # unit second moment per latent
        if self.embed is not None:
            x = torch.cat([x, self.embed(c.to(x.dtype))], dim=1)
        w = self.net(x)
        if self.training and not skip_w_avg_update:
            self.w_avg.copy_(torch.lerp(w.detach().mean(0), self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            w = torch.lerp(self.w_avg, w, truncation_psi)
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)


class SynthesisNetwork(nn.Module):
    """``ws -> img`` of shape ``(N, img_channels, R, R)``: a learned 4x4 constant, upsampled, styled per layer."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channels: int = 32) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4; got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_layers = int(math.log2(img_resolution)) - 1
        self.num_ws = self.num_layers + 1
        self.const = nn.Parameter(torch.randn(channels, 4, 4))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(self.num_layers))
        self.styles = nn.ModuleList(nn.Linear(w_dim, channels) for _ in range(self.num_ws))
        self.noise_strength = nn.Parameter(torch.zeros(self.num_layers))
        self.to_rgb = nn.Conv2d(channels, img_channels, 1)

    def forward(self, ws: Tensor, noise_mode: str = "random") -> Tensor:
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        for i, conv in enumerate(self.convs):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = conv(x) * (1 + self.styles[i](ws[:, i]))[:, :, None, None]  # the layer's style scales channels
            if noise_mode == "random":
                x = x + torch.randn_like(x[:, :1]) * self.noise_strength[i]
            x = F.leaky_relu(x, 0.2)
        return self.to_rgb(x * (1 + self.styles[-1](ws[:, -1]))[:, :, None, None])


class Generator(nn.Module):
    """``G(z, c)`` with ``.mapping``, ``.synthesis`` and ``num_ws``, shaped like StyleGAN2-ADA's generator."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws)

    def forward(self, z: Tensor, c: Tensor, truncation_psi: float = 1, noise_mode: str = "random") -> Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), noise_mode=noise_mode)


class Discriminator(nn.Module):
    """``D(img, c) -> (N, 1)``; no batch-dependent layers, so every score depends on its own image only."""

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, channels: int = 32) -> None:
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        layers: list[nn.Module] = [nn.Conv2d(img_channels, channels, 3, padding=1), nn.LeakyReLU(0.2)]
        resolution = img_resolution
        while resolution > 4:
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            resolution //= 2
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 16, channels), nn.LeakyReLU(0.2))
        self.out = nn.Linear(channels, 1)
        self.cmap = nn.Linear(c_dim, channels) if c_dim > 0 else None

    def forward(self, img: Tensor, c: Tensor) -> Tensor:
        h = self.features(img)
        logits = self.out(h)
        if self.cmap is not None:  # projection conditioning
            logits = logits + (h * self.cmap(c.to(h.dtype))).sum(1, keepdim=True) / math.sqrt(h.shape[1])
        return logits


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
            op.p = p  # kornia reads p at every call
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


LOGGED = ("Loss/scores/real", "Loss/scores/fake", "Loss/signs/real", "Loss/G/loss", "Loss/D/loss")


# ---------------------------------------------------------------------------------------------- the loop
def toy_images(n: int, resolution: int, channels: int, generator: torch.Generator) -> Tensor:
    """Toy data in ``[-1, 1]``: sinusoidal stripes with random phase, frequency and orientation."""
    u = torch.linspace(0, 1, resolution)
    flip = torch.randint(0, 2, (n, 1, 1, 1), generator=generator).float()
    grid = (u[:, None] + (2 * flip - 1) * u[None, :]).expand(n, 1, resolution, resolution)
    phase = torch.rand(n, 1, 1, 1, generator=generator) * 2 * math.pi
    freq = 1 + torch.randint(0, 3, (n, 1, 1, 1), generator=generator).float()
    return torch.sin(2 * math.pi * freq * grid + phase).expand(n, channels, resolution, resolution).contiguous()


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
    resume: str | None = None,
    log_every: int = 10,
    seed: int = 0,
    data: Tensor | None = None,
    loss_kwargs: dict[str, Any] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train G and D for ``iterations`` steps with :class:`RankGANLoss`; write stats and a snapshot to ``run_dir``.

    ``batch`` is the global batch per step, split over the ranks and into rounds of ``batch_gpu``. ``resume`` is a
    snapshot pickle whose ``G``, ``D`` and ``G_ema`` weights initialise the networks (the next stage starts from
    the previous one); ``loss_kwargs`` go to :class:`RankGANLoss` (``previous=``, ``variant=``, ``margin=``, ...).
    ``data`` is an optional ``(M, C, R, R)`` tensor in ``[-1, 1]``; toy stripes otherwise. Rank 0 writes
    ``stats.jsonl`` (one line per ``log_every`` steps) and ``network-snapshot.pkl`` (``G``, ``D``, ``G_ema``,
    ``augment_pipe``, the layout :class:`RankGANLoss` reads as ``previous``) and, with ``verbose``, prints each
    log line.

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
    torch.manual_seed(seed * world + rank)
    data_rng = torch.Generator().manual_seed(seed * world + rank)
    run_dir = Path(run_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)  # identical initial weights on every rank (DDP also broadcasts them)
    G = Generator(z_dim, 0, w_dim, resolution, channels).train().requires_grad_(False).to(device)
    D = Discriminator(0, resolution, channels).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    if resume is not None:
        snapshot = load_snapshot(resume)
        for name, module in (("G", G), ("D", D), ("G_ema", G_ema)):
            module.load_state_dict(snapshot[name].state_dict())
    torch.manual_seed(seed * world + rank)  # from here on, each rank draws its own latents and augmentations
    augment = AdaptiveAugment(augment_p).train().to(device)

    # As the host: DDP wrappers around the trained modules only, built with requires_grad on, then switched off.
    wrapped: dict[str, nn.Module] = {}
    for name, module in (("G_mapping", G.mapping), ("G_synthesis", G.synthesis), ("D", D)):
        if world > 1:
            module.requires_grad_(True)
            module = nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)
            module.requires_grad_(False)
        wrapped[name] = module
    stats, ada_stats = Stats(), Stats()  # the log window and ADA's window (reset at each adjustment)

    def report(name: str, value: Any) -> Any:
        if name == "Loss/signs/real":
            ada_stats.report(name, value)
        return stats.report(name, value)

    loss = RankGANLoss(device, augment_pipe=augment, report=report, **wrapped, **(loss_kwargs or {}))

    phases = []
    for name, module, interval in (("G", G, G_reg_interval), ("D", D, D_reg_interval)):
        if interval is None:
            opt = torch.optim.Adam(module.parameters(), lr=lr, betas=(0.0, 0.99))
            phases.append((name + "both", module, opt, 1))
        else:  # lazy regularisation: the main phase's Adam settings compensate for the skipped steps
            ratio = interval / (interval + 1)
            opt = torch.optim.Adam(module.parameters(), lr=lr * ratio, betas=(0.0, 0.99**ratio))
            phases += [(name + "main", module, opt, 1), (name + "reg", module, opt, interval)]

    local_batch = batch // world
    rounds = local_batch // batch_gpu
    ema_beta = 0.5 ** (batch / max(ema_kimg * 1000, 1e-8))
    history: list[dict[str, float]] = []
    log = open(run_dir / "stats.jsonl", "w") if rank == 0 else None  # closed in the finally below
    try:
        for step in range(iterations):
            if data is None:
                reals = toy_images(local_batch, resolution, channels, data_rng)
            else:
                reals = data[torch.randint(0, data.shape[0], (local_batch,), generator=data_rng)]
            reals = reals.to(device).split(batch_gpu)
            c = torch.zeros(batch_gpu, 0, device=device)
            for name, module, opt, interval in phases:
                if step % interval:
                    continue
                opt.zero_grad(set_to_none=True)
                module.requires_grad_(True)
                for index, real in enumerate(reals):
                    z = torch.randn(batch_gpu, z_dim, device=device)
                    loss.accumulate_gradients(name, real, c, z, c, sync=index == rounds - 1, gain=interval)
                module.requires_grad_(False)
                for param in module.parameters():
                    if param.grad is not None:  # one bad step must not poison Adam's moments
                        torch.nan_to_num_(param.grad, nan=0.0, posinf=1e5, neginf=-1e5)
                opt.step()
            with torch.no_grad():
                for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                    p_ema.copy_(torch.lerp(p, p_ema, ema_beta))
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)
            if ada_target is not None and (step + 1) % ada_interval == 0:
                signs = ada_stats.means(["Loss/signs/real"])["Loss/signs/real"]  # all ranks: p stays identical
                ada_stats.reset()
                ada_adjust(augment, signs, target=ada_target, step=batch * ada_interval / (ada_kimg * 1000))
            if (step + 1) % log_every == 0 or step + 1 == iterations:
                entry = stats.means(LOGGED)
                entry.update(step=step + 1, augment_p=float(augment.p))
                history.append(entry)
                stats.reset()
                if log is not None:
                    log.write(json.dumps(entry) + "\n")
                    log.flush()
                if log is not None and verbose:
                    print(" ".join(f"{k.split('/', 1)[-1]}={v:.4g}" for k, v in entry.items()), flush=True)
    finally:
        if log is not None:
            log.close()
    snapshot_path = None
    if rank == 0:
        snapshot_path = run_dir / "network-snapshot.pkl"
        snapshot = {"G": G, "D": D, "G_ema": G_ema, "augment_pipe": augment}
        snapshot = {k: copy.deepcopy(v).eval().requires_grad_(False).cpu() for k, v in snapshot.items()}
        with open(snapshot_path, "wb") as file:
            pickle.dump(snapshot, file)
    if world > 1:
        dist.barrier()
    return {"history": history, "augment_p": float(augment.p), "snapshot": snapshot_path}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry: ``python -m rankplug.integrations.stylegan2_ada_loop --help``."""
    parser = argparse.ArgumentParser(
        prog="python -m rankplug.integrations.stylegan2_ada_loop",
        description="StyleGAN2-ADA-style RankGAN/GoGAN training on tiny networks (CPU or GPU, torchrun-aware).",
    )
    parser.add_argument("--run-dir", required=True, help="where stats.jsonl and network-snapshot.pkl go")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16, help="global batch per step")
    parser.add_argument("--batch-gpu", type=int, default=8, help="samples per accumulation round per rank")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--r1-gamma", type=float, default=1.0)
    parser.add_argument("--pl-weight", type=float, default=2.0)
    parser.add_argument("--augment-p", type=float, default=0.0, help="initial augmentation probability")
    parser.add_argument("--ada-target", type=float, default=0.6, help="target of Loss/signs/real; <0 disables ADA")
    parser.add_argument("--ada-interval", type=int, default=4)
    parser.add_argument("--ada-kimg", type=float, default=10.0, help="kimg for p to move by 1")
    parser.add_argument("--resume", help="snapshot pickle to initialise G, D and G_ema from")
    parser.add_argument("--previous", help="the previous stage's snapshot pickle (omit for stage 1)")
    parser.add_argument("--variant", choices=("rankgan", "gogan"), default="rankgan")
    parser.add_argument("--margin", type=float, default=1.0)
    parser.add_argument("--clamp-weight", type=float, default=1.0, help="RankGAN lambda_clamp (paper 1000)")
    parser.add_argument("--marker-statistic", choices=("mean", "median"), default="mean")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    loss_kwargs = {
        "r1_gamma": args.r1_gamma,
        "pl_weight": args.pl_weight,
        "previous": args.previous,
        "variant": args.variant,
        "margin": args.margin,
        "clamp_weight": args.clamp_weight,
        "marker_statistic": args.marker_statistic,
    }
    try:
        return train(
            run_dir=args.run_dir,
            iterations=args.iterations,
            batch=args.batch,
            batch_gpu=args.batch_gpu,
            lr=args.lr,
            augment_p=args.augment_p,
            ada_target=None if args.ada_target < 0 else args.ada_target,
            ada_interval=args.ada_interval,
            ada_kimg=args.ada_kimg,
            resume=args.resume,
            log_every=args.log_every,
            seed=args.seed,
            loss_kwargs=loss_kwargs,
        )
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["AdaptiveAugment", "Discriminator", "Generator", "Stats", "ada_adjust", "main", "toy_images", "train"]

if __name__ == "__main__":
    # Run through the importable module, not __main__, so the snapshot pickles name
    # rankplug.integrations.stylegan2_ada_loop.Generator and load anywhere rankplug is installed.
    from rankplug.integrations import stylegan2_ada_loop

    stylegan2_ada_loop.main()
