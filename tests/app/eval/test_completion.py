"""Image completion and its PSNR / SSIM scores (maths §7): rankplug.app.eval.completion."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from rankplug.app.eval import (
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

LATENT = 6
SHAPE = (1, 8, 8)


def linear_generator(seed: int = 0) -> nn.Module:
    """G(z) = W z + b reshaped to (1, 8, 8): any image in its range is represented exactly."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(LATENT, 64), nn.Unflatten(1, SHAPE))


def critic() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, 1))


# ---------------------------------------------------------------- mask geometry


@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("coverage", COVERAGES)
def test_center_mask_geometry(size, coverage):
    mask = center_mask(size, coverage, channels=3)
    assert mask.shape == (1, 3, size, size)
    assert mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    side = hole_side(size, coverage)
    assert side == round(size * math.sqrt(coverage))
    assert abs(side - size * math.sqrt(coverage)) <= 0.5
    hole = mask[0, 0] == 0
    # The hole is one square of side s, the same in every channel.
    rows, cols = hole.any(dim=1).nonzero().flatten(), hole.any(dim=0).nonzero().flatten()
    assert len(rows) == len(cols) == side
    assert hole[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()
    assert int(hole.sum()) == side**2
    assert torch.equal(mask[0, 0], mask[0, 2])
    # Centred: the margins on either side differ by at most one pixel.
    top, bottom = int(rows[0]), size - 1 - int(rows[-1])
    left, right = int(cols[0]), size - 1 - int(cols[-1])
    assert top == left and bottom == right and 0 <= bottom - top <= 1
    # The hole fraction is as close to the coverage as a centred square on this grid can be.
    fraction = side**2 / size**2
    best = min(abs(s**2 / size**2 - coverage) for s in range(size + 1))
    assert abs(fraction - coverage) == pytest.approx(best)


def test_hole_side_rounds_halves_up():
    assert hole_side(5, 0.25) == 3  # 2.5
    assert hole_side(3, 0.25) == 2  # 1.5
    assert hole_side(5, 0.09) == 2  # 1.5 up to float noise
    assert hole_side(1, 0.09) == 0  # nothing to hide on a 1 x 1 image


def test_progress_goes_to_the_rankplug_logger(caplog):
    caplog.set_level("INFO", logger="rankplug")
    complete_images(
        linear_generator(),
        None,
        torch.rand(1, *SHAPE),
        center_mask(8, 0.25),
        latent_shape=(LATENT,),
        steps=3,
        perceptual_weight=0,
        progress=True,
    )
    messages = [r.getMessage() for r in caplog.records if r.name == "rankplug.app.eval.completion"]
    assert any("step 1/3" in m for m in messages) and any("step 3/3" in m for m in messages)


def test_coverages_are_the_papers():
    assert COVERAGES == (0.09, 0.25, 0.49, 0.64, 0.81)


def test_center_mask_device_dtype():
    mask = center_mask(8, 0.25, device="cpu", dtype=torch.float64)
    assert mask.dtype == torch.float64 and mask.device.type == "cpu"


@pytest.mark.parametrize("coverage", [0.0, 1.0, -0.1, 1.5])
def test_center_mask_rejects_coverage_outside_open_interval(coverage):
    with pytest.raises(ValueError, match=r"coverage must lie in the open interval \(0, 1\)"):
        center_mask(16, coverage)


def test_center_mask_rejects_bad_size_and_channels():
    with pytest.raises(ValueError, match="size must be an int >= 1; got 0"):
        center_mask(0, 0.25)
    with pytest.raises(TypeError, match="size must be an int"):
        center_mask(8.0, 0.25)
    with pytest.raises(ValueError, match="channels must be an int >= 1; got 0"):
        center_mask(8, 0.25, channels=0)


# ---------------------------------------------------------------- complete_images


def test_known_pixels_kept_and_hole_filled_from_generator():
    G, D = linear_generator(), critic()
    images = torch.rand(3, *SHAPE) * 2 - 1
    mask = center_mask(8, 0.25)
    result = complete_images(G, D, images, mask, latent_shape=(LATENT,), steps=5, generator_seed=0)
    assert isinstance(result, Completion)
    known = mask.expand_as(images).bool()
    assert torch.equal(result.completed[known], images[known])
    assert torch.equal(result.completed[~known], result.generated[~known])
    with torch.no_grad():
        assert torch.allclose(result.generated, G(result.latent))
    assert result.latent.shape == (3, LATENT)
    assert len(result.loss_history) == 6
    assert not result.completed.requires_grad and not result.latent.requires_grad


def test_only_known_pixels_of_the_input_are_read():
    G = linear_generator()
    images = torch.rand(2, *SHAPE) * 2 - 1
    mask = center_mask(8, 0.49)
    kwargs = {"latent_shape": (LATENT,), "steps": 4, "generator_seed": 1, "perceptual_weight": 0.0}
    a = complete_images(G, None, images, mask, **kwargs)
    b = complete_images(G, None, images * mask, mask, **kwargs)
    assert torch.equal(a.latent, b.latent)
    assert torch.equal(a.generated, b.generated)


def test_optimisation_recovers_a_representable_image():
    G, D = linear_generator(), critic()
    torch.manual_seed(3)
    z_true = torch.randn(4, LATENT)
    with torch.no_grad():
        images = G(z_true)
    mask = center_mask(8, 0.25)
    hole = ~mask.expand_as(images).bool()
    kwargs = {"latent_shape": (LATENT,), "perceptual_weight": 0.0, "lr": 0.05, "generator_seed": 0}
    start = complete_images(G, D, images, mask, steps=0, **kwargs)
    end = complete_images(G, D, images, mask, steps=300, **kwargs)
    start_error = (start.completed - images)[hole].abs().mean()
    end_error = (end.completed - images)[hole].abs().mean()
    assert end_error < 0.1 * start_error
    assert end.loss_history[-1] < 0.1 * end.loss_history[0]
    assert end.loss_history[0] == pytest.approx(start.loss_history[0])


def test_perceptual_term_matches_hand_computation():
    G, D = linear_generator(), critic()
    images = torch.rand(2, *SHAPE)
    mask = center_mask(8, 0.25)
    z = torch.randn(2, LATENT)
    result = complete_images(G, D, images, mask, latent_shape=(LATENT,), steps=0, init_latent=z, perceptual_weight=0.5)
    D.eval()
    with torch.no_grad():
        fake = G(z)
        contextual = torch.stack([(mask[0] * fake[k] - mask[0] * images[k]).abs().sum() for k in range(2)])
        expected = contextual.mean() + 0.5 * (-D(fake).flatten()).mean()
    assert result.loss_history == [pytest.approx(float(expected), rel=1e-5)]


def test_init_latent_and_seed():
    G = linear_generator()
    images = torch.rand(2, *SHAPE)
    mask = center_mask(8, 0.25)
    z = torch.randn(2, LATENT)
    result = complete_images(G, None, images, mask, latent_shape=(LATENT,), steps=0, init_latent=z, perceptual_weight=0)
    assert torch.equal(result.latent, z)
    a = complete_images(G, None, images, mask, latent_shape=LATENT, steps=0, generator_seed=7, perceptual_weight=0)
    b = complete_images(G, None, images, mask, latent_shape=LATENT, steps=0, generator_seed=7, perceptual_weight=0)
    assert torch.equal(a.latent, b.latent)
    assert z.grad is None


@pytest.mark.parametrize("train", [True, False])
def test_models_get_no_gradients_and_keep_their_modes(train):
    G, D = linear_generator(), critic()
    G.train(train)
    D.train(not train)
    D[1].train(train)  # a mixed-mode model keeps each submodule's own mode
    modes = [m.training for m in [*G.modules(), *D.modules()]]
    seen = []
    D.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    images = torch.rand(2, *SHAPE)
    complete_images(G, D, images, center_mask(8, 0.25), latent_shape=(LATENT,), steps=3)
    assert seen and not any(seen)  # eval mode during the search
    assert [m.training for m in [*G.modules(), *D.modules()]] == modes
    assert all(p.grad is None for p in [*G.parameters(), *D.parameters()])


def test_modes_restored_after_an_error():
    G = linear_generator()
    G.train()

    def bad_critic(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        complete_images(G, bad_critic, torch.rand(1, *SHAPE), center_mask(8, 0.25), latent_shape=(LATENT,), steps=2)
    assert all(m.training for m in G.modules())


def test_tuple_discriminator_and_patch_scores():
    G = linear_generator()

    class TupleCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(x), torch.zeros(x.shape[0], 5)

    images = torch.rand(2, *SHAPE)
    result = complete_images(
        G, TupleCritic(), images, center_mask(8, 0.25), latent_shape=(LATENT,), steps=2, output_selector=0
    )
    assert result.completed.shape == images.shape
    with pytest.raises(TypeError, match="pass output_selector"):
        complete_images(G, TupleCritic(), images, center_mask(8, 0.25), latent_shape=(LATENT,), steps=1)


def test_works_under_no_grad_and_with_bool_and_per_sample_masks():
    G = linear_generator()
    images = torch.rand(2, *SHAPE)
    mask = center_mask(8, 0.25).bool().expand(2, 1, 8, 8).clone()
    mask[1] = True  # the second image has no hole
    with torch.no_grad():
        result = complete_images(G, None, images, mask, latent_shape=(LATENT,), steps=2, perceptual_weight=0)
    assert torch.equal(result.completed[1], images[1])


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.ones(8, 8), r"mask has shape \(8, 8\); expected \(1 or 2, 1 or 1, 8, 8\)"),
        (torch.ones(3, 1, 8, 8), r"mask has shape \(3, 1, 8, 8\); expected \(1 or 2"),
        (torch.ones(1, 2, 8, 8), r"mask has shape \(1, 2, 8, 8\); expected"),
        (torch.ones(1, 1, 8, 7), r"mask has shape \(1, 1, 8, 7\); expected .* 8, 8\)"),
    ],
)
def test_mask_shape_errors(mask, message):
    with pytest.raises(ValueError, match=message):
        complete_images(linear_generator(), None, torch.rand(2, *SHAPE), mask, latent_shape=(LATENT,), steps=0)


