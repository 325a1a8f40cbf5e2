"""maths §2 (GoGAN Eq. 3-5) and §3 (RankGAN Eq. 4 and 6): ranking losses across stages."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rankplug
from rankplug.functional import (
    clamp_penalty,
    gogan_rank_loss,
    stage_rank_generator_loss,
    stage_rank_loss,
    wgan_generator_loss,
)
from tests._strategies import as_tensor, hinge, margin_value, reduce_list, score, score_batches, weight_value

REDUCTIONS = ["mean", "sum", "none"]


def loop_stage_rank(real, fake, prev_fake, m_high, m_low, clamp_weight):
    """RankGAN Eq. 4 (zero margin) + clamp_weight * Eq. 6, per sample, as written in maths §3."""
    out = []
    for k in range(len(real)):
        rank = hinge(fake[k] - prev_fake[k])
        clamp = hinge(m_high - real[k]) + hinge(prev_fake[k] - m_low)
        out.append(rank + clamp_weight * clamp)
    return out


def loop_gogan(real, fake, prev_fake, margin, disc_weight, rank_weight):
    """GoGAN Eq. 3-5 per sample, as written in maths §2."""
    out = []
    for k in range(len(real)):
        disc = hinge(fake[k] + margin - real[k])
        rank = hinge(prev_fake[k] + 2 * margin - real[k])
        out.append(disc_weight * disc + rank_weight * rank)
    return out


@st.composite
def markers(draw):
    a, b = draw(score), draw(score)
    return max(a, b), min(a, b)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batches=score_batches(3), marks=markers(), clamp_weight=weight_value)
@settings(max_examples=40, deadline=None)
def test_stage_rank_loss_matches_python_loop(reduction, batches, marks, clamp_weight):
    real, fake, prev_fake = batches
    m_high, m_low = marks
    got = stage_rank_loss(
        as_tensor(real),
        as_tensor(fake),
        as_tensor(prev_fake),
        m_high=m_high,
        m_low=m_low,
        clamp_weight=clamp_weight,
        reduction=reduction,
    )
    expected = reduce_list(loop_stage_rank(real, fake, prev_fake, m_high, m_low, clamp_weight), reduction)
    assert got.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batches=score_batches(2), marks=markers())
@settings(max_examples=30, deadline=None)
def test_clamp_penalty_and_generator_half_match_python_loop(reduction, batches, marks):
    real, other = batches
    m_high, m_low = marks
    clamp = clamp_penalty(as_tensor(real), as_tensor(other), m_high=m_high, m_low=m_low, reduction=reduction)
    expected = [hinge(m_high - r) + hinge(p - m_low) for r, p in zip(real, other)]
    assert clamp.tolist() == pytest.approx(reduce_list(expected, reduction), abs=1e-9)
    gen = stage_rank_generator_loss(as_tensor(real), as_tensor(other), reduction=reduction)
    expected = [hinge(r - f) for r, f in zip(real, other)]
    assert gen.tolist() == pytest.approx(reduce_list(expected, reduction), abs=1e-9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batches=score_batches(3), margin=margin_value, weights=st.tuples(weight_value, weight_value))
@settings(max_examples=40, deadline=None)
def test_gogan_rank_loss_matches_python_loop(reduction, batches, margin, weights):
    real, fake, prev_fake = batches
    disc_weight, rank_weight = weights
    got = gogan_rank_loss(
        as_tensor(real),
        as_tensor(fake),
        as_tensor(prev_fake),
        margin=margin,
        disc_weight=disc_weight,
        rank_weight=rank_weight,
        reduction=reduction,
    )
    expected = reduce_list(loop_gogan(real, fake, prev_fake, margin, disc_weight, rank_weight), reduction)
    assert got.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@given(batches=score_batches(3), marks=markers(), margin=margin_value, shift=score)
@settings(max_examples=60, deadline=None)
def test_ranking_losses_are_shift_invariant(batches, marks, margin, shift):
    real, fake, prev_fake = (as_tensor(b) for b in batches)
    m_high, m_low = marks
    # Markers are scores of the previous stage, so they move with the scores.
    base = stage_rank_loss(real, fake, prev_fake, m_high=m_high, m_low=m_low, reduction="none")
    moved = stage_rank_loss(
        real + shift, fake + shift, prev_fake + shift, m_high=m_high + shift, m_low=m_low + shift, reduction="none"
    )
    torch.testing.assert_close(moved, base, atol=1e-7, rtol=1e-9)
    base = gogan_rank_loss(real, fake, prev_fake, margin=margin, reduction="none")
    moved = gogan_rank_loss(real + shift, fake + shift, prev_fake + shift, margin=margin, reduction="none")
    torch.testing.assert_close(moved, base, atol=1e-9, rtol=1e-9)
    base = stage_rank_generator_loss(real, fake, reduction="none")
    moved = stage_rank_generator_loss(real + shift, fake + shift, reduction="none")
    torch.testing.assert_close(moved, base, atol=1e-9, rtol=1e-9)


@given(prev=score, margin=st.floats(min_value=0.01, max_value=20.0), fraction=st.floats(min_value=0.0, max_value=0.99))
@settings(max_examples=60, deadline=None)
def test_gogan_ranking_term_uses_two_epsilon(prev, margin, fraction):
    # Real sits between prev + eps and prev + 2 eps: only a 2-epsilon ranking margin is violated.
    real = prev + margin * (1.0 + fraction)
    got = gogan_rank_loss(
        as_tensor([real]), as_tensor([real - 10 * margin]), as_tensor([prev]), margin=margin, disc_weight=0.0
    )
    assert got.item() == pytest.approx(2 * margin + prev - real, rel=1e-9, abs=1e-12)
    assert got.item() > 0.0


@given(batches=score_batches(3), margins=st.lists(margin_value, min_size=2, max_size=2))
@settings(max_examples=60, deadline=None)
def test_gogan_never_decreases_as_margin_grows(batches, margins):
    real, fake, prev_fake = (as_tensor(b) for b in batches)
    small, large = sorted(margins)
    low = gogan_rank_loss(real, fake, prev_fake, margin=small)
    high = gogan_rank_loss(real, fake, prev_fake, margin=large)
    assert high.item() >= low.item() - 1e-12


@given(batches=score_batches(2), marks=markers(), slack=st.lists(st.floats(0.0, 10.0), min_size=2, max_size=2))
@settings(max_examples=60, deadline=None)
def test_clamp_is_zero_when_scores_respect_the_markers(batches, marks, slack):
    m_high, m_low = marks
    n = len(batches[0])
    real = as_tensor([m_high + slack[0]] * n, grad=True)  # D_i(x) at or above m_high
    prev_fake = as_tensor([m_low - slack[1]] * n, grad=True)  # D_i(G_{i-1}(z)) at or below m_low
    loss = clamp_penalty(real, prev_fake, m_high=m_high, m_low=m_low)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(real.grad) == 0 and torch.count_nonzero(prev_fake.grad) == 0


@given(marks=markers(), excess=st.floats(0.01, 10.0))
@settings(max_examples=40, deadline=None)
def test_clamp_pushes_real_up_and_previous_fakes_down(marks, excess):
    m_high, m_low = marks
    real = as_tensor([m_high - excess], grad=True)
    prev_fake = as_tensor([m_low + excess], grad=True)
    loss = clamp_penalty(real, prev_fake, m_high=m_high, m_low=m_low)
    assert loss.item() == pytest.approx(2 * excess)
    loss.backward()
    assert real.grad.item() < 0 < prev_fake.grad.item()  # descent raises D(x), lowers D(G_{i-1}(z))


def test_stage_rank_uses_current_critic_and_gogan_rejects_it():
    real = torch.tensor([1.0, 2.0], requires_grad=True)
    fake = torch.tensor([0.5, 1.5], requires_grad=True)
    prev_fake = torch.tensor([0.0, 3.0], requires_grad=True)  # the current D_i on G_{i-1}(z)
    stage_rank_loss(real, fake, prev_fake, m_high=1.0, m_low=0.0).backward()
    assert prev_fake.grad is not None and torch.count_nonzero(prev_fake.grad) > 0
    with pytest.raises(ValueError, match=r"prev_fake_scores requires grad.*previous, frozen discriminator"):
        gogan_rank_loss(real, fake, prev_fake)
    gogan_rank_loss(real, fake, prev_fake.detach()).backward()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_function_equals_module(reduction):
    torch.manual_seed(3)
    real, fake, prev = (torch.randn(5, 1, requires_grad=True) for _ in range(3))
    module = rankplug.StageRankLoss(m_high=0.5, m_low=-0.5, clamp_weight=3.0, reduction=reduction)
    expected = stage_rank_loss(real, fake, prev, m_high=0.5, m_low=-0.5, clamp_weight=3.0, reduction=reduction)
    torch.testing.assert_close(module(real, fake, prev), expected)
    torch.testing.assert_close(
        module.generator_loss(real, fake), stage_rank_generator_loss(real, fake, reduction=reduction)
    )
    torch.testing.assert_close(
        module.clamp_penalty(real, prev), clamp_penalty(real, prev, m_high=0.5, m_low=-0.5, reduction=reduction)
    )
    gogan = rankplug.GoGANRankLoss(margin=0.3, disc_weight=1.0, rank_weight=0.5, reduction=reduction)
    expected = gogan_rank_loss(
        real, fake, prev.detach(), margin=0.3, disc_weight=1.0, rank_weight=0.5, reduction=reduction
    )
    torch.testing.assert_close(gogan(real, fake, prev.detach()), expected)
    torch.testing.assert_close(gogan.generator_loss(fake), wgan_generator_loss(fake, reduction=reduction))


def test_stage_rank_markers_can_be_set_later_overridden_and_saved():
    real, fake, prev = torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([0.5])
    criterion = rankplug.StageRankLoss(clamp_weight=1.0)
    with pytest.raises(ValueError, match="markers m_high and m_low are not set"):
        criterion(real, fake, prev)
    criterion.set_markers(torch.tensor(2.0), 0.0)
    assert criterion(real, fake, prev).item() == pytest.approx(0.5 + (1.0 + 0.5))
    assert criterion(real, fake, prev, m_high=1.0, m_low=1.0).item() == pytest.approx(0.5)
    restored = rankplug.StageRankLoss(clamp_weight=1.0)
    restored.load_state_dict(criterion.state_dict())
    assert (restored.m_high, restored.m_low) == (2.0, 0.0)


def test_gradcheck_float64():
    real = torch.tensor([0.3, 1.7, -0.2, 2.5], dtype=torch.float64, requires_grad=True)
    fake = torch.tensor([0.1, 0.4, 0.9, -1.1], dtype=torch.float64, requires_grad=True)
    prev = torch.tensor([-0.4, 0.1, 1.3, -1.6], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda r, f, p: stage_rank_loss(r, f, p, m_high=1.0, m_low=0.2, clamp_weight=2.0), (real, fake, prev)
    )
    assert torch.autograd.gradcheck(lambda r, f: stage_rank_generator_loss(r, f), (real, fake))
    assert torch.autograd.gradcheck(lambda r, p: clamp_penalty(r, p, m_high=1.0, m_low=0.2), (real, prev))
    frozen = prev.detach()
    assert torch.autograd.gradcheck(
        lambda r, f: gogan_rank_loss(r, f, frozen, margin=0.45, rank_weight=0.5), (real, fake)
    )


@pytest.mark.parametrize("magnitude", [1e4, -1e4])
def test_extreme_scores_give_finite_gradients(magnitude):
    real = torch.full((8,), magnitude, requires_grad=True)
    fake = torch.full((8,), -magnitude, requires_grad=True)
    prev = torch.full((8,), magnitude, requires_grad=True)
    loss = stage_rank_loss(real, fake, prev, m_high=abs(magnitude), m_low=-abs(magnitude))
    loss = loss + gogan_rank_loss(real, fake, prev.detach()) + stage_rank_generator_loss(real, fake)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(t.grad).all() for t in (real, fake, prev))


def test_m_low_above_m_high_is_rejected_everywhere():
    real = fake = prev = torch.zeros(2)
    with pytest.raises(ValueError, match=r"m_low must be <= m_high; got m_low=2.0 and m_high=1.0"):
        stage_rank_loss(real, fake, prev, m_high=1.0, m_low=2.0)
    with pytest.raises(ValueError, match=r"m_low must be <= m_high"):
        clamp_penalty(real, prev, m_high=1.0, m_low=2.0)
    with pytest.raises(ValueError, match=r"m_low must be <= m_high"):
        rankplug.StageRankLoss(m_high=1.0, m_low=2.0)


def _three_hinges(real, fake, prev, m_high, m_low, clamp_weight, reduction):
    """Eq. 4 + clamp_weight * Eq. 6 as three hinges on (N,) tensors, each [u]_+ = relu(u) + 0 u."""
    per = [t.reshape(len(t), -1).mean(1, dtype=torch.promote_types(t.dtype, torch.float32)) for t in (real, fake, prev)]
    r, f, p = per

    def hinge(u):
        return torch.relu(u) + 0.0 * u

    out = hinge(f - p) + clamp_weight * (hinge(m_high - r) + hinge(p - m_low))
    return {"mean": out.mean(), "sum": out.sum(), "none": out}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(16, 1), (16, 1, 1, 1), (16, 1, 3, 2)])
def test_stage_rank_loss_matches_three_hinges_with_gradients_on_mixed_dtypes_and_maps(reduction, shape):
    # Against three separate hinges written out, values and gradients, with scores on both sides of every
    # marker, ties, a float64 score mixed with float32 ones, and (N, 1) / 1x1 / PatchGAN-map scores.
    gen = torch.Generator().manual_seed(3)
    real = torch.randn(shape, generator=gen).requires_grad_(True)
    fake = torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_(True)
    prev = torch.randn(shape, generator=gen).requires_grad_(True)
    with torch.no_grad():
        prev.view(-1)[:2] = real.view(-1)[:2]
    got = stage_rank_loss(real, fake, prev, m_high=0.4, m_low=-0.3, clamp_weight=7.0, reduction=reduction)
    expected = _three_hinges(real, fake, prev, 0.4, -0.3, 7.0, reduction)
    assert got.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    weights = torch.rand_like(expected)
    grads = torch.autograd.grad((got * weights).sum(), [real, fake, prev])
    expected_grads = torch.autograd.grad((expected * weights).sum(), [real, fake, prev])
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("bad", [float("inf"), -float("inf"), float("nan")])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_stage_rank_loss_keeps_a_non_finite_score_non_finite_per_sample(bad, which):
    scores = [torch.tensor([0.5, -0.2, 1.5]) for _ in range(3)]
    scores[which] = scores[which].clone()
    scores[which][1] = bad
    got = stage_rank_loss(*scores, m_high=1.0, m_low=0.0, reduction="none")
    expected = _three_hinges(*scores, 1.0, 0.0, 1000.0, "none")
    assert torch.isnan(got[1]) and torch.isnan(expected[1])
    torch.testing.assert_close(got[[0, 2]], expected[[0, 2]])


def test_per_sample_scores_is_a_view_for_one_score_per_sample_and_a_mean_for_maps():
    from rankplug._validation import per_sample_scores

    column = torch.randn(5, 1)
    assert per_sample_scores(column, "real_scores")._base is column
    single = torch.randn(5, 1, 1, 1)
    assert per_sample_scores(single, "real_scores").data_ptr() == single.data_ptr()
    assert per_sample_scores(single, "real_scores").shape == (5,)
    half = torch.randn(5, 1, dtype=torch.float16)
    out = per_sample_scores(half, "real_scores")
    assert out.dtype == torch.float32 and torch.equal(out, half.float().view(5))
    patch = torch.randn(5, 1, 3, 4, dtype=torch.bfloat16)
    torch.testing.assert_close(per_sample_scores(patch, "real_scores"), patch.float().mean((1, 2, 3)))
    strided = torch.randn(5, 3)[:, 1:2]  # a non-contiguous (N, 1) column
    assert torch.equal(per_sample_scores(strided, "real_scores"), strided[:, 0])


def test_the_batch_clamp_takes_the_batch_means() -> None:
    from rankplug.functional import clamp_penalty, stage_rank_loss

    real = torch.tensor([0.0, 3.0])  # mean 1.5: above m_high = 1 though the first sample is below it
    prev = torch.tensor([-2.0, 1.0])  # mean -0.5: below m_low = 0 though the second sample is above it
    assert float(clamp_penalty(real, prev, m_high=1.0, m_low=0.0, clamp_on="batch")) == 0.0
    assert float(clamp_penalty(real, prev, m_high=1.0, m_low=0.0)) == 1.0  # (1 + 1) / 2, per sample
    per_sample = clamp_penalty(real, prev, m_high=2.0, m_low=-1.0, clamp_on="batch", reduction="none")
    assert per_sample.tolist() == [1.0, 1.0]  # [2 - 1.5]_+ + [-0.5 + 1]_+, the same for every sample
    fake = torch.tensor([0.0, 0.0])
    loss = stage_rank_loss(real, fake, prev, m_high=2.0, m_low=-1.0, clamp_weight=3.0, clamp_on="batch")
    assert float(loss) == pytest.approx(1.0 + 3.0 * 1.0)  # mean of [2, 0] for Eq. 4, plus 3 times the clamp
    with pytest.raises(ValueError, match="clamp_on must be one of"):
        clamp_penalty(real, prev, m_high=1.0, m_low=0.0, clamp_on="median")
