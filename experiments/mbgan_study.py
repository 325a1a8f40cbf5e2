"""MBGAN's own claim, its own way: a linear SVM on the critic's features, against DCGAN's critic (MBGAN Table 1).

MBGAN (Sec. 5) claims that its metric-learning critic learns features as good as DCGAN's (CIFAR-10: 0.768
against 0.758; SVHN: 0.877 against 0.890) with "no visual difference" in the samples, and that the
data-dependent margin needs alpha = 20 or 200 (0.2 and 2 collapse). This study trains, per seed, the trainer's
``mbgan`` preset (MBGAN Sec. 4: K = 500, alpha = 20 with the per-pixel-mean margin, a BatchNorm critic, batch
128, z ~ U(0, 1), Adam 2e-4 (0.5, 0.999), one critic step) and a DCGAN with the same network, data and optimiser,
and scores each critic with :func:`rankplug.app.eval.probe.linear_probe` (features of the 1,347 training digits,
accuracy on the 450 held-out ones; an untrained critic and the raw pixels are the floor), the samples with
digits-FID and the reference classifier's class histogram. The sweep crosses alpha in {0.2, 2, 20, 200} with
the margin's L1 norm as a per-pixel mean or a sum over pixels (MATH §5). At the end of each run the triplet
hinge's activity (the fraction of triplets with a positive loss, Eq. 1), the embedding norm and the margin are
measured on 4 batches, so a dead hinge is seen.

    python experiments/mbgan_study.py                                  # 5 seeds + the sweep (about 20 min)
    python experiments/mbgan_study.py --seeds 0 --sweep-seeds 0 --steps 20 --output /tmp/m.json   # a smoke run
    python experiments/mbgan_study.py --data cifar10 --data-root DIR --size 32 --width 64 --steps 20000 \
        --device cuda   # CIFAR-10 at 32 px on a GPU (the probe then needs labelled CIFAR-10 features)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
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

ALPHAS = (0.2, 2.0, 20.0, 200.0)
COSTS = (0.001, 0.01, 0.1)  # the SVM costs C tried by cross-validation
NORMS = ("mean", "sum")


def mbgan_config(args: argparse.Namespace, seed: int, alpha: float = 20.0, norm: str = "mean") -> TrainConfig:
    return TrainConfig.from_preset("mbgan", alpha=alpha, margin_norm=norm, **_common(args, seed))


def dcgan_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    m = TrainConfig.from_preset("mbgan")
    keep = ("critic_norm", "batch_size", "latent", "optimizer", "lr_d", "lr_g", "beta1", "beta2", "n_critic", "stages")
    return TrainConfig(method="dcgan", **{k: getattr(m, k) for k in keep}, **_common(args, seed))


def _common(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    data = data_settings(args)
    return dict(
        data,
        seed=seed,
        size=args.size,
        width=args.width,
        steps_per_stage=args.steps,
        log_every=max(1, args.steps // 50),
        device=args.device,
    )


def _probe_data(size: int) -> dict[str, torch.Tensor]:
    from rankplug.app.eval import digits as digits_eval

    _, split = digits_eval.reference_classifier(size)
    return {
        "train_images": split.train_images,
        "train_labels": split.train_labels,
        "test_images": split.test_images,
        "test_labels": split.test_labels,
    }


def probe(critic: torch.nn.Module, size: int) -> dict[str, Any]:
    from rankplug.app.eval.probe import critic_features, linear_probe

    data = _probe_data(size)
    grid = 2 if size <= 8 else 4  # 8x8 digits: the 4x4 maps pooled to 2x2; 32 px and up: DCGAN's 4x4 grid
    return linear_probe(
        critic_features(critic, data["train_images"], grid=grid),
        data["train_labels"],
        critic_features(critic, data["test_images"], grid=grid),
        data["test_labels"],
        costs=COSTS,
    )


def triplet_state(run_dir: Path, batches: int = 4) -> dict[str, float]:
    """At the end of an MBGAN run: the fraction of active triplet hinges (Eq. 1), the mean embedding norm of
    real images and the mean margin h (Eq. 4), over ``batches`` batches of the run's size."""
    from rankplug.app.data import open_dataset
    from rankplug.app.eval.commands import generate
    from rankplug.app.runs import load_stage_models, read_run_config, stage_files
    from rankplug.functional import data_dependent_margin, triplet_metric_discriminator_loss

    config = read_run_config(run_dir)
    models = load_stage_models(stage_files(run_dir)[-1][1], config=config)
    data = open_dataset(config.data, config.data_root, config.size, split="train")
    g = torch.Generator().manual_seed(0)
    active, norms, margins = [], [], []
    for k in range(batches):
        idx = torch.randint(len(data), (2, config.batch_size), generator=g)
        anchor = torch.stack([data[int(i)][0] for i in idx[0]])
        positive = torch.stack([data[int(i)][0] for i in idx[1]])
        fake = generate(models, config.batch_size, 100 + k)
        with torch.no_grad():
            e_a, e_p, e_f = (models.discriminator(x) for x in (anchor, positive, fake))
            loss = triplet_metric_discriminator_loss(
                e_a,
                e_p,
                e_f,
                positive_images=positive,
                fake_images=fake,
                alpha=config.alpha,
                margin_norm=config.margin_norm,
                reduction="none",
            )
            h = data_dependent_margin(positive, fake, alpha=config.alpha, margin_norm=config.margin_norm)
        active.append((loss > 0).float().mean().item())
        norms.append(e_a.norm(dim=1).mean().item())
        margins.append(h.mean().item())
    return {"active": sum(active) / batches, "embedding_norm": sum(norms) / batches, "margin": sum(margins) / batches}


