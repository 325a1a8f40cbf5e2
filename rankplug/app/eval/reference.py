"""The real images a generator is scored against, checked, and their Inception features cached by content hash.

:func:`load_reference` accepts a folder of images, an ``.npz`` file (images, features, or precomputed ``mu`` /
``sigma`` statistics), a tensor of images or a dataset, and returns a :class:`Reference`. The features of images
are computed once and cached under the SHA-256 of the images' content and of the weights file, so evaluating every
stage of a run (or several runs against one data set) costs one pass of Inception over the real images. A renamed
or moved copy of the same images hits the same cache entry; a changed pixel, another weights file or another image
order does not.

A reference file is checked before it is used, and every refusal is a :class:`ReferenceSetError` naming the file:
an ``.npz`` member's shape and dtype are read from its header and bounded before its data is read (a small file
cannot make rankplug allocate gigabytes); statistics must be finite, real floating point, with a symmetric
positive semi-definite ``sigma``; images must be finite and at most :data:`MAX_IMAGE_PIXELS` pixels each, which is
checked from the image header before it is decoded. A cache entry carries a SHA-256 of its key and contents; an
entry that fails the check (truncated, edited, a symbolic link) is recomputed with a warning. This module never
imports torch-fidelity: the network that computes features comes in as an argument (:class:`FeatureExtractor`).
The files themselves (``.npz`` arrays, image folders) are read by :mod:`rankplug.app.eval.reference_files`, whose
bounds (:data:`MAX_ARRAY_BYTES`, :data:`MAX_IMAGE_PIXELS`), :class:`ReferenceSetError` and :func:`to_uint8` this
module re-exports.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Union

import torch
from torch import Tensor

from rankplug._validation import check_dense, shape_str
from rankplug.app.eval.reference_files import (
    MAX_ABS_VALUE,
    MAX_ARRAY_BYTES,
    MAX_IMAGE_PIXELS,
    ReferenceSetError,
    check_finite,
    checked_pixels,
    dataset_batches,
    floating_member,
    folder_batches,
    image_files,
    images_member,
    npz_num_images,
    open_npz,
    read_member,
    tensor_batches,
    to_uint8,
)
from rankplug.stages.checkpoint import atomic_write

__all__ = [
    "CACHE_FORMAT",
    "FEATURE_DIM",
    "MAX_ABS_VALUE",
    "MAX_ARRAY_BYTES",
    "MAX_IMAGE_PIXELS",
    "FeatureExtractor",
    "Reference",
    "ReferenceSetError",
    "cache_directory",
    "check_features",
    "check_statistics",
    "load_reference",
    "reference_key",
    "to_uint8",
]

FEATURE_DIM = 2048
"""Width of the Inception pool3 features every reference holds (FID, KID, precision/recall)."""

CACHE_FORMAT = "rankplug-fidelity-reference-2/inception-v3-compat"
"""Part of every cache key and checksum: a change in what is cached (or how) changes it, so old entries are never
misread."""

_SYMMETRY_TOLERANCE = 1e-5  # of max |sigma|: float32 rounding of np.cov leaves ~1e-7
_PSD_TOLERANCE = 1e-5  # of the largest |eigenvalue|: a rank-deficient sigma has eigenvalues of ~-1e-13 from rounding
_CACHE_SLACK = 1 << 16  # a cache entry's zip and .npy headers, above its arrays' bytes

PathLike = Union[str, "os.PathLike[str]"]


class FeatureExtractor(Protocol):
    """What :func:`load_reference` needs of the network: :class:`rankplug.app.eval.FidelityExtractor` is one."""

    batch_size: int
    weights_sha256: str

    def extract(
        self, batches: Iterable[Tensor], *, total: int | None = None, progress: bool = False, desc: str = ...
    ) -> Any:
        """Features of uint8 RGB batches; the result's ``pool`` is ``(N, 2048)``."""


def check_features(value: object, name: str, minimum: int) -> Tensor:
    """``value`` as a dense ``(N, D)`` tensor with ``N >= minimum``; ``ValueError`` / ``TypeError`` naming ``name``."""
    tensor = check_dense(value, name)
    if tensor.dim() != 2 or tensor.shape[0] < minimum:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected (N, D) with N >= {minimum}")
    return tensor


