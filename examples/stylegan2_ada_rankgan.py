"""RankGAN stages with a StyleGAN2-ADA-style loop on tiny networks: stage 1, then stage 2 ranked against it.

Runs on a CPU in well under a minute and prints the losses, the augmentation probability and the score
separation ``mean D(x) - mean D(G(z))`` (GoGAN's gap) of each stage. It uses the compact loop next to it
(``examples/stylegan2_ada_compact_loop.py``); with the NVlabs repository, the same loss class runs inside its
``train.py`` instead (docs/integrations_stylegan2_ada.md).

    python examples/stylegan2_ada_rankgan.py [--iterations 60] [--variant rankgan|gogan]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

# examples/ is on sys.path when this script runs: the compact loop is the file next to it.
from stylegan2_ada_compact_loop import train


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=60, help="iterations per stage")
    parser.add_argument("--variant", choices=("rankgan", "gogan"), default="rankgan")
    parser.add_argument("--run-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny networks: one thread is fastest and leaves the machine usable
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="rankplug-stylegan2-ada-"))
    common = dict(iterations=args.iterations, batch=8, batch_gpu=8, log_every=20, ada_target=0.6, ada_kimg=2.0)

    print("stage 1: margin loss for D, WGAN loss for G")
    stage1 = train(run_dir=run_dir / "stage1", loss_kwargs={"r1_gamma": 1.0}, **common)

    # Stage 2 resumes from the stage-1 snapshot (as upstream's --resume does) and ranks against it.
    print(f"stage 2: {args.variant} against the frozen stage 1 ({stage1['snapshot']})")
    loss_kwargs = {"r1_gamma": 1.0, "variant": args.variant, "clamp_weight": 1.0}
    snapshot = stage1["snapshot"]
    stage2 = train(run_dir=run_dir / "stage2", resume=snapshot, previous=snapshot, loss_kwargs=loss_kwargs, **common)

    for name, out in (("stage 1", stage1), ("stage 2", stage2)):
        last = out["history"][-1]
        gap = last["Loss/scores/real"] - last["Loss/scores/fake"]
        print(
            f"{name}: D loss {last['Loss/D/loss']:.3f}, G loss {last['Loss/G/loss']:.3f}, "
            f"separation mean D(x) - mean D(G(z)) = {gap:.3f}, augment p = {out['augment_p']:.3f}"
        )
    print(f"snapshots and stats.jsonl in {run_dir}")
    return {"stage 1": stage1, "stage 2": stage2}


if __name__ == "__main__":
    main()