def one_run(name: str, seed: int, config: TrainConfig, work: str) -> dict[str, Any]:
    from rankplug.app.runs import load_stage_models, stage_files

    run_dir = Path(work) / f"{name}-seed{seed}"
    summary = train_cached(run_dir, config)
    models = load_stage_models(stage_files(run_dir)[-1][1], config=config)
    out = {"name": name, "seed": seed, "train": summary, "scores": stage_scores(run_dir)[config.stages]}
    out["probe"] = probe(models.discriminator, config.size)
    if config.method == "mbgan":
        out["triplet"] = triplet_state(run_dir)
    return out


def floor_probes(args: argparse.Namespace, seeds: list[int]) -> dict[str, Any]:
    """The probe on raw pixels and on untrained critics (one per seed): what training must beat."""
    from rankplug.app.eval.probe import linear_probe
    from rankplug.app.training import Discriminator

    data = _probe_data(args.size)
    pixels = linear_probe(
        data["train_images"].flatten(1),
        data["train_labels"],
        data["test_images"].flatten(1),
        data["test_labels"],
        costs=COSTS,
    )
    untrained = []
    for seed in seeds:
        torch.manual_seed(seed)
        critic = Discriminator(width=args.width, size=args.size, norm="batch", embed_dim=500)
        untrained.append(probe(critic, args.size)["accuracy"])
    return {"pixels": pixels["accuracy"], "untrained_critic": untrained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--sweep-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=1500, help="generator steps (one critic step each)")
    add_common_arguments(parser, "mbgan")
    args = parser.parse_args()

    tasks = [("dcgan", s, dcgan_config(args, s), args.work) for s in args.seeds]
    tasks += [("mbgan-a20-mean", s, mbgan_config(args, s), args.work) for s in args.seeds]
    sweep = [(a, n) for a in ALPHAS for n in NORMS if (a, n) != (20.0, "mean")]
    tasks += [
        (f"mbgan-a{a:g}-{n}", s, mbgan_config(args, s, a, n), args.work) for a, n in sweep for s in args.sweep_seeds
    ]
    runs = run_tasks(tasks, one_run, args.jobs)
    by = {(r["name"], r["seed"]): r for r in runs}
    floors = floor_probes(args, args.seeds)
    analysis = analyse(args, by, floors)
    print(analysis["text"])
    command = command_line("mbgan_study.py", args)
    settings = {"dcgan": dcgan_config(args, 0).to_dict(), "mbgan": mbgan_config(args, 0).to_dict()}
    record = {"seeds": args.seeds, "sweep_seeds": args.sweep_seeds, "settings": settings, "runs": runs}
    write_record(Path(args.output), dict(record, floors=floors, analysis=analysis), command)


