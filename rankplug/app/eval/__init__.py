"""Evaluation the papers propose (maths §7): image completion scored by PSNR and SSIM, offline metrics for
the embedded digits (digits-FID, GAN-train, GAN-test) from a small reference classifier, and, from a locally
available FID Inception weights file, the paper metrics: FID, Inception Score, KID and precision/recall through
torch-fidelity (:func:`fidelity_metrics`, with reference features cached by content hash).

kornia (for :func:`psnr` and :func:`ssim`), scikit-learn (for the digits), torch-fidelity and torchvision (for
the Inception metrics) are optional dependencies: ``pip install "rankplug[eval]"``. Importing this package imports
none of them.
"""

from rankplug.app.eval.completion import (
    COVERAGES,
    Completion,
    center_mask,
    complete_images,
    completion_table,
    distinct_coverages,
    format_table,
    hole_psnr,
    hole_side,
    psnr,
    ssim,
)
from rankplug.app.eval.digits import (
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
from rankplug.app.eval.fidelity import (
    INCEPTION_WEIGHTS_ENV,
    METRICS,
    FidelityExtractor,
    InceptionWeightsNotFound,
    fid_from_features,
    fidelity_metrics,
    fidelity_weights,
    inception_score,
    kernel_inception_distance,
    paper_metrics,
    precision_recall,
    read_inception_weights,
)
from rankplug.app.eval.reference import Reference, ReferenceSetError, load_reference, reference_key

__all__ = [
    "COVERAGES",
    "INCEPTION_WEIGHTS_ENV",
    "METRICS",
    "Completion",
    "DigitsClassifier",
    "DigitsSplit",
    "FidelityExtractor",
    "InceptionWeightsNotFound",
    "Reference",
    "ReferenceSetError",
    "center_mask",
    "complete_images",
    "completion_table",
    "digits_fid",
    "digits_split",
    "distinct_coverages",
    "fid_from_features",
    "fidelity_metrics",
    "fidelity_weights",
    "format_table",
    "frechet_distance",
    "gan_test",
    "gan_train",
    "hole_psnr",
    "hole_side",
    "inception_score",
    "kernel_inception_distance",
    "load_reference",
    "paper_metrics",
    "precision_recall",
    "psnr",
    "read_inception_weights",
    "reference_classifier",
    "reference_key",
    "ssim",
    "train_classifier",
]
