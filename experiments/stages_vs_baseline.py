"""Results for docs/results.md: RankGAN stage 1 -> 2 -> 3 against the same-compute WGAN-GP baseline, 3 seeds.

Each seed is one `rankplug demo` (rankplug.demo.run_demo) with a fixed number of steps per stage, so the
runs do not depend on the machine's speed. Writes experiments/results/stages_vs_baseline.json and prints the
Markdown tables (mean +- std over the seeds).

    python experiments/stages_vs_baseline.py                       # 3 seeds x 300 steps/stage, ~4 min/seed idle
    python experiments/stages_vs_baseline.py --seeds 0 --steps 20  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rankplug.demo import run_demo
from rankplug.report import machine_info, mean_std

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="generator steps per stage")
    parser.add_argument("--work", default="/tmp/rankplug-stages", help="where the demo directories go")
    parser.add_argument("--output", default=str(HERE / "results" / "stages_vs_baseline.json"))
    args = parser.parse_args()
    per_seed = {}
    for seed in args.seeds:
        metrics = run_demo(Path(args.work) / f"seed{seed}", seed=seed, steps_per_stage=args.steps, progress=False)
        per_seed[seed] = metrics
    rows = []
    header = "| run | stage | generator steps | digits-FID ↓ | completion PSNR (dB) ↑ | SSIM ↑ | gap Γ (end) |"
    rows += [header, "|---|---|---|---|---|---|---|"]
    first = next(iter(per_seed.values()))
    summary = {}
    for run, content in first["runs"].items():
        for k, stage_entry in enumerate(content["stages"]):
            stage = stage_entry["stage"]
            fid = [m["runs"][run]["stages"][k]["digits_fid"] for m in per_seed.values()]
            psnr = [sum(e := m["runs"][run]["stages"][k]["completion"]["psnr"]) / len(e) for m in per_seed.values()]
            ssim = [sum(e := m["runs"][run]["stages"][k]["completion"]["ssim"]) / len(e) for m in per_seed.values()]
            gap = [m["runs"][run]["gap_per_stage"][k]["gap_end"] for m in per_seed.values()]
            summary[f"{run}/stage{stage}"] = {"digits_fid": fid, "psnr_mean": psnr, "ssim_mean": ssim, "gap_end": gap}
            rows.append(
                f"| {run} | {stage} | {stage_entry['generator_steps']} | {mean_std(fid)} | {mean_std(psnr)} "
                f"| {statistics.mean(ssim):.3f} ± {statistics.stdev(ssim) if len(ssim) > 1 else 0:.3f} "
                f"| {mean_std(gap)} |"
            )
    coverage_rows = [
        "| run | stage | "
        + " | ".join(f"{100 * c:g}%" for c in first["runs"]["rankgan"]["stages"][0]["completion"]["coverages"])
        + " |"
    ]
    coverage_rows.append("|---|---|" + "---|" * len(first["runs"]["rankgan"]["stages"][0]["completion"]["coverages"]))
    for run, content in first["runs"].items():
        for k, stage_entry in enumerate(content["stages"]):
            cells = []
            for c in range(len(stage_entry["completion"]["coverages"])):
                p = [m["runs"][run]["stages"][k]["completion"]["psnr"][c] for m in per_seed.values()]
                s = [m["runs"][run]["stages"][k]["completion"]["ssim"][c] for m in per_seed.values()]
                cells.append(f"{statistics.mean(p):.2f} / {statistics.mean(s):.3f}")
            coverage_rows.append(f"| {run} | {stage_entry['stage']} | " + " | ".join(cells) + " |")
    floor = first["reference"]["digits_fid_train_vs_held_out"]
    text = "\n".join(rows) + f"\n\nReal training digits vs held-out digits (the floor): digits-FID {floor:.2f}\n\n"
    text += "\n".join(coverage_rows)
    print(text)
    record = {
        "command": "python experiments/stages_vs_baseline.py "
        + " ".join(f"--seeds {' '.join(map(str, args.seeds))} --steps {args.steps}".split()),
        "seeds": args.seeds,
        "steps_per_stage": args.steps,
        "summary": summary,
        "tables_markdown": text,
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "machine": machine_info(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