def analyse(args: argparse.Namespace, by: dict[tuple[str, int], Any], floors: dict[str, Any]) -> dict[str, Any]:
    seeds = args.seeds
    head = {name: [by[(name, s)] for s in seeds] for name in ("mbgan-a20-mean", "dcgan")}
    acc = {name: [r["probe"]["accuracy"] for r in runs] for name, runs in head.items()}
    fid = {name: [r["scores"]["digits_fid"] for r in runs] for name, runs in head.items()}
    out: dict[str, Any] = {
        "probe_accuracy": {n: t_interval(v) for n, v in acc.items()},
        "digits_fid": {n: t_interval(v) for n, v in fid.items()},
        "probe_difference": paired_difference(acc["mbgan-a20-mean"], acc["dcgan"]),
        "fid_difference": paired_difference(fid["mbgan-a20-mean"], fid["dcgan"]),
        "class_histograms": {n: [r["scores"]["class_histogram"] for r in runs] for n, runs in head.items()},
    }
    lines = [
        "| critic | linear-SVM accuracy on held-out digits | digits-FID | smallest class share | largest |",
        "|---|---|---|---|---|",
    ]
    for name in head:
        hists = out["class_histograms"][name]
        low = min(min(h) / sum(h) for h in hists)
        high = max(max(h) / sum(h) for h in hists)
        lines.append(
            f"| {name} | {fmt_interval(t_interval([100 * a for a in acc[name]]), 1)} % "
            f"| {fmt_interval(t_interval(fid[name]), 1)} | {100 * low:.1f} % | {100 * high:.1f} % |"
        )
    untrained = t_interval([100 * a for a in floors["untrained_critic"]])
    lines += [
        f"| untrained critic (floor) | {fmt_interval(untrained, 1)} % | - | - | - |",
        f"| raw pixels (floor) | {100 * floors['pixels']:.1f} % | - | - | - |",
        "",
        f"MBGAN - DCGAN, paired by seed: probe accuracy {fmt_interval(out['probe_difference'], 3)}, "
        f"digits-FID {fmt_interval(out['fid_difference'], 1)}.",
        "",
        "| alpha | margin L1 norm | seeds | digits-FID | probe accuracy | triplet hinges active (end) | "
        "embedding norm | margin h |",
        "|---|---|---|---|---|---|---|---|",
    ]
    out["sweep"] = {}
    for alpha in ALPHAS:
        for norm in NORMS:
            name = f"mbgan-a{alpha:g}-{norm}"
            runs = [by[(name, s)] for s in args.sweep_seeds if (name, s) in by]
            row = {
                "digits_fid": t_interval([r["scores"]["digits_fid"] for r in runs]),
                "probe_accuracy": t_interval([r["probe"]["accuracy"] for r in runs]),
                "triplet": {k: t_interval([r["triplet"][k] for r in runs]) for k in runs[0]["triplet"]},
            }
            out["sweep"][name] = row
            lines.append(
                f"| {alpha:g} | {norm} | {len(runs)} | {row['digits_fid']['mean']:.1f} "
                f"| {100 * row['probe_accuracy']['mean']:.1f} % | {100 * row['triplet']['active']['mean']:.0f} % "
                f"| {row['triplet']['embedding_norm']['mean']:.2f} | {row['triplet']['margin']['mean']:.2f} |"
            )
    out["text"] = "\n".join(lines)
    return out


if __name__ == "__main__":
    main()
