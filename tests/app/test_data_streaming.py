"""rankplug.app.data's streaming datasets: folders, CIFAR-10 and the digits one image per index, splits and loaders."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler, Subset

from rankplug.app.data import (
    IMAGE_SIZES,
    CIFAR10Dataset,
    DigitsDataset,
    ImageFolderDataset,
    held_out_indices,
    load_cifar10,
    load_digits,
    load_image_folder,
    make_loader,
    open_dataset,
)
from rankplug.errors import DataFileError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nested classes, PNG, JPEG (upper-case suffix), WebP and BMP, RGB and grey, a file in the root, and clutter."""
    root = tmp_path / "images"
    _save(root / "cats" / "a.png", Image.new("RGB", (40, 30), RED))
    _save(root / "cats" / "deep" / "er" / "b.JPG", Image.new("RGB", (30, 30), GREEN))
    _save(root / "dogs" / "c.png", Image.new("L", (20, 50), 0))
    _save(root / "dogs" / "d.webp", Image.new("RGB", (9, 9), BLUE))
    _save(root / "top.bmp", Image.new("RGB", (16, 16), (255, 255, 255)))
    # skipped: hidden files and directories (macOS "._" forks, checkpoints), and other suffixes
    (root / "cats" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    _save(root / ".ipynb_checkpoints" / "e.png", Image.new("RGB", (8, 8), RED))
    (root / "dogs" / "notes.txt").write_text("not an image")
    return root


def test_folder_lists_nested_files_once_sorted_with_top_level_labels(folder):
    dataset = ImageFolderDataset(folder, 16)
    names = [dataset.path(i).relative_to(folder).as_posix() for i in range(len(dataset))]
    assert names == ["cats/a.png", "cats/deep/er/b.JPG", "dogs/c.png", "dogs/d.webp", "top.bmp"]
    assert dataset.classes == ("cats", "dogs")
    assert dataset.labels.tolist() == [0, 0, 1, 1, -1]
    assert dataset.labels.dtype == torch.int64


def test_symlinked_class_directories_are_followed_and_a_loop_ends(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _save(elsewhere / "x.png", Image.new("RGB", (8, 8)))
    root = tmp_path / "root"
    _save(root / "a" / "y.png", Image.new("RGB", (8, 8)))
    (root / "b").symlink_to(elsewhere, target_is_directory=True)
    (root / "a" / "back").symlink_to(root, target_is_directory=True)  # a cycle
    dataset = ImageFolderDataset(root, 8)
    assert [dataset.path(i).relative_to(root).as_posix() for i in range(len(dataset))] == ["a/y.png", "b/x.png"]
    assert dataset.labels.tolist() == [0, 1]


def test_folder_items_rgb_and_grey(folder):
    expected_rgb = [[1, -1, -1], [-1, 1, -1], [-1, -1, -1], [-1, -1, 1], [1, 1, 1]]
    rgb = ImageFolderDataset(folder, 16)
    for i, colour in enumerate(expected_rgb):
        image, label = rgb[i]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert label.dtype == torch.int64 and label.shape == () and int(label) == rgb.labels[i]
        assert image.min() >= -1.0 and image.max() <= 1.0
        # solid colours stay solid through the crop and the filter; the JPEG only approximately
        torch.testing.assert_close(image.mean(dim=(1, 2)), torch.tensor(colour, dtype=torch.float32), atol=0.03, rtol=0)
    grey = ImageFolderDataset(folder, 8, channels=1)
    images = torch.stack([grey[i][0] for i in range(len(grey))])
    assert images.shape == (5, 1, 8, 8)
    # ITU-R 601 luma of red, green, black, blue, white
    luma = torch.tensor([76, 150, 0, 29, 255]) / 127.5 - 1.0
    torch.testing.assert_close(images.mean(dim=(1, 2, 3)), luma, atol=0.03, rtol=0)
    assert rgb[-1][0].shape == (3, 16, 16)  # Python-style negative index
    with pytest.raises(IndexError, match="index 5 is out of range for a dataset of 5 images"):
        rgb[5]


def test_folder_centre_crop(tmp_path):
    pixels = np.zeros((10, 30, 3), dtype=np.uint8)  # a wide image: only the middle 10x10 square is white
    pixels[:, 10:20] = 255
    _save(tmp_path / "wide.png", Image.fromarray(pixels))
    pixels = np.zeros((40, 8), dtype=np.uint8)  # a tall grey one
    pixels[16:24] = 255
    _save(tmp_path / "tall.png", Image.fromarray(pixels))
    dataset = ImageFolderDataset(tmp_path, 8)
    for i in range(2):
        assert torch.equal(dataset[i][0], torch.ones(3, 8, 8))


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    # Pillow's own convert("L") clips 16-bit values at 255, which would make this image white
    _save(tmp_path / "deep.png", Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)))
    image, _ = ImageFolderDataset(tmp_path, 8, channels=1)[0]
    torch.testing.assert_close(image, torch.full((1, 8, 8), 128 / 127.5 - 1.0))


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_every_power_of_two_from_8_to_256(tmp_path, size):
    _save(tmp_path / "a.jpg", Image.new("RGB", (100, 70), (200, 100, 50)))
    _save(tmp_path / "b.png", Image.new("L", (8, 8), 128))
    folder = ImageFolderDataset(tmp_path, size)
    for i in range(2):
        image, _ = folder[i]
        assert image.shape == (3, size, size) and image.min() >= -1.0 and image.max() <= 1.0
    digit, _ = DigitsDataset(size)[0]
    assert digit.shape == (1, size, size) and digit.min() >= -1.0 and digit.max() <= 1.0