class Reference(NamedTuple):
    """Inception statistics of the real images a generator is compared with (see :func:`load_reference`).

    Attributes:
        mu: feature mean, ``(2048,)`` float64.
        sigma: unbiased feature covariance, ``(2048, 2048)`` float64.
        features: the pool features, ``(N, 2048)`` float32 on the CPU; ``None`` when only statistics were given
            (FID and IS are possible, KID and precision/recall are not).
        num_images: ``N`` (0 when a statistics file did not record it).
        key: SHA-256 of the images' content and the weights file: the cache key, and what ``eval-stage<i>.json``
            records, so that results computed against different references are never confused.
        source: where the images came from, in words.
    """

    mu: Tensor
    sigma: Tensor
    features: Tensor | None
    num_images: int
    key: str
    source: str

    @classmethod
    def from_features(cls, features: Tensor, *, key: str = "", source: str = "features") -> Reference:
        """Statistics of ``features`` ``(N, D)``, ``N >= 2``, finite, keeping the features.

        Example:
            >>> reference = Reference.from_features(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
            >>> reference.mu.tolist(), reference.sigma.tolist(), reference.num_images
            ([1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]], 2)
        """
        pool = check_features(features, "features", 2)
        if not pool.is_floating_point() or not bool(torch.isfinite(pool).all()):
            raise ValueError(f"features ({source}) must be finite floating-point values; got {pool.dtype} with NaN/inf")
        wide = pool.double().cpu()
        return cls(wide.mean(dim=0), torch.cov(wide.T), pool.float().cpu(), int(pool.shape[0]), key, source)


def check_statistics(mu: Tensor, sigma: Tensor, where: str) -> tuple[Tensor, Tensor]:
    """``mu`` and ``sigma`` as float64 after the checks FID needs; :class:`ReferenceSetError` naming ``where``.

    ``mu`` must be ``(2048,)`` and ``sigma`` ``(2048, 2048)``, real floating point, finite, ``sigma`` symmetric and
    positive semi-definite up to rounding (relative tolerance ``1e-5``). A covariance is never negative: a
    ``sigma`` of ``-1e6 I`` would make any generator's FID come out as 0.

    Example:
        >>> mu, sigma = check_statistics(torch.zeros(2048), torch.eye(2048), "stats.npz")
        >>> try:
        ...     check_statistics(torch.zeros(2048), -1e6 * torch.eye(2048), "stats.npz")
        ... except ReferenceSetError as error:
        ...     print(str(error).split(";")[0])
        stats.npz: sigma is not positive semi-definite (smallest eigenvalue -1e+06, largest 1e+06)
    """
    if tuple(mu.shape) != (FEATURE_DIM,) or tuple(sigma.shape) != (FEATURE_DIM, FEATURE_DIM):
        raise ReferenceSetError(
            f"{where} has mu of shape {shape_str(mu)} and sigma {shape_str(sigma)}; expected ({FEATURE_DIM},) and "
            f"({FEATURE_DIM}, {FEATURE_DIM})"
        )
    for name, value in (("mu", mu), ("sigma", sigma)):
        if not value.is_floating_point():
            raise ReferenceSetError(f"{where}: {name} has dtype {value.dtype}; expected real floating point")
        check_finite(value, f"{where}: {name}")
    mu, sigma = mu.double().cpu(), sigma.double().cpu()
    scale = float(sigma.abs().max())
    asymmetry = float((sigma - sigma.T).abs().max())
    if asymmetry > _SYMMETRY_TOLERANCE * scale:
        raise ReferenceSetError(f"{where}: sigma is not symmetric (max |sigma - sigma^T| = {asymmetry:.3g})")
    eigenvalues = torch.linalg.eigvalsh((sigma + sigma.T) / 2)
    low, high = float(eigenvalues[0]), float(eigenvalues.abs().max())
    if low < -_PSD_TOLERANCE * high:
        raise ReferenceSetError(
            f"{where}: sigma is not positive semi-definite (smallest eigenvalue {low:.3g}, largest {high:.3g}); "
            "a covariance has no negative eigenvalues"
        )
    return mu, sigma


