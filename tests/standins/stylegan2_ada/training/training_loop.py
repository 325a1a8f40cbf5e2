"""Stand-in for upstream ``training.training_loop``: the phase loop that drives a ``loss_kwargs`` loss.

Written from scratch with the parts of upstream's loop a loss sees: the data set and ``misc.InfiniteSampler``,
the networks built from ``G_kwargs`` / ``D_kwargs`` (resumed from ``resume_pkl``), the augment pipe, DDP wrapping
of ``G.mapping``, ``G.synthesis`` and ``D`` for several ranks, the loss built with
``construct_class_by_name(device=..., G_mapping=..., G_synthesis=..., D=..., augment_pipe=..., **loss_kwargs)``,
the four lazy-regularisation phases with accumulation rounds of ``batch_gpu`` (``sync`` on the last round,
``gain`` = the phase's interval), ``G_ema``, the ADA update from ``Loss/signs/real``, ``stats.jsonl`` lines and
``network-snapshot-<kimg>.pkl`` pickles. Unlike upstream it runs on the CPU when CUDA is missing, and every rank
writes ``final-rank<rank>.json`` (the loss's stage and markers) so tests can compare ranks.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
from typing import Any

import dnnlib
import numpy as np
import torch
from torch_utils import misc, training_stats


def _reported_means() -> dict[str, float]:
    return {name: training_stats.mean(name) for name in sorted(training_stats.records)}


def training_loop(
    run_dir: str = ".",
    training_set_kwargs: dict[str, Any] | None = None,
    data_loader_kwargs: dict[str, Any] | None = None,
    G_kwargs: dict[str, Any] | None = None,
    D_kwargs: dict[str, Any] | None = None,
    G_opt_kwargs: dict[str, Any] | None = None,
    D_opt_kwargs: dict[str, Any] | None = None,
    augment_kwargs: dict[str, Any] | None = None,
    loss_kwargs: dict[str, Any] | None = None,
    random_seed: int = 0,
    num_gpus: int = 1,
    rank: int = 0,
    batch_size: int = 4,
    batch_gpu: int = 4,
    ema_kimg: float = 10,
    ema_rampup: float | None = None,
    G_reg_interval: int = 4,
    D_reg_interval: int = 16,
    augment_p: float = 0,
    ada_target: float | None = None,
    ada_interval: int = 4,
    ada_kimg: float = 500,
    total_kimg: float = 25000,
    kimg_per_tick: float = 4,
    network_snapshot_ticks: int | None = 50,
    resume_pkl: str | None = None,
) -> None:
    device = torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)

    if rank == 0:
        print("Loading training set...")
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
    iterator = iter(
        torch.utils.data.DataLoader(
            dataset=training_set, sampler=sampler, batch_size=batch_size // num_gpus, **(data_loader_kwargs or {})
        )
    )

    if rank == 0:
        print("Constructing networks...")
    common = dict(
        c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels
    )
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    if resume_pkl is not None:
        with open(resume_pkl, "rb") as file:
            resume = pickle.load(file)
        for name, module in (("G", G), ("D", D), ("G_ema", G_ema)):
            module.load_state_dict(resume[name].state_dict())

    augment_pipe = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(augment_p))

    modules: dict[str, Any] = {}
    for name, module in (("G_mapping", G.mapping), ("G_synthesis", G.synthesis), ("D", D)):
        if num_gpus > 1:
            module.requires_grad_(True)
            module = torch.nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)
            module.requires_grad_(False)
        modules[name] = module

    if rank == 0:
        print("Setting up training phases...")
    loss = dnnlib.util.construct_class_by_name(device=device, **modules, augment_pipe=augment_pipe, **loss_kwargs)
    phases = []
    for name, module, opt_kwargs, interval in (
        ("G", G, G_opt_kwargs, G_reg_interval),
        ("D", D, D_opt_kwargs, D_reg_interval),
    ):
        ratio = interval / (interval + 1)
        opt_kwargs = dnnlib.EasyDict(opt_kwargs)
        opt_kwargs.lr = opt_kwargs.lr * ratio
        opt_kwargs.betas = [beta**ratio for beta in opt_kwargs.betas]
        opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)
        phases += [dnnlib.EasyDict(name=name + "main", module=module, opt=opt, interval=1)]
        phases += [dnnlib.EasyDict(name=name + "reg", module=module, opt=opt, interval=interval)]

    if rank == 0:
        print(f"Training for {total_kimg:g} kimg...")
    stats_file = open(os.path.join(run_dir, "stats.jsonl"), "a") if rank == 0 else None
    cur_nimg, batch_idx, tick, tick_start = 0, 0, 0, 0
    rounds = batch_size // (batch_gpu * num_gpus)
    while True:
        images, labels = next(iterator)
        real_img = (images.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
        real_c = labels.to(device).split(batch_gpu)
        for phase in phases:
            if batch_idx % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            for index, (img, c) in enumerate(zip(real_img, real_c)):
                gen_z = torch.randn([img.shape[0], G.z_dim], device=device)
                loss.accumulate_gradients(
                    phase=phase.name,
                    real_img=img,
                    real_c=c,
                    gen_z=gen_z,
                    gen_c=c,
                    sync=index == rounds - 1,
                    gain=phase.interval,
                )
            phase.module.requires_grad_(False)
            for param in phase.module.parameters():
                if param.grad is not None:
                    torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
            phase.opt.step()
        ema_nimg = ema_kimg * 1000
        if ema_rampup is not None:
            ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
        beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
        cur_nimg += batch_size
        batch_idx += 1
        if augment_pipe is not None and ada_target is not None and batch_idx % ada_interval == 0:
            signs = training_stats.mean("Loss/signs/real")
            if math.isfinite(signs):
                adjust = np.sign(signs - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)
                augment_pipe.p.copy_((augment_pipe.p + adjust).clamp(min=0))
        done = cur_nimg >= total_kimg * 1000
        if not done and cur_nimg < tick_start + kimg_per_tick * 1000:
            continue
        tick, tick_start = tick + 1, cur_nimg
        entry = {"kimg": cur_nimg / 1000, "augment_p": float(augment_pipe.p) if augment_pipe is not None else 0.0}
        entry.update(_reported_means())
        training_stats.reset()
        if stats_file is not None:
            stats_file.write(json.dumps(entry) + "\n")
            stats_file.flush()
            print(
                f"tick {tick:<4d} kimg {entry['kimg']:<7.3f} "
                + " ".join(f"{key} {value:.4g}" for key, value in entry.items() if key.startswith("Loss/"))
            )
        if rank == 0 and (done or (network_snapshot_ticks is not None and tick % network_snapshot_ticks == 0)):
            snapshot = {"G": G, "D": D, "G_ema": G_ema, "augment_pipe": augment_pipe}
            path = os.path.join(run_dir, f"network-snapshot-{cur_nimg // 1000:06d}.pkl")
            with open(path, "wb") as file:
                pickle.dump({k: copy.deepcopy(v).cpu() if v is not None else None for k, v in snapshot.items()}, file)
        if done:
            break
    if stats_file is not None:
        stats_file.close()
    with open(os.path.join(run_dir, f"final-rank{rank}.json"), "w") as file:
        markers = getattr(loss, "markers", None)
        json.dump({"stage": getattr(loss, "stage", None), "markers": list(markers) if markers else None}, file)
    if rank == 0:
        print("Exiting...")
