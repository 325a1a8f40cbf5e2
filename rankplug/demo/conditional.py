r"""A conditional digits GAN whose auxiliary classifier is either AAM (ArcFace) or softmax cross entropy.

Groundwork for ``rankplug demo --conditional``: the label-geometry paper's comparison (Sec. 4.4, Tables 2-3)
on the embedded digits, with the paper's own evaluation (GAN-train, GAN-test) and the offline digits-FID of
:mod:`rankplug.eval.digits`.

**Networks.** :class:`ConditionalGenerator` concatenates a one-hot label to ``z`` (StarGAN and the paper feed the
target class as a one-hot vector, Sec. 3.1) and runs the demo's DCGAN-style :class:`rankplug.demo.Generator`.
:class:`ConditionalDiscriminator` is the demo critic's trunk (stride-2 convolutions, LeakyReLU, **no BatchNorm**,
so the per-sample gradient penalty stays valid) with two heads on the flattened features ``phi(x)``: a linear
real/fake score ``D_src`` and the auxiliary classifier ``D_cls``, which is

- ``"aam"``: :class:`rankplug.AAMAuxClassifier` (label-geometry paper Eq. 7-8, MATH §6), or
- ``"ce"``: ``nn.Linear(F, 10, bias=False)`` with softmax cross entropy. MATH §6 describes the AAM head as
  the cosine version of StarGAN's bias-free linear class map, so the only difference between the two runs is
  the normalisation, the scale ``s`` and the margin ``m``.

**Objective** (label-geometry paper Eq. 3-6 without the reconstruction term, i.e. AC-GAN with StarGAN's losses):

.. math::
    L_D = \underbrace{\mathbb{E}\,D_{src}(G(z, c)) - \mathbb{E}\,D_{src}(x)
          + \lambda_{gp}\,\mathrm{GP}}_{-L_{adv}\ \text{(WGAN-GP, RankGAN Eq. 5)}}
          + \lambda_{cls}\, L^r_{cls}(x, y) \qquad \text{(Eq. 5)}

.. math::
    L_G = -\mathbb{E}\,D_{src}(G(z, c)) + \lambda_{cls}\, L^f_{cls}(G(z, c), c) \qquad \text{(Eq. 6)}

- **Adversarial part: WGAN-GP**, not the hinge margin loss. The paper builds on StarGAN, whose adversarial
  loss is WGAN-GP, and the demo's same-compute baseline (:mod:`rankplug.demo.train`) is WGAN-GP too, so the
  only change between the two heads is the classification loss. The penalty is
  :func:`rankplug.functional.gradient_penalty` on ``D_src`` only (StarGAN does the same), with
  ``lambda_gp = 10``.
- **Classification on real images** ``L^r_cls`` (Eq. 3) trains D only: for ``"ce"`` it is
  ``cross_entropy(W phi(x), y)``; for ``"aam"`` it is :meth:`rankplug.AAMAuxClassifier.loss`, Eq. 8, with the
  margin ``m`` on the true class.
- **Classification of fakes** ``L^f_cls`` (Eq. 4) trains G only (D's parameters are frozen during the
  generator step), with the conditioning label ``c`` as the target. MATH §6 says the AAM loss replaces
  softmax cross entropy in **both** terms, so for ``"aam"`` the generator's loss is the same Eq. 8 **with the
  margin**, ``CE([s cos(theta_c + m), s cos(theta_j)], c)``; for ``"ce"`` it is ``cross_entropy(W phi(G(z, c)), c)``.
  The margin keeps the fake term awake even for a fake that is already classified correctly
  (``docs/aam_defaults.md`` §3).
- ``lambda_cls = 1`` (StarGAN, AC-GAN). With the defaults ``s = 16, m = 0.3`` a fake that is orthogonal to every
  class weight costs 6.9 nats against 2.3 for cross entropy (``docs/aam_defaults.md`` §3).

**Data and evaluation.** Train on the training part of :func:`rankplug.eval.digits.digits_split` (1,347 digits)
and score on its 450 held-out digits: GAN-test with the cached :func:`~rankplug.eval.digits.reference_classifier`
(trained on the same training part), GAN-train with a fresh classifier trained on samples and scored on the
held-out digits, digits-FID between held-out digits and samples. :func:`real_reference` gives the values real
data reaches: the reference classifier's held-out accuracy (the practical ceiling of GAN-train; GAN-test of
samples that are easier than real digits can exceed it) and the digits-FID between held-out and training
digits (the floor of digits-FID).

**Determinism.** Weights are initialised inside :func:`torch.random.fork_rng` from ``seed``; every random draw of
training (real batches, ``z``, labels, the penalty's mixing weights) comes from one ``torch.Generator`` seeded
with ``seed`` whose state is checkpointed. A run is deterministic for a seed on CPU, a resumed run continues bit
for bit, and the global random state is neither read nor changed.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from rankplug import functional as F
from rankplug._checkpoint import atomic_save, safe_load
from rankplug._validation import check_choice, check_nonnegative, check_positive, check_positive_int, shape_str
from rankplug.demo.models import SIZES, Generator
from rankplug.eval.digits import digits_fid, digits_split, gan_test, gan_train, reference_classifier
from rankplug.functional.angular import check_angular_margin
from rankplug.heads import DEFAULT_AAM_MARGIN, DEFAULT_AAM_SCALE, AAMAuxClassifier

#: The auxiliary classifiers compared: additive angular margin, or softmax cross entropy on a linear map.
HEADS = ("aam", "ce")
NUM_CLASSES = 10
#: Seed of the train / held-out split and of the cached reference classifier (:func:`rankplug.eval.digits_split`).
SPLIT_SEED = 0
CHECKPOINT_NAME = "conditional.pt"

Callback = Callable[[dict[str, Any]], None]
HeadCallback = Callable[[str, dict[str, Any]], None]


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    return int(value)


def _check_size(size: object) -> int:
    size = _check_int(size, "size")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}; got {size}")
    return size


def _check_labels(labels: object, name: str, n: int | None = None) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype (e.g. int64); got {labels.dtype}")
    if labels.dim() != 1 or (n is not None and labels.shape[0] != n):
        expected = "(N,)" if n is None else f"({n},)"
        raise ValueError(f"{name} has shape {shape_str(labels)}; expected {expected}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise ValueError(
            f"{name} must lie in 0..{NUM_CLASSES - 1}; got values in {int(labels.min())}..{int(labels.max())}"
        )
    return labels.long()


class ConditionalGenerator(nn.Module):
    """The demo's DCGAN-style generator fed with ``[z, onehot(c)]``.

    Args:
        nz: latent dimension.
        ngf: width of the underlying :class:`rankplug.demo.Generator`.
        size: output side, 16 or 32.
        channels: output channels.
        num_classes: number of classes ``C``.

    Shape:
        - Input: ``z`` ``(N, nz)`` and ``labels`` ``(N,)`` integers in ``0..C-1``.
        - Output: ``(N, channels, size, size)`` in ``[-1, 1]``.

    Example:
        >>> G = ConditionalGenerator(nz=8, ngf=8)
        >>> G(torch.randn(4, 8), torch.tensor([0, 1, 2, 9])).shape
        torch.Size([4, 1, 16, 16])
    """

    def __init__(
        self, nz: int = 32, ngf: int = 32, size: int = 16, channels: int = 1, num_classes: int = NUM_CLASSES
    ) -> None:
        super().__init__()
        self.nz = check_positive_int(nz, "nz")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.net = Generator(nz=self.nz + self.num_classes, ngf=ngf, size=_check_size(size), channels=channels)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.nz:
            shape = shape_str(z) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z has shape {shape}; expected (N, {self.nz})")
        labels = _check_labels(labels, "labels", int(z.shape[0]))
        if self.num_classes != NUM_CLASSES and labels.numel() and int(labels.max()) >= self.num_classes:
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")
        onehot = TF.one_hot(labels.to(z.device), self.num_classes).to(z.dtype)
        return self.net(torch.cat([z, onehot], dim=1))


class ConditionalDiscriminator(nn.Module):
    """The demo critic's trunk (no BatchNorm) with a real/fake score and an auxiliary classifier.

    Args:
        head: ``"aam"`` (:class:`rankplug.AAMAuxClassifier`) or ``"ce"`` (bias-free ``nn.Linear``).
        ndf: width of the first convolution (doubled at each further one).
        size: input side, 16 or 32.
        channels: input channels.
        num_classes: number of classes ``C``.
        aam_scale, aam_margin: ``s`` and ``m`` (radians) of the AAM head; ignored for ``"ce"``.

    Shape:
        - Input: ``(N, channels, size, size)``.
        - :meth:`features`: ``(N, F)`` with ``F = 4 * ndf * 16``.
        - Output of ``forward``: ``(scores, logits)``, ``(N, 1)`` raw real/fake scores (higher means more real)
          and ``(N, C)`` class logits (``s cos(theta)`` without the margin for ``"aam"``).

    Example:
        >>> D = ConditionalDiscriminator("aam", ndf=8)
        >>> scores, logits = D(torch.randn(4, 1, 16, 16))
        >>> scores.shape, logits.shape
        (torch.Size([4, 1]), torch.Size([4, 10]))
        >>> D.class_loss(logits, torch.tensor([0, 1, 2, 3])).backward()
    """

    def __init__(
        self,
        head: str,
        *,
        ndf: int = 32,
        size: int = 16,
        channels: int = 1,
        num_classes: int = NUM_CLASSES,
        aam_scale: float = DEFAULT_AAM_SCALE,
        aam_margin: float = DEFAULT_AAM_MARGIN,
    ) -> None:
        super().__init__()
        self.head = check_choice(head, "head", HEADS)
        ndf = check_positive_int(ndf, "ndf")
        self.size = _check_size(size)
        self.channels = check_positive_int(channels, "channels")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        downs = 2 if self.size == 16 else 3  # down to a 4x4 map, as in rankplug.demo.models.Discriminator
        layers: list[nn.Module] = []
        width_in, width = self.channels, ndf
        for _ in range(downs):
            layers += [nn.Conv2d(width_in, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width_in, width = width, width * 2
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = width_in * 16
        self.src = nn.Linear(self.feature_dim, 1)
        self.cls: nn.Module
        if self.head == "aam":
            self.cls = AAMAuxClassifier(self.feature_dim, self.num_classes, scale=aam_scale, margin=aam_margin)
        else:
            self.cls = nn.Linear(self.feature_dim, self.num_classes, bias=False)

    def features(self, x: Tensor) -> Tensor:
        """The trunk's flattened features ``phi(x)``, ``(N, F)``."""
        expected = (self.channels, self.size, self.size)
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            shape = shape_str(x) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x has shape {shape}; expected (N, {', '.join(map(str, expected))})")
        return self.trunk(x)

    def score(self, x: Tensor) -> Tensor:
        """Real/fake scores ``D_src(x)``, ``(N, 1)``; what the gradient penalty differentiates."""
        return self.src(self.features(x))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        phi = self.features(x)
        return self.src(phi), self.cls(phi)

    def class_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``L_cls`` of label-geometry paper Eq. 3-4: AAM (Eq. 8, margin on ``labels``) or cross entropy."""
        if isinstance(self.cls, AAMAuxClassifier):
            return self.cls.loss(logits, labels)
        return TF.cross_entropy(logits, labels)


class _RunState:
    """What a checkpoint holds besides the modules and optimizers: settings, progress, history, RNG."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = dict(settings)
        self.steps = 0
        self.wall_time = 0.0
        self.history: dict[str, list[float]] = {key: [] for key in _HISTORY_KEYS}


