"""Image completion with a trained GAN and its PSNR / SSIM scores: GoGAN Eq. 30-33, RankGAN Eq. 8-11 (maths §7).

A centred square of the image is hidden (:func:`center_mask`), a latent code is searched whose generated image
matches the known pixels and looks real to the critic (:func:`complete_images`), and the completed images are
scored against the originals (:func:`psnr`, :func:`ssim`, :func:`completion_table`, :func:`format_table`).

kornia is an optional dependency (the ``eval`` extra); it is imported only inside :func:`psnr` and :func:`ssim`.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rankplug._validation import (
    check_int_at_least,
    check_nonnegative,
    check_positive,
    check_real,
    check_tensor,
    per_sample_scores,
    shape_str,
)
from rankplug.app.eval.quality import check_images, check_mask, hole_psnr, psnr, ssim
from rankplug.functional.penalty import OutputSelector, select_scores

logger = logging.getLogger(__name__)

__all__ = [
    "COVERAGES",
    "Completion",
    "center_mask",
    "complete_images",
    "completion_table",
    "distinct_coverages",
    "format_table",
    "hole_psnr",
    "hole_side",
    "psnr",
    "ssim",
]

COVERAGES: tuple[float, ...] = (0.09, 0.25, 0.49, 0.64, 0.81)
"""The occluded fractions of GoGAN Tables 2-5 and RankGAN Sec. 5: 9, 25, 49, 64 and 81 % of the image."""


def _check_coverage(coverage: object) -> float:
    result = check_real(coverage, "coverage")
    if not 0.0 < result < 1.0:
        raise ValueError(f"coverage must lie in the open interval (0, 1), e.g. 0.25 for 25 %; got {result}")
    return result


def distinct_coverages(coverages: Sequence[float], size: int) -> tuple[float, ...]:
    """``coverages`` without those whose hole (:func:`hole_side`) at ``size`` pixels is an earlier one's: at small
    sizes two of the papers' fractions hide the same square, and a table would show the same numbers twice.

    Example:
        >>> from rankplug.app.eval import COVERAGES, distinct_coverages
        >>> distinct_coverages(COVERAGES, 8), distinct_coverages(COVERAGES, 32) == COVERAGES
        ((0.09, 0.25, 0.49, 0.81), True)
    """
    kept: dict[int, float] = {}
    for coverage in coverages:
        kept.setdefault(hole_side(size, coverage), coverage)
    return tuple(kept.values())


def hole_side(size: int, coverage: float) -> int:
    """Side in pixels of the centred square hole: ``round(size * sqrt(coverage))``, halves rounded up (see :func:`center_mask`).

    Example:
        >>> from rankplug.app.eval import hole_side
        >>> [hole_side(32, c) for c in (0.09, 0.25, 0.49, 0.64, 0.81)]
        [10, 16, 22, 26, 29]
    """
    size = check_int_at_least(size, "size", 1)
    coverage = _check_coverage(coverage)
    # Ties (e.g. size 5, coverage 0.25: 2.5 pixels) round up rather than to even as Python's round() does; the
    # 1e-9 absorbs float noise such as 5 * sqrt(0.09) = 1.4999999999999998, so a tie never depends on rounding error.
    return math.floor(size * math.sqrt(coverage) + 0.5 + 1e-9)


def center_mask(
    size: int,
    coverage: float,
    *,
    channels: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Binary mask of the **known** pixels with a centred square hole, GoGAN Sec. 5.3, RankGAN Sec. 5 (maths §7).

    .. math::
        M_{ij} = 0 \text{ if } t \le i, j < t + s \text{ else } 1, \qquad
        s = \operatorname{round}\big(\text{size} \sqrt{\text{coverage}}\big), \quad t = \lfloor (\text{size} - s) / 2 \rfloor

    ``1`` marks a known pixel and ``0`` a pixel to complete, as ``M`` in GoGAN Eq. 30. The rounding takes halves
    up (:func:`hole_side`). The hole covers
    ``s**2 / size**2`` of the image, the square fraction nearest to ``coverage`` that the pixel grid allows
    (e.g. 100/1024 = 9.8 % for ``coverage=0.09`` at 32 x 32). When ``size - s`` is odd the hole sits half a pixel
    up and left of the exact centre. With ``s = 0`` (a tiny image and a tiny coverage) nothing is hidden.

    Args:
        size: image height and width in pixels (images are square), ``>= 1``.
        coverage: fraction of the image to hide, in ``(0, 1)``; the papers use :data:`COVERAGES`.
        channels: number of channels of the mask, ``>= 1``; ``1`` broadcasts over any number of image channels.
        device: device of the mask.
        dtype: floating-point dtype of the mask (values exactly 0 and 1).

    Shape:
        - Output: ``(1, channels, size, size)``.

    Example:
        >>> from rankplug.app.eval import center_mask
        >>> mask = center_mask(8, 0.25)
        >>> mask.shape
        torch.Size([1, 1, 8, 8])
        >>> int((mask == 0).sum())  # a 4 x 4 hole
        16
        >>> mask[0, 0, 2:6, 2:6].sum().item()
        0.0
    """
    side = hole_side(size, coverage)
    channels = check_int_at_least(channels, "channels", 1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
    mask = torch.ones(1, channels, size, size, device=device, dtype=dtype)
    top = (size - side) // 2
    mask[..., top : top + side, top : top + side] = 0
    return mask


@dataclass
class Completion:
    """Result of :func:`complete_images`; every tensor is detached.

    Attributes:
        completed: ``M * y + (1 - M) * G(z_hat)``, shape ``(N, C, H, W)``; equal to ``images`` where ``M = 1``.
        generated: ``G(z_hat)``, shape ``(N, C, H, W)``.
        latent: ``z_hat``, shape ``(N, *latent_shape)``.
        loss_history: the objective (batch mean) after ``0, 1, ..., steps`` updates, ``steps + 1`` floats.
    """

    completed: Tensor
    generated: Tensor
    latent: Tensor
    loss_history: list[float] = field(default_factory=list)


def _check_latent_shape(latent_shape: object) -> tuple[int, ...]:
    if isinstance(latent_shape, numbers.Integral) and not isinstance(latent_shape, bool):
        latent_shape = (int(latent_shape),)
    if not isinstance(latent_shape, (tuple, list, torch.Size)) or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and int(d) >= 1 for d in latent_shape
    ):
        raise ValueError(f"latent_shape must be a tuple of ints >= 1 (one sample's latent shape); got {latent_shape!r}")
    return tuple(int(d) for d in latent_shape)


