"""Real data sets that need no download: scikit-learn's bundled digits, an image folder, a CIFAR-10 copy on disk.

Every loader returns ``(images, labels)``: float images in ``[-1, 1]`` of shape ``(N, C, size, size)`` and
``int64`` labels of shape ``(N,)`` (``-1`` where a folder has no class sub-directories). Optional packages are
imported when a loader runs, never when rankplug is imported.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rankplug._validation import check_positive_int
from rankplug.errors import DataFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


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


def load_image_folder(root: str | Path, size: int = 32, *, channels: int = 3) -> tuple[Tensor, Tensor]:
    """Every image under ``root``, centre-cropped to a square and resized to ``size``.

    Images directly in ``root`` get label ``-1``; images in sub-directories get the index of their directory in
    sorted order (the ``ImageFolder`` convention).

    Shape:
        - Output: images ``(N, channels, size, size)`` in ``[-1, 1]``, labels ``(N,)``.
    """
    size = check_positive_int(size, "size")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("image folders need Pillow: pip install 'rankplug[examples]'") from error
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"root must be an existing directory; got {str(base)!r}")
    files = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"root {str(base)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    classes = sorted({p.parent.relative_to(base).parts[0] for p in files if p.parent != base})
    index = {name: i for i, name in enumerate(classes)}
    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for path in files:
        try:
            with Image.open(path) as opened:
                image = opened.convert(mode)
        except (OSError, SyntaxError, ValueError) as error:  # PIL raises these for truncated or foreign files
            raise DataFileError(f"{path} is not a readable image: {error}") from error
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        images.append(data.reshape(size, size, channels).permute(2, 0, 1))
        labels.append(-1 if path.parent == base else index[path.parent.relative_to(base).parts[0]])
    stacked = torch.stack(images).float() / 127.5 - 1.0
    return stacked, torch.tensor(labels, dtype=torch.int64)


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


def load_cifar10(root: str | Path, size: int = 32, *, train: bool = True) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from the "python version" folder already on disk (``cifar-10-batches-py``); nothing is downloaded.

    ``root`` may be the ``cifar-10-batches-py`` directory or its parent. The batch files are pickles of numpy
    arrays; they are read by :func:`read_cifar_batch`, which refuses any pickle that names another object, so
    a planted file cannot run code.

    Shape:
        - Output: images ``(50000 or 10000, 3, size, size)`` in ``[-1, 1]``, labels ``(N,)`` in ``0..9``.
    """
    size = check_positive_int(size, "size")
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
    batches = [read_cifar_batch(base / name) for name in names]
    stacked = torch.cat([images for images, _ in batches]).float() / 127.5 - 1.0
    return _resize(stacked, size), torch.cat([labels for _, labels in batches])