@pytest.mark.parametrize("size", [12, 512, 4, 0, -8])
def test_sizes_other_than_powers_of_two_from_8_to_256_are_refused(tmp_path, size):
    _save(tmp_path / "a.png", Image.new("RGB", (8, 8)))
    message = rf"size must be a power of two from 8 to 256 \(one of \(8, 16, 32, 64, 128, 256\)\); got {size}"
    for build in (
        lambda: ImageFolderDataset(tmp_path, size),
        lambda: DigitsDataset(size),
        lambda: open_dataset("digits", None, size, split="train"),
    ):
        with pytest.raises(ValueError, match=message):
            build()


def test_non_integer_sizes_are_type_errors(tmp_path):
    for size in (16.0, True, "16"):
        with pytest.raises(TypeError, match="size must be an int, a power of two from 8 to 256"):
            DigitsDataset(size)


def test_folder_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="root must be an existing directory"):
        ImageFolderDataset(tmp_path / "missing", 16)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"holds no images \(\.png, \.jpg, \.jpeg, \.bmp, \.webp\)"):
        ImageFolderDataset(tmp_path, 16)
    for channels in (2, 4, True):
        with pytest.raises(ValueError, match=f"channels must be 1 or 3; got {channels}"):
            ImageFolderDataset(tmp_path, 16, channels=channels)


def test_corrupt_or_foreign_file_raises_data_file_error_naming_it_when_read(tmp_path):
    _save(tmp_path / "good.png", Image.new("RGB", (8, 8)))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")
    Image.new("P", (8, 8)).save(tmp_path / "renamed.jpg", format="GIF")  # a format the suffixes do not promise
    dataset = ImageFolderDataset(tmp_path, 8)  # listing decodes nothing
    assert [dataset.path(i).name for i in range(3)] == ["broken.png", "good.png", "renamed.jpg"]
    with pytest.raises(DataFileError, match=rf"{tmp_path / 'broken.png'} is not a readable image"):
        dataset[0]
    with pytest.raises(DataFileError, match=rf"{tmp_path / 'renamed.jpg'} is not a readable image"):
        dataset[2]
    assert dataset[1][0].shape == (3, 8, 8)
    (tmp_path / "good.png").unlink()  # deleted after listing
    with pytest.raises(DataFileError, match=r"good\.png is not a readable image"):
        dataset[1]


