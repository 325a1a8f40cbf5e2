"""StarGAN with the angular-margin auxiliary classifier (label-geometry paper Eq. 7-8), in a few CPU seconds.

The patch is one line after the Solver is built::

    solver = Solver(celeba_loader, rafd_loader, config)
    rankplug.integrations.stargan.patch_solver(solver, scale=16.0, margin=0.3)
    solver.train()

By default this script uses **rankplug's test stand-in of StarGAN** (``tests/standins/stargan``: same Solver,
Generator and Discriminator interface, synthetic in-memory images), so it runs from a clone of rankplug with
nothing else. Pass ``--stargan-dir /path/to/yunjey/stargan`` to patch the **real upstream Solver** instead (it
needs torchvision, which upstream's ``solver.py`` imports); the data are still the synthetic loaders.

Run from the repository root::

    python examples/stargan_aam.py                       # CelebA-style multi-label attributes
    python examples/stargan_aam.py --dataset RaFD        # single-label expressions
    python examples/stargan_aam.py --margin 0            # m = 0: StarGAN's loss on s*cos(theta)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from rankplug.integrations.stargan import patch_solver

ROOT = Path(__file__).resolve().parents[1]


def load_solver_class(stargan_dir: str | None) -> tuple[type, str]:
    """The upstream ``Solver`` if ``stargan_dir`` is given, else the stand-in's (clearly labelled)."""
    if stargan_dir is not None:
        sys.path.insert(0, str(Path(stargan_dir).resolve()))  # upstream's modules import each other top-level
        return importlib.import_module("solver").Solver, f"upstream yunjey/stargan at {stargan_dir}"
    sys.path.insert(0, str(ROOT))
    return importlib.import_module("tests.standins.stargan").Solver, "rankplug's StarGAN stand-in (tests/standins)"


def classifier_metrics(solver: Any, images: torch.Tensor, labels: torch.Tensor, dataset: str) -> tuple[float, float]:
    """(AAM loss, accuracy) of D's classifier on real images; CelebA accuracy is per attribute."""
    with torch.no_grad():
        _, out_cls = solver.D(images.to(solver.device))
        labels = labels.to(solver.device)
        loss = solver.classification_loss(out_cls, labels, dataset).item()
    if dataset == "CelebA":
        return loss, ((out_cls > 0).float() == labels).float().mean().item()
    return loss, (out_cls.argmax(dim=1) == labels).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["CelebA", "RaFD"], default="CelebA")
    parser.add_argument("--scale", type=float, default=16.0, help="s of the AAM head")
    parser.add_argument("--margin", type=float, default=0.3, help="m in radians, in [0, pi/2)")
    parser.add_argument("--num-iters", type=int, default=40)
    parser.add_argument("--stargan-dir", default=None, help="a clone of yunjey/stargan to patch instead")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    solver_class, origin = load_solver_class(args.stargan_dir)
    sys.path.insert(0, str(ROOT))
    from tests.standins.stargan import get_loader, tiny_config  # synthetic data and a tiny config, either way

    workdir = tempfile.mkdtemp(prefix="stargan_aam_")
    c_dim = 5 if args.dataset == "CelebA" else 8
    config = tiny_config(
        workdir,
        dataset=args.dataset,
        c_dim=c_dim,
        num_iters=args.num_iters,
        num_iters_decay=args.num_iters // 2,
        log_step=10,
        model_save_step=args.num_iters,
    )
    for directory in (config.log_dir, config.model_save_dir, config.sample_dir, config.result_dir):
        os.makedirs(directory, exist_ok=True)  # upstream's main.py creates them before building the Solver
    loader = get_loader(dataset=args.dataset, c_dim=c_dim, image_size=config.image_size, batch_size=8)
    print(f"Solver: {origin}")
    celeba, rafd = (loader, None) if args.dataset == "CelebA" else (None, loader)
    solver = solver_class(celeba, rafd, config)

    # The one added line: D.conv2 becomes the AAM head (same Parameter), classification_loss gets the margin.
    head = patch_solver(solver, scale=args.scale, margin=args.margin)
    print(f"D.conv2 -> {head}")

    images, labels = loader.dataset.images, loader.dataset.labels
    loss, accuracy = classifier_metrics(solver, images, labels, args.dataset)
    print(f"before training: AAM cls loss on real {loss:.3f}, accuracy {accuracy:.3f}")
    solver.train()  # StarGAN's own loop, unchanged; it prints its losses every log_step iterations
    loss, accuracy = classifier_metrics(solver, images, labels, args.dataset)
    print(f"after {args.num_iters} iterations: AAM cls loss on real {loss:.3f}, accuracy {accuracy:.3f}")
    print(
        f"checkpoints ({args.num_iters}-G.ckpt, {args.num_iters}-D.ckpt, key conv2.weight) in {config.model_save_dir}"
    )


if __name__ == "__main__":
    main()
