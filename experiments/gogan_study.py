"""GoGAN's own claim, its own way: image completion, stage 2 > stage 1 > WGAN in PSNR / SSIM (GoGAN Tables 2-5).

GoGAN (Sec. 6.2) completes occluded faces by a latent search (Eq. 30-33) and reports that its stage 2 beats
its stage 1, which beats WGAN, at every occlusion from 9 % to 81 %. This study trains, per seed, the trainer's
``gogan`` preset (GoGAN Sec. 5: RMSprop, lr 5e-5, 5 critic steps, eps = 1, lambda_1 = 1, lambda_2 = 0.5; the
gradient penalty kept, since rankplug's critic is not clipped) for two stages, and a WGAN-GP run with the same
optimiser and network for the same generator steps, checkpointed at the end of each stage length. Every model
completes the same held-out digits from the same starting ``z`` (seed 0), with the search of
:func:`rankplug.app.eval.completion_table` (RMSprop, 100 steps, perceptual weight 0.1). Differences are paired by
seed; the table follows Table 2's layout (one row per model, one column per occlusion).

    python experiments/gogan_study.py                  # 5 seeds at 16x16 (about 20 CPU-minutes)
    python experiments/gogan_study.py --seeds 0 --steps 20 --output /tmp/g.json   # a smoke run
    python experiments/gogan_study.py --data folder --data-root CELEBA_DIR --size 64 --width 128 \
        --steps 5000 --device cuda   # CelebA at 64 px on a GPU
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _study import (
    add_common_arguments,
    command_line,
    completion_scores,
    data_settings,
    fmt_interval,
    paired_difference,
    run_tasks,
    stage_scores,
    t_interval,
    train_cached,
    write_record,
)

from rankplug.app.training import TrainConfig

MODELS = ("WGAN-GP (stage-1 steps)", "WGAN-GP (stage-2 steps)", "GoGAN stage 1", "GoGAN stage 2")


def configs(args: argparse.Namespace, seed: int) -> dict[str, TrainConfig]:
    data = data_settings(args)
    common = dict(
        data,
        seed=seed,
        stages=2,
        size=args.size,
        width=args.width,
        steps_per_stage=args.steps,
        log_every=max(1, args.steps // 40),
        device=args.device,
    )
    gogan = TrainConfig.from_preset("gogan", **common)
    wgan = TrainConfig(
        method="wgan-gp",
        optimizer=gogan.optimizer,
        lr_d=gogan.lr_d,
        lr_g=gogan.lr_g,
        batch_size=gogan.batch_size,
        n_critic=gogan.n_critic,
        **common,
    )
    return {"gogan": gogan, "wgan": wgan}


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": seed}
    for name, config in configs(args, seed).items():
        run_dir = Path(args.work) / f"{name}-seed{seed}"
        out[name] = {
            "train": train_cached(run_dir, config),
            "scores": stage_scores(run_dir),
            "completion": {
                stage: completion_scores(run_dir, stage, args.images, args.search_steps) for stage in (1, 2)
            },
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=400, help="generator steps per stage")
    parser.add_argument("--images", type=int, default=200, help="held-out images completed per model")
    parser.add_argument("--search-steps", type=int, default=100, help="RMSprop steps of the latent search")
    add_common_arguments(parser, "gogan", size=16, width=32)
    args = parser.parse_args()
    per_seed = run_tasks([(seed, args) for seed in args.seeds], one_seed, args.jobs)
    analysis = analyse(per_seed)
    print(analysis["text"])
    command = command_line("gogan_study.py", args)
    settings = {name: config.to_dict() for name, config in configs(args, args.seeds[0]).items()}
    write_record(
        Path(args.output),
        {"seeds": args.seeds, "settings": settings, "per_seed": per_seed, "analysis": analysis},
        command,
    )


def _model(seed_record: dict[str, Any], model: str) -> dict[str, Any]:
    run = "wgan" if model.startswith("WGAN") else "gogan"
    stage = 2 if "2" in model else 1
    return seed_record[run]["completion"][stage]


def analyse(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    coverages = _model(per_seed[0], MODELS[0])["coverages"]
    out: dict[str, Any] = {"coverages": coverages, "models": {}, "differences": {}}
    head = "| model | " + " | ".join(f"{100 * c:.0f} %" for c in coverages) + " |"
    rule = "|---|" + "---|" * len(coverages)
    lines = ["PSNR (dB) / SSIM of the completed image, mean over seeds:", "", head, rule]
    for model in MODELS:
        psnr = [[_model(r, model)["psnr"][k] for r in per_seed] for k in range(len(coverages))]
        ssim = [[_model(r, model)["ssim"][k] for r in per_seed] for k in range(len(coverages))]
        out["models"][model] = {"psnr": [t_interval(v) for v in psnr], "ssim": [t_interval(v) for v in ssim]}
        cells = [f"{t_interval(p)['mean']:.2f} / {t_interval(s)['mean']:.3f}" for p, s in zip(psnr, ssim)]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    pairs = {
        "stage 2 - stage 1": ("GoGAN stage 2", "GoGAN stage 1"),
        "stage 1 - WGAN-GP (same steps)": ("GoGAN stage 1", "WGAN-GP (stage-1 steps)"),
        "stage 2 - WGAN-GP (same steps)": ("GoGAN stage 2", "WGAN-GP (stage-2 steps)"),
    }
    for metric, digits in (("psnr", 2), ("ssim", 3)):
        lines += ["", f"Paired differences in {metric.upper()} (mean [95 % t interval] over seeds):", "", head, rule]
        for label, (a, b) in pairs.items():
            diffs = [
                paired_difference(
                    [_model(r, a)[metric][k] for r in per_seed], [_model(r, b)[metric][k] for r in per_seed]
                )
                for k in range(len(coverages))
            ]
            out["differences"].setdefault(metric, {})[label] = diffs
            lines.append(f"| {label} | " + " | ".join(fmt_interval(d, digits) for d in diffs) + " |")
    fids = {
        model: t_interval(
            [
                r["wgan" if model.startswith("WGAN") else "gogan"]["scores"][2 if "2" in model else 1]["digits_fid"]
                for r in per_seed
            ]
        )
        for model in MODELS
    }
    out["digits_fid"] = fids
    lines += ["", "digits-FID: " + "; ".join(f"{m} {fmt_interval(v, 1)}" for m, v in fids.items())]
    hinges = {
        key: t_interval([r["gogan"]["train"]["stages"][1]["hinges"][key]["last_half"] for r in per_seed])
        for key in ("gogan_disc", "gogan_rank")
    }
    out["stage2_hinges_last_half"] = hinges
    lines += [
        "GoGAN stage 2 hinge activity (last half of the stage): "
        + "; ".join(f"{k} {100 * v['mean']:.0f} %" for k, v in hinges.items())
    ]
    out["text"] = "\n".join(lines)
    return out


if __name__ == "__main__":
    main()
