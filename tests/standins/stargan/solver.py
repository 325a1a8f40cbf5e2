"""Stand-in for StarGAN's ``solver.py``: the ``Solver`` interface and single-dataset training loop, written
independently. No torchvision (samples are saved as tensors), no TensorFlow (the "tensorboard" logger keeps the
scalars in memory, which the tests read)."""

from __future__ import annotations

import datetime
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.standins.stargan.model import Discriminator, Generator

# Every config attribute the upstream Solver copies onto itself.
_CONFIG_FIELDS = (
    "c_dim c2_dim image_size g_conv_dim d_conv_dim g_repeat_num d_repeat_num lambda_cls lambda_rec lambda_gp "
    "dataset batch_size num_iters num_iters_decay g_lr d_lr n_critic beta1 beta2 resume_iters selected_attrs "
    "test_iters use_tensorboard log_dir sample_dir model_save_dir result_dir log_step sample_step "
    "model_save_step lr_update_step"
).split()

_HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")


class ScalarLog:
    """Stands in for upstream's TensorBoard ``Logger``: ``scalar_summary(tag, value, step)``, kept in memory."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.scalars: dict[str, list[tuple[int, float]]] = {}

    def scalar_summary(self, tag: str, value: float, step: int) -> None:
        self.scalars.setdefault(tag, []).append((step, float(value)))


class Solver:
    """Builds StarGAN's G and D with Adam optimizers and trains them on one dataset (``train``)."""

    def __init__(self, celeba_loader: Any, rafd_loader: Any, config: Any) -> None:
        self.celeba_loader = celeba_loader
        self.rafd_loader = rafd_loader
        for field in _CONFIG_FIELDS:
            setattr(self, field, getattr(config, field))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.build_model()
        if self.use_tensorboard:
            self.build_tensorboard()

    # ------------------------------------------------------------------ model
    def build_model(self) -> None:
        if self.dataset in ("CelebA", "RaFD"):
            g_labels, d_labels = self.c_dim, self.c_dim
        elif self.dataset == "Both":
            g_labels, d_labels = self.c_dim + self.c2_dim + 2, self.c_dim + self.c2_dim  # + 2: mask vector
        else:
            raise ValueError(f"dataset must be 'CelebA', 'RaFD' or 'Both'; got {self.dataset!r}")
        self.G = Generator(self.g_conv_dim, g_labels, self.g_repeat_num)
        self.D = Discriminator(self.image_size, self.d_conv_dim, d_labels, self.d_repeat_num)
        self.g_optimizer = torch.optim.Adam(self.G.parameters(), self.g_lr, [self.beta1, self.beta2])
        self.d_optimizer = torch.optim.Adam(self.D.parameters(), self.d_lr, [self.beta1, self.beta2])
        self.print_network(self.G, "G")
        self.print_network(self.D, "D")
        self.G.to(self.device)
        self.D.to(self.device)

    def print_network(self, model: nn.Module, name: str) -> None:
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters")

    def restore_model(self, resume_iters: int) -> None:
        print(f"Loading the trained models from step {resume_iters}...")
        for net, tag in ((self.G, "G"), (self.D, "D")):
            path = os.path.join(self.model_save_dir, f"{resume_iters}-{tag}.ckpt")
            net.load_state_dict(torch.load(path, map_location="cpu"))

    def build_tensorboard(self) -> None:
        self.logger = ScalarLog(self.log_dir)

    def update_lr(self, g_lr: float, d_lr: float) -> None:
        for optimizer, lr in ((self.g_optimizer, g_lr), (self.d_optimizer, d_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr

    def reset_grad(self) -> None:
        self.g_optimizer.zero_grad()
        self.d_optimizer.zero_grad()

    # ------------------------------------------------------------------ helpers
    def denorm(self, x: Tensor) -> Tensor:
        return ((x + 1) / 2).clamp_(0, 1)

    def gradient_penalty(self, y: Tensor, x: Tensor) -> Tensor:
        """Mean over the batch of ``(||dy/dx||_2 - 1)^2``, per-sample norms over the flattened gradient."""
        (grad,) = torch.autograd.grad(y, x, grad_outputs=torch.ones_like(y), retain_graph=True, create_graph=True)
        norms = grad.flatten(1).pow(2).sum(dim=1).sqrt()
        return (norms - 1).pow(2).mean()

    def label2onehot(self, labels: Tensor, dim: int) -> Tensor:
        return F.one_hot(labels.long(), dim).float()

    def create_labels(
        self, c_org: Tensor, c_dim: int = 5, dataset: str = "CelebA", selected_attrs: list[str] | None = None
    ) -> list[Tensor]:
        """One target label batch per domain: CelebA flips one attribute (one-hot within the hair colours)."""
        targets = []
        hair = [k for k, name in enumerate(selected_attrs or []) if name in _HAIR]
        for k in range(c_dim):
            if dataset == "CelebA":
                c_trg = c_org.clone()
                if k in hair:
                    c_trg[:, hair] = 0
                    c_trg[:, k] = 1
                else:
                    c_trg[:, k] = (c_trg[:, k] == 0).float()
            else:
                c_trg = self.label2onehot(torch.full((c_org.size(0),), k), c_dim)
            targets.append(c_trg.to(self.device))
        return targets

    def classification_loss(self, logit: Tensor, target: Tensor, dataset: str = "CelebA") -> Tensor:
        """CelebA: binary cross entropy summed over attributes, averaged over the batch; RaFD: cross entropy."""
        if dataset == "CelebA":
            return F.binary_cross_entropy_with_logits(logit, target, reduction="sum") / logit.size(0)
        if dataset == "RaFD":
            return F.cross_entropy(logit, target)
        # Upstream falls through and returns None for an unknown name; the stand-in keeps that behaviour.
        return None  # type: ignore[return-value]

    # ------------------------------------------------------------------ training
    def train(self) -> None:
        loader = self.celeba_loader if self.dataset == "CelebA" else self.rafd_loader
        batches = iter(loader)
        x_fixed, c_first = next(batches)
        x_fixed = x_fixed.to(self.device)
        c_fixed_list = self.create_labels(c_first, self.c_dim, self.dataset, self.selected_attrs)

        g_lr, d_lr = self.g_lr, self.d_lr
        start_iters = 0
        if self.resume_iters:
            start_iters = self.resume_iters
            self.restore_model(self.resume_iters)

        print("Start training...")
        start_time = time.time()
        for i in range(start_iters, self.num_iters):
            # 1. A batch of real images, and target labels from a shuffled copy of the batch's labels.
            try:
                x_real, label_org = next(batches)
            except StopIteration:
                batches = iter(loader)
                x_real, label_org = next(batches)
            label_trg = label_org[torch.randperm(label_org.size(0))]
            if self.dataset == "CelebA":
                c_org, c_trg = label_org.clone(), label_trg.clone()
            else:
                c_org, c_trg = self.label2onehot(label_org, self.c_dim), self.label2onehot(label_trg, self.c_dim)
            x_real, c_org, c_trg = x_real.to(self.device), c_org.to(self.device), c_trg.to(self.device)
            label_org, label_trg = label_org.to(self.device), label_trg.to(self.device)

            # 2. Critic: WGAN-GP terms plus the classification loss on real images.
            out_src, out_cls = self.D(x_real)
            d_loss_real = -out_src.mean()
            d_loss_cls = self.classification_loss(out_cls, label_org, self.dataset)
            x_fake = self.G(x_real, c_trg)
            out_src, out_cls = self.D(x_fake.detach())
            d_loss_fake = out_src.mean()
            alpha = torch.rand(x_real.size(0), 1, 1, 1, device=self.device)
            x_hat = (alpha * x_real.detach() + (1 - alpha) * x_fake.detach()).requires_grad_(True)
            out_src, _ = self.D(x_hat)
            d_loss_gp = self.gradient_penalty(out_src, x_hat)
            d_loss = d_loss_real + d_loss_fake + self.lambda_cls * d_loss_cls + self.lambda_gp * d_loss_gp
            self.reset_grad()
            d_loss.backward()
            self.d_optimizer.step()
            loss = {
                "D/loss_real": d_loss_real.item(),
                "D/loss_fake": d_loss_fake.item(),
                "D/loss_cls": d_loss_cls.item(),
                "D/loss_gp": d_loss_gp.item(),
            }

            # 3. Generator, every n_critic steps: fool D, be classified as the target, reconstruct the input.
            if (i + 1) % self.n_critic == 0:
                x_fake = self.G(x_real, c_trg)
                out_src, out_cls = self.D(x_fake)
                g_loss_fake = -out_src.mean()
                g_loss_cls = self.classification_loss(out_cls, label_trg, self.dataset)
                x_reconst = self.G(x_fake, c_org)
                g_loss_rec = (x_real - x_reconst).abs().mean()
                g_loss = g_loss_fake + self.lambda_rec * g_loss_rec + self.lambda_cls * g_loss_cls
                self.reset_grad()
                g_loss.backward()
                self.g_optimizer.step()
                loss.update({"G/loss_fake": g_loss_fake.item(), "G/loss_rec": g_loss_rec.item()})
                loss["G/loss_cls"] = g_loss_cls.item()

            # 4. Logging, samples, checkpoints, learning-rate decay.
            if (i + 1) % self.log_step == 0:
                elapsed = str(datetime.timedelta(seconds=round(time.time() - start_time)))
                print(
                    f"Elapsed [{elapsed}], Iteration [{i + 1}/{self.num_iters}], "
                    + ", ".join(f"{tag}: {value:.4f}" for tag, value in loss.items())
                )
                if self.use_tensorboard:
                    for tag, value in loss.items():
                        self.logger.scalar_summary(tag, value, i + 1)
            if (i + 1) % self.sample_step == 0:
                with torch.no_grad():
                    grid = torch.cat([x_fixed] + [self.G(x_fixed, c) for c in c_fixed_list], dim=3)
                os.makedirs(self.sample_dir, exist_ok=True)
                torch.save(self.denorm(grid.cpu()), os.path.join(self.sample_dir, f"{i + 1}-images.pt"))
            if (i + 1) % self.model_save_step == 0:
                os.makedirs(self.model_save_dir, exist_ok=True)
                torch.save(self.G.state_dict(), os.path.join(self.model_save_dir, f"{i + 1}-G.ckpt"))
                torch.save(self.D.state_dict(), os.path.join(self.model_save_dir, f"{i + 1}-D.ckpt"))
                print(f"Saved model checkpoints into {self.model_save_dir}...")
            if (i + 1) % self.lr_update_step == 0 and (i + 1) > (self.num_iters - self.num_iters_decay):
                g_lr -= self.g_lr / float(self.num_iters_decay)
                d_lr -= self.d_lr / float(self.num_iters_decay)
                self.update_lr(g_lr, d_lr)
                print(f"Decayed learning rates, g_lr: {g_lr}, d_lr: {d_lr}.")

    def test(self) -> None:
        """Translate every test batch to every domain with the generator of ``test_iters``; saves tensors."""
        self.restore_model(self.test_iters)
        loader = self.celeba_loader if self.dataset == "CelebA" else self.rafd_loader
        os.makedirs(self.result_dir, exist_ok=True)
        with torch.no_grad():
            for i, (x_real, c_org) in enumerate(loader):
                x_real = x_real.to(self.device)
                targets = self.create_labels(c_org, self.c_dim, self.dataset, self.selected_attrs)
                grid = torch.cat([x_real] + [self.G(x_real, c) for c in targets], dim=3)
                torch.save(self.denorm(grid.cpu()), os.path.join(self.result_dir, f"{i + 1}-images.pt"))
