"""Stand-in for upstream ``train.py``: the option set-up, the run directory and the per-rank launch.

Written from scratch with upstream's structure, which the rankplug launcher relies on:
``setup_training_loop_kwargs(**config_kwargs) -> (desc, args)`` builds every option (``args.loss_kwargs`` with
``class_name='training.loss.StyleGAN2Loss'`` and ``r1_gamma``; ``args.training_set_kwargs``), ``main()`` parses
``sys.argv``, writes ``<outdir>/<id>-<desc>/training_options.json`` and calls ``subprocess_fn(rank, args,
temp_dir)`` once per GPU (through ``torch.multiprocessing.spawn`` for ``--gpus`` > 1), which runs
``training.training_loop.training_loop(rank=rank, **args)``. Upstream parses with click; this stand-in uses
argparse with the same ``--flag=value`` spelling. Unlike upstream: ``--kimg`` may be fractional, the networks are
tiny, and several ranks use gloo on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from typing import Any

import dnnlib
import torch


class UserError(Exception):
    pass


def setup_training_loop_kwargs(
    gpus: int | None = None,
    data: str | None = None,
    kimg: float | None = None,
    batch: int | None = None,
    gamma: float | None = None,
    seed: int | None = None,
    snap: int | None = None,
    resume: str | None = None,
    aug: str | None = None,
) -> tuple[str, dnnlib.EasyDict]:
    args = dnnlib.EasyDict()
    gpus = 1 if gpus is None else gpus
    if gpus < 1:
        raise UserError("--gpus must be at least 1")
    args.num_gpus = gpus
    args.random_seed = 0 if seed is None else seed
    args.network_snapshot_ticks = 1 if snap is None else snap
    if data is None:
        raise UserError("--data is required")
    args.training_set_kwargs = dnnlib.EasyDict(
        class_name="training.dataset.ImageFolderDataset", path=data, use_labels=False, max_size=None, xflip=False
    )
    args.data_loader_kwargs = dnnlib.EasyDict(num_workers=0)
    training_set = dnnlib.util.construct_class_by_name(**args.training_set_kwargs)
    args.training_set_kwargs.resolution = training_set.resolution
    args.training_set_kwargs.max_size = len(training_set)
    desc = f"{training_set.name}-auto{gpus}"

    args.G_kwargs = dnnlib.EasyDict(class_name="training.networks.Generator", z_dim=8, w_dim=16)
    args.D_kwargs = dnnlib.EasyDict(class_name="training.networks.Discriminator")
    args.G_opt_kwargs = dnnlib.EasyDict(class_name="torch.optim.Adam", lr=0.0025, betas=[0, 0.99], eps=1e-8)
    args.D_opt_kwargs = dnnlib.EasyDict(class_name="torch.optim.Adam", lr=0.0025, betas=[0, 0.99], eps=1e-8)
    args.loss_kwargs = dnnlib.EasyDict(class_name="training.loss.StyleGAN2Loss", r1_gamma=0.05)
    args.total_kimg = 1.0
    args.batch_size = 4 * gpus
    args.batch_gpu = 4
    args.ema_kimg = 0.01
    args.ema_rampup = 0.05
    args.kimg_per_tick = 0.02
    if gamma is not None:
        if gamma < 0:
            raise UserError("--gamma must be non-negative")
        desc += f"-gamma{gamma:g}"
        args.loss_kwargs.r1_gamma = gamma
    if kimg is not None:
        if kimg <= 0:
            raise UserError("--kimg must be positive")
        desc += f"-kimg{kimg:g}"
        args.total_kimg = kimg
    if batch is not None:
        if batch < 1 or batch % gpus:
            raise UserError("--batch must be a positive multiple of --gpus")
        desc += f"-batch{batch}"
        args.batch_size = batch
        args.batch_gpu = batch // gpus
    args.augment_kwargs = dnnlib.EasyDict(class_name="training.augment.AugmentPipe", xflip=1, xint=1, brightness=1)
    args.augment_p, args.ada_target, args.ada_kimg = 0.0, 0.6, 0.5
    if aug == "noaug":
        desc += "-noaug"
        args.augment_kwargs, args.ada_target = None, None
    args.resume_pkl = None
    if resume is not None:
        desc += "-resumecustom"
        args.resume_pkl = resume
        args.ada_kimg = 0.1  # upstream: faster ADA after a resume
        args.ema_rampup = None  # upstream: no EMA ramp-up after a resume
    return desc, args


def subprocess_fn(rank: int, args: dnnlib.EasyDict, temp_dir: str) -> None:
    if args.num_gpus > 1:
        init_file = os.path.abspath(os.path.join(temp_dir, ".torch_distributed_init"))
        torch.distributed.init_process_group(
            backend="gloo", init_method=f"file://{init_file}", rank=rank, world_size=args.num_gpus
        )
    from training import training_loop

    training_loop.training_loop(rank=rank, **args)
    if args.num_gpus > 1:
        torch.distributed.barrier()  # no rank leaves while another still writes (a lone gloo exit can abort)
        torch.distributed.destroy_process_group()


def _parse(argv: list[str]) -> tuple[str, bool, dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="train.py")
    parser.add_argument("--outdir", required=True)
    parser.add_argument("-n", "--dry-run", action="store_true")
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--data", required=True)
    parser.add_argument("--kimg", type=float)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--gamma", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--snap", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--aug", choices=("ada", "noaug"))
    options = vars(parser.parse_args(argv))
    return options.pop("outdir"), options.pop("dry_run"), options


def main() -> None:
    outdir, dry_run, config_kwargs = _parse(sys.argv[1:])
    try:
        run_desc, args = setup_training_loop_kwargs(**config_kwargs)
    except UserError as error:
        sys.exit(f"Error: {error}")
    previous = [
        int(m.group()) for m in map(re.compile(r"^\d+").match, os.listdir(outdir) if os.path.isdir(outdir) else []) if m
    ]
    args.run_dir = os.path.join(outdir, f"{max(previous, default=-1) + 1:05d}-{run_desc}")
    print("Training options:")
    print(json.dumps(args, indent=2))
    print(f"Output directory:   {args.run_dir}")
    if dry_run:
        print("Dry run; exiting.")
        return
    os.makedirs(args.run_dir)
    with open(os.path.join(args.run_dir, "training_options.json"), "w") as file:
        json.dump(args, file, indent=2)
    print("Launching processes...")
    torch.multiprocessing.set_start_method("spawn", force=True)
    with tempfile.TemporaryDirectory() as temp_dir:
        if args.num_gpus == 1:
            subprocess_fn(rank=0, args=args, temp_dir=temp_dir)
        else:
            torch.multiprocessing.spawn(fn=subprocess_fn, args=(args, temp_dir), nprocs=args.num_gpus)


if __name__ == "__main__":
    main()
