"""maths §5: MBGAN's metric (triplet) discriminator, Eq. 1, 2 and the data-dependent margin of Eq. 4."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rankplug
from rankplug.functional import (
    data_dependent_margin,
    embedding_distance,
    triplet_metric_discriminator_loss,
    triplet_metric_generator_loss,
)
from tests._strategies import hinge, reduce_list

REDUCTIONS = ["mean", "sum", "none"]
MARGIN_NORMS = ["mean", "sum"]

coordinate = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, allow_infinity=False)
pixel = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_infinity=False)
alpha_value = st.floats(min_value=0.0, max_value=50.0, allow_nan=False, allow_infinity=False)


@st.composite
def triplet_batches(draw: st.DrawFn, max_n: int = 6, max_k: int = 6) -> dict:
    """Three embedding batches ``(N, K)`` and two image batches ``(N, C, H, W)``, as nested Python lists."""
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    image_shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pixels = math.prod(image_shape)

    def rows(width: int, values: st.SearchStrategy[float]) -> list[list[float]]:
        return [draw(st.lists(values, min_size=width, max_size=width)) for _ in range(n)]

    return {
        "anchor": rows(k, coordinate),
        "positive": rows(k, coordinate),
        "fake": rows(k, coordinate),
        "positive_images": rows(pixels, pixel),
        "fake_images": rows(pixels, pixel),
        "image_shape": image_shape,
    }


def emb(rows: list[list[float]], *, grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


def images(rows: list[list[float]], shape: tuple[int, ...], *, grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), *shape).requires_grad_(grad)


def tensors(batch: dict, *, grad: bool = False) -> tuple[torch.Tensor, ...]:
    shape = batch["image_shape"]
    return (
        emb(batch["anchor"], grad=grad),
        emb(batch["positive"], grad=grad),
        emb(batch["fake"], grad=grad),
        images(batch["positive_images"], shape),
        images(batch["fake_images"], shape),
    )


# ---------------------------------------------------------------------------------------------------------------
# Plain Python references, following maths §5 literally.


def loop_distance(a: list[float], b: list[float]) -> float:
    """d(a, b) = ||a - b||_2."""
    return math.sqrt(sum((a_i - b_i) ** 2 for a_i, b_i in zip(a, b)))


def loop_margin(x_j: list[float], g_z: list[float], alpha: float, margin_norm: str) -> float:
    """Eq. 4: h = alpha * ||x_j - G(z)||_1, the L1 norm a per-pixel mean ("mean") or a sum over pixels ("sum")."""
    l1 = sum(abs(p - q) for p, q in zip(x_j, g_z))
    if margin_norm == "mean":
        l1 /= len(x_j)
    return alpha * l1


def loop_discriminator(batch: dict, alpha: float, margin_norm: str) -> list[float]:
    """Eq. 1: [h(x_j, G(z)) + d(x_i, x_j) - d(x_i, G(z))]_+ for each k."""
    out = []
    for k in range(len(batch["anchor"])):
        h = loop_margin(batch["positive_images"][k], batch["fake_images"][k], alpha, margin_norm)
        d_ap = loop_distance(batch["anchor"][k], batch["positive"][k])
        d_af = loop_distance(batch["anchor"][k], batch["fake"][k])
        out.append(hinge(h + d_ap - d_af))
    return out


def loop_generator(batch: dict) -> list[float]:
    """Eq. 2: d(x_j, G(z)) for each k."""
    return [loop_distance(batch["positive"][k], batch["fake"][k]) for k in range(len(batch["positive"]))]


def disc(anchor, positive, fake, x_j, g_z, **kwargs):
    return triplet_metric_discriminator_loss(anchor, positive, fake, positive_images=x_j, fake_images=g_z, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Against the loop.


@pytest.mark.parametrize("margin_norm", MARGIN_NORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batch=triplet_batches(), alpha=alpha_value)
@settings(max_examples=25, deadline=None, derandomize=True)
def test_discriminator_loss_matches_python_loop(reduction, margin_norm, batch, alpha):
    got = disc(*tensors(batch), alpha=alpha, margin_norm=margin_norm, reduction=reduction)
    expected = reduce_list(loop_discriminator(batch, alpha, margin_norm), reduction)
    if reduction == "none":
        assert got.shape == (len(batch["anchor"]),)
    else:
        assert got.dim() == 0
    assert got.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("margin_norm", MARGIN_NORMS)
@given(batch=triplet_batches(), alpha=alpha_value)
@settings(max_examples=25, deadline=None, derandomize=True)
def test_data_dependent_margin_matches_python_loop(margin_norm, batch, alpha):
    _, _, _, x_j, g_z = tensors(batch)
    got = data_dependent_margin(x_j, g_z, alpha=alpha, margin_norm=margin_norm)
    expected = [loop_margin(p, q, alpha, margin_norm) for p, q in zip(batch["positive_images"], batch["fake_images"])]
    assert got.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("margin_norm", MARGIN_NORMS)
def test_margin_accepts_images_of_shape_n(margin_norm):
    # The documented image shape is (N, *), which includes (N,): one value per sample, h_k = alpha |x_j - G(z)|.
    x_j = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    g_z = torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64)
    got = data_dependent_margin(x_j, g_z, alpha=2.0, margin_norm=margin_norm)
    assert got.tolist() == pytest.approx([1.0, 2.0, 4.0], abs=1e-12)
    anchor, positive, fake = (torch.zeros(3, 2, dtype=torch.float64) for _ in range(3))
    loss = disc(anchor, positive, fake, x_j, g_z, alpha=2.0, margin_norm=margin_norm, reduction="none")
    assert loss.tolist() == pytest.approx([1.0, 2.0, 4.0], abs=1e-12)


def test_margin_rejects_images_without_pixels():
    # (N, 0) images have no L1 norm to average: a per-pixel mean over nothing is NaN, which must not pass silently.
    with pytest.raises(ValueError, match="positive_images"):
        data_dependent_margin(torch.rand(4, 0), torch.rand(4, 0))


def test_margin_norms_differ_by_the_pixel_count():
    x_j, g_z = torch.zeros(2, 3, 4, 5, dtype=torch.float64), torch.full((2, 3, 4, 5), 0.1, dtype=torch.float64)
    mean = data_dependent_margin(x_j, g_z, alpha=20.0)  # default: per-pixel mean
    total = data_dependent_margin(x_j, g_z, alpha=20.0, margin_norm="sum")
    torch.testing.assert_close(mean, torch.full((2,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(total, torch.full((2,), 120.0, dtype=torch.float64))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(batch=triplet_batches())
@settings(max_examples=30, deadline=None, derandomize=True)
def test_generator_loss_matches_python_loop(reduction, batch):
    got = triplet_metric_generator_loss(emb(batch["positive"]), emb(batch["fake"]), reduction=reduction)
    expected = reduce_list(loop_generator(batch), reduction)
    assert got.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_hand_computed_example():
    # h = 20 * mean|0 - 0.1| = 2, d(a, p) = 1, d(a, f) = 2: [2 + 1 - 2]_+ = 1. Generator: d(p, f) = sqrt(5).
    anchor = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    positive = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    fake = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    x_j, g_z = torch.zeros(1, 4, dtype=torch.float64), torch.full((1, 4), 0.1, dtype=torch.float64)
    assert disc(anchor, positive, fake, x_j, g_z, alpha=20.0).item() == pytest.approx(1.0, abs=1e-12)
    assert triplet_metric_generator_loss(positive, fake).item() == pytest.approx(math.sqrt(5.0), abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Function equals module.


def _random_triplet(seed: int, n: int = 5, k: int = 7) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    embs = [torch.randn(n, k, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    x_j = torch.rand(n, 1, 4, 4, generator=gen, dtype=torch.float64)
    g_z = torch.rand(n, 1, 4, 4, generator=gen, dtype=torch.float64)
    return (*embs, x_j, g_z)


def _grads(loss: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    target = loss if loss.dim() == 0 else loss.sum()
    return torch.autograd.grad(target, inputs)


@pytest.mark.parametrize("margin_norm", MARGIN_NORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_discriminator_function_equals_module(reduction, margin_norm):
    anchor, positive, fake, x_j, g_z = _random_triplet(0)
    alpha = 7.0 if margin_norm == "mean" else 0.3
    module = rankplug.TripletMetricDiscriminatorLoss(alpha=alpha, margin_norm=margin_norm, reduction=reduction)
    by_module = module(anchor, positive, fake, positive_images=x_j, fake_images=g_z)
    by_function = disc(anchor, positive, fake, x_j, g_z, alpha=alpha, margin_norm=margin_norm, reduction=reduction)
    # Some hinges active, some not, so the comparison sees both branches.
    per_sample = disc(anchor, positive, fake, x_j, g_z, alpha=alpha, margin_norm=margin_norm, reduction="none")
    assert (per_sample > 0).any()
    torch.testing.assert_close(by_module, by_function, rtol=0, atol=0)
    for a, b in zip(_grads(by_module, [anchor, positive, fake]), _grads(by_function, [anchor, positive, fake])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_generator_function_equals_module(reduction):
    _, positive, fake, _, _ = _random_triplet(1)
    by_module = rankplug.TripletMetricGeneratorLoss(reduction=reduction)(positive, fake)
    by_function = triplet_metric_generator_loss(positive, fake, reduction=reduction)
    torch.testing.assert_close(by_module, by_function, rtol=0, atol=0)
    for a, b in zip(_grads(by_module, [positive, fake]), _grads(by_function, [positive, fake])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("margin_norm", MARGIN_NORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_head_methods_equal_functions(reduction, margin_norm):
    torch.manual_seed(3)
    alpha = 30.0 if margin_norm == "mean" else 1.0
    head = rankplug.TripletMetricDiscriminatorHead(
        16, embed_dim=8, alpha=alpha, margin_norm=margin_norm, reduction=reduction
    ).double()
    x_i, x_j, g_z = (torch.rand(6, 1, 4, 4, dtype=torch.float64) for _ in range(3))
    params = list(head.parameters())

    by_head = head.discriminator_loss(head(x_i), head(x_j), head(g_z), positive_images=x_j, fake_images=g_z)
    by_function = disc(
        head(x_i), head(x_j), head(g_z), x_j, g_z, alpha=alpha, margin_norm=margin_norm, reduction=reduction
    )
    torch.testing.assert_close(by_head, by_function, rtol=0, atol=0)
    assert torch.count_nonzero(by_head) > 0
    for a, b in zip(_grads(by_head, params), _grads(by_function, params)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    torch.testing.assert_close(
        head.margin(x_j, g_z), data_dependent_margin(x_j, g_z, alpha=alpha, margin_norm=margin_norm)
    )

    gen_head = head.generator_loss(head(x_j), head(g_z))
    gen_function = triplet_metric_generator_loss(head(x_j), head(g_z), reduction=reduction)
    torch.testing.assert_close(gen_head, gen_function, rtol=0, atol=0)
    for a, b in zip(_grads(gen_head, params), _grads(gen_function, params)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Properties.


@pytest.mark.parametrize("margin_norm", MARGIN_NORMS)
@given(batch=triplet_batches(), alpha=st.floats(min_value=0.1, max_value=50.0))
@settings(max_examples=30, deadline=None, derandomize=True)
def test_margin_carries_no_gradient(margin_norm, batch, alpha):
    shape = batch["image_shape"]
    x_j = images(batch["positive_images"], shape, grad=True)
    g_z = images(batch["fake_images"], shape, grad=True)
    assert data_dependent_margin(x_j, g_z, alpha=alpha, margin_norm=margin_norm).requires_grad is False

    # Embeddings are leaves, independent of the images: any gradient reaching the images can only come through h.
    anchor, positive = emb(batch["anchor"], grad=True), emb(batch["positive"], grad=True)
    fake = emb(batch["fake"], grad=True)
    loss = disc(anchor, positive, fake, x_j, g_z, alpha=alpha, margin_norm=margin_norm, reduction="sum")
    loss.backward()
    assert x_j.grad is None
    assert g_z.grad is None
    assert torch.isfinite(anchor.grad).all()


@pytest.mark.parametrize("margin_norm", MARGIN_NORMS)
@given(
    batch=triplet_batches(),
    alpha=alpha_value,
    extra=st.floats(min_value=1e-6, max_value=10.0),
    direction_seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=30, deadline=None, derandomize=True)
def test_hinge_is_zero_once_fake_is_far_enough(margin_norm, batch, alpha, extra, direction_seed):
    # Place each fake embedding at distance h + d(a, p) + extra from its anchor: d(a, f) >= h + d(a, p).
    fakes = []
    gen = torch.Generator().manual_seed(direction_seed)
    for k, anchor_row in enumerate(batch["anchor"]):
        h = loop_margin(batch["positive_images"][k], batch["fake_images"][k], alpha, margin_norm)
        radius = h + loop_distance(anchor_row, batch["positive"][k]) + extra
        direction = torch.randn(len(anchor_row), generator=gen, dtype=torch.float64) + 1e-3
        unit = (direction / direction.norm()).tolist()
        fakes.append([a + radius * u for a, u in zip(anchor_row, unit)])
    batch = {**batch, "fake": fakes}
    anchor, positive, fake, x_j, g_z = tensors(batch, grad=True)
    per_sample = disc(anchor, positive, fake, x_j, g_z, alpha=alpha, margin_norm=margin_norm, reduction="none")
    assert per_sample.tolist() == [0.0] * len(fakes)
    loss = per_sample.mean()
    assert loss.requires_grad  # the zero stays in the autograd graph
    loss.backward()
    for t in (anchor, positive, fake):
        assert torch.count_nonzero(t.grad) == 0


@pytest.mark.parametrize("margin_norm", MARGIN_NORMS)
@given(batch=triplet_batches(), alphas=st.lists(alpha_value, min_size=2, max_size=2))
@settings(max_examples=40, deadline=None, derandomize=True)
def test_loss_never_decreases_as_alpha_grows(margin_norm, batch, alphas):
    small, large = sorted(alphas)
    low = disc(*tensors(batch), alpha=small, margin_norm=margin_norm, reduction="none")
    high = disc(*tensors(batch), alpha=large, margin_norm=margin_norm, reduction="none")
    assert (high >= low).all()
    # ... and where the hinge is active it grows by exactly (large - small) * ||x_j - G(z)||_1.
    l1 = data_dependent_margin(*tensors(batch)[3:], alpha=1.0, margin_norm=margin_norm)
    active = low > 0
    torch.testing.assert_close(high[active] - low[active], (large - small) * l1[active], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("margin_norm", MARGIN_NORMS)
@given(batch=triplet_batches(), shift=st.lists(coordinate, min_size=6, max_size=6), alpha=alpha_value)
@settings(max_examples=40, deadline=None, derandomize=True)
def test_translation_of_all_embeddings_leaves_loss_unchanged(margin_norm, batch, shift, alpha):
    anchor, positive, fake, x_j, g_z = tensors(batch)
    v = torch.tensor(shift[: anchor.shape[1]], dtype=torch.float64)
    base = disc(anchor, positive, fake, x_j, g_z, alpha=alpha, margin_norm=margin_norm, reduction="none")
    moved = disc(anchor + v, positive + v, fake + v, x_j, g_z, alpha=alpha, margin_norm=margin_norm, reduction="none")
    torch.testing.assert_close(moved, base, rtol=1e-9, atol=1e-9)
    gen_base = triplet_metric_generator_loss(positive, fake, reduction="none")
    gen_moved = triplet_metric_generator_loss(positive + v, fake + v, reduction="none")
    torch.testing.assert_close(gen_moved, gen_base, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Numerics.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("same_object", [False, True])
def test_fake_equal_to_anchor_gives_finite_gradients(dtype, same_object):
    torch.manual_seed(4)
    anchor = torch.randn(4, 8, dtype=dtype, requires_grad=True)
    positive = torch.randn(4, 8, dtype=dtype, requires_grad=True)
    fake = anchor if same_object else anchor.detach().clone().requires_grad_(True)
    x_j, g_z = torch.zeros(4, 1, 2, 2, dtype=dtype), torch.full((4, 1, 2, 2), 0.05, dtype=dtype)
    loss = disc(anchor, positive, fake, x_j, g_z, alpha=20.0)  # h = 1, d(a, f) = 0: every hinge active
    loss.backward()
    d_ap = (anchor - positive).norm(dim=1)
    torch.testing.assert_close(loss, (1.0 + d_ap).mean().detach())
    assert torch.isfinite(anchor.grad).all() and torch.isfinite(positive.grad).all()
    # d(a, f) contributes the subgradient 0 at coincidence; d(a, p) contributes (a - p) / ||a - p|| / N.
    unit = ((anchor - positive) / d_ap.unsqueeze(1) / 4).detach()
    torch.testing.assert_close(positive.grad, -unit)
    torch.testing.assert_close(anchor.grad, unit)
    if not same_object:
        assert torch.count_nonzero(fake.grad) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_generator_loss_with_positive_equal_to_fake_gives_finite_gradients(dtype):
    torch.manual_seed(5)
    positive = torch.randn(4, 8, dtype=dtype, requires_grad=True)
    fake = positive.detach().clone().requires_grad_(True)
    loss = triplet_metric_generator_loss(positive, fake)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(positive.grad).all() and torch.isfinite(fake.grad).all()
    assert torch.count_nonzero(fake.grad) == 0
    # One coinciding row must not poison the others.
    fake2 = torch.cat([positive.detach()[:1], positive.detach()[1:] + 1.0]).requires_grad_(True)
    triplet_metric_generator_loss(positive.detach(), fake2, reduction="sum").backward()
    assert torch.isfinite(fake2.grad).all()
    assert torch.count_nonzero(fake2.grad[0]) == 0
    torch.testing.assert_close(fake2.grad[1:], torch.full((3, 8), 1.0 / math.sqrt(8), dtype=dtype))


@pytest.mark.parametrize("offset", [1e-20, 1e-23, 1e-30, 1e-45])
def test_tiny_embedding_distances_give_finite_gradients(offset):
    positive = torch.zeros(3, 4, requires_grad=True)
    fake = torch.full((3, 4), offset).requires_grad_(True)
    loss = triplet_metric_generator_loss(positive, fake)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(positive.grad).all() and torch.isfinite(fake.grad).all()
    assert fake.grad.abs().max() <= 1.0  # |d ||u|| / du| <= 1 (a subgradient where u = 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_embeddings_of_magnitude_1e4_give_finite_gradients(dtype):
    torch.manual_seed(6)
    base = [torch.randn(4, 32, dtype=torch.float64) * 1e4 for _ in range(3)]
    anchor, positive, fake = (b.to(dtype).requires_grad_(True) for b in base)
    x_j, g_z = torch.zeros(4, 3, 4, 4, dtype=dtype), torch.full((4, 3, 4, 4), 1e3, dtype=dtype)  # h = 2e4
    loss = disc(anchor, positive, fake, x_j, g_z, alpha=20.0)
    gen_loss = triplet_metric_generator_loss(positive, fake)
    (loss + gen_loss).backward()
    for t in (loss, gen_loss, anchor.grad, positive.grad, fake.grad):
        assert torch.isfinite(t).all()
    expected = disc(*(b.to(torch.float64) for b in base), x_j.double(), g_z.double(), alpha=20.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_head_under_cpu_autocast_gives_finite_gradients(dtype):
    torch.manual_seed(7)
    head = rankplug.TripletMetricDiscriminatorHead(48, embed_dim=32, alpha=20.0)
    x_i, x_j, g_z = (torch.rand(4, 3, 4, 4) for _ in range(3))
    try:
        with torch.autocast("cpu", dtype=dtype):
            anchor, positive, fake = head(x_i), head(x_j), head(g_z)
            loss_d = head.discriminator_loss(anchor, positive, fake, positive_images=x_j, fake_images=g_z)
            loss_g = head.generator_loss(positive, fake)
    except RuntimeError as err:  # pragma: no cover - depends on the torch build
        if "16" in str(err) or "Half" in str(err) or "dtype" in str(err):
            pytest.skip(f"CPU autocast to {dtype} unsupported here: {err}")
        raise
    assert anchor.dtype == dtype  # autocast really ran the Linear in half precision
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    (loss_d + loss_g).backward()
    for p in head.parameters():
        assert torch.isfinite(p.grad).all()
    reference = head.discriminator_loss(head(x_i), head(x_j), head(g_z), positive_images=x_j, fake_images=g_z)
    assert loss_d.item() == pytest.approx(reference.item(), rel=5e-2, abs=5e-2)


def test_half_precision_embeddings_are_upcast():
    torch.manual_seed(8)
    anchor, positive, fake = (torch.randn(4, 8).to(torch.bfloat16).requires_grad_(True) for _ in range(3))
    x_j, g_z = torch.zeros(4, 2, dtype=torch.bfloat16), torch.full((4, 2), 0.25, dtype=torch.bfloat16)
    loss = disc(anchor, positive, fake, x_j, g_z, alpha=20.0)
    assert loss.dtype == torch.float32
    expected = disc(anchor.double(), positive.double(), fake.double(), x_j.double(), g_z.double(), alpha=20.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(anchor.grad.float()).all()


# ---------------------------------------------------------------------------------------------------------------
# gradcheck.


def test_gradcheck_discriminator_loss_float64():
    gen = torch.Generator().manual_seed(9)
    anchor, positive, fake = (torch.randn(5, 6, generator=gen, dtype=torch.float64) for _ in range(3))
    x_j = torch.zeros(5, 1, 3, 3, dtype=torch.float64)
    g_z = torch.rand(5, 1, 3, 3, generator=gen, dtype=torch.float64) + 0.5
    alpha = 20.0
    # Away from the kinks: every hinge clearly active, no two embeddings close.
    per_sample = disc(anchor, positive, fake, x_j, g_z, alpha=alpha, reduction="none")
    assert (per_sample > 1.0).all()
    assert (embedding_distance(anchor, positive) > 0.1).all() and (embedding_distance(anchor, fake) > 0.1).all()
    inputs = tuple(t.requires_grad_(True) for t in (anchor, positive, fake))
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, p, f, r=reduction: disc(a, p, f, x_j, g_z, alpha=alpha, reduction=r), inputs
        )


def test_gradcheck_generator_loss_float64():
    gen = torch.Generator().manual_seed(10)
    positive, fake = (torch.randn(5, 6, generator=gen, dtype=torch.float64) for _ in range(2))
    assert (embedding_distance(positive, fake) > 0.1).all()
    inputs = (positive.requires_grad_(True), fake.requires_grad_(True))
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda p, f, r=reduction: triplet_metric_generator_loss(p, f, reduction=r), inputs
        )


# ---------------------------------------------------------------------------------------------------------------
# The head.


@pytest.mark.parametrize("shape", [(5, 3, 4, 4), (5, 48), (5, 12, 2, 2)])
def test_head_forward_shape(shape):
    head = rankplug.TripletMetricDiscriminatorHead(48, embed_dim=11)
    features = torch.randn(shape)
    out = head(features)
    assert out.shape == (5, 11)
    torch.testing.assert_close(out, features.flatten(1) @ head.embed.weight.T + head.embed.bias)


def test_head_defaults_follow_the_paper():
    head = rankplug.TripletMetricDiscriminatorHead(10)
    assert head.embed_dim == 500 and head.alpha == 20.0 and head.margin_norm == "mean"


def test_head_rejects_wrong_in_features():
    head = rankplug.TripletMetricDiscriminatorHead(48, embed_dim=8)
    with pytest.raises(ValueError, match=re.escape("features has shape (5, 3, 4, 5), i.e. 60 features per sample")):
        head(torch.randn(5, 3, 4, 5))
    with pytest.raises(
        ValueError, match=re.escape("features has shape (5, 47), i.e. 47 features per sample; expected (N, *) with 48")
    ):
        head(torch.randn(5, 47))


# ---------------------------------------------------------------------------------------------------------------
# Bad input: every case raises the documented error, naming the argument and the expected value.

N, K = 4, 8


def good(**overrides) -> dict:
    args = {
        "anchor_emb": torch.randn(N, K),
        "positive_emb": torch.randn(N, K),
        "fake_emb": torch.randn(N, K),
        "positive_images": torch.rand(N, 1, 2, 2),
        "fake_images": torch.rand(N, 1, 2, 2),
    }
    args.update(overrides)
    return args


def call_disc(**overrides):
    args = good(**overrides)
    settings_ = {k: args.pop(k) for k in ("alpha", "margin_norm", "reduction") if k in args}
    return triplet_metric_discriminator_loss(
        args["anchor_emb"],
        args["positive_emb"],
        args["fake_emb"],
        positive_images=args["positive_images"],
        fake_images=args["fake_images"],
        **settings_,
    )


def test_good_input_is_accepted():
    assert torch.isfinite(call_disc())
    assert torch.isfinite(triplet_metric_generator_loss(torch.randn(N, K), torch.randn(N, K)))


BAD_DISC = [
    (
        {"positive_emb": torch.randn(3, K)},
        ValueError,
        "positive_emb has batch size 3 but anchor_emb has batch size 4",
    ),
    ({"fake_emb": torch.randn(5, K)}, ValueError, "fake_emb has batch size 5 but anchor_emb has batch size 4"),
    (
        {"positive_images": torch.rand(3, 1, 2, 2), "fake_images": torch.rand(3, 1, 2, 2)},
        ValueError,
        "positive_images has batch size 3 but anchor_emb has batch size 4",
    ),
    ({"anchor_emb": torch.randn(N, K, 1)}, ValueError, "anchor_emb has shape (4, 8, 1); expected (N, K)"),
    ({"positive_emb": torch.randn(N)}, ValueError, "positive_emb has shape (4,); expected (N, K)"),
    ({"fake_emb": torch.randn(N, 2, 2, 2)}, ValueError, "fake_emb has shape (4, 2, 2, 2); expected (N, K)"),
    (
        {"positive_emb": torch.randn(N, 7)},
        ValueError,
        "positive_emb has embedding size 7 but anchor_emb has 8; expected equal sizes",
    ),
    (
        {"fake_emb": torch.randn(N, 9)},
        ValueError,
        "fake_emb has embedding size 9 but anchor_emb has 8; expected equal sizes",
    ),
    (
        {"fake_images": torch.rand(N, 1, 3, 3)},
        ValueError,
        "fake_images has shape (4, 1, 3, 3) but positive_images has shape (4, 1, 2, 2); expected identical shapes",
    ),
    (
        {"fake_images": torch.rand(N, 4)},
        ValueError,
        "fake_images has shape (4, 4) but positive_images has shape (4, 1, 2, 2); expected identical shapes",
    ),
    ({"anchor_emb": torch.ones(N, K, dtype=torch.long)}, TypeError, "anchor_emb must have a floating-point dtype"),
    ({"positive_emb": torch.ones(N, K, dtype=torch.int32)}, TypeError, "positive_emb must have a floating-point"),
    ({"fake_emb": torch.ones(N, K, dtype=torch.bool)}, TypeError, "fake_emb must have a floating-point dtype"),
    ({"fake_emb": [[0.0] * K] * N}, TypeError, "fake_emb must be a torch.Tensor; got list"),
    (
        {"positive_images": torch.ones(N, 1, 2, 2, dtype=torch.uint8)},
        TypeError,
        "positive_images must have a floating-point dtype",
    ),
    (
        {"anchor_emb": torch.randn(0, K), "positive_emb": torch.randn(0, K), "fake_emb": torch.randn(0, K)},
        ValueError,
        "anchor_emb is an empty batch (shape (0, 8)); expected N >= 1",
    ),
    (
        {"positive_images": torch.rand(0, 1, 2, 2), "fake_images": torch.rand(0, 1, 2, 2)},
        ValueError,
        "positive_images is an empty batch (shape (0, 1, 2, 2)); expected N >= 1",
    ),
    ({"alpha": -1.0}, ValueError, "alpha must be >= 0; got -1.0"),
    ({"alpha": float("nan")}, ValueError, "alpha must be finite; got nan"),
    ({"alpha": "20"}, TypeError, "alpha must be a real number; got str"),
    ({"margin_norm": "l2"}, ValueError, "margin_norm must be one of 'mean', 'sum'; got 'l2'"),
    ({"margin_norm": None}, ValueError, "margin_norm must be one of 'mean', 'sum'; got None"),
    ({"reduction": "max"}, ValueError, "reduction must be one of 'mean', 'sum' or 'none'; got 'max'"),
    ({"reduction": None}, ValueError, "reduction must be one of 'mean', 'sum' or 'none'; got None"),
]


@pytest.mark.parametrize(("overrides", "error", "message"), BAD_DISC, ids=[m[:40] for _, _, m in BAD_DISC])
def test_discriminator_loss_rejects_bad_input(overrides, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call_disc(**overrides)


BAD_GEN = [
    ((torch.randn(N, K), torch.randn(3, K)), ValueError, "fake_emb has batch size 3 but positive_emb has batch size 4"),
    ((torch.randn(N, K, 2), torch.randn(N, K)), ValueError, "positive_emb has shape (4, 8, 2); expected (N, K)"),
    ((torch.randn(N, K), torch.randn(N)), ValueError, "fake_emb has shape (4,); expected (N, K)"),
    (
        (torch.randn(N, K), torch.randn(N, 3)),
        ValueError,
        "fake_emb has embedding size 3 but positive_emb has 8; expected equal sizes",
    ),
    ((torch.ones(N, K, dtype=torch.long), torch.randn(N, K)), TypeError, "positive_emb must have a floating-point"),
    ((torch.randn(N, K), torch.ones(N, K, dtype=torch.long)), TypeError, "fake_emb must have a floating-point"),
    (
        (torch.randn(0, K), torch.randn(0, K)),
        ValueError,
        "positive_emb is an empty batch (shape (0, 8)); expected N >= 1",
    ),
    ((torch.randn(N, 0), torch.randn(N, 0)), ValueError, "positive_emb has shape (4, 0); expected (N, K) with K >= 1"),
]


@pytest.mark.parametrize(("args", "error", "message"), BAD_GEN, ids=[m[:40] for _, _, m in BAD_GEN])
def test_generator_loss_rejects_bad_input(args, error, message):
    with pytest.raises(error, match=re.escape(message)):
        triplet_metric_generator_loss(*args)
    with pytest.raises(error, match=re.escape(message)):
        rankplug.TripletMetricGeneratorLoss()(*args)


def test_generator_loss_rejects_unknown_reduction():
    message = re.escape("reduction must be one of 'mean', 'sum' or 'none'; got 'avg'")
    with pytest.raises(ValueError, match=message):
        triplet_metric_generator_loss(torch.randn(N, K), torch.randn(N, K), reduction="avg")
    with pytest.raises(ValueError, match=message):
        rankplug.TripletMetricGeneratorLoss(reduction="avg")


def test_data_dependent_margin_rejects_bad_settings():
    x = torch.rand(N, 1, 2, 2)
    with pytest.raises(ValueError, match=re.escape("alpha must be >= 0; got -0.5")):
        data_dependent_margin(x, x, alpha=-0.5)
    with pytest.raises(ValueError, match=re.escape("margin_norm must be one of 'mean', 'sum'; got 'max'")):
        data_dependent_margin(x, x, margin_norm="max")
    with pytest.raises(ValueError, match=re.escape("expected identical shapes")):
        data_dependent_margin(x, x[:, :, :1])


BAD_SETTINGS = [
    ({"alpha": -1.0}, ValueError, "alpha must be >= 0; got -1.0"),
    ({"alpha": float("inf")}, ValueError, "alpha must be finite; got inf"),
    ({"margin_norm": "median"}, ValueError, "margin_norm must be one of 'mean', 'sum'; got 'median'"),
    ({"reduction": "max"}, ValueError, "reduction must be one of 'mean', 'sum' or 'none'; got 'max'"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_SETTINGS, ids=[m[:30] for _, _, m in BAD_SETTINGS])
def test_modules_reject_bad_settings_at_construction(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        rankplug.TripletMetricDiscriminatorLoss(**kwargs)
    with pytest.raises(error, match=re.escape(message)):
        rankplug.TripletMetricDiscriminatorHead(16, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((0,), {}, ValueError, "in_features must be an int >= 1; got 0"),
        ((-3,), {}, ValueError, "in_features must be an int >= 1; got -3"),
        ((16,), {"embed_dim": 0}, ValueError, "embed_dim must be an int >= 1; got 0"),
        ((16,), {"embed_dim": -1}, ValueError, "embed_dim must be an int >= 1; got -1"),
        ((16.0,), {}, TypeError, "in_features must be an int >= 1; got float"),
        ((16,), {"embed_dim": True}, TypeError, "embed_dim must be an int >= 1; got bool"),
    ],
)
def test_head_rejects_bad_sizes(args, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        rankplug.TripletMetricDiscriminatorHead(*args, **kwargs)
