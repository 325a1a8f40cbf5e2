"""Results for docs/results.md: MBGAN's metric discriminator against the DCGAN loss on the digits, 3 seeds.

Both use rankplug's networks (rankplug.training.models), one critic step per generator step, Adam (2e-4, betas
(0.5, 0.999)) and batch 64 for the same number of generator steps; MBGAN replaces the critic's score by a
K = 500 embedding with the triplet loss and alpha = 20 (MATH §5). Scored on the 450 held-out digits:
digits-FID and image completion (no perceptual term for either, since MBGAN's critic gives no score).
Writes experiments/results/mbgan_vs_dcgan.json and prints the table.

    python experiments/mbgan_vs_dcgan.py                        # 3 seeds x 2000 generator steps
    python experiments/mbgan_vs_dcgan.py --seeds 0 --steps 20   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rankplug.eval.runs import evaluate_run, generate
from rankplug.report import machine_info, mean_std, save_grid
from rankplug.runs import load_stage_models, train_run
from rankplug.training import TrainConfig

HERE = Path(__file__).resolve().parent
METHODS = ("dcgan", "mbgan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000, help="generator steps")
    parser.add_argument("--work", default="/tmp/rankplug-mbgan")
    parser.add_argument("--output", default=str(HERE / "results" / "mbgan_vs_dcgan.json"))
    args = parser.parse_args()
    runs: dict[str, dict[int, dict]] = {m: {} for m in METHODS}
    for seed in args.seeds:
        for method in METHODS:
            run_dir = Path(args.work) / f"{method}-seed{seed}"
            config = TrainConfig.from_preset(None, method=method, stages=1, steps_per_stage=args.steps, seed=seed)
            result = train_run(run_dir, config, progress=False)
            seconds = result["wall_time"]  # training time over all calls (a resumed run keeps its earlier time)
            entry = evaluate_run(run_dir, perceptual_weight=0.0, progress=False)[-1]
            entry["train_seconds"] = seconds
            entry["gap_history"] = result["stages"][0]["gap"]
            runs[method][seed] = entry
            if seed == args.seeds[0]:
                models = load_stage_models(run_dir / "models-stage1.pt")
                save_grid(
                    generate(models, 64, 1234), Path(args.output).parent / f"mbgan_vs_dcgan_{method}_seed{seed}.png"
                )
            print(f"{method} seed {seed}: digits-FID {entry['digits_fid']:.2f} ({seconds:.0f} s)", flush=True)
    lines = [
        "| method | generator steps | digits-FID ↓ | completion PSNR (dB) ↑ | SSIM ↑ |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        entries = list(runs[method].values())
        fid = [e["digits_fid"] for e in entries]
        psnr = [statistics.mean(e["completion"]["psnr"]) for e in entries]
        ssim = [statistics.mean(e["completion"]["ssim"]) for e in entries]
        lines.append(f"| {method} | {args.steps} | {mean_std(fid)} | {mean_std(psnr)} | {mean_std(ssim, 3)} |")
    text = "\n".join(lines)
    print(text)
    record = {
        "command": f"python experiments/mbgan_vs_dcgan.py --seeds {' '.join(map(str, args.seeds))} --steps {args.steps}",
        "runs": {m: {str(s): e for s, e in v.items()} for m, v in runs.items()},
        "table_markdown": text,
        "machine": machine_info(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
