"""Heads: the learnable last layers of a discriminator. A head returns embeddings or logits; it holds its loss
module (``head.criterion``), whose settings are the head's, and its loss methods are thin calls."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from rankplug import functional as F
from rankplug._validation import (
    Reduction,
    as_float32,
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_reduction,
    check_same_device,
    check_tensor,
    flat_features,
    shape_str,
)
from rankplug.functional.angular import (
    check_angular_margin,
    scaled_cosine_margin_logits,
    scaled_cosine_margin_loss,
)
from rankplug.functional.metric import MARGIN_NORMS
from rankplug.losses import AdditiveAngularMarginLoss, TripletMetricDiscriminatorLoss, TripletMetricGeneratorLoss

#: Default ``s`` of :class:`AAMAuxClassifier`; see ``docs/aam_defaults.md`` for the reasoning and experiment.
DEFAULT_AAM_SCALE = 16.0
#: Default ``m`` (radians) of :class:`AAMAuxClassifier`; see ``docs/aam_defaults.md``.
DEFAULT_AAM_MARGIN = 0.3


def _loss_setting(name: str, check: Callable[[Any], Any], doc: str, *losses: str) -> Any:
    """A head's setting that lives on the loss module(s) it holds, read from ``head.criterion``.

    Setting it runs ``check`` (the check, and so the message, of the loss's constructor; loss modules check
    only there) and writes the result to every held loss named in ``losses`` (default: ``criterion``).
    """

    def get(head: nn.Module) -> Any:
        return getattr(head.criterion, name)

    def set_(head: nn.Module, value: Any) -> None:
        checked = check(value)
        for loss in losses or ("criterion",):
            setattr(getattr(head, loss), name, checked)

    return property(get, set_, doc=doc)


class TripletMetricDiscriminatorHead(nn.Module):
    r"""The embedding head of MBGAN's metric discriminator, with its losses, Eq. 1-4 (maths §5).

    The discriminator maps an image to an embedding in ``R^K``; distances between embeddings replace the
    real/fake score. A linear map takes the host's features ``(N, ...)`` to ``(N, K)``. With
    ``d(a, b) = ||D(a) - D(b)||_2`` and two real samples ``x_i`` (anchor) and ``x_j`` (positive):

    .. math::
        L_D = \big[\, h(x_j, G(z)) + d(x_i, x_j) - d(x_i, G(z)) \,\big]_+ \qquad \text{(Eq. 1)}

    .. math::
        L_G = d(x_j, G(z)) \qquad \text{(Eq. 2)}, \qquad
        h = \alpha \, \lVert x_j - G(z) \rVert_1 \qquad \text{(Eq. 4)}

    - The margin ``h`` is a **constant target with no gradient**, as in LS-GAN, where it comes from.
    - ``margin_norm="mean"`` (default) makes the L1 norm a per-pixel mean. The paper's stable ``alpha = 20``
      (and collapsing ``alpha = 0.2``) only makes sense at that scale; ``"sum"`` sums over pixels, as LS-GAN's
      code did with a tiny weight (2e-4).
    - The paper uses ``K = 500``; ``K = 5`` and ``K = 50`` collapsed.
    - Distances use a form whose gradient stays finite where a fake embedding equals a real one.
    - The conditional form (Eq. 5-6) is the same loss with a label fed to ``G`` and ``D``.

    Args:
        in_features: number of feature values per sample that the head receives (after flattening).
        embed_dim: ``K``, the embedding size.
        alpha: margin weight ``alpha >= 0``.
        margin_norm: ``"mean"`` | ``"sum"``, the L1 normalisation of the margin.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` for the losses.

    Shape:
        - features: ``(N, *)`` with ``in_features`` values per sample.
        - Output of ``forward``: ``(N, K)``.
        - Losses: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 embeddings.

    Example:
        >>> head = TripletMetricDiscriminatorHead(64, embed_dim=500)
        >>> x_i, x_j, fake = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
        >>> anchor_emb, positive_emb, fake_emb = head(x_i), head(x_j), head(fake)
        >>> anchor_emb.shape
        torch.Size([4, 500])
        >>> loss_d = head.discriminator_loss(anchor_emb, positive_emb, fake_emb,
        ...                                  positive_images=x_j, fake_images=fake)
        >>> loss_d.backward()
        >>> loss_g = head.generator_loss(positive_emb.detach(), head(fake))
    """

    def __init__(
        self,
        in_features: int,
        *,
        embed_dim: int = 500,
        alpha: float = 20.0,
        margin_norm: str = "mean",
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        # The head holds its losses, which own its settings; they have no parameters, so no state_dict keys.
        self.criterion = TripletMetricDiscriminatorLoss(alpha=alpha, margin_norm=margin_norm, reduction=reduction)
        self.generator_criterion = TripletMetricGeneratorLoss(reduction=reduction)
        self.embed = nn.Linear(self.in_features, self.embed_dim)

    alpha = _loss_setting(
        "alpha", lambda value: check_nonnegative(value, "alpha"), "The margin weight ``alpha >= 0``; checked when set."
    )
    margin_norm = _loss_setting(
        "margin_norm",
        lambda value: check_choice(value, "margin_norm", MARGIN_NORMS),
        '``"mean"`` | ``"sum"``, the L1 normalisation of the margin; checked when set.',
    )
    reduction = _loss_setting(
        "reduction",
        check_reduction,
        '``"mean"`` | ``"sum"`` | ``"none"`` for both losses; validated when set, also after construction.',
        "criterion",
        "generator_criterion",
    )

    def forward(self, features: Tensor) -> Tensor:
        flat = flat_features(features, "features", self.in_features)
        check_same_device(**{"the head's weight": self.embed.weight, "features": flat})
        return self.embed(flat)

    def margin(self, positive_images: Tensor, fake_images: Tensor) -> Tensor:
        """The detached data-dependent margin ``h`` of Eq. 4, shape ``(N,)``."""
        return F.data_dependent_margin(positive_images, fake_images, alpha=self.alpha, margin_norm=self.margin_norm)

    def discriminator_loss(
        self,
        anchor_emb: Tensor,
        positive_emb: Tensor,
        fake_emb: Tensor,
        *,
        positive_images: Tensor,
        fake_images: Tensor,
    ) -> Tensor:
        """MBGAN Eq. 1 with the detached margin of Eq. 4: :attr:`criterion`, a :class:`rankplug.TripletMetricDiscriminatorLoss`."""
        return self.criterion(
            anchor_emb, positive_emb, fake_emb, positive_images=positive_images, fake_images=fake_images
        )

    def generator_loss(self, positive_emb: Tensor, fake_emb: Tensor) -> Tensor:
        """MBGAN Eq. 2: :attr:`generator_criterion`, a :class:`rankplug.TripletMetricGeneratorLoss`."""
        return self.generator_criterion(positive_emb, fake_emb)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, embed_dim={self.embed_dim}, alpha={self.alpha}, "
            f"margin_norm={self.margin_norm!r}, reduction={self.reduction!r}"
        )


class AAMAuxClassifier(nn.Module):
    r"""Additive angular margin (ArcFace) auxiliary classifier for conditional GANs (maths §6).

    Label-geometry paper Eq. 7-8: the softmax classifier of an AC-GAN / StarGAN discriminator with the bias
    removed and both the class weights ``W_j`` and the feature ``phi(x)`` L2-normalised, so that
    ``cos(theta_j) = W_j^ . phi^``. The true class gets an additive angular margin ``m`` (radians):

    .. math::
        \text{logit}_y = s \cos(\theta_y + m), \qquad \text{logit}_j = s \cos\theta_j \ (j \ne y),
        \qquad L_{ang} = \mathrm{CE}(\text{logits}, y) \qquad \text{(Eq. 8)}

    It replaces softmax cross entropy in both classification terms: ``L^r_cls`` on real images trains D
    (Eq. 3) and ``L^f_cls`` on fakes with their target label trains G (Eq. 4).

    - :meth:`forward` returns the **margin-free** scaled cosines ``s cos(theta)``, shape ``(N, C)``, for
      prediction, logging and a host discriminator's unchanged forward. :meth:`loss` applies the margin to
      the target classes.
    - With ``m = 0`` the loss is cross entropy on ``s cos(theta)``; for ``0 < theta_y + m <= pi`` it grows
      with ``m``; scaling a feature or a weight row changes nothing.
    - Numerics: ``cos(theta + m)`` is computed as ``cos(theta) cos(m) - sin(theta) sin(m)`` with a floored
      ``sin(theta)``, never with ``arccos`` (infinite derivative at ``cos = +-1``). Where ``theta + m > pi``,
      ``cos(theta + m)`` would start rewarding the wrong class, so the logit falls back to ArcFace's
      ``cos(theta) - m sin(m)``. The head computes in float32 even under fp16/bf16 autocast, so gradients
      stay finite for features equal or opposite to a class weight.
    - ``multi_label=True`` is **rankplug's extension** for multi-attribute labels (StarGAN on CelebA), which
      the paper does not cover: attribute ``k`` is a binary choice between ``W_k`` and ``-W_k``, ArcFace's
      margin is applied to the angle from whichever one the target names, so the logit is
      ``s cos(theta_k + m)`` where the target is 1 and ``-s cos(pi - theta_k + m)`` where it is 0, and the
      per-sample loss is the sum over attributes of binary cross entropy. At ``m = 0`` it is BCE on
      ``s cos(theta)``; for ``m > 0`` every attribute's decision is harder in the right direction.
    - The defaults ``s = 16``, ``m = 0.3`` are argued and measured in ``docs/aam_defaults.md``.

    :meth:`from_conv` and :meth:`from_linear` build the head around an existing classifier layer and
    **reuse its weight Parameter**: the host's optimizer, its ``state_dict`` key (e.g. StarGAN's
    ``conv2.weight``) and checkpoints trained with the softmax head keep working.

    Args:
        in_features: feature values per sample (for a conv head: ``C * kH * kW``).
        num_classes: ``C``, the number of classes or attributes.
        scale: ``s > 0``.
        margin: ``m`` in radians, in ``[0, pi/2)``.
        multi_label: multi-hot attribute targets instead of one class per sample.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` for :meth:`loss`.
        weight: an existing ``nn.Parameter`` to reuse, shape ``(C, in_features)`` or ``(C, C_in, kH, kW)``.

    Shape:
        - features: ``(N, *)`` with ``in_features`` values per sample, e.g. StarGAN's ``(N, C, S, S)``.
        - Output of ``forward``: ``(N, num_classes)``.
        - targets: ``(N,)`` integer labels, or ``(N, num_classes)`` multi-hot floats when ``multi_label``.
        - Output of ``loss``: scalar, or ``(N,)`` with ``reduction="none"``; float32 (float64 for float64 input).

    Example:
        >>> head = AAMAuxClassifier(128, 10, scale=16.0, margin=0.3)
        >>> features = torch.randn(4, 128, requires_grad=True)
        >>> logits = head(features)            # s * cos(theta), no margin
        >>> logits.shape
        torch.Size([4, 10])
        >>> loss = head.loss(logits, torch.tensor([0, 3, 9, 3]))
        >>> loss.backward()
        >>> conv = torch.nn.Conv2d(64, 5, kernel_size=2, bias=False)     # StarGAN's conv2
        >>> head = AAMAuxClassifier.from_conv(conv, multi_label=True)
        >>> head.weight is conv.weight
        True
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        scale: float = DEFAULT_AAM_SCALE,
        margin: float = DEFAULT_AAM_MARGIN,
        multi_label: bool = False,
        reduction: Reduction = "mean",
        weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        # The head holds its loss, which owns the settings (no parameters, so no state_dict keys). Its forward
        # takes cosines, :meth:`cosine`; :meth:`loss` takes this head's logits ``s cos(theta)`` directly.
        self.criterion = AdditiveAngularMarginLoss(
            scale=scale, margin=margin, multi_label=multi_label, reduction=reduction
        )
        if weight is None:
            weight = nn.Parameter(torch.empty(self.num_classes, self.in_features))
            nn.init.xavier_uniform_(weight)
        else:
            if not isinstance(weight, nn.Parameter):
                raise TypeError(f"weight must be an nn.Parameter; got {type(weight).__name__}")
            expected = (self.num_classes, self.in_features)
            if weight.dim() < 2 or (weight.shape[0], math.prod(weight.shape[1:])) != expected:
                raise ValueError(
                    f"weight has shape {shape_str(weight)}; expected ({self.num_classes}, {self.in_features}) "
                    f"or ({self.num_classes}, C_in, kH, kW) with C_in * kH * kW = {self.in_features}"
                )
        self.weight = weight

    # Set these on the head, which checks them: :meth:`loss` trusts them.
    scale = _loss_setting(
        "scale",
        lambda value: check_positive(value, "scale"),
        "``s > 0``; validated when set, so a schedule that changes it cannot slip in a bad value.",
    )
    margin = _loss_setting(
        "margin",
        check_angular_margin,
        "``m`` in radians, in ``[0, pi/2)``; validated when set (e.g. by a margin warm-up).",
    )
    multi_label = _loss_setting("multi_label", bool, "Multi-hot attribute targets instead of one class per sample.")
    reduction = _loss_setting(
        "reduction",
        check_reduction,
        '``"mean"`` | ``"sum"`` | ``"none"`` for :meth:`loss`; validated when set, also after construction.',
    )

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        *,
        scale: float = DEFAULT_AAM_SCALE,
        margin: float = DEFAULT_AAM_MARGIN,
        multi_label: bool = False,
        reduction: Reduction = "mean",
    ) -> AAMAuxClassifier:
        """Build the head from a bias-free ``Conv2d`` whose kernel covers the whole feature map (StarGAN's
        ``conv2``), reusing its weight Parameter. Such a conv is a linear map of the flattened features."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d; got {type(conv).__name__}")
        if conv.bias is not None:
            raise ValueError("conv has a bias; expected bias=False (the AAM classifier's bias is 0, maths §6)")
        padding = conv.padding if isinstance(conv.padding, tuple) else ()
        dilated = any(d != 1 for d in conv.dilation)
        if conv.groups != 1 or any(p != 0 for p in padding) or conv.padding == "same" or dilated:
            raise ValueError(
                f"conv must have groups=1, padding=0 and dilation=1 so that it is a linear map of the flattened "
                f"features; got groups={conv.groups}, padding={conv.padding}, dilation={conv.dilation}"
            )
        in_features = conv.in_channels * math.prod(conv.kernel_size)
        return cls(
            in_features,
            conv.out_channels,
            scale=scale,
            margin=margin,
            multi_label=multi_label,
            reduction=reduction,
            weight=conv.weight,
        )

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        scale: float = DEFAULT_AAM_SCALE,
        margin: float = DEFAULT_AAM_MARGIN,
        multi_label: bool = False,
        reduction: Reduction = "mean",
    ) -> AAMAuxClassifier:
        """Build the head from a bias-free ``nn.Linear`` classifier, reusing its weight Parameter."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear; got {type(linear).__name__}")
        if linear.bias is not None:
            raise ValueError("linear has a bias; expected bias=False (the AAM classifier's bias is 0, maths §6)")
        return cls(
            linear.in_features,
            linear.out_features,
            scale=scale,
            margin=margin,
            multi_label=multi_label,
            reduction=reduction,
            weight=linear.weight,
        )

    def cosine(self, features: Tensor) -> Tensor:
        """``cos(theta)`` between each normalised feature and each normalised class weight, ``(N, C)`` (Eq. 7)."""
        flat = flat_features(features, "features", self.in_features)
        weight = self.weight
        check_same_device(**{"the head's weight": weight, "features": flat})
        # Under fp16/bf16 autocast the normalisation and the 1 - cos^2 of the margin lose too much precision
        # near cos = +-1, so the head always runs in (at least) float32.
        with torch.autocast(device_type=flat.device.type, enabled=False):
            dtype = torch.promote_types(as_float32(flat).dtype, as_float32(weight).dtype)
            features_hat = nnf.normalize(flat.to(dtype), dim=1)
            weight_hat = nnf.normalize(weight.flatten(1).to(dtype), dim=1)
            return nnf.linear(features_hat, weight_hat)

    def forward(self, features: Tensor) -> Tensor:
        return self.criterion.scale * self.cosine(features)

    def _check_logits(self, logits: Tensor) -> None:
        check_tensor(logits, "logits")
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits has shape {shape_str(logits)}; expected (N, {self.num_classes})")

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The AAM loss (Eq. 8) of ``logits = self(features)``, with the margin applied to the targets."""
        self._check_logits(logits)
        criterion = self.criterion  # the settings, validated when they were set
        return scaled_cosine_margin_loss(
            logits,
            targets,
            scale=criterion.scale,
            margin=criterion.margin,
            multi_label=criterion.multi_label,
            reduction=criterion.reduction,
        )

    def margin_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The margin-adjusted logits behind :meth:`loss`, ``(N, C)``."""
        self._check_logits(logits)
        return scaled_cosine_margin_logits(
            logits, targets, scale=self.scale, margin=self.margin, multi_label=self.multi_label
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, scale={self.scale}, "
            f"margin={self.margin}, multi_label={self.multi_label}"
        )
