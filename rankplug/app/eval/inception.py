"""FID and Inception Score with the TensorFlow FID Inception network, through pytorch-gan-metrics (MATH §7).

RankGAN Table 1 reports FID over stages 1-3 (122 -> 60 -> 46 with the encoder). These are the numbers papers
quote: the features and class probabilities come from pytorch-gan-metrics' ``InceptionV3`` with the FID
Inception weights (the TensorFlow graph ``inception-2015-12-05`` ported to PyTorch), the Inception Score from
its ``calculate_inception_score``.

- **FID** is the Fréchet distance between Gaussian fits of the 2048-d pool features of real and generated images,

  .. math::
      \\mathrm{FID} = \\lVert \\mu_r - \\mu_g \\rVert^2 + \\operatorname{tr}\\big(\\Sigma_r + \\Sigma_g
                      - 2 (\\Sigma_r^{1/2} \\Sigma_g \\Sigma_r^{1/2})^{1/2}\\big).

  Lower is better; 0 means identical feature statistics.
- **Inception Score** of generated images, :math:`\\exp \\mathbb{E}_x \\mathrm{KL}(p(y \\mid x) \\,\\Vert\\, p(y))`
  over the 1008 Inception classes, as a mean and standard deviation over ``splits`` parts. Higher is better;
  it lies in ``[1, 1008]``.

**Weights are never downloaded unless asked.** They are looked up, in order, at the ``weights=`` argument, at
``$RANKPLUG_INCEPTION_WEIGHTS``, and in the torch hub cache at
``<torch.hub.get_dir()>/checkpoints/pt_inception-2015-12-05-6726825d.pth`` (where pytorch-gan-metrics itself
looks). If none is there, :class:`InceptionWeightsNotFound` says where it looked and how to get the file;
``download=True`` lets torch.hub download it into the cache instead. ``docs/inception_metrics.md`` has more.

pytorch-gan-metrics and torchvision are optional dependencies (``pip install "rankplug[eval]"``) and are
imported only when a metric is computed; importing :mod:`rankplug.app.eval` imports neither.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import NamedTuple, Union

import torch
from torch import Tensor

from rankplug._checkpoint import CheckpointError, atomic_write
from rankplug._validation import check_batch, check_positive_int, check_tensor, shape_str
from rankplug.app.eval.digits import frechet_distance

__all__ = [
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_URL",
    "InceptionStats",
    "InceptionWeightsNotFound",
    "find_inception_weights",
    "inception_metrics",
    "inception_statistics",
]

INCEPTION_WEIGHTS_URL = (
    "https://github.com/w86763777/pytorch-gan-metrics/releases/download/v0.1.0/pt_inception-2015-12-05-6726825d.pth"
)
"""Where the FID Inception weights come from: ``pytorch_gan_metrics.inception.FID_WEIGHTS_URL`` (version 0.5.3)."""

INCEPTION_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
"""The file name torch.hub gives the weights, the last part of :data:`INCEPTION_WEIGHTS_URL`."""

INCEPTION_WEIGHTS_ENV = "RANKPLUG_INCEPTION_WEIGHTS"
"""Environment variable holding the path of the weights file, used when no ``weights=`` argument is given."""

FEATURE_DIM = 2048  # pool3 features, the FID layer
NUM_CLASSES = 1008  # the TensorFlow Inception's classes (1000 ImageNet classes and 8 unused)
_RANGE_TOLERANCE = 1e-3

_EVAL_EXTRA = 'pip install "rankplug[eval]"'
PathLike = Union[str, "os.PathLike[str]"]

# torch.hub.set_dir is process-wide: evaluations in several threads take turns while one has it redirected.
_HUB_LOCK = threading.Lock()


class InceptionWeightsNotFound(FileNotFoundError):
    """The FID Inception weights file is missing; the message says where rankplug looked and how to get it.

    Attributes:
        searched: the paths looked at, in order.
    """

    def __init__(self, message: str, searched: tuple[Path, ...]) -> None:
        super().__init__(message)
        self.searched = searched


def _hub_cache_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


def _not_found(looked: list[tuple[str, Path | None, str]], *, explicit: bool) -> InceptionWeightsNotFound:
    cache = _hub_cache_file()
    lines = [f"  - {where}: {why}" if path is None else f"  - {where}: {path} ({why})" for where, path, why in looked]
    hint = (
        "Fix the path, or remove it to use the torch hub cache."
        if explicit
        else "Nothing is downloaded unless asked: pass download=True to let torch.hub download it into the cache."
    )
    message = (
        "FID Inception weights not found. Looked at:\n"
        + "\n".join(lines)
        + f"\nDownload the file (about 96 MB) from\n  {INCEPTION_WEIGHTS_URL}\n"
        f"and put it at\n  {cache}\n"
        f"or anywhere else and point rankplug at it with weights='/path/to/{INCEPTION_WEIGHTS_FILENAME}' or "
        f"the environment variable {INCEPTION_WEIGHTS_ENV}=/path/to/{INCEPTION_WEIGHTS_FILENAME}.\n{hint}"
    )
    return InceptionWeightsNotFound(message, tuple(path for _, path, _ in looked if path is not None))


def find_inception_weights(weights: PathLike | None = None) -> Path:
    """Path of the FID Inception weights file; raise :class:`InceptionWeightsNotFound` if it is missing.

    The first of these that is given is used, and must exist (a mistyped path fails rather than falling back):

    1. ``weights``, a path to the file;
    2. the environment variable ``RANKPLUG_INCEPTION_WEIGHTS`` (:data:`INCEPTION_WEIGHTS_ENV`);
    3. the torch hub cache, ``<torch.hub.get_dir()>/checkpoints/pt_inception-2015-12-05-6726825d.pth``, where
       pytorch-gan-metrics itself would look (``$TORCH_HOME/hub`` unless :func:`torch.hub.set_dir` was called).

    Nothing is downloaded. The error message names every place looked at, the download URL
    (:data:`INCEPTION_WEIGHTS_URL`), and where to put the file.

    Example:
        >>> from rankplug.app.eval import InceptionWeightsNotFound, find_inception_weights
        >>> try:
        ...     find_inception_weights("/nowhere/pt_inception.pth")
        ... except InceptionWeightsNotFound as error:
        ...     print(str(error).splitlines()[1])
          - weights= argument: /nowhere/pt_inception.pth (no such file)
    """
    looked: list[tuple[str, Path | None, str]] = []
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise TypeError(f"weights must be a path (str or os.PathLike) or None; got {type(weights).__name__}")
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        looked.append(
            ("weights= argument", path, "a directory, expected the file" if path.is_dir() else "no such file")
        )
        raise _not_found(looked, explicit=True)
    looked.append(("weights= argument", None, "not given"))
    from_env = os.environ.get(INCEPTION_WEIGHTS_ENV, "")
    if from_env:
        path = Path(from_env).expanduser()
        if path.is_file():
            return path
        why = "a directory, expected the file" if path.is_dir() else "no such file"
        looked.append((f"${INCEPTION_WEIGHTS_ENV}", path, why))
        raise _not_found(looked, explicit=True)
    looked.append((f"${INCEPTION_WEIGHTS_ENV}", None, "not set"))
    cache = _hub_cache_file()
    if cache.is_file():
        return cache
    looked.append(("torch hub cache", cache, "no such file"))
    raise _not_found(looked, explicit=False)


def _import_gan_metrics() -> tuple[ModuleType, ModuleType]:
    """``core`` and ``inception`` of pytorch-gan-metrics, or a clear ImportError.

    pytorch-gan-metrics 0.5.3 ships the module ``pytorch_gan_metrics``; later releases were renamed
    pytorch-image-generation-metrics (module ``pytorch_image_generation_metrics``, same ``core`` and
    ``inception`` and the same weights file name) and 0.5.4 became an empty shim that installs it. Either works.
    """
    try:
        try:
            import pytorch_gan_metrics.core as core
            import pytorch_gan_metrics.inception as inception
        except ModuleNotFoundError:
            import pytorch_image_generation_metrics.core as core  # type: ignore[no-redef]
            import pytorch_image_generation_metrics.inception as inception  # type: ignore[no-redef]
    # A torchvision built for another torch fails inside its C extension with RuntimeError or OSError
    # ("operator torchvision::nms does not exist", "undefined symbol"), not ImportError.
    except (ImportError, OSError, RuntimeError) as error:
        raise ImportError(
            "rankplug.app.eval.inception_metrics and inception_statistics need pytorch-gan-metrics and torchvision, "
            f"optional dependencies; install them with {_EVAL_EXTRA}. torchvision must be the build made for the "
            f"installed torch (torch {torch.__version__}: the matching torchvision release, from the same index, "
            f"so with the same CPU/CUDA variant); a mismatched pair fails at import. The import failed with: {error}"
        ) from error
    return core, inception


def _check_weights_file(path: Path) -> None:
    """Refuse a weights file that holds pickled code or is not the 1008-class FID Inception."""
    # torch.hub loads with weights_only=False, which would run code pickled into the file. Opening it first with
    # weights_only=True (memory-mapped, so the 96 MB are not read twice) refuses such a file before that happens.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data (weights_only=True "
            f"rejected it: {str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"Inception weights file {path} is unreadable or truncated: {error}") from error
    fc = state.get("fc.weight") if isinstance(state, Mapping) else None
    if not isinstance(fc, Tensor) or tuple(fc.shape) != (NUM_CLASSES, FEATURE_DIM):
        got = f"fc.weight of shape {shape_str(fc)}" if isinstance(fc, Tensor) else "no fc.weight"
        raise CheckpointError(
            f"{path} is not the FID Inception state dict: expected fc.weight of shape ({NUM_CLASSES}, {FEATURE_DIM}), "
            f"got {got}. torchvision's ImageNet Inception weights are a different network; download "
            f"{INCEPTION_WEIGHTS_URL}"
        )


def _link(source: Path, target: Path) -> None:
    try:
        target.symlink_to(source.resolve())
    except OSError:
        # Symbolic links need a privilege on Windows; a hard link does not, but only within one volume.
        try:
            os.link(source, target)
        except OSError as error:
            raise OSError(
                f"could not link {source} into a temporary torch hub directory ({error}); copy it to "
                f"{_hub_cache_file()} instead"
            ) from error


@contextlib.contextmanager
def _weights_visible_to_hub(path: Path | None) -> Iterator[None]:
    """Let pytorch-gan-metrics' ``load_state_dict_from_url(FID_WEIGHTS_URL)`` find the weights at ``path``.

    ``path=None`` (download allowed, nothing found) leaves torch.hub as it is, so it downloads into its cache.
    """
    # pytorch-gan-metrics loads the weights with torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL), which reads
    # <torch.hub.get_dir()>/checkpoints/<the URL's file name> and downloads only when that file is missing. Weights
    # kept anywhere else are shown to it through a temporary hub directory holding a symbolic link of that name:
    # the file is never copied, torch.hub's own loading code reads it exactly as for any user, and nothing inside
    # pytorch-gan-metrics is patched. set_dir is process-wide, hence the lock; afterwards the previous value is
    # written back as it was, so an unset hub directory stays unset and keeps following $TORCH_HOME.
    with _HUB_LOCK:
        if path is None or path.resolve() == _hub_cache_file().resolve():
            yield
            return
        with tempfile.TemporaryDirectory(prefix="rankplug-hub-") as hub_dir:
            checkpoints = Path(hub_dir) / "checkpoints"
            checkpoints.mkdir()
            _link(path, checkpoints / INCEPTION_WEIGHTS_FILENAME)
            previous = torch.hub._hub_dir
            torch.hub.set_dir(hub_dir)
            try:
                yield
            finally:
                torch.hub._hub_dir = previous


def _resolve_weights(weights: PathLike | None, download: bool) -> Path | None:
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool; got {type(download).__name__}")
    try:
        path = find_inception_weights(weights)
    except InceptionWeightsNotFound:
        # An explicit path or environment variable that is wrong is an error even with download=True.
        if download and weights is None and not os.environ.get(INCEPTION_WEIGHTS_ENV, ""):
            return None
        raise
    _check_weights_file(path)
    return path


class _UnitRangeRGB:
    """``(N, C, H, W)`` images in ``[-1, 1]`` as pytorch-gan-metrics wants them: float32 RGB in ``[0, 1]``.

    pytorch-gan-metrics only calls ``len()`` and slices batches, so each batch is converted when it is taken and
    the whole set is never copied.
    """

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: slice) -> Tensor:
        batch = self.images[index].float()
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)  # grey: the same image in R, G and B
        return (batch + 1) / 2


def _check_images(images: object, name: str, minimum: int) -> Tensor:
    tensor = check_tensor(images, name)
    if tensor.dim() != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected (N, C, H, W) with C = 1 (grey) or 3 (RGB)")
    check_batch(tensor, name)
    if tensor.shape[2] == 0 or tensor.shape[3] == 0:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected H, W >= 1")
    if tensor.shape[0] < minimum:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected N >= {minimum} images")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} holds NaN or infinite values; expected values in [-1, 1]")
    low, high = float(tensor.min()), float(tensor.max())
    if low < -1 - _RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"{name} has values in [{low:.4g}, {high:.4g}]; expected [-1, 1] (a tanh generator's range; "
            f"map images in [0, 1] with images * 2 - 1)"
        )
    return tensor


def _features(
    images: Tensor,
    dims: list[int],
    *,
    weights: Path | None,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> list[Tensor]:
    core, _ = _import_gan_metrics()
    with _weights_visible_to_hub(weights):
        outputs = core.get_inception_feature(
            _UnitRangeRGB(images), dims=dims, batch_size=batch_size, verbose=progress, device=device
        )
    return [torch.as_tensor(output, dtype=torch.float64) for output in outputs]


class InceptionStats(NamedTuple):
    """Mean and covariance of the 2048-d Inception pool features of an image set: the FID reference.

    :meth:`save` writes the ``.npz`` format of pytorch-gan-metrics (``mu``, ``sigma``), so its precomputed
    statistics (e.g. for the CIFAR-10 training set) load with :meth:`load`, and files written here work with
    its ``get_fid(images, fid_stats_path)``.

    Attributes:
        mu: feature mean, ``(2048,)``, float64.
        sigma: feature covariance, ``(2048, 2048)``, float64.
        num_images: number of images the statistics came from (0 when a file did not record it).
    """

    mu: Tensor
    sigma: Tensor
    num_images: int

    def save(self, path: PathLike) -> Path:
        """Write ``mu``, ``sigma`` and ``num_images`` to the ``.npz`` file ``path`` (atomically); return it."""
        import numpy as np

        buffer = io.BytesIO()
        # Uncompressed: a covariance's float64 noise barely compresses, and zlib would take seconds.
        np.savez(buffer, mu=self.mu.cpu().numpy(), sigma=self.sigma.cpu().numpy(), num_images=self.num_images)
        target = atomic_write(path, buffer.getbuffer())  # exclusive temporary file: never follows a symlink
        return target

    @classmethod
    def load(cls, path: PathLike) -> InceptionStats:
        """Read statistics saved by :meth:`save` or by pytorch-gan-metrics (no pickled objects are accepted)."""
        import numpy as np

        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no Inception statistics file at {source}")
        with np.load(source, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise ValueError(f"{source} holds {sorted(data.keys())}; expected the arrays 'mu' and 'sigma'")
            mu = torch.from_numpy(data["mu"]).double()
            sigma = torch.from_numpy(data["sigma"]).double()
            num_images = int(data["num_images"]) if "num_images" in data else 0
        if tuple(mu.shape) != (FEATURE_DIM,) or tuple(sigma.shape) != (FEATURE_DIM, FEATURE_DIM):
            raise ValueError(
                f"{source} has mu of shape {shape_str(mu)} and sigma of shape {shape_str(sigma)}; "
                f"expected ({FEATURE_DIM},) and ({FEATURE_DIM}, {FEATURE_DIM})"
            )
        return cls(mu, sigma, num_images)


def _gaussian(features: Tensor) -> InceptionStats:
    return InceptionStats(features.mean(dim=0), torch.cov(features.T), int(features.shape[0]))


def inception_statistics(
    images: Tensor,
    *,
    weights: PathLike | None = None,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    progress: bool = False,
    download: bool = False,
) -> InceptionStats:
    """Inception feature statistics of ``images``, to compute once and reuse as the FID reference.

    Pass the result (or the path :meth:`InceptionStats.save` wrote) as ``real`` to :func:`inception_metrics`.
    Images are taken as in :func:`inception_metrics`; ``weights`` and ``download`` are resolved as there.

    Shape:
        - ``images``: ``(N, C, H, W)`` in ``[-1, 1]`` with ``C`` = 1 or 3 and ``N >= 2``.
        - Output: ``mu`` ``(2048,)`` and ``sigma`` ``(2048, 2048)``, float64.
    """
    tensor = _check_images(images, "images", 2)
    size = check_positive_int(batch_size, "batch_size")
    _import_gan_metrics()
    path = _resolve_weights(weights, download)
    (features,) = _features(
        tensor, [FEATURE_DIM], weights=path, batch_size=size, device=torch.device(device), progress=progress
    )
    return _gaussian(features)


def _check_real(real: object) -> Tensor | InceptionStats:
    if isinstance(real, InceptionStats):
        return real
    if isinstance(real, (str, os.PathLike)):
        return InceptionStats.load(real)
    if not isinstance(real, Tensor):
        raise TypeError(
            "real must be images (a torch.Tensor), InceptionStats or the path of a .npz statistics file; "
            f"got {type(real).__name__}"
        )
    return _check_images(real, "real", 2)


def _fid(real: InceptionStats, fake_features: Tensor) -> float:
    fake = _gaussian(fake_features)
    m = fake.num_images
    if m > FEATURE_DIM:
        return frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)
    # With m <= 2048 images, Sigma_g = B^T B / (m - 1) for the centred features B (m x 2048), and
    # Sigma_r^{1/2} Sigma_g Sigma_r^{1/2} has the same non-zero eigenvalues as the m x m PSD matrix
    # B Sigma_r B^T / (m - 1), so the sum of their square roots is the same trace, exactly. That costs O(m 2048^2)
    # instead of two 2048 x 2048 eigendecompositions (or scipy's sqrtm), which take tens of seconds to minutes on a
    # small CPU, and it never takes square roots of the ~1e-16 eigenvalues of the null directions a rank-deficient
    # covariance has, which is where the 2048 x 2048 routes lose accuracy.
    centred = fake_features - fake.mu
    sigma_r = (real.sigma + real.sigma.T) / 2
    small = centred @ sigma_r @ centred.T / (m - 1)
    # Rounding leaves tiny negative eigenvalues of a PSD matrix, whose square roots would be NaN.
    cross = torch.linalg.eigvalsh((small + small.T) / 2).clamp_min(0).sqrt().sum()
    distance = (real.mu - fake.mu).square().sum() + sigma_r.trace() + fake.sigma.trace() - 2 * cross
    # Rounding can leave -1e-12 for identical sets; a squared distance is never negative.
    return max(float(distance), 0.0)


def inception_metrics(
    real: Tensor | InceptionStats | PathLike,
    fake_images: Tensor,
    *,
    weights: PathLike | None = None,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    splits: int = 10,
    progress: bool = False,
    download: bool = False,
) -> dict[str, float]:
    r"""FID of ``fake_images`` against ``real``, and their Inception Score (RankGAN Table 1, MATH §7).

    .. math::
        \mathrm{FID} = \lVert \mu_r - \mu_g \rVert^2
                       + \operatorname{tr}\big(\Sigma_r + \Sigma_g - 2 (\Sigma_r^{1/2} \Sigma_g \Sigma_r^{1/2})^{1/2}\big),
        \qquad \mathrm{IS} = \exp \mathbb{E}_x \, \mathrm{KL}\big(p(y \mid x) \,\Vert\, p(y)\big)

    Images go through pytorch-gan-metrics' FID ``InceptionV3``: mapped from ``[-1, 1]`` to ``[0, 1]``, grey
    images repeated into 3 identical channels, resized bilinearly to 299 x 299 whatever their size. IS is
    pytorch-gan-metrics' ``calculate_inception_score`` over ``splits`` equal parts of ``fake_images`` (the mean
    and the population standard deviation of the parts' scores). The FID's matrix square root is taken
    through a symmetric eigendecomposition (the same value as scipy's ``sqrtm`` route, but stable and, for up
    to 2048 generated images, computed in the smaller ``M x M`` space).

    FID is biased upwards for small samples and depends on the number of images: papers use 50,000 generated
    images (10,000 at least); compare numbers computed on equal sample sizes only.

    Args:
        real: the FID reference: real images ``(N, C, H, W)`` in ``[-1, 1]``, their :class:`InceptionStats`
            from :func:`inception_statistics`, or the path of a ``.npz`` statistics file (rankplug's or
            pytorch-gan-metrics').
        fake_images: generated images ``(M, C, H, W)`` in ``[-1, 1]``.
        weights: path of the FID Inception weights; see :func:`find_inception_weights` for the lookup.
        batch_size: images per forward pass of the Inception network.
        device: where the Inception network runs.
        splits: number of parts for the Inception Score, ``1 <= splits <= M``.
        progress: show pytorch-gan-metrics' tqdm progress bar over the images.
        download: if the weights are found nowhere, let torch.hub download them from
            :data:`INCEPTION_WEIGHTS_URL` into its cache (about 96 MB) instead of raising
            :class:`InceptionWeightsNotFound`.

    Returns:
        ``{"fid": float, "is_mean": float, "is_std": float}``.

    Shape:
        - ``real``: ``(N, C, H, W)`` with ``N >= 2``; ``fake_images``: ``(M, C, H, W)`` with ``M >= max(2, splits)``;
          ``C`` = 1 or 3, any ``H, W`` (the two sets may differ in size and channels).
        - Output: a dict of three Python floats, ``fid >= 0`` and ``is_mean >= 1``.

    Raises:
        InceptionWeightsNotFound: no weights file, and ``download`` is False.
        ImportError: pytorch-gan-metrics or torchvision cannot be imported.
    """
    fake = _check_images(fake_images, "fake_images", 2)
    reference = _check_real(real)
    size = check_positive_int(batch_size, "batch_size")
    parts = check_positive_int(splits, "splits")
    if parts > fake.shape[0]:
        raise ValueError(f"splits must be <= the number of fake images, {fake.shape[0]}; got {parts}")
    core, _ = _import_gan_metrics()
    path = _resolve_weights(weights, download)
    where = torch.device(device)
    if isinstance(reference, InceptionStats):
        real_stats = reference
    else:
        (real_features,) = _features(
            reference, [FEATURE_DIM], weights=path, batch_size=size, device=where, progress=progress
        )
        real_stats = _gaussian(real_features)
    fake_features, probs = _features(
        fake, [FEATURE_DIM, NUM_CLASSES], weights=path, batch_size=size, device=where, progress=progress
    )
    is_mean, is_std = core.calculate_inception_score(probs.numpy(), parts, use_torch=False)
    fid = _fid(real_stats, fake_features)
    if not math.isfinite(fid):
        raise FloatingPointError(f"FID came out as {fid}; the Inception features hold non-finite values")
    return {"fid": fid, "is_mean": float(is_mean), "is_std": float(is_std)}
