"""Real data sets that need no download: scikit-learn's bundled digits, an image folder, a CIFAR-10 copy on disk.

Two ways in, with the same pixels convention (float images in ``[-1, 1]``, ``int64`` labels, ``-1`` where a folder
has no class sub-directories):

- **Whole tensors**: :func:`load_digits`, :func:`load_image_folder` and :func:`load_cifar10` return
  ``(images, labels)`` of shape ``(N, C, size, size)`` and ``(N,)``, for small sets and tests.
- **Streaming datasets** for training on real data sets: :class:`ImageFolderDataset`, :class:`CIFAR10Dataset` and
  :class:`DigitsDataset` are ``torch.utils.data.Dataset`` objects that produce one ``(image, label)`` pair per
  index, so a DataLoader with workers (:func:`make_loader`) decodes in parallel and peak memory does not grow
  with the number of images. :func:`open_dataset` picks one by name and splits off the held-out part.

Optional packages (Pillow, scikit-learn) are imported when a loader or dataset is built, never when rankplug is
imported.
"""

from __future__ import annotations

import io
import numbers
import operator
import os
import pickle
from collections.abc import Sized
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, Subset

from rankplug._validation import IMAGE_SIZES, check_image_size, check_positive_int
from rankplug.errors import DataFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DATASET_KINDS = ("digits", "folder", "cifar10")  #: the ``kind`` names of :func:`open_dataset`
SPLITS = ("train", "held_out")  #: the ``split`` names of :func:`open_dataset`
DIGITS_SPLITS = ("train", "test", "all")  #: the ``split`` names of :class:`DigitsDataset`
HELD_OUT_EVERY = 10  #: a folder or CIFAR-10 holds out image 0, 10, 20, ... for evaluation
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Pillow recognises a file by its bytes, not its name, and carries decoders for dozens of formats. Only the
# formats the suffixes promise are tried, so a renamed file in an exotic format never reaches a rarely used
# decoder. (Pillow's JPEG opener also reads the multi-picture JPEGs that many cameras write.)
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
# Pillow opens 16-bit grey PNGs in these modes, and its convert("L") clips them to 255 instead of scaling, which
# would turn almost every pixel white.
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def _check_channels(channels: object) -> int:
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    return int(channels)  # type: ignore[call-overload]


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return nnf.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def load_digits(size: int = 16) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled handwritten digits: 1,797 grey 8x8 images of 10 classes, resized to ``size``.

    The raw pixels are integers 0-16; they are scaled to ``[-1, 1]``, then resized bilinearly.

    Shape:
        - Output: images ``(1797, 1, size, size)`` in ``[-1, 1]``, labels ``(1797,)`` in ``0..9``.
    """
    size = check_positive_int(size, "size")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise ImportError("the digits data set needs scikit-learn: pip install 'rankplug[examples]'") from error
    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return _resize(images, size).clamp(-1.0, 1.0), labels


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("image folders need Pillow: pip install 'rankplug[examples]'") from error
    return Image


def _unlistable(error: OSError) -> None:
    # os.walk would otherwise skip an unreadable directory silently, and with it a whole class
    raise DataFileError(f"{error.filename} cannot be listed: {error.strerror}") from error


def _list_images(root: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """``root`` and every image file below it at any depth, sorted; hidden files and directories are skipped."""
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"root must be an existing directory; got {str(base)!r}")
    files: list[Path] = []
    entered: set[str] = set()
    for directory, subdirs, names in os.walk(base, onerror=_unlistable, followlinks=True):
        # Symlinked class directories are followed; a link back up the tree would make the walk endless, so each
        # real directory is entered once.
        real = os.path.realpath(directory)
        if real in entered:
            subdirs.clear()
            continue
        entered.add(real)
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]  # .git, .ipynb_checkpoints, macOS ._ files
        files.extend(
            Path(directory, name)
            for name in names
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
        )
    if not files:
        raise ValueError(f"root {str(base)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return base, sorted(files)


def _folder_labels(base: Path, files: list[Path]) -> tuple[list[int], tuple[str, ...]]:
    """The ``ImageFolder`` convention: the index of the top-level sub-directory in sorted order, -1 in ``base``."""
    tops = [None if path.parent == base else path.relative_to(base).parts[0] for path in files]
    classes = tuple(sorted({top for top in tops if top is not None}))
    index = {name: i for i, name in enumerate(classes)}
    return [-1 if top is None else index[top] for top in tops], classes


def _open_image(path: Path, mode: str, *, draft_size: int | None = None) -> Any:
    """The image at ``path`` decoded and converted to ``mode`` ("L" or "RGB"); :class:`DataFileError` if unreadable."""
    image_module = _pil()
    image_module.init()  # once per process: registers every plugin, so the filter below sees WebP where it is built
    formats = [name for name in _PIL_FORMATS if name in image_module.OPEN]
    try:
        with image_module.open(path, formats=formats) as opened:
            if draft_size is not None:
                # JPEG only: decode at 1/2, 1/4 or 1/8 scale while both sides stay >= draft_size, several times
                # faster for photos much larger than the output; other formats ignore it.
                opened.draft(mode, (draft_size, draft_size))
            image = opened
            if image.mode in _WIDE_GREY_MODES:
                image = image.convert("I").point(lambda v: v / 257 + 0.5)  # 0..65535 -> 0..255, rounded
            image = image.convert(mode)
    except (OSError, SyntaxError, ValueError, image_module.DecompressionBombError) as error:
        # PIL raises these for missing, truncated, foreign or enormous files
        raise DataFileError(f"{path} is not a readable image: {error}") from error
    return image


def _square_pixels(image: Any, size: int, channels: int, resample: Any) -> Tensor:
    """Centre-crop a PIL image to a square, resize it to ``size``: ``(channels, size, size)`` uint8."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), resample)
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.reshape(size, size, channels).permute(2, 0, 1).contiguous()


