"""Stand-in for upstream ``training.dataset``: an image folder with upstream's dataset interface.

``ImageFolderDataset(path, resolution=None, use_labels=False, max_size=None, xflip=False, random_seed=0)`` reads
the ``.png`` files of a folder (upstream also reads zip archives; this stand-in does not). ``dataset[i]`` is
``(image, label)``: ``image`` a ``uint8`` array ``(C, R, R)`` in ``[0, 255]``, ``label`` a ``float32`` array
``(label_dim,)``, empty here (the stand-in has no labels). ``max_size`` keeps a seeded random subset, and
``xflip`` doubles the set with mirrored copies, as upstream's options do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class ImageFolderDataset(torch.utils.data.Dataset):
    """Square PNG images of one size, all RGB or all grey, as upstream requires."""

    def __init__(
        self,
        path: str,
        resolution: int | None = None,
        use_labels: bool = False,
        max_size: int | None = None,
        xflip: bool = False,
        random_seed: int = 0,
    ) -> None:
        from PIL import Image

        self._path = Path(path)
        if not self._path.is_dir():
            raise OSError(f"path must be a folder of .png images; got {path!r}")
        self._files = sorted(p for p in self._path.rglob("*.png"))
        if not self._files:
            raise OSError(f"no .png images in {path!r}")
        with Image.open(self._files[0]) as first:
            side, mode = first.size[0], first.mode
        self._channels = 1 if mode == "L" else 3
        if resolution is not None and resolution != side:
            raise OSError(f"images are {side}x{side}; resolution {resolution} was asked for")
        self._side = side
        self._raw_idx = np.arange(len(self._files), dtype=np.int64)
        if max_size is not None and len(self._raw_idx) > max_size:
            rng = np.random.RandomState(random_seed)
            self._raw_idx = np.sort(rng.permutation(self._raw_idx)[:max_size])
        self._xflip = np.zeros(len(self._raw_idx), dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])
        self._use_labels = bool(use_labels)

    def __len__(self) -> int:
        return len(self._raw_idx)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        with Image.open(self._files[int(self._raw_idx[idx])]) as image:
            pixels = np.asarray(image.convert("L" if self._channels == 1 else "RGB"))
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        pixels = pixels.transpose(2, 0, 1)  # HWC -> CHW
        if self._xflip[idx]:
            pixels = pixels[:, :, ::-1]
        return pixels.copy(), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        return np.zeros([0], dtype=np.float32)

    @property
    def name(self) -> str:
        return self._path.stem

    @property
    def image_shape(self) -> list[int]:
        return [self._channels, self._side, self._side]

    @property
    def num_channels(self) -> int:
        return self._channels

    @property
    def resolution(self) -> int:
        return self._side

    @property
    def label_shape(self) -> list[int]:
        return [0]

    @property
    def label_dim(self) -> int:
        return 0

    @property
    def has_labels(self) -> bool:
        return False
