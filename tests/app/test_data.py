"""rankplug.app.data: the bundled digits, an image folder and a CIFAR-10 copy on disk, on small data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rankplug.app.data import load_cifar10, load_digits, load_image_folder


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits_shapes_range_and_labels(size):
    images, labels = load_digits(size)
    assert images.shape == (1797, 1, size, size) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert torch.equal(torch.bincount(labels).nonzero().flatten(), torch.arange(10))
    if size == 8:  # no resize: the raw 0..16 pixels map exactly to [-1, 1]
        from sklearn.datasets import load_digits as raw

        np.testing.assert_allclose(images[5, 0].numpy(), raw().images[5] / 8.0 - 1.0, rtol=0, atol=1e-6)


def test_image_folder_with_and_without_classes(tmp_path):
    for name, colour in [("cats/a.png", (255, 0, 0)), ("cats/b.png", (0, 255, 0)), ("dogs/c.jpg", (0, 0, 255))]:
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (20, 12), colour).save(path)
    images, labels = load_image_folder(tmp_path, size=8)
    assert images.shape == (3, 3, 8, 8)
    assert labels.tolist() == [0, 0, 1]
    torch.testing.assert_close(images[0, :, 4, 4], torch.tensor([1.0, -1.0, -1.0]))
    grey, _ = load_image_folder(tmp_path / "cats", size=4, channels=1)
    assert grey.shape == (2, 1, 4, 4)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="root must be an existing directory"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no images"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="channels must be 1 or 3; got 2"):
        load_image_folder(tmp_path, channels=2)


def test_cifar10_from_disk(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    images, labels = load_cifar10(tmp_path, size=16)
    assert images.shape == (20, 3, 16, 16) and labels.shape == (20,)
    test_images, _ = load_cifar10(folder, train=False)
    assert test_images.shape == (4, 3, 32, 32)
    assert test_images.min() >= -1.0 and test_images.max() <= 1.0
    with pytest.raises(ValueError, match="missing data_batch_1"):
        load_cifar10(tmp_path / "nowhere")


class _Plant:
    """A pickle that would create a file if unpickled by a plain ``pickle.load``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_cifar10_pickle_that_names_code_is_refused_and_nothing_runs(tmp_path):
    # issue 10, finding 1: a run directory could name a planted "CIFAR-10" folder whose pickle runs code
    folder = tmp_path / "evil" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    marker = tmp_path / "pwned"
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": _Plant(marker), "labels": [0]}, handle)
    with pytest.raises(ValueError, match=r"data_batch_1 is not a CIFAR-10 batch file: refusing .*touch"):
        load_cifar10(tmp_path / "evil")
    assert not marker.exists()
    # the same payload through plain pickle would have run: the test's plant is live
    with open(folder / "data_batch_1", "rb") as handle:
        pickle.load(handle)
    assert marker.exists()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([1, 2], "expected a dict with 'data' and 'labels'"),
        ({"data": np.zeros((2, 3072), dtype=np.float32), "labels": [0, 1]}, "'data' must be a uint8 array"),
        ({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0]}, "'labels' must be a list of 2"),
        ({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 10]}, "class indices in 0..9"),
    ],
)
def test_cifar10_malformed_batches(tmp_path, batch, message):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(batch, handle)
    with pytest.raises(ValueError, match=message):
        load_cifar10(tmp_path, train=False)


def test_corrupt_image_in_a_folder_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"bad\.png is not a readable image"):
        load_image_folder(tmp_path, size=8)
