"""RankGAN / GoGAN stages inside a StudioGAN ``WORKER``: stage 1, then stage 2 ranked against it, in seconds on a CPU.

In a StudioGAN checkout the change is two lines in ``src/loader.py`` (docs/integrations_studiogan.md)::

    worker = WORKER(...)
    import rankplug.integrations.studiogan
    rankplug.integrations.studiogan.patch_worker(worker, **rankplug.integrations.studiogan.options_from_env())

This script makes the same call on **rankplug's stand-in of StudioGAN** (``tests/standins/studiogan/src``: the
same ``Configurations``, ``WORKER.train_discriminator`` / ``train_generator`` and checkpoint names, tiny networks,
synthetic stripes), so it runs from a clone of rankplug with nothing else, and prints what a stage-2 user wants to
see: the markers and the score ladder ``D(x) > D(G_i(z)) > D(G_{i-1}(z))``::

    python examples/studiogan_stages.py [--steps 40] [--variant rankgan|gogan] [--mixed-precision]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rankplug.integrations.studiogan import patch_worker

STANDIN = Path(__file__).resolve().parents[1] / "tests" / "standins" / "studiogan" / "src"


def stripes(count: int, size: int = 16, seed: int = 0) -> torch.utils.data.TensorDataset:
    """``count`` RGB images of diagonal stripes in ``[-1, 1]`` with label 0: an easy data set."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.linspace(0, 1, size)
    phase = torch.rand(count, 1, 1, 1, generator=generator) * 2 * math.pi
    freq = 2 + torch.randint(0, 2, (count, 1, 1, 1), generator=generator)
    images = torch.sin(2 * math.pi * freq * (u[:, None] + u[None, :]) + phase).expand(count, 3, size, size)
    return torch.utils.data.TensorDataset(images.contiguous(), torch.zeros(count, dtype=torch.long))


def make_worker(ckpt_dir: Path, *, mixed_precision: bool = False, seed: int = 0) -> Any:
    """A stand-in StudioGAN ``WORKER`` as ``loader.load_worker`` builds it (config, loader, networks, Adam)."""
    if str(STANDIN) not in sys.path:
        sys.path.insert(0, str(STANDIN))
    import config
    import models.model as model
    from worker import WORKER

    torch.manual_seed(seed)
    cfgs = config.Configurations(None)
    cfgs.update_cfgs(
        {"mixed_precision": mixed_precision, "distributed_data_parallel": False, "ckpt_dir": str(ckpt_dir)}
    )
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    loader = torch.utils.data.DataLoader(
        stripes(256, seed=seed), batch_size=cfgs.OPTIMIZATION.batch_size, shuffle=True, drop_last=True
    )
    sizes = {"img_size": 16, "img_channels": 3, "num_classes": 1}
    Gen, Dis = model.Generator(z_dim=cfgs.MODEL.z_dim, **sizes), model.Discriminator(**sizes)
    opt = cfgs.OPTIMIZATION
    opt.g_optimizer = torch.optim.Adam(Gen.parameters(), lr=opt.g_lr, betas=(opt.beta1, opt.beta2))
    opt.d_optimizer = torch.optim.Adam(Dis.parameters(), lr=opt.d_lr, betas=(opt.beta1, opt.beta2))
    return WORKER(
        cfgs=cfgs, run_name=ckpt_dir.name, Gen=Gen, Gen_mapping=None, Gen_synthesis=None, Dis=Dis, Gen_ema=None,
        train_dataloader=loader, global_rank=0, local_rank=torch.device("cpu"),
    )  # fmt: skip


def train_stage(worker: Any, steps: int) -> dict[str, Any]:
    """``steps`` of StudioGAN's loop (critic first, as ``OPTIMIZATION.d_first``), then a checkpoint."""
    worker.prepare_train_iter(epoch_counter=0)
    for step in range(steps):
        worker.train_discriminator(current_step=step)
        worker.train_generator(current_step=step)
    worker.save(step=steps)
    return worker.rankplug.summary()


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per stage")
    parser.add_argument("--variant", choices=("rankgan", "gogan"), default="rankgan")
    parser.add_argument("--mixed-precision", action="store_true", help="StudioGAN's -mpc (bfloat16 on the CPU)")
    parser.add_argument("--run-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="rankplug-studiogan-"))

    print("stage 1: margin loss for D, WGAN loss for G")
    worker = make_worker(run_dir / "stage1", mixed_precision=args.mixed_precision)
    patch_worker(worker)
    stage1 = train_stage(worker, args.steps)

    print(f"stage 2: {args.variant} against the frozen stage 1 ({run_dir / 'stage1'})")
    worker = make_worker(run_dir / "stage2", mixed_precision=args.mixed_precision, seed=1)
    patch_worker(worker, previous=run_dir / "stage1", variant=args.variant, clamp_weight=1.0)
    stage2 = train_stage(worker, args.steps)

    for name, summary in (("stage 1", stage1), ("stage 2", stage2)):
        scores = ", ".join(f"{key} {value:.3f}" for key, value in summary["latest"].items())
        print(f"{name}: mean scores of the last critic round: {scores}")
    if stage2["markers"] is not None:
        print(f"markers (m_high, m_low): ({stage2['markers'][0]:.3f}, {stage2['markers'][1]:.3f})")
    return {"stage 1": stage1, "stage 2": stage2}


if __name__ == "__main__":
    main()
