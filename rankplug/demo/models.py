"""Small DCGAN-style networks for the demo: 16x16 or 32x32 images, one or three channels.

The critic has **no batch-dependent layer** (no BatchNorm): the WGAN-GP gradient penalty is a per-sample
gradient norm and a critic whose score for one sample depends on the rest of the batch breaks it. The generator
may use BatchNorm.
"""

from __future__ import annotations

from torch import Tensor, nn

from rankplug._validation import check_positive_int
from rankplug.heads import TripletMetricDiscriminatorHead

SIZES = (16, 32)


def _check_size(size: int) -> int:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}; got {size!r}")
    return size


class Generator(nn.Module):
    """DCGAN-style generator: a linear map to a ``4x4`` feature map, then stride-2 transposed convolutions.

    Args:
        nz: latent dimension.
        ngf: width (channels of the last hidden feature map).
        size: output side, 16 or 32.
        channels: output channels.

    Shape:
        - Input: ``(N, nz)``. Output: ``(N, channels, size, size)`` in ``[-1, 1]`` (tanh).
    """

    def __init__(self, nz: int = 32, ngf: int = 32, size: int = 16, channels: int = 1) -> None:
        super().__init__()
        self.nz = check_positive_int(nz, "nz")
        ngf = check_positive_int(ngf, "ngf")
        size = _check_size(size)
        channels = check_positive_int(channels, "channels")
        ups = 2 if size == 16 else 3  # 4 -> 8 -> 16 (-> 32)
        width = ngf * 2 ** (ups - 1)
        self.project = nn.Sequential(nn.Linear(self.nz, width * 16, bias=False), nn.BatchNorm1d(width * 16), nn.ReLU())
        layers: list[nn.Module] = []
        for _ in range(ups - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.width0 = ngf * 2 ** (ups - 1)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"z has shape {tuple(z.shape)}; expected (N, {self.nz})")
        return self.body(self.project(z).view(z.shape[0], self.width0, 4, 4))


class Discriminator(nn.Module):
    """DCGAN-style critic without normalisation: stride-2 convolutions with LeakyReLU, then a linear score.

    With ``embed_dim`` set, the linear score is replaced by MBGAN's embedding head
    (:class:`rankplug.TripletMetricDiscriminatorHead`, MATH §5) and the output is an embedding.

    Args:
        ndf: width of the first convolution (doubled at each further one).
        size: input side, 16 or 32.
        channels: input channels.
        embed_dim: ``K`` of MBGAN's embedding head; ``None`` for a score.
        alpha: MBGAN's margin weight (Eq. 4), used only with ``embed_dim``.

    Shape:
        - Input: ``(N, channels, size, size)``. Output: ``(N, 1)`` raw scores (higher means more real), or
          ``(N, embed_dim)`` embeddings.
    """

    def __init__(
        self, ndf: int = 32, size: int = 16, channels: int = 1, *, embed_dim: int | None = None, alpha: float = 20.0
    ) -> None:
        super().__init__()
        ndf = check_positive_int(ndf, "ndf")
        self.size = _check_size(size)
        self.channels = check_positive_int(channels, "channels")
        downs = 2 if size == 16 else 3  # 16 -> 8 -> 4 (32 -> 16 -> 8 -> 4)
        layers: list[nn.Module] = []
        width_in, width = self.channels, ndf
        for _ in range(downs):
            layers += [nn.Conv2d(width_in, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width_in, width = width, width * 2
        self.body = nn.Sequential(*layers)
        self.head: nn.Module
        if embed_dim is None:
            self.head = nn.Linear(width_in * 16, 1)
        else:
            self.head = TripletMetricDiscriminatorHead(width_in * 16, embed_dim=embed_dim, alpha=alpha)

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.channels, self.size, self.size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected (N, {', '.join(map(str, expected))})")
        return self.head(self.body(x).flatten(1))


class Encoder(nn.Module):
    """RankGAN's optional encoder ``E`` (Sec. 3.3): the critic's convolutions, then ``(mu, logvar)`` of ``q(z | x)``.

    Args:
        nz: latent dimension.
        ndf: width of the first convolution (doubled at each further one).
        size: input side, 16 or 32.
        channels: input channels.

    Shape:
        - Input: ``(N, channels, size, size)``. Output: ``(mu, logvar)``, each ``(N, nz)``.
    """

    def __init__(self, nz: int = 32, ndf: int = 32, size: int = 16, channels: int = 1) -> None:
        super().__init__()
        self.nz = check_positive_int(nz, "nz")
        trunk = Discriminator(ndf=ndf, size=size, channels=channels)
        self.body = trunk.body
        self.size, self.channels = trunk.size, trunk.channels
        self.head = nn.Linear(trunk.head.in_features, 2 * self.nz)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        expected = (self.channels, self.size, self.size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected (N, {', '.join(map(str, expected))})")
        mu, logvar = self.head(self.body(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar


__all__ = ["Discriminator", "Encoder", "Generator"]
