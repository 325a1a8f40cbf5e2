"""maths §1: the margin loss (RankGAN Eq. 3, GoGAN Eq. 2), the symmetric hinge and the WGAN generator loss."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rankplug
from rankplug.functional import hinge_margin_loss, symmetric_hinge_loss, wgan_generator_loss
from tests._strategies import as_tensor, hinge, margin_value, reduce_list, score, score_batches

REDUCTIONS = ["mean", "sum", "none"]


def loop_hinge_margin(real: list[float], fake: list[float], margin: float) -> list[float]:
    """maths §1 as written: [D(G(z)) + eps - D(x)]_+, pairing the k-th real with the k-th fake."""
    return [hinge(fake[k] + margin - real[k]) for k in range(len(real))]


def loop_symmetric(real: list[float], fake: list[float], margin: float) -> list[float]:
    return [0.5 * (hinge(margin - real[k]) + hinge(margin + fake[k])) for k in range(len(real))]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batches=score_batches(2), margin=margin_value)
@settings(max_examples=40, deadline=None)
def test_hinge_margin_matches_python_loop(reduction, batches, margin):
    real, fake = batches
    got = hinge_margin_loss(as_tensor(real), as_tensor(fake), margin=margin, reduction=reduction)
    expected = reduce_list(loop_hinge_margin(real, fake, margin), reduction)
    assert got.tolist() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batches=score_batches(2), margin=margin_value)
@settings(max_examples=40, deadline=None)
def test_symmetric_hinge_matches_python_loop(reduction, batches, margin):
    real, fake = batches
    got = symmetric_hinge_loss(as_tensor(real), as_tensor(fake), margin=margin, reduction=reduction)
    expected = reduce_list(loop_symmetric(real, fake, margin), reduction)
    assert got.tolist() == pytest.approx(expected, abs=1e-9)


@given(values=st.lists(score, min_size=1, max_size=16))
@settings(max_examples=30, deadline=None)
def test_wgan_generator_loss_is_minus_mean_fake_score(values):
    got = wgan_generator_loss(as_tensor(values))
    assert got.item() == pytest.approx(-sum(values) / len(values), abs=1e-9)
    assert wgan_generator_loss(as_tensor(values), reduction="none").tolist() == [-v for v in values]


@given(batches=score_batches(2), margin=margin_value)
@settings(max_examples=60, deadline=None)
def test_hinge_is_zero_once_margin_holds(batches, margin):
    real, fake = batches
    # Put every real score at least `margin` above its fake: every hinge is inactive.
    real = [f + margin + abs(r) for r, f in zip(real, fake)]
    real_t = as_tensor(real, grad=True)
    fake_t = as_tensor(fake, grad=True)
    loss = hinge_margin_loss(real_t, fake_t, margin=margin)
    assert loss.item() == 0.0
    assert loss.requires_grad  # the zero stays in the autograd graph
    loss.backward()
    assert torch.count_nonzero(real_t.grad) == 0 and torch.count_nonzero(fake_t.grad) == 0


@given(batches=score_batches(2), margin=margin_value, shift=score)
@settings(max_examples=60, deadline=None)
def test_hinge_margin_is_shift_invariant(batches, margin, shift):
    real, fake = batches
    base = hinge_margin_loss(as_tensor(real), as_tensor(fake), margin=margin, reduction="none")
    moved = hinge_margin_loss(as_tensor(real) + shift, as_tensor(fake) + shift, margin=margin, reduction="none")
    torch.testing.assert_close(moved, base, atol=1e-9, rtol=0)


@given(batches=score_batches(2))
@settings(max_examples=60, deadline=None)
def test_large_margin_reduces_to_wgan_plus_margin_with_equal_gradients(batches):
    real, fake = batches
    margin = 1.0 + max(0.0, *(r - f for r, f in zip(real, fake)))  # above every gap: all hinges active
    real_a, fake_a = as_tensor(real, grad=True), as_tensor(fake, grad=True)
    loss = hinge_margin_loss(real_a, fake_a, margin=margin)
    loss.backward()
    real_b, fake_b = as_tensor(real, grad=True), as_tensor(fake, grad=True)
    wgan = fake_b.mean() - real_b.mean()
    wgan.backward()
    assert loss.item() == pytest.approx(wgan.item() + margin, abs=1e-9)
    torch.testing.assert_close(real_a.grad, real_b.grad)
    torch.testing.assert_close(fake_a.grad, fake_b.grad)


@given(batches=score_batches(2), margins=st.lists(margin_value, min_size=2, max_size=2))
@settings(max_examples=60, deadline=None)
def test_hinge_margin_never_decreases_as_margin_grows(batches, margins):
    real, fake = batches
    small, large = sorted(margins)
    low = hinge_margin_loss(as_tensor(real), as_tensor(fake), margin=small)
    high = hinge_margin_loss(as_tensor(real), as_tensor(fake), margin=large)
    assert high.item() >= low.item() - 1e-12


@given(batches=score_batches(2), margin=margin_value)
@settings(max_examples=40, deadline=None)
def test_hinge_margin_gradient_is_zero_or_one_over_n(batches, margin):
    real, fake = batches
    real_t, fake_t = as_tensor(real, grad=True), as_tensor(fake, grad=True)
    hinge_margin_loss(real_t, fake_t, margin=margin).backward()
    n = len(real)
    for g in real_t.grad.tolist():
        assert g == pytest.approx(0.0) or g == pytest.approx(-1.0 / n)
    for g in fake_t.grad.tolist():
        assert g == pytest.approx(0.0) or g == pytest.approx(1.0 / n)


def test_real_and_fake_are_not_interchangeable():
    # Higher is more real: a confident critic (real >> fake) has zero loss, a fooled one does not.
    real, fake = torch.tensor([5.0]), torch.tensor([-5.0])
    assert hinge_margin_loss(real, fake, margin=1.0).item() == 0.0
    assert hinge_margin_loss(fake, real, margin=1.0).item() == pytest.approx(11.0)


@pytest.mark.parametrize("shape", [(4,), (4, 1), (4, 1, 3, 5)])
def test_score_shapes_are_per_sample_means(shape):
    torch.manual_seed(1)
    real, fake = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    got = hinge_margin_loss(real, fake, margin=0.5, reduction="none")
    real_mean, fake_mean = real.reshape(4, -1).mean(1), fake.reshape(4, -1).mean(1)
    assert got.shape == (4,)
    torch.testing.assert_close(got, torch.relu(fake_mean + 0.5 - real_mean))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_function_equals_module(reduction):
    torch.manual_seed(2)
    real, fake = torch.randn(6, 1, requires_grad=True), torch.randn(6, 1, requires_grad=True)
    for module, function in [
        (rankplug.HingeMarginLoss(margin=0.7, reduction=reduction), hinge_margin_loss),
        (rankplug.SymmetricHingeLoss(margin=0.7, reduction=reduction), symmetric_hinge_loss),
    ]:
        torch.testing.assert_close(module(real, fake), function(real, fake, margin=0.7, reduction=reduction))
        torch.testing.assert_close(module.generator_loss(fake), wgan_generator_loss(fake, reduction=reduction))


def test_gradcheck_float64():
    real = torch.tensor([0.3, 1.7, -0.2, 2.5], dtype=torch.float64, requires_grad=True)
    fake = torch.tensor([0.1, 0.4, 0.9, -1.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r, f: hinge_margin_loss(r, f, margin=0.5), (real, fake))
    assert torch.autograd.gradcheck(lambda r, f: symmetric_hinge_loss(r, f, margin=0.5), (real, fake))
    assert torch.autograd.gradcheck(lambda f: wgan_generator_loss(f), (fake,))


@pytest.mark.parametrize("magnitude", [1e4, -1e4])
def test_extreme_scores_give_finite_gradients(magnitude):
    real = torch.full((8,), magnitude, requires_grad=True)
    fake = torch.full((8,), -magnitude, requires_grad=True)
    loss = hinge_margin_loss(real, fake, margin=1.0) + symmetric_hinge_loss(real, fake)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(real.grad).all() and torch.isfinite(fake.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores_give_finite_gradients(dtype):
    real = (torch.randn(8) * 100).to(dtype).requires_grad_()
    fake = (torch.randn(8) * 100).to(dtype).requires_grad_()
    hinge_margin_loss(real, fake, margin=1.0).backward()
    assert torch.isfinite(real.grad).all() and torch.isfinite(fake.grad).all()
