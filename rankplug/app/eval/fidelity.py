r"""FID, Inception Score, KID and precision/recall the way papers compute them, through torch-fidelity.

The features come from torch-fidelity's ``FeatureExtractorInceptionV3`` (``"inception-v3-compat"``): the
TensorFlow FID Inception (``inception-2015-12-05``, the network of TTUR's ``fid.py`` and of the original
Inception Score code) ported to PyTorch, fed 8-bit RGB images and resized to 299 x 299 with a bilinear
resampling that reproduces TensorFlow 1.x's ``tf.image.resize_bilinear``. torch-fidelity reports that its values
match the reference implementations to floating-point precision, which is why it is the one backend here. The
weights come from a local file (:func:`fidelity_weights` finds it; nothing is downloaded), which rankplug reads
once, with ``torch.load(weights_only=True)`` (:func:`read_inception_weights`). torch-fidelity gets the checked
tensors, never the file's path: it would open the path again with ``weights_only=False``, which runs any code
pickled into the file. Finding and checking the weights file is :mod:`rankplug.app.eval.inception_weights`'s work,
whose names this module re-exports.

- **FID** (Heusel et al. 2017, Eq. 6) on the 2048-d pool features,

  .. math::
      \mathrm{FID} = \lVert \mu_r - \mu_g \rVert^2
                     + \operatorname{tr}\big(\Sigma_r + \Sigma_g - 2 (\Sigma_r^{1/2} \Sigma_g \Sigma_r^{1/2})^{1/2}\big).

- **Inception Score** (Salimans et al. 2016), :math:`\exp \mathbb{E}_x \mathrm{KL}(p(y \mid x) \Vert p(y))` over
  the 1008 classes of the unbiased logits, mean and standard deviation over 10 splits.
- **KID** (Binkowski et al. 2018, Eq. 4): the unbiased estimate of the squared MMD with the kernel
  :math:`k(x, y) = (x^\top y / d + 1)^3`, averaged over 100 random subsets of 1000 features per side,

  .. math::
      \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)} \sum_{i \ne j} \big(k(x_i, x_j) + k(y_i, y_j)\big)
                                 - \frac{2}{m^2} \sum_{i, j} k(x_i, y_j).

- **Precision / recall** (Kynkäänniemi et al. 2019, Eq. 1-2): the share of generated features inside the union
  of the real features' 3-nearest-neighbour balls, and the share of real features inside the generated ones'.

torch-fidelity and torchvision are optional dependencies (``pip install "rankplug[eval]"``), imported only when
features are extracted or a metric is computed. The reference sets (real images, statistics files, the cache) are
:mod:`rankplug.app.eval.reference`'s, which this module builds on. ``docs/evaluation.md`` says how these numbers
compare with the papers'.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any, NamedTuple, Union

import torch
from torch import Tensor

from rankplug._validation import check_dense, check_positive_int, shape_str
from rankplug.app.eval.digits import frechet_distance
from rankplug.app.eval.inception_weights import (
    EXTRACTOR_NAME,
    NUM_CLASSES,
    InceptionWeights,
    InceptionWeightsNotFound,
    fidelity_weights,
    inception_network,
    read_inception_weights,
)
from rankplug.app.eval.inception_weights import (
    FIDELITY_WEIGHTS_FILENAME as FIDELITY_WEIGHTS_FILENAME,
)
from rankplug.app.eval.inception_weights import (
    INCEPTION_WEIGHTS_ENV as INCEPTION_WEIGHTS_ENV,
)
from rankplug.app.eval.inception_weights import (
    INCEPTION_WEIGHTS_FILENAME as INCEPTION_WEIGHTS_FILENAME,
)
from rankplug.app.eval.inception_weights import (
    INCEPTION_WEIGHTS_URL as INCEPTION_WEIGHTS_URL,
)
from rankplug.app.eval.inception_weights import (
    MAX_WEIGHTS_BYTES as MAX_WEIGHTS_BYTES,
)
from rankplug.app.eval.reference import (
    Reference,
    ReferenceSetError,
    check_features,
    load_reference,
    to_uint8,
)

# The weights' names and limits are re-exported from rankplug.app.eval.inception_weights, where they are listed.
__all__ = [
    "EXTRACTOR_NAME",
    "METRICS",
    "NUM_CLASSES",
    "FidelityExtractor",
    "InceptionFeatures",
    "InceptionWeights",
    "InceptionWeightsNotFound",
    "Reference",
    "ReferenceSetError",
    "default_device",
    "fid_from_features",
    "fidelity_metrics",
    "fidelity_weights",
    "inception_score",
    "kernel_inception_distance",
    "minimum_samples",
    "paper_metrics",
    "parse_metrics",
    "precision_recall",
    "read_inception_weights",
    "to_uint8",
]

METRICS: tuple[str, ...] = ("fid", "is", "kid", "prc")
"""The metrics :func:`rankplug.app.eval.paper_metrics` computes: FID, Inception Score, KID, precision/recall."""

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # torch-fidelity's and Binkowski et al.'s defaults
IS_SPLITS, PRC_NEIGHBOURHOOD = 10, 3
SEED = 2020  # torch-fidelity's default rng_seed: the IS shuffle and the KID subsets are the ones it would draw
_EVAL_EXTRA = 'pip install "rankplug[eval]"'
PathLike = Union[str, "os.PathLike[str]"]


def _import_fidelity() -> ModuleType:
    """torch_fidelity, or an ImportError that says how to install it."""
    try:
        import torch_fidelity
    # A torchvision built for another torch fails inside its C extension with RuntimeError or OSError.
    except (ImportError, OSError, RuntimeError) as error:
        raise ImportError(
            f"FID / IS / KID / precision-recall need torch-fidelity and torchvision: {_EVAL_EXTRA} "
            f"(torchvision must be the build made for torch {torch.__version__}); the import failed with: {error}"
        ) from error
    return torch_fidelity


def minimum_samples(metrics: Sequence[str]) -> int:
    """The fewest generated images ``metrics`` allow: 10 with IS (10 splits), 4 with precision/recall, else 2.

    Example:
        >>> minimum_samples(("fid", "prc"))
        4
    """
    names = parse_metrics(metrics)
    return IS_SPLITS if "is" in names else PRC_NEIGHBOURHOOD + 1 if "prc" in names else 2


def parse_metrics(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"fid,is,kid,prc"`` (or a sequence of names) as a tuple in :data:`METRICS` order, without repeats.

    Example:
        >>> parse_metrics("kid, fid")
        ('fid', 'kid')
    """
    names = [part.strip() for part in (text.split(",") if isinstance(text, str) else text)]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names or "" in names:
        raise ValueError(f"metrics must be a comma-separated list of {', '.join(METRICS)}; got {text!r}")
    return tuple(name for name in METRICS if name in names)