def test_an_unlistable_directory_raises_data_file_error_naming_it(tmp_path, monkeypatch):
    _save(tmp_path / "open" / "a.png", Image.new("RGB", (8, 8)))
    (tmp_path / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):  # chmod 000 does not stop root, so the refusal is simulated
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataFileError, match=rf"{tmp_path / 'locked'} cannot be listed: Permission denied"):
        ImageFolderDataset(tmp_path, 8)


def test_digits_at_8_are_the_raw_sklearn_pixels_and_at_16_equal_load_digits():
    from sklearn.datasets import load_digits as raw_digits

    raw = raw_digits()
    native = DigitsDataset(8, split="all")
    assert len(native) == 1797 and native.classes == tuple("0123456789")
    for i in (0, 5, 1796):
        image, label = native[i]
        expected = torch.as_tensor(raw.images[i], dtype=torch.float32) / 8.0 - 1.0
        assert torch.equal(image, expected.unsqueeze(0)) and int(label) == raw.target[i]
    images, labels = load_digits(16)
    upscaled = DigitsDataset(16, split="all")
    assert torch.equal(torch.stack([upscaled[i][0] for i in range(len(upscaled))]), images)
    assert torch.equal(upscaled.labels, labels)


@pytest.mark.parametrize("size", [8, 16])
def test_digits_splits_are_those_of_digits_split(size):
    from rankplug.app.eval.digits import digits_split

    parts = digits_split(size)
    for split, images, labels in [
        ("train", parts.train_images, parts.train_labels),
        ("test", parts.test_images, parts.test_labels),
    ]:
        dataset = DigitsDataset(size, split=split)
        assert torch.equal(torch.stack([dataset[i][0] for i in range(len(dataset))]), images)
        assert torch.equal(dataset.labels, labels)
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'all'\); got 'held_out'"):
        DigitsDataset(size, split="held_out")


