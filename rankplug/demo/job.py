"""The jobs behind the ``rankplug`` command: train a run directory, evaluate its stages, and the demo.

A **run directory** holds one :func:`rankplug.demo.train` run: ``run.json`` (the data and the training
settings), the :class:`~rankplug.StageManager` checkpoint, ``models-stage{i}.pt`` per stage, and after
:func:`evaluate_run` a sample grid ``samples-stage{i}.png`` and ``eval-stage{i}.json`` per stage.

The **demo** (:func:`run_demo`) trains RankGAN with 3 stages on scikit-learn's bundled digits, and a WGAN-GP
baseline for the same number of generator steps, evaluates every stage and writes the score-ladder plot,
``metrics.json`` and ``report.md`` next to the two run directories. Run again, it resumes from the last
checkpoints and says so.

Evaluation per stage (MATH §7): digits-FID (:func:`rankplug.eval.digits_fid`, for the digits) between samples
and the 450 held-out digits the GAN never saw, and image completion PSNR / SSIM (GoGAN Table 2) on held-out
images for the five centred-square occlusions. The Inception FID / IS of
:mod:`rankplug.eval.inception` is added when its weights are on disk.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rankplug._checkpoint import atomic_write
from rankplug._validation import check_positive_int
from rankplug.demo.train import MODELS_NAME, STAGED_METHODS, check_settings, load_stage_models, train
from rankplug.runs import RunDirectoryError, check_directory_argument, holds_run_lock, lock_run, read_json

RUN_FILE = "run.json"
DEMO_FILE = "demo.json"
DATA_KINDS = ("digits", "folder", "cifar10")
# The demo's RankGAN: eps = 10 in stage 1. With eps = 1 every hinge of the margin loss goes inactive once the
# critic separates real from fake by more than 1, after which stage 1 learns only from the gradient penalty and
# its samples stay noise (docs/demo_timing.md); eps = 10 keeps the hinges active, as the WGAN limit of MATH §1.
DEMO_MARGIN = 10.0
# Relative cost of one generator step (5 critic steps) of a stage >= 2 RankGAN step against a stage-1 step,
# measured at 16x16 on 2 cores (9.0 vs 7.3 it/s, docs/demo_timing.md).
STAGE_COST = 1.3
# The timed steps run faster than a whole run does: on an idle 2-core machine the calibration measured 9.4 steps/s
# and the 900-step baseline that followed averaged 8.1, so the budget plans with 85 % of the measured rate.
RATE_MARGIN = 0.85
Printer = Callable[[str], None]


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (a temporary file renamed over the old one), so a crash never leaves half a file."""
    atomic_write(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def machine_info() -> dict[str, Any]:
    """Python, torch, CPU count, torch threads and load average: recorded with every result."""
    try:
        import os

        load = list(os.getloadavg())
        cpus = os.cpu_count()
    except (AttributeError, OSError):
        load, cpus = None, None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": cpus,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": load,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# ----------------------------------------------------------------------------------------------------- data


def load_data(kind: str, root: str | None, size: int) -> tuple[Tensor, Tensor]:
    """``(train_images, held_out_images)`` in ``[-1, 1]`` for a data spec of ``rankplug train``.

    ``digits``: the fixed split of :func:`rankplug.eval.digits_split` (1,347 to train on, 450 held out).
    ``folder`` / ``cifar10``: every 10th image (at least 1) is held out.
    """
    if kind not in DATA_KINDS:
        raise ValueError(f"data must be one of {DATA_KINDS}; got {kind!r}")
    if kind == "digits" and root is not None:
        raise ValueError(f"data 'digits' is bundled and takes no root directory (--data-root); got {root!r}")
    if root is not None and not isinstance(root, str):
        raise TypeError(f"data_root must be a path string; got {type(root).__name__}")
    if kind == "digits":
        from rankplug.eval.digits import digits_split

        split = digits_split(size)
        return split.train_images, split.test_images
    if root is None:
        raise ValueError(f"data {kind!r} needs a root directory (--data-root)")
    from rankplug import data

    images: Tensor = (data.load_image_folder(root, size) if kind == "folder" else data.load_cifar10(root, size))[0]
    held = torch.zeros(images.shape[0], dtype=torch.bool)
    held[::10] = True
    if held.all():
        raise ValueError(f"{root} holds {images.shape[0]} image(s); at least 2 are needed (one is held out)")
    return images[~held], images[held]


# ------------------------------------------------------------------------------------------------ training


def _progress_bar(total: int, initial: int, description: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="step", leave=True, dynamic_ncols=True)


def _spec_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The training settings of a run spec (``run.json`` less its data keys), validated."""
    for key in ("method", "data", "stages", "steps_per_stage", "size"):
        if key not in spec:
            raise ValueError(f"the setting {key!r} is missing")
    if spec["data"] not in DATA_KINDS:
        raise ValueError(f"data must be one of {DATA_KINDS}; got {spec['data']!r}")
    root = spec.get("data_root")
    if root is not None and (not isinstance(root, str) or not root):
        raise ValueError(f"data_root must be a non-empty path string or null; got {root!r}")
    return check_settings({k: v for k, v in spec.items() if k not in ("data", "data_root")})


def read_run_spec(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's ``run.json``, checked (types, ranges, sizes) before anything is built from it.

    Raises :class:`~rankplug.runs.RunDirectoryError` naming the file when it is malformed, and
    ``FileNotFoundError`` when the directory has none.
    """
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no {RUN_FILE} (made by `rankplug train`)")
    spec: dict[str, Any] = read_json(path)
    try:
        _spec_settings(spec)
    except (ValueError, TypeError) as error:
        raise RunDirectoryError(f"{path} is not a valid run file: {error}") from error
    return spec


def train_run(
    run_dir: str | Path,
    *,
    method: str,
    data: str = "digits",
    data_root: str | None = None,
    stages: int = 3,
    steps_per_stage: int = 300,
    progress: bool = True,
    echo: Printer = _echo,
    **train_kwargs: Any,
) -> dict[str, Any]:
    """Train (or resume) one run directory with :func:`rankplug.demo.train` and return its result.

    ``run.json`` records the data spec and every setting; a second call with the same settings resumes from
    the last checkpoint (and says so), and one with different settings is refused rather than mixed in.
    Every setting and the data are checked before anything is written, so a refused call leaves the directory
    as it was, and the directory is locked (:func:`rankplug.runs.lock_run`) while the run trains in it: a
    second process is refused instead of mixing two runs.

    Args:
        run_dir: the run directory (created).
        method: one of :data:`rankplug.demo.METHODS`.
        data, data_root: ``"digits"`` (embedded), ``"folder"`` (an image folder) or ``"cifar10"`` (a
            CIFAR-10 root already on disk), see :func:`load_data`.
        stages, steps_per_stage: as in :func:`rankplug.demo.train`.
        progress: show a progress bar over the generator steps.
        echo: where one-line messages go (default: stderr).
        **train_kwargs: further keyword arguments of :func:`rankplug.demo.train` (``size``, ``seed``, ...).
    """
    run_dir = check_directory_argument(run_dir, "run_dir")
    size = train_kwargs.get("size", 16)
    spec = {
        "method": method,
        "data": data,
        "data_root": data_root,
        "stages": stages,
        "steps_per_stage": steps_per_stage,
    }
    spec.update({k: v for k, v in train_kwargs.items() if k not in ("callback", "progress")})
    spec["size"] = size
    _spec_settings(spec)
    images, _ = load_data(data, data_root, size)
    run_dir.mkdir(parents=True, exist_ok=True)
    with lock_run(run_dir, command=f"train {method}"):
        if (run_dir / RUN_FILE).is_file():
            _refuse_other_settings(run_dir, read_run_spec(run_dir), spec)
        _write_json(run_dir / RUN_FILE, spec)
        result = _train_locked(run_dir, spec, images, progress, echo, train_kwargs)
        history = {k: v for k, v in result.items() if k not in ("generator", "discriminator")}
        _write_json(run_dir / "history.json", history)
    return result


def _refuse_other_settings(run_dir: Path, old: dict[str, Any], spec: dict[str, Any]) -> None:
    differing = {k for k in set(old) | set(spec) if k != "stages" and old.get(k) != spec.get(k)}
    if differing:
        details = ", ".join(f"{k}: {old.get(k)!r} there, {spec.get(k)!r} now" for k in sorted(differing))
        raise ValueError(
            f"{run_dir} holds a run with other settings ({details}); pick another directory or the same settings"
        )


def _train_locked(
    run_dir: Path, spec: dict[str, Any], images: Tensor, progress: bool, echo: Printer, train_kwargs: dict[str, Any]
) -> dict[str, Any]:
    method, stages, steps_per_stage = spec["method"], spec["stages"], spec["steps_per_stage"]
    done = _steps_done(run_dir)
    total = stages * steps_per_stage
    if done:
        status = "finished" if done >= total else "interrupted"
        echo(f"[{method}] resuming the {status} run in {run_dir} from its last checkpoint ({done} of {total} steps)")
    bar = _progress_bar(total, done, method, progress and done < total)

    def callback(event: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(event["step"] - bar.n)
            bar.set_postfix(stage=event["stage"], gap=f"{event['gap']:.3f}", refresh=False)

    try:
        return train(
            method,
            images=images,
            stages=stages,
            steps_per_stage=steps_per_stage,
            directory=run_dir,
            callback=callback,
            **train_kwargs,
        )
    finally:
        if bar is not None:
            bar.close()


def _steps_done(run_dir: Path) -> int:
    """Generator steps in the run directory's newest stage checkpoint (0 if none)."""
    stages = _stage_files(run_dir)
    if not stages:
        return 0
    _, _, _, info = load_stage_models(stages[-1][1])
    return int(info["generator_steps"])


def _stage_files(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in Path(run_dir).glob(MODELS_NAME.format(stage="*")):
        stem = path.stem.rsplit("stage", 1)[-1]
        if stem.isdigit():
            found.append((int(stem), path))
    return sorted(found)


# ---------------------------------------------------------------------------------------------- evaluation


def _open_run(run_dir: Path) -> tuple[dict[str, Any], list[tuple[int, Path]], Tensor]:
    """A run directory's ``run.json``, its stage checkpoints in order, and its held-out images."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory: no such directory")
    spec = read_run_spec(run_dir)
    stage_files = _stage_files(run_dir)
    if not stage_files:
        raise FileNotFoundError(f"{run_dir} holds no stage checkpoint ({MODELS_NAME.format(stage='<i>')}) yet")
    _, held_out = load_data(spec["data"], spec.get("data_root"), spec["size"])
    return spec, stage_files, held_out


def _load_stage(spec: dict[str, Any], path: Path) -> tuple[Any, Any, Any, dict[str, Any]]:
    """``load_stage_models(path)``, refused if the checkpoint belongs to another run than ``run.json`` says."""
    G, D, E, info = load_stage_models(path)
    settings = info["settings"]
    differing = sorted(k for k in set(spec) & set(settings) if k != "stages" and spec[k] != settings[k])
    if differing:
        details = ", ".join(f"{k} {settings[k]!r} there, {spec[k]!r} in {RUN_FILE}" for k in differing)
        raise RunDirectoryError(f"{path} was written by another run than {RUN_FILE} describes ({details})")
    return G, D, E, info


def _stage_gaps(run_dir: Path) -> dict[int, list[float]]:
    """The gaps per stage from ``history.json`` (empty if there is none), checked."""
    path = run_dir / "history.json"
    if not path.is_file():
        return {}
    history = read_json(path)
    try:
        return {
            int(entry["stage"]): [float(g) for g in entry["gap"]]
            for entry in history.get("stages", [])  # type: ignore[union-attr]
        }
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise RunDirectoryError(f"{path} is not a valid history file: {error!r}") from error


def _samples(generator: torch.nn.Module, count: int, nz: int, seed: int) -> Tensor:
    z = torch.randn(count, nz, generator=torch.Generator().manual_seed(seed))
    device = next(generator.parameters()).device
    with torch.no_grad():
        return torch.cat([generator(chunk.to(device)).cpu() for chunk in z.split(256)])


def save_grid(images: Tensor, path: str | Path, *, nrow: int = 8, scale: int = 3) -> Path:
    """Write ``images`` in ``[-1, 1]``, ``(N, C, H, W)`` with ``C`` 1 or 3, as one PNG grid (PIL), ``scale``-fold."""
    from PIL import Image

    images = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    pad = 1
    canvas = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 64, dtype=torch.uint8)
    for k in range(n):
        r, col = divmod(k, nrow)
        canvas[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = (
            images[k]
        )
    array = canvas.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if c == 1 else array, mode="L" if c == 1 else "RGB")
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    picture.save(path)
    return path


@holds_run_lock("eval")
def evaluate_run(
    run_dir: str | Path,
    *,
    completion_images: int = 64,
    completion_steps: int = 100,
    coverages: Sequence[float] | None = None,
    fid_samples: int = 1000,
    inception_weights: str | None = None,
    grid_seed: int = 1234,
    perceptual_weight: float | None = None,
    progress: bool = True,
    force: bool = False,
    echo: Printer = _echo,
) -> list[dict[str, Any]]:
    """Metrics of every stage checkpoint in ``run_dir``: ``eval-stage{i}.json`` and ``samples-stage{i}.png``.

    Per stage: the gap at the end of the stage (mean of its last 5 records), digits-FID of ``fid_samples``
    samples against the held-out digits (digits data only), and the completion table
    (:func:`rankplug.eval.completion_table`, MATH §7) on the first ``completion_images`` held-out images,
    every stage starting from the same ``z``; with an encoder, ``z`` starts at the encoder's ``mu``. The
    perceptual term's weight is ``perceptual_weight``, by default GoGAN's 0.1; it is always 0 for ``mbgan``,
    whose critic gives an embedding, not a score. A
    stage whose ``eval-stage{i}.json`` matches its checkpoint and these settings is read back, not recomputed,
    unless ``force``. Inception FID / IS are added when ``inception_weights`` (or the torch cache) has them.

    Returns:
        One dict per stage, in stage order.
    """
    from rankplug.eval import completion_table
    from rankplug.eval import digits as digits_eval

    run_dir = Path(run_dir)
    spec, stage_files, held_out = _open_run(run_dir)
    completion_images = check_positive_int(completion_images, "completion_images")
    completion_steps = check_positive_int(completion_steps, "completion_steps")
    fid_samples = check_positive_int(fid_samples, "fid_samples")
    from rankplug.eval import COVERAGES

    coverage_list = tuple(float(c) for c in (COVERAGES if coverages is None else coverages))
    settings_key = {
        "completion_images": completion_images,
        "completion_steps": completion_steps,
        "coverages": list(coverage_list),
        "fid_samples": fid_samples,
        "grid_seed": grid_seed,
        "inception": inception_weights is not None,
        "perceptual_weight": perceptual_weight,
    }
    gaps = _stage_gaps(run_dir)
    targets = held_out[:completion_images]
    classifier = None
    if spec["data"] == "digits":
        classifier, _ = digits_eval.reference_classifier(spec["size"])
    results = []
    for stage, path in stage_files:
        out_path = run_dir / f"eval-stage{stage}.json"
        G, D, E, info = _load_stage(spec, path)
        if out_path.is_file() and not force:
            try:
                cached = read_json(out_path)
            except RunDirectoryError:  # our own cache: a damaged one is recomputed
                cached = {}
            if cached.get("generator_steps") == info["generator_steps"] and cached.get("eval_settings") == settings_key:
                results.append(cached)
                continue
        started = time.perf_counter()
        nz = info["settings"]["nz"]
        grid = save_grid(_samples(G, 64, nz, grid_seed), run_dir / f"samples-stage{stage}.png")
        entry: dict[str, Any] = {
            "stage": stage,
            "method": info["settings"]["method"],
            "generator_steps": info["generator_steps"],
            "samples": grid.name,
            "eval_settings": settings_key,
        }
        stage_gaps = gaps.get(stage) or []
        entry["gap_end"] = float(sum(stage_gaps[-5:]) / len(stage_gaps[-5:])) if stage_gaps else None
        if classifier is not None:
            fakes = _samples(G, fid_samples, nz, grid_seed + 1)
            entry["digits_fid"] = digits_eval.digits_fid(classifier, held_out, fakes)
        init = None
        if E is not None:
            with torch.no_grad():
                init = E(targets)[0]
        mbgan = info["settings"]["method"] == "mbgan"
        weight = 0.0 if mbgan else (0.1 if perceptual_weight is None else perceptual_weight)
        rows = completion_table(
            {f"stage {stage}": (G, None if weight == 0 else D)},
            targets,
            coverages=coverage_list,
            latent_shape=(nz,),
            steps=completion_steps,
            perceptual_weight=weight,
            init_latents=None if init is None else {f"stage {stage}": init},
        )
        entry["completion"] = {k: rows[0][k] for k in ("coverages", "psnr", "ssim", "hole_psnr")}
        entry["inception"] = _inception(G, nz, held_out, fid_samples, grid_seed, inception_weights, echo)
        entry["eval_seconds"] = time.perf_counter() - started
        _write_json(out_path, entry)
        results.append(entry)
        if progress:
            fid = f", digits-FID {entry['digits_fid']:.2f}" if "digits_fid" in entry else ""
            echo(
                f"[eval] {run_dir.name} stage {stage}{fid}, completion PSNR {_mean(entry['completion']['psnr']):.2f} dB"
            )
    return results


@holds_run_lock("complete")
def complete_run(
    run_dir: str | Path,
    *,
    images: int = 64,
    steps: int = 100,
    coverages: Sequence[float] | None = None,
    perceptual_weight: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> str:
    """Image completion (GoGAN Eq. 30-33, RankGAN Eq. 8-11; MATH §7) of every stage of a run, side by side.

    Every stage completes the same ``images`` held-out images from the same starting ``z`` (or its encoder's
    ``mu``). Writes ``completion.json`` (the :func:`rankplug.eval.completion_table` rows), ``completion.md`` and
    ``completion.png`` (for the middle coverage: originals, the masked input, then one row per stage), and
    returns the Markdown table (cells ``PSNR / SSIM / hole PSNR``).
    """
    from rankplug.eval import COVERAGES, center_mask, complete_images, completion_table, format_table

    images = check_positive_int(images, "images")
    run_dir = Path(run_dir)
    spec, stage_files, held_out = _open_run(run_dir)
    targets = held_out[:images]
    models: dict[str, tuple[Any, Any]] = {}
    inits: dict[str, Tensor] = {}
    nz = 0
    for stage, path in stage_files:
        G, D, E, info = _load_stage(spec, path)
        nz = info["settings"]["nz"]
        mbgan = info["settings"]["method"] == "mbgan"  # an embedding, not a score: no perceptual term
        models[f"stage {stage}"] = (G, None if mbgan else D)
        if E is not None:
            with torch.no_grad():
                inits[f"stage {stage}"] = E(targets)[0]
    weight = 0.0 if any(d is None for _, d in models.values()) else perceptual_weight
    coverage_list = tuple(COVERAGES if coverages is None else coverages)
    rows = completion_table(
        models,
        targets,
        coverages=coverage_list,
        latent_shape=(nz,),
        steps=steps,
        perceptual_weight=weight,
        init_latents=inits or None,
        generator_seed=seed,
        progress=progress,
    )
    middle = coverage_list[len(coverage_list) // 2]
    mask = center_mask(spec["size"], middle)
    shown = targets[:8]
    pictures = [shown, shown * mask + (1 - mask) * -1]
    for name, (G, D) in models.items():
        result = complete_images(
            G,
            D,
            shown,
            mask,
            latent_shape=(nz,),
            steps=steps,
            perceptual_weight=weight,
            init_latent=inits[name][:8] if name in inits else None,
            generator_seed=seed,
        )
        pictures.append(result.completed)
    save_grid(torch.cat(pictures), run_dir / "completion.png", nrow=shown.shape[0])
    table = format_table(rows, hole=True)
    _write_json(run_dir / "completion.json", {"rows": rows, "images": images, "steps": steps, "seed": seed})
    (run_dir / "completion.md").write_text(
        f"# Image completion of {run_dir.name}\n\nCells: PSNR (dB) / SSIM / hole-only PSNR (dB), mean over "
        f"{targets.shape[0]} held-out images, {steps} RMSprop steps, lambda = {weight:g}.\n\n{table}\n\n"
        f"![completion at {100 * middle:g}%](completion.png) (rows: originals, masked, then stage 1, 2, ...)\n"
    )
    return table


def _inception(
    G: torch.nn.Module, nz: int, real: Tensor, count: int, seed: int, weights: str | None, echo: Printer
) -> dict[str, float] | None:
    """Inception FID / IS when asked for (``weights``). Asked for and impossible (no weights file, no
    pytorch-gan-metrics) is an error, not a silent skip: the caller asked for a number it would not get."""
    if weights is None:
        return None
    from rankplug.eval import inception_metrics

    return dict(inception_metrics(real, _samples(G, count, nz, seed + 2), weights=weights))


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


# ---------------------------------------------------------------------------------------------------- demo


def choose_steps_per_stage(
    images: Tensor,
    *,
    budget_seconds: float,
    stages: int,
    baseline: bool,
    size: int = 16,
    echo: Printer = _echo,
) -> tuple[int, float]:
    """Generator steps per stage that fit ``budget_seconds`` of training on this machine, and the measured rate.

    Times steps 3 to 14 of a short stage-1 run (the first two warm up; set-up and saving are not counted) and
    assumes a stage >= 2 step costs :data:`STAGE_COST` stage-1 steps and a baseline step one; it plans with
    :data:`RATE_MARGIN` of the measured rate. The result is a multiple of 10 in ``[20, 300]``.
    """
    stamps: list[float] = []
    train(
        "margin",
        images=images,
        stages=1,
        steps_per_stage=14,
        log_every=1,
        size=size,
        seed=0,
        callback=lambda event: stamps.append(time.perf_counter()),
    )
    rate = (len(stamps) - 2) / (stamps[-1] - stamps[1])
    work = 1 + STAGE_COST * (stages - 1) + (stages if baseline else 0)
    steps = int(budget_seconds * RATE_MARGIN * rate / work) // 10 * 10
    steps = max(20, min(300, steps))
    echo(f"[demo] this machine runs {rate:.1f} generator steps/s; {steps} steps per stage fit {budget_seconds:.0f} s")
    return steps, rate


def run_demo(
    directory: str | Path = "rankplug-demo",
    *,
    baseline: bool = True,
    size: int = 16,
    stages: int = 3,
    steps_per_stage: int | None = None,
    budget_seconds: float = 170.0,
    seed: int = 0,
    quick: bool = False,
    inception_weights: str | None = None,
    progress: bool = True,
    echo: Printer = _echo,
) -> dict[str, Any]:
    """``rankplug demo``: RankGAN stages and a same-compute WGAN-GP baseline on the digits, evaluated and reported.

    Writes into ``directory``: ``rankgan/`` and ``baseline/`` run directories (checkpoints per stage,
    ``samples-stage{i}.png``), ``score_ladder.png``, ``metrics.json`` and ``report.md``. Running it again with
    the same directory resumes from the last checkpoints (and says so); the number of steps per stage chosen
    by the first run is kept in ``demo.json``.

    Args:
        directory: the demo directory.
        baseline: also train the WGAN-GP baseline for ``stages * steps_per_stage`` generator steps.
        size: image side, 16 or 32.
        stages: RankGAN stages.
        steps_per_stage: generator steps per stage; ``None`` measures this machine and picks the most that fit
            ``budget_seconds`` of training (:func:`choose_steps_per_stage`).
        budget_seconds: training time to aim for when ``steps_per_stage`` is ``None``.
        seed: seed of both runs.
        quick: a few steps and tiny evaluations, for tests.
        inception_weights: path of the FID Inception weights, for Inception FID / IS (optional).
        progress: progress bars and messages.
        echo: where one-line messages go.

    Returns:
        The content of ``metrics.json``.
    """
    started = time.perf_counter()
    directory = check_directory_argument(directory, "--dir")
    check_settings({"size": size, "stages": stages, "seed": seed})
    if steps_per_stage is not None:
        check_settings({"steps_per_stage": steps_per_stage})
    if not (isinstance(budget_seconds, (int, float)) and math.isfinite(budget_seconds) and budget_seconds > 0):
        raise ValueError(f"budget_seconds must be a finite number of seconds > 0; got {budget_seconds!r}")
    directory.mkdir(parents=True, exist_ok=True)
    demo_file = directory / DEMO_FILE
    wanted = {"size": size, "stages": stages, "seed": seed, "quick": quick, "baseline": baseline}
    if demo_file.is_file():
        saved = read_json(demo_file)
        steps_saved = saved.get("steps_per_stage")
        if isinstance(steps_saved, bool) or not isinstance(steps_saved, int) or steps_saved < 1:
            raise RunDirectoryError(f"{demo_file}: steps_per_stage must be an int >= 1; got {steps_saved!r}")
        differing = sorted(k for k in wanted if saved.get(k) != wanted[k] and k != "baseline")
        if differing:
            raise ValueError(
                f"{directory} holds a demo run with "
                + ", ".join(f"{k}={saved.get(k)!r}" for k in differing)
                + "; use another --dir or the same options"
            )
        if steps_per_stage is not None and steps_per_stage != saved["steps_per_stage"]:
            raise ValueError(
                f"{directory} was started with steps_per_stage={saved['steps_per_stage']}; got {steps_per_stage}"
            )
        steps_per_stage = int(saved["steps_per_stage"])
        echo(f"[demo] found the run in {directory}: resuming from its last checkpoints ({steps_per_stage} steps/stage)")
    else:
        images, _ = load_data("digits", None, size)
        if quick:
            steps_per_stage = steps_per_stage or 4
        elif steps_per_stage is None:
            steps_per_stage, _ = choose_steps_per_stage(
                images, budget_seconds=budget_seconds, stages=stages, baseline=baseline, size=size, echo=echo
            )
        _write_json(demo_file, dict(wanted, steps_per_stage=steps_per_stage, machine=machine_info()))
    assert steps_per_stage is not None
    common: dict[str, Any] = {"size": size, "seed": seed, "log_every": 2 if quick else 10}
    if quick:
        common.update(batch_size=16, n_critic=2, width=8)
    runs: dict[str, tuple[str, dict[str, Any]]] = {"rankgan": ("rankgan", {"margin": DEMO_MARGIN})}
    if baseline:
        runs["baseline"] = ("wgan-gp", {})
    results = {}
    timings = {}
    for name, (method, extra) in runs.items():
        t0 = time.perf_counter()
        results[name] = train_run(
            directory / name,
            method=method,
            stages=stages,
            steps_per_stage=steps_per_stage,
            progress=progress,
            echo=echo,
            **common,
            **extra,
        )
        timings[f"train_{name}_seconds_this_call"] = time.perf_counter() - t0
    evaluation = {}
    t0 = time.perf_counter()
    eval_kwargs: dict[str, Any] = {"inception_weights": inception_weights, "progress": progress, "echo": echo}
    if quick:
        eval_kwargs.update(completion_images=8, completion_steps=2, fid_samples=64)
    for name in runs:
        evaluation[name] = evaluate_run(directory / name, **eval_kwargs)
    timings["eval_seconds_this_call"] = time.perf_counter() - t0
    reference = _digits_reference(size)
    plot_score_ladder({name: results[name] for name in runs}, directory / "score_ladder.png")
    metrics = {
        "settings": read_json(demo_file),
        "reference": reference,
        "runs": {
            name: {
                "method": results[name]["method"],
                "generator_steps": results[name]["generator_steps"],
                "train_seconds": results[name]["wall_time"],
                "gap_per_stage": [_gap_summary(entry) for entry in results[name]["stages"]],
                "markers_per_stage": [
                    {"stage": e["stage"], "markers_used": e["markers_used"], "markers_fixed": e["markers_fixed"]}
                    for e in results[name]["stages"]
                ],
                "stages": [{k: v for k, v in e.items() if k != "eval_settings"} for e in evaluation[name]],
            }
            for name in runs
        },
        "timing": dict(timings, total_seconds_this_call=time.perf_counter() - started),
        "machine": machine_info(),
    }
    _write_json(directory / "metrics.json", metrics)
    (directory / "report.md").write_text(render_report(metrics))
    echo(f"[demo] done in {time.perf_counter() - started:.0f} s: see {directory / 'report.md'}")
    return metrics


def run_conditional_demo(
    directory: str | Path = "rankplug-demo",
    *,
    steps: int = 800,
    n_critic: int = 2,
    seed: int = 0,
    quick: bool = False,
    progress: bool = True,
    echo: Printer = _echo,
) -> dict[str, Any]:
    """``rankplug demo --conditional``: the angular-margin auxiliary classifier against softmax cross entropy.

    Trains the conditional digits GAN of :mod:`rankplug.demo.conditional` twice with the same seed and budget,
    once with :class:`rankplug.AAMAuxClassifier` and once with a linear head and cross entropy, and scores both
    with GAN-train, GAN-test and digits-FID on the held-out digits (:func:`~rankplug.demo.conditional.compare_heads`).
    Writes ``conditional/metrics.json``, ``conditional/report.md`` and a sample grid per head
    (``conditional/samples-{head}.png``, one row per class) under ``directory``; the runs checkpoint to
    ``conditional/{head}/`` and a second call resumes from there.

    Returns:
        The content of ``conditional/metrics.json``.
    """
    from rankplug.demo import conditional

    started = time.perf_counter()
    out = Path(directory) / "conditional"
    out.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any]
    if quick:
        steps, options = 3, {"batch_size": 16, "n_critic": 1, "log_every": 1}
        samples_per_class = 5
    else:
        options = {"n_critic": n_critic}
        samples_per_class = 135
    for head in conditional.HEADS:
        if (out / head / conditional.CHECKPOINT_NAME).is_file():
            echo(f"[conditional] resuming the {head} run in {out / head} from its last checkpoint")
    bars = {head: _progress_bar(steps, 0, f"conditional {head}", progress) for head in conditional.HEADS}

    def callback(head: str, record: dict[str, Any]) -> None:
        bar = bars[head]
        if bar is not None:
            bar.update(max(0, int(record["step"]) - bar.n))

    try:
        result = conditional.compare_heads(
            steps=steps,
            seed=seed,
            samples_per_class=samples_per_class,
            directory=out,
            callback=callback,
            **options,
        )
    finally:
        for bar in bars.values():
            if bar is not None:
                bar.close()
    for head, run in result["runs"].items():
        samples = conditional.class_samples(run["generator"], per_class=8, seed=1234).flatten(0, 1)
        save_grid(samples, out / f"samples-{head}.png", nrow=8)
    metrics = dict(conditional.json_ready(result), machine=machine_info())
    metrics["seconds_this_call"] = time.perf_counter() - started
    _write_json(out / "metrics.json", metrics)
    reference = result["reference"]
    lines = [
        "# rankplug demo --conditional",
        "",
        f"Conditional digits GAN, {steps} generator steps per head, seed {seed}; the same networks, data and budget,",
        "only the auxiliary classifier differs (AAM: `rankplug.AAMAuxClassifier`; CE: linear + softmax cross entropy).",
        "",
        "| head | GAN-train % ↑ | GAN-test % ↑ | digits-FID ↓ |",
        "|---|---|---|---|",
    ]
    for head, run in result["runs"].items():
        m = run["metrics"]
        lines.append(f"| {head} | {100 * m['gan_train']:.2f} | {100 * m['gan_test']:.2f} | {m['digits_fid']:.2f} |")
    lines += [
        "",
        f"Real digits: {_reference_line(reference)}",
        "",
        *(f"- {head}: ![{head}](samples-{head}.png) (one row per class 0-9)" for head in result["runs"]),
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    echo(f"[conditional] done in {metrics['seconds_this_call']:.0f} s: see {out / 'report.md'}")
    return metrics


def _reference_line(reference: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value:.4g}" for key, value in reference.items() if isinstance(value, (int, float)))


def _gap_summary(entry: dict[str, Any]) -> dict[str, Any]:
    gaps = entry["gap"]
    tail = gaps[-5:]
    return {
        "stage": entry["stage"],
        "gap_end": float(sum(tail) / len(tail)) if tail else None,
        "gap_mean": float(sum(gaps) / len(gaps)) if gaps else None,
        "real_end": entry["real"][-1] if entry["real"] else None,
        "fake_end": entry["fake"][-1] if entry["fake"] else None,
        "prev_fake_end": entry["prev_fake"][-1] if entry["prev_fake"] else None,
    }


def _digits_reference(size: int) -> dict[str, float]:
    """digits-FID of real digits the GAN trained on against the held-out ones: the floor a GAN can reach."""
    from rankplug.eval import digits as digits_eval

    classifier, split = digits_eval.reference_classifier(size)
    return {"digits_fid_train_vs_held_out": digits_eval.digits_fid(classifier, split.test_images, split.train_images)}


def plot_score_ladder(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """The score ladder (RankGAN Fig. 4) and the gap per stage of each run, as one PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.4 * len(results)), squeeze=False)
    for row, (name, result) in enumerate(results.items()):
        ladder, gap_axis = axes[row]
        every = result["settings"]["log_every"]
        offset = 0
        for entry in result["stages"]:
            steps = [offset + every * (k + 1) for k in range(len(entry["real"]))]
            first = entry["stage"] == 1
            ladder.plot(steps, entry["real"], color="tab:blue", label="D(x)" if first else None)
            ladder.plot(steps, entry["fake"], color="tab:red", label="D(G_i(z))" if first else None)
            if entry["prev_fake"]:
                ladder.plot(
                    steps, entry["prev_fake"], color="tab:gray", label="D(G_{i-1}(z))" if entry["stage"] == 2 else None
                )
            gap_axis.plot(steps, entry["gap"], label=f"stage {entry['stage']}")
            offset = steps[-1] if steps else offset
            for axis in (ladder, gap_axis):
                axis.axvline(offset, color="k", lw=0.5, ls=":")
        method = result["method"]
        ladder.set_title(f"{name} ({method}): score ladder")
        ladder.set_xlabel("generator step")
        ladder.set_ylabel("critic score (batch mean)")
        ladder.legend(fontsize=8)
        gap_axis.set_title(f"{name}: gap Γ = mean D(x) - mean D(G(z))")
        gap_axis.set_xlabel("generator step")
        gap_axis.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def render_report(metrics: dict[str, Any]) -> str:
    """``report.md``: stage against metrics next to the baseline, the completion table and the pictures."""
    settings = metrics["settings"]
    lines = [
        "# rankplug demo report",
        "",
        f"Digits ({settings['size']}x{settings['size']}, scikit-learn's bundled set: 1,347 to train on, 450 held "
        f"out), {settings['stages']} stages of {settings['steps_per_stage']} generator steps, seed {settings['seed']}. "
        f"RankGAN: stage 1 margin loss (eps = {DEMO_MARGIN:g}) + gradient penalty, stages 2-3 ranking + clamp "
        "(RankGAN Eq. 3-7). Baseline: WGAN-GP for the same number of generator steps.",
        "",
        "## Stage against metrics",
        "",
        "| run | stage | generator steps | gap Γ (end) | digits-FID ↓ | completion PSNR (dB) ↑, mean over occlusions "
        "| SSIM ↑ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in metrics["runs"].items():
        for entry in run["stages"]:
            lines.append(
                f"| {name} | {entry['stage']} | {entry['generator_steps']} | {_fmt(entry.get('gap_end'), 3)} "
                f"| {_fmt(entry.get('digits_fid'))} | {_fmt(_mean(entry['completion']['psnr']))} "
                f"| {_fmt(_mean(entry['completion']['ssim']), 3)} |"
            )
    floor = metrics["reference"]["digits_fid_train_vs_held_out"]
    lines += [
        "",
        f"digits-FID of the real training digits against the held-out ones (the floor): {floor:.2f}.",
        "",
        "## Image completion (GoGAN Table 2 layout: PSNR dB / SSIM per occluded fraction)",
        "",
    ]
    from rankplug.eval import format_table

    rows = []
    for name, run in metrics["runs"].items():
        for entry in run["stages"]:
            rows.append(dict(entry["completion"], model=f"{name} stage {entry['stage']}"))
    lines += [format_table(rows), "", "## Score ladder and gap", "", "![score ladder](score_ladder.png)", ""]
    for name, run in metrics["runs"].items():
        for gap in run["gap_per_stage"]:
            prev = f", D(G_i-1(z)) {_fmt(gap['prev_fake_end'])}" if gap["prev_fake_end"] is not None else ""
            lines.append(
                f"- {name} stage {gap['stage']}: Γ at the end {_fmt(gap['gap_end'], 3)} (mean over the stage "
                f"{_fmt(gap['gap_mean'], 3)}); last batch D(x) {_fmt(gap['real_end'])}, D(G_i(z)) "
                f"{_fmt(gap['fake_end'])}{prev}"
            )
    lines += ["", "## Samples (fixed z)", ""]
    for name, run in metrics["runs"].items():
        for entry in run["stages"]:
            lines.append(
                f"- {name} stage {entry['stage']}: ![{name} stage {entry['stage']}]({name}/{entry['samples']})"
            )
    timing = metrics["timing"]
    lines += [
        "",
        f"Time of this call: {timing['total_seconds_this_call']:.0f} s. Machine: {metrics['machine']['platform']}, "
        f"torch {metrics['machine']['torch']}, {metrics['machine']['torch_threads']} threads.",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "DATA_KINDS",
    "STAGED_METHODS",
    "choose_steps_per_stage",
    "evaluate_run",
    "load_data",
    "machine_info",
    "plot_score_ladder",
    "render_report",
    "run_conditional_demo",
    "run_demo",
    "save_grid",
    "train_run",
]