_HISTORY_KEYS = ("step", "loss_d", "loss_g", "real", "fake", "cls_real", "cls_fake", "acc_real", "acc_fake")


def _check_train_args(
    head: object, images: object, labels: object, size: int, device: object
) -> tuple[str, Tensor, Tensor]:
    if not isinstance(head, str):
        raise TypeError(f"head must be a str, one of {HEADS}; got {type(head).__name__}")
    head = check_choice(head, "head", HEADS)
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor; got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must have a floating-point dtype; got {images.dtype}")
    if images.dim() != 4 or images.shape[0] < 1 or tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"images has shape {shape_str(images)}; expected (M, C, {size}, {size}) with M >= 1")
    labels = _check_labels(labels, "labels", int(images.shape[0]))
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device; got {type(device).__name__}")
    return head, images, labels


def train_conditional(
    head: str,
    *,
    images: Tensor,
    labels: Tensor,
    steps: int,
    batch_size: int = 64,
    n_critic: int = 2,
    lr_d: float = 2e-4,
    lr_g: float = 2e-4,
    size: int = 16,
    nz: int = 32,
    width: int = 32,
    cls_weight: float = 1.0,
    gp_weight: float = 10.0,
    aam_scale: float = DEFAULT_AAM_SCALE,
    aam_margin: float = DEFAULT_AAM_MARGIN,
    log_every: int = 10,
    seed: int = 0,
    device: str | torch.device = "cpu",
    directory: str | Path | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    r"""Train one conditional digits GAN with an AAM or a cross-entropy auxiliary classifier (see the module doc).

    Per generator step: ``n_critic`` critic steps on
    ``L_D = mean D_src(G(z, c)) - mean D_src(x) + GP + cls_weight * L^r_cls(x, y)`` (label-geometry paper Eq. 5),
    then one generator step on ``L_G = -mean D_src(G(z, c)) + cls_weight * L^f_cls(G(z, c), c)`` (Eq. 6), with
    ``c`` uniform over the 10 classes. For ``"aam"`` both ``L_cls`` terms are Eq. 8 with the margin on the target
    (MATH §6); for ``"ce"`` both are softmax cross entropy.

    Args:
        head: ``"aam"`` or ``"ce"``.
        images: real training images in ``[-1, 1]``, ``(M, C, size, size)``, e.g.
            ``rankplug.eval.digits_split(16).train_images``.
        labels: their classes, ``(M,)`` integers in ``0..9``.
        steps: generator steps in all (a resumed run continues up to ``steps``).
        batch_size: real and fake batch size.
        n_critic: critic steps per generator step.
        lr_d, lr_g: Adam learning rates (betas ``(0, 0.99)``, as in the demo).
        size, nz, width: image side (16 or 32), latent size and network width.
        cls_weight: ``lambda_cls >= 0`` (Eq. 5-6; StarGAN: 1).
        gp_weight: ``lambda_gp >= 0`` (RankGAN Eq. 5; 10).
        aam_scale, aam_margin: ``s > 0`` and ``m`` in ``[0, pi/2)`` radians of the AAM head (ignored for ``"ce"``).
        log_every: the history is recorded at every multiple of ``log_every`` generator steps.
        seed: seeds the initial weights and the run's ``torch.Generator``.
        device: torch device.
        directory: if given, a checkpoint ``conditional.pt`` is written there at the end of the call, and a later
            call with the same directory and settings resumes from it (``resumed`` in the result).
        callback: called with one history record (a dict with the keys of ``history``) every ``log_every`` steps.
        progress: print one line per record to stderr.

    Returns:
        A dict. ``generator`` (in eval mode) and ``discriminator`` are the trained modules; the rest is JSON-ready:
        ``head``, ``history`` (lists ``step``, ``loss_d``, ``loss_g``, ``real`` and ``fake`` (mean scores),
        ``cls_real`` and ``cls_fake`` (the two ``L_cls`` terms), ``acc_real`` and ``acc_fake`` (the auxiliary
        classifier's batch accuracy on real images and on fakes w.r.t. their conditioning label)),
        ``generator_steps``, ``steps_this_call``, ``wall_time`` (seconds, all calls), ``resumed``, ``settings``.

    Raises:
        ValueError: an unknown head, wrong shapes, labels outside ``0..9``, non-positive sizes or a checkpoint
            written with other settings or more steps.
        TypeError: non-tensor data, float labels, non-integer counts.

    Example:
        >>> from rankplug.eval.digits import digits_split
        >>> split = digits_split(16)
        >>> result = train_conditional("aam", images=split.train_images[:64], labels=split.train_labels[:64],
        ...                            steps=2, batch_size=8, n_critic=1, width=8, log_every=1)
        >>> result["generator_steps"], len(result["history"]["acc_fake"])
        (2, 2)
    """
    size = _check_size(size)
    head, images, labels = _check_train_args(head, images, labels, size, device)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    n_critic = check_positive_int(n_critic, "n_critic")
    nz = check_positive_int(nz, "nz")
    width = check_positive_int(width, "width")
    log_every = check_positive_int(log_every, "log_every")
    seed = _check_int(seed, "seed")
    lr_d, lr_g = check_positive(lr_d, "lr_d"), check_positive(lr_g, "lr_g")
    cls_weight = check_nonnegative(cls_weight, "cls_weight")
    gp_weight = check_nonnegative(gp_weight, "gp_weight")
    aam_scale = check_positive(aam_scale, "aam_scale")
    aam_margin = check_angular_margin(aam_margin, "aam_margin")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None; got {type(callback).__name__}")
    if directory is not None and not isinstance(directory, (str, Path)):
        raise TypeError(f"directory must be a str, a pathlib.Path or None; got {type(directory).__name__}")

    started = time.perf_counter()
    device = torch.device(device)
    channels = int(images.shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = ConditionalGenerator(nz=nz, ngf=width, size=size, channels=channels)
        D = ConditionalDiscriminator(
            head, ndf=width, size=size, channels=channels, aam_scale=aam_scale, aam_margin=aam_margin
        )
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.0, 0.99))
    rng = torch.Generator().manual_seed(seed)  # on the CPU: every draw is made here, then moved
    state = _RunState(
        {
            "head": head,
            "batch_size": batch_size,
            "n_critic": n_critic,
            "lr_d": lr_d,
            "lr_g": lr_g,
            "size": size,
            "nz": nz,
            "width": width,
            "cls_weight": cls_weight,
            "gp_weight": gp_weight,
            "aam_scale": aam_scale,
            "aam_margin": aam_margin,
            "log_every": log_every,
            "seed": seed,
            "num_images": int(images.shape[0]),
        }
    )
    path = None if directory is None else Path(directory) / CHECKPOINT_NAME
    resumed = False
    if path is not None and path.is_file():
        _load_checkpoint(path, state, G, D, opt_g, opt_d, rng, steps)
        resumed = True
    steps_before = state.steps
    images = images.to(device)
    labels = labels.to(device)
    count = int(images.shape[0])

    def draw_real() -> tuple[Tensor, Tensor]:
        index = torch.randint(count, (batch_size,), generator=rng).to(device)
        return images[index], labels[index]

    def draw_fake_inputs() -> tuple[Tensor, Tensor]:
        z = torch.randn(batch_size, nz, generator=rng).to(device)
        return z, torch.randint(NUM_CLASSES, (batch_size,), generator=rng).to(device)

    G.train()
    D.train()
    while state.steps < steps:
        D.requires_grad_(True)
        for _ in range(n_critic):
            x, y = draw_real()
            z, c = draw_fake_inputs()
            with torch.no_grad():
                fake = G(z, c)
            real_scores, real_logits = D(x)
            fake_scores = D.score(fake)
            cls_real = D.class_loss(real_logits, y)  # L^r_cls, Eq. 3 (AAM: Eq. 8 with the margin)
            adv_d = fake_scores.mean() - real_scores.mean()  # -L_adv, WGAN critic loss
            penalty = F.gradient_penalty(D.score, x, fake, weight=gp_weight, generator=rng)
            loss_d = adv_d + penalty + cls_weight * cls_real  # Eq. 5
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        # D is a fixed judge in the generator step; freezing it also skips its parameter gradients.
        D.requires_grad_(False)
        z, c = draw_fake_inputs()
        fake_scores_g, fake_logits = D(G(z, c))
        cls_fake = D.class_loss(fake_logits, c)  # L^f_cls, Eq. 4 (AAM: Eq. 8 with the margin, MATH §6)
        loss_g = -fake_scores_g.mean() + cls_weight * cls_fake  # Eq. 6 without L_rec
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        state.steps += 1
        if state.steps % log_every == 0:
            record = {
                "step": state.steps,
                "loss_d": float(loss_d.detach()),
                "loss_g": float(loss_g.detach()),
                "real": float(real_scores.detach().mean()),
                "fake": float(fake_scores_g.detach().mean()),
                "cls_real": float(cls_real.detach()),
                "cls_fake": float(cls_fake.detach()),
                "acc_real": float((real_logits.detach().argmax(1) == y).double().mean()),
                "acc_fake": float((fake_logits.detach().argmax(1) == c).double().mean()),
            }
            for key in _HISTORY_KEYS:
                state.history[key].append(record[key])
            if progress:
                print(
                    f"[conditional {head}] step {state.steps}/{steps}: D(x) {record['real']:.3f} "
                    f"D(G(z,c)) {record['fake']:.3f} cls real {record['cls_real']:.3f} "
                    f"fake {record['cls_fake']:.3f} acc fake {record['acc_fake']:.2f}",
                    file=sys.stderr,
                )
            if callback is not None:
                callback(dict(record))
    D.requires_grad_(True)
    state.wall_time += time.perf_counter() - started
    if path is not None and state.steps != steps_before:
        _save_checkpoint(path, state, G, D, opt_g, opt_d, rng)
    G.eval()
    D.eval()
    return {
        "head": head,
        "history": {key: list(values) for key, values in state.history.items()},
        "generator_steps": state.steps,
        "steps_this_call": state.steps - steps_before,
        "wall_time": state.wall_time,
        "resumed": resumed,
        "settings": dict(state.settings, steps=steps),
        "generator": G,
        "discriminator": D,
    }


