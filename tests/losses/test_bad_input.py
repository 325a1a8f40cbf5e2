"""Findings of an external probe of the losses and heads, each reproduced and checked fixed.

- NaN and inf propagate through every loss and distance (a diverged run must not log finite losses).
- Score, metric and angular losses compute in float32 (float64 stays float64), as torch's losses do under autocast.
- The gradient penalty is finite and correct under fp16 autocast with a default GradScaler.
- Every public loss and head compiles with ``torch.compile(fullgraph=True)``; the penalty runs eagerly around it.
- Tensors on two devices, sparse tensors and bad ``embedding_distance`` input raise clear errors.
- A bad ``reduction`` set after construction, an empty PatchGAN map and ``mix_weights`` outside ``[0, 1]`` raise.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor, nn

import rankplug
from rankplug import functional as F

N = 4  # batch size of every case
K = 6  # embedding size
C = 5  # classes
D_IN = 8  # feature values per sample for the heads


@dataclass
class Case:
    """A public loss, head method or functional: ``call(**tensors)`` with the tensors of ``make()``.

    ``call`` returns one value per sample (``reduction="none"``) or per row, so sample 1 can be poisoned
    alone. ``labels`` are not values to poison; ``frozen`` tensors must not require grad; ``aliases`` maps an
    argument to the name its errors use (a head's input is its ``features``); ``head`` says the call compares
    its tensors with a head's weight, so one tensor is enough for a device mismatch.
    """

    call: Callable[..., Tensor]
    make: Callable[[], dict[str, Tensor]]
    labels: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()
    no_grad_output: bool = False
    aliases: dict[str, str] = field(default_factory=dict)
    head: bool = False


def score_tensors(*names: str) -> Callable[[], dict[str, Tensor]]:
    def make() -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(0)
        return {name: torch.randn(N, generator=gen) for name in names}

    return make


def embedding_tensors(*names: str, images: bool = False) -> Callable[[], dict[str, Tensor]]:
    def make() -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(1)
        out = {name: torch.randn(N, K, generator=gen) for name in names}
        if images:
            out["positive_images"] = torch.rand(N, 1, 2, 2, generator=gen)
            out["fake_images"] = torch.rand(N, 1, 2, 2, generator=gen)
        return out

    return make


def image_tensors() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(2)
    return {
        "positive_images": torch.rand(N, 1, 2, 2, generator=gen),
        "fake_images": torch.rand(N, 1, 2, 2, generator=gen),
    }


def cosine_tensors(multi_label: bool = False, name: str = "cosine") -> Callable[[], dict[str, Tensor]]:
    def make() -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(3)
        cosine = torch.rand(N, C, generator=gen) * 1.8 - 0.9
        targets = (torch.rand(N, C, generator=gen) > 0.5).float() if multi_label else torch.tensor([0, 3, 4, 1])
        return {name: cosine, "targets": targets}

    return make


def feature_tensors() -> dict[str, Tensor]:
    return {"features": torch.randn(N, D_IN, generator=torch.Generator().manual_seed(4))}


def triplet_head_tensors() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {name: torch.randn(N, D_IN, generator=gen) for name in ("anchor", "positive", "fake")}


AAM_HEAD = rankplug.AAMAuxClassifier(D_IN, C, reduction="none")
AAM_HEAD_MULTI = rankplug.AAMAuxClassifier(D_IN, C, multi_label=True, reduction="none")
TRIPLET_HEAD = rankplug.TripletMetricDiscriminatorHead(D_IN, embed_dim=K, reduction="none")


def triplet_head_losses(anchor: Tensor, positive: Tensor, fake: Tensor) -> Tensor:
    head = TRIPLET_HEAD
    loss_d = head.discriminator_loss(
        head(anchor), head(positive), head(fake), positive_images=positive, fake_images=fake
    )
    return loss_d + head.generator_loss(head(positive), head(fake))


NONE = "none"
CASES: dict[str, Case] = {
    # maths §1
    "hinge_margin_loss": Case(
        lambda real_scores, fake_scores: F.hinge_margin_loss(real_scores, fake_scores, reduction=NONE),
        score_tensors("real_scores", "fake_scores"),
    ),
    "symmetric_hinge_loss": Case(
        lambda real_scores, fake_scores: F.symmetric_hinge_loss(real_scores, fake_scores, reduction=NONE),
        score_tensors("real_scores", "fake_scores"),
    ),
    "wgan_generator_loss": Case(
        lambda fake_scores: F.wgan_generator_loss(fake_scores, reduction=NONE), score_tensors("fake_scores")
    ),
    "HingeMarginLoss": Case(
        lambda real_scores, fake_scores: rankplug.HingeMarginLoss(reduction=NONE)(real_scores, fake_scores),
        score_tensors("real_scores", "fake_scores"),
    ),
    "HingeMarginLoss.generator_loss": Case(
        lambda fake_scores: rankplug.HingeMarginLoss(reduction=NONE).generator_loss(fake_scores),
        score_tensors("fake_scores"),
    ),
    "SymmetricHingeLoss": Case(
        lambda real_scores, fake_scores: rankplug.SymmetricHingeLoss(reduction=NONE)(real_scores, fake_scores),
        score_tensors("real_scores", "fake_scores"),
    ),
    # maths §3
    "stage_rank_loss": Case(
        lambda real_scores, fake_scores, prev_fake_scores: F.stage_rank_loss(
            real_scores, fake_scores, prev_fake_scores, m_high=1.0, m_low=0.0, reduction=NONE
        ),
        score_tensors("real_scores", "fake_scores", "prev_fake_scores"),
    ),
    "stage_rank_generator_loss": Case(
        lambda real_scores, fake_scores: F.stage_rank_generator_loss(real_scores, fake_scores, reduction=NONE),
        score_tensors("real_scores", "fake_scores"),
    ),
    "clamp_penalty": Case(
        lambda real_scores, prev_fake_scores: F.clamp_penalty(
            real_scores, prev_fake_scores, m_high=1.0, m_low=0.0, reduction=NONE
        ),
        score_tensors("real_scores", "prev_fake_scores"),
    ),
    "StageRankLoss": Case(
        lambda real_scores, fake_scores, prev_fake_scores: rankplug.StageRankLoss(
            m_high=1.0, m_low=0.0, reduction=NONE
        )(real_scores, fake_scores, prev_fake_scores),
        score_tensors("real_scores", "fake_scores", "prev_fake_scores"),
    ),
    "StageRankLoss(tensor markers)": Case(
        lambda real_scores, fake_scores, prev_fake_scores: rankplug.StageRankLoss(reduction=NONE)(
            real_scores, fake_scores, prev_fake_scores, m_high=torch.tensor(1.0), m_low=torch.tensor([0.0])
        ),
        score_tensors("real_scores", "fake_scores", "prev_fake_scores"),
    ),
    "StageRankLoss.generator_loss": Case(
        lambda real_scores, fake_scores: rankplug.StageRankLoss(reduction=NONE).generator_loss(
            real_scores, fake_scores
        ),
        score_tensors("real_scores", "fake_scores"),
    ),
    "StageRankLoss.clamp_penalty": Case(
        lambda real_scores, prev_fake_scores: rankplug.StageRankLoss(
            m_high=1.0, m_low=0.0, reduction=NONE
        ).clamp_penalty(real_scores, prev_fake_scores),
        score_tensors("real_scores", "prev_fake_scores"),
    ),
    # maths §2
    "gogan_rank_loss": Case(
        lambda real_scores, fake_scores, prev_fake_scores: F.gogan_rank_loss(
            real_scores, fake_scores, prev_fake_scores, reduction=NONE
        ),
        score_tensors("real_scores", "fake_scores", "prev_fake_scores"),
        frozen=("prev_fake_scores",),
    ),
    "GoGANRankLoss": Case(
        lambda real_scores, fake_scores, prev_fake_scores: rankplug.GoGANRankLoss(reduction=NONE)(
            real_scores, fake_scores, prev_fake_scores
        ),
        score_tensors("real_scores", "fake_scores", "prev_fake_scores"),
        frozen=("prev_fake_scores",),
    ),
    # maths §5
    "embedding_distance": Case(
        lambda first, second: F.embedding_distance(first, second), embedding_tensors("first", "second")
    ),
    "data_dependent_margin": Case(
        lambda positive_images, fake_images: F.data_dependent_margin(positive_images, fake_images),
        image_tensors,
        no_grad_output=True,
    ),
    "triplet_metric_discriminator_loss": Case(
        lambda anchor_emb, positive_emb, fake_emb, positive_images, fake_images: F.triplet_metric_discriminator_loss(
            anchor_emb, positive_emb, fake_emb, positive_images=positive_images, fake_images=fake_images, reduction=NONE
        ),
        embedding_tensors("anchor_emb", "positive_emb", "fake_emb", images=True),
    ),
    "triplet_metric_generator_loss": Case(
        lambda positive_emb, fake_emb: F.triplet_metric_generator_loss(positive_emb, fake_emb, reduction=NONE),
        embedding_tensors("positive_emb", "fake_emb"),
    ),
    "TripletMetricDiscriminatorLoss": Case(
        lambda anchor_emb, positive_emb, fake_emb, positive_images, fake_images: (
            rankplug.TripletMetricDiscriminatorLoss(reduction=NONE)(
                anchor_emb, positive_emb, fake_emb, positive_images=positive_images, fake_images=fake_images
            )
        ),
        embedding_tensors("anchor_emb", "positive_emb", "fake_emb", images=True),
    ),
    "TripletMetricGeneratorLoss": Case(
        lambda positive_emb, fake_emb: rankplug.TripletMetricGeneratorLoss(reduction=NONE)(positive_emb, fake_emb),
        embedding_tensors("positive_emb", "fake_emb"),
    ),
    "TripletMetricDiscriminatorHead": Case(
        triplet_head_losses,
        triplet_head_tensors,
        aliases={"anchor": "features", "positive": "features", "fake": "features"},
        head=True,
    ),
    "TripletMetricDiscriminatorHead.margin": Case(
        lambda positive_images, fake_images: TRIPLET_HEAD.margin(positive_images, fake_images),
        image_tensors,
        no_grad_output=True,
    ),
    # maths §6
    "cosine_with_margin": Case(
        lambda cosine: F.cosine_with_margin(cosine, 0.3), lambda: {"cosine": cosine_tensors()()["cosine"]}
    ),
    "additive_angular_margin_logits": Case(
        lambda cosine, targets: F.additive_angular_margin_logits(cosine, targets, scale=16.0, margin=0.3),
        cosine_tensors(),
        labels=("targets",),
    ),
    "additive_angular_margin_loss": Case(
        lambda cosine, targets: F.additive_angular_margin_loss(cosine, targets, scale=16.0, margin=0.3, reduction=NONE),
        cosine_tensors(),
        labels=("targets",),
    ),
    "additive_angular_margin_loss(multi_label)": Case(
        lambda cosine, targets: F.additive_angular_margin_loss(
            cosine, targets, scale=16.0, margin=0.3, multi_label=True, reduction=NONE
        ),
        cosine_tensors(multi_label=True),
        labels=("targets",),
    ),
    "AdditiveAngularMarginLoss": Case(
        lambda cosine, targets: rankplug.AdditiveAngularMarginLoss(scale=16.0, margin=0.3, reduction=NONE)(
            cosine, targets
        ),
        cosine_tensors(),
        labels=("targets",),
    ),
    "AAMAuxClassifier": Case(lambda features: AAM_HEAD(features), feature_tensors, head=True),
    "AAMAuxClassifier.cosine": Case(lambda features: AAM_HEAD.cosine(features), feature_tensors, head=True),
    "AAMAuxClassifier.loss": Case(
        lambda logits, targets: AAM_HEAD.loss(logits, targets), cosine_tensors(name="logits"), labels=("targets",)
    ),
    "AAMAuxClassifier.loss(multi_label)": Case(
        lambda logits, targets: AAM_HEAD_MULTI.loss(logits, targets),
        cosine_tensors(multi_label=True, name="logits"),
        labels=("targets",),
    ),
    "AAMAuxClassifier.margin_logits": Case(
        lambda logits, targets: AAM_HEAD.margin_logits(logits, targets),
        cosine_tensors(name="logits"),
        labels=("targets",),
    ),
    "AAMAuxClassifier(features).loss": Case(
        lambda features, targets: AAM_HEAD.loss(AAM_HEAD(features), targets),
        lambda: {**feature_tensors(), "targets": torch.tensor([0, 3, 4, 1])},
        labels=("targets",),
        head=True,
    ),
}


def linear_critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 1))


LINEAR_CRITIC = linear_critic()
PENALTY_CASES: dict[str, Case] = {
    "gradient_penalty": Case(
        lambda real, fake, mix_weights: F.gradient_penalty(
            LINEAR_CRITIC, real, fake, mix_weights=mix_weights, reduction=NONE
        ),
        lambda: {"real": torch.randn(N, 2, 2, 2), "fake": torch.randn(N, 2, 2, 2), "mix_weights": torch.rand(N)},
        labels=("mix_weights",),
    ),
    "GradientPenalty": Case(
        lambda real, fake, mix_weights: rankplug.GradientPenalty(reduction=NONE)(
            LINEAR_CRITIC, real, fake, mix_weights=mix_weights
        ),
        lambda: {"real": torch.randn(N, 2, 2, 2), "fake": torch.randn(N, 2, 2, 2), "mix_weights": torch.rand(N)},
        labels=("mix_weights",),
    ),
}
ALL_CASES = {**CASES, **PENALTY_CASES}


def poisoned(tensors: dict[str, Tensor], name: str, value: float) -> dict[str, Tensor]:
    out = dict(tensors)
    out[name] = tensors[name].clone()
    out[name][1] = value  # the whole of sample 1
    return out


def poisonable(case_name: str) -> list[tuple[str, str]]:
    case = ALL_CASES[case_name]
    return [(case_name, name) for name in case.make() if name not in case.labels]


POISON = [pair for case_name in ALL_CASES for pair in poisonable(case_name)]


# ---------------------------------------------------------------------------------------------------------------
# 7. NaN and inf propagate.


def test_nan_embedding_gives_a_nan_distance_not_zero():
    # The probe: a NaN embedding had distance 0 to anything, and all-NaN fakes a generator loss of exactly 0.0.
    nan = torch.full((2, 3), float("nan"))
    assert torch.isnan(F.embedding_distance(nan, torch.zeros(2, 3))).all()
    assert torch.isnan(F.triplet_metric_generator_loss(torch.zeros(2, 3), nan))
    assert torch.isnan(rankplug.TripletMetricGeneratorLoss()(torch.zeros(2, 3), nan))
    inf = torch.full((2, 3), float("inf"))
    assert torch.equal(F.embedding_distance(inf, torch.zeros(2, 3)), torch.full((2,), float("inf")))


def test_all_nan_or_inf_fakes_give_a_non_finite_triplet_discriminator_loss():
    anchor, positive = torch.zeros(2, 3), torch.ones(2, 3)
    x_j, g_z = torch.zeros(2, 4), torch.full((2, 4), 0.1)
    for value in (float("nan"), float("inf")):
        fake = torch.full((2, 3), value, requires_grad=True)
        loss = F.triplet_metric_discriminator_loss(anchor, positive, fake, positive_images=x_j, fake_images=g_z)
        assert torch.isnan(loss), value  # inf fakes make d(x_i, G(z)) = inf and the hinge [h + d - inf]_+ NaN
        loss.backward()


def test_real_scores_diverged_to_plus_inf_do_not_give_a_zero_hinge():
    # relu(-inf) = 0: a critic with D(x) = +inf used to log a margin loss of exactly 0 with zero gradients.
    real = torch.full((3,), float("inf"))
    assert torch.isnan(F.hinge_margin_loss(real, torch.zeros(3)))
    assert torch.isnan(F.stage_rank_loss(real, torch.zeros(3), torch.zeros(3) - 1.0, m_high=1.0, m_low=0.0))
    assert torch.isnan(F.gogan_rank_loss(real, torch.zeros(3), torch.zeros(3)))


def test_a_linear_critic_with_nan_scores_gives_a_nan_penalty():
    # A linear critic's input gradient is its weight whatever the input, so the penalty was finite for NaN input.
    real = torch.randn(N, 2, 2, 2)
    real[1] = float("nan")
    penalty = F.gradient_penalty(LINEAR_CRITIC, real, torch.randn(N, 2, 2, 2), reduction=NONE)
    assert torch.isnan(penalty[1]) and torch.isfinite(penalty[[0, 2, 3]]).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize(("case_name", "argument"), POISON, ids=[f"{c}-{a}" for c, a in POISON])
def test_non_finite_input_gives_non_finite_output_for_that_sample_only(case_name, argument, value):
    case = ALL_CASES[case_name]
    tensors = case.make()
    clean = case.call(**tensors)
    out = case.call(**poisoned(tensors, argument, value))
    assert torch.isfinite(clean).all()
    if torch.isnan(torch.tensor(value)):
        assert torch.isnan(out[1]).all(), out
    else:
        assert not torch.isfinite(out[1]).any(), out
    others = [0, 2, 3]
    torch.testing.assert_close(out[others], clean[others])


# ---------------------------------------------------------------------------------------------------------------
# 8. The computation dtype: float32, or wider.


def test_float16_stage_rank_loss_does_not_overflow():
    real = torch.full((2,), -80.0, dtype=torch.float16)
    fake = prev = torch.full((2,), -1.0, dtype=torch.float16)  # rank and lower clamp terms are 0
    loss = rankplug.StageRankLoss(m_high=1.0, m_low=0.0)(real, fake, prev)  # 1000 * [1 - (-80)]_+
    assert loss.dtype == torch.float32
    assert loss.item() == 81_000.0


def test_float16_sum_of_4096_scores_does_not_overflow():
    loss = rankplug.HingeMarginLoss(margin=1.0, reduction="sum")(
        torch.zeros(4096, dtype=torch.float16), torch.full((4096,), 19.0, dtype=torch.float16)
    )
    assert loss.dtype == torch.float32
    assert loss.item() == 4096 * 20.0


def test_bfloat16_hinge_keeps_a_half_point_gap():
    real = torch.tensor([256.0], dtype=torch.bfloat16)
    fake = torch.tensor([255.0], dtype=torch.bfloat16)
    loss = F.hinge_margin_loss(real, fake, margin=1.5)  # [255 + 1.5 - 256]_+ = 0.5; bfloat16 rounds 256.5 to 256
    assert loss.dtype == torch.float32
    assert loss.item() == 0.5


def test_float16_patchgan_map_is_averaged_in_float32():
    real = torch.full((2, 1, 64, 64), 60_000.0, dtype=torch.float16)
    real[:, :, 0, 0] = 65_000.0
    loss = F.wgan_generator_loss(real, reduction="none")
    expected = -(60_000.0 + 5_000.0 / 4096)
    torch.testing.assert_close(loss, torch.full((2,), expected), rtol=0, atol=1e-2)


DTYPE_CASES = [name for name in CASES if not name.startswith(("AAMAuxClassifier", "TripletMetricDiscriminatorHead"))]


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
@pytest.mark.parametrize("case_name", DTYPE_CASES)
def test_every_loss_computes_in_float32_or_wider(case_name, dtype, expected):
    case = CASES[case_name]
    tensors = {k: v if k in case.labels else v.to(dtype) for k, v in case.make().items()}
    assert case.call(**tensors).dtype == expected


# ---------------------------------------------------------------------------------------------------------------
# 9. The gradient penalty under fp16 autocast with a default GradScaler.

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def tanh_critic(device: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 1)).to(device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", DEVICES)
def test_penalty_under_autocast_with_a_default_grad_scaler_equals_float32(device, dtype):
    critic = tanh_critic(device)
    gen = torch.Generator().manual_seed(1)
    real, fake = (torch.randn(4, 2, 4, 4, generator=gen).to(device) for _ in range(2))
    mix = torch.rand(4, generator=gen).to(device)
    reference = F.gradient_penalty(critic, real, fake, mix_weights=mix)
    scaler = torch.amp.GradScaler(device)  # init_scale 2**16: above float16's largest value, 65504
    with torch.autocast(device, dtype=dtype):
        got = F.gradient_penalty(critic, real, fake, mix_weights=mix, scaler=scaler)
        module = rankplug.GradientPenalty()(critic, real, fake, mix_weights=mix, scaler=scaler)
    assert got.dtype == torch.float32
    assert torch.isfinite(got)
    torch.testing.assert_close(got, reference, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(module, got)


@pytest.mark.parametrize("device", DEVICES)
def test_full_fp16_step_with_a_default_grad_scaler(device):
    critic = tanh_critic(device)
    opt = torch.optim.SGD(critic.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler(device)
    gen = torch.Generator().manual_seed(2)
    real, fake = (torch.randn(4, 2, 4, 4, generator=gen).to(device) for _ in range(2))
    criterion, penalty = rankplug.HingeMarginLoss(margin=1.0), rankplug.GradientPenalty(weight=10.0)
    steps_taken = 0
    for _ in range(4):
        before = [p.detach().clone() for p in critic.parameters()]
        reference = torch.autograd.grad(
            criterion(critic(real), critic(fake)) + penalty(critic, real, fake, mix_weights=torch.full((4,), 0.5)),
            list(critic.parameters()),
            allow_unused=True,
            materialize_grads=True,
        )
        opt.zero_grad()
        with torch.autocast(device, dtype=torch.float16):
            gp = penalty(critic, real, fake, mix_weights=torch.full((4,), 0.5, device=device), scaler=scaler)
            loss = criterion(critic(real), critic(fake)) + gp
        assert torch.isfinite(gp), f"penalty {gp} at scale {scaler.get_scale()}"
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in critic.parameters()]
        if all(torch.isfinite(g).all() for g in grads):  # else the scaler skips the step and lowers its scale
            for got, want in zip(grads, reference):
                torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
        scaler.step(opt)
        scaler.update()
        after = list(critic.parameters())
        assert all(torch.isfinite(p).all() for p in after)
        steps_taken += any(not torch.equal(a, b) for a, b in zip(after, before))
    assert steps_taken >= 1


@pytest.mark.parametrize("bad", [5.0, -1.0, float("nan"), float("inf")])
def test_mix_weights_outside_the_unit_interval(bad):
    mix = torch.full((4,), 0.5)
    mix[2] = bad
    with pytest.raises(ValueError, match=rf"mix_weights must be finite and in \[0, 1\]; found {bad}"):
        F.gradient_penalty(LINEAR_CRITIC, torch.zeros(4, 8), torch.ones(4, 8), mix_weights=mix)


def test_gradient_penalty_forward_is_fully_typed():
    params = inspect.signature(rankplug.GradientPenalty.forward).parameters
    annotations = {name: str(p.annotation) for name, p in params.items() if name != "self"}
    assert annotations == {
        "discriminator": "Callable[[Tensor], Any]",
        "real": "Tensor",
        "fake": "Tensor",
        "mix_weights": "Tensor | None",
        "generator": "torch.Generator | None",
        "scaler": "torch.amp.GradScaler | None",
    }
    assert inspect.signature(rankplug.GradientPenalty.forward).return_annotation == "Tensor"


# ---------------------------------------------------------------------------------------------------------------
# 10. torch.compile(fullgraph=True).


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def eager_and_compiled(case: Case, backend: str) -> None:
    tensors = case.make()

    def leaves() -> dict[str, Tensor]:
        return {
            k: v.clone().requires_grad_(k not in case.labels and k not in case.frozen and not case.no_grad_output)
            for k, v in tensors.items()
        }

    eager_in, compiled_in = leaves(), leaves()
    eager_out = case.call(**eager_in)
    compiled_out = torch.compile(case.call, fullgraph=True, backend=backend)(**compiled_in)
    torch.testing.assert_close(compiled_out, eager_out)
    if case.no_grad_output:
        assert not compiled_out.requires_grad
        return
    eager_out.sum().backward()
    compiled_out.sum().backward()
    for name, leaf in compiled_in.items():
        if leaf.requires_grad:
            torch.testing.assert_close(leaf.grad, eager_in[name].grad, msg=f"gradient of {name}")


@pytest.mark.parametrize("case_name", list(CASES))
def test_every_loss_and_head_compiles_with_fullgraph(case_name, fresh_dynamo):
    # aot_eager traces forward and backward and refuses graph breaks as the default backend does, without C++.
    eager_and_compiled(CASES[case_name], "aot_eager")


def test_aam_label_check_still_runs_eagerly():
    # The label check needs the host, so it is skipped while compiling (it was a graph break), not eagerly.
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 4\]; found 7"):
        AAM_HEAD.loss(torch.zeros(2, C), torch.tensor([0, 7]))


def inductor_available() -> bool:
    return shutil.which(os.environ.get("CXX", "g++")) is not None or shutil.which("c++") is not None


@pytest.mark.skipif(not inductor_available(), reason="inductor's CPU backend needs a C++ compiler")
def test_margin_loss_compiles_with_inductor_and_keeps_nan(fresh_dynamo):
    # One small loss with the default backend, forward only (aot_eager covers the backward): the generated
    # kernel must give the eager values and must not fold the hinge's 0 * u away.
    criterion = rankplug.HingeMarginLoss(margin=1.0, reduction="none")
    real = torch.tensor([2.0, 0.5, float("inf"), float("nan"), 1.0])
    fake = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.25])
    got = torch.compile(criterion, fullgraph=True)(real, fake)
    torch.testing.assert_close(got, criterion(real, fake), equal_nan=True)
    torch.testing.assert_close(got, torch.tensor([0.0, 0.5, float("nan"), float("nan"), 0.25]), equal_nan=True)


def test_compiled_critic_step_with_the_penalty_called_eagerly(fresh_dynamo):
    # The penalty's double backward cannot be compiled; D and the loss are, and the penalty runs on the eager D.
    critic = tanh_critic("cpu")
    gen = torch.Generator().manual_seed(3)
    real, fake = (torch.randn(4, 2, 4, 4, generator=gen) for _ in range(2))
    mix = torch.rand(4, generator=gen)
    criterion, penalty = rankplug.HingeMarginLoss(margin=1.0), rankplug.GradientPenalty(weight=10.0)

    def step(d: Callable[[Tensor], Tensor], loss_fn: Callable[[Tensor, Tensor], Tensor]) -> list[Tensor]:
        critic.zero_grad()
        loss = loss_fn(d(real), d(fake)) + penalty(critic, real, fake, mix_weights=mix)
        loss.backward()
        return [p.grad.clone() for p in critic.parameters()]

    eager = step(critic, criterion)
    compiled = step(
        torch.compile(critic, fullgraph=True, backend="aot_eager"),
        torch.compile(criterion, fullgraph=True, backend="aot_eager"),
    )
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------------------------
# 11. Devices, layouts and embedding_distance's input.


ARGUMENTS = [(case_name, name) for case_name, case in ALL_CASES.items() for name in case.make()]
# A tensor can only be on the wrong device next to another tensor, or a head's weight.
PAIRED = [(c, a) for c, a in ARGUMENTS if ALL_CASES[c].head or len(ALL_CASES[c].make()) > 1]


@pytest.mark.parametrize(("case_name", "argument"), PAIRED, ids=[f"{c}-{a}" for c, a in PAIRED])
def test_a_tensor_on_another_device_is_a_clear_error(case_name, argument):
    case = ALL_CASES[case_name]
    tensors = case.make()
    tensors[argument] = tensors[argument].to("meta")
    with pytest.raises(ValueError, match=r"; move both to one device$") as error:
        case.call(**tensors)
    message = str(error.value)
    assert re.fullmatch(r"[\w' ]+ is on (meta|cpu) but [\w' ]+ is on (meta|cpu); move both to one device", message)
    name = case.aliases.get(argument, argument)
    assert f"{name} is on meta" in message, message


@pytest.mark.parametrize(
    "make_head",
    [lambda: rankplug.AAMAuxClassifier(D_IN, C), lambda: rankplug.TripletMetricDiscriminatorHead(D_IN, embed_dim=K)],
    ids=["AAMAuxClassifier", "TripletMetricDiscriminatorHead"],
)
def test_a_head_on_another_device_than_its_features(make_head):
    with pytest.raises(ValueError, match=r"^features is on meta but the head's weight is on cpu; move both"):
        make_head()(torch.zeros(N, D_IN, device="meta"))
    with pytest.raises(ValueError, match=r"^features is on cpu but the head's weight is on meta; move both"):
        make_head().to("meta")(torch.zeros(N, D_IN))


def test_the_probe_example_message():
    with pytest.raises(
        ValueError, match=r"^fake_scores is on meta but real_scores is on cpu; move both to one device$"
    ):
        rankplug.HingeMarginLoss()(torch.zeros(4), torch.zeros(4, device="meta"))


@pytest.mark.parametrize(("case_name", "argument"), ARGUMENTS, ids=[f"{c}-{a}" for c, a in ARGUMENTS])
def test_a_sparse_tensor_is_a_type_error(case_name, argument):
    case = ALL_CASES[case_name]
    tensors = case.make()
    tensors[argument] = tensors[argument].to_sparse()
    with pytest.raises(TypeError, match=r"must be a dense \(strided\) tensor; got layout torch.sparse_coo") as error:
        case.call(**tensors)
    assert str(error.value).startswith(case.aliases.get(argument, argument)), str(error.value)


@pytest.mark.parametrize(
    ("first", "second", "error", "message"),
    [
        ([0.0, 1.0], torch.zeros(2, 3), TypeError, r"^first must be a torch.Tensor; got list"),
        (torch.zeros(4, 3), torch.zeros(1, 3), ValueError, r"^second has shape \(1, 3\) but first has shape \(4, 3\)"),
        (torch.zeros(4, 3), torch.zeros(4, 1), ValueError, r"^second has shape \(4, 1\) but first has shape \(4, 3\)"),
        (torch.zeros(4), torch.zeros(4), ValueError, r"^first has shape \(4,\); expected \(N, K\)"),
        (torch.zeros(4, 3), torch.zeros(4, 3, 1), ValueError, r"^second has shape \(4, 3, 1\); expected \(N, K\)"),
        (torch.zeros(0, 3), torch.zeros(0, 3), ValueError, r"^first is an empty batch"),
        (torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 3), TypeError, r"^first must have a floating-point"),
        (torch.zeros(4, 3), torch.zeros(4, 3, device="meta"), ValueError, r"^second is on meta but first is on cpu"),
    ],
)
def test_embedding_distance_validates_its_input(first, second, error, message):
    with pytest.raises(error, match=message):
        F.embedding_distance(first, second)


# ---------------------------------------------------------------------------------------------------------------
# 12. Settings changed after construction, empty maps.


@pytest.mark.parametrize(
    "module",
    [rankplug.AAMAuxClassifier(D_IN, C), rankplug.TripletMetricDiscriminatorHead(D_IN, embed_dim=K)],
    ids=["AAMAuxClassifier", "TripletMetricDiscriminatorHead"],
)
def test_head_reduction_is_validated_when_set(module):
    module.reduction = "sum"
    assert module.reduction == "sum"
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum' or 'none'; got 'avg'"):
        module.reduction = "avg"
    assert module.reduction == "sum"


def test_loss_reduction_set_to_nonsense_raises_at_the_call():
    criterion = rankplug.HingeMarginLoss()
    criterion.reduction = "avg"  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum' or 'none'; got 'avg'"):
        criterion(torch.zeros(4), torch.ones(4))


@pytest.mark.parametrize("shape", [(4, 1, 0, 0), (4, 1, 3, 0), (4, 1, 0, 2)])
def test_empty_patchgan_map(shape):
    with pytest.raises(
        ValueError,
        match=rf"^real_scores has shape {re.escape(str(shape))}, an empty score map; expected \(N, 1, H, W\) "
        r"with H, W >= 1$",
    ):
        F.hinge_margin_loss(torch.zeros(shape), torch.zeros(4))
