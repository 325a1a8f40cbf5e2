"""maths §3: the WGAN-GP gradient penalty (RankGAN Eq. 5)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import rankplug
from rankplug.functional import gradient_penalty


def small_critic(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 1)).to(dtype)


class PatchCritic(nn.Module):
    """Returns a PatchGAN map (N, 1, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)) * 3.0


class TupleCritic(nn.Module):
    """Returns StarGAN's (out_src (N, 1, S, S), out_cls (N, c_dim))."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(2, 3, 3, padding=1).double()
        self.src = nn.Conv2d(3, 1, 3, padding=1).double()
        self.cls = nn.Conv2d(3, 5, 4, bias=False).double()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.body(x))
        return self.src(h), self.cls(h).flatten(1)


def critic_grads_finite(critic: nn.Module) -> bool:
    # The last layer's bias does not change the input gradient, so it rightly gets no gradient.
    grads = [p.grad for name, p in critic.named_parameters() if name != "3.bias"]
    return all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def loop_penalty(critic, real, fake, mix, weight, select=lambda out: out):
    """RankGAN Eq. 5 sample by sample: one forward per interpolate, the norm of its flattened gradient."""
    total = 0.0
    for k in range(real.shape[0]):
        x_hat = (mix[k] * real[k] + (1 - mix[k]) * fake[k]).unsqueeze(0).requires_grad_(True)
        score = select(critic(x_hat)).mean()
        (grad,) = torch.autograd.grad(score, x_hat)
        norm = grad.flatten().pow(2).sum().sqrt().item()
        total += (norm - 1.0) ** 2
    return weight * total / real.shape[0]


@given(seed=st.integers(0, 2**16), weight=st.floats(0.0, 20.0), n=st.integers(1, 5))
@settings(max_examples=15, deadline=None)
def test_matches_per_sample_loop(seed, weight, n):
    torch.manual_seed(seed)
    critic = small_critic()
    real, fake = torch.randn(n, 2, 4, 4, dtype=torch.float64), torch.randn(n, 2, 4, 4, dtype=torch.float64)
    mix = torch.rand(n, dtype=torch.float64)
    got = gradient_penalty(critic, real, fake, weight=weight, mix_weights=mix)
    assert got.item() == pytest.approx(loop_penalty(critic, real, fake, mix, weight), rel=1e-9, abs=1e-12)


def test_norm_is_over_the_flattened_sample_not_dim_1():
    # D(x) = sum(w * x): the input gradient is w for every sample, so the penalty is (||w||_F - 1)^2.
    w = torch.arange(1.0, 33.0, dtype=torch.float64).reshape(2, 4, 4) / 40

    def critic(x):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.zeros(3, 2, 4, 4, dtype=torch.float64), torch.ones(3, 2, 4, 4, dtype=torch.float64)
    got = gradient_penalty(critic, real, fake, weight=1.0)
    assert got.item() == pytest.approx((w.norm().item() - 1.0) ** 2)
    wrong = (w.norm(dim=0) - 1.0).pow(2).mean().item()  # the authors' norm(dim=1) on a 4-D gradient
    assert got.item() != pytest.approx(wrong)


@pytest.mark.parametrize(
    ("critic", "selector"),
    [
        (PatchCritic(), None),
        (TupleCritic(), 0),
        (TupleCritic(), lambda out: out[0]),
    ],
)
def test_patch_and_tuple_outputs(critic, selector):
    torch.manual_seed(4)
    real, fake = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    mix = torch.rand(3, dtype=torch.float64)
    got = gradient_penalty(critic, real, fake, weight=10.0, mix_weights=mix, output_selector=selector)
    pick = (lambda out: out[0]) if selector is not None else (lambda out: out)
    assert got.item() == pytest.approx(loop_penalty(critic, real, fake, mix, 10.0, pick), rel=1e-9)


def test_dict_output_with_key_selector():
    critic = small_critic()
    real, fake = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.randn(2, 2, 4, 4, dtype=torch.float64)
    mix = torch.rand(2, dtype=torch.float64)
    got = gradient_penalty(lambda x: {"score": critic(x)}, real, fake, output_selector="score", mix_weights=mix)
    torch.testing.assert_close(got, gradient_penalty(critic, real, fake, mix_weights=mix))


@pytest.mark.parametrize("shape", [(3,), (3, 1)])
def test_flat_score_shapes(shape):
    critic = small_critic()
    real, fake = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    mix = torch.rand(3, dtype=torch.float64)
    got = gradient_penalty(lambda x: critic(x).reshape(shape), real, fake, mix_weights=mix)
    torch.testing.assert_close(got, gradient_penalty(critic, real, fake, mix_weights=mix))


def test_trains_the_critic_but_not_the_generator():
    critic = small_critic()
    gen = nn.Linear(3, 32).double()
    fake = gen(torch.randn(4, 3, dtype=torch.float64)).reshape(4, 2, 4, 4)
    real = torch.randn(4, 2, 4, 4, dtype=torch.float64)
    gradient_penalty(critic, real, fake).backward()
    assert critic_grads_finite(critic) and torch.count_nonzero(critic[0].weight.grad) > 0
    assert all(p.grad is None for p in gen.parameters())


def test_random_interpolation_is_reproducible_and_in_unit_interval():
    critic = small_critic()
    real, fake = torch.randn(8, 2, 4, 4, dtype=torch.float64), torch.randn(8, 2, 4, 4, dtype=torch.float64)
    a = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(7))
    b = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(7))
    mix = torch.rand(8, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, gradient_penalty(critic, real, fake, mix_weights=mix.double()))


def test_input_independent_critic_gives_weight_times_one():
    real, fake = torch.randn(2, 3), torch.randn(2, 3)
    bias = nn.Parameter(torch.tensor(0.5))
    got = gradient_penalty(lambda x: bias.expand(x.shape[0]), real, fake, weight=10.0)
    assert got.item() == pytest.approx(10.0)


def test_works_under_no_grad_for_logging():
    critic = small_critic()
    with torch.no_grad():
        got = gradient_penalty(critic, torch.randn(2, 2, 4, 4).double(), torch.randn(2, 2, 4, 4).double())
    assert torch.isfinite(got) and not got.requires_grad


def test_function_equals_module():
    critic = small_critic()
    real, fake = torch.randn(4, 2, 4, 4, dtype=torch.float64), torch.randn(4, 2, 4, 4, dtype=torch.float64)
    mix = torch.rand(4, dtype=torch.float64)
    module = rankplug.GradientPenalty(weight=5.0, reduction="none")
    torch.testing.assert_close(
        module(critic, real, fake, mix_weights=mix),
        gradient_penalty(critic, real, fake, weight=5.0, mix_weights=mix, reduction="none"),
    )


def test_gradcheck_and_gradgradcheck_float64():
    torch.manual_seed(5)
    weight = torch.randn(6, 1, dtype=torch.float64, requires_grad=True)
    # real and fake are data here: the penalty trains the critic only (fake is detached inside).
    real = torch.randn(3, 6, dtype=torch.float64)
    fake = torch.randn(3, 6, dtype=torch.float64)
    mix = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)

    def penalty(w):
        return gradient_penalty(lambda x: torch.tanh(x @ w).squeeze(1), real, fake, mix_weights=mix)

    assert torch.autograd.gradcheck(penalty, (weight,))
    assert torch.autograd.gradgradcheck(penalty, (weight,))


def test_bfloat16_autocast_matches_float32():
    critic = small_critic(torch.float32)
    real, fake = torch.randn(4, 2, 4, 4), torch.randn(4, 2, 4, 4)
    mix = torch.rand(4)
    reference = gradient_penalty(critic, real, fake, mix_weights=mix)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gradient_penalty(critic, real, fake, mix_weights=mix)
    assert got.dtype == torch.float32
    got.backward()
    assert torch.isfinite(got)
    assert critic_grads_finite(critic)
    torch.testing.assert_close(got, reference, rtol=0.05, atol=0.05)


def test_grad_scaler_gives_the_unscaled_penalty():
    critic = small_critic(torch.float32)
    real, fake = torch.randn(4, 2, 4, 4), torch.randn(4, 2, 4, 4)
    mix = torch.rand(4)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    reference = gradient_penalty(critic, real, fake, mix_weights=mix)
    got = gradient_penalty(critic, real, fake, mix_weights=mix, scaler=scaler)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-6)
    scaler.scale(got).backward()
    assert critic_grads_finite(critic)


def test_tuple_output_without_selector_is_a_clear_error():
    with pytest.raises(TypeError, match=r"returned a tuple.*pass output_selector"):
        gradient_penalty(TupleCritic(), torch.randn(2, 2, 4, 4).double(), torch.randn(2, 2, 4, 4).double())
    with pytest.raises(ValueError, match="output_selector=5 does not select anything"):
        gradient_penalty(
            TupleCritic(), torch.randn(2, 2, 4, 4).double(), torch.randn(2, 2, 4, 4).double(), output_selector=5
        )
    with pytest.raises(TypeError, match="output_selector must be None, an int, a str or a callable"):
        gradient_penalty(
            small_critic(), torch.randn(2, 2, 4, 4).double(), torch.randn(2, 2, 4, 4).double(), output_selector=1.5
        )


def test_penalty_takes_bfloat16_fakes_from_an_autocast_generator():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1))
    real = torch.randn(4, 3, 2, 2)
    fake = torch.randn(4, 3, 2, 2)
    weights = torch.rand(4)
    expected = gradient_penalty(critic, real, fake.bfloat16().float(), mix_weights=weights)
    got = gradient_penalty(critic, real, fake.bfloat16(), mix_weights=weights)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
