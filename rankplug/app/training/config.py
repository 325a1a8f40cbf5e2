"""Every setting of a training run in one validated, JSON- and TOML-friendly dataclass, and the paper presets.

:class:`TrainConfig` is what ``rankplug train`` builds from its flags (and ``--config FILE``), what a run
directory records in ``run.json``, and what :func:`rankplug.app.training.train` takes. Each field is checked for its
type and range when the config is built, so a run directory or a TOML file with a bad value is refused before
anything is allocated.

The presets (:data:`PRESETS`) are each paper's own settings, applied under explicit flags:

- ``rankgan``: RankGAN Algorithm 1 (maths §3): Adam ``(0, 0.99)``, lr 5e-5 for D and 1e-4 for G, 5 critic steps,
  ``lambda_gp = 10``, the VAE stage 0 and the encoder, stages that end when the gap plateaus; stage 1's
  ``eps = 10``, so that its margin loss is the WGAN loss the paper trains stage 1 with (maths §1, §3); and
  ``lambda_clamp = 1``, the authors' code's value, not the paper's 1000: in ``experiments/rankgan_study.py``
  (5 seeds, ``docs/results.md`` §1) 1000 and 100 made stage 2 worse than stage 1 on every seed (the clamp
  outweighs the rank term, ``D(G_i(z))`` overtakes ``D(x)`` and the generator's hinge dies), with Adam's
  ``beta2`` 0.99 or 0.9 alike, while 1 improved digits-FID by 65 [40, 90] over stage 1.
- ``gogan``: GoGAN Sec. 5: RMSprop with lr 5e-5 for both networks, batch 64, ``eps = 1``,
  ``lambda_1 = 1, lambda_2 = 0.5`` (maths §2), the gradient penalty kept (rankplug's critic is not clipped).
- ``mbgan``: MBGAN Sec. 4: ``K = 500``, ``alpha = 20`` with the per-pixel-mean margin, a BatchNorm critic,
  batch 128, ``z ~ U(0, 1)``, Adam lr 2e-4 ``(0.5, 0.999)``, one critic step (maths §5).
- ``aam``: the label-geometry paper on StarGAN's objective: WGAN-GP with the AAM auxiliary classifier,
  ``lambda_cls = 1``, lr 1e-4 for both, Adam ``(0.5, 0.999)``, 5 critic steps (maths §6).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rankplug._validation import IMAGE_SIZES, check_flag, check_image_size, check_int_in, check_one_of, check_real_in
from rankplug.methods import METHODS

SIZES = IMAGE_SIZES
DATA_KINDS = ("digits", "mnist", "folder", "cifar10")
BUNDLED_DATA = ("digits", "mnist")  #: the data sets that ship with an install (no data_root)
CLASS_HEADS = ("none", "aam", "ce", "cosine")
OPTIMIZERS = ("adam", "rmsprop")
LATENTS = ("normal", "uniform")
CRITIC_NORMS = ("none", "batch")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of one training run. Build with keywords; every value is validated (``ValueError`` /
    ``TypeError`` naming the field).

    Example:
        >>> config = TrainConfig(method="gogan", steps_per_stage=200, size=8)
        >>> config.stages, config.n_critic
        (3, 5)
        >>> TrainConfig.from_preset("mbgan").batch_size
        128
    """

    method: str = "rankgan"  #: a method of :data:`rankplug.methods.METHODS` (a :class:`rankplug.StageObjective`)
    stages: int = 3
    steps_per_stage: int = 300  #: generator steps per stage (the most, when the plateau rule ends it earlier)
    plateau_patience: int | None = None  #: end a stage once the gap stayed flat for this many records
    plateau_tolerance: float = 0.05
    data: str = "digits"
    data_root: str | None = None
    size: int = 16
    workers: int = 0  #: DataLoader worker processes
    batch_size: int = 64
    n_critic: int = 5
    optimizer: str = "adam"
    lr_d: float = 2e-4
    lr_g: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.99
    nz: int = 32
    width: int = 32
    latent: str = "normal"
    critic_norm: str = "none"
    margin: float = 1.0
    clamp_weight: float = 1.0  #: RankGAN Eq. 7's lambda_clamp; the paper's 1000 collapses (docs/results.md §1)
    clamp_on: str = "sample"  #: RankGAN's clamp on each sample (Eq. 6 as printed) or on the batch means
    #: the same-steps control of a staged method: the same stages, checkpoints and data, but every stage trains with
    #: stage 1's losses, so that "stage i" minus "control stage i" is the staged loss's own effect
    control: bool = False
    #: GoGAN's rank hinge on the current critic's scores anchored to the previous critic's level (maths §2)
    anchor_scores: bool = False
    weight_clip: float = 0.0  #: clip the critic's weights to [-c, c] after each step (WGAN's and GoGAN's; 0: off)
    gp_weight: float = 10.0
    disc_weight: float = 1.0
    rank_weight: float = 1.0
    embed_dim: int = 500
    alpha: float = 20.0
    margin_norm: str = "mean"
    encoder: bool = False
    encoder_epochs: int = 2
    class_head: str = "none"  #: conditional GAN's auxiliary classifier (single-stage variants)
    cls_weight: float = 1.0
    aam_scale: float = 16.0
    aam_margin: float = 0.3
    marker_images: int = 4096  #: real images (all ranks together) over which RankGAN's markers are taken
    #: latents in the previous-stage bank (0: off): critic steps of stage >= 2 reuse G_{i-1}(z) / D_{i-1}(G_{i-1}(z))
    bank_size: int = 0
    bank_refresh: int = 0  #: critic steps between re-draws of the bank (0: once per stage)
    ema: float = 0.0  #: decay of the generator's EMA (0: off)
    amp: bool = False
    device: str = "cpu"
    seed: int = 0
    #: generator steps between records; ``None``: the largest divisor of ``steps_per_stage`` up to 10
    log_every: int | None = None
    tensorboard: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            object.__setattr__(self, field.name, _CHECKS[field.name](value, field.name))
        if self.log_every is None:
            object.__setattr__(self, "log_every", default_log_every(self.steps_per_stage))
        elif self.steps_per_stage % self.log_every:
            raise ValueError(
                f"log_every must divide steps_per_stage; got {self.log_every} and {self.steps_per_stage} "
                f"(leave log_every out to log every {default_log_every(self.steps_per_stage)} steps)"
            )
        if (self.data in BUNDLED_DATA) != (self.data_root is None):
            raise ValueError(
                f"data {self.data!r} is bundled and takes no data_root"
                if self.data in BUNDLED_DATA
                else f"data {self.data!r} needs data_root (an image folder or a CIFAR-10 root)"
            )
        method = METHODS[self.method]  # what the method is, from its class facts, never from its name
        if self.class_head != "none" and not method.accepts_class_head:
            raise ValueError(
                f"class_head {self.class_head!r} is for the score variants without stages; got {self.method!r}"
            )
        if self.bank_size and not method.staged:
            staged = ", ".join(name for name, m in METHODS.items() if m.staged)
            raise ValueError(f"bank_size is for the staged methods ({staged}); got method {self.method!r}")
        if self.bank_refresh and not self.bank_size:
            raise ValueError(f"bank_refresh needs a bank (bank_size >= 1); got bank_refresh {self.bank_refresh}")
        if self.critic_norm == "batch" and self.gp_weight > 0 and method.has_penalty:
            raise ValueError("critic_norm 'batch' breaks the per-sample gradient penalty; set gp_weight 0 or use none")
        if self.control and not method.staged:
            raise ValueError(f"control is the same-steps control of a staged method; got method {self.method!r}")
        if self.anchor_scores and "anchor_scores" not in method.setting_names:
            raise ValueError(f"anchor_scores is GoGAN's (method 'gogan'); got method {self.method!r}")
        if self.control and self.bank_size:
            raise ValueError("control trains stage 1's losses, which never use the bank; set bank_size 0")

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, preset: str | None, **overrides: Any) -> TrainConfig:
        """A paper's settings (:data:`PRESETS`) with ``overrides`` on top; ``None`` gives the plain defaults."""
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
        chosen = dict(PRESETS[preset]) if preset is not None else {}
        method = overrides.get("method", chosen.get("method", "rankgan"))
        defaults = METHOD_DEFAULTS.get(method, {}) if isinstance(method, str) else {}  # a bad type: refused below
        settings = {**defaults, **chosen, **overrides}
        return cls.from_dict(settings)

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping (``run.json``, a TOML table); an unknown key is a ``ValueError`` naming it."""
        if not isinstance(settings, Mapping):
            raise TypeError(f"settings must be a mapping; got {type(settings).__name__}")
        unknown = sorted(set(settings) - set(_CHECKS))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(_CHECKS)}"
            )
        return cls(**dict(settings))

    @classmethod
    def read_toml(cls, path: str | Path) -> dict[str, Any]:
        """The settings of a TOML file (top level, or its ``[train]`` table), checked by name but not yet built."""
        try:
            import tomllib
        except ModuleNotFoundError:  # Python < 3.11
            import tomli as tomllib  # type: ignore[no-redef]
        source = Path(path)
        try:
            with source.open("rb") as handle:  # at most one byte past the bound: an endless file is not read whole
                data = handle.read(MAX_CONFIG_BYTES + 1)
            if len(data) > MAX_CONFIG_BYTES:
                raise ValueError(
                    f"--config {source}: larger than {MAX_CONFIG_BYTES:,} bytes; a run's settings fit in a few"
                )
            table = tomllib.loads(data.decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"--config {source}: not a readable TOML file: {error}") from error
        if "train" in table:
            if not isinstance(table["train"], dict):
                raise ValueError(f"--config {source}: 'train' must be a table ([train]); got {table['train']!r}")
            beside = sorted(set(table) - {"train"})
            if beside:
                raise ValueError(
                    f"--config {source}: setting(s) {', '.join(map(repr, beside))} sit beside the [train] table; "
                    "put every setting inside [train], or drop the table header"
                )
            table = table["train"]
        unknown = sorted(set(table) - set(_CHECKS) - {"preset"})
        if unknown:
            raise ValueError(f"--config {source}: unknown setting(s) {', '.join(map(repr, unknown))}")
        return dict(table)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain JSON data (what ``run.json`` records)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def differences(self, other: TrainConfig, *, here: str = "now", there: str = "there") -> str:
        """The settings in which ``other`` differs from this config, except ``stages`` (a run may grow), as text:
        ``"seed 0 there, 1 now, ..."``; empty when they agree. A run directory refuses a resume with other settings."""
        ours, theirs = self.to_dict(), other.to_dict()
        return ", ".join(
            f"{k} {theirs[k]!r} {there}, {ours[k]!r} {here}" for k in ours if k != "stages" and ours[k] != theirs[k]
        )

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    @property
    def conditional(self) -> bool:
        return self.class_head != "none"


def default_log_every(steps_per_stage: int) -> int:
    """The largest divisor of ``steps_per_stage`` up to 10: how often a run records when ``log_every`` is not set.

    Example:
        >>> default_log_every(300), default_log_every(4), default_log_every(13)
        (10, 4, 1)
    """
    return max(d for d in range(1, min(10, steps_per_stage) + 1) if steps_per_stage % d == 0)


#: The largest ``--config`` file read (1 MiB): a TOML file of settings is a few hundred bytes.
MAX_CONFIG_BYTES = 1 << 20


# ------------------------------------------------------------------------------------------------- checks
def _int_in(low: int, high: int) -> Callable[[object, str], int]:
    return lambda value, name: check_int_in(value, name, low, high)


def _real_in(low: float, high: float, *, open_low: bool = False) -> Callable[[object, str], float]:
    return lambda value, name: check_real_in(value, name, low, high, open_low=open_low)


def _one_of(*allowed: Any) -> Callable[[object, str], Any]:
    return lambda value, name: check_one_of(value, name, allowed)


def _optional(check: Callable[[object, str], Any]) -> Callable[[object, str], Any]:
    return lambda value, name: None if value is None else check(value, name)


def _path(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty path string; got {value!r}")
    return value


def _device(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a device name such as 'cpu' or 'cuda:0'; got {value!r}")
    return value


_BIG = 10**9
_WEIGHT = _real_in(0.0, 1e9)
# The upper bounds keep a run directory (or an edited checkpoint) from asking for an absurd network: a width of
# 10^6 is a 512 GB allocation, not a typo to honour.
_CHECKS: dict[str, Callable[[object, str], Any]] = {
    "method": lambda value, name: check_one_of(value, name, tuple(METHODS)),  # read when checked: registered ones too
    "stages": _int_in(1, 1000),
    "steps_per_stage": _int_in(1, _BIG),
    "plateau_patience": _optional(_int_in(1, _BIG)),
    "plateau_tolerance": _WEIGHT,
    "data": _one_of(*DATA_KINDS),
    "data_root": _optional(_path),
    "size": check_image_size,
    "workers": _int_in(0, 256),
    "batch_size": _int_in(1, 65_536),
    "n_critic": _int_in(1, 1000),
    "optimizer": _one_of(*OPTIMIZERS),
    "lr_d": _real_in(0.0, 10.0, open_low=True),
    "lr_g": _real_in(0.0, 10.0, open_low=True),
    "beta1": _real_in(0.0, 0.999999),
    "beta2": _real_in(0.0, 0.999999),
    "nz": _int_in(1, 4096),
    "width": _int_in(1, 1024),
    "latent": _one_of(*LATENTS),
    "critic_norm": _one_of(*CRITIC_NORMS),
    "margin": _WEIGHT,
    "clamp_weight": _WEIGHT,
    "clamp_on": _one_of("sample", "batch"),
    "control": check_flag,
    "anchor_scores": check_flag,
    "weight_clip": _real_in(0.0, 1e3),
    "gp_weight": _WEIGHT,
    "disc_weight": _WEIGHT,
    "rank_weight": _WEIGHT,
    "embed_dim": _int_in(1, 65_536),
    "alpha": _WEIGHT,
    "margin_norm": _one_of("mean", "sum"),
    "encoder": check_flag,
    "encoder_epochs": _int_in(1, 10_000),
    "class_head": _one_of(*CLASS_HEADS),
    "cls_weight": _WEIGHT,
    "aam_scale": _real_in(0.0, 1e4, open_low=True),
    "aam_margin": _real_in(0.0, math.pi / 2 - 1e-9),
    "marker_images": _int_in(1, _BIG),
    "bank_size": _int_in(0, 10**8),
    "bank_refresh": _int_in(0, _BIG),
    "ema": _real_in(0.0, 0.999999),
    "amp": check_flag,
    "device": _device,
    "seed": _int_in(0, 2**63 - 1),
    "log_every": _optional(_int_in(1, _BIG)),
    "tensorboard": check_flag,
}

#: Defaults that depend on the method when no preset sets them: the critics without a gradient penalty train
#: as DCGAN does (one critic step per generator step, Adam (0.5, 0.999)); the others follow RankGAN Algorithm 1.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "mbgan": {"n_critic": 1, "beta1": 0.5, "beta2": 0.999},
    "dcgan": {"n_critic": 1, "beta1": 0.5, "beta2": 0.999},
}

#: Each paper's own settings (see the module docstring); explicit flags override them.
PRESETS: dict[str, dict[str, Any]] = {
    "rankgan": {
        "method": "rankgan",
        "optimizer": "adam",
        "beta1": 0.0,
        "beta2": 0.99,
        "lr_d": 5e-5,
        "lr_g": 1e-4,
        "n_critic": 5,
        "margin": 10.0,
        "clamp_weight": 1.0,
        "gp_weight": 10.0,
        "encoder": True,
        "plateau_patience": 10,
    },
    "gogan": {
        "method": "gogan",
        "optimizer": "rmsprop",
        "lr_d": 5e-5,
        "lr_g": 5e-5,
        "batch_size": 64,
        "n_critic": 5,
        "margin": 1.0,
        "disc_weight": 1.0,
        "rank_weight": 0.5,
    },
    "mbgan": {
        "method": "mbgan",
        "stages": 1,
        "embed_dim": 500,
        "alpha": 20.0,
        "margin_norm": "mean",
        "critic_norm": "batch",
        "batch_size": 128,
        "latent": "uniform",
        "optimizer": "adam",
        "lr_d": 2e-4,
        "lr_g": 2e-4,
        "beta1": 0.5,
        "beta2": 0.999,
        "n_critic": 1,
    },
    "aam": {
        "method": "wgan-gp",
        "stages": 1,
        "class_head": "aam",
        "cls_weight": 1.0,
        "optimizer": "adam",
        "lr_d": 1e-4,
        "lr_g": 1e-4,
        "beta1": 0.5,
        "beta2": 0.999,
        "n_critic": 5,
    },
}

FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))

__all__ = ["CLASS_HEADS", "DATA_KINDS", "FIELDS", "METHOD_DEFAULTS", "PRESETS", "SIZES", "TrainConfig"]
