"""The methods, one object each: which losses a method trains with at each stage, and who judges ``G_{i-1}(z)``.

Every host of rankplug (the trainer, the DCGAN criterion, the StyleGAN2-ADA loss, a user's own loop) asks a
:class:`StageObjective` for the critic loss and the generator loss of the current stage instead of writing the
recipe again. ``StageObjective(name, ...)`` builds the method registered under ``name`` in :data:`METHODS`:

=========  ======================================================  ======================  ===========================
variant    critic loss                                             judge of G_{i-1}(z)     generator loss
=========  ======================================================  ======================  ===========================
rankgan    stage 1: margin loss (RankGAN Eq. 3) + GP (Eq. 5);      stage >= 2: current D   stage 1: ``-D(G(z))``;
           stage >= 2: ranking + clamp (Eq. 4 + 6) + GP                                    stage >= 2: Eq. 4's half
gogan      stage 1: margin loss + GP; stage >= 2: GoGAN Eq. 3-5    stage >= 2: frozen      ``-D(G(z))``
           + GP                                                    ``D_{i-1}``
margin     margin loss (Eq. 3) + GP, every stage                   none                    ``-D(G(z))``
wgan-gp    ``mean D(G(z)) - mean D(x)`` + GP                       none                    ``-D(G(z))``
dcgan      ``softplus(-D(x)) + softplus(D(G(z)))``                 none                    ``softplus(-D(G(z)))``
mbgan      MBGAN's triplet loss (Eq. 1 + 4) on embeddings          none                    ``d(x_j, G(z))`` (Eq. 2)
=========  ======================================================  ======================  ===========================

For the score methods ``real``/``fake``/``prev_fake`` are critic scores (higher means more real); for
``mbgan`` they are the critic's embeddings (``real`` the anchor ``x_i``, ``positive`` a second real ``x_j``).

Each method is one file here (``rankgan.py``, ``gogan.py``, ``margin.py``, ``wgan_gp.py``, ``dcgan.py``,
``mbgan.py``); :mod:`rankplug.methods.base` holds what they share. A new method is a subclass of
:class:`StageObjective` in a new file, passed to :func:`register` (below, for the built-in ones): the trainer, the
command line and the integrations read its class facts (``staged``, ``embeds``, ``has_penalty``, ...), never its
name.
"""

from __future__ import annotations

from rankplug.methods.base import METHODS, Judge, MethodSettings, StageObjective, critic_judge, register
from rankplug.methods.dcgan import DCGAN
from rankplug.methods.gogan import GoGAN
from rankplug.methods.margin import MarginGAN
from rankplug.methods.mbgan import MBGAN
from rankplug.methods.rankgan import RankGAN
from rankplug.methods.wgan_gp import WGANGP

for _method in (RankGAN, GoGAN, MarginGAN, WGANGP, DCGAN, MBGAN):  # the order the command line lists them in
    register(_method)
del _method

#: The built-in methods' names, in the command line's order (:data:`METHODS` also holds any registered later).
VARIANTS: tuple[str, ...] = tuple(METHODS)
#: The built-in methods that train stage ``i >= 2`` against the frozen stage ``i - 1``.
STAGED: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.staged)

__all__ = [
    "DCGAN",
    "MBGAN",
    "METHODS",
    "STAGED",
    "VARIANTS",
    "WGANGP",
    "GoGAN",
    "Judge",
    "MarginGAN",
    "MethodSettings",
    "RankGAN",
    "StageObjective",
    "critic_judge",
    "register",
]
