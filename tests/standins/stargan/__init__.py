"""A from-scratch stand-in for yunjey/stargan (``model.py``, ``solver.py``, the data loaders), written for rankplug's
tests and examples.

It reproduces the upstream *interface*, not its code: the class names and constructor signatures, the layer
structure and ``state_dict`` keys of ``Generator`` / ``Discriminator`` (``main``, ``conv1``, ``conv2``), the
``Solver(celeba_loader, rafd_loader, config)`` attributes, ``build_model``, ``classification_loss``,
``gradient_penalty``, the ``train()`` loop and the ``{iter}-D.ckpt`` / ``{iter}-G.ckpt`` checkpoints. It needs no
torchvision, no image files and no GPU; the loaders hold small synthetic datasets in memory whose labels can be
learned, so a few iterations at 16x16 show the classifier improving.
"""

from tests.standins.stargan.data_loader import get_loader, tiny_config
from tests.standins.stargan.model import Discriminator, Generator, ResidualBlock
from tests.standins.stargan.solver import Solver

__all__ = ["Discriminator", "Generator", "ResidualBlock", "Solver", "get_loader", "tiny_config"]
