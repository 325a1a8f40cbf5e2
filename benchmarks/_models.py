"""The networks the stage benchmarks train: DCGAN-style at 32x32 / 64x64 and the tiny StyleGAN2-ADA stand-in."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from torch import Tensor, nn

STANDIN = Path(__file__).resolve().parents[1] / "tests" / "standins" / "stylegan2_ada"


class DCGANGenerator(nn.Module):
    """pytorch/examples' DCGAN generator, narrowed: ``(N, nz, 1, 1) -> (N, 3, size, size)``, BatchNorm and ReLU."""

    def __init__(self, *, nz: int = 64, ngf: int = 32, size: int = 32, channels: int = 3) -> None:
        super().__init__()
        ups = {32: 3, 64: 4}[size]  # 4x4 -> ... -> size
        width = ngf * 2 ** (ups - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        for _ in range(ups - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z)


class DCGANCritic(nn.Module):
    """DCGAN's discriminator as a WGAN-GP critic: no BatchNorm (a batch-dependent layer breaks the per-sample GP)."""

    def __init__(self, *, ndf: int = 32, size: int = 32, channels: int = 3) -> None:
        super().__init__()
        downs = {32: 3, 64: 4}[size]  # size -> ... -> 4x4
        layers: list[nn.Module] = []
        width_in, width = channels, ndf
        for _ in range(downs):
            layers += [nn.Conv2d(width_in, width, 4, 2, 1), nn.LeakyReLU(0.2)]
            width_in, width = width, width * 2
        layers += [nn.Conv2d(width_in, 1, 4, 1, 0)]
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x).flatten(1)  # (N, 1)


class Conditioned(nn.Module):
    """Binds StyleGAN's class input ``c`` (empty for an unconditional model) so the network takes one tensor."""

    def __init__(self, network: nn.Module, c_dim: int = 0) -> None:
        super().__init__()
        self.network = network
        self.c_dim = c_dim

    def forward(self, x: Tensor) -> Tensor:
        c = x.new_zeros(x.shape[0], self.c_dim)
        return self.network(x, c)


def stylegan_standin(*, size: int = 32, z_dim: int = 64, channels: int = 32) -> tuple[nn.Module, nn.Module]:
    """``(G, D)`` of the tiny StyleGAN2-ADA-style stand-in in ``tests/standins`` (mapping + synthesis, conv D)."""
    if str(STANDIN) not in sys.path:
        sys.path.insert(0, str(STANDIN))
    from training.networks import Discriminator, Generator  # the stand-in, not NVlabs' code

    generator = Generator(z_dim, 0, z_dim, size, 3, synthesis_kwargs={"channels": channels})
    discriminator = Discriminator(0, size, 3, channels=channels)
    return Conditioned(generator), Conditioned(discriminator)


def build(model: str, **overrides: Any) -> dict[str, Any]:
    """``{"G", "D", "latent_shape", "image_shape"}`` for ``dcgan32``, ``dcgan64`` or ``stylegan2_ada``."""
    if model in ("dcgan32", "dcgan64"):
        size = int(model[-2:])
        nz, width = overrides.get("nz", 64), overrides.get("width", 32)
        return {
            "G": DCGANGenerator(nz=nz, ngf=width, size=size),
            "D": DCGANCritic(ndf=width, size=size),
            "latent_shape": (nz, 1, 1),
            "image_shape": (3, size, size),
        }
    if model == "stylegan2_ada":
        size, z_dim, width = overrides.get("size", 32), overrides.get("nz", 64), overrides.get("width", 32)
        generator, discriminator = stylegan_standin(size=size, z_dim=z_dim, channels=width)
        return {"G": generator, "D": discriminator, "latent_shape": (z_dim,), "image_shape": (3, size, size)}
    raise ValueError(f"model must be 'dcgan32', 'dcgan64' or 'stylegan2_ada'; got {model!r}")


MODELS = ("dcgan32", "dcgan64", "stylegan2_ada")
