"""Evaluation of a run directory: metrics per stage, image completion, and samples (``rankplug eval``,
``complete`` and ``sample``).

Per stage (maths §7): digits-FID of samples against the held-out digits (digits runs), GAN-train / GAN-test for
a conditional digits run, image completion PSNR / SSIM (GoGAN Table 2) on held-out images for the five
centred-square occlusions, and, when asked for, the paper metrics (FID, IS, KID, precision/recall through
torch-fidelity, :mod:`rankplug.app.eval.fidelity`) of ``n`` samples against a reference set. The held-out
images are the split :func:`rankplug.app.data.open_dataset` keeps for evaluation; the run never trained on them.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rankplug._validation import check_positive_int
from rankplug.app.data import BUNDLED
from rankplug.app.runs import (
    StageModels,
    holds_run_lock,
    load_stage_models,
    read_json,
    read_run_config,
    stage_files,
    write_json,
)
from rankplug.errors import RunDirectoryError
from rankplug.methods import METHODS

logger = logging.getLogger(__name__)

Printer = Callable[[str], None]


def _echo(message: str) -> None:
    logger.info(message)


def held_out_images(config: Any, count: int) -> Tensor:
    """The first ``count`` held-out images of a run's data, ``(n, C, S, S)`` in ``[-1, 1]`` (``n <= count``)."""
    from rankplug.app.data import open_dataset

    dataset = open_dataset(config.data, config.data_root, config.size, split="held_out")
    n = min(count, len(dataset))  # type: ignore[arg-type]
    return torch.stack([dataset[i][0] for i in range(n)])


def _open(run_dir: Path) -> tuple[Any, list[tuple[int, Path]]]:
    config = read_run_config(run_dir)
    files = stage_files(run_dir)
    if not files:
        raise FileNotFoundError(f"{run_dir} holds no stage checkpoint (models-stage<i>.pt) yet")
    return config, files


def generate(models: StageModels, count: int, seed: int, *, labels: Tensor | None = None) -> Tensor:
    """``count`` samples of the stage's (EMA) generator from ``z`` drawn with ``seed``; a conditional generator
    gets ``labels`` (by default the classes in turn).

    Shape:
        - Output: ``(count, C, S, S)`` in ``[-1, 1]``, on the CPU.
    """
    return torch.cat([batch.cpu() for batch in sample_batches(models, count, seed, labels=labels)])


