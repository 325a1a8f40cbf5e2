"""Image-quality scores of completed images: PSNR, PSNR over the hidden region, and SSIM (GoGAN Tables 2-5,
RankGAN Sec. 5), through kornia, an optional dependency (the ``eval`` extra) imported only when a score is taken."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rankplug._validation import check_batch, check_int_at_least, check_positive, check_tensor, shape_str

_EVAL_EXTRA = 'pip install "rankplug[eval]"'


def _import_kornia_metrics() -> Any:
    try:
        import kornia.metrics
    except ImportError as error:
        raise ImportError(
            f"rankplug.app.eval.psnr and rankplug.app.eval.ssim need kornia, an optional dependency; install it with {_EVAL_EXTRA}"
        ) from error
    return kornia.metrics


def check_images(images: object, name: str = "images") -> Tensor:
    tensor = check_tensor(images, name)
    if tensor.dim() != 4:
        raise ValueError(f"{name} has shape {shape_str(tensor)}; expected (N, C, H, W)")
    check_batch(tensor, name)
    return tensor


def check_mask(mask: object, images: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor; got {type(mask).__name__}")
    n, c, h, w = images.shape
    expected = f"(1 or {n}, 1 or {c}, {h}, {w}) to match images of shape {shape_str(images)}"
    if mask.dim() != 4:
        raise ValueError(f"mask has shape {shape_str(mask)}; expected {expected}")
    mn, mc, mh, mw = mask.shape
    if mn not in (1, n) or mc not in (1, c) or (mh, mw) != (h, w):
        raise ValueError(f"mask has shape {shape_str(mask)}; expected {expected}")
    if mask.dtype != torch.bool:
        if mask.is_complex():
            raise TypeError(f"mask must be a bool, integer or real floating-point tensor; got {mask.dtype}")
        binary = (mask == 0) | (mask == 1)
        if not bool(binary.all()):
            bad = mask[~binary].flatten()[0].item()
            raise ValueError(f"mask must hold only 0 (hole) and 1 (known pixel); got the value {bad}")
    return mask.to(device=images.device, dtype=torch.bool)


def _check_pair(prediction: object, target: object, *, four_d: bool) -> tuple[Tensor, Tensor]:
    pred = check_tensor(prediction, "prediction")
    targ = check_tensor(target, "target")
    if four_d:
        check_images(pred, "prediction")
    else:
        check_batch(pred, "prediction")
    if pred.shape != targ.shape:
        raise ValueError(
            f"target has shape {shape_str(targ)} but prediction has shape {shape_str(pred)}; expected identical shapes"
        )
    return pred, targ


def psnr(prediction: Tensor, target: Tensor, *, data_range: float = 2.0) -> Tensor:
    r"""Peak signal-to-noise ratio of each image, in dB, via ``kornia.metrics.psnr`` (GoGAN Tables 2-5).

    .. math::
        \text{PSNR}_k = 10 \log_{10} \frac{R^2}{\frac{1}{CHW} \sum_{c,i,j} (\hat y_{kcij} - y_{kcij})^2}

    ``R`` is ``data_range`` (2 for images in ``[-1, 1]``, the GAN convention; 1 for ``[0, 1]``). kornia pools one
    MSE over the whole tensor it is given, so it is called once per image. An exact match gives ``inf``.

    Args:
        prediction: completed images.
        target: ground-truth images.
        data_range: ``R > 0``, the span of pixel values.

    Shape:
        - prediction, target: ``(N, *)``, identical shapes.
        - Output: ``(N,)``.

    Example:
        >>> from rankplug.app.eval import psnr
        >>> target = torch.zeros(2, 3, 8, 8)
        >>> psnr(target + 0.2, target).tolist()  # 10 * log10(2**2 / 0.2**2) = 20 dB
        [20.0, 20.0]
    """
    pred, targ = _check_pair(prediction, target, four_d=False)
    r = check_positive(data_range, "data_range")
    metrics = _import_kornia_metrics()
    return torch.stack([metrics.psnr(p, t, r) for p, t in zip(pred, targ)])


def hole_psnr(prediction: Tensor, target: Tensor, mask: Tensor, *, data_range: float = 2.0) -> Tensor:
    r"""PSNR of each image over the hole only (``M = 0``), in dB.

    .. math::
        \text{PSNR}^{\text{hole}}_k = 10 \log_{10} \frac{R^2}{\sum (1 - M) \odot (\hat y_k - y_k)^2 / \sum (1 - M)}

    The sums run over channels and pixels, with ``M`` broadcast to the image shape. The whole-image
    :func:`psnr` of a completion counts the copied known pixels as exact, so it rises with the known fraction;
    this one measures the generated pixels alone. An image with no hole gives ``nan``.

    Args:
        prediction: completed images.
        target: ground-truth images.
        mask: ``M``, 1 for known pixels, 0 for the hole.
        data_range: ``R > 0``, the span of pixel values.

    Shape:
        - prediction, target: ``(N, C, H, W)``.
        - mask: ``(1 or N, 1 or C, H, W)``.
        - Output: ``(N,)``.

    Example:
        >>> from rankplug.app.eval import center_mask, hole_psnr
        >>> target = torch.zeros(1, 1, 8, 8)
        >>> mask = center_mask(8, 0.25)
        >>> hole_psnr(target + 0.2 * (1 - mask), target, mask).tolist()
        [20.0]
    """
    pred, targ = _check_pair(prediction, target, four_d=True)
    r = check_positive(data_range, "data_range")
    hole = (~check_mask(mask, pred)).expand_as(pred).to(pred.dtype)
    squared = hole * (pred - targ) ** 2
    mse = squared.flatten(1).sum(dim=1) / hole.flatten(1).sum(dim=1)
    return 10.0 * torch.log10(r**2 / mse)


def ssim(prediction: Tensor, target: Tensor, *, data_range: float = 2.0, window_size: int = 11) -> Tensor:
    r"""Mean structural similarity of each image, via ``kornia.metrics.ssim`` (GoGAN Tables 2-5).

    .. math::
        \text{SSIM}_k = \frac{1}{CHW} \sum_{c,i,j}
        \frac{(2\mu_{\hat y}\mu_y + c_1)(2\sigma_{\hat y y} + c_2)}{(\mu_{\hat y}^2 + \mu_y^2 + c_1)(\sigma_{\hat y}^2 + \sigma_y^2 + c_2)},
        \qquad c_1 = (0.01 R)^2, \; c_2 = (0.03 R)^2

    Local statistics use kornia's Gaussian window (``sigma = 1.5``, ``window_size`` taps) with reflect padding
    (``padding="same"``), and ``eps=0`` so that identical images score exactly 1, as in scikit-image. The map is
    averaged over channels and pixels of each image. Reflect padding needs ``H`` and ``W`` larger than
    ``window_size // 2``.

    Args:
        prediction: completed images.
        target: ground-truth images.
        data_range: ``R > 0``, the span of pixel values (2 for ``[-1, 1]``).
        window_size: odd number of taps of the Gaussian window, ``>= 1``.

    Shape:
        - prediction, target: ``(N, C, H, W)``, identical shapes.
        - Output: ``(N,)``.

    Example:
        >>> from rankplug.app.eval import ssim
        >>> images = torch.rand(2, 3, 16, 16) * 2 - 1
        >>> ssim(images, images)
        tensor([1., 1.])
    """
    pred, targ = _check_pair(prediction, target, four_d=True)
    r = check_positive(data_range, "data_range")
    window = check_int_at_least(window_size, "window_size", 1)
    if window % 2 == 0:
        raise ValueError(f"window_size must be odd; got {window}")
    h, w = pred.shape[-2:]
    if min(h, w) <= window // 2:
        raise ValueError(
            f"prediction has shape {shape_str(pred)}; reflect padding for window_size={window} needs H and W "
            f"> {window // 2}, so pass a smaller window_size"
        )
    metrics = _import_kornia_metrics()
    return metrics.ssim(pred, targ, window, max_val=r, eps=0.0).flatten(1).mean(dim=1)
