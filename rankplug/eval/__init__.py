"""Evaluation the papers propose (MATH §7): image completion scored by PSNR and SSIM, and offline metrics for
the embedded digits (digits-FID, GAN-train, GAN-test) from a small reference classifier.

kornia (for :func:`psnr` and :func:`ssim`) and scikit-learn (for the digits) are optional dependencies:
``pip install "rankplug[eval]"``. Importing this package imports neither.
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
from rankplug.eval.digits import (
    DigitsClassifier,
    DigitsSplit,
    digits_fid,
    digits_split,
    frechet_distance,
    gan_test,
    gan_train,
    reference_classifier,
    train_classifier,
)

__all__ = [
    "COVERAGES",
    "Completion",
    "DigitsClassifier",
    "DigitsSplit",
    "center_mask",
    "complete_images",
    "completion_table",
    "digits_fid",
    "digits_split",
    "format_table",
    "frechet_distance",
    "gan_test",
    "gan_train",
    "hole_psnr",
    "hole_side",
    "psnr",
    "reference_classifier",
    "ssim",
    "train_classifier",
]