def _to_unit_range(pixels: Tensor) -> Tensor:
    """uint8 pixels 0..255 as float32 in ``[-1, 1]`` (exactly: 255 / 127.5 - 1 == 1)."""
    return pixels.float() / 127.5 - 1.0


def load_image_folder(root: str | Path, size: int = 32, *, channels: int = 3) -> tuple[Tensor, Tensor]:
    """Every image under ``root``, centre-cropped to a square and resized to ``size``, in one tensor.

    Images directly in ``root`` get label ``-1``; images in sub-directories get the index of their top-level
    directory in sorted order (the ``ImageFolder`` convention). Files and directories whose names start with a
    dot are skipped. For large folders use :class:`ImageFolderDataset`, which decodes one image at a time.

    Shape:
        - Output: images ``(N, channels, size, size)`` in ``[-1, 1]``, labels ``(N,)``.
    """
    size = check_positive_int(size, "size")
    channels = _check_channels(channels)
    image_module = _pil()
    base, files = _list_images(root)
    labels, _ = _folder_labels(base, files)
    mode = "L" if channels == 1 else "RGB"
    bilinear = image_module.Resampling.BILINEAR
    images = [_square_pixels(_open_image(path, mode), size, channels, bilinear) for path in files]
    return _to_unit_range(torch.stack(images)), torch.tensor(labels, dtype=torch.int64)


# The only globals a CIFAR-10 "python version" batch refers to: numpy's array reconstruction (under its numpy 1
# and numpy 2 module names), the array and dtype classes. A pickle that names anything else (``os.system``,
# ``builtins.eval``, a class with a ``__reduce__``) is refused before it is called.
_CIFAR_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)
CIFAR_BATCH_BYTES = 3 * 32 * 32


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits only the arrays, lists, dicts, numbers and strings a CIFAR-10 batch holds."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR-10 batch holds only numpy arrays")