def cache_directory(cache_dir: PathLike | None = None) -> Path:
    """``cache_dir``, else ``$RANKPLUG_CACHE``, else ``~/.cache/rankplug`` (the digits classifier's cache too)."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("RANKPLUG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rankplug"


# ---------------------------------------------------------------------------------------------------------------
# Reference sets.


def _file_sha256(path: Path, digest: Any) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


class _Source:
    """A reference set opened and checked: how to hash it, how many images, and its uint8 batches (or statistics)."""

    def __init__(self, source: object) -> None:
        self.files: list[Path] = []
        self.images: Tensor | None = None
        self.dataset: Any = None
        self.statistics: tuple[Tensor, Tensor, int] | None = None
        self.features: Tensor | None = None
        self.path: Path | None = None
        if isinstance(source, (str, os.PathLike)):
            self.path = Path(source).expanduser()
            self.name = str(self.path)
            if self.path.is_dir():
                self.files = image_files(self.path)
            elif self.path.is_file():
                if self.path.suffix.lower() != ".npz":
                    raise ReferenceSetError(f"{self.path} is neither a folder of images nor an .npz file")
                self._open_npz(self.path)
            else:
                raise ReferenceSetError(f"no such file or folder: {str(self.path)!r}")
        elif isinstance(source, Tensor):
            self.name = f"a tensor of shape {shape_str(source)}"
            checked_pixels(source[:1], "the reference images")  # the shape and dtype checks
            if source.is_floating_point() and not bool(torch.isfinite(source).all()):
                raise ReferenceSetError("the reference images hold NaN or infinite values")
            if source.shape[0] < 2:
                raise ReferenceSetError(f"the reference images have shape {shape_str(source)}; expected N >= 2")
            self.images = source
        elif hasattr(source, "__len__") and hasattr(source, "__getitem__"):
            self.name = f"a dataset of {len(source)} images"  # type: ignore[arg-type]
            self.dataset = source
        else:
            raise TypeError(
                f"reference must be a folder, an .npz file, images (a torch.Tensor) or a dataset; got "
                f"{type(source).__name__}"
            )

    def _open_npz(self, path: Path) -> None:
        with open(path, "rb") as handle:
            npz = open_npz(handle, str(path))
            names = set(npz.members)
            if {"mu", "sigma"} <= names:
                square = (FEATURE_DIM, FEATURE_DIM)
                mu = floating_member(npz, "mu", f"({FEATURE_DIM},)", npz.members["mu"].shape == (FEATURE_DIM,))
                sigma = floating_member(npz, "sigma", f"{square}", npz.members["sigma"].shape == square)
                mu, sigma = check_statistics(mu, sigma, str(path))
                self.statistics = (mu, sigma, npz_num_images(npz))
            elif "features" in names:
                shape = npz.members["features"].shape
                ok = len(shape) == 2 and shape[1] == FEATURE_DIM and shape[0] >= 2
                self.features = floating_member(npz, "features", f"(N, {FEATURE_DIM}) with N >= 2", ok).float()
            else:
                name = "images" if "images" in names else next(iter(names)) if len(names) == 1 else None
                if name is None:
                    raise ReferenceSetError(
                        f"{path} holds {sorted(names)}; expected 'images', 'features', or 'mu' and 'sigma'"
                    )
                self.images = images_member(npz, name)

    def __len__(self) -> int:
        if self.files:
            return len(self.files)
        if self.images is not None:
            return int(self.images.shape[0])
        return len(self.dataset) if self.dataset is not None else 0

    def batches(self, size: int) -> Iterator[Tensor]:
        if self.files:
            return folder_batches(self.files, size)
        if self.images is not None:
            return tensor_batches(self.images, size, self.name)
        return dataset_batches(self.dataset, size, self.name)

    def content_sha256(self) -> str:
        digest = hashlib.sha256()
        if self.files and self.path is not None:
            for path in self.files:
                # Relative names and sizes keep the boundaries between files; the folder's own name is left out,
                # so a copy elsewhere has the same key.
                digest.update(f"{path.relative_to(self.path).as_posix()}\0{path.stat().st_size}\0".encode())
                _file_sha256(path, digest)
        elif self.path is not None:
            _file_sha256(self.path, digest)
        else:
            for batch in self.batches(256):
                digest.update(f"{tuple(batch.shape)}".encode())
                digest.update(batch.contiguous().numpy().tobytes())
        return digest.hexdigest()


def reference_key(source: object, weights_sha256: str) -> str:
    """The cache key of a reference: SHA-256 of :data:`CACHE_FORMAT`, the weights and the content.

    Example:
        >>> images = torch.zeros(2, 3, 8, 8)
        >>> reference_key(images, "w1") == reference_key(images.clone(), "w1") != reference_key(images, "w2")
        True
    """
    return _key(_Source(source).content_sha256(), weights_sha256)


def _key(content_sha256: str, weights_sha256: str) -> str:
    return hashlib.sha256(f"{CACHE_FORMAT}\0{weights_sha256}\0{content_sha256}".encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# The cache: <cache_dir>/fidelity/<key>.npz with features, mu, sigma, key and checksum.

_CACHED = ("features", "mu", "sigma")


def _checksum(key: str, arrays: dict[str, Any]) -> str:
    """SHA-256 of :data:`CACHE_FORMAT`, ``key`` and the cached arrays' dtypes, shapes and bytes."""
    import numpy as np

    digest = hashlib.sha256(f"{CACHE_FORMAT}\0{key}\0".encode())
    for name in _CACHED:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.data)
    return digest.hexdigest()


