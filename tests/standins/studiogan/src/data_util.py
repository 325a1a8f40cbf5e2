"""Stand-in for upstream ``data_util.py``: a folder of PNG images, normalised to ``[-1, 1]``, class = sub-folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class Dataset_(torch.utils.data.Dataset):
    def __init__(self, data_dir: str, img_size: int) -> None:
        root = Path(data_dir)
        self.files = sorted(root.rglob("*.png"))
        if not self.files:
            raise OSError(f"no .png images under {data_dir!r}")
        classes = sorted({path.parent.relative_to(root).as_posix() for path in self.files})
        self.labels = [classes.index(path.parent.relative_to(root).as_posix()) for path in self.files]
        self.img_size = img_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.files[index]) as image:
            pixels = np.asarray(image.convert("RGB").resize((self.img_size, self.img_size)), dtype=np.float32)
        return torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1, self.labels[index]