def read_cifar_batch(path: str | Path) -> tuple[Tensor, Tensor]:
    """One CIFAR-10 batch file (``data_batch_<i>`` or ``test_batch``) as ``(uint8 images, int64 labels)``.

    The file is a pickle, but it is read with an unpickler that only reconstructs numpy arrays and plain
    containers: a file that names any other Python object raises :class:`DataFileError` (a ``ValueError``)
    before anything runs.

    Shape:
        - Output: images ``(N, 3, 32, 32)`` uint8, labels ``(N,)`` in ``0..9``.
    """
    source = Path(path)
    try:
        batch = _CifarUnpickler(io.BytesIO(source.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DataFileError(f"{source} is not a CIFAR-10 batch file: {error}") from error
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DataFileError(f"{source} is not a CIFAR-10 batch file: expected a dict with 'data' and 'labels'")
    import numpy as np

    data, labels = batch["data"], batch["labels"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != CIFAR_BATCH_BYTES
    ):
        got = f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}"
        raise DataFileError(f"{source}: 'data' must be a uint8 array of shape (N, {CIFAR_BATCH_BYTES}); got {got}")
    if (
        not isinstance(labels, list)
        or len(labels) != data.shape[0]
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 9 for v in labels)
    ):
        raise DataFileError(f"{source}: 'labels' must be a list of {data.shape[0]} class indices in 0..9")
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
    return images, torch.tensor(labels, dtype=torch.int64)


def _cifar_files(root: str | os.PathLike[str], *, train: bool) -> list[Path]:
    """The batch files of a CIFAR-10 python folder: ``root`` or ``root/cifar-10-batches-py``."""
    base = Path(root)
    if (base / "cifar-10-batches-py").is_dir():
        base = base / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (base / n).is_file()]
    if missing:
        raise ValueError(
            f"root {str(root)!r} is not a CIFAR-10 python folder: missing {', '.join(missing)} "
            "(download and unpack cifar-10-python.tar.gz yourself; rankplug never downloads)"
        )
    return [base / name for name in names]


