"""Stand-in for upstream ``loader.py``: ``load_worker`` builds everything, makes the ``WORKER`` and trains.

Per rank: the process group (``-DDP``, gloo here), the data set and loader (``DistributedSampler`` under DDP),
the networks (DDP-wrapped under DDP), the Adam optimizers in ``cfgs.OPTIMIZATION``, a resume from ``-ckpt``
(weights, optimizers and step), ``worker = WORKER(...)``, then ``while step <= total_steps`` a discriminator and
a generator step, with checkpoints every ``RUN.save_freq`` steps and at the end (rank 0). Stand-in only: every rank
writes ``final-rank<rank>.json`` with the last losses and, when present, ``worker.rankplug.summary()``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import models.model as model
import torch
import torch.distributed as dist
import utils.ckpt as ckpt
from data_util import Dataset_
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from worker import WORKER


def load_worker(local_rank: int, cfgs: Any, gpus_per_node: int, run_name: str, hdf5_path: Any) -> None:
    global_rank = local_rank
    world_size = cfgs.OPTIMIZATION.world_size
    if cfgs.RUN.distributed_data_parallel:
        init = f"file://{os.path.abspath(cfgs.RUN.dist_file)}"
        dist.init_process_group(backend=cfgs.RUN.backend, init_method=init, rank=global_rank, world_size=world_size)
    torch.manual_seed(cfgs.RUN.seed + global_rank)
    device = torch.device("cpu")

    dataset = Dataset_(cfgs.RUN.data_dir, cfgs.DATA.img_size)
    sampler = (
        DistributedSampler(dataset, world_size, global_rank, drop_last=True)
        if cfgs.RUN.distributed_data_parallel
        else None
    )
    basket = cfgs.OPTIMIZATION.batch_size * cfgs.OPTIMIZATION.acml_steps * cfgs.OPTIMIZATION.d_updates_per_step
    train_dataloader = DataLoader(dataset, batch_size=basket, shuffle=sampler is None, sampler=sampler, drop_last=True,
                                  num_workers=cfgs.RUN.num_workers)  # fmt: skip

    sizes = dict(img_size=cfgs.DATA.img_size, img_channels=cfgs.DATA.img_channels, num_classes=cfgs.DATA.num_classes)
    Gen = model.Generator(z_dim=cfgs.MODEL.z_dim, width=cfgs.MODEL.width, **sizes).to(device)
    Dis = model.Discriminator(width=cfgs.MODEL.width, **sizes).to(device)
    opt = cfgs.OPTIMIZATION
    opt.g_optimizer = torch.optim.Adam(Gen.parameters(), lr=opt.g_lr, betas=(opt.beta1, opt.beta2))
    opt.d_optimizer = torch.optim.Adam(Dis.parameters(), lr=opt.d_lr, betas=(opt.beta1, opt.beta2))
    step = 0
    if cfgs.RUN.ckpt_dir is not None:  # -ckpt: resume weights, optimizers and step
        g_states, d_states = ckpt.load_latest(cfgs.RUN.ckpt_dir, "G"), ckpt.load_latest(cfgs.RUN.ckpt_dir, "D")
        Gen.load_state_dict(g_states["state_dict"]), Dis.load_state_dict(d_states["state_dict"])
        opt.g_optimizer.load_state_dict(g_states["optimizer"]), opt.d_optimizer.load_state_dict(d_states["optimizer"])
        step = d_states["step"]
    else:
        cfgs.RUN.ckpt_dir = os.path.join(cfgs.RUN.save_dir, "checkpoints", run_name)
        os.makedirs(cfgs.RUN.ckpt_dir, exist_ok=True)
    if cfgs.RUN.distributed_data_parallel:
        Gen, Dis = DDP(Gen, broadcast_buffers=False), DDP(Dis, broadcast_buffers=False)
    loss_list_dict: dict[str, Any] = {"gen_loss": [], "dis_loss": []}
    metric_dict_during_train: dict[str, Any] = {}

    worker = WORKER(
        cfgs=cfgs,
        run_name=run_name,
        Gen=Gen,
        Gen_mapping=None,
        Gen_synthesis=None,
        Dis=Dis,
        Gen_ema=None,
        train_dataloader=train_dataloader,
        global_rank=global_rank,
        local_rank=device,
        loss_list_dict=loss_list_dict,
        metric_dict_during_train=metric_dict_during_train,
    )

    # -----------------------------------------------------------------------------
    # train GAN until "total_steps" generator updates
    # -----------------------------------------------------------------------------
    worker.prepare_train_iter(epoch_counter=0)
    history = []
    while step <= cfgs.OPTIMIZATION.total_steps:
        _, dis_acml_loss = worker.train_discriminator(current_step=step)
        gen_acml_loss = worker.train_generator(current_step=step)
        history.append({"step": step, "d_loss": dis_acml_loss.item(), "g_loss": gen_acml_loss.item()})
        if global_rank == 0 and (step + 1) % cfgs.RUN.print_freq == 0:
            print(f"step {step + 1}: Dis_loss {dis_acml_loss.item():.4f} Gen_loss {gen_acml_loss.item():.4f}")
        step += 1
        if global_rank == 0 and step % cfgs.RUN.save_freq == 0:
            worker.save(step=step)
    if global_rank == 0:
        worker.save(step=step)
    summary = {"history": history, "ckpt_dir": cfgs.RUN.ckpt_dir}
    if hasattr(worker, "rankplug"):
        summary["rankplug"] = worker.rankplug.summary()
    with open(os.path.join(cfgs.RUN.save_dir, f"final-rank{global_rank}.json"), "w") as file:
        json.dump(summary, file)
    if cfgs.RUN.distributed_data_parallel:
        # The ranks meet before they leave: a gloo rank that tore its group down while the other was still saving
        # sometimes aborted at exit ("terminate called without an active exception", 2 runs in 10 here).
        dist.barrier()
        dist.destroy_process_group()