def _save_checkpoint(
    path: Path,
    state: _RunState,
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    rng: torch.Generator,
) -> None:
    atomic_save(
        {
            "kind": "rankplug.demo.conditional",
            "settings": state.settings,
            "steps": state.steps,
            "wall_time": state.wall_time,
            "history": state.history,
            "generator": G.state_dict(),
            "discriminator": D.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "rng": rng.get_state(),
        },
        path,
    )


def _load_checkpoint(
    path: Path,
    state: _RunState,
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    rng: torch.Generator,
    steps: int,
) -> None:
    payload = safe_load(path, map_location="cpu")
    if not isinstance(payload, dict) or payload.get("kind") != "rankplug.demo.conditional":
        raise ValueError(f"{path} is not a checkpoint of rankplug.demo.conditional.train_conditional")
    if payload["settings"] != state.settings:
        raise ValueError(
            f"the checkpoint {path} was written with settings {payload['settings']}; this call has {state.settings}"
        )
    if int(payload["steps"]) > steps:
        raise ValueError(f"steps must be >= the {payload['steps']} steps already in the checkpoint {path}; got {steps}")
    G.load_state_dict(payload["generator"])
    D.load_state_dict(payload["discriminator"])
    opt_g.load_state_dict(payload["opt_g"])
    opt_d.load_state_dict(payload["opt_d"])
    rng.set_state(payload["rng"])
    state.steps = int(payload["steps"])
    state.wall_time = float(payload["wall_time"])
    state.history = {key: [float(v) for v in payload["history"][key]] for key in _HISTORY_KEYS}
    state.history["step"] = [int(v) for v in state.history["step"]]


