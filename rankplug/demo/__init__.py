"""A small, self-contained demo: RankGAN / GoGAN stages and a same-compute WGAN-GP baseline on the digits.

Groundwork for a ``rankplug demo`` command. :mod:`rankplug.demo.models` holds small DCGAN-style networks and
:mod:`rankplug.demo.train` the training loop, which follows the stage loop of the README.
"""

from rankplug.demo.models import Discriminator, Generator
from rankplug.demo.train import METHODS, train

__all__ = ["METHODS", "Discriminator", "Generator", "train"]
