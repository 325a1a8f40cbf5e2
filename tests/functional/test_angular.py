"""maths §6: the additive angular margin (ArcFace) auxiliary classifier, label-geometry paper Eq. 7-8."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import rankplug
from rankplug import AAMAuxClassifier, AdditiveAngularMarginLoss
from rankplug.functional import additive_angular_margin_logits, additive_angular_margin_loss, cosine_with_margin
from tests._strategies import reduce_list

REDUCTIONS = ["mean", "sum", "none"]


@pytest.fixture(autouse=True, scope="module")
def _single_intra_op_thread():
    # These tensors are tiny; on a busy 2-core machine an intra-op thread pool makes each cross_entropy call
    # wait for a scheduler slice (~15 ms instead of ~10 us), which alone would dominate this file's runtime.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Cosines where the floor on sin^2 (1e-12) cannot matter, so the library and the reference agree to 1e-9.
inner_cosine = st.floats(min_value=-(1.0 - 1e-6), max_value=1.0 - 1e-6, allow_nan=False)
# Cosines including the extremes +-1 exactly.
any_cosine = st.one_of(st.floats(min_value=-1.0, max_value=1.0, allow_nan=False), st.sampled_from([-1.0, 1.0, 0.0]))
scale_value = st.floats(min_value=0.5, max_value=64.0, allow_nan=False)
margin_value = st.floats(min_value=0.0, max_value=1.5, allow_nan=False)


@st.composite
def cosine_batches(draw: st.DrawFn, cosine: st.SearchStrategy[float] = inner_cosine) -> tuple[list, list, list]:
    """An ``(N, C)`` cosine matrix, class labels ``(N,)`` and multi-hot targets ``(N, C)``, as Python lists."""
    n = draw(st.integers(1, 5))
    c = draw(st.integers(1, 6))
    rows = [draw(st.lists(cosine, min_size=c, max_size=c)) for _ in range(n)]
    labels = [draw(st.integers(0, c - 1)) for _ in range(n)]
    multi_hot = [[float(draw(st.booleans())) for _ in range(c)] for _ in range(n)]
    return rows, labels, multi_hot


def f64(values: list, *, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def long(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------------------
# Plain Python references, following maths §6 literally.


def psi(theta: float, m: float) -> float:
    """cos(theta + m), with ArcFace's fallback cos(theta) - m sin(m) where theta + m > pi."""
    if theta + m > math.pi:
        return math.cos(theta) - m * math.sin(m)
    return math.cos(theta + m)


def loop_single_label(rows: list, labels: list, s: float, m: float) -> list[float]:
    """Eq. 8: cross entropy on logit_y = s cos(theta_y + m), logit_j = s cos(theta_j), log-softmax by hand."""
    out = []
    for row, y in zip(rows, labels):
        logits = [s * psi(math.acos(c), m) if j == y else s * c for j, c in enumerate(row)]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(z - top) for z in logits))
        out.append(log_z - logits[y])
    return out


def loop_multi_label_logits(row: list, targets: list, s: float, m: float) -> list[float]:
    """rankplug's extension: s psi(theta, m) where t = 1, -s psi(pi - theta, m) where t = 0."""
    return [s * psi(math.acos(c), m) if t == 1.0 else -s * psi(math.pi - math.acos(c), m) for c, t in zip(row, targets)]


def bce(z: float, t: float) -> float:
    """-[t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))], written stably."""
    return max(z, 0.0) - t * z + math.log1p(math.exp(-abs(z)))


def loop_multi_label(rows: list, multi_hot: list, s: float, m: float) -> list[float]:
    return [
        sum(bce(z, t) for z, t in zip(loop_multi_label_logits(row, targets, s, m), targets))
        for row, targets in zip(rows, multi_hot)
    ]


def away_from_fallback_boundary(rows: list, m: float) -> bool:
    """The fallback switches discontinuously at theta + m = pi; keep the two implementations on the same branch."""
    for row in rows:
        for c in row:
            theta = math.acos(c)
            if abs(theta + m - math.pi) < 1e-9 or abs((math.pi - theta) + m - math.pi) < 1e-9:
                return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Against the loop.


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batch=cosine_batches(), s=scale_value, m=margin_value)
@settings(max_examples=30, deadline=None, derandomize=True)
def test_single_label_matches_python_loop(reduction, batch, s, m):
    rows, labels, _ = batch
    assume(away_from_fallback_boundary(rows, m))
    got = additive_angular_margin_loss(f64(rows), long(labels), scale=s, margin=m, reduction=reduction)
    expected = reduce_list(loop_single_label(rows, labels, s, m), reduction)
    assert got.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batch=cosine_batches(), s=scale_value, m=margin_value)
@settings(max_examples=30, deadline=None, derandomize=True)
def test_multi_label_matches_python_loop(reduction, batch, s, m):
    rows, _, multi_hot = batch
    assume(away_from_fallback_boundary(rows, m))
    got = additive_angular_margin_loss(
        f64(rows), f64(multi_hot), scale=s, margin=m, multi_label=True, reduction=reduction
    )
    expected = reduce_list(loop_multi_label(rows, multi_hot, s, m), reduction)
    assert got.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)
    logits = additive_angular_margin_logits(f64(rows), f64(multi_hot), scale=s, margin=m, multi_label=True)
    expected_logits = [loop_multi_label_logits(r, t, s, m) for r, t in zip(rows, multi_hot)]
    assert logits.tolist() == [pytest.approx(r, rel=1e-9, abs=1e-9) for r in expected_logits]


