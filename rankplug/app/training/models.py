"""DCGAN-style networks for every power-of-two side from 8 to 256, conditional or not, and the class heads.

The generator projects ``z`` (with a one-hot label for a conditional GAN) to a ``4 x 4`` map and doubles it with
stride-2 transposed convolutions up to ``size``; the critic mirrors it with stride-2 convolutions down to
``4 x 4``. Widths double towards the ``4 x 4`` end, capped at ``8 * width`` (DCGAN's 64-pixel networks).

The critic has **no batch-dependent layer** by default: the WGAN-GP penalty is a per-sample gradient norm, which
a layer mixing the batch breaks. ``norm="batch"`` gives DCGAN's BatchNorm critic for the variants without a
penalty (MBGAN's critic has BatchNorm, MBGAN Table 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from rankplug._validation import check_choice, check_image_size, check_positive_int, shape_str
from rankplug.heads import AAMAuxClassifier, TripletMetricDiscriminatorHead

MAX_WIDTH_FACTOR = 8


def _levels(size: int) -> int:
    """Number of factor-2 resamplings between ``4 x 4`` and ``size x size``."""
    return int(math.log2(check_image_size(size))) - 2


def _width(base: int, level: int) -> int:
    return base * min(MAX_WIDTH_FACTOR, 2**level)


def _check_images(x: Tensor, channels: int, size: int, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (channels, size, size):
        shape = shape_str(x) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} has shape {shape}; expected (N, {channels}, {size}, {size})")


class Generator(nn.Module):
    """DCGAN-style generator: ``z`` (and a one-hot class) to a ``4 x 4`` map, then stride-2 transposed convolutions.

    Args:
        nz: latent dimension.
        width: channels of the last hidden map (doubling towards ``4 x 4``, capped at ``8 * width``).
        size: output side, a power of two from 8 to 256.
        channels: output channels (1 grey, 3 RGB).
        num_classes: classes of a conditional generator (0: unconditional).

    Shape:
        - z: ``(N, nz)``; labels: ``(N,)`` integers when conditional. Output: ``(N, channels, size, size)`` in
          ``[-1, 1]``.

    Example:
        >>> G = Generator(nz=16, width=8, size=8)
        >>> G(torch.randn(4, 16)).shape
        torch.Size([4, 1, 8, 8])
    """

    def __init__(self, nz: int = 32, width: int = 32, size: int = 16, channels: int = 1, num_classes: int = 0) -> None:
        super().__init__()
        self.nz = check_positive_int(nz, "nz")
        width = check_positive_int(width, "width")
        self.size, self.channels = size, check_positive_int(channels, "channels")
        self.num_classes = int(num_classes)
        self.latent_shape = (self.nz,)  #: the shape of one latent code: ``G(torch.randn(n, *G.latent_shape))``
        levels = _levels(size)
        # hidden maps at 4, 8, ..., size / 2 pixels; widths halve towards the image, the last one is ``width``
        widths = [_width(width, levels - 1 - k) for k in range(levels)]
        self.start = widths[0]
        self.project = nn.Sequential(
            nn.Linear(self.nz + self.num_classes, self.start * 16, bias=False),
            nn.BatchNorm1d(self.start * 16),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], self.channels, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(
                f"z has shape {shape_str(z) if isinstance(z, Tensor) else type(z).__name__}; expected (N, {self.nz})"
            )
        if self.num_classes:
            if labels is None or labels.shape != (z.shape[0],):
                raise ValueError(f"a conditional generator needs labels of shape ({z.shape[0]},)")
            z = torch.cat([z, nnf.one_hot(labels.long(), self.num_classes).to(z.dtype)], dim=1)
        elif labels is not None:
            raise ValueError("labels were given to an unconditional generator (num_classes=0)")
        return self.body(self.project(z).view(z.shape[0], self.start, 4, 4))


class Trunk(nn.Module):
    """The critic's convolutions: stride-2 ``4 x 4`` convolutions with LeakyReLU down to a ``4 x 4`` map, flattened.

    ``norm="batch"`` adds BatchNorm after every convolution but the first (DCGAN). Output: ``(N, features)``.
    """

    def __init__(self, width: int, size: int, channels: int, norm: str = "none") -> None:
        super().__init__()
        norm = check_choice(norm, "norm", ("none", "batch"))
        self.size, self.channels = size, check_positive_int(channels, "channels")
        layers: list[nn.Module] = []
        w_in = self.channels
        for level in range(_levels(size)):
            w_out = _width(check_positive_int(width, "width"), level)
            layers.append(nn.Conv2d(w_in, w_out, 4, 2, 1, bias=norm == "none" or level == 0))
            if norm == "batch" and level > 0:
                layers.append(nn.BatchNorm2d(w_out))
            layers.append(nn.LeakyReLU(0.2))
            w_in = w_out
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.features = w_in * 16

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, self.channels, self.size)
        return self.body(x)


class ClassHead(nn.Module):
    """The auxiliary classifier of a conditional critic on its features ``phi(x)`` (label-geometry paper, maths §6).

    ``"aam"``: :class:`rankplug.AAMAuxClassifier` (Eq. 7-8); ``"cosine"``: the same with ``m = 0`` (normalised
    features and weights at the same scale, no margin); ``"ce"``: a bias-free linear map with softmax cross
    entropy (StarGAN's head). :meth:`loss` is the classification term for real images (Eq. 3) and for fakes with
    their target label (Eq. 4).
    """

    def __init__(self, kind: str, features: int, num_classes: int, *, scale: float = 16.0, margin: float = 0.3) -> None:
        super().__init__()
        self.kind = check_choice(kind, "class_head", ("aam", "cosine", "ce"))
        self.head: nn.Module
        if self.kind == "ce":
            self.head = nn.Linear(features, num_classes, bias=False)
        else:
            self.head = AAMAuxClassifier(features, num_classes, scale=scale, margin=margin if kind == "aam" else 0.0)

    def forward(self, features: Tensor) -> Tensor:
        return self.head(features)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if isinstance(self.head, AAMAuxClassifier):
            return self.head.loss(logits, labels)
        return nnf.cross_entropy(logits.float(), labels)


class Discriminator(nn.Module):
    """The critic: a :class:`Trunk`, then a linear score, or MBGAN's embedding head, and an optional class head.

    Args:
        width, size, channels, norm: of the :class:`Trunk`.
        embed_dim: ``K`` of MBGAN's embedding head (:class:`rankplug.TripletMetricDiscriminatorHead`); ``None``
            for a score.
        alpha, margin_norm: MBGAN's margin (Eq. 4), with ``embed_dim`` only.
        class_head: ``None``, or ``"aam"`` / ``"cosine"`` / ``"ce"`` with ``num_classes`` (:class:`ClassHead`).

    Shape:
        - Input: ``(N, channels, size, size)``. ``forward``: ``(N, 1)`` scores (higher means more real) or
          ``(N, embed_dim)`` embeddings. :meth:`with_logits`: that and ``(N, num_classes)`` class logits.

    Example:
        >>> D = Discriminator(width=8, size=8, class_head="aam", num_classes=10)
        >>> scores, logits = D.with_logits(torch.randn(4, 1, 8, 8))
        >>> scores.shape, logits.shape
        (torch.Size([4, 1]), torch.Size([4, 10]))
    """

    def __init__(
        self,
        width: int = 32,
        size: int = 16,
        channels: int = 1,
        *,
        norm: str = "none",
        embed_dim: int | None = None,
        alpha: float = 20.0,
        margin_norm: str = "mean",
        class_head: str | None = None,
        num_classes: int = 10,
        aam_scale: float = 16.0,
        aam_margin: float = 0.3,
    ) -> None:
        super().__init__()
        self.trunk = Trunk(width, size, channels, norm)
        self.head: nn.Module
        if embed_dim is None:
            self.head = nn.Linear(self.trunk.features, 1)
        else:
            self.head = TripletMetricDiscriminatorHead(
                self.trunk.features, embed_dim=embed_dim, alpha=alpha, margin_norm=margin_norm
            )
        self.classes = (
            None
            if class_head is None
            else ClassHead(class_head, self.trunk.features, num_classes, scale=aam_scale, margin=aam_margin)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))

    def with_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.classes is None:
            raise ValueError("this critic has no class head; build it with class_head=...")
        features = self.trunk(x)
        return self.head(features), self.classes(features)


class Encoder(nn.Module):
    """RankGAN's encoder (Sec. 3.3): the critic's trunk, then ``(mu, logvar)`` of ``q(z | x)``, each ``(N, nz)``."""

    def __init__(self, nz: int = 32, width: int = 32, size: int = 16, channels: int = 1) -> None:
        super().__init__()
        self.nz = check_positive_int(nz, "nz")
        self.trunk = Trunk(width, size, channels)
        self.head = nn.Linear(self.trunk.features, 2 * self.nz)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.trunk(x)).chunk(2, dim=1)
        return mu, logvar


__all__ = ["ClassHead", "Discriminator", "Encoder", "Generator", "Trunk"]
