"""Stand-in for pytorch/examples ``dcgan/main.py``, written from scratch for rankplug's integration tests.

It keeps what the adapter relies on: the command-line flags, ``Generator`` / ``Discriminator`` with
``main = nn.Sequential(...)`` in upstream's layer order (so the same ``state_dict`` keys; ``netD.main[12]`` is
``nn.Sigmoid()``), ``netD`` returning ``(N,)`` scores, ``criterion = nn.BCELoss()`` on one line, and the
three-call batch loop. ``--dataset fake`` draws random images without torchvision; ``--max-iters`` (not
upstream) caps the batches per epoch, and ``--niter 0`` only builds the networks. Like upstream, this is a
script that trains when run.
"""

import argparse
import os
import random

import torch
import torch.nn as nn
import torch.optim as optim
import torch.utils.data

parser = argparse.ArgumentParser()
parser.add_argument("--dataset", required=True, help="fake (the only data set of this stand-in)")
parser.add_argument("--dataroot", required=False, help="unused by the fake data set")
parser.add_argument("--workers", type=int, default=0, help="data loader workers")
parser.add_argument("--batchSize", type=int, default=64, help="input batch size")
parser.add_argument("--imageSize", type=int, default=64, help="image height / width; only 64 works")
parser.add_argument("--nz", type=int, default=100, help="latent size")
parser.add_argument("--ngf", type=int, default=64, help="generator width")
parser.add_argument("--ndf", type=int, default=64, help="discriminator width")
parser.add_argument("--niter", type=int, default=25, help="epochs")
parser.add_argument("--lr", type=float, default=0.0002, help="Adam learning rate")
parser.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
parser.add_argument("--dry-run", action="store_true", help="one batch only")
parser.add_argument("--ngpu", type=int, default=1, help="unused on CPU")
parser.add_argument("--netG", default="", help="generator checkpoint to resume from")
parser.add_argument("--netD", default="", help="discriminator checkpoint to resume from")
parser.add_argument("--outf", default=".", help="output folder")
parser.add_argument("--manualSeed", type=int, help="seed")
parser.add_argument("--accel", action="store_true", default=False, help="use an accelerator (ignored: CPU only)")
parser.add_argument("--max-iters", type=int, default=None, help="stand-in only: at most this many batches per epoch")
parser.add_argument("--fakeSize", type=int, default=1000, help="stand-in only: images in the fake data set")

opt = parser.parse_args()
print(opt)

os.makedirs(opt.outf, exist_ok=True)
if opt.manualSeed is None:
    opt.manualSeed = random.randint(1, 10000)
print("Random Seed: ", opt.manualSeed)
random.seed(opt.manualSeed)
torch.manual_seed(opt.manualSeed)
device = torch.device("cpu")

if opt.dataset != "fake":
    raise ValueError(f"this stand-in only has --dataset fake; got {opt.dataset!r}")
# Upstream's FakeData gives uniform random RGB images in [0, 1].
dataset = torch.utils.data.TensorDataset(
    torch.rand(opt.fakeSize, 3, opt.imageSize, opt.imageSize), torch.zeros(opt.fakeSize, dtype=torch.long)
)
nc = 3
dataloader = torch.utils.data.DataLoader(dataset, batch_size=opt.batchSize, shuffle=True, num_workers=opt.workers)

ngpu = int(opt.ngpu)
nz = int(opt.nz)
ngf = int(opt.ngf)
ndf = int(opt.ndf)


def weights_init(m):
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, ngpu):
        super().__init__()
        self.ngpu = ngpu
        layers = []
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        for k, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            first = k == 0
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 1 if first else 2, 0 if first else 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]  # 1x1 -> 4x4 -> 8x8 -> 16x16 -> 32x32
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]  # -> 64x64
        self.main = nn.Sequential(*layers)

    def forward(self, input):
        return self.main(input)


netG = Generator(ngpu).to(device)
netG.apply(weights_init)
if opt.netG != "":
    netG.load_state_dict(torch.load(opt.netG))
print(netG)


class Discriminator(nn.Module):
    def __init__(self, ngpu):
        super().__init__()
        self.ngpu = ngpu
        layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]  # 64 -> 32
        for c_in in (ndf, ndf * 2, ndf * 4):  # 32 -> 16 -> 8 -> 4
            layers += [
                nn.Conv2d(c_in, c_in * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_in * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid()]  # 4x4 -> 1x1; Sigmoid is main[12]
        self.main = nn.Sequential(*layers)

    def forward(self, input):
        output = self.main(input)
        return output.view(-1, 1).squeeze(1)


netD = Discriminator(ngpu).to(device)
netD.apply(weights_init)
if opt.netD != "":
    netD.load_state_dict(torch.load(opt.netD))
print(netD)

criterion = nn.BCELoss()

fixed_noise = torch.randn(opt.batchSize, nz, 1, 1, device=device)
real_label = 1
fake_label = 0

optimizerD = optim.Adam(netD.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))
optimizerG = optim.Adam(netG.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))

if opt.dry_run:
    opt.niter = 1

for epoch in range(opt.niter):
    for i, data in enumerate(dataloader, 0):
        # (1) critic / discriminator step, real half
        netD.zero_grad()
        real_cpu = data[0].to(device)
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype, device=device)

        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()

        # (1) fake half, then the discriminator's optimizer step
        noise = torch.randn(batch_size, nz, 1, 1, device=device)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()

        # (2) generator step: the fakes carry the real label
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()

        print(
            f"[{epoch}/{opt.niter}][{i}/{len(dataloader)}] Loss_D: {errD.item():.4f} Loss_G: {errG.item():.4f} "
            f"D(x): {D_x:.4f} D(G(z)): {D_G_z1:.4f} / {D_G_z2:.4f}"
        )

        if opt.dry_run or (opt.max_iters is not None and i + 1 >= opt.max_iters):
            break
    torch.save(netG.state_dict(), f"{opt.outf}/netG_epoch_{epoch}.pth")
    torch.save(netD.state_dict(), f"{opt.outf}/netD_epoch_{epoch}.pth")
