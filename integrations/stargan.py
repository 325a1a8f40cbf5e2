r"""StarGAN (yunjey/stargan) adapter: the angular-margin auxiliary classifier in place of ``D.conv2``.

StarGAN's discriminator ends in two heads over its last feature map ``h`` of shape ``(N, C, S, S)``: ``conv1``
scores real/fake and ``conv2 = Conv2d(C, c_dim, kernel_size=S, bias=False)`` classifies the domain. A conv whose
kernel covers the whole map is a linear map of the flattened features, so the label-geometry paper's ArcFace
classifier (Eq. 7-8, maths §6) is the cosine version of exactly that layer:

.. math::
    \text{out\_cls}_j = s \cos\theta_j = s\, \hat W_j \cdot \hat\phi(x), \qquad
    \ell = \mathrm{CE}\big(s [\cos(\theta_y + m), \cos\theta_{j \ne y}],\ y\big) \qquad \text{(Eq. 8)}

:func:`patch_solver` makes two changes to a built ``Solver`` and nothing else:

1. ``solver.D.conv2`` becomes a :class:`rankplug.AAMAuxClassifier` that **reuses conv2's weight Parameter**.
   ``D.forward`` is unchanged (it now returns ``out_cls = s cos(theta)``, still ``(N, c_dim)``), the Solver's
   Adam optimizer still holds the weight, the checkpoint key is still ``conv2.weight`` with the same shape, so
   ``{iter}-D.ckpt`` files trained with the softmax head load into the patched ``D`` and the other way round.
2. ``solver.classification_loss(logit, target, dataset)`` becomes :func:`classification_loss` with the head's
   ``scale`` and ``margin``. It replaces both classification terms: ``L^r_cls`` on real images trains D (Eq. 3)
   and ``L^f_cls`` on translated images with their target labels trains G (Eq. 4).

Datasets:

- **RaFD** (one expression per image, integer labels): the paper's single-label loss, cross entropy on the
  margin logits. With ``margin=0`` it is StarGAN's ``F.cross_entropy`` on ``s cos(theta)``.
- **CelebA** (five binary attributes, multi-hot float labels): **rankplug's multi-label extension**, which the
  paper does not cover. Attribute ``k`` is a two-way choice between ``W_k`` and ``-W_k``; the margin is added to
  the angle from whichever side the target names, and the per-sample loss is the sum of the attributes' binary
  cross entropies, divided by ``N`` like StarGAN's ``BCE(size_average=False) / N``. With ``margin=0`` it is
  StarGAN's loss on ``s cos(theta)``; with ``margin > 0`` every attribute's decision is harder.
- **Both** (``train_multi``): StarGAN slices ``out_cls`` to the CelebA or RaFD columns before calling the loss;
  :func:`classification_loss` takes any number of columns, so the sliced logits work unchanged.

Nothing here imports StarGAN: the adapter only touches ``solver.D``, ``solver.dataset`` and the
``classification_loss`` attribute, so it works with the upstream repository, forks and stand-ins alike.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from rankplug._validation import check_positive
from rankplug.functional import additive_angular_margin_loss
from rankplug.heads import DEFAULT_AAM_MARGIN, DEFAULT_AAM_SCALE, AAMAuxClassifier

__all__ = ["DATASETS", "classification_loss", "install_aam_head", "patch_solver", "unwrap_discriminator"]

#: The ``dataset`` names StarGAN passes to ``classification_loss``, and whether each is multi-label.
DATASETS: dict[str, bool] = {"CelebA": True, "RaFD": False}

# Wrappers whose real network sits in ``.module``; their state_dict keys gain a "module." prefix, which is the
# host's concern, but the head has to be installed on the wrapped network so that every replica sees it.
# Not annotated as tuple[type[nn.Module], ...]: the exact types let isinstance narrow to them, whose .module is typed.
_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def unwrap_discriminator(discriminator: nn.Module) -> nn.Module:
    """The network inside ``DataParallel`` / ``DistributedDataParallel`` wrappers (any depth), else itself."""
    if not isinstance(discriminator, nn.Module):
        raise TypeError(f"discriminator must be a torch.nn.Module; got {type(discriminator).__name__}")
    module = discriminator
    while isinstance(module, _WRAPPERS):
        module = module.module
    return module


def install_aam_head(
    discriminator: nn.Module,
    *,
    scale: float = DEFAULT_AAM_SCALE,
    margin: float = DEFAULT_AAM_MARGIN,
    multi_label: bool = False,
) -> AAMAuxClassifier:
    """Replace StarGAN's ``discriminator.conv2`` by an :class:`rankplug.AAMAuxClassifier` reusing its weight.

    ``conv2`` must be the bias-free, unpadded ``Conv2d`` whose kernel covers the last feature map (StarGAN's
    class head); a ``DataParallel`` / ``DistributedDataParallel`` wrapper is looked through. Installing on a
    ``D`` that already carries an AAM head builds a new head with the new settings around the same Parameter,
    so calling it twice is harmless.

    Args:
        discriminator: StarGAN's ``Discriminator`` (or a wrapper around it).
        scale: ``s > 0``.
        margin: ``m`` in radians, in ``[0, pi/2)``.
        multi_label: stored on the head for its own :meth:`~rankplug.AAMAuxClassifier.loss`; the Solver's
            loss (:func:`classification_loss`) picks single- or multi-label from the dataset name instead.

    Returns:
        The installed head, ``unwrap_discriminator(discriminator).conv2``.

    Raises:
        TypeError: ``discriminator`` is not a module, has no ``conv2``, or ``conv2`` is not a ``Conv2d``.
        ValueError: ``conv2`` has a bias, padding or groups (it would not be StarGAN's linear class head), or a
            setting is out of range.
    """
    network = unwrap_discriminator(discriminator)
    conv = getattr(network, "conv2", None)
    name = type(network).__name__
    if conv is None:
        raise TypeError(
            f"discriminator ({name}) has no attribute 'conv2'; expected StarGAN's Discriminator, whose class head "
            f"is conv2 = Conv2d(C, c_dim, kernel_size=S, bias=False)"
        )
    if isinstance(conv, AAMAuxClassifier):
        head = AAMAuxClassifier(
            conv.in_features,
            conv.num_classes,
            scale=scale,
            margin=margin,
            multi_label=multi_label,
            weight=conv.weight,
        )
    elif isinstance(conv, nn.Conv2d):
        if conv.bias is not None:
            raise ValueError(
                f"{name}.conv2 has a bias; expected StarGAN's conv2 with bias=False (the AAM classifier's bias is "
                f"0, maths §6), so there is no bias Parameter to drop from the optimizer or the checkpoint"
            )
        head = AAMAuxClassifier.from_conv(conv, scale=scale, margin=margin, multi_label=multi_label)
    else:
        raise TypeError(f"{name}.conv2 must be a torch.nn.Conv2d (StarGAN's class head); got {type(conv).__name__}")
    # The Parameter object is shared, so registering the head under the same attribute name keeps the
    # state_dict key "conv2.weight" and the optimizer's reference valid.
    network.conv2 = head
    return head


def classification_loss(
    logit: Tensor,
    target: Tensor,
    dataset: str = "CelebA",
    *,
    scale: float = DEFAULT_AAM_SCALE,
    margin: float = DEFAULT_AAM_MARGIN,
) -> Tensor:
    r"""StarGAN's ``classification_loss`` with the additive angular margin, label-geometry paper Eq. 7-8 (maths §6).

    ``logit`` is what the patched ``D`` returns as ``out_cls``: the margin-free ``s cos(theta)``. The loss divides
    by ``s`` to recover ``cos(theta)`` and adds the margin to the target side:

    .. math::
        \text{RaFD:}\quad \ell = -\log \frac{e^{s\cos(\theta_y + m)}}{e^{s\cos(\theta_y + m)}
        + \sum_{j \ne y} e^{s\cos\theta_j}}, \qquad
        \text{CelebA:}\quad \ell = \sum_k \mathrm{BCE}\big(s\,\psi_k,\ t_k\big)

    with ``psi_k = cos(theta_k + m)`` where ``t_k = 1`` and ``-cos(pi - theta_k + m)`` where ``t_k = 0``
    (rankplug's multi-label extension). Both are averaged over the batch, so CelebA is StarGAN's
    ``BCE-sum / N`` and, at ``margin = 0``, both equal StarGAN's own losses on ``s cos(theta)``.

    Args:
        logit: ``s cos(theta)`` from the patched ``D`` (all columns, or the ``train_multi`` slice).
        target: RaFD: integer labels; CelebA: multi-hot float attributes (what StarGAN's loaders yield).
        dataset: ``"CelebA"`` (multi-label) or ``"RaFD"`` (single-label).
        scale: the head's ``s > 0``.
        margin: the head's ``m`` in radians, in ``[0, pi/2)``.

    Shape:
        - logit: ``(N, C)``.
        - target: ``(N,)`` for RaFD, ``(N, C)`` for CelebA.
        - Output: scalar.

    Raises:
        ValueError: unknown ``dataset`` (StarGAN would silently return ``None``), or bad shapes / labels.
        TypeError: labels of the wrong dtype (e.g. integer labels for CelebA).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from rankplug.integrations.stargan import classification_loss, install_aam_head
        >>> class TinyD(nn.Module):  # the shape of StarGAN's Discriminator: 16x16 images, one strided conv
        ...     def __init__(self, c_dim: int) -> None:
        ...         super().__init__()
        ...         self.main = nn.Sequential(nn.Conv2d(3, 8, 4, stride=2, padding=1), nn.LeakyReLU(0.01))
        ...         self.conv1 = nn.Conv2d(8, 1, 3, padding=1, bias=False)
        ...         self.conv2 = nn.Conv2d(8, c_dim, kernel_size=8, bias=False)
        ...     def forward(self, x):
        ...         h = self.main(x)
        ...         cls = self.conv2(h)
        ...         return self.conv1(h), cls.view(cls.size(0), cls.size(1))
        >>> D = TinyD(c_dim=5)
        >>> weight = D.conv2.weight
        >>> head = install_aam_head(D, scale=16.0, margin=0.3, multi_label=True)
        >>> D.conv2.weight is weight, list(D.state_dict()) == ['main.0.weight', 'main.0.bias', 'conv1.weight',
        ...                                                    'conv2.weight']
        (True, True)
        >>> out_src, out_cls = D(torch.randn(4, 3, 16, 16))
        >>> out_src.shape, out_cls.shape
        (torch.Size([4, 1, 8, 8]), torch.Size([4, 5]))
        >>> attrs = torch.tensor([[1.0, 0, 0, 1, 1], [0, 1, 0, 0, 1], [0, 0, 1, 1, 0], [1, 0, 0, 0, 0]])
        >>> loss = classification_loss(out_cls, attrs, "CelebA", scale=head.scale, margin=head.margin)
        >>> loss.backward()
        >>> bool(torch.isfinite(weight.grad).all())
        True
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of 'CelebA' (multi-label) or 'RaFD' (single-label); got {dataset!r}")
    if not isinstance(logit, Tensor):
        raise TypeError(f"logit must be a torch.Tensor; got {type(logit).__name__}")
    scale = check_positive(scale, "scale")
    # The functional loss validates the cosine's shape, the labels and the margin, naming the argument.
    return additive_angular_margin_loss(
        logit / scale, target, scale=scale, margin=margin, multi_label=DATASETS[dataset], reduction="mean"
    )


def patch_solver(
    solver: object,
    *,
    scale: float = DEFAULT_AAM_SCALE,
    margin: float = DEFAULT_AAM_MARGIN,
) -> AAMAuxClassifier:
    """Switch a built StarGAN ``Solver`` to the angular-margin classifier (label-geometry paper Eq. 7-8, maths §6).

    Call it right after ``solver = Solver(celeba_loader, rafd_loader, config)`` and before ``solver.train()``,
    ``train_multi()`` or ``test()``; nothing else in StarGAN changes. It installs the head in place of
    ``solver.D.conv2`` (see :func:`install_aam_head`; a ``DataParallel`` ``solver.D`` is looked through) and
    sets ``solver.classification_loss`` on the instance to :func:`classification_loss` with the head's settings,
    read at every call, so changing ``head.margin`` later (e.g. a margin warm-up) takes effect.

    Args:
        solver: a StarGAN ``Solver`` whose ``build_model()`` has run (``Solver.__init__`` does that).
        scale: ``s > 0``.
        margin: ``m`` in radians, in ``[0, pi/2)``.

    Returns:
        The installed :class:`rankplug.AAMAuxClassifier`.

    Raises:
        TypeError: ``solver`` has no ``D`` (model not built), or ``D`` is not StarGAN's discriminator.
        ValueError: ``D.conv2`` has a bias, or a setting is out of range.
    """
    discriminator = getattr(solver, "D", None)
    if not isinstance(discriminator, nn.Module):
        raise TypeError(
            f"solver ({type(solver).__name__}) has no discriminator module 'D'; expected a StarGAN Solver after "
            f"build_model() (Solver.__init__ calls it), got D = {type(discriminator).__name__}"
        )
    multi_label = DATASETS.get(getattr(solver, "dataset", "CelebA"), True)
    head = install_aam_head(discriminator, scale=scale, margin=margin, multi_label=multi_label)
    solver.classification_loss = _bound_loss(head)  # type: ignore[attr-defined]
    return head


def _bound_loss(head: AAMAuxClassifier) -> Callable[..., Tensor]:
    def aam_classification_loss(logit: Tensor, target: Tensor, dataset: str = "CelebA") -> Tensor:
        return classification_loss(logit, target, dataset, scale=head.scale, margin=head.margin)

    aam_classification_loss.__doc__ = (
        "StarGAN's classification_loss(logit, target, dataset) with the installed AAM head's scale and margin; "
        "see rankplug.integrations.stargan.classification_loss."
    )
    return aam_classification_loss
