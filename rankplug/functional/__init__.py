"""Pure functions, one per equation. Each has a module twin exported from :mod:`rankplug`.

Where each equation lives:

- ``margin``: MarginGAN's margin loss (RankGAN Eq. 3, GoGAN Eq. 2), the symmetric hinge, the WGAN generator loss.
- ``ranking``: RankGAN's stage ranking loss and clamp (Eq. 4, 6), GoGAN's ranking loss (Eq. 3-5).
- ``penalty``: the gradient penalty (RankGAN Eq. 5).
- ``metric``: MBGAN's triplet losses and data-dependent margin (Eq. 1, 2, 4).
- ``angular``: the additive angular margin classifier loss (label-geometry paper Eq. 8).
"""

from rankplug.functional.angular import (
    additive_angular_margin_logits,
    additive_angular_margin_loss,
    cosine_with_margin,
)
from rankplug.functional.margin import hinge_margin_loss, symmetric_hinge_loss, wgan_generator_loss
from rankplug.functional.metric import (
    data_dependent_margin,
    embedding_distance,
    triplet_metric_discriminator_loss,
    triplet_metric_generator_loss,
)
from rankplug.functional.penalty import gradient_penalty
from rankplug.functional.ranking import (
    clamp_penalty,
    gogan_rank_loss,
    stage_rank_generator_loss,
    stage_rank_loss,
)

__all__ = [
    "additive_angular_margin_logits",
    "additive_angular_margin_loss",
    "clamp_penalty",
    "cosine_with_margin",
    "data_dependent_margin",
    "embedding_distance",
    "gogan_rank_loss",
    "gradient_penalty",
    "hinge_margin_loss",
    "stage_rank_generator_loss",
    "stage_rank_loss",
    "symmetric_hinge_loss",
    "triplet_metric_discriminator_loss",
    "triplet_metric_generator_loss",
    "wgan_generator_loss",
]