def sample_batches(
    models: StageModels,
    count: int,
    seed: int,
    *,
    labels: Tensor | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> Iterator[Tensor]:
    """:func:`generate`'s samples as batches of ``batch_size``, made on ``device`` (the generator moves there).

    ``z`` is drawn on the CPU from ``seed`` whatever the device, so a CPU and a GPU evaluation see the same ``z``.

    Shape:
        - Each item: ``(b, C, S, S)`` in ``[-1, 1]`` on ``device``, ``b <= batch_size``; ``count`` in all.
    """
    size = check_positive_int(batch_size, "batch_size")
    G = models.generator.to(device)
    rng = torch.Generator().manual_seed(seed)
    if models.config.latent == "uniform":
        z = torch.rand(count, models.config.nz, generator=rng)
    else:
        z = torch.randn(count, models.config.nz, generator=rng)
    if G.num_classes and labels is None:
        labels = torch.arange(count) % G.num_classes
    with torch.no_grad():
        for k in range(0, count, size):
            chunk_labels = None if labels is None else labels[k : k + size].to(device)
            yield G(z[k : k + size].to(device), chunk_labels)


def _stage_gaps(run_dir: Path) -> dict[int, list[float]]:
    path = run_dir / "history.json"
    if not path.is_file():
        return {}
    history = read_json(path)
    try:
        return {int(e["stage"]): [float(g) for g in e["gap"]] for e in history.get("stages", [])}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise RunDirectoryError(f"{path} is not a valid history file: {error!r}") from error


def digits_metrics(models: StageModels, held_out: Tensor, fid_samples: int, seed: int) -> dict[str, float]:
    """digits-FID, and GAN-train / GAN-test for a conditional generator (label-geometry paper Sec. 4.4)."""
    from rankplug.app.eval import digits as digits_eval

    classifier, split = digits_eval.reference_classifier(models.config.size, source=models.config.data)
    out = {"digits_fid": digits_eval.digits_fid(classifier, held_out, generate(models, fid_samples, seed + 1))}
    if models.num_classes:
        labels = torch.arange(fid_samples) % models.num_classes
        fakes = generate(models, fid_samples, seed + 3, labels=labels)
        out["gan_test"] = digits_eval.gan_test(classifier, fakes, labels)
        out["gan_train"] = digits_eval.gan_train(fakes, labels, split.test_images, split.test_labels)
    return out


@holds_run_lock("eval")
def evaluate_run(
    run_dir: str | Path,
    *,
    completion_images: int = 64,
    completion_steps: int = 100,
    coverages: Sequence[float] | None = None,
    fid_samples: int = 1000,
    inception_weights: str | None = None,
    metrics: Sequence[str] | str | None = None,
    n: int = 50_000,
    reference: Any = None,
    device: str | None = None,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    grid_seed: int = 1234,
    perceptual_weight: float | None = None,
    force: bool = False,
    progress: bool = True,
    echo: Printer = _echo,
) -> list[dict[str, Any]]:
    """Metrics of every stage checkpoint in ``run_dir``: ``eval-stage{i}.json`` and ``samples-stage{i}.png``.

    Per stage: the gap at the end of the stage (mean of its last 5 records), digits-FID (digits runs),
    GAN-train / GAN-test (conditional digits runs), the completion table (:func:`rankplug.app.eval.completion_table`,
    maths §7) on the first ``completion_images`` held-out images from the same ``z`` for every stage (the
    encoder's ``mu`` with an encoder), and the paper metrics when asked for. The perceptual term's
    weight is GoGAN's 0.1 by default, and 0 for ``mbgan`` (its critic gives an embedding, not a score). A
    stage whose saved result matches its checkpoint and these settings is read back unless ``force``.

    Paper metrics (``entry["paper_metrics"]``, :func:`rankplug.app.eval.fidelity.paper_metrics`): with ``metrics``
    (a subset of ``fid, is, kid, prc``), ``n`` samples per stage are generated in batches on ``device`` (CUDA when
    available) and scored through torch-fidelity against ``reference`` (a folder, ``.npz`` or statistics file, see
    :func:`rankplug.app.eval.load_reference`; by default the run's training images), with the weights file
    ``inception_weights`` (or the one :func:`rankplug.app.eval.fidelity_weights` finds). The reference's features are
    computed once and cached by content hash in ``cache_dir``. ``inception_weights`` without ``metrics`` asks for
    FID and IS of ``fid_samples`` samples (``metrics=("fid", "is"), n=fid_samples``), the same way.

    Returns:
        One dict per stage, in stage order.
    """
    from rankplug.app.eval import COVERAGES, distinct_coverages

    run_dir = Path(run_dir)
    config, files = _open(run_dir)
    if metrics is None and inception_weights is not None:  # a weights file alone: FID and IS of fid_samples
        metrics, n = ("fid", "is"), fid_samples
    settings = {
        "completion_images": check_positive_int(completion_images, "completion_images"),
        "completion_steps": check_positive_int(completion_steps, "completion_steps"),
        # the papers' fractions, without those that hide the same square as an earlier one at this size
        "coverages": [float(c) for c in distinct_coverages(COVERAGES if coverages is None else coverages, config.size)],
        "fid_samples": check_positive_int(fid_samples, "fid_samples"),
        "grid_seed": grid_seed,
        "perceptual_weight": perceptual_weight,
    }
    paper = None
    if metrics is not None:
        paper = _PaperMetrics(config, metrics, n, reference, inception_weights, device, batch_size, cache_dir, progress)
        settings["paper_metrics"] = paper.settings
    held_out = held_out_images(config, max(completion_images, fid_samples if config.data in BUNDLED else 0))
    gaps = _stage_gaps(run_dir)
    results = []
    for stage, path in files:
        out_path = run_dir / f"eval-stage{stage}.json"
        models = load_stage_models(path, config=config)
        cached = _cached(out_path) if not force else {}
        if cached.get("generator_steps") == models.generator_steps and cached.get("eval_settings") == settings:
            results.append(cached)
            continue
        entry = _evaluate_stage(run_dir, models, held_out, gaps.get(stage) or [], settings)
        if paper is not None:
            entry["paper_metrics"] = paper.score(models, grid_seed + 4)
        write_json(out_path, entry)
        results.append(entry)
        if progress:
            fid = f", digits-FID {entry['digits_fid']:.2f}" if "digits_fid" in entry else ""
            psnr = sum(entry["completion"]["psnr"]) / len(entry["completion"]["psnr"])
            scores = entry.get("paper_metrics") or {}
            shown = "".join(f", {name} {scores[name]:.4g}" for name in _SHOWN if name in scores)
            echo(f"[eval] {run_dir.name} stage {stage}{fid}, completion PSNR {psnr:.2f} dB{shown}")
    return results


_SHOWN = ("fid", "is_mean", "kid_mean", "precision", "recall")


class _PaperMetrics:
    """The paper metrics of a run's stages: the extractor and the reference are loaded once for all stages."""

    def __init__(
        self,
        config: Any,
        metrics: Sequence[str] | str,
        n: int,
        reference: Any,
        weights: str | None,
        device: str | None,
        batch_size: int,
        cache_dir: str | Path | None,
        progress: bool,
    ) -> None:
        from rankplug.app.eval.fidelity import FidelityExtractor, ReferenceSetError, minimum_samples, parse_metrics
        from rankplug.app.eval.reference import load_reference

        self.metrics = parse_metrics(metrics)
        self.n = check_positive_int(n, "n")
        least = minimum_samples(self.metrics)
        if self.n < least:
            raise ValueError(f"n must be >= {least} for metrics {','.join(self.metrics)}; got {self.n}")
        self.progress = progress
        self.extractor = FidelityExtractor(weights, device=device, batch_size=batch_size)
        started = time.perf_counter()
        if reference is None:
            images = _training_images(config)
            loaded = load_reference(images, self.extractor, cache_dir=cache_dir, progress=progress)
            self.reference = loaded._replace(source=f"the run's training images ({config.data}, {len(images)})")
        else:
            self.reference = load_reference(reference, self.extractor, cache_dir=cache_dir, progress=progress)
        self.reference_seconds = time.perf_counter() - started
        if self.reference.features is None and {"kid", "prc"} & set(self.metrics):
            raise ReferenceSetError(
                f"{self.reference.source} holds statistics (mu, sigma) only; kid and prc need the real images "
                "(a folder or an .npz of images or features)"
            )
        self.settings = {
            "metrics": list(self.metrics),
            "n": self.n,
            "reference": self.reference.key,
            "weights_sha256": self.extractor.weights_sha256,
        }

    def score(self, models: StageModels, seed: int) -> dict[str, Any]:
        from rankplug.app.eval.fidelity import paper_metrics, to_uint8

        started = time.perf_counter()
        device = self.extractor.device
        batches = (to_uint8(batch) for batch in sample_batches(models, self.n, seed, device=device))
        desc = f"stage {models.stage}: {self.n} samples"
        features = self.extractor.extract(batches, total=self.n, progress=self.progress, desc=desc)
        samples_seconds = time.perf_counter() - started
        out = paper_metrics(self.reference, features, self.metrics, device=str(device))
        out["seconds"].update(samples=samples_seconds, reference=self.reference_seconds)
        out.update(
            n=self.n,
            reference={
                "source": self.reference.source,
                "images": self.reference.num_images,
                "sha256": self.reference.key,
            },
            weights=str(self.extractor.weights),
            device=str(device),
        )
        return out


def _training_images(config: Any) -> Any:
    """The run's training images at the run's size: the default reference of the paper metrics."""
    from rankplug.app.data import open_dataset

    return open_dataset(config.data, config.data_root, config.size, split="train")


def _cached(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return dict(read_json(path))
    except RunDirectoryError:  # our own cache: a damaged one is recomputed
        return {}


def _evaluate_stage(
    run_dir: Path,
    models: StageModels,
    held_out: Tensor,
    gaps: list[float],
    settings: dict[str, Any],
) -> dict[str, Any]:
    from rankplug.app.report import save_grid

    started = time.perf_counter()
    stage, seed = models.stage, settings["grid_seed"]
    grid = save_grid(generate(models, 64, seed), run_dir / f"samples-stage{stage}.png")
    entry: dict[str, Any] = {
        "stage": stage,
        "method": models.config.method,
        "generator_steps": models.generator_steps,
        "samples": grid.name,
        "eval_settings": settings,
        "gap_end": float(sum(gaps[-5:]) / len(gaps[-5:])) if gaps else None,
    }
    if models.config.data in BUNDLED:
        entry.update(digits_metrics(models, held_out, settings["fid_samples"], seed))
    entry["completion"] = _completion(models, held_out[: settings["completion_images"]], settings)
    entry["eval_seconds"] = time.perf_counter() - started
    return entry


def _perceptual_weight(models: StageModels, weight: float | None) -> float:
    if METHODS[models.config.method].embeds:  # an embedding, not a score: no perceptual term
        return 0.0
    return 0.1 if weight is None else weight


def _completion(models: StageModels, targets: Tensor, settings: dict[str, Any]) -> dict[str, Any]:
    from rankplug.app.eval import completion_table

    if models.num_classes:  # a conditional generator needs a label per image: completion is not defined
        return {"coverages": settings["coverages"], "psnr": [math.nan], "ssim": [math.nan], "hole_psnr": [math.nan]}
    weight = _perceptual_weight(models, settings["perceptual_weight"])
    init = None
    if models.encoder is not None:
        with torch.no_grad():
            init = {"stage": models.encoder(targets)[0]}
    rows = completion_table(
        {"stage": (models.generator, None if weight == 0 else models.discriminator)},
        targets,
        coverages=tuple(settings["coverages"]),
        latent_shape=(models.config.nz,),
        steps=settings["completion_steps"],
        perceptual_weight=weight,
        init_latents=init,
    )
    return {k: rows[0][k] for k in ("coverages", "psnr", "ssim", "hole_psnr")}


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
    """Image completion (GoGAN Eq. 30-33, RankGAN Eq. 8-11; maths §7) of every stage of a run, side by side.

    Every stage completes the same ``images`` held-out images from the same starting ``z`` (or its encoder's
    ``mu``). Writes ``completion.json`` (the :func:`rankplug.app.eval.completion_table` rows), ``completion.md`` and
    ``completion.png`` (for the middle coverage: originals, the masked input, then one row per stage), and
    returns the Markdown table (cells ``PSNR / SSIM / hole PSNR``).
    """
    from rankplug.app.eval import COVERAGES, center_mask, complete_images, completion_table, format_table
    from rankplug.app.report import save_grid

    images = check_positive_int(images, "images")
    run_dir = Path(run_dir)
    config, files = _open(run_dir)
    if config.conditional:
        raise ValueError(f"{run_dir} is a conditional run: completion needs a label per image, which it has not")
    targets = held_out_images(config, images)
    models = {f"stage {stage}": load_stage_models(path, config=config) for stage, path in files}
    weight = 0.0 if METHODS[config.method].embeds else perceptual_weight  # an embedding has no perceptual term
    inits = {}
    for name, m in models.items():
        if m.encoder is not None:
            with torch.no_grad():
                inits[name] = m.encoder(targets)[0]
    nets = {name: (m.generator, None if weight == 0 else m.discriminator) for name, m in models.items()}
    coverage_list = tuple(COVERAGES if coverages is None else coverages)
    common: dict[str, Any] = {
        "latent_shape": (config.nz,),
        "steps": steps,
        "perceptual_weight": weight,
        "generator_seed": seed,
    }
    rows = completion_table(
        nets, targets, coverages=coverage_list, init_latents=inits or None, progress=progress, **common
    )
    mask = center_mask(config.size, coverage_list[len(coverage_list) // 2])
    shown = targets[:8]
    pictures = [shown, shown * mask + (1 - mask) * -1]
    for name, (G, D) in nets.items():
        init = inits[name][:8] if name in inits else None
        pictures.append(complete_images(G, D, shown, mask, init_latent=init, **common).completed)  # type: ignore[arg-type]
    save_grid(torch.cat(pictures), run_dir / "completion.png", nrow=shown.shape[0])
    table = format_table(rows, hole=True)
    write_json(run_dir / "completion.json", {"rows": rows, "images": images, "steps": steps, "seed": seed})
    (run_dir / "completion.md").write_text(
        f"# Image completion of {run_dir.name}\n\nCells: PSNR (dB) / SSIM / hole-only PSNR (dB), mean over "
        f"{targets.shape[0]} held-out images, {steps} RMSprop steps, lambda = {weight:g}.\n\n{table}\n\n"
        f"![completion](completion.png) (rows: originals, masked, then stage 1, 2, ...)\n"
    )
    return table


def sample_run(run_dir: str | Path, *, n: int, out: str | Path, stage: int | None = None, seed: int = 0) -> Path:
    """``rankplug sample``: ``n`` samples of a stage (the last by default) to ``out``.

    ``out`` ending in ``.npz`` gets one array ``images``, float32 ``(n, C, H, W)`` in ``[-1, 1]``; any other
    ``out`` is a new (or empty) folder that gets ``000000.png``, ``000001.png``, ... (8-bit, what FID tools read).
    A conditional generator gets the classes in turn. Returns ``out``.

    Nothing is written in place: the file or folder is written under a temporary name beside ``out`` and renamed
    into place when complete, so a killed call leaves the earlier ``out`` as it was (and at worst a hidden
    ``.<name>.tmp-*`` beside it). ``out`` is refused when it is a symbolic link, a non-empty folder, or when ``n``
    images would not fit in memory.
    """
    import tempfile

    import numpy as np

    n = check_positive_int(n, "n")
    run_dir = Path(run_dir)
    config, files = _open(run_dir)
    chosen = dict(files)
    if stage is None:
        stage = files[-1][0]
    if stage not in chosen:
        raise ValueError(f"--stage {stage}: {run_dir} has stages {', '.join(str(s) for s, _ in files)}")
    target = Path(out)
    _check_sample_target(target)
    models = load_stage_models(chosen[stage], config=config)
    channels = models.generator.channels
    needed = 2 * n * channels * config.size * config.size * 4  # the float32 images and their copy on the way out
    if needed > _memory_bytes() // 2:
        largest = _memory_bytes() // 2 // (2 * channels * config.size * config.size * 4)
        raise ValueError(f"--n {n}: {needed / 2**30:.1f} GiB of images does not fit here; at most {largest:,} at once")
    images = generate(models, n, seed)
    if target.suffix == ".npz":
        from rankplug.stages.checkpoint import atomic_write

        buffer = io.BytesIO()
        np.savez(buffer, images=images.numpy().astype(np.float32))
        atomic_write(target, buffer.getbuffer())
        return target
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    pixels = images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for k, array in enumerate(pixels):
        picture = Image.fromarray(
            array[:, :, 0] if array.shape[2] == 1 else array, mode="L" if array.shape[2] == 1 else "RGB"
        )
        picture.save(staging / f"{k:06d}.png")
    if target.is_dir():
        target.rmdir()  # empty (checked above); a file planted in it since makes this fail instead of mixing sets
    os.replace(staging, target)
    return target


def _check_sample_target(target: Path) -> None:
    """Refuse an ``--out`` that is a link, a non-empty folder, or a folder where a ``.npz`` file is asked for."""
    if target.is_symlink():
        raise ValueError(f"--out {target} is a symbolic link; rankplug sample never writes through a link")
    if target.suffix == ".npz":
        if target.is_dir():
            raise ValueError(f"--out {target} is a folder; a .npz output must be a file name")
        return
    if target.exists() and not target.is_dir():
        raise ValueError(f"--out {target} is a file; give a folder for PNG images, or a name ending in .npz")
    if target.is_dir() and any(target.iterdir()):
        raise ValueError(f"--out {target} is a folder that is not empty; give a new or empty folder")


def _memory_bytes() -> int:
    """This machine's physical memory, in bytes."""
    return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


__all__ = [
    "complete_run",
    "digits_metrics",
    "evaluate_run",
    "generate",
    "held_out_images",
    "sample_batches",
    "sample_run",
]