class InceptionFeatures(NamedTuple):
    """Inception features of an image set.

    Attributes:
        pool: 2048-d pool features, ``(N, 2048)`` float32 on the CPU (FID, KID, precision/recall).
        logits: unbiased logits, ``(N, 1008)`` float32 on the CPU (Inception Score).
    """

    pool: Tensor
    logits: Tensor


class FidelityExtractor:
    """torch-fidelity's FID Inception on a local weights file: pool features and logits of image batches.

    Args:
        weights: the weights file (looked up by :func:`fidelity_weights` when ``None``).
        device: where the network runs; ``None``: CUDA when available, else the CPU.
        batch_size: images per forward pass.

    The file is read once (:func:`read_inception_weights`); torch-fidelity gets its tensors, never its path.

    Attributes:
        weights: the file used. weights_sha256: the SHA-256 of the bytes read, part of every cache key.

    Example:
        >>> extractor = FidelityExtractor("pt_inception-2015-12-05-6726825d.pth")  # doctest: +SKIP
        >>> features = extractor.extract([to_uint8(fake_images)])  # doctest: +SKIP
        >>> features.pool.shape, features.logits.shape  # doctest: +SKIP
        (torch.Size([N, 2048]), torch.Size([N, 1008]))
    """

    def __init__(
        self, weights: PathLike | None = None, *, device: torch.device | str | None = None, batch_size: int = 64
    ) -> None:
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.device = torch.device(default_device() if device is None else device)
        loaded = read_inception_weights(fidelity_weights(weights))
        self.weights, self.weights_sha256 = loaded.path, loaded.sha256
        self.network = inception_network(_import_fidelity(), loaded).to(self.device)

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Features of one batch of uint8 RGB images ``(B, 3, H, W)``: ``(B, 2048)`` and ``(B, 1008)`` on the CPU."""
        with torch.no_grad():
            pool, logits = self.network(images.to(self.device))
        return pool.float().cpu(), logits.float().cpu()

    def extract(
        self, batches: Iterable[Tensor], *, total: int | None = None, progress: bool = False, desc: str = "Inception"
    ) -> InceptionFeatures:
        """Features of a stream of uint8 RGB batches (any batch sizes; each is split into ``batch_size`` parts)."""
        from tqdm.auto import tqdm

        pools, logits = [], []
        with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for batch in batches:
                for part in batch.split(self.batch_size):
                    pool, logit = self(part)
                    pools.append(pool)
                    logits.append(logit)
                    bar.update(part.shape[0])
        if not pools:
            raise ValueError("no images to extract features from")
        return InceptionFeatures(torch.cat(pools), torch.cat(logits))


def default_device() -> str:
    """``"cuda"`` when a CUDA device is available, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def fid_from_features(real_mu: Tensor, real_sigma: Tensor, fake_features: Tensor) -> float:
    r"""FID between the Gaussian ``N(real_mu, real_sigma)`` and the Gaussian fit of ``fake_features``.

    .. math::
        \mathrm{FID} = \lVert \mu_r - \mu_g \rVert^2 + \operatorname{tr}\big(\Sigma_r + \Sigma_g
                       - 2 (\Sigma_r^{1/2} \Sigma_g \Sigma_r^{1/2})^{1/2}\big)

    :math:`\Sigma_g` is the unbiased covariance (``numpy.cov``'s, as in TTUR and torch-fidelity). With more
    generated features than dimensions this is :func:`rankplug.app.eval.frechet_distance`; with ``M <= D`` the trace
    of the cross term is taken in the ``M x M`` space (same value, see the comment in the code). All in float64.

    Shape:
        - ``real_mu``: ``(D,)``; ``real_sigma``: ``(D, D)``; ``fake_features``: ``(M, D)`` with ``M >= 2``.
        - Output: a Python float ``>= 0``.

    Example:
        >>> fake = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        >>> round(fid_from_features(torch.zeros(2), torch.eye(2) * 2 / 3, fake), 6)
        0.0
    """
    fake = check_features(fake_features, "fake_features", 2).double()
    mu_r, sigma_r = real_mu.double().cpu(), real_sigma.double().cpu()
    if tuple(mu_r.shape) != (fake.shape[1],) or tuple(sigma_r.shape) != (fake.shape[1],) * 2:
        raise ValueError(
            f"real_mu has shape {shape_str(mu_r)} and real_sigma {shape_str(sigma_r)}; expected ({fake.shape[1]},) "
            f"and ({fake.shape[1]}, {fake.shape[1]}) for fake_features of shape {shape_str(fake)}"
        )
    fake = fake.cpu()
    m, dim = fake.shape
    mu_g, sigma_g = fake.mean(dim=0), torch.cov(fake.T)
    if m > dim:
        return frechet_distance(mu_r, sigma_r, mu_g, sigma_g)
    # With m <= D features, Sigma_g = B^T B / (m - 1) for the centred features B (m x D), and
    # Sigma_r^{1/2} Sigma_g Sigma_r^{1/2} has the same non-zero eigenvalues as the m x m PSD matrix
    # B Sigma_r B^T / (m - 1): the same trace, exactly, for O(m D^2) instead of two D x D eigendecompositions,
    # and no square roots of the ~1e-16 eigenvalues of the null directions, where the D x D route loses accuracy.
    centred = fake - mu_g
    sigma_r = (sigma_r + sigma_r.T) / 2
    small = centred @ sigma_r @ centred.T / (m - 1)
    # Rounding leaves tiny negative eigenvalues of a PSD matrix, whose square roots would be NaN.
    cross = torch.linalg.eigvalsh((small + small.T) / 2).clamp_min(0).sqrt().sum()
    distance = (mu_r - mu_g).square().sum() + sigma_r.trace() + sigma_g.trace() - 2 * cross
    # Rounding can leave -1e-12 for identical sets; a squared distance is never negative.
    return max(float(distance), 0.0)