def test_mask_value_errors():
    mask = center_mask(8, 0.25)
    mask[0, 0, 0, 0] = 0.5
    with pytest.raises(ValueError, match=r"mask must hold only 0 \(hole\) and 1 \(known pixel\); got the value 0.5"):
        complete_images(linear_generator(), None, torch.rand(1, *SHAPE), mask, latent_shape=(LATENT,), steps=0)
    with pytest.raises(TypeError, match=re.escape("mask must be a torch.Tensor")):
        complete_images(linear_generator(), None, torch.rand(1, *SHAPE), [1], latent_shape=(LATENT,), steps=0)


def test_argument_errors():
    G, images, mask = linear_generator(), torch.rand(2, *SHAPE), center_mask(8, 0.25)
    with pytest.raises(ValueError, match="steps must be an int >= 0; got -1"):
        complete_images(G, None, images, mask, latent_shape=(LATENT,), steps=-1, perceptual_weight=0)
    with pytest.raises(TypeError, match="steps must be an int >= 0; got float"):
        complete_images(G, None, images, mask, latent_shape=(LATENT,), steps=1.5, perceptual_weight=0)
    with pytest.raises(ValueError, match=re.escape("lr must be > 0; got 0.0")):
        complete_images(G, None, images, mask, latent_shape=(LATENT,), lr=0, perceptual_weight=0)
    with pytest.raises(ValueError, match=re.escape("perceptual_weight must be >= 0; got -1.0")):
        complete_images(G, critic(), images, mask, latent_shape=(LATENT,), perceptual_weight=-1)
    with pytest.raises(ValueError, match=re.escape("discriminator is None but perceptual_weight=0.1")):
        complete_images(G, None, images, mask, latent_shape=(LATENT,))
    with pytest.raises(ValueError, match=r"images has shape \(2, 64\); expected \(N, C, H, W\)"):
        complete_images(G, None, torch.rand(2, 64), mask, latent_shape=(LATENT,), perceptual_weight=0)
    with pytest.raises(ValueError, match=r"init_latent has shape \(3, 6\); expected \(N, \*latent_shape\) = \(2, 6\)"):
        complete_images(
            G, None, images, mask, latent_shape=(LATENT,), init_latent=torch.zeros(3, 6), perceptual_weight=0
        )
    with pytest.raises(ValueError, match="latent_shape must be a tuple of ints >= 1"):
        complete_images(G, None, images, mask, latent_shape=(0,), perceptual_weight=0)
    with pytest.raises(ValueError, match=r"the generator returned \(2, 1, 8, 8\) .* expected \(2, 1, 4, 4\)"):
        complete_images(
            G, None, torch.rand(2, 1, 4, 4), center_mask(4, 0.25), latent_shape=(LATENT,), steps=0, perceptual_weight=0
        )


