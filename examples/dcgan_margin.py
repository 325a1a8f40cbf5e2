"""DCGAN (the shape of pytorch/examples dcgan/main.py) with a margin critic: one changed line (RankGAN Eq. 3).

Upstream's ``criterion = nn.BCELoss()`` becomes ``rankplug.integrations.dcgan.margin_criterion(netD, margin=1.0)``
(the line marked ``# rankplug``); nothing else changes. The adapter turns ``netD``'s Sigmoid into an Identity,
trains ``netD`` as a critic with the pairwise margin loss ``[D(G(z)) + eps - D(x)]_+`` over upstream's two
discriminator calls, and ``netG`` with the WGAN generator loss ``-D(G(z))``. See docs/integrations_dcgan.md.

The defaults are tiny (64x64 random "fake" images, ngf = ndf = 8, 60 batches of 16) so it runs in seconds on a
CPU; the last lines print the losses and the gap between the critic's scores of real and generated images::

    python examples/dcgan_margin.py
"""

import argparse

import torch
import torch.nn as nn
import torch.optim as optim
import torch.utils.data

import rankplug.integrations.dcgan

parser = argparse.ArgumentParser()
parser.add_argument("--batchSize", type=int, default=16)
parser.add_argument("--imageSize", type=int, default=64, help="only 64 works, as upstream")
parser.add_argument("--nz", type=int, default=100)
parser.add_argument("--ngf", type=int, default=8)
parser.add_argument("--ndf", type=int, default=8)
parser.add_argument("--niter", type=int, default=1, help="epochs (stages in dcgan_rankgan_stages.py)")
parser.add_argument("--max-iters", type=int, default=60, help="batches per epoch")
parser.add_argument("--lr", type=float, default=0.0002)
parser.add_argument("--beta1", type=float, default=0.5)
parser.add_argument("--manualSeed", type=int, default=1)
opt = parser.parse_args()
torch.manual_seed(opt.manualSeed)
nz, ngf, ndf, nc = opt.nz, opt.ngf, opt.ndf, 3

# Upstream's --dataset fake: uniform random RGB images in [0, 1].
images = torch.rand(opt.batchSize * opt.max_iters, nc, opt.imageSize, opt.imageSize)
dataloader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(images, torch.zeros(len(images))), batch_size=opt.batchSize, shuffle=True
)


def weights_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 32x32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),  # 64x64
        )  # fmt: skip

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main(input)


class Discriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),  # 32x32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),  # main[12]; the adapter swaps it out
        )  # fmt: skip

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main(input).view(-1, 1).squeeze(1)


netG, netD = Generator(), Discriminator()
netG.apply(weights_init)
netD.apply(weights_init)

criterion = rankplug.integrations.dcgan.margin_criterion(netD, margin=1.0)  # rankplug: was nn.BCELoss()

real_label, fake_label = 1, 0
optimizerD = optim.Adam(netD.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))
optimizerG = optim.Adam(netG.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))

gaps = []
for epoch in range(opt.niter):
    for i, data in enumerate(dataloader, 0):
        netD.zero_grad()
        real_cpu = data[0]
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()

        noise = torch.randn(batch_size, nz, 1, 1)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()

        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()

        gaps.append(D_x - D_G_z1)
        if not (torch.isfinite(errD) and torch.isfinite(errG)):
            raise RuntimeError(
                f"non-finite loss at epoch {epoch}, batch {i}: Loss_D {errD.item()}, Loss_G {errG.item()}"
            )
        print(
            f"[{epoch}/{opt.niter}][{i}/{len(dataloader)}] Loss_D: {errD.item():.4f} Loss_G: {errG.item():.4f} "
            f"D(x): {D_x:.4f} D(G(z)): {D_G_z1:.4f} / {D_G_z2:.4f}"
        )
        if i + 1 >= opt.max_iters:
            break

first, last = sum(gaps[:5]) / len(gaps[:5]), sum(gaps[-5:]) / len(gaps[-5:])
print(f"score gap mean D(x) - mean D(G(z)): first 5 batches {first:.4f}, last 5 batches {last:.4f}")
