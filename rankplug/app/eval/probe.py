"""MBGAN's evaluation of a critic as a feature extractor: a linear SVM on its features (MBGAN Sec. 5, Table 1).

The critic's convolutional features serve as a representation, as in DCGAN's CIFAR-10 experiment which MBGAN
follows: every activation of the critic's trunk (after each LeakyReLU) is max-pooled to at most a ``grid x grid``
map, flattened and concatenated; a linear L2-SVM (squared hinge, ``sklearn.svm.LinearSVC``) is fitted on the
features of labelled training images, with ``C`` chosen by 5-fold cross-validation on those images alone, and
scored on held-out images. The accuracy says how linearly separable the classes are in the critic's features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rankplug._validation import check_int_at_least


def critic_features(critic: nn.Module, images: Tensor, *, grid: int = 4, batch_size: int = 256) -> Tensor:
    """The concatenated, max-pooled activations of the critic's trunk for ``images``.

    Args:
        critic: a :class:`rankplug.app.training.Discriminator` (or any module with a ``trunk.body`` ``nn.Sequential``
            of convolution, optional BatchNorm and LeakyReLU layers); put in eval mode for the pass.
        images: ``(N, C, S, S)`` in the critic's input range.
        grid: each activation map is max-pooled to ``min(grid, H) x min(grid, W)``.
        batch_size: images per forward pass.

    Returns:
        ``(N, F)`` float32 features on the CPU.

    Example:
        >>> from rankplug.app.training import Discriminator
        >>> critic = Discriminator(width=4, size=8)
        >>> critic_features(critic, torch.zeros(3, 1, 8, 8)).shape
        torch.Size([3, 64])
    """
    body = getattr(getattr(critic, "trunk", None), "body", None)
    if not isinstance(body, nn.Sequential):
        raise TypeError(f"critic must have a trunk.body nn.Sequential (rankplug's Discriminator); got {type(critic)}")
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (N, C, S, S) tensor; got {getattr(images, 'shape', type(images))}")
    grid = check_int_at_least(grid, "grid", 1)
    batch_size = check_int_at_least(batch_size, "batch_size", 1)
    was_training = critic.training
    critic.eval()
    device = next(critic.parameters()).device
    out = []
    try:
        with torch.no_grad():
            for chunk in images.split(batch_size):
                h, pooled = chunk.to(device), []
                for layer in body:
                    h = layer(h)
                    if isinstance(layer, nn.LeakyReLU):
                        size = (min(grid, h.shape[-2]), min(grid, h.shape[-1]))
                        pooled.append(nn.functional.adaptive_max_pool2d(h, size).flatten(1))
                out.append(torch.cat(pooled, 1).float().cpu())
    finally:
        critic.train(was_training)
    return torch.cat(out)


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    costs: Sequence[float] = (0.001, 0.01, 0.1, 1.0),
    seed: int = 0,
) -> dict[str, Any]:
    """Test accuracy of a linear L2-SVM on the features, ``C`` picked by 5-fold cross-validation on the train set.

    Features are standardised with the training set's mean and deviation. Returns ``accuracy`` (test, in
    ``[0, 1]``), ``cost`` (the chosen ``C``) and ``cv_accuracy`` (per ``C``, the mean cross-validated accuracy).

    Example:
        >>> x = torch.cat([torch.randn(40, 5) + 3, torch.randn(40, 5) - 3])
        >>> y = torch.cat([torch.zeros(40), torch.ones(40)]).long()
        >>> linear_probe(x, y, x, y)["accuracy"]
        1.0
    """
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    for name, features, labels in (("train", train_features, train_labels), ("test", test_features, test_labels)):
        if features.dim() != 2 or labels.shape != (features.shape[0],):
            raise ValueError(
                f"{name}_features must be (N, F) and {name}_labels (N,); got {tuple(features.shape)} and "
                f"{tuple(labels.shape)}"
            )
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test features differ in width: {train_features.shape[1]} vs {test_features.shape[1]}"
        )
    if not costs or any(c <= 0 for c in costs):
        raise ValueError(f"costs must be positive SVM costs C; got {list(costs)}")
    x_train, y_train = train_features.numpy(), train_labels.numpy()

    def model(cost: float) -> Any:
        return make_pipeline(StandardScaler(), LinearSVC(C=cost, max_iter=20_000, random_state=seed))

    cv = {float(c): float(cross_val_score(model(c), x_train, y_train, cv=5).mean()) for c in costs}
    best = max(cv, key=lambda c: (cv[c], -c))
    fitted = model(best).fit(x_train, y_train)
    accuracy = float((fitted.predict(test_features.numpy()) == test_labels.numpy()).mean())
    return {"accuracy": accuracy, "cost": best, "cv_accuracy": cv}


__all__ = ["critic_features", "linear_probe"]