@pytest.mark.parametrize("multi_label", [False, True])
@given(batch=cosine_batches(any_cosine), s=scale_value, m=margin_value)
@settings(max_examples=30, deadline=None, derandomize=True)
def test_matches_python_loop_at_the_extremes(multi_label, batch, s, m):
    # At cos = +-1 the floored sin (1e-6 instead of 0) moves each logit by at most s * 1e-6.
    rows, labels, multi_hot = batch
    assume(away_from_fallback_boundary(rows, m))
    if multi_label:
        got = additive_angular_margin_loss(f64(rows), f64(multi_hot), scale=s, margin=m, multi_label=True)
        expected = reduce_list(loop_multi_label(rows, multi_hot, s, m), "mean")
    else:
        got = additive_angular_margin_loss(f64(rows), long(labels), scale=s, margin=m)
        expected = reduce_list(loop_single_label(rows, labels, s, m), "mean")
    assert got.item() == pytest.approx(expected, rel=1e-6, abs=s * 1e-5)


def test_hand_computed_values():
    # theta = 0 with m = 0.5: cos(0.5); theta = pi/2: cos(pi/2 + 0.5) = -sin(0.5); theta = pi: fallback -1 - 0.5 sin 0.5.
    got = cosine_with_margin(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64), 0.5)
    expected = [math.cos(0.5), -math.sin(0.5), -1.0 - 0.5 * math.sin(0.5)]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    # Two classes, s = 2, m = 0.5, cos = (1, 0), label 0: CE on (2 cos 0.5, 0).
    loss = additive_angular_margin_loss(f64([[1.0, 0.0]]), long([0]), scale=2.0, margin=0.5)
    z = 2.0 * math.cos(0.5)
    assert loss.item() == pytest.approx(math.log(math.exp(z) + 1.0) - z, abs=1e-5)


def test_fallback_is_used_exactly_past_pi():
    m = 0.4
    boundary = -math.cos(m)  # theta + m = pi
    c = f64([boundary + 1e-6, boundary - 1e-6])
    got = cosine_with_margin(c, m).tolist()
    assert got[0] == pytest.approx(math.cos(math.acos(boundary + 1e-6) + m), abs=1e-9)  # still in range
    assert got[1] == pytest.approx((boundary - 1e-6) - m * math.sin(m), abs=1e-12)  # fallback


# ---------------------------------------------------------------------------------------------------------------
# Properties.


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batch=cosine_batches(any_cosine), s=scale_value)
@settings(max_examples=30, deadline=None, derandomize=True)
def test_property_m_zero_equals_cross_entropy_on_scaled_cosine(reduction, batch, s):
    rows, labels, _ = batch
    got = additive_angular_margin_loss(f64(rows), long(labels), scale=s, margin=0.0, reduction=reduction)
    expected = TF.cross_entropy(s * f64(rows), long(labels), reduction=reduction)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batch=cosine_batches(any_cosine), s=scale_value)
@settings(max_examples=30, deadline=None, derandomize=True)
def test_property_multi_label_m_zero_equals_bce_with_logits_summed_over_attributes(reduction, batch, s):
    rows, _, multi_hot = batch
    got = additive_angular_margin_loss(
        f64(rows), f64(multi_hot), scale=s, margin=0.0, multi_label=True, reduction=reduction
    )
    per_sample = TF.binary_cross_entropy_with_logits(s * f64(rows), f64(multi_hot), reduction="none").sum(dim=1)
    expected = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("multi_label", [False, True])