def _cache_entry(path: Path, key: str, count: int) -> dict[str, Any]:
    """The arrays of the entry at ``path`` after every check; ``ValueError`` saying which one failed."""
    import numpy as np

    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file (a symbolic link?)")
    limit = count * FEATURE_DIM * 4 + FEATURE_DIM * 8 + FEATURE_DIM**2 * 8 + _CACHE_SLACK
    if info.st_size > limit:
        raise ValueError(f"{info.st_size} bytes, more than the {limit} an entry of {count} images takes")
    # A link swapped in since lstat is refused (O_NOFOLLOW), and a FIFO cannot block the read (O_NONBLOCK).
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    with os.fdopen(os.open(path, flags), "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError("not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError("it grew while being read")
    npz = open_npz(io.BytesIO(data), str(path))
    expected = {
        "features": ("float32", (count, FEATURE_DIM)),
        "mu": ("float64", (FEATURE_DIM,)),
        "sigma": ("float64", (FEATURE_DIM, FEATURE_DIM)),
        "key": ("U64", ()),
        "checksum": ("U64", ()),
    }
    for name, (dtype, shape) in expected.items():
        member = npz.members.get(name)
        if member is None or member.dtype.newbyteorder("=") != np.dtype(dtype) or member.shape != shape:
            got = "missing" if member is None else f"{member.dtype} of shape {member.shape}"
            raise ValueError(f"{name} is {got}; expected {dtype} of shape {shape}")
    arrays = {name: read_member(npz, name) for name in expected}
    if str(arrays["key"]) != key:
        raise ValueError("it was written for another key")
    if str(arrays["checksum"]) != _checksum(key, arrays):
        raise ValueError("its checksum does not match its contents: truncated or edited")
    return arrays


def _read_cache(path: Path, key: str, count: int, source: str) -> Reference | None:
    if not os.path.lexists(path):
        return None
    try:
        arrays = _cache_entry(path, key, count)
    except (OSError, ValueError) as error:  # ReferenceSetError is a ValueError: a damaged .npz of our own
        warnings.warn(f"ignoring the damaged reference cache entry {path} ({error}); recomputing", RuntimeWarning, 3)
        return None
    features, mu, sigma = (torch.from_numpy(arrays[name]) for name in _CACHED)
    return Reference(mu, sigma, features, count, key, source)


def _write_cache(path: Path, reference: Reference) -> None:
    import numpy as np

    if reference.features is None:  # statistics files are never cached: they are their own cache
        return
    arrays = {
        "features": reference.features.float().numpy(),
        "mu": reference.mu.double().numpy(),
        "sigma": reference.sigma.double().numpy(),
    }
    buffer = io.BytesIO()
    # Uncompressed: float features and a covariance barely compress, and zlib would take seconds per 100 MB.
    checksum = np.array(_checksum(reference.key, arrays))
    np.savez(
        buffer,
        features=arrays["features"],
        mu=arrays["mu"],
        sigma=arrays["sigma"],
        key=np.array(reference.key),
        checksum=checksum,
    )
    try:
        atomic_write(path, buffer.getbuffer())  # replaces a symbolic link at path, never writes through it
    except OSError as error:  # a read-only or full cache costs the next run a recomputation, not this result
        warnings.warn(f"could not cache the reference features at {path}: {error}", RuntimeWarning, 3)


def load_reference(
    source: object,
    extractor: FeatureExtractor,
    *,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> Reference:
    """The Inception statistics (and features) of a reference set, computed once per content and weights.

    ``source`` is one of:

    - a folder: every ``.png``, ``.jpg``, ``.jpeg``, ``.bmp`` and ``.webp`` file at any depth (hidden ones skipped),
      in sorted order, decoded as the training loader decodes it (16-bit grey PNGs scaled to 8 bits) into 8-bit
      RGB at its own size (Inception resizes every image to 299 x 299), each at most :data:`MAX_IMAGE_PIXELS`;
    - an ``.npz`` file holding ``images`` (or a single array): uint8 ``(N, H, W, C)`` / ``(N, C, H, W)``, or float
      ``(N, C, H, W)`` in ``[-1, 1]`` as ``rankplug sample`` writes;
    - an ``.npz`` file holding ``features``, ``(N, 2048)`` pool features (e.g. a cache entry of this function);
    - an ``.npz`` file holding ``mu`` and ``sigma`` (TTUR's ``fid_stats_*.npz``, and an optional ``num_images``):
      statistics only, so FID and IS only; checked by :func:`check_statistics`;
    - images as a tensor ``(N, C, H, W)``, float in ``[-1, 1]`` or uint8, or a dataset whose items are images or
      ``(image, label)`` pairs with images in ``[-1, 1]`` (:func:`rankplug.app.data.open_dataset`'s).

    Features of images are cached in ``<cache_dir>/fidelity/<key>.npz``, where ``key`` is :func:`reference_key`
    (:func:`cache_directory` picks ``cache_dir``), with a SHA-256 of the key and the arrays. Hashing reads the
    images once more, which costs far less than Inception. An entry that fails its checks is recomputed, with a
    ``RuntimeWarning``.

    Shape:
        - Output: ``mu`` ``(2048,)``, ``sigma`` ``(2048, 2048)`` float64; ``features`` ``(N, 2048)`` float32 or None.

    Raises:
        ReferenceSetError: a missing path, a folder without images, an unreadable, truncated or oversized file, an
            ``.npz`` with other arrays, arrays of the wrong shape, dtype or range, non-finite values, a ``sigma``
            that is no covariance, an image over the pixel bound, fewer than 2 images. The message names the file.
    """
    opened = _Source(source)
    if opened.statistics is not None:
        mu, sigma, count = opened.statistics
        return Reference(mu, sigma, None, count, opened.content_sha256(), f"{opened.name} (statistics)")
    if opened.features is not None:
        return Reference.from_features(opened.features, key=opened.content_sha256(), source=opened.name)
    if len(opened) < 2:
        raise ReferenceSetError(f"{opened.name} holds {len(opened)} image; expected N >= 2")
    digest = _key(opened.content_sha256(), extractor.weights_sha256)
    path = cache_directory(cache_dir) / "fidelity" / f"{digest}.npz"
    cached = _read_cache(path, digest, len(opened), opened.name)
    if cached is not None:
        return cached
    features = extractor.extract(
        opened.batches(extractor.batch_size), total=len(opened), progress=progress, desc="reference features"
    )
    reference = Reference.from_features(features.pool, key=digest, source=opened.name)
    _write_cache(path, reference)
    return reference
