"""Stand-in for upstream ``main.py``: upstream's training flags, then ``loader.load_worker`` on one or more ranks."""

from __future__ import annotations

import os
import tempfile
import time
from argparse import ArgumentParser

import config
import loader
import torch
import torch.multiprocessing as mp
import utils.ckpt as ckpt


def load_configs_initialize_training() -> tuple[config.Configurations, int, str]:
    parser = ArgumentParser(add_help=True)
    parser.add_argument("-cfg", "--cfg_file", type=str, default=None)
    parser.add_argument("-data", "--data_dir", type=str, default=None)
    parser.add_argument("-save", "--save_dir", type=str, default="./")
    parser.add_argument("-ckpt", "--ckpt_dir", type=str, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-DDP", "--distributed_data_parallel", action="store_true")
    parser.add_argument("--backend", type=str, default="gloo")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("-mpc", "--mixed_precision", action="store_true")
    parser.add_argument("-t", "--train", action="store_true")
    parser.add_argument("--standin_ranks", type=int, default=2, help="stand-in only: CPU ranks under -DDP")
    args = parser.parse_args()
    if not args.train:
        parser.error("this stand-in only trains: pass -t")
    cfgs = config.Configurations(args.cfg_file)
    run_cfgs = {k: v for k, v in vars(args).items() if k not in ("cfg_file", "standin_ranks")}
    cfgs.update_cfgs(run_cfgs, super="RUN")
    cfgs.OPTIMIZATION.world_size = args.standin_ranks if args.distributed_data_parallel else 1
    if args.ckpt_dir is not None:
        run_name = ckpt.load_latest(args.ckpt_dir, "D")["run_name"]
    else:
        stem = os.path.splitext(os.path.basename(args.cfg_file or "default"))[0]
        run_name = f"{cfgs.DATA.name}-{stem}-train-{time.strftime('%Y_%m_%d_%H_%M_%S')}"
    return cfgs, cfgs.OPTIMIZATION.world_size, run_name


if __name__ == "__main__":
    cfgs, gpus_per_node, run_name = load_configs_initialize_training()
    if cfgs.RUN.distributed_data_parallel and cfgs.OPTIMIZATION.world_size > 1:
        mp.set_start_method("spawn", force=True)
        with tempfile.TemporaryDirectory() as temp_dir:
            cfgs.RUN.dist_file = os.path.join(temp_dir, "dist_init")
            torch.multiprocessing.spawn(
                fn=loader.load_worker, args=(cfgs, gpus_per_node, run_name, None), nprocs=gpus_per_node
            )
    else:
        loader.load_worker(local_rank=0, cfgs=cfgs, gpus_per_node=gpus_per_node, run_name=run_name, hdf5_path=None)
