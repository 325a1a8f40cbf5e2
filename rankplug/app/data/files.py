"""Reading images from disk: an image folder (Pillow, only the formats the suffixes promise) and CIFAR-10's pickled
batches (a restricted unpickler that builds nothing but arrays and numbers)."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor

from rankplug._validation import check_positive_int
from rankplug.errors import DataFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Pillow recognises a file by its bytes, not its name, and carries decoders for dozens of formats. Only the
# formats the suffixes promise are tried, so a renamed file in an exotic format never reaches a rarely used
# decoder. (Pillow's JPEG opener also reads the multi-picture JPEGs that many cameras write.)
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
# Pillow opens 16-bit grey PNGs in these modes, and its convert("L") clips them to 255 instead of scaling, which
# would turn almost every pixel white.
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def check_channels(channels: object) -> int:
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    return int(channels)  # type: ignore[call-overload]


def resize_images(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return nnf.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def import_pil() -> Any:
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("image folders need Pillow: pip install 'rankplug[demo]'") from error
    return Image


def _unlistable(error: OSError) -> None:
    # os.walk would otherwise skip an unreadable directory silently, and with it a whole class
    raise DataFileError(f"{error.filename} cannot be listed: {error.strerror}") from error


def list_images(root: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
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


def folder_labels(base: Path, files: list[Path]) -> tuple[list[int], tuple[str, ...]]:
    """The ``ImageFolder`` convention: the index of the top-level sub-directory in sorted order, -1 in ``base``."""
    tops = [None if path.parent == base else path.relative_to(base).parts[0] for path in files]
    classes = tuple(sorted({top for top in tops if top is not None}))
    index = {name: i for i, name in enumerate(classes)}
    return [-1 if top is None else index[top] for top in tops], classes


def open_image(path: Path, mode: str, *, draft_size: int | None = None) -> Any:
    """The image at ``path`` decoded and converted to ``mode`` ("L" or "RGB"); :class:`DataFileError` if unreadable."""
    image_module = import_pil()
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


def square_pixels(image: Any, size: int, channels: int, resample: Any) -> Tensor:
    """Centre-crop a PIL image to a square, resize it to ``size``: ``(channels, size, size)`` uint8."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), resample)
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.reshape(size, size, channels).permute(2, 0, 1).contiguous()


def to_unit_range(pixels: Tensor) -> Tensor:
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
    channels = check_channels(channels)
    image_module = import_pil()
    base, files = list_images(root)
    labels, _ = folder_labels(base, files)
    mode = "L" if channels == 1 else "RGB"
    bilinear = image_module.Resampling.BILINEAR
    images = [square_pixels(open_image(path, mode), size, channels, bilinear) for path in files]
    return to_unit_range(torch.stack(images)), torch.tensor(labels, dtype=torch.int64)


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


def cifar_files(root: str | os.PathLike[str], *, train: bool) -> list[Path]:
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
    batches = [read_cifar_batch(path) for path in cifar_files(root, train=train)]
    stacked = torch.cat([images for images, _ in batches]).float() / 127.5 - 1.0
    return resize_images(stacked, size), torch.cat([labels for _, labels in batches])


# ------------------------------------------------------------------------------------------- streaming datasets