def load_cifar10(root: str | Path, size: int = 32, *, train: bool = True) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from the "python version" folder already on disk (``cifar-10-batches-py``); nothing is downloaded.

    ``root`` may be the ``cifar-10-batches-py`` directory or its parent. The batch files are pickles of numpy
    arrays; they are read by :func:`read_cifar_batch`, which refuses any pickle that names another object, so
    a planted file cannot run code.

    Shape:
        - Output: images ``(50000 or 10000, 3, size, size)`` in ``[-1, 1]``, labels ``(N,)`` in ``0..9``.
    """
    size = check_positive_int(size, "size")
    batches = [read_cifar_batch(path) for path in _cifar_files(root, train=train)]
    stacked = torch.cat([images for images, _ in batches]).float() / 127.5 - 1.0
    return _resize(stacked, size), torch.cat([labels for _, labels in batches])


# ------------------------------------------------------------------------------------------- streaming datasets


def _check_index(index: object, length: int) -> int:
    """A Python-style index into ``length`` items; ``IndexError`` past the end (which ends ``for x in dataset``)."""
    position = operator.index(index)  # type: ignore[arg-type]
    if position < 0:
        position += length
    if not 0 <= position < length:
        raise IndexError(f"index {index} is out of range for a dataset of {length} images")
    return position


class _PackedPaths:
    """Relative file paths packed into one byte tensor and one offset tensor.

    A list of ``N`` Python strings is ``N`` objects: a forked DataLoader worker writes to each one's reference
    count when it reads it, so copy-on-write slowly duplicates the whole list into every worker. Two tensors are
    two objects (and move to shared memory when a spawned worker unpickles the dataset).
    """

    def __init__(self, names: list[str]) -> None:
        encoded = [os.fsencode(name) for name in names]
        lengths = torch.tensor([0] + [len(e) for e in encoded], dtype=torch.int64)
        self._offsets = lengths.cumsum(0)
        joined = b"".join(encoded)
        self._bytes = (
            torch.frombuffer(bytearray(joined), dtype=torch.uint8) if joined else torch.empty(0, dtype=torch.uint8)
        )

    def __len__(self) -> int:
        return self._offsets.numel() - 1

    def __getitem__(self, index: int) -> str:
        start, stop = int(self._offsets[index]), int(self._offsets[index + 1])
        return os.fsdecode(bytes(self._bytes[start:stop].tolist()))


class ImageFolderDataset(Dataset[tuple[Tensor, Tensor]]):
    """The images under a folder, at any depth, decoded one per index: for DataLoader workers on large folders.

    The files are listed once, at construction: every ``.png``, ``.jpg``, ``.jpeg``, ``.bmp`` and ``.webp`` (any
    case) below ``root``, following symlinked directories and skipping names that start with a dot, sorted by
    path so the order (and so :func:`open_dataset`'s held-out split) is the same on every machine. Each
    ``dataset[i]`` opens one file with Pillow, converts it to RGB (``channels=3``) or grey (``channels=1``),
    centre-crops it to a square and resizes it to ``size x size`` (Lanczos when shrinking, which is antialiased;
    bicubic when enlarging). A JPEG several times larger than ``size`` is decoded at 1/2, 1/4 or 1/8 scale
    (Pillow's draft mode, as in ``Image.thumbnail``), which is several times faster; 16-bit grey PNGs are scaled
    to 8 bits, not clipped. The dataset holds paths and labels only, never decoded pixels, and pickles small, so
    it works with ``num_workers > 0`` under fork and spawn.

    Labels follow the ``ImageFolder`` convention: the index of the image's top-level sub-directory in sorted
    order (:attr:`classes`), ``-1`` for images directly in ``root``.

    Args:
        root: an existing directory holding at least one image.
        size: the output side, a power of two from 8 to 256.
        channels: 3 for RGB, 1 for grey.

    Raises:
        ValueError: for a bad argument, naming it.
        rankplug.errors.DataFileError: (a ``ValueError``) naming the directory, if one below ``root`` cannot be
            listed; ``dataset[i]`` raises it naming the file, if that file cannot be decoded.

    Shape:
        - Output of ``dataset[i]``: image ``(channels, size, size)`` float32 in ``[-1, 1]``, label ``()`` int64.
        - :attr:`labels`: ``(N,)`` int64, without decoding anything.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as root:
        ...     for name in ["cats/a.png", "cats/deep/b.jpg", "dogs/c.png"]:
        ...         (Path(root) / name).parent.mkdir(parents=True, exist_ok=True)
        ...         Image.new("RGB", (40, 30), (255, 0, 0)).save(Path(root) / name)
        ...     dataset = ImageFolderDataset(root, 16)
        ...     image, label = dataset[2]
        >>> len(dataset), dataset.classes, dataset.labels.tolist()
        (3, ('cats', 'dogs'), [0, 0, 1])
        >>> image.shape, image.dtype, label
        (torch.Size([3, 16, 16]), torch.float32, tensor(1))
        >>> image[:, 8, 8]
        tensor([ 1., -1., -1.])
    """

    def __init__(self, root: str | os.PathLike[str], size: int, *, channels: int = 3) -> None:
        self.size = check_image_size(size)
        self.channels = _check_channels(channels)
        _pil()  # fail here, not in a worker, when Pillow is missing
        base, files = _list_images(root)
        labels, self.classes = _folder_labels(base, files)
        self.root = base
        self._paths = _PackedPaths([str(path.relative_to(base)) for path in files])
        self._labels = torch.tensor(labels, dtype=torch.int64)

    @property
    def labels(self) -> Tensor:
        """Every image's label, ``(N,)`` int64 (a copy)."""
        return self._labels.clone()

    def path(self, index: int) -> Path:
        """The file behind ``dataset[index]``."""
        return self.root / self._paths[_check_index(index, len(self))]

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        position = _check_index(index, len(self))
        image = _open_image(self.path(position), "L" if self.channels == 1 else "RGB", draft_size=self.size)
        resampling = _pil().Resampling
        resample = resampling.LANCZOS if min(image.size) > self.size else resampling.BICUBIC
        pixels = _square_pixels(image, self.size, self.channels, resample)
        return _to_unit_range(pixels), self._labels[position].clone()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, size={self.size}, channels={self.channels}): "
            f"{len(self)} images, {len(self.classes)} classes"
        )


