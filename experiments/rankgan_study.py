"""RankGAN's own claim, its own way: digits-FID falling over stages with the paper's settings, lambda_clamp swept.

RankGAN (Sec. 4-5, Table 1) claims that each stage improves on the last. This study trains the trainer's
``rankgan`` preset (Algorithm 1: Adam (0, 0.99), lr 5e-5 for D and 1e-4 for G, 5 critic steps; the VAE stage 0
and the encoder; lambda_gp = 10; stages that end when the gap plateaus for 10 records) on the digits with
``lambda_clamp`` in {1, 10, 100, 1000}, and logs the rank and clamp hinges' activity per stage (MATH §3, Eq. 4
and 6). Stage 1 does not depend on ``lambda_clamp`` and every run is deterministic (one torch thread, the same
seed), so the four arms of a seed share one stage-1 network bit for bit (checked: the script records each arm's
stage-1 digits-FID, which must agree); the stage comparisons are paired by seed.

The baseline is WGAN-GP with the same optimiser and network, checkpointed every ``steps/2`` generator steps for
longer than the RankGAN runs, so that it can be compared at equal generator steps and at equal CPU time.

    python experiments/rankgan_study.py                        # 5 seeds, the full sweep (about 35 min on 2 cores)
    python experiments/rankgan_study.py --seeds 0 --steps 20 --output /tmp/r.json   # a smoke run
    python experiments/rankgan_study.py --size 32 --data cifar10 --data-root DIR --device cuda --width 128 \
        --steps 5000   # CIFAR-10 at 32 px on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from _study import (
    add_common_arguments,
    command_line,
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

CLAMPS = (1.0, 10.0, 100.0, 1000.0)


def common_settings(args: argparse.Namespace) -> dict[str, Any]:
    data = data_settings(args)
    return dict(
        data,
        size=args.size,
        width=args.width,
        steps_per_stage=args.steps,
        log_every=max(1, args.steps // 40),
        device=args.device,
    )


def rankgan_config(args: argparse.Namespace, seed: int, clamp: float, **extra: Any) -> TrainConfig:
    if args.beta2 is not None:
        extra["beta2"] = args.beta2
    return TrainConfig.from_preset(
        "rankgan", seed=seed, stages=3, clamp_weight=clamp, margin=args.margin, **common_settings(args), **extra
    )


def baseline_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    """WGAN-GP, Algorithm 1's optimiser, checkpoints every steps/2 for 4.5x the steps of one stage (1.5 runs)."""
    settings = common_settings(args)
    half = args.steps // 2
    settings.update(steps_per_stage=half, log_every=max(1, half // 20))
    preset = TrainConfig.from_preset("rankgan")
    return TrainConfig(
        method="wgan-gp",
        seed=seed,
        stages=9,
        optimizer=preset.optimizer,
        lr_d=preset.lr_d,
        lr_g=preset.lr_g,
        beta1=preset.beta1,
        beta2=preset.beta2,
        n_critic=preset.n_critic,
        **settings,
    )


def ladder(run_dir: Path, images: int = 256) -> dict[int, dict[str, float]]:
    """Per stage >= 2, with that stage's final critic D_i: the mean scores D_i(x), D_i(G_i(z)), D_i(G_{i-1}(z))
    (the same ``z`` for both generators) and the fraction of samples whose generator hinge
    ``[D_i(x) - D_i(G_i(z))]_+`` (Eq. 4, generator) is still active, i.e. whose fake scores below its real."""
    import torch

    from rankplug.app.eval.commands import held_out_images
    from rankplug.app.runs import load_stage_models, read_run_config, stage_files

    config = read_run_config(run_dir)
    files = dict(stage_files(run_dir))
    real = held_out_images(config, images)
    z = torch.Generator().manual_seed(99)
    noise = torch.randn(images, config.nz, generator=z)
    out = {}
    for stage in sorted(files):
        if stage < 2:
            continue
        now, before = (load_stage_models(files[s], config=config) for s in (stage, stage - 1))
        with torch.no_grad():
            d_real = now.discriminator(real).flatten()
            d_fake = now.discriminator(now.raw_generator(noise)).flatten()
            d_prev = now.discriminator(before.raw_generator(noise)).flatten()
        out[stage] = {
            "real": float(d_real.mean()),
            "fake": float(d_fake.mean()),
            "prev_fake": float(d_prev.mean()),
            "generator_hinge_active": float((d_real - d_fake > 0).float().mean()),
        }
    return out


def one_run(name: str, seed: int, config: TrainConfig, work: str) -> dict[str, Any]:
    run_dir = Path(work) / f"{name}-seed{seed}"
    summary = train_cached(run_dir, config)
    result = {"name": name, "seed": seed, "train": summary, "scores": stage_scores(run_dir)}
    if config.method == "rankgan":
        result["ladder"] = ladder(run_dir)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--clamps", type=float, nargs="+", default=list(CLAMPS))
    parser.add_argument("--steps", type=int, default=400, help="the most generator steps per stage")
    parser.add_argument("--margin", type=float, default=10.0, help="stage 1's eps (see docs/results.md)")
    add_common_arguments(parser, "rankgan")
    parser.add_argument("--beta2", type=float, default=None, help="Adam's beta2 for RankGAN (default: the preset's)")
    parser.add_argument("--no-baseline", action="store_true", help="train the RankGAN arms only")
    parser.add_argument("--reanalyse", action="store_true", help="re-analyse the runs recorded in --output")
    args = parser.parse_args()

    tasks = (
        [] if args.no_baseline else [("baseline", seed, baseline_config(args, seed), args.work) for seed in args.seeds]
    )
    suffix = "" if args.beta2 is None else f"-beta2-{args.beta2:g}"
    tasks += [
        (f"clamp{clamp:g}{suffix}", seed, rankgan_config(args, seed, clamp), args.work)
        for clamp in args.clamps
        for seed in args.seeds
    ]
    version = None
    if args.reanalyse:  # the runs recorded in --output, analysed again (no training, no scoring)
        recorded = json.loads(Path(args.output).read_text())
        runs = [_int_keys(run) for run in recorded["runs"]]
        version = {key: recorded.get(key) for key in ("commit", "library_modified")}
    else:
        runs = run_tasks(tasks, one_run, args.jobs)
    by = {(r["name"], r["seed"]): r for r in runs}
    analysis = analyse(args, by, suffix)
    print(analysis["text"])
    record = {
        "seeds": args.seeds,
        "settings": {name: cfg.to_dict() for name, seed, cfg, _work in tasks if seed == args.seeds[0]},
        "runs": runs,
        "analysis": analysis,
    }
    command = command_line("rankgan_study.py", args, skip=("reanalyse",))
    write_record(Path(args.output), record, command, version)


def _int_keys(run: dict[str, Any]) -> dict[str, Any]:
    """A run read back from the JSON, with its per-stage keys as ints again."""
    for key in ("scores", "ladder"):
        if key in run:
            run[key] = {int(stage): value for stage, value in run[key].items()}
    return run


def _fid(run: dict[str, Any], stage: int) -> float:
    return float(run["scores"][stage]["digits_fid"])


def _baseline_at(run: dict[str, Any], *, steps: int | None = None, cpu: float | None = None) -> tuple[float, int]:
    """The baseline's digits-FID at the checkpoint nearest ``steps`` generator steps (or ``cpu`` seconds)."""
    stages = run["train"]["stages"]
    key = "generator_steps_end" if steps is not None else "cpu_seconds_end"
    target = steps if steps is not None else cpu
    best = min(stages, key=lambda s: abs(s[key] - target))  # type: ignore[operator]
    return _fid(run, best["stage"]), int(best["generator_steps_end"])


def analyse(args: argparse.Namespace, by: dict[tuple[str, int], dict[str, Any]], suffix: str = "") -> dict[str, Any]:
    seeds = args.seeds
    baseline = all(("baseline", seed) in by for seed in seeds)
    out: dict[str, Any] = {"per_clamp": {}}
    lines = [
        "| lambda_clamp | stage 1 | stage 2 | stage 3 | stage 2 - 1 | stage 3 - 1 | WGAN-GP, equal steps | "
        "WGAN-GP, equal CPU time | rank hinge active (stage 2, 3; last half) | clamp active (stage 2, 3) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for clamp in args.clamps:
        runs = [by[(f"clamp{clamp:g}{suffix}", s)] for s in seeds]
        fids = {stage: [_fid(r, stage) for r in runs] for stage in (1, 2, 3) if all(stage in r["scores"] for r in runs)}
        last = max(fids)
        equal_steps, equal_cpu = [], []
        for seed, run in zip(seeds, runs):
            if not baseline:
                continue
            base = by[("baseline", seed)]
            end = run["train"]["stages"][-1]
            equal_steps.append(_baseline_at(base, steps=end["generator_steps_end"]))
            equal_cpu.append(_baseline_at(base, cpu=end["cpu_seconds_end"]))
        hinges = {
            stage: {
                hinge: t_interval([r["train"]["stages"][stage - 1]["hinges"][hinge]["last_half"] for r in runs])
                for hinge in ("rank", "clamp")
                if all(hinge in r["train"]["stages"][stage - 1]["hinges"] for r in runs)
            }
            for stage in (2, 3)
            if stage <= len(runs[0]["train"]["stages"])
        }
        entry = {
            "digits_fid": {stage: t_interval(v) for stage, v in fids.items()},
            "stage1_identical_across_arms": None,
            "diff_vs_stage1": {stage: paired_difference(fids[stage], fids[1]) for stage in fids if stage > 1},
            "diff_vs_wgan_per_stage_equal_steps": {
                stage: paired_difference(
                    fids[stage],
                    [
                        _baseline_at(
                            by[("baseline", seed)], steps=r["train"]["stages"][stage - 1]["generator_steps_end"]
                        )[0]
                        for seed, r in zip(seeds, runs)
                    ],
                )
                for stage in fids
            }
            if baseline
            else None,
            "diff_vs_wgan_equal_steps": paired_difference(fids[last], [f for f, _ in equal_steps])
            if baseline
            else None,
            "diff_vs_wgan_equal_cpu": paired_difference(fids[last], [f for f, _ in equal_cpu]) if baseline else None,
            "ladder_end_of_stage": {
                stage: {k: t_interval([r["ladder"][stage][k] for r in runs]) for k in runs[0]["ladder"][stage]}
                for stage in (2, 3)
                if all(stage in r.get("ladder", {}) for r in runs)
            },
            "wgan_equal_steps_at": [s for _, s in equal_steps],
            "wgan_equal_cpu_at": [s for _, s in equal_cpu],
            "steps_per_stage": [[s["steps"] for s in r["train"]["stages"]] for r in runs],
            "markers": [[s["markers"] for s in r["train"]["stages"]] for r in runs],
            "hinges_last_half": hinges,
        }
        out["per_clamp"][f"{clamp:g}"] = entry

        def cell(stage: int, hinge: str, hinges: dict[int, dict[str, Any]] = hinges) -> str:
            value = hinges.get(stage, {}).get(hinge)
            return "-" if value is None else f"{100 * value['mean']:.0f} %"

        lines.append(
            f"| {clamp:g} | "
            + " | ".join(fmt_interval(t_interval(fids[s]), 1) if s in fids else "-" for s in (1, 2, 3))
            + " | "
            + " | ".join(fmt_interval(entry["diff_vs_stage1"][s], 1) if s in fids else "-" for s in (2, 3))
            + " | "
            + " | ".join(
                "-" if entry[key] is None else fmt_interval(entry[key], 1)
                for key in ("diff_vs_wgan_equal_steps", "diff_vs_wgan_equal_cpu")
            )
            + f" | {cell(2, 'rank')}, {cell(3, 'rank')} | {cell(2, 'clamp')}, {cell(3, 'clamp')} |"
        )
    stage1 = {f"{c:g}": [_fid(by[(f"clamp{c:g}{suffix}", s)], 1) for s in seeds] for c in args.clamps}
    identical = all(
        math.isclose(a, b, rel_tol=0, abs_tol=1e-9) for values in zip(*stage1.values()) for a in values for b in values
    )
    for entry in out["per_clamp"].values():
        entry["stage1_identical_across_arms"] = identical
    out["stage1_fid_per_arm"] = stage1
    if all(e["diff_vs_wgan_per_stage_equal_steps"] for e in out["per_clamp"].values()):
        lines += [
            "",
            "RankGAN minus WGAN-GP at the end of each stage, at equal generator steps (the baseline's checkpoint "
            "nearest the stage's end; digits-FID, paired by seed):",
            "",
            "| lambda_clamp | stage 1 | stage 2 | stage 3 |",
            "|---|---|---|---|",
        ]
        for key, entry in out["per_clamp"].items():
            per = entry["diff_vs_wgan_per_stage_equal_steps"]
            lines.append(
                f"| {key} | " + " | ".join(fmt_interval(per[s], 1) if s in per else "-" for s in (1, 2, 3)) + " |"
            )
    lines += [
        "",
        "The ladder at the end of stages 2 and 3, scored by that stage's final critic on 256 held-out digits and "
        "256 z (mean over seeds): D_i(x) / D_i(G_i(z)) / D_i(G_{i-1}(z)), and the share of samples whose "
        "generator hinge [D_i(x) - D_i(G_i(z))]_+ is still active.",
        "",
        "| lambda_clamp | stage 2 ladder | generator hinge active | stage 3 ladder | generator hinge active |",
        "|---|---|---|---|---|",
    ]
    for key, entry in out["per_clamp"].items():
        cells = []
        for stage in (2, 3):
            rung = entry["ladder_end_of_stage"].get(stage)
            if rung is None:
                cells += ["-", "-"]
                continue
            cells.append(" / ".join(f"{rung[k]['mean']:.2f}" for k in ("real", "fake", "prev_fake")))
            cells.append(f"{100 * rung['generator_hinge_active']['mean']:.0f} %")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Differences are paired by seed (mean [95 % t interval]); a negative FID difference is an improvement. "
        f"Stage 1 shared bit for bit across the arms of each seed: {identical}.",
    ]
    out["text"] = "\n".join(lines)
    return out


if __name__ == "__main__":
    main()
