r"""RankGAN's encoder (Sec. 3.3): latents ``z ~ N(mu(x), sigma(x))`` of real images, and stage 0, the encoder's
VAE pretraining with the generator as its decoder."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from rankplug._validation import check_nonnegative, check_positive_int
from rankplug.stages.frozen import freeze_in_place


def real_images(batch: Any) -> Tensor:
    """The image tensor of a batch that may be ``x`` or ``(x, y, ...)`` as data loaders yield."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(f"a batch must be a Tensor or a (Tensor, ...) tuple; got {type(batch).__name__}")


def encode(encoder: nn.Module, real: Tensor, latent_shape: tuple[int, ...] | None = None) -> Tensor:
    r"""``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``, from the encoder's ``(mu, logvar)`` of ``real``.

    Shape:
        - real: ``(n, *)``. Output: ``(n, *latent_shape)`` (the encoder's shape when ``latent_shape`` is ``None``).

    Example:
        >>> class Encoder(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x, torch.full_like(x, -float("inf"))   # sigma = 0: z = mu
        >>> encode(Encoder(), torch.ones(2, 3), (3, 1))
        tensor([[[1.],
                 [1.],
                 [1.]],
        <BLANKLINE>
                [[1.],
                 [1.],
                 [1.]]])
    """
    with torch.no_grad():
        output = encoder(real)
    if not (isinstance(output, (tuple, list)) and len(output) == 2):
        raise TypeError("the encoder must return (mu, logvar); got " + type(output).__name__)
    mu, logvar = output
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    return z.reshape(real.shape[0], *latent_shape) if latent_shape is not None else z


def pretrain_encoder(
    encoder: nn.Module,
    generator: nn.Module,
    batches: Iterable[Any],
    *,
    latent_shape: tuple[int, ...] | None,
    device: torch.device,
    epochs: int = 1,
    lr: float = 1e-3,
    kl_weight: float = 1.0,
    progress: bool = False,
) -> list[float]:
    r"""Stage 0 of RankGAN (Sec. 3.3): train the encoder with the live generator as the VAE decoder.

    .. math::
        L = \underbrace{\tfrac1N \textstyle\sum_k \lVert G(z_k) - x_k \rVert_2^2}_{\text{reconstruction}}
        + \beta \, \underbrace{\tfrac1N \textstyle\sum_k \tfrac12 \sum_d
          \big(\mu_{kd}^2 + \sigma_{kd}^2 - \log \sigma_{kd}^2 - 1\big)}_{KL(q(z|x) \,\|\, N(0, I))},
        \qquad z_k = \mu_k + \sigma_k \epsilon_k

    Both terms are summed over pixels / latent dimensions and averaged over the batch; ``beta`` is
    ``kl_weight`` (1 gives the standard ELBO). Adam with ``lr`` trains encoder and generator together;
    afterwards the encoder is frozen (eval mode, no gradients) and the generator is G_1's starting point.
    Returns the mean loss per epoch.

    Shape:
        - batches: ``x`` or ``(x, y, ...)`` with ``x`` ``(N, *image_shape)``, moved to ``device``. The encoder
          returns ``(mu, logvar)``, each ``(N, *)``; ``z`` is reshaped to ``(N, *latent_shape)`` when given.

    Example:
        >>> class Encoder(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = torch.nn.Linear(6, 8)
        ...     def forward(self, x):
        ...         return self.net(x).chunk(2, dim=1)
        >>> encoder, generator = Encoder(), torch.nn.Linear(4, 6)
        >>> batches = [torch.randn(8, 6) for _ in range(4)]
        >>> losses = pretrain_encoder(encoder, generator, batches, latent_shape=(4,), device=torch.device("cpu"))
        >>> len(losses), encoder.training, encoder.net.weight.requires_grad
        (1, False, False)
    """
    epochs = check_positive_int(epochs, "epochs")
    beta = check_nonnegative(kl_weight, "kl_weight")
    params = list(encoder.parameters()) + list(generator.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    encoder.train()
    generator.train()
    losses = []
    for _ in _progress(range(epochs), progress, "VAE"):
        total, count = 0.0, 0
        for batch in batches:
            x = real_images(batch).to(device)
            mu, logvar = encoder(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            if latent_shape is not None:
                z = z.reshape(x.shape[0], *latent_shape)
            recon = (generator(z) - x).pow(2).flatten(1).sum(1).mean()
            kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).flatten(1).sum(1).mean()
            loss = recon + beta * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * x.shape[0], count + x.shape[0]
        losses.append(total / max(count, 1))
    freeze_in_place(encoder)
    return losses


def _progress(iterable: Iterable[Any], enabled: bool, description: str) -> Iterable[Any]:
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=description)


__all__ = ["encode", "pretrain_encoder", "real_images"]
