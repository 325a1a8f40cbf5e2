"""The real images a generator is scored against, and their Inception features cached by content hash.

:func:`load_reference` accepts a folder of images, an ``.npz`` file (images, features, or precomputed ``mu`` /
``sigma`` statistics), a tensor of images or a dataset, and returns a :class:`rankplug.app.eval.fidelity.Reference`.
The features of images are computed once and cached under the SHA-256 of the images' content and of the weights
file, so evaluating every stage of a run (or several runs against one data set) costs one pass of Inception over
the real images. A renamed or moved copy of the same images hits the same cache entry; a changed pixel, another
weights file or another image order does not.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor

from rankplug._checkpoint import atomic_write
from rankplug._validation import shape_str
from rankplug.app.eval.fidelity import EXTRACTOR_NAME, FidelityExtractor, Reference, ReferenceSetError, to_uint8
from rankplug.app.eval.inception import FEATURE_DIM

__all__ = ["CACHE_FORMAT", "ReferenceSetError", "cache_directory", "load_reference", "reference_key"]

CACHE_FORMAT = "rankplug-fidelity-reference-1"
"""Part of every cache key: a change in what is cached (or how) changes it, so old entries are never misread."""

PathLike = Union[str, "os.PathLike[str]"]
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")  # rankplug.app.data.IMAGE_SUFFIXES, without importing it


def cache_directory(cache_dir: PathLike | None = None) -> Path:
    """``cache_dir``, else ``$RANKPLUG_CACHE``, else ``~/.cache/rankplug`` (the digits classifier's cache too)."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("RANKPLUG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rankplug"


def _image_files(folder: Path) -> list[Path]:
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in _IMAGE_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not files:
        raise ReferenceSetError(f"{folder} holds no images ({', '.join(_IMAGE_SUFFIXES)}) at any depth")
    return files


def _npz_arrays(path: Path) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:  # not a zip, or object arrays (which would need pickle)
        raise ReferenceSetError(f"{path} is not a readable .npz of plain arrays: {error}") from error


def _images_array(array: Any, where: str) -> Tensor:
    """An ``.npz`` images array as ``(N, C, H, W)``: float in [-1, 1] (rankplug sample) or uint8 NCHW / NHWC."""
    tensor = torch.from_numpy(array)
    if tensor.dim() != 4:
        raise ReferenceSetError(f"{where} has shape {shape_str(tensor)}; expected (N, C, H, W) or (N, H, W, C)")
    if tensor.shape[1] not in (1, 3) and tensor.shape[3] in (1, 3):
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.shape[1] not in (1, 3):
        raise ReferenceSetError(f"{where} has shape {shape_str(tensor)}; expected 1 or 3 channels")
    if tensor.dtype != torch.uint8:
        if not tensor.is_floating_point():
            raise ReferenceSetError(f"{where} has dtype {tensor.dtype}; expected uint8, or float in [-1, 1]")
        low, high = float(tensor.min()), float(tensor.max())
        if low < -1.001 or high > 1.001:
            raise ReferenceSetError(f"{where} has values in [{low:.4g}, {high:.4g}]; float images must be in [-1, 1]")
    return tensor


def _folder_batches(files: list[Path], size: int) -> Iterator[Tensor]:
    """uint8 RGB batches of the files in order; a batch ends early where the image size changes."""
    import numpy as np
    from PIL import Image

    batch: list[Tensor] = []
    for path in files:
        try:
            with Image.open(path) as picture:
                pixels = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)
        except OSError as error:
            raise ReferenceSetError(f"{path} cannot be read as an image: {error}") from error
        if batch and (pixels.shape != batch[0].shape or len(batch) == size):
            yield torch.stack(batch)
            batch = []
        batch.append(pixels)
    if batch:
        yield torch.stack(batch)


def _dataset_batches(dataset: Any, size: int) -> Iterator[Tensor]:
    for start in range(0, len(dataset), size):
        items = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
        yield to_uint8(torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items]))


def _tensor_batches(images: Tensor, size: int) -> Iterator[Tensor]:
    for start in range(0, images.shape[0], size):
        yield to_uint8(images[start : start + size])