class _InMemory(Dataset[tuple[Tensor, Tensor]]):
    """A dataset whose images (``_images``) and labels (``_labels``) are tensors in memory, resized per item."""

    _images: Tensor
    _labels: Tensor

    @property
    def labels(self) -> Tensor:
        """Every image's label, ``(N,)`` int64 (a copy)."""
        return self._labels.clone()

    def __len__(self) -> int:
        return self._images.shape[0]

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The items at ``indices`` as one batch, without a ``DataLoader``: ``(images (B, C, S, S), labels (B,))``,
        the values ``dataset[i]`` gives, stacked. The trainer uses it for data held in memory."""
        return torch.stack([self[int(i)][0] for i in indices]), self._labels[indices].clone()


class CIFAR10Dataset(_InMemory):
    """CIFAR-10 from the python folder on disk, held as uint8 and converted and resized one image per index.

    The batch files are read once, at construction, by :func:`read_cifar_batch` (which refuses a pickle that
    names any object but numpy arrays): 150 MB of uint8 for the 50,000 training images, 30 MB for the 10,000 test
    images. ``dataset[i]`` scales one image to ``[-1, 1]`` and resizes it bilinearly (antialiased when
    shrinking), the values :func:`load_cifar10` gives. Under spawned DataLoader workers the uint8 tensor moves to
    shared memory once instead of being copied into every worker.

    Args:
        root: the ``cifar-10-batches-py`` directory or its parent; nothing is downloaded.
        size: the output side, a power of two from 8 to 256.
        train: the five training batches (50,000 images) or the test batch (10,000).

    Shape:
        - Output of ``dataset[i]``: image ``(3, size, size)`` float32 in ``[-1, 1]``, label ``()`` int64 in ``0..9``.
        - :attr:`labels`: ``(N,)`` int64.

    Example:
        >>> import pickle, tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> with tempfile.TemporaryDirectory() as root:
        ...     batch = {"data": np.full((2, 3072), 255, dtype=np.uint8), "labels": [3, 5]}
        ...     _ = (Path(root) / "test_batch").write_bytes(pickle.dumps(batch))
        ...     dataset = CIFAR10Dataset(root, 64, train=False)
        >>> image, label = dataset[1]
        >>> len(dataset), image.shape, float(image.min()), label, dataset.classes[label]
        (2, torch.Size([3, 64, 64]), 1.0, tensor(5), 'dog')
    """

    channels = 3
    classes = CIFAR10_CLASSES

    def __init__(self, root: str | os.PathLike[str], size: int, *, train: bool = True) -> None:
        self.size = check_image_size(size)
        if not isinstance(train, bool):
            raise TypeError(f"train must be a bool; got {type(train).__name__}")
        self.train = train
        batches = [read_cifar_batch(path) for path in _cifar_files(root, train=train)]
        self._images = torch.cat([images for images, _ in batches])
        self._labels = torch.cat([labels for _, labels in batches])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        position = _check_index(index, len(self))
        image = _resize(_to_unit_range(self._images[position : position + 1]), self.size)
        return image[0].clamp(-1.0, 1.0), self._labels[position].clone()

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}(size={self.size}, train={self.train}): {len(self)} {split} images"


class DigitsDataset(_InMemory):
    """scikit-learn's bundled digits, at their native 8x8 or upscaled, one image per index.

    ``split`` picks the 1,347 training or 450 test digits of :func:`rankplug.app.eval.digits_split` (the split the
    reference classifier behind digits-FID is trained on), or all 1,797. The 8x8 images are held in memory
    (a few hundred kB); ``dataset[i]`` returns one at ``size == 8`` unresampled (the raw 0..16 pixels scaled to
    ``[-1, 1]``), or upscaled bilinearly, the values of :func:`load_digits` and :func:`~rankplug.app.eval.digits_split`
    at that size.

    Args:
        size: the output side, a power of two from 8 to 256.
        split: ``"train"``, ``"test"`` or ``"all"``.

    Shape:
        - Output of ``dataset[i]``: image ``(1, size, size)`` float32 in ``[-1, 1]``, label ``()`` int64 in ``0..9``.
        - :attr:`labels`: ``(N,)`` int64, ``N`` = 1,347, 450 or 1,797.

    Example:
        >>> train, test = DigitsDataset(8), DigitsDataset(32, split="test")
        >>> len(train), len(test), train[0][0].shape, test[0][0].shape
        (1347, 450, torch.Size([1, 8, 8]), torch.Size([1, 32, 32]))
    """

    channels = 1
    classes = tuple(str(digit) for digit in range(10))

    def __init__(self, size: int = 8, *, split: str = "train") -> None:
        self.size = check_image_size(size)
        if split not in DIGITS_SPLITS:
            raise ValueError(f"split must be one of {DIGITS_SPLITS}; got {split!r}")
        self.split = split
        if split == "all":
            self._images, self._labels = load_digits(8)
        else:
            from rankplug.app.eval.digits import digits_split

            parts = digits_split(8)
            if split == "train":
                self._images, self._labels = parts.train_images, parts.train_labels
            else:
                self._images, self._labels = parts.test_images, parts.test_labels

        # 1,797 digits are small at any size: resized once, with the resize load_digits applies to the whole tensor,
        # so the values agree exactly and an item costs an index, not an interpolation
        self._resized = _resize(self._images, self.size).clamp(-1.0, 1.0)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        position = _check_index(index, len(self))
        return self._resized[position].clone(), self._labels[position].clone()

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        return self._resized[indices].clone(), self._labels[indices].clone()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, split={self.split!r}): {len(self)} digits"


def held_out_indices(count: int, *, split: str) -> list[int]:
    """The indices of ``count`` images that ``split`` keeps: ``"held_out"`` is 0, 10, 20, ...; ``"train"`` the rest.

    Shape:
        - Output: ``ceil(count / 10)`` indices for ``"held_out"``, the other ``count - ceil(count / 10)`` for
          ``"train"``, ascending.

    Example:
        >>> held_out_indices(12, split="held_out"), held_out_indices(12, split="train")
        ([0, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 11])
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    held = split == "held_out"
    return [i for i in range(count) if (i % HELD_OUT_EVERY == 0) == held]


