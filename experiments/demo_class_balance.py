"""Issue 12's search for an even class histogram in the demo: the demo's RankGAN with one setting changed.

Each variant trains the demo's RankGAN (rankplug.app.demo.DEMO: 8x8 digits, width 64, 3 stages of 400 generator
steps, eps = 10, lambda_clamp = 1, seed 0, one torch thread) with the change named, then records per stage the
reference classifier's histogram of 1,000 samples and digits-FID. Appends one JSON line per variant to
experiments/results/demo_class_balance.jsonl (``sec``: wall time, measured while other work shared the cores).

    python experiments/demo_class_balance.py                 # every variant below
    python experiments/demo_class_balance.py base s700       # some of them
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from rankplug.app.demo import DEMO, DEMO_CLAMP, DEMO_MARGIN, class_histograms
from rankplug.app.eval.commands import evaluate_run
from rankplug.app.runs import train_run
from rankplug.app.training.config import TrainConfig

OUT = Path(__file__).resolve().parent / "results" / "demo_class_balance.jsonl"
WORK = Path("/tmp/rankplug-demo-class-balance")
VARIANTS: dict[str, dict[str, object]] = {
    "base": {},
    "ema999": {"ema": 0.999},
    "ema99": {"ema": 0.99},
    "nz64": {"nz": 64},
    "batch128_ema": {"batch_size": 128, "ema": 0.999},
    "s700": {"steps_per_stage": 700},
    "w128": {"width": 128},
    "nc2s800": {"n_critic": 2, "steps_per_stage": 800},
    "lrg4": {"lr_g": 4e-4},
}


def main() -> None:
    torch.set_num_threads(1)
    for name in sys.argv[1:] or list(VARIANTS):
        started = time.time()
        settings = {**DEMO, **VARIANTS[name]}
        config = TrainConfig(method="rankgan", margin=DEMO_MARGIN, clamp_weight=DEMO_CLAMP, seed=0, **settings)
        run_dir = WORK / name
        train_run(run_dir, config, progress=False, echo=lambda message: None)
        histograms = class_histograms(run_dir, 1000)
        stages = evaluate_run(
            run_dir, progress=False, echo=lambda message: None, completion_images=8, completion_steps=2
        )
        record = {
            "name": name,
            "hist": histograms,
            "fid": [entry.get("digits_fid") for entry in stages],
            "sec": time.time() - started,
        }
        print(json.dumps(record), flush=True)
        with OUT.open("a") as out:
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