def class_samples(generator: ConditionalGenerator, *, per_class: int, seed: int = 0) -> Tensor:
    """``per_class`` samples of every class from a fixed ``z``, with ``generator`` in eval mode.

    The latent codes come from a ``torch.Generator`` seeded with ``seed``, so two generators (e.g. the AAM and
    the CE run) are shown the same ``z``; the global random state is untouched.

    Shape:
        - Output: ``(10, per_class, C, S, S)`` in ``[-1, 1]``; row ``k`` holds class ``k``.
    """
    if not isinstance(generator, ConditionalGenerator):
        raise TypeError(f"generator must be a ConditionalGenerator; got {type(generator).__name__}")
    per_class = check_positive_int(per_class, "per_class")
    seed = _check_int(seed, "seed")
    device = next(generator.parameters()).device
    z = torch.randn(NUM_CLASSES * per_class, generator.nz, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            images = torch.cat(
                [generator(zs.to(device), ls.to(device)) for zs, ls in zip(z.split(512), labels.split(512))]
            )
    finally:
        generator.train(was_training)
    return images.cpu().view(NUM_CLASSES, per_class, *images.shape[1:])


def evaluate_conditional(
    generator: ConditionalGenerator,
    *,
    size: int = 16,
    samples_per_class: int = 135,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    gan_train_epochs: int = 12,
) -> dict[str, Any]:
    """GAN-test, GAN-train and digits-FID of a conditional generator (label-geometry paper Sec. 4.4, MATH §7).

    - ``gan_test``: accuracy of :func:`rankplug.eval.digits.reference_classifier` (trained on the training part
      of the split) on ``10 * samples_per_class`` samples, against their conditioning labels.
    - ``gan_train``: a fresh classifier trained on the samples (same recipe as the reference), scored on the 450
      held-out real digits.
    - ``digits_fid``: Fréchet distance between the reference classifier's features of the held-out digits and of
      the samples.
    - ``gan_test_per_class``: GAN-test of each class.

    The default 135 samples per class give 1,350 samples, as many as the 1,347 real training digits, so the
    values compare directly with :func:`real_reference`.

    Args:
        generator: a trained :class:`ConditionalGenerator` producing ``size x size`` images.
        size: image side, 16 or 32.
        samples_per_class: samples of every class.
        seed: seed of the latent codes and of the GAN-train classifier.
        cache_dir: cache directory of the reference classifier (default ``$RANKPLUG_CACHE`` or
            ``~/.cache/rankplug``).
        gan_train_epochs: epochs of the GAN-train classifier.

    Returns:
        A JSON-ready dict: ``gan_test``, ``gan_train``, ``digits_fid``, ``gan_test_per_class`` (10 floats) and
        ``num_samples``.
    """
    size = _check_size(size)
    samples_per_class = check_positive_int(samples_per_class, "samples_per_class")
    if samples_per_class < 2:
        raise ValueError(f"samples_per_class must be >= 2 for a covariance; got {samples_per_class}")
    gan_train_epochs = check_positive_int(gan_train_epochs, "gan_train_epochs")
    classifier, split = reference_classifier(size, cache_dir=cache_dir, seed=SPLIT_SEED)
    samples = class_samples(generator, per_class=samples_per_class, seed=seed)
    if tuple(samples.shape[2:]) != (1, size, size):
        raise ValueError(f"generator makes images of shape {tuple(samples.shape[2:])}; expected (1, {size}, {size})")
    images = samples.flatten(0, 1)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(samples_per_class)
    per_class = [gan_test(classifier, samples[k], labels[labels == k]) for k in range(NUM_CLASSES)]
    return {
        "gan_test": gan_test(classifier, images, labels),
        "gan_train": gan_train(
            images, labels, split.test_images, split.test_labels, seed=seed, epochs=gan_train_epochs
        ),
        "digits_fid": digits_fid(classifier, split.test_images, images),
        "gan_test_per_class": per_class,
        "num_samples": int(images.shape[0]),
    }


def real_reference(*, size: int = 16, cache_dir: str | Path | None = None) -> dict[str, float]:
    """What real digits reach on the metrics of :func:`evaluate_conditional`.

    - ``classifier_accuracy``: the reference classifier's accuracy on the 450 held-out digits. It is GAN-train's
      value for 1,347 real training digits in place of samples (the reference classifier *is* that classifier),
      the practical ceiling of GAN-train, and GAN-test's value for real digits. GAN-test is **not** bounded by
      it: samples easier than real digits (prototypes) score higher.
    - ``digits_fid``: digits-FID between the held-out and the training digits, the floor a generator can
      expect with a training-set-sized sample.
    """
    size = _check_size(size)
    classifier, split = reference_classifier(size, cache_dir=cache_dir, seed=SPLIT_SEED)
    return {
        "classifier_accuracy": gan_test(classifier, split.test_images, split.test_labels),
        "digits_fid": digits_fid(classifier, split.test_images, split.train_images),
    }


def compare_heads(
    *,
    steps: int,
    seed: int = 0,
    size: int = 16,
    samples_per_class: int = 135,
    device: str | torch.device = "cpu",
    directory: str | Path | None = None,
    cache_dir: str | Path | None = None,
    callback: HeadCallback | None = None,
    progress: bool = False,
    **train_options: Any,
) -> dict[str, Any]:
    """Train the AAM and the CE conditional GAN with the same seed and budget on the digits; evaluate both.

    Both runs train on the training part of :func:`rankplug.eval.digits.digits_split` (seed 0, the split of the
    reference classifier) and are scored by :func:`evaluate_conditional` on its held-out part.

    Args:
        steps: generator steps of each run.
        seed: seed of both runs (initial weights, batches, ``z``, labels) and of the evaluation.
        size: image side, 16 or 32.
        samples_per_class: samples per class for the evaluation.
        device: torch device.
        directory: if given, each run checkpoints to (and resumes from) ``directory / head``.
        cache_dir: cache directory of the reference classifier.
        callback: called as ``callback(head, record)`` with every history record.
        progress: print one line per record to stderr.
        **train_options: further keyword arguments of :func:`train_conditional` (``batch_size``, ``n_critic``,
            ``aam_scale``, ...), the same for both heads.

    Returns:
        ``{"runs": {head: train_conditional result + "metrics": evaluate_conditional result}, "reference":
        real_reference result, "settings": {...}}``. Each run holds its ``generator`` and ``discriminator``
        modules; :func:`json_ready` drops them.
    """
    reserved = {"head", "images", "labels", "directory", "callback", "progress"} & set(train_options)
    if reserved:
        raise TypeError(f"compare_heads sets {sorted(reserved)} itself; do not pass them in train_options")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None; got {type(callback).__name__}")
    size = _check_size(size)
    split = digits_split(size, seed=SPLIT_SEED)
    runs: dict[str, Any] = {}
    for head in HEADS:

        def forward_record(record: dict[str, Any], head: str = head) -> None:
            if callback is not None:
                callback(head, record)

        result = train_conditional(
            head,
            images=split.train_images,
            labels=split.train_labels,
            steps=steps,
            seed=seed,
            size=size,
            device=device,
            directory=None if directory is None else Path(directory) / head,
            callback=forward_record,
            progress=progress,
            **train_options,
        )
        evaluated = time.perf_counter()
        result["metrics"] = evaluate_conditional(
            result["generator"], size=size, samples_per_class=samples_per_class, seed=seed, cache_dir=cache_dir
        )
        result["metrics"]["eval_time"] = time.perf_counter() - evaluated
        runs[head] = result
    return {
        "runs": runs,
        "reference": real_reference(size=size, cache_dir=cache_dir),
        "settings": {"steps": steps, "seed": seed, "size": size, "samples_per_class": samples_per_class},
    }


def json_ready(result: dict[str, Any]) -> dict[str, Any]:
    """A copy of a :func:`train_conditional` or :func:`compare_heads` result without its modules."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not isinstance(v, nn.Module)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return strip(result)  # type: ignore[no-any-return]


__all__ = [
    "HEADS",
    "ConditionalDiscriminator",
    "ConditionalGenerator",
    "class_samples",
    "compare_heads",
    "evaluate_conditional",
    "json_ready",
    "real_reference",
    "train_conditional",
]