def _native_channels(channels: int | None, native: int, kind: str) -> None:
    if channels is not None and channels != native:
        raise ValueError(f"channels must be {native} (or None) for kind {kind!r}; got {channels}")


def open_dataset(
    kind: str, root: str | os.PathLike[str] | None, size: int, *, split: str, channels: int | None = None
) -> Dataset[tuple[Tensor, Tensor]]:
    """The training or held-out part of a data set named as ``rankplug train`` names it, as a streaming dataset.

    - ``"digits"``: :class:`DigitsDataset` with the fixed split of :func:`rankplug.app.eval.digits_split`
      (``"train"``: 1,347 digits, ``"held_out"``: the 450 test digits); takes no ``root``.
    - ``"folder"``: an :class:`ImageFolderDataset` of ``root``; ``"cifar10"``: the 50,000 training images of a
      :class:`CIFAR10Dataset`. Of these, every 10th image in the dataset's order (0, 10, 20, ...) is held out
      (:func:`held_out_indices`), the split :func:`rankplug.app.demo.job.load_data` makes, and the result is a
      ``torch.utils.data.Subset`` (``.dataset`` is the whole set, ``.indices`` the kept positions). The
      official CIFAR-10 test batch is not used; open it with ``CIFAR10Dataset(root, size, train=False)``.

    Args:
        kind: ``"digits"``, ``"folder"`` or ``"cifar10"``.
        root: the folder or CIFAR-10 root; ``None`` for the digits.
        size: the output side, a power of two from 8 to 256.
        split: ``"train"`` (what the trainer streams) or ``"held_out"`` (what the evaluation scores against).
        channels: for ``"folder"``, 1 (grey) or 3 (RGB, the default); the other kinds accept only their own
            (1 for the digits, 3 for CIFAR-10) or ``None``.

    Shape:
        - Output of ``dataset[i]``: image ``(C, size, size)`` float32 in ``[-1, 1]``, label ``()`` int64.

    Example:
        >>> train, held_out = (open_dataset("digits", None, 16, split=s) for s in ("train", "held_out"))
        >>> len(train), len(held_out), train[0][0].shape
        (1347, 450, torch.Size([1, 16, 16]))
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"kind must be one of {DATASET_KINDS}; got {kind!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path or None; got {type(root).__name__}")
    if kind == "digits":
        if root is not None:
            raise ValueError(f"kind 'digits' is bundled and takes no root; got root={str(root)!r}")
        _native_channels(channels, 1, kind)
        return DigitsDataset(size, split="train" if split == "train" else "test")
    if root is None:
        raise ValueError(f"kind {kind!r} needs root (an image folder or a CIFAR-10 root); got None")
    full: ImageFolderDataset | CIFAR10Dataset
    if kind == "folder":
        full = ImageFolderDataset(root, size, channels=3 if channels is None else channels)
    else:
        _native_channels(channels, 3, kind)
        full = CIFAR10Dataset(root, size, train=True)
    if len(full) < 2:
        raise ValueError(f"root {str(root)!r} holds {len(full)} image; at least 2 are needed (one is held out)")
    return Subset(full, held_out_indices(len(full), split=split))


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
    sampler: Sampler[Any] | None = None,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """A training DataLoader whose order is a function of ``seed`` alone.

    The shuffle and the workers' base seed come from ``torch.Generator`` objects seeded with ``seed``, so two
    loaders built with the same arguments yield the same batches in the same order, epoch after epoch, whatever
    the global RNG state, and the order does not depend on ``workers``. With ``workers > 0`` the worker
    processes are kept between epochs (``persistent_workers``), so each epoch does not pay for starting them
    again.

    A ``sampler`` (for example a ``torch.utils.data.DistributedSampler``, which shards the data among ranks
    and shuffles by its own ``seed`` and ``set_epoch``) replaces the loader's shuffle: ``shuffle`` is then ignored.

    Args:
        dataset: a map-style dataset, e.g. from :func:`open_dataset`.
        batch_size: images per batch, >= 1.
        workers: DataLoader worker processes; 0 decodes in the calling process.
        seed: the seed of the shuffle.
        shuffle: a new random order every epoch (ignored when a ``sampler`` is given).
        drop_last: drop the last, smaller batch, so every batch has ``batch_size`` images.
        sampler: the order to draw indices in, instead of the loader's shuffle.
        pin_memory: return batches in page-locked memory, for faster ``.to("cuda", non_blocking=True)``.

    Raises:
        ValueError: for a bad argument, or when ``drop_last`` would leave no batch at all (fewer images, or
            fewer indices from ``sampler``, than ``batch_size``).

    Shape:
        - Output: batches ``(images, labels)`` of shape ``(batch_size, C, size, size)`` and ``(batch_size,)``.

    Example:
        >>> loader = make_loader(DigitsDataset(8), 64, seed=1)
        >>> images, labels = next(iter(loader))
        >>> images.shape, labels.shape, len(loader)
        (torch.Size([64, 1, 8, 8]), torch.Size([64]), 21)
        >>> torch.equal(labels, next(iter(make_loader(DigitsDataset(8), 64, seed=1)))[1])
        True
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
        raise ValueError(f"workers must be an int >= 0; got {workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    source: object = dataset if sampler is None else sampler
    if drop_last and isinstance(source, Sized) and len(source) < batch_size:
        what = "the dataset holds" if sampler is None else "the sampler yields"
        raise ValueError(
            f"batch_size is {batch_size} but {what} {len(source)} images; with drop_last=True the loader would "
            "yield no batch (use a smaller batch_size or drop_last=False)"
        )
    if sampler is None and shuffle:
        # The order has a generator of its own: the loader's generator also draws the workers' base seed once per
        # start of the workers, which with persistent workers is once per run, not once per epoch, so sharing it
        # would make every epoch after the first depend on the number of workers.
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(int(seed)))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=int(workers),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(int(seed)),
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )


__all__ = [
    "CIFAR10_CLASSES",
    "DATASET_KINDS",
    "DIGITS_SPLITS",
    "HELD_OUT_EVERY",
    "IMAGE_SIZES",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "CIFAR10Dataset",
    "DigitsDataset",
    "ImageFolderDataset",
    "held_out_indices",
    "load_cifar10",
    "load_digits",
    "load_image_folder",
    "make_loader",
    "open_dataset",
    "read_cifar_batch",
]
