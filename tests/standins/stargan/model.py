"""Stand-in for StarGAN's ``model.py``: same classes, signatures, layer order (hence ``state_dict`` keys) and
output shapes as upstream, written independently."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=True)


class ResidualBlock(nn.Module):
    """``x + f(x)`` with two 3x3 convs, instance norm and ReLU (``main`` holds the five layers)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, 3, stride=1, padding=1, bias=False),
            _norm(dim_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim_out, dim_out, 3, stride=1, padding=1, bias=False),
            _norm(dim_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.main(x)


class Generator(nn.Module):
    """Image-to-image translator conditioned on a domain vector ``c`` (tiled over the image and concatenated)."""

    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        width = conv_dim
        stack: list[nn.Module] = [nn.Conv2d(3 + c_dim, width, 7, stride=1, padding=3, bias=False), _norm(width)]
        stack.append(nn.ReLU(inplace=True))
        for _ in range(2):  # two stride-2 downsamplings, doubling the width
            stack += [nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False), _norm(2 * width)]
            stack.append(nn.ReLU(inplace=True))
            width *= 2
        stack += [ResidualBlock(dim_in=width, dim_out=width) for _ in range(repeat_num)]
        for _ in range(2):  # and two transposed-conv upsamplings back
            stack += [nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False), _norm(width // 2)]
            stack.append(nn.ReLU(inplace=True))
            width //= 2
        stack += [nn.Conv2d(width, 3, 7, stride=1, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*stack)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        planes = c[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.main(torch.cat([x, planes.to(x.dtype)], dim=1))


class Discriminator(nn.Module):
    """PatchGAN critic with a domain classifier: ``forward`` returns ``(out_src (N,1,S,S), out_cls (N,c_dim))``.

    ``repeat_num`` stride-2 convs take ``image_size`` to ``S = image_size / 2**repeat_num``; ``conv1`` scores
    each patch and ``conv2``, a bias-free conv whose ``S x S`` kernel covers the whole map, classifies.
    """

    def __init__(self, image_size: int = 128, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        stack: list[nn.Module] = []
        width_in, width = 3, conv_dim
        for _ in range(repeat_num):
            stack += [nn.Conv2d(width_in, width, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            width_in, width = width, 2 * width
        side = image_size // 2**repeat_num
        self.main = nn.Sequential(*stack)
        self.conv1 = nn.Conv2d(width_in, 1, 3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(width_in, c_dim, kernel_size=side, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.main(x)
        out_src = self.conv1(h)
        out_cls = self.conv2(h)
        # Upstream flattens the 1x1 map with view(N, c_dim); keep that exact call so a head returning (N, c_dim)
        # is tested against the same reshape.
        n, c = out_cls.size(0), out_cls.size(1)
        return out_src, out_cls.view(n, c)