def inception_score(fake_logits: Tensor, *, splits: int = IS_SPLITS, seed: int = SEED) -> tuple[float, float]:
    r"""Inception Score of generated images from their logits: torch-fidelity's ``isc`` (mean, std over splits).

    .. math::
        \mathrm{IS} = \exp \mathbb{E}_x \mathrm{KL}\big(p(y \mid x) \,\Vert\, p(y)\big)

    The logits are shuffled with ``seed`` (torch-fidelity's default 2020) and cut into ``splits`` parts; ``p(y)``
    is each part's mean of ``softmax(logits)``. The standard deviation is the population one over the parts.

    Shape:
        - ``fake_logits``: ``(M, K)`` with ``M >= splits``.
        - Output: ``(mean, std)``, Python floats; ``1 <= mean <= K``.

    Example:
        >>> mean, std = inception_score(torch.eye(4).repeat(5, 1) * 50, splits=1)  # confident, 4 classes equally
        >>> round(mean, 3), round(std, 3)
        (4.0, 0.0)
    """
    parts = check_positive_int(splits, "splits")
    logits = check_features(fake_logits, "fake_logits", parts)
    from torch_fidelity.metric_isc import isc_features_to_metric

    out = isc_features_to_metric(logits.cpu(), splits=parts, shuffle=True, rng_seed=seed)
    return float(out["inception_score_mean"]), float(out["inception_score_std"])


