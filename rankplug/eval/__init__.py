"""Evaluation the papers propose (MATH §7): image completion scored by PSNR and SSIM.

kornia, used by :func:`psnr` and :func:`ssim`, is an optional dependency: ``pip install "rankplug[eval]"``.
Importing this package does not import kornia.
"""

from rankplug.eval.completion import (
    COVERAGES,
    Completion,
    center_mask,
    complete_images,
    completion_table,
    format_table,
    hole_psnr,
    hole_side,
    psnr,
    ssim,
)

__all__ = [
    "COVERAGES",
    "Completion",
    "center_mask",
    "complete_images",
    "completion_table",
    "format_table",
    "hole_psnr",
    "hole_side",
    "psnr",
    "ssim",
]