# ---------------------------------------------------------------- metrics


def test_psnr_matches_hand_computation():
    torch.manual_seed(0)
    target = torch.rand(4, 3, 8, 8, dtype=torch.float64) * 2 - 1
    prediction = target + 0.1 * torch.randn_like(target) * torch.arange(1, 5, dtype=torch.float64).view(4, 1, 1, 1)
    expected = [10 * math.log10(2.0**2 / float(((prediction[k] - target[k]) ** 2).mean())) for k in range(4)]
    got = psnr(prediction, target)
    assert got.shape == (4,)
    assert got.tolist() == pytest.approx(expected, rel=1e-10)
    got_unit = psnr((prediction + 1) / 2, (target + 1) / 2, data_range=1.0)
    assert got_unit.tolist() == pytest.approx(expected, rel=1e-10)
    assert math.isinf(psnr(target, target)[0].item())


def test_hole_psnr_matches_hand_computation():
    torch.manual_seed(1)
    target = torch.rand(2, 3, 8, 8) * 2 - 1
    prediction = target + 0.2 * torch.randn_like(target)
    mask = center_mask(8, 0.25)
    hole = ~mask[0, 0].bool()
    expected = [10 * math.log10(4.0 / float(((prediction[k] - target[k])[:, hole] ** 2).mean())) for k in range(2)]
    assert hole_psnr(prediction, target, mask).tolist() == pytest.approx(expected, rel=1e-5)