def kernel_inception_distance(
    real_features: Tensor,
    fake_features: Tensor,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = SEED,
) -> tuple[float, float]:
    r"""KID: the unbiased squared MMD with a cubic polynomial kernel, mean and std over random subsets.

    .. math::
        k(x, y) = \Big(\frac{x^\top y}{d} + 1\Big)^3, \qquad
        \widehat{\mathrm{MMD}}^2_u = \frac{\sum_{i \ne j} k(x_i, x_j) + k(y_i, y_j)}{m(m-1)}
                                   - \frac{2}{m^2} \sum_{i, j} k(x_i, y_j)

    (Binkowski et al. 2018, Eq. 4), through torch-fidelity's ``kid``: ``subsets`` draws of ``subset_size``
    features per side without replacement, with ``seed``. Unbiased: for two samples of one distribution its
    expectation is 0, so small negative values occur and mean "indistinguishable".

    Shape:
        - ``real_features``: ``(N, D)``; ``fake_features``: ``(M, D)``; ``2 <= subset_size <= min(N, M)``.
        - Output: ``(mean, std)``, Python floats.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g) + 1
        >>> kid, _ = kernel_inception_distance(a, b, subsets=10, subset_size=100)
        >>> kid > 0.1
        True
    """
    count = check_positive_int(subsets, "subsets")
    size = check_positive_int(subset_size, "subset_size")
    real = check_features(real_features, "real_features", max(size, 2))
    fake = check_features(fake_features, "fake_features", max(size, 2))
    if size < 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"subset_size must be >= 2 and the features of equal width; got {size}, {shape_str(real)} and "
            f"{shape_str(fake)}"
        )
    from torch_fidelity.metric_kid import kid_features_to_metric

    # Generated first, as torch-fidelity's input1: the subsets drawn with ``seed`` are then the ones its own
    # calculate_metrics(input1=generated, input2=real) draws, so the numbers are equal, not just close.
    out = kid_features_to_metric(
        fake.float().cpu(), real.float().cpu(), kid_subsets=count, kid_subset_size=size, rng_seed=seed, verbose=False
    )
    return float(out["kernel_inception_distance_mean"]), float(out["kernel_inception_distance_std"])


