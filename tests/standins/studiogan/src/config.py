"""Stand-in for upstream ``config.py``: the config sections, overridden from a file, and ``define_losses``."""

from __future__ import annotations

import json
from typing import Any

import torch
import utils.losses as losses


class Section:
    """A config section: attributes only (upstream's ``misc.make_empty_object``)."""

    def __repr__(self) -> str:
        return f"Section({vars(self)})"


class Configurations:
    def __init__(self, cfg_file: str | None) -> None:
        self.DATA, self.MODEL, self.LOSS, self.OPTIMIZATION = Section(), Section(), Section(), Section()
        self.RUN, self.AUG, self.STYLEGAN, self.MISC = Section(), Section(), Section(), Section()
        self.super_cfgs = {
            "DATA": self.DATA, "MODEL": self.MODEL, "LOSS": self.LOSS, "OPTIMIZATION": self.OPTIMIZATION,
            "RUN": self.RUN, "AUG": self.AUG, "STYLEGAN": self.STYLEGAN, "MISC": self.MISC,
        }  # fmt: skip
        self.load_base_cfgs()
        if cfg_file is not None:
            self._overwrite_cfgs(cfg_file)

    def load_base_cfgs(self) -> None:
        self.DATA.name, self.DATA.img_size, self.DATA.num_classes, self.DATA.img_channels = "folder", 16, 1, 3
        self.MODEL.backbone, self.MODEL.z_dim, self.MODEL.z_prior, self.MODEL.width = "deep_conv", 16, "gaussian", 16
        self.MODEL.d_cond_mtd, self.MODEL.apply_g_ema = "W/O", False
        self.LOSS.adv_loss, self.LOSS.apply_gp, self.LOSS.gp_lambda = "vanilla", False, "N/A"
        self.LOSS.apply_zcr, self.LOSS.radius, self.LOSS.g_lambda = False, "N/A", "N/A"
        self.LOSS.apply_topk = False
        self.OPTIMIZATION.batch_size, self.OPTIMIZATION.acml_steps = 8, 1
        self.OPTIMIZATION.d_updates_per_step, self.OPTIMIZATION.g_updates_per_step = 1, 1
        self.OPTIMIZATION.total_steps, self.OPTIMIZATION.d_first, self.OPTIMIZATION.world_size = 20, True, 1
        self.OPTIMIZATION.g_lr, self.OPTIMIZATION.d_lr = 2e-4, 2e-4
        self.OPTIMIZATION.beta1, self.OPTIMIZATION.beta2 = 0.5, 0.999
        self.RUN.print_freq, self.RUN.save_freq = 5, 10
        self.AUG.apply_diffaug = False
        self.STYLEGAN.style_mixing_p = 0.0
        self.MISC.no_proc_data = []

    def update_cfgs(self, cfgs: dict[str, Any], super: str = "RUN") -> None:
        for attr, value in cfgs.items():
            setattr(self.super_cfgs[super], attr, value)

    def _overwrite_cfgs(self, cfg_file: str) -> None:
        with open(cfg_file) as file:
            overrides = json.load(file)  # JSON syntax, which is also YAML (see the stand-in's README)
        for section, values in overrides.items():
            for attr, value in values.items():
                if not hasattr(self.super_cfgs[section], attr):
                    raise AttributeError(f"There does not exist '{section}.{attr}' attribute in the config.py.")
                setattr(self.super_cfgs[section], attr, value)

    def define_losses(self) -> None:
        names = ("vanilla", "hinge", "wasserstein")
        g_losses = {name: getattr(losses, f"g_{name}") for name in names}
        d_losses = {name: getattr(losses, f"d_{name}") for name in names}
        self.LOSS.g_loss = g_losses[self.LOSS.adv_loss]
        self.LOSS.d_loss = d_losses[self.LOSS.adv_loss]

    def define_augments(self, device: Any) -> None:
        # DiffAugment-like: a random brightness shift with gradient to the images; identity otherwise.
        if self.AUG.apply_diffaug:
            self.AUG.series_augment = _brightness
        else:
            self.AUG.series_augment = _identity


def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x + 0.1 * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x