def test_ssim_identical_is_one_and_noise_lowers_it():
    torch.manual_seed(2)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.allclose(ssim(images, images), torch.ones(3))
    light = ssim(images + 0.05 * torch.randn_like(images), images)
    heavy = ssim(images + 0.5 * torch.randn_like(images), images)
    assert light.shape == (3,)
    assert (light < 1).all() and (heavy < light).all()
    assert ssim(images, images, window_size=5, data_range=1.0).tolist() == pytest.approx([1.0] * 3)


def test_metric_errors():
    a = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"target has shape \(2, 1, 8, 4\) but prediction has shape \(2, 1, 8, 8\)"):
        psnr(a, torch.rand(2, 1, 8, 4))
    with pytest.raises(ValueError, match=re.escape("data_range must be > 0; got 0.0")):
        psnr(a, a, data_range=0)
    with pytest.raises(ValueError, match="window_size must be odd; got 4"):
        ssim(a, a, window_size=4)
    with pytest.raises(ValueError, match=r"needs H and W > 5"):
        ssim(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"prediction has shape \(2, 64\); expected \(N, C, H, W\)"):
        ssim(torch.rand(2, 64), torch.rand(2, 64))


def test_missing_kornia_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("kornia"):
            raise ImportError("No module named 'kornia'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r'pip install "rankplug\[eval\]"'):
        psnr(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


# ---------------------------------------------------------------- table


def test_completion_table_and_markdown():
    models = {"WGAN": (linear_generator(0), critic()), "Stage 1": (linear_generator(1), critic())}
    images = torch.rand(2, *SHAPE) * 2 - 1
    coverages = (0.25, 0.64)
    rows = completion_table(models, images, coverages=coverages, latent_shape=(LATENT,), steps=3, window_size=7)
    assert [row["model"] for row in rows] == ["WGAN", "Stage 1"]
    for row in rows:
        assert row["coverages"] == coverages
        assert len(row["psnr"]) == len(row["ssim"]) == len(row["hole_psnr"]) == 2
        assert all(math.isfinite(v) for v in row["psnr"] + row["ssim"] + row["hole_psnr"])
        # The whole-image PSNR counts the exact known pixels, so it is above the hole-only PSNR.
        assert all(p > h for p, h in zip(row["psnr"], row["hole_psnr"]))
    # The table agrees with complete_images + psnr on the same seed.
    result = complete_images(
        *models["WGAN"], images, center_mask(8, 0.25), latent_shape=(LATENT,), steps=3, generator_seed=0
    )
    assert rows[0]["psnr"][0] == pytest.approx(float(psnr(result.completed, images).mean()))
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0] == "| Model | 25% | 64% |"
    assert lines[1] == "|---|---|---|"
    assert len(lines) == 4
    assert lines[2].startswith("| WGAN | ") and lines[3].startswith("| Stage 1 | ")
    assert lines[2].count(" / ") == 2
    assert format_table(rows, hole=True).splitlines()[2].count(" / ") == 4


def test_format_table_full_header():
    rows = [{"model": "m", "coverages": COVERAGES, "psnr": [1.0] * 5, "ssim": [0.5] * 5, "hole_psnr": [0.0] * 5}]
    assert format_table(rows).splitlines()[0] == "| Model | 9% | 25% | 49% | 64% | 81% |"
    assert format_table(rows).splitlines()[2] == "| m |" + " 1.00 / 0.500 |" * 5


def test_completion_table_errors():
    images = torch.rand(1, *SHAPE)
    with pytest.raises(ValueError, match="generators must be a non-empty dict"):
        completion_table({}, images, latent_shape=(LATENT,), steps=0)
    with pytest.raises(ValueError, match=r"expected square images"):
        completion_table({"G": (linear_generator(), None)}, torch.rand(1, 1, 8, 4), latent_shape=(LATENT,), steps=0)
    with pytest.raises(ValueError, match=r"coverage must lie in the open interval"):
        completion_table({"G": (linear_generator(), None)}, images, coverages=(1.0,), latent_shape=(LATENT,), steps=0)
    with pytest.raises(ValueError, match="rows is empty"):
        format_table([])
