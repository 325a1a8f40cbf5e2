"""Stand-in for upstream ``worker.py``: ``WORKER.train_discriminator`` / ``train_generator`` with upstream's shape.

The parts a loss sees are upstream's: ``cfgs.define_losses()`` in ``__init__``; per step, ``d_updates_per_step``
optimizer steps of ``acml_steps`` accumulation rounds; ``generate_images`` for the fakes; ``AUG.series_augment``
on both batches; ``self.Dis(images, labels)`` dicts; ``self.LOSS.d_loss(real_dict["adv_output"],
fake_dict["adv_output"], DDP=self.DDP)`` (+ the gradient penalty when ``LOSS.apply_gp``) and
``self.LOSS.g_loss(fake_dict["adv_output"], DDP=self.DDP)``; autocast and ``GradScaler`` with
``RUN.mixed_precision`` (bfloat16 on the CPU here); the loss divided by ``acml_steps``.
"""

from __future__ import annotations

from typing import Any

import torch
import utils.ckpt as ckpt
import utils.losses as losses
import utils.misc as misc
import utils.sample as sample


class WORKER:
    def __init__(
        self,
        cfgs: Any,
        run_name: str,
        Gen: torch.nn.Module,
        Gen_mapping: Any,
        Gen_synthesis: Any,
        Dis: torch.nn.Module,
        Gen_ema: Any,
        train_dataloader: Any,
        global_rank: int,
        local_rank: Any,
        logger: Any = None,
        loss_list_dict: Any = None,
        metric_dict_during_train: Any = None,
    ) -> None:
        self.cfgs, self.run_name = cfgs, run_name
        self.Gen, self.Gen_mapping, self.Gen_synthesis, self.Dis, self.Gen_ema = (
            Gen,
            Gen_mapping,
            Gen_synthesis,
            Dis,
            Gen_ema,
        )
        self.train_dataloader, self.global_rank, self.local_rank, self.logger = (
            train_dataloader,
            global_rank,
            local_rank,
            logger,
        )
        self.cfgs.define_augments(local_rank)
        self.cfgs.define_losses()
        self.DATA, self.MODEL, self.LOSS, self.STYLEGAN = cfgs.DATA, cfgs.MODEL, cfgs.LOSS, cfgs.STYLEGAN
        self.OPTIMIZATION, self.AUG, self.RUN, self.MISC = cfgs.OPTIMIZATION, cfgs.AUG, cfgs.RUN, cfgs.MISC
        self.is_stylegan = self.MODEL.backbone in ("stylegan2", "stylegan3")
        self.DDP = self.RUN.distributed_data_parallel
        self.epoch_counter = 0
        if self.RUN.mixed_precision:
            self.scaler = torch.amp.GradScaler("cuda" if torch.cuda.is_available() else "cpu")

    def _autocast(self) -> Any:
        if not self.RUN.mixed_precision:
            return misc.dummy_context_mgr()
        if torch.cuda.is_available():
            return torch.autocast("cuda")
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.RUN.mixed_precision:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.RUN.mixed_precision:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def prepare_train_iter(self, epoch_counter: int) -> None:
        self.epoch_counter = epoch_counter
        if self.DDP:
            self.train_dataloader.sampler.set_epoch(self.epoch_counter)
        self.train_iter = iter(self.train_dataloader)

    def sample_data_basket(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        try:
            images, labels = next(self.train_iter)
        except StopIteration:
            self.prepare_train_iter(self.epoch_counter + 1)
            images, labels = next(self.train_iter)
        return torch.split(images, self.OPTIMIZATION.batch_size), torch.split(labels, self.OPTIMIZATION.batch_size)

    def _fakes(self) -> tuple[torch.Tensor, torch.Tensor]:
        fake_images, fake_labels, *_ = sample.generate_images(
            z_prior=self.MODEL.z_prior, batch_size=self.OPTIMIZATION.batch_size, z_dim=self.MODEL.z_dim,
            num_classes=self.DATA.num_classes, radius=self.LOSS.radius, generator=self.Gen, device=self.local_rank,
        )  # fmt: skip
        return fake_images, fake_labels

    def train_discriminator(self, current_step: int) -> tuple[Any, torch.Tensor]:
        self.Gen.train(), self.Dis.train()
        misc.toggle_grad(self.Gen, False)
        misc.toggle_grad(self.Dis, True)
        self.Gen.apply(misc.untrack_bn_statistics)
        real_image_basket, real_label_basket = self.sample_data_basket()
        batch_counter = 0
        for _ in range(self.OPTIMIZATION.d_updates_per_step):
            self.OPTIMIZATION.d_optimizer.zero_grad()
            for _ in range(self.OPTIMIZATION.acml_steps):
                with self._autocast():
                    real_images = real_image_basket[batch_counter].to(self.local_rank)
                    real_labels = real_label_basket[batch_counter].to(self.local_rank)
                    fake_images, fake_labels = self._fakes()
                    real_dict = self.Dis(self.AUG.series_augment(real_images), real_labels)
                    fake_dict = self.Dis(self.AUG.series_augment(fake_images), fake_labels)
                    dis_acml_loss = self.LOSS.d_loss(real_dict["adv_output"], fake_dict["adv_output"], DDP=self.DDP)
                    if self.LOSS.apply_gp:
                        gp_loss = losses.cal_grad_penalty(
                            real_images, real_labels, fake_images, self.Dis, self.local_rank
                        )
                        dis_acml_loss = dis_acml_loss + self.LOSS.gp_lambda * gp_loss
                    dis_acml_loss = dis_acml_loss / self.OPTIMIZATION.acml_steps
                    batch_counter += 1
                self._backward(dis_acml_loss)
            self._step(self.OPTIMIZATION.d_optimizer)
        return "N/A", dis_acml_loss

    def train_generator(self, current_step: int) -> torch.Tensor:
        self.Gen.train(), self.Dis.train()
        misc.toggle_grad(self.Dis, False)
        misc.toggle_grad(self.Gen, True)
        self.Gen.apply(misc.track_bn_statistics)
        for _ in range(self.OPTIMIZATION.g_updates_per_step):
            self.OPTIMIZATION.g_optimizer.zero_grad()
            for _ in range(self.OPTIMIZATION.acml_steps):
                with self._autocast():
                    fake_images, fake_labels = self._fakes()
                    fake_dict = self.Dis(self.AUG.series_augment(fake_images), fake_labels)
                    gen_acml_loss = self.LOSS.g_loss(fake_dict["adv_output"], DDP=self.DDP)
                    gen_acml_loss = gen_acml_loss / self.OPTIMIZATION.acml_steps
                self._backward(gen_acml_loss)
            self._step(self.OPTIMIZATION.g_optimizer)
        return gen_acml_loss

    def save(self, step: int, is_best: bool = False) -> None:
        when = "best" if is_best else "current"
        for name, module, optimizer in (
            ("G", self.Gen, self.OPTIMIZATION.g_optimizer), ("D", self.Dis, self.OPTIMIZATION.d_optimizer),
        ):  # fmt: skip
            states = {"state_dict": misc.peel_model(module).state_dict(), "optimizer": optimizer.state_dict(),
                      "step": step, "run_name": self.run_name}  # fmt: skip
            ckpt.save_model(model=name, when=when, step=step, ckpt_dir=self.RUN.ckpt_dir, states=states)
