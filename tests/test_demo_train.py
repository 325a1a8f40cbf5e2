"""Quick-mode tests of the demo training loop (rankplug.demo): a few steps per method, resume, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from rankplug.demo import METHODS, Discriminator, Generator, train
from rankplug.demo.train import _markers_for_stage, _RunInfo
from rankplug.stages import StageManager

QUICK: dict[str, Any] = {"stages": 2, "steps_per_stage": 3, "batch_size": 16, "n_critic": 2, "log_every": 1}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(64, 1, 16, 16) * 2 - 1  # stands in for the digits: only shapes matter here


def _plain(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("generator", "discriminator", "wall_time")}


@pytest.mark.parametrize("size", [16, 32])
def test_models_shapes_and_no_batchnorm_in_critic(size: int) -> None:
    G, D = Generator(nz=8, ngf=8, size=size), Discriminator(ndf=8, size=size)
    images = G(torch.randn(5, 8))
    assert images.shape == (5, 1, size, size)
    assert images.abs().max() <= 1
    assert D(images).shape == (5, 1)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in D.modules())
    with pytest.raises(ValueError, match="size must be one of"):
        Generator(size=24)
    with pytest.raises(ValueError, match=r"expected \(N, 1, "):
        D(torch.randn(2, 1, 8, 8))


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_with_finite_history(method: str, images: torch.Tensor) -> None:
    result = train(method, images=images, **QUICK)
    assert result["generator_steps"] == 6 and result["steps_this_call"] == 6
    assert [s["stage"] for s in result["stages"]] == [1, 2]
    for entry in result["stages"]:
        assert len(entry["gap"]) == 3
        assert all(math.isfinite(v) for key in ("gap", "real", "fake") for v in entry[key])
    json.dumps(_plain(result))  # plain JSON-ready data
    assert not result["resumed"]
    staged = method in ("rankgan", "gogan")
    # the score ladder's third rung D(G_{i-1}(z)) exists only where stage i >= 2 uses the previous stage
    assert len(result["stages"][1]["prev_fake"]) == (3 if staged else 0)
    assert (result["stages"][1]["markers_used"] is not None) == (method == "rankgan")


def test_unknown_method_and_bad_log_interval(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        train("lsgan", images=images)
    with pytest.raises(ValueError, match="log_every must divide"):
        train("margin", images=images, steps_per_stage=5, log_every=2)


@pytest.mark.parametrize("method", ["rankgan", "gogan"])
def test_stage_two_uses_the_frozen_previous_stage(
    method: str, images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bool, bool]] = []
    original = StageManager.advance

    def advance(self: StageManager, **kwargs: Any) -> None:
        original(self, **kwargs)
        assert self.previous is not None
        g_forward = self.previous.generator.forward

        def spy(z: torch.Tensor) -> torch.Tensor:
            out = g_forward(z)
            calls.append((self.previous.generator.training, out.requires_grad))  # type: ignore[union-attr]
            return out

        self.previous.generator.forward = spy  # type: ignore[method-assign]

    monkeypatch.setattr(StageManager, "advance", advance)
    train(method, images=images, **QUICK)
    # every stage-2 critic step (3 steps x 2 critic steps) feeds z through the frozen G_1: eval mode, no graph
    assert len(calls) >= 6
    assert all(not training and not grad for training, grad in calls)


def test_second_call_resumes_and_continues_bit_for_bit(images: torch.Tensor, tmp_path: Path) -> None:
    settings = dict(QUICK, stages=1)
    first = train("rankgan", images=images, directory=tmp_path, **settings)
    assert not first["resumed"] and StageManager(Generator(), Discriminator()).has_checkpoint(tmp_path)
    second = train("rankgan", images=images, directory=tmp_path, **dict(settings, stages=2))
    assert second["resumed"]
    assert second["steps_this_call"] == 3 and second["generator_steps"] == 6
    again = train("rankgan", images=images, directory=tmp_path, **dict(settings, stages=2))
    assert again["resumed"] and again["steps_this_call"] == 0
    straight = train("rankgan", images=images, **QUICK)
    assert second["stages"] == straight["stages"]
    for a, b in zip(second["generator"].state_dict().values(), straight["generator"].state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="settings"):
        train("rankgan", images=images, directory=tmp_path, **dict(settings, stages=2, batch_size=8))


def test_same_seed_same_result_other_seed_differs(images: torch.Tensor) -> None:
    a = train("gogan", images=images, seed=3, **QUICK)
    b = train("gogan", images=images, seed=3, **QUICK)
    c = train("gogan", images=images, seed=4, **QUICK)
    assert _plain(a) == _plain(b)
    assert a["stages"] != c["stages"]


def test_markers_out_of_order_fall_back_to_a_valid_pair(images: torch.Tensor) -> None:
    G, D = Generator(nz=4, ngf=4), Discriminator(ndf=4)
    manager = StageManager(G, D, latent_shape=4)
    manager.advance()
    info = _RunInfo({})
    x = images

    def fake_markers(real_batches: Any, **kwargs: Any) -> tuple[float, float]:
        return 1.0, 3.0  # a previous critic that still prefers its fakes: m_low > m_high

    manager.compute_markers = fake_markers  # type: ignore[method-assign]
    (high, low), fixed = _markers_for_stage(manager, x, 16, info)
    assert fixed and high == low == 2.0
    info.effective_markers["2"] = [0.5, -0.5]
    (high, low), fixed = _markers_for_stage(manager, x, 16, info)
    assert fixed and (high, low) == (0.5, -0.5)


def test_stage_models_round_trip_with_encoder_and_mbgan_head(images: torch.Tensor, tmp_path: Path) -> None:
    from rankplug.demo.train import load_stage_models
    from rankplug.heads import TripletMetricDiscriminatorHead

    result = train("mbgan", images=images, encoder=True, encoder_epochs=1, directory=tmp_path, **QUICK)
    G, D, E, info = load_stage_models(tmp_path / "models-stage2.pt")
    assert info["stage"] == 2 and info["generator_steps"] == 6 and info["settings"]["method"] == "mbgan"
    assert isinstance(D.head, TripletMetricDiscriminatorHead) and D(images[:3]).shape == (3, 500)
    mu, logvar = E(images[:3])
    assert mu.shape == logvar.shape == (3, 32)
    z = torch.randn(4, 32)
    with torch.no_grad():
        assert torch.equal(G(z), result["generator"](z))  # the saved weights are the trained ones
    for name, module in (("G", G), ("D", D), ("E", E)):
        assert not module.training and not any(p.requires_grad for p in module.parameters()), name


def test_encoder_draws_the_latents(images: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    original = StageManager.sample_latent

    def spy(self: StageManager, n: int, real: Any = None) -> torch.Tensor:
        seen.append(real is not None)
        return original(self, n, real=real)

    monkeypatch.setattr(StageManager, "sample_latent", spy)
    train("rankgan", images=images, encoder=True, encoder_epochs=1, **QUICK)
    assert seen and all(seen)


def test_load_stage_models_refuses_other_files(tmp_path: Path) -> None:
    from rankplug._checkpoint import CheckpointError, atomic_save
    from rankplug.demo.train import load_stage_models

    atomic_save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a rankplug demo stage checkpoint"):
        load_stage_models(tmp_path / "other.pt")


def test_amp_runs_in_bfloat16_on_cpu(images: torch.Tensor) -> None:
    result = train("rankgan", images=images, amp=True, **QUICK)
    assert all(math.isfinite(v) for entry in result["stages"] for v in entry["gap"])
    assert result["settings"]["amp"] is True