def _cifar_folder(root: Path, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, size=per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_cifar10_items_equal_load_cifar10(tmp_path, size):
    _cifar_folder(tmp_path)
    for train in (True, False):
        dataset = CIFAR10Dataset(tmp_path, size, train=train)
        images, labels = load_cifar10(tmp_path, size, train=train)
        items = [dataset[i] for i in range(len(dataset))]
        assert len(dataset) == (20 if train else 4)
        assert all(image.shape == (3, size, size) and image.dtype == torch.float32 for image, _ in items)
        torch.testing.assert_close(torch.stack([image for image, _ in items]), images.clamp(-1, 1))
        assert torch.equal(torch.stack([label for _, label in items]), labels) and torch.equal(dataset.labels, labels)


def test_cifar10_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a CIFAR-10 python folder: missing data_batch_1"):
        CIFAR10Dataset(tmp_path, 32)
    folder = _cifar_folder(tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataFileError, match=r"test_batch is not a CIFAR-10 batch file"):
        CIFAR10Dataset(tmp_path, 32, train=False)
    with pytest.raises(TypeError, match="train must be a bool; got str"):
        CIFAR10Dataset(tmp_path, 32, train="yes")


def test_datasets_pickle_small_and_round_trip(folder, tmp_path):
    _cifar_folder(tmp_path / "c")
    for dataset in (ImageFolderDataset(folder, 16), CIFAR10Dataset(tmp_path / "c", 16), DigitsDataset(16)):
        copy = pickle.loads(pickle.dumps(dataset))
        assert len(copy) == len(dataset) and torch.equal(copy.labels, dataset.labels)
        for i in (0, len(dataset) - 1):
            assert torch.equal(copy[i][0], dataset[i][0]) and torch.equal(copy[i][1], dataset[i][1])
    # paths and labels only: no pixels travel to a worker
    assert len(pickle.dumps(ImageFolderDataset(folder, 256))) < 4096


def test_held_out_split_of_a_folder_is_every_tenth_file_disjoint_and_deterministic(tmp_path):
    order = np.random.default_rng(0).permutation(25)  # written in a shuffled order: the split follows the names
    for k in order:
        _save(tmp_path / f"c{k % 3}" / f"{k:02d}.png", Image.new("RGB", (8, 8), (10 * int(k), 0, 0)))
    train = open_dataset("folder", str(tmp_path), 8, split="train")
    held = open_dataset("folder", tmp_path, 8, split="held_out")
    assert isinstance(train, Subset) and isinstance(held, Subset)
    assert list(held.indices) == [0, 10, 20] and len(train) == 22
    assert set(train.indices).isdisjoint(held.indices) and sorted([*train.indices, *held.indices]) == list(range(25))
    again = open_dataset("folder", tmp_path, 8, split="held_out")
    assert [held.dataset.path(i) for i in held.indices] == [again.dataset.path(i) for i in again.indices]
    # the same images rankplug.app.demo.job.load_data holds out of load_image_folder today: its [::10]
    everything, _ = load_image_folder(tmp_path, 8)
    torch.testing.assert_close(torch.stack([held[i][0] for i in range(len(held))]), everything[::10])
    mask = torch.ones(25, dtype=torch.bool)
    mask[::10] = False
    torch.testing.assert_close(torch.stack([train[i][0] for i in range(len(train))]), everything[mask])


def test_held_out_split_of_cifar10_and_the_digits(tmp_path):
    _cifar_folder(tmp_path)
    train = open_dataset("cifar10", tmp_path, 32, split="train")
    held = open_dataset("cifar10", tmp_path, 32, split="held_out")
    assert isinstance(held, Subset) and list(held.indices) == [0, 10] and len(train) == 18
    images, _ = load_cifar10(tmp_path, 32)
    torch.testing.assert_close(held[1][0], images[10])
    digits_train = open_dataset("digits", None, 8, split="train")
    digits_held = open_dataset("digits", None, 8, split="held_out")
    assert isinstance(digits_train, DigitsDataset) and (len(digits_train), len(digits_held)) == (1347, 450)
    assert torch.equal(digits_held.labels, DigitsDataset(8, split="test").labels)
    assert held_out_indices(1, split="held_out") == [0] and held_out_indices(1, split="train") == []


def test_open_dataset_errors(tmp_path):
    _save(tmp_path / "one" / "a.png", Image.new("RGB", (8, 8)))
    cases = [
        (lambda: open_dataset("svhn", None, 16, split="train"), "kind must be one of"),
        (lambda: open_dataset("digits", None, 16, split="test"), r"split must be one of \('train', 'held_out'\)"),
        (
            lambda: open_dataset("digits", str(tmp_path), 16, split="train"),
            "kind 'digits' is bundled and takes no root",
        ),
        (lambda: open_dataset("folder", None, 16, split="train"), "kind 'folder' needs root"),
        (lambda: open_dataset("cifar10", None, 16, split="train"), "kind 'cifar10' needs root"),
        (lambda: open_dataset("folder", tmp_path / "one", 16, split="train"), "holds 1 image; at least 2 are needed"),
        (
            lambda: open_dataset("digits", None, 16, split="train", channels=3),
            "channels must be 1 .* for kind 'digits'",
        ),
        (lambda: open_dataset("cifar10", tmp_path, 16, split="train", channels=1), "channels must be 3 .* 'cifar10'"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message):
            build()
    with pytest.raises(TypeError, match="root must be a path or None; got int"):
        open_dataset("folder", 3, 16, split="train")
    _save(tmp_path / "one" / "b.png", Image.new("L", (8, 8)))
    grey = open_dataset("folder", tmp_path / "one", 16, split="train", channels=1)
    assert grey[0][0].shape == (1, 16, 16)


def _labels_in_order(loader) -> list[int]:
    return [int(v) for _, labels in loader for v in labels]


def test_loader_order_is_a_function_of_the_seed():
    torch.manual_seed(123)  # the global RNG plays no part
    digits = DigitsDataset(8)
    first = _labels_in_order(make_loader(digits, 100, seed=3))
    torch.manual_seed(456)
    assert _labels_in_order(make_loader(digits, 100, seed=3)) == first
    assert _labels_in_order(make_loader(digits, 100, seed=4)) != first
    assert len(first) == 1300  # 13 full batches of 100; the last 47 are dropped
    in_order = make_loader(digits, 100, shuffle=False, drop_last=False)
    assert _labels_in_order(in_order) == digits.labels.tolist()


def test_loader_with_two_workers_gives_the_batches_of_zero_workers(folder):
    dataset = ImageFolderDataset(folder, 16)
    loader = make_loader(dataset, 2, workers=2, seed=7)
    assert loader.persistent_workers and loader.num_workers == 2
    serial = make_loader(dataset, 2, seed=7)
    for _epoch in range(2):  # the second epoch reuses the persistent workers and draws a new order
        batches, expected = list(loader), list(serial)
        assert len(batches) == 2
        for (images, labels), (serial_images, serial_labels) in zip(batches, expected):
            assert images.shape == (2, 3, 16, 16) and labels.dtype == torch.int64
            assert torch.equal(images, serial_images) and torch.equal(labels, serial_labels)
    assert not make_loader(dataset, 2).persistent_workers


def test_loader_accepts_a_distributed_sampler():
    digits = DigitsDataset(8)
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(digits, num_replicas=2, rank=rank, shuffle=True, seed=5)
        loader = make_loader(digits, 50, sampler=sampler, drop_last=False)  # shuffle=True is left to the sampler
        assert loader.sampler is sampler
        seen.append(_labels_in_order(loader))
        assert seen[-1] == [int(digits.labels[i]) for i in sampler]
    assert len(seen[0]) == len(seen[1]) == 674  # 1,347 split over two ranks, one index repeated to even them


def test_loader_errors():
    digits = DigitsDataset(8, split="test")
    with pytest.raises(ValueError, match="batch_size is 500 but the dataset holds 450 images; with drop_last=True"):
        make_loader(digits, 500)
    assert len(make_loader(digits, 500, drop_last=False)) == 1
    sampler = DistributedSampler(digits, num_replicas=4, rank=0)
    with pytest.raises(ValueError, match="batch_size is 200 but the sampler yields 113 images"):
        make_loader(digits, 200, sampler=sampler)
    with pytest.raises(ValueError, match="workers must be an int >= 0; got -1"):
        make_loader(digits, 8, workers=-1)
    with pytest.raises(TypeError, match="batch_size must be an int >= 1; got float"):
        make_loader(digits, 8.0)
    with pytest.raises(TypeError, match="seed must be an int; got NoneType"):
        make_loader(digits, 8, seed=None)


_PEAK_RSS = textwrap.dedent(
    """
    import resource, sys
    from rankplug.app.data import ImageFolderDataset, make_loader

    loader = make_loader(ImageFolderDataset(sys.argv[1], 64), 64, drop_last=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count = sum(images.shape[0] for images, _ in loader)
    print(count, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def _peak_rss_kib(root: Path) -> tuple[int, int, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(root)], capture_output=True, text=True, env=env, check=True, timeout=300
    )
    count, before, after = (int(v) for v in result.stdout.split())
    return count, before, after


def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    # 4,000 64x64 RGB PNGs in four classes; holding them decoded as float32 would take 4000*3*64*64*4 B = 197 MB
    pattern = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    large, small = tmp_path / "large", tmp_path / "small"
    for k in range(4):
        (large / f"c{k}").mkdir(parents=True)
        (small / f"c{k}").mkdir(parents=True)
    for i in range(4000):
        path = large / f"c{i % 4}" / f"{i:04d}.png"
        Image.fromarray(np.roll(pattern, i, axis=1)).save(path, compress_level=1)
        if i < 400:
            os.link(path, small / f"c{i % 4}" / path.name)
    small_count, _, small_peak = _peak_rss_kib(small)
    large_count, _, large_peak = _peak_rss_kib(large)
    assert (small_count, large_count) == (400, 4000)
    growth_mib = (large_peak - small_peak) / 1024  # Linux reports ru_maxrss in KiB
    assert growth_mib < 40, f"peak RSS grew by {growth_mib:.1f} MiB from 400 to 4,000 images"
