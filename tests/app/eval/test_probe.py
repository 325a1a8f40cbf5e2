"""The linear probe of MBGAN Sec. 5 (rankplug.app.eval.probe) and the study helpers' interval arithmetic."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from rankplug.app.eval.probe import critic_features, linear_probe
from rankplug.app.training import Discriminator

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "experiments"))
import _study


def test_features_pool_every_activation_to_the_grid():
    critic = Discriminator(width=4, size=16)  # trunk: 16 -> 8 -> 4, two LeakyReLU maps of 4 and 8 channels
    features = critic_features(critic, torch.zeros(5, 1, 16, 16), grid=2)
    assert features.shape == (5, 4 * 2 * 2 + 8 * 2 * 2)
    assert critic_features(critic, torch.zeros(5, 1, 16, 16), grid=8).shape == (5, 4 * 8 * 8 + 8 * 4 * 4)


def test_features_are_the_max_of_each_region_and_restore_the_mode():
    torch.manual_seed(0)
    critic = Discriminator(width=4, size=8, norm="batch", embed_dim=3).train()
    x = torch.randn(6, 1, 8, 8)
    features = critic_features(critic, x, grid=1, batch_size=4)
    assert critic.training
    critic.eval()
    with torch.no_grad():
        body = list(critic.trunk.body)
        relu = next(k for k, layer in enumerate(body) if isinstance(layer, torch.nn.LeakyReLU))
        first = torch.nn.Sequential(*body[: relu + 1])(x)  # the only activation map at 8x8 input
    torch.testing.assert_close(features, first.amax(dim=(2, 3)))


def test_features_refuse_what_they_cannot_read():
    with pytest.raises(TypeError, match=r"trunk\.body"):
        critic_features(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"\(N, C, S, S\)"):
        critic_features(Discriminator(width=4, size=8), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="grid"):
        critic_features(Discriminator(width=4, size=8), torch.zeros(1, 1, 8, 8), grid=0)


def test_probe_separates_separable_classes_and_not_random_labels():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 4
    labels = torch.arange(150) % 3
    x = centers[labels] + torch.randn(150, 8, generator=g)
    result = linear_probe(x[:100], labels[:100], x[100:], labels[100:], costs=(0.01, 1.0))
    assert result["accuracy"] > 0.95
    assert result["cost"] in (0.01, 1.0) and set(result["cv_accuracy"]) == {0.01, 1.0}
    noise = torch.randn(150, 8, generator=g)
    shuffled = labels[torch.randperm(150, generator=g)]
    assert linear_probe(noise[:100], shuffled[:100], noise[100:], shuffled[100:])["accuracy"] < 0.6


def test_probe_refuses_mismatched_shapes_and_costs():
    x, y = torch.randn(20, 3), torch.arange(20) % 2
    with pytest.raises(ValueError, match="train_labels"):
        linear_probe(x, y[:5], x, y)
    with pytest.raises(ValueError, match="width"):
        linear_probe(x, y, x[:, :2], y)
    with pytest.raises(ValueError, match="costs"):
        linear_probe(x, y, x, y, costs=(0.0,))


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences():
    from scipy import stats

    a, b = [3.0, 5.0, 4.0, 6.5, 5.5], [2.0, 4.5, 4.2, 5.0, 4.0]
    out = _study.paired_difference(a, b)
    diff = [x - y for x, y in zip(a, b)]
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=sum(diff) / 5, scale=stats.sem(diff))
    assert out["mean"] == pytest.approx(sum(diff) / 5)
    assert out["t95"] == pytest.approx([low, high])
    assert out["bootstrap95"][0] <= out["mean"] <= out["bootstrap95"][1]
    assert min(diff) <= out["bootstrap95"][0] and out["bootstrap95"][1] <= max(diff)
    with pytest.raises(ValueError, match="one value per seed"):
        _study.paired_difference(a, b[:3])
    assert _study.t_interval([1.0])["t95"] is None