def precision_recall(
    real_features: Tensor, fake_features: Tensor, *, neighbourhood: int = PRC_NEIGHBOURHOOD, block: int = 2048
) -> tuple[float, float]:
    r"""Improved precision and recall (Kynkäänniemi et al. 2019, Eq. 1-2), through torch-fidelity's ``prc``.

    .. math::
        \mathrm{precision} = \frac{1}{M} \sum_j \big[\exists i: \lVert g_j - r_i \rVert \le \mathrm{NN}_k(r_i)\big],
        \qquad
        \mathrm{recall} = \frac{1}{N} \sum_i \big[\exists j: \lVert r_i - g_j \rVert \le \mathrm{NN}_k(g_j)\big]

    where :math:`\mathrm{NN}_k(x)` is the distance from ``x`` to its ``k``-th nearest neighbour in its own set.
    Precision is how much of what the generator makes looks real; recall is how much of the real data it covers, so
    a mode-collapsed generator gets high precision and low recall. Distances are computed in blocks of ``block``
    rows, so memory stays at ``block x max(N, M)`` floats; the features stay on their device (a GPU makes the
    ``O(N M D)`` distances fast).

    Shape:
        - ``real_features``: ``(N, D)``; ``fake_features``: ``(M, D)``; ``N, M > neighbourhood``.
        - Output: ``(precision, recall)``, Python floats in ``[0, 1]``.

    Example:
        >>> real = torch.arange(10.0).view(10, 1)
        >>> precision_recall(real, real + 100.0)  # far apart: nothing inside the other set's balls
        (0.0, 0.0)
    """
    k = check_positive_int(neighbourhood, "neighbourhood")
    real = check_features(real_features, "real_features", k + 1)
    fake = check_features(fake_features, "fake_features", k + 1)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real_features {shape_str(real)} and fake_features {shape_str(fake)} differ in width")
    from torch_fidelity.metric_prc import prc_features_to_metric

    # (fake, real) on purpose: torch-fidelity's features_1 is the generated set and features_2 the real one. Passing
    # (real, fake) would swap precision and recall (tests/app/eval/test_fidelity.py pins the direction).
    out = prc_features_to_metric(
        fake.float(),
        real.float().to(fake.device),
        prc_neighborhood=k,
        prc_batch_size=block,
        save_cpu_ram=True,
        verbose=False,
    )
    return float(out["precision"]), float(out["recall"])


def paper_metrics(
    reference: Reference, fake: InceptionFeatures, metrics: Sequence[str] = METRICS, *, device: str | None = None
) -> dict[str, Any]:
    """The metrics named in ``metrics`` (:data:`METRICS`) of generated features against ``reference``.

    KID's subsets hold ``min(1000, N, M)`` features (torch-fidelity's 1000 when both sets have that many), and
    ``kid_subset_size`` records the size used. Precision/recall run on ``device`` (``None``: CUDA when available).

    Returns:
        A dict with, per metric asked for, ``fid``; ``is_mean``, ``is_std``; ``kid_mean``, ``kid_std``,
        ``kid_subset_size``; ``precision``, ``recall``; and ``seconds``, the time each metric's computation took
        (``{"fid": ..., ...}``; the feature extraction is timed by the caller).

    Raises:
        ValueError: KID or precision/recall asked for with a reference that holds statistics only, or too few
            images for a metric (IS needs ``M >= 10``, precision/recall ``N, M >= 4``, KID ``N, M >= 2``).
    """
    names = parse_metrics(metrics)
    real = reference.features
    if real is None and ({"kid", "prc"} & set(names)):
        raise ReferenceSetError(
            f"{reference.source} holds statistics (mu, sigma) only; KID and precision/recall need the real images "
            f"or their features; ask for fid,is only, or give images"
        )
    where = default_device() if device is None else device
    out: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in names:
        started = time.perf_counter()
        if name == "fid":
            out["fid"] = _finite(fid_from_features(reference.mu, reference.sigma, fake.pool), "FID")
        elif name == "is":
            out["is_mean"], out["is_std"] = inception_score(fake.logits)
        elif name == "kid" and real is not None:
            size = min(KID_SUBSET_SIZE, real.shape[0], fake.pool.shape[0])
            out["kid_mean"], out["kid_std"] = kernel_inception_distance(real, fake.pool, subset_size=size)
            out["kid_subset_size"] = size
        elif name == "prc" and real is not None:
            out["precision"], out["recall"] = precision_recall(real.to(where), fake.pool.to(where))
        seconds[name] = time.perf_counter() - started
    out["seconds"] = seconds
    return out


