"""A WGAN-GP loop on a 2-D toy distribution where one line swaps the critic loss for MarginGAN's.

Run ``python examples/swap_one_loss_line.py --loss margin`` (or ``--loss wgan``); it prints the critic's gap
``mean D(x) - mean D(G(z))`` and the distance between the generated and the real mean as training goes.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import rankplug
from rankplug.functional import gradient_penalty


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loss", choices=["margin", "wgan"], default="margin")
    parser.add_argument("--steps", type=int, default=300, help="generator steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    target = torch.tensor([2.0, -1.0])
    G = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
    D = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))
    criterion = rankplug.HingeMarginLoss(margin=1.0)

    for step in range(1, args.steps + 1):
        for _ in range(5):
            real = torch.randn(64, 2) * 0.3 + target
            fake = G(torch.randn(64, 4)).detach()
            d_real, d_fake = D(real), D(fake)
            if args.loss == "wgan":
                loss_d = d_fake.mean() - d_real.mean()
            else:
                loss_d = criterion(d_real, d_fake)  # the one changed line (RankGAN Eq. 3)
            opt_d.zero_grad()
            (loss_d + gradient_penalty(D, real, fake, weight=10.0)).backward()
            opt_d.step()
        loss_g = criterion.generator_loss(D(G(torch.randn(64, 4))))  # -D(G(z)) for both
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if step % max(1, args.steps // 5) == 0 or step == args.steps:
            with torch.no_grad():
                fake = G(torch.randn(512, 4))
                gap = float(D(torch.randn(512, 2) * 0.3 + target).mean() - D(fake).mean())
                distance = float((fake.mean(0) - target).norm())
            print(
                f"step {step:4d}  loss_d {float(loss_d.detach()):7.3f}  gap {gap:6.3f}  |mean(G(z)) - mean(x)| {distance:.3f}"
            )
    return {"gap": gap, "distance": distance}


if __name__ == "__main__":
    main()
