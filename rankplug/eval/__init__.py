"""Evaluation the papers propose (MATH §7): image completion scored by PSNR and SSIM, offline metrics for
the embedded digits (digits-FID, GAN-train, GAN-test) from a small reference classifier, and FID / Inception
Score with the FID Inception network through pytorch-gan-metrics, from locally available weights.

kornia (for :func:`psnr` and :func:`ssim`), scikit-learn (for the digits), pytorch-gan-metrics and torchvision
(for :func:`inception_metrics`) are optional dependencies: ``pip install "rankplug[eval]"``. Importing this
package imports none of them.
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
from rankplug.eval.inception import (
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_FILENAME,
    INCEPTION_WEIGHTS_URL,
    InceptionStats,
    InceptionWeightsNotFound,
    find_inception_weights,
    inception_metrics,
    inception_statistics,
)

__all__ = [
    "COVERAGES",
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_URL",
    "Completion",
    "DigitsClassifier",
    "DigitsSplit",
    "InceptionStats",
    "InceptionWeightsNotFound",
    "center_mask",
    "complete_images",
    "completion_table",
    "digits_fid",
    "digits_split",
    "find_inception_weights",
    "format_table",
    "frechet_distance",
    "gan_test",
    "gan_train",
    "hole_psnr",
    "hole_side",
    "inception_metrics",
    "inception_statistics",
    "psnr",
    "reference_classifier",
    "ssim",
    "train_classifier",
]
