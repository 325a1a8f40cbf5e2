"""The metric-based (triplet) discriminator of MBGAN, Eq. 1-4 (maths §5)."""

from __future__ import annotations

import torch
from torch import Tensor

from rankplug._validation import (
    Reduction,
    as_float32,
    check_batch,
    check_choice,
    check_nonnegative,
    check_reduction,
    check_same_batch,
    check_same_device,
    check_tensor,
    hinge,
    reduce,
    shape_str,
)

MARGIN_NORMS: tuple[str, ...] = ("mean", "sum")


def _embeddings(value: Tensor, name: str) -> Tensor:
    tensor = check_tensor(value, name)
    if tensor.dim() != 2:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected (N, K)")
    check_batch(tensor, name)
    if tensor.shape[1] == 0:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected (N, K) with K >= 1")
    return tensor


def _paired_embeddings(**embeddings: Tensor) -> tuple[Tensor, ...]:
    # Each checked as (N, K) in turn, then their sizes K compared; batch sizes and devices are the caller's.
    tensors = {name: _embeddings(value, name) for name, value in embeddings.items()}
    names = list(tensors)
    k = tensors[names[0]].shape[1]
    for name in names[1:]:
        if tensors[name].shape[1] != k:
            raise ValueError(
                f"{name} has embedding size {tensors[name].shape[1]} but {names[0]} has {k}; expected equal sizes"
            )
    return tuple(tensors.values())


def _distance(first: Tensor, second: Tensor) -> Tensor:
    # The plain norm has derivative diff / ||diff||, which is 0/0 = NaN where two embeddings coincide (a fake
    # embedding equal to the anchor). The double where gives the norm, and the subgradient 0 at coincidence.
    # It selects on squared == 0, never on squared > 0: a NaN fails both tests, and only the first lets it
    # through to the sqrt, so a NaN embedding gives a NaN distance instead of a finite 0.
    diff = as_float32(first) - as_float32(second)
    squared = diff.pow(2).sum(dim=1)
    coincide = squared == 0
    safe = torch.where(coincide, torch.ones_like(squared), squared)
    return torch.where(coincide, torch.zeros_like(squared), safe.sqrt())


def embedding_distance(first: Tensor, second: Tensor) -> Tensor:
    r"""Row-wise Euclidean distance between embeddings, MBGAN's ``d(a, b)`` (maths §5), with a finite gradient everywhere.

    .. math::
        d_k = \lVert \text{first}_k - \text{second}_k \rVert_2

    The plain norm's gradient is ``0/0 = NaN`` where two embeddings coincide; this form returns exactly the
    norm, with the subgradient 0 there. NaN and inf embeddings give NaN and inf distances. Computed in
    float32 for float16/bfloat16 input (float64 stays float64).

    Args:
        first: embeddings ``D(a)``.
        second: embeddings ``D(b)``, paired row by row with ``first`` (no broadcasting).

    Shape:
        - first, second: ``(N, K)``, identical shapes, on one device.
        - Output: ``(N,)``, float32 (float64 for float64 input).

    Example:
        >>> first = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
        >>> second = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
        >>> distance = embedding_distance(first, second)
        >>> distance
        tensor([5., 0.], grad_fn=<WhereBackward0>)
        >>> distance.sum().backward()
        >>> first.grad  # the subgradient 0 where the embeddings coincide
        tensor([[-0.6000, -0.8000],
                [ 0.0000,  0.0000]])
    """
    a = _embeddings(first, "first")
    b = _embeddings(second, "second")
    if a.shape != b.shape:
        raise ValueError(
            f"second has shape {shape_str(b)} but first has shape {shape_str(a)}; expected identical (N, K) shapes"
        )
    check_same_device(first=a, second=b)
    return _distance(a, b)


def data_dependent_margin(
    positive_images: Tensor,
    fake_images: Tensor,
    *,
    alpha: float = 20.0,
    margin_norm: str = "mean",
) -> Tensor:
    r"""MBGAN's data-dependent margin, Eq. 4, as a constant target (no gradient). See :class:`rankplug.TripletMetricDiscriminatorHead`.

    .. math::
        h_k = \alpha \, \lVert x_{j,k} - G(z_k) \rVert_1

    With ``margin_norm="mean"`` (default) the L1 norm is the per-pixel **mean** absolute difference, the
    reading under which the paper's stable ``alpha = 20`` makes sense; ``"sum"`` sums over pixels, as in
    LS-GAN's code (which paired it with a tiny weight, 2e-4). The result is detached, as in LS-GAN.

    Args:
        positive_images: real images ``x_j``.
        fake_images: generated images ``G(z)``, paired with ``positive_images``.
        alpha: ``alpha >= 0``.
        margin_norm: ``"mean"`` | ``"sum"``.

    Shape:
        - positive_images, fake_images: ``(N, *)``, identical shapes.
        - Output: ``(N,)``, with ``requires_grad=False``; float32 (float64 for float64 input).

    Example:
        >>> real = torch.zeros(2, 1, 2, 2)
        >>> fake = torch.ones(2, 1, 2, 2, requires_grad=True)
        >>> data_dependent_margin(real, fake, alpha=20.0)
        tensor([20., 20.])
    """
    alpha = check_nonnegative(alpha, "alpha")
    norm = check_choice(margin_norm, "margin_norm", MARGIN_NORMS)
    check_tensor(positive_images, "positive_images")
    check_tensor(fake_images, "fake_images")
    check_batch(positive_images, "positive_images")
    if positive_images.shape != fake_images.shape:
        raise ValueError(
            f"fake_images has shape {shape_str(fake_images)} but positive_images has shape "
            f"{shape_str(positive_images)}; expected identical shapes"
        )
    check_same_device(positive_images=positive_images, fake_images=fake_images)
    if positive_images[0].numel() == 0:
        raise ValueError(
            f"positive_images has shape {shape_str(positive_images)}, with no values per sample; expected (N, *) "
            "with at least one pixel"
        )
    with torch.no_grad():
        diff = (as_float32(positive_images) - as_float32(fake_images)).abs().reshape(positive_images.shape[0], -1)
        l1 = diff.mean(dim=1) if norm == "mean" else diff.sum(dim=1)
        return alpha * l1