class _Source:
    """A reference set opened: how to hash it, how many images, and its uint8 batches (or statistics)."""

    def __init__(self, source: object) -> None:
        self.files: list[Path] = []
        self.images: Tensor | None = None
        self.dataset: Any = None
        self.arrays: dict[str, Any] = {}
        self.path: Path | None = None
        if isinstance(source, (str, os.PathLike)):
            self.path = Path(source).expanduser()
            self.name = str(self.path)
            if self.path.is_dir():
                self.files = _image_files(self.path)
            elif self.path.is_file():
                if self.path.suffix.lower() != ".npz":
                    raise ReferenceSetError(f"{self.path} is neither a folder of images nor an .npz file")
                self._open_npz(self.path)
            else:
                raise ReferenceSetError(f"no such file or folder: {str(self.path)!r}")
        elif isinstance(source, Tensor):
            self.name = f"a tensor of shape {shape_str(source)}"
            to_uint8(source[:1])  # the shape and dtype checks
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
        arrays = _npz_arrays(path)
        if "mu" in arrays and "sigma" in arrays:
            mu, sigma = (torch.from_numpy(arrays[k]).double() for k in ("mu", "sigma"))
            if tuple(mu.shape) != (FEATURE_DIM,) or tuple(sigma.shape) != (FEATURE_DIM, FEATURE_DIM):
                raise ReferenceSetError(
                    f"{self.path} has mu of shape {shape_str(mu)} and sigma {shape_str(sigma)}; expected "
                    f"({FEATURE_DIM},) and ({FEATURE_DIM}, {FEATURE_DIM})"
                )
            self.arrays = {"mu": mu, "sigma": sigma, "num_images": int(arrays.get("num_images", 0))}
        elif "features" in arrays:
            features = torch.from_numpy(arrays["features"])
            if features.dim() != 2 or features.shape[1] != FEATURE_DIM or features.shape[0] < 2:
                raise ReferenceSetError(
                    f"{self.path}: features has shape {shape_str(features)}; expected (N, {FEATURE_DIM}), N >= 2"
                )
            self.arrays = {"features": features.float()}
        else:
            name = "images" if "images" in arrays else next(iter(arrays), None) if len(arrays) == 1 else None
            if name is None:
                raise ReferenceSetError(
                    f"{self.path} holds {sorted(arrays)}; expected 'images', 'features', or 'mu' and 'sigma'"
                )
            self.images = _images_array(arrays[name], f"{self.path}[{name!r}]")

    def __len__(self) -> int:
        if self.files:
            return len(self.files)
        if self.images is not None:
            return int(self.images.shape[0])
        return len(self.dataset) if self.dataset is not None else 0

    def batches(self, size: int) -> Iterator[Tensor]:
        if self.files:
            return _folder_batches(self.files, size)
        if self.images is not None:
            return _tensor_batches(self.images, size)
        return _dataset_batches(self.dataset, size)

    def content_sha256(self) -> str:
        digest = hashlib.sha256()
        if self.files and self.path is not None:
            for path in self.files:
                # Relative names and sizes keep the boundaries between files; the folder's own name is left out,
                # so a copy elsewhere has the same key.
                digest.update(f"{path.relative_to(self.path).as_posix()}\0{path.stat().st_size}\0".encode())
                with open(path, "rb") as handle:
                    digest.update(handle.read())
        elif self.path is not None:
            with open(self.path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        else:
            for batch in self.batches(256):
                digest.update(f"{tuple(batch.shape)}".encode())
                digest.update(batch.contiguous().numpy().tobytes())
        return digest.hexdigest()


def reference_key(source: object, weights_sha256: str) -> str:
    """The cache key of a reference: SHA-256 of :data:`CACHE_FORMAT`, the extractor, the weights and the content.

    Example:
        >>> images = torch.zeros(2, 3, 8, 8)
        >>> reference_key(images, "w1") == reference_key(images.clone(), "w1") != reference_key(images, "w2")
        True
    """
    return _key(_Source(source).content_sha256(), weights_sha256)


def _key(content_sha256: str, weights_sha256: str) -> str:
    return hashlib.sha256(f"{CACHE_FORMAT}\0{EXTRACTOR_NAME}\0{weights_sha256}\0{content_sha256}".encode()).hexdigest()


def _read_cache(path: Path, key: str, source: str) -> Reference | None:
    import numpy as np

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            features = torch.from_numpy(data["features"])
            mu, sigma = torch.from_numpy(data["mu"]), torch.from_numpy(data["sigma"])
        if features.dim() != 2 or features.shape[1] != FEATURE_DIM or tuple(sigma.shape) != (FEATURE_DIM,) * 2:
            raise ValueError(f"features {shape_str(features)}, sigma {shape_str(sigma)}")
    except (OSError, ValueError, KeyError) as error:
        warnings.warn(f"ignoring the damaged reference cache {path} ({error}); recomputing", RuntimeWarning, 3)
        return None
    return Reference(mu.double(), sigma.double(), features.float(), int(features.shape[0]), key, source)


def _write_cache(path: Path, reference: Reference) -> None:
    import numpy as np

    if reference.features is None:  # statistics files are never cached: they are their own cache
        return
    buffer = io.BytesIO()
    # Uncompressed: float features and a covariance barely compress, and zlib would take seconds per 100 MB.
    np.savez(buffer, features=reference.features.numpy(), mu=reference.mu.numpy(), sigma=reference.sigma.numpy())
    try:
        atomic_write(path, buffer.getbuffer())
    except OSError as error:  # a read-only or full cache costs the next run a recomputation, not this result
        warnings.warn(f"could not cache the reference features at {path}: {error}", RuntimeWarning, 3)


def load_reference(
    source: object,
    extractor: FidelityExtractor,
    *,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> Reference:
    """The Inception statistics (and features) of a reference set, computed once per content and weights.

    ``source`` is one of:

    - a folder: every ``.png``, ``.jpg``, ``.jpeg``, ``.bmp`` and ``.webp`` file at any depth (hidden ones skipped),
      in sorted order, read as 8-bit RGB at its own size (Inception resizes every image to 299 x 299);
    - an ``.npz`` file holding ``images`` (or a single array): uint8 ``(N, H, W, C)`` / ``(N, C, H, W)``, or float
      ``(N, C, H, W)`` in ``[-1, 1]`` as ``rankplug sample`` writes;
    - an ``.npz`` file holding ``features``, ``(N, 2048)`` pool features (e.g. a cache file of this function);
    - an ``.npz`` file holding ``mu`` and ``sigma`` (TTUR's ``fid_stats_*.npz``, pytorch-gan-metrics',
      :meth:`rankplug.app.eval.InceptionStats.save`'s): statistics only, so FID and IS only;
    - images as a tensor ``(N, C, H, W)``, float in ``[-1, 1]`` or uint8, or a dataset whose items are images or
      ``(image, label)`` pairs with images in ``[-1, 1]`` (:func:`rankplug.app.data.open_dataset`'s).

    Features of images are cached in ``<cache_dir>/fidelity/<key>.npz``, where ``key`` is :func:`reference_key`
    (:func:`cache_directory` picks ``cache_dir``). Hashing reads the images once more, which costs far less than
    Inception. A damaged cache file is recomputed, with a warning.

    Shape:
        - Output: ``mu`` ``(2048,)``, ``sigma`` ``(2048, 2048)`` float64; ``features`` ``(N, 2048)`` float32 or None.

    Raises:
        ReferenceSetError: a missing path, a folder without images, an ``.npz`` with other arrays, images of the
            wrong shape or range, fewer than 2 images.
    """
    opened = _Source(source)
    if "mu" in opened.arrays:
        arrays = opened.arrays
        name = f"{opened.name} (statistics)"
        return Reference(arrays["mu"], arrays["sigma"], None, arrays["num_images"], opened.content_sha256(), name)
    if "features" in opened.arrays:
        return Reference.from_features(opened.arrays["features"], key=opened.content_sha256(), source=opened.name)
    if len(opened) < 2:
        raise ReferenceSetError(f"{opened.name} holds {len(opened)} image; expected N >= 2")
    digest = _key(opened.content_sha256(), extractor.weights_sha256)
    path = cache_directory(cache_dir) / "fidelity" / f"{digest}.npz"
    cached = _read_cache(path, digest, opened.name)
    if cached is not None:
        return cached
    features = extractor.extract(
        opened.batches(extractor.batch_size), total=len(opened), progress=progress, desc="reference features"
    )
    reference = Reference.from_features(features.pool, key=digest, source=opened.name)
    _write_cache(path, reference)
    return reference