@given(
    seed=st.integers(0, 2**31 - 1),
    feature_factors=st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=4, max_size=4),
    weight_factors=st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=5, max_size=5),
    m=st.floats(min_value=0.0, max_value=1.5),
)
@settings(max_examples=30, deadline=None, derandomize=True)
def test_property_invariant_to_feature_scale_and_weight_row_scale(
    multi_label, seed, feature_factors, weight_factors, m
):
    gen = torch.Generator().manual_seed(seed)
    head = AAMAuxClassifier(12, 5, scale=16.0, margin=m, multi_label=multi_label, reduction="none").double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(5, 12, generator=gen, dtype=torch.float64))
    features = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64)
    if multi_label:
        targets = torch.randint(0, 2, (4, 5), generator=gen).double()
    else:
        targets = torch.randint(0, 5, (4,), generator=gen)
    cosine = head.cosine(features)
    assume(away_from_fallback_boundary(cosine.tolist(), m))
    base = head.loss(head(features), targets)

    scaled_features = features * f64(feature_factors).view(4, 1, 1, 1)
    torch.testing.assert_close(head.loss(head(scaled_features), targets), base, rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        head.weight.mul_(f64(weight_factors).view(5, 1))
    torch.testing.assert_close(head.loss(head(features), targets), base, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(head.loss(head(scaled_features), targets), base, rtol=1e-9, atol=1e-9)


@given(batch=cosine_batches(any_cosine), s=scale_value, margins=st.lists(margin_value, min_size=2, max_size=2))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_property_single_label_never_decreases_in_m_while_theta_plus_m_le_pi(batch, s, margins):
    rows, labels, _ = batch
    small, large = sorted(margins)
    assume(all(math.acos(row[y]) + large <= math.pi for row, y in zip(rows, labels)))
    low = additive_angular_margin_loss(f64(rows), long(labels), scale=s, margin=small, reduction="none")
    high = additive_angular_margin_loss(f64(rows), long(labels), scale=s, margin=large, reduction="none")
    assert (high >= low - 1e-12).all()
    # ... because the target logit s cos(theta_y + m) falls while theta_y + m <= pi, and the others do not move.
    logit_low = additive_angular_margin_logits(f64(rows), long(labels), scale=s, margin=small)
    logit_high = additive_angular_margin_logits(f64(rows), long(labels), scale=s, margin=large)
    target = long(labels).unsqueeze(1)
    assert (logit_high.gather(1, target) <= logit_low.gather(1, target) + 1e-12).all()
    others = torch.ones_like(logit_low, dtype=torch.bool).scatter(1, target, False)
    assert torch.equal(logit_high[others], logit_low[others])
    # A positive margin is strictly harder wherever the target is not already at its worst.
    if large - small > 1e-3:
        worst = [math.acos(row[y]) + large >= math.pi - 1e-6 for row, y in zip(rows, labels)]
        for k, at_worst in enumerate(worst):
            if not at_worst:
                assert logit_high[k, labels[k]] < logit_low[k, labels[k]]


@given(batch=cosine_batches(any_cosine), s=scale_value, margins=st.lists(margin_value, min_size=2, max_size=2))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_property_multi_label_margin_makes_each_attribute_harder(batch, s, margins):
    rows, _, multi_hot = batch
    small, large = sorted(margins)
    cos, t = f64(rows), f64(multi_hot)
    theta = torch.acos(cos)
    # Range: the angle from the named direction (W_k for t = 1, -W_k for t = 0) plus m stays <= pi.
    in_range = torch.where(t > 0.5, theta + large <= math.pi, (math.pi - theta) + large <= math.pi)
    low = additive_angular_margin_logits(cos, t, scale=s, margin=small, multi_label=True)
    high = additive_angular_margin_logits(cos, t, scale=s, margin=large, multi_label=True)
    # In the right direction: the positive logit falls, the negative one rises.
    assert (high[(t > 0.5) & in_range] <= low[(t > 0.5) & in_range] + 1e-12).all()
    assert (high[(t < 0.5) & in_range] >= low[(t < 0.5) & in_range] - 1e-12).all()
    # Each attribute's own BCE never decreases.
    for k in range(cos.shape[1]):
        col = slice(k, k + 1)
        kwargs = {"scale": s, "multi_label": True, "reduction": "none"}
        bce_low = additive_angular_margin_loss(cos[:, col], t[:, col], margin=small, **kwargs)
        bce_high = additive_angular_margin_loss(cos[:, col], t[:, col], margin=large, **kwargs)
        assert (bce_high[in_range[:, k]] >= bce_low[in_range[:, k]] - 1e-12).all()
    if in_range.all():
        whole_low = additive_angular_margin_loss(cos, t, scale=s, margin=small, multi_label=True, reduction="none")
        whole_high = additive_angular_margin_loss(cos, t, scale=s, margin=large, multi_label=True, reduction="none")
        assert (whole_high >= whole_low - 1e-12).all()


def test_multi_label_margin_moves_the_decision_in_the_right_direction():
    # A positive attribute at theta = pi/2 is pushed below 0; a negative one is pushed above 0.
    cos = f64([[0.0, 0.0]])
    logits = additive_angular_margin_logits(cos, f64([[1.0, 0.0]]), scale=1.0, margin=0.3, multi_label=True)
    assert logits.tolist()[0] == pytest.approx([-math.sin(0.3), math.sin(0.3)], abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Numerics: cos(theta + m) must not go through arccos, whose derivative is infinite at +-1.


def _finite_grad(*tensors: torch.Tensor) -> bool:
    return all(t.grad is not None and bool(torch.isfinite(t.grad).all()) for t in tensors)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("extreme", [1.0, -1.0])
@pytest.mark.parametrize("margin", [0.0, 0.3, 1.2])
def test_no_acos_finite_gradient_at_cosine_exactly_plus_minus_one(dtype, multi_label, extreme, margin):
    # With torch.acos, d acos / dc = -1 / sqrt(1 - c^2) is -inf at c = +-1: the gradient is inf or NaN.
    cosine = torch.tensor([[extreme, 0.2, -0.4], [0.1, extreme, 0.3], [extreme, -extreme, extreme]], dtype=dtype)
    cosine.requires_grad_(True)
    if multi_label:
        targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=dtype)
    else:
        targets = torch.tensor([0, 1, 2])
    loss = additive_angular_margin_loss(cosine, targets, scale=16.0, margin=margin, multi_label=multi_label)
    loss.backward()
    assert torch.isfinite(loss)
    assert _finite_grad(cosine)
    logits = additive_angular_margin_logits(cosine, targets, scale=16.0, margin=margin, multi_label=multi_label)
    (grad,) = torch.autograd.grad(logits.sum(), cosine)
    assert torch.isfinite(grad).all()
    # Each logit's slope in its own cosine is at most s (s cos m on the floored branch, s on the fallback).
    assert grad.abs().max() <= 16.0 * 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cosine_with_margin_gradient_is_finite_and_exact_at_the_extremes(dtype):
    c = torch.tensor([1.0, -1.0], dtype=dtype, requires_grad=True)
    cosine_with_margin(c, 0.3).sum().backward()
    # d/dc [c cos m - sin(theta) sin m] at c = 1 with the floored (constant) sin: cos m. At c = -1, fallback: 1.
    assert c.grad.tolist() == pytest.approx([math.cos(0.3), 1.0], abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("weight_kind", ["exact", "random"])
def test_no_acos_finite_gradient_for_feature_equal_or_opposite_to_class_weight(dtype, multi_label, weight_kind):
    torch.manual_seed(11)
    head = AAMAuxClassifier(4, 3, scale=16.0, margin=0.5, multi_label=multi_label).to(dtype)
    with torch.no_grad():
        if weight_kind == "exact":  # normalisation is exact, so cos = +-1.0 exactly
            head.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0]]))
        else:
            head.weight.copy_(torch.randn(3, 4))
    w = head.weight.detach()
    features = torch.stack([3 * w[0], -w[0], w[1], -2 * w[1], w[2], -w[2]]).requires_grad_(True)
    cosine = head.cosine(features).detach()
    assert cosine[0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert cosine[1, 0].item() == pytest.approx(-1.0, abs=1e-6)
    if weight_kind == "exact":
        assert cosine[0, 0].item() == 1.0 and cosine[1, 0].item() == -1.0
    if multi_label:
        targets = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1]], dtype=dtype)
    else:
        targets = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = head.loss(head(features), targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert _finite_grad(features, head.weight)
    # The gradient reaching a feature is bounded by a few s / ||phi|| (maths §6 numerics), not blown up.
    bound = 4 * 16.0 / features.detach().norm(dim=1, keepdim=True) / len(features)
    assert (features.grad.norm(dim=1, keepdim=True) <= bound).all()


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_no_acos_finite_gradient_under_cpu_autocast_with_linear_backbone(multi_label, dtype):
    # Integer weights are exact in bf16/fp16, so the backbone emits features exactly equal / opposite to W_0, W_1.
    class_weights = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0]])
    backbone = nn.Linear(3, 4, bias=False)
    with torch.no_grad():
        backbone.weight.copy_(class_weights.T)
    head = AAMAuxClassifier(4, 3, scale=16.0, margin=0.5, multi_label=multi_label)
    with torch.no_grad():
        head.weight.copy_(class_weights)
    torch.manual_seed(12)
    x = torch.cat([torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 2.0, 0], [0, -1.0, 0]]), torch.randn(4, 3)])
    if multi_label:
        targets = torch.randint(0, 2, (8, 3)).float()
        targets[:4, 0] = torch.tensor([1.0, 1.0, 0.0, 0.0])
    else:
        targets = torch.tensor([0, 0, 1, 1, 2, 0, 1, 2])
    try:
        with torch.autocast("cpu", dtype=dtype):
            features = backbone(x)
            logits = head(features)
            loss = head.loss(logits, targets)
    except RuntimeError as err:  # pragma: no cover - depends on the torch build
        if "16" in str(err) or "Half" in str(err) or "dtype" in str(err):
            pytest.skip(f"CPU autocast to {dtype} unsupported here: {err}")
        raise
    assert features.dtype == dtype  # autocast really ran the backbone in half precision
    assert logits.dtype == torch.float32  # ... and the head computed in float32
    assert head.cosine(features.float())[0, 0].item() == 1.0
    assert head.cosine(features.float())[1, 0].item() == -1.0
    loss.backward()
    assert torch.isfinite(loss)
    assert _finite_grad(backbone.weight, head.weight)


