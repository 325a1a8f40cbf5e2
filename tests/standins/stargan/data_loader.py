"""Stand-in for StarGAN's ``data_loader.py`` and ``main.py`` configuration: synthetic in-memory datasets and a
tiny ``config`` with the attribute names upstream's argparse produces.

Loaders yield ``(x, label)`` batches like upstream's: ``x`` in ``[-1, 1]`` of shape ``(N, 3, S, S)``; CelebA labels
are multi-hot ``float32`` ``(N, c_dim)``; RaFD labels are ``int64`` class indices ``(N,)`` (what ``ImageFolder``
gives). The images carry a fixed random pattern per attribute / class plus noise, so the labels are learnable.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor
from torch.utils import data

CELEBA_ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
RAFD_CLASSES = 8


class SyntheticFaces(data.Dataset):
    """``num_images`` synthetic images with CelebA-style attributes or RaFD-style classes, held in memory."""

    def __init__(self, dataset: str, *, num_images: int, image_size: int, c_dim: int, seed: int) -> None:
        if dataset not in ("CelebA", "RaFD"):
            raise ValueError(f"dataset must be 'CelebA' or 'RaFD'; got {dataset!r}")
        rng = torch.Generator().manual_seed(seed)
        patterns = torch.randn(c_dim, 3, image_size, image_size, generator=rng)
        noise = 0.5 * torch.randn(num_images, 3, image_size, image_size, generator=rng)
        if dataset == "CelebA":
            self.labels: Tensor = (torch.rand(num_images, c_dim, generator=rng) < 0.5).float()
            signs = 2.0 * self.labels - 1.0  # each attribute adds or subtracts its pattern
            signal = torch.einsum("nk,kchw->nchw", signs, patterns) / c_dim**0.5
        else:
            self.labels = torch.randint(0, c_dim, (num_images,), generator=rng)
            signal = patterns[self.labels]
        self.images = torch.tanh(0.7 * signal + noise)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


def get_loader(
    image_dir: str | None = None,
    attr_path: str | None = None,
    selected_attrs: list[str] | None = None,
    crop_size: int | None = None,
    image_size: int = 16,
    batch_size: int = 8,
    dataset: str = "CelebA",
    mode: str = "train",
    num_workers: int = 0,
    *,
    num_images: int = 64,
    c_dim: int | None = None,
    seed: int = 0,
) -> data.DataLoader:
    """Upstream's ``get_loader`` signature; the paths and the crop size are accepted and ignored."""
    if c_dim is None:
        c_dim = len(selected_attrs or CELEBA_ATTRS) if dataset == "CelebA" else RAFD_CLASSES
    faces = SyntheticFaces(dataset, num_images=num_images, image_size=image_size, c_dim=c_dim, seed=seed)
    return data.DataLoader(
        faces,
        batch_size=batch_size,
        shuffle=(mode == "train"),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        drop_last=True,
    )


def tiny_config(directory: str | os.PathLike[str] | None = None, **overrides: Any) -> SimpleNamespace:
    """A ``config`` with every attribute upstream's ``main.py`` parses, sized to train in seconds on a CPU.

    ``directory`` (default ``"stargan"``) holds ``logs``, ``models``, ``samples`` and ``results``, as upstream's
    defaults do; ``overrides`` replace any attribute.
    """
    root = os.fspath(directory) if directory is not None else "stargan"
    config = SimpleNamespace(
        # Model configuration.
        c_dim=5,
        c2_dim=8,
        celeba_crop_size=16,
        rafd_crop_size=16,
        image_size=16,
        g_conv_dim=8,
        d_conv_dim=8,
        g_repeat_num=1,
        d_repeat_num=2,
        lambda_cls=1.0,
        lambda_rec=10.0,
        lambda_gp=10.0,
        # Training configuration.
        dataset="CelebA",
        batch_size=8,
        num_iters=10,
        num_iters_decay=5,
        g_lr=1e-3,
        d_lr=1e-3,
        n_critic=2,
        beta1=0.5,
        beta2=0.999,
        resume_iters=None,
        selected_attrs=list(CELEBA_ATTRS),
        # Test configuration.
        test_iters=10,
        # Miscellaneous.
        num_workers=0,
        mode="train",
        use_tensorboard=False,
        # Directories.
        celeba_image_dir=None,
        attr_path=None,
        rafd_image_dir=None,
        log_dir=os.path.join(root, "logs"),
        model_save_dir=os.path.join(root, "models"),
        sample_dir=os.path.join(root, "samples"),
        result_dir=os.path.join(root, "results"),
        # Step size.
        log_step=5,
        sample_step=1000,
        model_save_step=1000,
        lr_update_step=1000,
    )
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise AttributeError(f"StarGAN's config has no attribute {key!r}")
        setattr(config, key, value)
    return config