def _modules(*models: object) -> list[nn.Module]:
    return [m for model in models if isinstance(model, nn.Module) for m in model.modules()]


def complete_images(
    generator: Callable[[Tensor], Tensor],
    discriminator: Callable[[Tensor], Any] | None,
    images: Tensor,
    mask: Tensor,
    *,
    latent_shape: Sequence[int] | int,
    perceptual_weight: float = 0.1,
    steps: int = 100,
    lr: float = 0.01,
    init_latent: Tensor | None = None,
    output_selector: OutputSelector = None,
    generator_seed: int | None = None,
    progress: bool = False,
) -> Completion:
    r"""Fill the hole of each image from a trained GAN, GoGAN Eq. 30-33, RankGAN Eq. 8-11 (maths §7).

    .. math::
        \hat z = \arg\min_z \; \frac1N \sum_k \Big( \big\lVert M \odot G(z_k) - M \odot y_k \big\rVert_1
        - \lambda\, D(G(z_k)) \Big), \qquad
        y^{\text{completed}}_k = M \odot y_k + (1 - M) \odot G(\hat z_k)

    The contextual term is the L1 distance summed over the known pixels of one image; the perceptual term
    ``-D(G(z))`` uses one score per sample (a PatchGAN map is averaged over its non-batch dimensions); both are
    averaged over the batch. As in the authors' code, ``z`` starts from ``init_latent`` (for instance the mean
    ``mu`` of an encoder) or from ``N(0, I)`` and is updated by ``torch.optim.RMSprop`` for ``steps`` steps;
    the SSIM term the authors add is left out. ``y = images``: only the pixels where ``M = 1`` are read, so the
    corrupted input ``M * images`` and ``images`` give the same result.

    ``G`` and ``D`` are not updated: gradients are taken with respect to ``z`` only, so no ``.grad`` accumulates in
    their parameters, and every submodule is put in eval mode (BatchNorm running statistics, no dropout) for
    the search and restored to its own mode afterwards. The search runs under ``torch.enable_grad()``, so it
    also works inside ``torch.no_grad()``.

    Args:
        generator: ``G``, mapping ``(N, *latent_shape)`` latents to ``(N, C, H, W)`` images.
        discriminator: ``D``; its output may be a tuple or dict picked by ``output_selector``. May be ``None``
            only when ``perceptual_weight == 0``.
        images: the ground-truth images ``y``; only the pixels where ``mask == 1`` are used.
        mask: ``M``, 1 for a known pixel and 0 for the hole (see :func:`center_mask`); bool or 0/1 values.
        latent_shape: shape of one sample's latent, e.g. ``(100,)`` or ``(100, 1, 1)`` for DCGAN.
        perceptual_weight: ``lambda >= 0`` (GoGAN: 0.1).
        steps: number of RMSprop updates, ``>= 0``; ``0`` returns the completion from the starting ``z``.
        lr: RMSprop learning rate, ``> 0``.
        init_latent: starting ``z`` of shape ``(N, *latent_shape)``; drawn from ``N(0, I)`` if omitted.
        output_selector: picks the score from a tuple/dict discriminator output (``0`` for StarGAN), or a callable.
        generator_seed: seed of the ``torch.Generator`` that draws the starting ``z``; the global RNG if ``None``.
        progress: print the objective to stderr about ten times during the search.

    Returns:
        A :class:`Completion` with ``completed``, ``generated``, ``latent`` and ``loss_history``.

    Shape:
        - images: ``(N, C, H, W)``.
        - mask: ``(1 or N, 1 or C, H, W)``.
        - init_latent: ``(N, *latent_shape)``.
        - Output: ``completed`` and ``generated`` ``(N, C, H, W)``, ``latent`` ``(N, *latent_shape)``.

    Example:
        >>> from rankplug.app.eval import center_mask, complete_images
        >>> G = torch.nn.Sequential(torch.nn.Linear(4, 3 * 8 * 8), torch.nn.Tanh(), torch.nn.Unflatten(1, (3, 8, 8)))
        >>> D = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1))
        >>> images = torch.rand(2, 3, 8, 8) * 2 - 1
        >>> mask = center_mask(8, 0.25)
        >>> result = complete_images(G, D, images, mask, latent_shape=(4,), steps=20, generator_seed=0)
        >>> result.completed.shape, result.latent.shape, len(result.loss_history)
        (torch.Size([2, 3, 8, 8]), torch.Size([2, 4]), 21)
        >>> bool((result.completed[:, :, :2] == images[:, :, :2]).all())  # known pixels are kept
        True
        >>> G[0].weight.grad is None  # G is not trained
        True
    """
    if not callable(generator):
        raise TypeError(f"generator must be callable; got {type(generator).__name__}")
    images = check_images(images)
    bool_mask = check_mask(mask, images)
    shape = _check_latent_shape(latent_shape)
    lam = check_nonnegative(perceptual_weight, "perceptual_weight")
    steps = check_int_at_least(steps, "steps", 0)
    lr = check_positive(lr, "lr")
    if discriminator is None and lam > 0:
        raise ValueError(f"discriminator is None but perceptual_weight={lam}; pass D, or perceptual_weight=0")
    if discriminator is not None and not callable(discriminator):
        raise TypeError(f"discriminator must be callable or None; got {type(discriminator).__name__}")
    n = images.shape[0]
    if init_latent is None:
        rng = None
        if generator_seed is not None:
            seed = check_int_at_least(generator_seed, "generator_seed", 0)
            rng = torch.Generator(device=images.device).manual_seed(seed)
        z0 = torch.randn((n, *shape), generator=rng, device=images.device, dtype=images.dtype)
    else:
        z0 = check_tensor(init_latent, "init_latent")
        if tuple(z0.shape) != (n, *shape):
            raise ValueError(f"init_latent has shape {shape_str(z0)}; expected (N, *latent_shape) = {(n, *shape)}")
    z = z0.detach().clone().to(images.device).requires_grad_(True)
    target = images.detach()
    weight = bool_mask.to(images.dtype)

    def objective() -> tuple[Tensor, Tensor]:
        generated = generator(z)
        if not isinstance(generated, Tensor) or generated.shape != images.shape:
            got = shape_str(generated) if isinstance(generated, Tensor) else type(generated).__name__
            raise ValueError(
                f"the generator returned {got} for latents of shape {shape_str(z)}; expected "
                f"{shape_str(images)}, the shape of images"
            )
        # Multiplying by M (not indexing) keeps the per-sample sum a plain reduction; the hole contributes 0.
        contextual = (weight * (generated - target)).abs().flatten(1).sum(dim=1)
        loss = contextual.mean()
        if lam > 0 and discriminator is not None:
            scores = per_sample_scores(select_scores(discriminator(generated), output_selector), "discriminator output")
            if scores.shape[0] != n:
                raise ValueError(f"the discriminator returned {scores.shape[0]} scores for a batch of {n}")
            loss = loss + lam * (-scores).mean()
        return loss, generated

    modules = _modules(generator, discriminator)
    modes = [m.training for m in modules]
    history: list[float] = []
    try:
        for m in modules:
            m.train(False)
        optimizer = torch.optim.RMSprop([z], lr=lr)
        report_every = max(1, steps // 10)
        with torch.enable_grad():
            for step in range(steps):
                loss, _ = objective()
                history.append(float(loss.detach()))
                # Gradient with respect to z only: G's and D's parameters get no .grad, so a training loop
                # sharing these models never sees stray gradients from the evaluation.
                (grad,) = torch.autograd.grad(loss, [z])
                z.grad = grad
                optimizer.step()
                if progress and (step % report_every == 0 or step == steps - 1):
                    logger.info(f"complete_images: step {step + 1}/{steps}, loss {history[-1]:.4f}")
            with torch.no_grad():
                loss, generated = objective()
        history.append(float(loss))
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode
    generated = generated.detach()
    completed = torch.where(bool_mask, target, generated)
    return Completion(completed=completed, generated=generated, latent=z.detach(), loss_history=history)


def completion_table(
    generators: Mapping[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Any] | None]],
    images: Tensor,
    *,
    coverages: Sequence[float] = COVERAGES,
    latent_shape: Sequence[int] | int,
    steps: int,
    perceptual_weight: float = 0.1,
    lr: float = 0.01,
    init_latents: Mapping[str, Tensor] | None = None,
    output_selector: OutputSelector = None,
    generator_seed: int | None = 0,
    data_range: float = 2.0,
    window_size: int = 11,
    progress: bool = False,
) -> list[dict[str, Any]]:
    r"""PSNR / SSIM of image completion per model and occlusion, GoGAN Tables 2-5 (maths §7).

    For each named ``(G, D)`` pair and each coverage, the images are hidden behind :func:`center_mask`,
    completed with :func:`complete_images` and scored against the originals. As in the papers, ``psnr`` and
    ``ssim`` score the **whole completed image** (the known pixels are copied, so they are exact and the scores
    rise as the coverage falls); ``hole_psnr`` (:func:`hole_psnr`) scores the generated pixels alone. Each value is
    the mean over the images. With the default ``generator_seed=0`` every model and coverage starts from the same
    ``z`` (when the latent shapes agree), so the comparison is paired.

    Args:
        generators: model name (e.g. ``"WGAN"``, ``"Stage 1"``, ``"Stage 2"``) to its ``(G, D)`` pair.
        images: ground-truth square images in the range given by ``data_range``.
        coverages: occluded fractions, each in ``(0, 1)``.
        latent_shape: one sample's latent shape, shared by every model.
        steps: RMSprop steps of the latent search.
        perceptual_weight: ``lambda`` of the perceptual term (GoGAN: 0.1).
        lr: RMSprop learning rate.
        init_latents: optional model name to starting ``z`` (e.g. its encoder's ``mu``); missing names draw ``z``.
        output_selector: picks the score from a tuple/dict discriminator output.
        generator_seed: seed of the starting ``z``; ``None`` uses the global RNG.
        data_range: span of pixel values (2 for ``[-1, 1]``).
        window_size: SSIM window size.
        progress: print one line per model and coverage to stderr.

    Returns:
        One row per model, in the order of ``generators``: a dict with ``"model"`` (the name), ``"coverages"``
        (tuple of floats) and the aligned lists ``"psnr"``, ``"ssim"`` and ``"hole_psnr"`` (floats, one per coverage).

    Shape:
        - images: ``(N, C, S, S)``.

    Example:
        >>> from rankplug.app.eval import completion_table, format_table
        >>> G = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 8, 8)))
        >>> D = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))
        >>> rows = completion_table({"WGAN": (G, D)}, torch.rand(2, 1, 8, 8) * 2 - 1, coverages=(0.25, 0.64),
        ...                         latent_shape=(4,), steps=5, window_size=7)
        >>> rows[0]["model"], rows[0]["coverages"], len(rows[0]["psnr"])
        ('WGAN', (0.25, 0.64), 2)
        >>> print(format_table(rows).splitlines()[0])
        | Model | 25% | 64% |
    """
    if not isinstance(generators, Mapping) or len(generators) == 0:
        raise ValueError("generators must be a non-empty dict of model name -> (generator, discriminator)")
    images = check_images(images)
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images has shape {shape_str(images)}; expected square images (N, C, S, S)")
    coverage_list = tuple(_check_coverage(c) for c in coverages)
    if not coverage_list:
        raise ValueError("coverages is empty; expected at least one fraction in (0, 1)")
    init_latents = dict(init_latents or {})
    unknown = set(init_latents) - set(generators)
    if unknown:
        raise ValueError(f"init_latents names models not in generators: {sorted(unknown)}")
    rows: list[dict[str, Any]] = []
    for name, pair in generators.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"generators[{name!r}] must be a (generator, discriminator) pair; got {pair!r}")
        g, d = pair
        row: dict[str, Any] = {"model": name, "coverages": coverage_list, "psnr": [], "ssim": [], "hole_psnr": []}
        for coverage in coverage_list:
            mask = center_mask(images.shape[-1], coverage, device=images.device, dtype=images.dtype)
            result = complete_images(
                g,
                d,
                images,
                mask,
                latent_shape=latent_shape,
                perceptual_weight=perceptual_weight,
                steps=steps,
                lr=lr,
                init_latent=init_latents.get(name),
                output_selector=output_selector,
                generator_seed=generator_seed,
            )
            row["psnr"].append(float(psnr(result.completed, images, data_range=data_range).mean()))
            row["ssim"].append(
                float(ssim(result.completed, images, data_range=data_range, window_size=window_size).mean())
            )
            row["hole_psnr"].append(float(hole_psnr(result.completed, images, mask, data_range=data_range).mean()))
            if progress:
                logger.info(
                    f"completion_table: {name}, coverage {coverage:g}: PSNR {row['psnr'][-1]:.2f} dB, "
                    f"SSIM {row['ssim'][-1]:.3f}, hole PSNR {row['hole_psnr'][-1]:.2f} dB"
                )
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], *, hole: bool = False) -> str:
    """Markdown table of :func:`completion_table` rows, laid out like GoGAN Table 2.

    One row per model, one column per coverage (as a percentage), cells ``"PSNR / SSIM"`` with PSNR in dB to two
    decimals and SSIM to three; ``hole=True`` appends the hole-only PSNR as ``"PSNR / SSIM / hole PSNR"``.
    Every row must have the same coverages.

    Args:
        rows: the output of :func:`completion_table`.
        hole: also show the hole-only PSNR.

    Example:
        >>> from rankplug.app.eval import format_table
        >>> row = {"model": "Stage 2", "coverages": (0.09, 0.25), "psnr": [30.1, 25.5], "ssim": [0.95, 0.9],
        ...        "hole_psnr": [20.0, 18.2]}
        >>> print(format_table([row]))
        | Model | 9% | 25% |
        |---|---|---|
        | Stage 2 | 30.10 / 0.950 | 25.50 / 0.900 |
    """
    if len(rows) == 0:
        raise ValueError("rows is empty; expected the output of completion_table")
    coverages = tuple(rows[0]["coverages"])
    for row in rows:
        if tuple(row["coverages"]) != coverages:
            raise ValueError(
                f"row {row['model']!r} has coverages {tuple(row['coverages'])}; expected {coverages} as in the first row"
            )
    header = "| Model | " + " | ".join(f"{100 * c:g}%" for c in coverages) + " |"
    lines = [header, "|" + "---|" * (len(coverages) + 1)]
    for row in rows:
        cells = []
        for k in range(len(coverages)):
            cell = f"{row['psnr'][k]:.2f} / {row['ssim'][k]:.3f}"
            if hole:
                cell += f" / {row['hole_psnr'][k]:.2f}"
            cells.append(cell)
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