def fidelity_metrics(
    real: object,
    fake_images: Tensor,
    *,
    metrics: Sequence[str] | str = METRICS,
    weights: PathLike | None = None,
    device: str | None = None,
    batch_size: int = 64,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """FID, IS, KID and precision/recall of ``fake_images`` against ``real``, from a local weights file.

    Args:
        real: the reference: real images ``(N, C, H, W)`` (float in ``[-1, 1]`` or uint8), a folder of images, an
            ``.npz`` file (``images``, ``features`` or ``mu``/``sigma``), or a :class:`Reference`; see
            :func:`rankplug.app.eval.load_reference`. Its features are cached by content hash in ``cache_dir``.
        fake_images: generated images ``(M, C, H, W)``, float in ``[-1, 1]`` or uint8, ``C`` = 1 or 3.
        metrics: a subset of :data:`METRICS`, as a sequence or ``"fid,is"``.
        weights: the FID Inception weights file (:func:`fidelity_weights`).
        device: where Inception runs (``None``: CUDA when available).
        batch_size: images per Inception forward pass.
        cache_dir: where reference features are cached (default ``$RANKPLUG_CACHE``, else ``~/.cache/rankplug``).
        progress: progress bars over the images.

    Returns:
        :func:`paper_metrics`' dict, whose ``seconds`` also holds ``reference`` and ``features`` (extraction).

    Shape:
        - ``fake_images``: ``(M, C, H, W)``; the two sets may differ in size and channels.

    Example:
        >>> scores = fidelity_metrics("cifar10_train/", fake, weights="pt_inception.pth")  # doctest: +SKIP
        >>> sorted(scores)  # doctest: +SKIP
        ['fid', 'is_mean', 'is_std', 'kid_mean', 'kid_std', 'kid_subset_size', 'precision', 'recall', 'seconds']
    """
    names = parse_metrics(metrics)
    fake = check_dense(fake_images, "fake_images")
    to_uint8(fake[:1])  # the shape and dtype checks, before Inception is loaded
    extractor = FidelityExtractor(weights, device=device, batch_size=batch_size)
    reference, reference_seconds = _timed_reference(real, extractor, cache_dir, progress)
    started = time.perf_counter()
    features = extractor.extract(batches_of(fake, extractor.batch_size), total=fake.shape[0], progress=progress)
    features_seconds = time.perf_counter() - started
    out = paper_metrics(reference, features, names, device=device)
    out["seconds"].update(reference=reference_seconds, features=features_seconds)
    return out


def _timed_reference(
    real: object, extractor: FidelityExtractor, cache_dir: PathLike | None, progress: bool
) -> tuple[Reference, float]:
    started = time.perf_counter()
    if isinstance(real, Reference):
        return real, 0.0
    reference = load_reference(real, extractor, cache_dir=cache_dir, progress=progress)
    return reference, time.perf_counter() - started


def batches_of(images: Tensor, size: int) -> Iterator[Tensor]:
    """``images`` ``(N, C, H, W)`` (float in ``[-1, 1]`` or uint8) as uint8 RGB batches of ``size``."""
    for start in range(0, images.shape[0], size):
        yield to_uint8(images[start : start + size])


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"{name} came out as {value}; the Inception features hold non-finite values")
    return value