# ---------------------------------------------------------------------------------------------------------------
# gradcheck.


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_loss_float64(multi_label, reduction):
    gen = torch.Generator().manual_seed(13)
    m = 0.3
    # |cos| <= 0.9 < cos(0.3) = 0.955: away from both fallback boundaries (c = -cos m and, multi-label, c = cos m).
    cosine = (torch.rand(5, 4, generator=gen, dtype=torch.float64) * 1.8 - 0.9).requires_grad_(True)
    if multi_label:
        targets = torch.randint(0, 2, (5, 4), generator=gen).double()
    else:
        targets = torch.randint(0, 4, (5,), generator=gen)
    assert torch.autograd.gradcheck(
        lambda c: additive_angular_margin_loss(
            c, targets, scale=8.0, margin=m, multi_label=multi_label, reduction=reduction
        ),
        (cosine,),
    )


@pytest.mark.parametrize("multi_label", [False, True])
def test_gradcheck_head_loss_wrt_features_and_weight_float64(multi_label):
    torch.manual_seed(14)
    head = AAMAuxClassifier(8, 4, scale=8.0, margin=0.3, multi_label=multi_label).double()
    features = torch.randn(5, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert (head.cosine(features).abs() < 0.9).all()  # away from the fallback boundaries
    targets = torch.randint(0, 2, (5, 4)).double() if multi_label else torch.randint(0, 4, (5,))
    assert torch.autograd.gradcheck(lambda x: head.loss(head(x), targets), (features,))

    def by_weight(weight: torch.Tensor) -> torch.Tensor:
        logits = torch.func.functional_call(head, {"weight": weight}, (features.detach(),))
        return head.loss(logits, targets)

    weight = head.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(by_weight, (weight,))


# ---------------------------------------------------------------------------------------------------------------
# Function equals module.


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_function_equals_module(multi_label, reduction):
    gen = torch.Generator().manual_seed(15)
    cosine = (torch.rand(6, 5, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    targets = torch.randint(0, 2, (6, 5), generator=gen).double() if multi_label else torch.randint(0, 5, (6,))
    kwargs = {"scale": 12.0, "margin": 0.4, "multi_label": multi_label, "reduction": reduction}
    by_module = AdditiveAngularMarginLoss(**kwargs)(cosine, targets)
    by_function = additive_angular_margin_loss(cosine, targets, **kwargs)
    torch.testing.assert_close(by_module, by_function, rtol=0, atol=0)
    (g_module,) = torch.autograd.grad(by_module.sum(), cosine)
    (g_function,) = torch.autograd.grad(by_function.sum(), cosine)
    torch.testing.assert_close(g_module, g_function, rtol=0, atol=0)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_head_loss_equals_function_on_its_cosine(multi_label, reduction):
    torch.manual_seed(16)
    head = AAMAuxClassifier(12, 5, scale=20.0, margin=0.35, multi_label=multi_label, reduction=reduction).double()
    features = torch.randn(6, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 2, (6, 5)).double() if multi_label else torch.randint(0, 5, (6,))
    by_head = head.loss(head(features), targets)
    by_function = additive_angular_margin_loss(
        head.cosine(features), targets, scale=20.0, margin=0.35, multi_label=multi_label, reduction=reduction
    )
    torch.testing.assert_close(by_head, by_function, rtol=1e-12, atol=1e-12)
    g_head = torch.autograd.grad(by_head.sum(), [features, head.weight])
    g_function = torch.autograd.grad(by_function.sum(), [features, head.weight])
    for a, b in zip(g_head, g_function):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        head.margin_logits(head(features), targets),
        additive_angular_margin_logits(
            head.cosine(features), targets, scale=20.0, margin=0.35, multi_label=multi_label
        ),
    )


def test_head_defaults():
    head = AAMAuxClassifier(8, 3)
    assert head.scale == rankplug.heads.DEFAULT_AAM_SCALE and head.margin == rankplug.heads.DEFAULT_AAM_MARGIN
    assert head.multi_label is False and head.reduction == "mean"


# ---------------------------------------------------------------------------------------------------------------
# The head: forward, from_conv, from_linear.


def _reference_cosine(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return TF.normalize(features.flatten(1), dim=1) @ TF.normalize(weight.flatten(1), dim=1).T


@pytest.mark.parametrize("shape", [(6, 12), (6, 3, 2, 2), (6, 12, 1, 1)])
def test_forward_is_scaled_cosine_without_margin(shape):
    torch.manual_seed(17)
    head = AAMAuxClassifier(12, 5, scale=7.0, margin=0.5).double()
    features = torch.randn(shape, dtype=torch.float64)
    out = head(features)
    assert out.shape == (6, 5)
    torch.testing.assert_close(out, 7.0 * _reference_cosine(features, head.weight), rtol=1e-12, atol=1e-12)
    assert (out.abs() <= 7.0 + 1e-9).all()


@pytest.mark.parametrize("multi_label", [False, True])
def test_from_conv_reuses_parameter_and_is_the_cosine_of_the_conv(multi_label):
    torch.manual_seed(18)
    c, s_map, c_dim = 16, 2, 5  # StarGAN: conv2 = Conv2d(C, c_dim, kernel_size=S, bias=False) on (N, C, S, S)
    conv = nn.Conv2d(c, c_dim, kernel_size=s_map, bias=False).double()
    head = AAMAuxClassifier.from_conv(conv, scale=10.0, margin=0.2, multi_label=multi_label)
    assert head.weight is conv.weight
    assert head.in_features == c * s_map * s_map and head.num_classes == c_dim
    assert head.scale == 10.0 and head.margin == 0.2 and head.multi_label is multi_label
    h = torch.randn(6, c, s_map, s_map, dtype=torch.float64)
    expected = 10.0 * TF.normalize(h.flatten(1), dim=1) @ TF.normalize(conv.weight.flatten(1), dim=1).T
    torch.testing.assert_close(head(h), expected, rtol=1e-12, atol=1e-12)
    # The conv is a linear map of the flattened features; the head is its cosine version.
    raw = conv(h).flatten(1)
    norms = h.flatten(1).norm(dim=1, keepdim=True) * conv.weight.flatten(1).norm(dim=1)
    torch.testing.assert_close(head(h), 10.0 * raw / norms, rtol=1e-10, atol=1e-10)


def test_from_linear_reuses_parameter_and_is_the_cosine_of_the_linear():
    torch.manual_seed(19)
    linear = nn.Linear(12, 4, bias=False).double()
    head = AAMAuxClassifier.from_linear(linear, scale=5.0, margin=0.1, reduction="sum")
    assert head.weight is linear.weight
    assert head.in_features == 12 and head.num_classes == 4 and head.reduction == "sum"
    x = torch.randn(3, 12, dtype=torch.float64)
    expected = 5.0 * TF.normalize(x, dim=1) @ TF.normalize(linear.weight, dim=1).T
    torch.testing.assert_close(head(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        head(x), 5.0 * linear(x) / (x.norm(dim=1, keepdim=True) * linear.weight.norm(dim=1)), rtol=1e-10, atol=1e-10
    )


class _StarGANLikeDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(3, 8, 4, stride=2, padding=1), nn.LeakyReLU(0.01))
        self.conv1 = nn.Conv2d(8, 1, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 5, kernel_size=4, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        return self.conv1(h), self.conv2(h).view(x.shape[0], -1)


def test_from_conv_keeps_state_dict_keys_checkpoints_and_optimizer():
    torch.manual_seed(20)
    parent = _StarGANLikeDiscriminator()
    keys_before = list(parent.state_dict())
    saved = {k: v.clone() for k, v in parent.state_dict().items()}
    optimizer = torch.optim.SGD(parent.parameters(), lr=0.1)
    old_weight = parent.conv2.weight

    parent.conv2 = AAMAuxClassifier.from_conv(parent.conv2, multi_label=True)
    assert list(parent.state_dict()) == keys_before
    assert parent.conv2.weight is old_weight

    # A checkpoint saved before the replacement (softmax head) loads strictly.
    with torch.no_grad():
        parent.conv2.weight.add_(1.0)
    result = parent.load_state_dict(saved, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(parent.conv2.weight, saved["conv2.weight"], rtol=0, atol=0)

    # The optimizer built on the old parameters still updates the head's weight.
    x = torch.randn(4, 3, 8, 8)
    _, logits = parent(x)
    assert logits.shape == (4, 5)
    targets = torch.randint(0, 2, (4, 5)).float()
    before = parent.conv2.weight.detach().clone()
    optimizer.zero_grad()
    parent.conv2.loss(logits, targets).backward()
    assert parent.conv2.weight.grad is not None and torch.count_nonzero(parent.conv2.weight.grad) > 0
    optimizer.step()
    assert not torch.equal(parent.conv2.weight.detach(), before)
    assert parent.conv2.weight is old_weight


def test_from_linear_keeps_state_dict_keys_and_optimizer():
    torch.manual_seed(21)
    parent = nn.Module()
    parent.fc = nn.Linear(6, 3, bias=False)
    keys_before = list(parent.state_dict())
    saved = {k: v.clone() for k, v in parent.state_dict().items()}
    optimizer = torch.optim.SGD(parent.parameters(), lr=0.1)
    parent.fc = AAMAuxClassifier.from_linear(parent.fc)
    assert list(parent.state_dict()) == keys_before
    parent.load_state_dict(saved, strict=True)
    before = parent.fc.weight.detach().clone()
    x = torch.randn(5, 6)
    parent.fc.loss(parent.fc(x), torch.tensor([0, 1, 2, 0, 1])).backward()
    optimizer.step()
    assert not torch.equal(parent.fc.weight.detach(), before)


def test_from_conv_and_from_linear_reject_a_bias():
    with pytest.raises(ValueError, match=re.escape("conv has a bias; expected bias=False")):
        AAMAuxClassifier.from_conv(nn.Conv2d(8, 5, kernel_size=2, bias=True))
    with pytest.raises(ValueError, match=re.escape("linear has a bias; expected bias=False")):
        AAMAuxClassifier.from_linear(nn.Linear(8, 5, bias=True))


def test_from_conv_and_from_linear_reject_the_wrong_layer():
    with pytest.raises(TypeError, match=re.escape("conv must be a torch.nn.Conv2d; got Linear")):
        AAMAuxClassifier.from_conv(nn.Linear(8, 5, bias=False))
    with pytest.raises(TypeError, match=re.escape("linear must be a torch.nn.Linear; got Conv2d")):
        AAMAuxClassifier.from_linear(nn.Conv2d(8, 5, 2, bias=False))
    with pytest.raises(ValueError, match="conv must have groups=1, padding=0 and dilation=1"):
        AAMAuxClassifier.from_conv(nn.Conv2d(8, 5, 2, padding=1, bias=False))


# ---------------------------------------------------------------------------------------------------------------
# Bad input: every case raises the documented error, naming the argument and the expected value.

COS = torch.rand(4, 5) * 2 - 1
LABELS = torch.tensor([0, 1, 4, 2])
MULTI_HOT = torch.tensor([[1.0, 0, 0, 1, 0]] * 4)


def call_loss(cosine=COS, targets=LABELS, **kwargs):
    settings_ = {"scale": 16.0, "margin": 0.3, **kwargs}
    return additive_angular_margin_loss(cosine, targets, **settings_)


def test_good_input_is_accepted():
    assert torch.isfinite(call_loss())
    assert torch.isfinite(call_loss(targets=MULTI_HOT, multi_label=True))


BAD_INPUT = [
    ({"targets": torch.tensor([0, 1, 5, 2])}, ValueError, "targets must be class indices in [0, 4]; found 5"),
    ({"targets": torch.tensor([0, -1, 2, 2])}, ValueError, "targets must be class indices in [0, 4]; found -1"),
    ({"targets": LABELS.float()}, TypeError, "targets must be integer class indices (e.g. torch.long)"),
    ({"targets": LABELS.bool()}, TypeError, "targets must be integer class indices"),
    ({"targets": [0, 1, 2, 3]}, TypeError, "targets must be a torch.Tensor; got list"),
    (
        {"targets": LABELS.view(4, 1)},
        ValueError,
        "targets has shape (4, 1); expected (4,) class indices when multi_label=False",
    ),
    (
        {"targets": torch.tensor([0, 1, 2])},
        ValueError,
        "targets has shape (3,); expected (4,) class indices when multi_label=False",
    ),
    (
        {"targets": MULTI_HOT * 0.5, "multi_label": True},
        ValueError,
        "targets must be multi-hot with values in {0, 1}; found 0.5",
    ),
    (
        {"targets": MULTI_HOT * -1.0, "multi_label": True},
        ValueError,
        "targets must be multi-hot with values in {0, 1}; found -1.0",
    ),
    (
        {"targets": MULTI_HOT.long(), "multi_label": True},
        TypeError,
        "targets must be a multi-hot floating-point tensor when multi_label=True",
    ),
    (
        {"targets": LABELS.float(), "multi_label": True},
        ValueError,
        "targets has shape (4,); expected (4, 5) multi-hot targets when multi_label=True",
    ),
    ({"scale": 0.0}, ValueError, "scale must be > 0; got 0.0"),
    ({"scale": -2.0}, ValueError, "scale must be > 0; got -2.0"),
    ({"margin": -0.1}, ValueError, "margin must be an angle in radians in [0, pi/2); got -0.1"),
    ({"margin": math.pi / 2}, ValueError, f"margin must be an angle in radians in [0, pi/2); got {math.pi / 2}"),
    ({"margin": 30.0}, ValueError, "margin must be an angle in radians in [0, pi/2); got 30.0"),
    ({"margin": "0.3"}, TypeError, "margin must be a real number; got str"),
    ({"margin": None}, TypeError, "margin must be a real number; got NoneType"),
    ({"reduction": "max"}, ValueError, "reduction must be one of 'mean', 'sum' or 'none'; got 'max'"),
    ({"cosine": COS[0]}, ValueError, "cosine has shape (5,); expected (N, C)"),
    ({"cosine": COS.view(4, 5, 1)}, ValueError, "cosine has shape (4, 5, 1); expected (N, C)"),
    (
        {"cosine": COS[:0], "targets": LABELS[:0]},
        ValueError,
        "cosine is an empty batch (shape (0, 5)); expected N >= 1",
    ),
    ({"cosine": COS.long()}, TypeError, "cosine must have a floating-point dtype"),
]


@pytest.mark.parametrize(("overrides", "error", "message"), BAD_INPUT, ids=[m[:40] for _, _, m in BAD_INPUT])
def test_loss_rejects_bad_input(overrides, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call_loss(**overrides)
    # The module twin raises the same error, at construction for settings or at call time for tensors.
    tensors = {k: overrides.pop(k) for k in ("cosine", "targets") if k in overrides}
    with pytest.raises(error, match=re.escape(message)):
        module = AdditiveAngularMarginLoss(**{"scale": 16.0, "margin": 0.3, **overrides})
        module(tensors.get("cosine", COS), tensors.get("targets", LABELS))


BAD_SETTINGS = [
    ({"scale": 0.0}, ValueError, "scale must be > 0; got 0.0"),
    ({"margin": -0.1}, ValueError, "margin must be an angle in radians in [0, pi/2); got -0.1"),
    ({"margin": 1.6}, ValueError, "margin must be an angle in radians in [0, pi/2); got 1.6"),
    ({"margin": "x"}, TypeError, "margin must be a real number; got str"),
    ({"reduction": "avg"}, ValueError, "reduction must be one of 'mean', 'sum' or 'none'; got 'avg'"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_SETTINGS, ids=[m[:30] for _, _, m in BAD_SETTINGS])
def test_settings_fail_at_construction(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        AdditiveAngularMarginLoss(**{"scale": 16.0, "margin": 0.3, **kwargs})
    with pytest.raises(error, match=re.escape(message)):
        AAMAuxClassifier(8, 5, **kwargs)
    with pytest.raises(error, match=re.escape(message)):
        AAMAuxClassifier.from_conv(nn.Conv2d(2, 5, kernel_size=2, bias=False), **kwargs)
    with pytest.raises(error, match=re.escape(message)):
        AAMAuxClassifier.from_linear(nn.Linear(8, 5, bias=False), **kwargs)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0, 5), ValueError, "in_features must be an int >= 1; got 0"),
        ((8, 0), ValueError, "num_classes must be an int >= 1; got 0"),
        ((8, -2), ValueError, "num_classes must be an int >= 1; got -2"),
        ((8.0, 5), TypeError, "in_features must be an int >= 1; got float"),
    ],
)
def test_head_rejects_bad_sizes(args, error, message):
    with pytest.raises(error, match=re.escape(message)):
        AAMAuxClassifier(*args)


def test_head_rejects_a_weight_of_the_wrong_shape():
    with pytest.raises(ValueError, match=re.escape("weight has shape (5, 7); expected (5, 8)")):
        AAMAuxClassifier(8, 5, weight=nn.Parameter(torch.randn(5, 7)))
    with pytest.raises(TypeError, match=re.escape("weight must be an nn.Parameter; got Tensor")):
        AAMAuxClassifier(8, 5, weight=torch.randn(5, 8))


def test_head_loss_rejects_logits_with_wrong_number_of_classes():
    head = AAMAuxClassifier(8, 5)
    with pytest.raises(ValueError, match=re.escape("logits has shape (4, 3); expected (N, 5)")):
        head.loss(torch.randn(4, 3), LABELS)
    with pytest.raises(ValueError, match=re.escape("logits has shape (4,); expected (N, 5)")):
        head.loss(torch.randn(4), LABELS)
    with pytest.raises(TypeError, match="logits must have a floating-point dtype"):
        head.loss(torch.ones(4, 5, dtype=torch.long), LABELS)


def test_head_loss_rejects_bad_targets():
    head = AAMAuxClassifier(8, 5)
    logits = head(torch.randn(4, 8))
    with pytest.raises(ValueError, match=re.escape("targets must be class indices in [0, 4]; found 7")):
        head.loss(logits, torch.tensor([0, 1, 7, 2]))
    with pytest.raises(TypeError, match="targets must be integer class indices"):
        head.loss(logits, LABELS.double())
    multi = AAMAuxClassifier(8, 5, multi_label=True)
    with pytest.raises(ValueError, match=re.escape("targets must be multi-hot with values in {0, 1}; found 2.0")):
        multi.loss(multi(torch.randn(4, 8)), MULTI_HOT * 2)
    with pytest.raises(TypeError, match="targets must be a multi-hot floating-point tensor"):
        multi.loss(multi(torch.randn(4, 8)), MULTI_HOT.long())


def test_head_rejects_features_with_wrong_in_features():
    head = AAMAuxClassifier(12, 5)
    message = "features has shape (4, 3, 2, 3), i.e. 18 features per sample; expected (N, *) with 12 features"
    with pytest.raises(ValueError, match=re.escape(message)):
        head(torch.randn(4, 3, 2, 3))
    with pytest.raises(ValueError, match=re.escape("features is an empty batch (shape (0, 12)); expected N >= 1")):
        head(torch.randn(0, 12))


def test_scale_and_margin_are_validated_when_changed_later():
    head = AAMAuxClassifier(8, 5, scale=16.0, margin=0.3)
    head.margin = 0.1  # a margin warm-up
    head.scale = 8.0
    assert (head.margin, head.scale) == (0.1, 8.0)
    with pytest.raises(ValueError, match=re.escape("margin must be an angle in radians in [0, pi/2); got 2.0")):
        head.margin = 2.0
    with pytest.raises(ValueError, match=re.escape("scale must be > 0; got -1.0")):
        head.scale = -1.0
    assert list(head.state_dict()) == ["weight"]  # settings are not state: softmax checkpoints still load


def test_from_conv_rejects_a_dilated_conv():
    with pytest.raises(ValueError, match="conv must have groups=1, padding=0 and dilation=1"):
        AAMAuxClassifier.from_conv(nn.Conv2d(8, 5, 2, dilation=2, bias=False))


# ---------------------------------------------------------------------------------------------------------------
# The head's loss on its own logits s cos(theta) against the function on its cosines, and torch.compile.


@pytest.mark.parametrize("kind", ["equal", "opposite"])
def test_head_loss_gradients_at_the_extremes_equal_the_function_on_its_cosine(kind):
    torch.manual_seed(22)
    head = AAMAuxClassifier(6, 4, scale=16.0, margin=0.3).double()
    labels = torch.tensor([0, 1, 2, 3])
    sign = 1.0 if kind == "equal" else -1.0
    features = (sign * 3.0 * head.weight.detach()[labels]).requires_grad_(True)  # cos(theta_y) = +-1 exactly
    got = torch.autograd.grad(head.loss(head(features), labels), [features, head.weight])
    by_function = additive_angular_margin_loss(head.cosine(features), labels, scale=16.0, margin=0.3)
    expected = torch.autograd.grad(by_function, [features, head.weight])
    for a, b in zip(got, expected):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_head_loss_follows_a_changed_margin_and_dtype():
    torch.manual_seed(23)
    head = AAMAuxClassifier(8, 5, scale=10.0, margin=0.1)
    features, labels = torch.randn(6, 8), torch.randint(5, (6,))
    head.loss(head(features), labels)
    head.margin = 0.4
    fresh = AAMAuxClassifier(8, 5, scale=10.0, margin=0.4)
    fresh.weight = nn.Parameter(head.weight.detach().clone())
    torch.testing.assert_close(head.loss(head(features), labels), fresh.loss(fresh(features), labels))
    head.double()
    value = head.loss(head(features.double()), labels)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value.float(), fresh.loss(fresh(features), labels), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("multi_label", [False, True])
def test_head_compiles_with_fullgraph_to_the_same_values_and_gradients(multi_label):
    torch._dynamo.reset()
    torch.manual_seed(27)
    head = AAMAuxClassifier(8, 5, scale=16.0, margin=0.3, multi_label=multi_label)
    features = torch.randn(6, 8)
    features[0] = 2.0 * head.weight.detach()[0]  # cos(theta_y) at or next to 1
    targets = torch.randint(0, 2, (6, 5)).float() if multi_label else torch.tensor([0, 1, 2, 3, 4, 0])

    def step(x: torch.Tensor) -> torch.Tensor:
        return head.loss(head(x), targets)

    eager_in, compiled_in = features.clone().requires_grad_(True), features.clone().requires_grad_(True)
    eager = step(eager_in)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(compiled_in)
    torch.testing.assert_close(compiled, eager)
    eager.backward()
    compiled.backward()
    assert torch.isfinite(compiled_in.grad).all()
    torch.testing.assert_close(compiled_in.grad, eager_in.grad)
    torch._dynamo.reset()