def triplet_metric_discriminator_loss(
    anchor_emb: Tensor,
    positive_emb: Tensor,
    fake_emb: Tensor,
    *,
    positive_images: Tensor,
    fake_images: Tensor,
    alpha: float = 20.0,
    margin_norm: str = "mean",
    reduction: Reduction = "mean",
) -> Tensor:
    r"""MBGAN's triplet discriminator loss, Eq. 1 with the detached margin of Eq. 4. See :class:`rankplug.TripletMetricDiscriminatorHead`.

    .. math::
        \ell_k = \big[\, h(x_{j,k}, G(z_k)) + d(x_{i,k}, x_{j,k}) - d(x_{i,k}, G(z_k)) \,\big]_+,
        \qquad d(a, b) = \lVert D(a) - D(b) \rVert_2

    Args:
        anchor_emb: ``D(x_i)``, embeddings of the anchor real samples.
        positive_emb: ``D(x_j)``, embeddings of a second set of real samples.
        fake_emb: ``D(G(z))``.
        positive_images: the images ``x_j`` behind ``positive_emb`` (for the margin only).
        fake_images: the images ``G(z)`` behind ``fake_emb`` (for the margin only).
        alpha: margin weight ``alpha >= 0`` (paper: 20).
        margin_norm: ``"mean"`` (per-pixel mean, default) | ``"sum"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        - anchor_emb, positive_emb, fake_emb: ``(N, K)``.
        - positive_images, fake_images: ``(N, *)``, identical shapes.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``; computed in float32 (float64 stays float64),
          so float32 for float16/bfloat16 input.

    Example:
        >>> anchor = torch.tensor([[0.0, 0.0]], requires_grad=True)
        >>> positive = torch.tensor([[0.0, 1.0]], requires_grad=True)
        >>> fake = torch.tensor([[2.0, 0.0]], requires_grad=True)
        >>> x_j, g_z = torch.zeros(1, 4), torch.full((1, 4), 0.1)  # margin h = 20 * 0.1 = 2
        >>> loss = triplet_metric_discriminator_loss(
        ...     anchor, positive, fake, positive_images=x_j, fake_images=g_z, alpha=20.0)
        >>> loss  # [2 + 1 - 2]_+
        tensor(1., grad_fn=<MeanBackward0>)
        >>> loss.backward()
    """
    reduction = check_reduction(reduction)
    anchor, positive, fake = _paired_embeddings(anchor_emb=anchor_emb, positive_emb=positive_emb, fake_emb=fake_emb)
    margin = data_dependent_margin(positive_images, fake_images, alpha=alpha, margin_norm=margin_norm)
    check_same_batch(anchor_emb=anchor, positive_emb=positive, fake_emb=fake, positive_images=positive_images)
    check_same_device(anchor_emb=anchor, positive_emb=positive, fake_emb=fake, positive_images=positive_images)
    per_sample = hinge(margin + _distance(anchor, positive) - _distance(anchor, fake))
    return reduce(per_sample, reduction)


def triplet_metric_generator_loss(
    positive_emb: Tensor,
    fake_emb: Tensor,
    *,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""MBGAN's generator loss, Eq. 2. Full docs: :class:`rankplug.TripletMetricGeneratorLoss`.

    .. math::
        \ell_k = d(x_{j,k}, G(z_k)) = \lVert D(x_{j,k}) - D(G(z_k)) \rVert_2

    Args:
        positive_emb: ``D(x_j)``, embeddings of real samples.
        fake_emb: ``D(G(z))``, with a gradient into ``G``.
        reduction: the setting of :class:`rankplug.TripletMetricGeneratorLoss`.

    Shape:
        As for :class:`rankplug.TripletMetricGeneratorLoss`. Output: scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> positive = torch.tensor([[0.0, 0.0]])
        >>> fake = torch.tensor([[3.0, 4.0]], requires_grad=True)
        >>> loss = triplet_metric_generator_loss(positive, fake)
        >>> loss
        tensor(5., grad_fn=<MeanBackward0>)
        >>> loss.backward()
        >>> fake.grad
        tensor([[0.6000, 0.8000]])
    """
    reduction = check_reduction(reduction)
    positive, fake = _paired_embeddings(positive_emb=positive_emb, fake_emb=fake_emb)
    check_same_batch(positive_emb=positive, fake_emb=fake)
    check_same_device(positive_emb=positive, fake_emb=fake)
    return reduce(_distance(positive, fake), reduction)
