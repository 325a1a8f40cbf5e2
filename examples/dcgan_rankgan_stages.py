"""DCGAN (the shape of pytorch/examples dcgan/main.py) trained in RankGAN stages: ten changed lines.

This is ``dcgan_margin.py`` plus the lines marked ``# rankplug`` and the ``if epoch > 0`` block (maths §3,
RankGAN Algorithm 1), one stage per epoch:

- stage 1 (epoch 0) trains the critic with the margin loss (Eq. 3) plus the gradient penalty (Eq. 5);
- at each later epoch ``rankplug.StageManager.advance()`` freezes ``G_{i-1}, D_{i-1}`` (the live ``netG`` /
  ``netD`` and their optimizers keep training) and the markers ``m_high, m_low`` (Eq. 6) are taken with
  ``batch_statistics_markers``: DCGAN's critic has BatchNorm and is trained on all-real or all-fake batches,
  so its markers must be scored the same way, not in eval mode;
- stage ``i >= 2`` passes the current critic's scores of the previous generator's samples, ``D_i(G_{i-1}(z))``,
  to the adapter's call 2, which then returns the ranking loss with the clamp (Eq. 4 + 6); the generator gets
  the generator half of Eq. 4.

Settings that differ from the paper, chosen for this BatchNorm critic at upstream's Adam settings (the paper
uses betas (0, 0.99), lr 5e-5 / 1e-4 and a critic without BatchNorm): ``lambda_gp = 1`` (paper 10, which stalled
the critic here) and ``lambda_clamp = 1`` (the authors' code; the paper's 1000 let the fakes overtake the data in
stage 2 here). Tiny defaults (3 stages of 40 batches of 16 random 64x64 images, ngf = ndf = 8) run in seconds::

    python examples/dcgan_rankgan_stages.py
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
parser.add_argument("--niter", type=int, default=3, help="epochs (stages in dcgan_rankgan_stages.py)")
parser.add_argument("--max-iters", type=int, default=40, help="batches per epoch")
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

rank = rankplug.StageRankLoss(clamp_weight=1.0)  # rankplug: Eq. 4 + 6 (authors' lambda_clamp; paper 1000)
penalty = rankplug.GradientPenalty(weight=1.0)  # rankplug: Eq. 5 (paper 10; see docs)
criterion = rankplug.integrations.dcgan.margin_criterion(netD, margin=1.0, rank=rank)  # rankplug: was nn.BCELoss()
stages = rankplug.StageManager(netG, netD, latent_shape=(nz, 1, 1))  # rankplug

real_label, fake_label = 1, 0
optimizerD = optim.Adam(netD.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))
optimizerG = optim.Adam(netG.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))

gaps = []
for epoch in range(opt.niter):
    if epoch > 0:  # rankplug: one stage per epoch; freeze stage i-1 and take its markers
        stages.advance()
        batches = [data[0] for _, data in zip(range(4), dataloader)]
        rank.set_markers(*rankplug.integrations.dcgan.batch_statistics_markers(stages, batches))  # Eq. 6
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
        prev = netD(stages.previous.generator(noise)) if stages.previous else None  # rankplug: D_i(G_{i-1}(z))
        errD_fake = criterion(output, label, prev_fake_scores=prev) + penalty(netD, real_cpu, fake.detach())  # rankplug
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

        gaps.append((epoch, D_x - D_G_z1))
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

for stage in range(opt.niter):
    g = [gap for epoch, gap in gaps if epoch == stage]
    first, last = sum(g[:5]) / len(g[:5]), sum(g[-5:]) / len(g[-5:])
    print(f"stage {stage + 1}: score gap mean D(x) - mean D(G(z)): first 5 batches {first:.4f}, last 5 {last:.4f}")
print(f"markers of the last stage (m_high, m_low): {stages.markers}")
