"""Programs that tests/stages/test_manager.py runs in fresh processes (resume, crash, torch.distributed markers).

Usage: python worker.py COMMAND DIRECTORY [ARGS]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

import rankplug
from rankplug.functional import gradient_penalty
from rankplug.stages import checkpoint

NZ = 4


def build(seed: int) -> tuple[rankplug.StageManager, dict]:
    torch.manual_seed(seed)
    generator = nn.Sequential(nn.Linear(NZ, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8))
    discriminator = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.0, 0.99))
    manager = rankplug.StageManager(generator, discriminator, latent_shape=(NZ,))
    manager.register("opt_g", opt_g)
    manager.register("opt_d", opt_d)
    return manager, {"g": opt_g, "d": opt_d}


def real_batch(n: int = 16) -> torch.Tensor:
    return torch.randn(n, 8) * 0.5 + 3.0


def train(manager: rankplug.StageManager, optimizers: dict, steps: int) -> None:
    generator, discriminator = manager.generator, manager.discriminator
    rank = rankplug.StageRankLoss(clamp_weight=1.0)
    for step in range(steps):
        real = real_batch()
        z = manager.sample_latent(real.shape[0])
        fake = generator(z).detach()
        if manager.previous is None:
            loss_d = rankplug.functional.hinge_margin_loss(discriminator(real), discriminator(fake))
        else:
            prev_fake = manager.previous.generator(z)
            m_high, m_low = manager.markers
            loss_d = rank(
                discriminator(real), discriminator(fake), discriminator(prev_fake), m_high=m_high, m_low=m_low
            )
        loss_d = loss_d + gradient_penalty(discriminator, real, fake)
        optimizers["d"].zero_grad()
        loss_d.backward()
        optimizers["d"].step()
        manager.record(discriminator(real), discriminator(fake))
        if step % 3:  # three critic steps per generator step
            continue
        loss_g = -discriminator(generator(manager.sample_latent(real.shape[0]))).mean()
        optimizers["g"].zero_grad()
        loss_g.backward()
        optimizers["g"].step()


def to_stage_two(manager: rankplug.StageManager, optimizers: dict) -> None:
    train(manager, optimizers, 60)
    manager.advance()
    manager.compute_markers([real_batch() for _ in range(3)])


def snapshot(manager: rankplug.StageManager) -> dict:
    state = manager.state_dict()
    return {
        "live": state["live"],
        "previous": state["previous"],
        "registered": state["registered"],
        "markers": state["markers"],
        "history": state["history"],
        "next": torch.randn(4),
    }


def main() -> None:
    command, directory = sys.argv[1], Path(sys.argv[2])
    if command == "uninterrupted":  # stage 1, then 2k steps of stage 2
        k = int(sys.argv[3])
        manager, optimizers = build(0)
        to_stage_two(manager, optimizers)
        train(manager, optimizers, 2 * k)
        torch.save(snapshot(manager), directory / "uninterrupted.pt")
    elif command == "first_half":
        k = int(sys.argv[3])
        manager, optimizers = build(0)
        to_stage_two(manager, optimizers)
        train(manager, optimizers, k)
        manager.save(directory)
    elif command == "second_half":  # a fresh process, different seed: everything must come from the checkpoint
        k = int(sys.argv[3])
        manager, optimizers = build(12345)
        manager.load(directory)
        train(manager, optimizers, k)
        torch.save(snapshot(manager), directory / "resumed.pt")
    elif command == "slow_save":  # save a good checkpoint, train on, then save again slowly (to be killed)
        manager, optimizers = build(0)
        to_stage_two(manager, optimizers)
        manager.save(directory)
        torch.save(snapshot(manager), directory / "good.pt")
        train(manager, optimizers, 3)
        checkpoint.CHUNK_BYTES = 64
        original = checkpoint._write_chunks

        def slow(handle, data):
            (directory / "saving").touch()
            for start in range(0, len(data), 64):
                handle.write(data[start : start + 64])
                handle.flush()
                time.sleep(0.002)

        checkpoint._write_chunks = slow
        manager.save(directory)
        checkpoint._write_chunks = original
        (directory / "finished").touch()
    elif command == "load_snapshot":
        manager, optimizers = build(999)
        manager.load(directory)
        torch.save(snapshot(manager), directory / "loaded.pt")
    elif command == "markers":  # under torchrun: each rank scores its own shard, of unequal sizes
        import torch.distributed as dist

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        manager, _ = build(0)
        # DDP-wrapped live networks, as under torchrun; rank 1 perturbs its copy so that only the broadcast in
        # advance() can make the frozen copies identical.
        manager.generator = nn.parallel.DistributedDataParallel(manager.generator)
        manager.discriminator = nn.parallel.DistributedDataParallel(manager.discriminator)
        if rank == 1:
            with torch.no_grad():
                manager.discriminator.module[0].weight.add_(1.0)
        manager.advance()
        checksum = sum(float(t.double().sum()) for t in manager.previous.discriminator.state_dict().values())
        data = torch.load(directory / "data.pt")
        shard = [batch for index, batch in enumerate(data) if index % world == rank]
        # Latents are drawn per rank; fix them so the test can redo the computation in one process.
        latents = torch.load(directory / "latents.pt")
        mine = torch.cat([latents[index] for index, _ in enumerate(data) if index % world == rank])
        out = {}
        for statistic in ("mean", "median"):
            iterator = iter(mine.split([b.shape[0] for b in shard]))
            manager.sample_latent = lambda n, real=None, it=iterator: next(it)  # type: ignore[method-assign]
            out[statistic] = manager.compute_markers(shard, statistic=statistic)
        out["checksum"] = checksum
        torch.save(out, directory / f"markers-rank{rank}.pt")
        dist.barrier()  # the ranks leave together (a lone gloo exit can abort)
        dist.destroy_process_group()
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
