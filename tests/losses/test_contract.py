"""One contract that every public loss and head passes (after kornia's ``BaseTester``, written for rankplug).

Each case names a module from ``rankplug.__all__``, how to call it, its functional twin (written with the
settings spelled out, so a module that drops a setting fails), its inputs and one bad input. Every case is then:

- the module equals its functional twin, values and gradients, in float64;
- ``torch.autograd.gradcheck`` passes in float64;
- ``torch.compile(fullgraph=True)`` gives the eager values and gradients (``aot_eager``: the graph capture and
  the traced backward, without inductor's C++ build);
- float16 and bfloat16 inputs give a finite float32 result (the losses compute in float32): for the losses the
  same numbers as float32 inputs of the same values; for the heads and the penalty, whose parameters stay
  float32, under ``torch.autocast`` as a mixed-precision loop calls them;
- a bad input raises ``ValueError`` or ``TypeError`` whose message starts with the argument's name.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as TF
from torch import Tensor, nn

import rankplug
from rankplug import functional as F

N, K, C, D_IN = 4, 6, 5, 8  # batch, embedding size, classes, feature values per sample for the heads
REAL_FAKE = ("real_scores", "fake_scores")
REAL_FAKE_PREV = (*REAL_FAKE, "prev_fake_scores")
TRIPLET = ("anchor_emb", "positive_emb", "fake_emb")


@dataclass(frozen=True)
class Contract:
    build: Callable[[], nn.Module]  # the module, with settings other than the defaults
    call: Callable[..., Tensor]  # (module, **inputs) -> loss, through the module
    twin: Callable[..., Tensor]  # (module, **inputs) -> the same loss, through rankplug.functional
    make: Callable[[], dict[str, Tensor]]  # float64 inputs; generated from a fixed seed
    differentiable: tuple[str, ...]  # the inputs gradcheck takes
    bad: tuple[str, Any, type[Exception], str]  # (input, bad value, error, the name its message starts with)
    lowered: tuple[str, ...] = ()  # the inputs the half-precision check lowers (default: the differentiable ones)
    autocast: bool = False  # half precision under torch.autocast: the module holds float32 parameters
    compiles: bool = True


def scores(*names: str, shape: tuple[int, ...] = (N,)) -> Callable[[], dict[str, Tensor]]:
    def make() -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(0)
        return {name: torch.randn(shape, generator=gen, dtype=torch.float64) for name in names}

    return make


def embeddings() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(1)
    out = {name: torch.randn(N, K, generator=gen, dtype=torch.float64) for name in TRIPLET}
    out["positive_images"] = torch.rand(N, 1, 2, 2, generator=gen, dtype=torch.float64)
    out["fake_images"] = torch.rand(N, 1, 2, 2, generator=gen, dtype=torch.float64)
    return out


def cosines(multi_label: bool) -> Callable[[], dict[str, Tensor]]:
    def make() -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(2)
        # |cos| <= 0.9 < cos(0.4): away from the fallback's switch at cos = -cos(m) (and +cos(m), multi-label).
        cosine = torch.rand(N, C, generator=gen, dtype=torch.float64) * 1.8 - 0.9
        if multi_label:
            targets = (torch.rand(N, C, generator=gen) > 0.5).double()
        else:
            targets = torch.tensor([0, 3, 4, 1])
        return {"cosine": cosine, "targets": targets}

    return make


def features(*names: str, images: bool = False, labels: bool = False) -> Callable[[], dict[str, Tensor]]:
    def make() -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(3)
        out = {name: torch.randn(N, 2, 2, 2, generator=gen, dtype=torch.float64) for name in names}
        if images:
            out["positive_images"] = torch.rand(N, 1, 2, 2, generator=gen, dtype=torch.float64)
            out["fake_images"] = torch.rand(N, 1, 2, 2, generator=gen, dtype=torch.float64)
        if labels:
            out["targets"] = torch.tensor([0, 3, 4, 1])
        return out

    return make


def penalty_inputs() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(4)
    real, fake = (torch.randn(N, 2, 2, 2, generator=gen, dtype=torch.float64) for _ in range(2))
    mix_weights = torch.rand(N, generator=gen, dtype=torch.float64)
    critic_weight = torch.randn(3, D_IN, generator=gen, dtype=torch.float64) * 0.5
    return {"real": real, "fake": fake, "mix_weights": mix_weights, "critic_weight": critic_weight}


def critic(weight: Tensor) -> Callable[[Tensor], Tensor]:
    """A two-layer critic whose first layer is an input, so that gradcheck can differentiate the penalty by it."""
    return lambda x: torch.tanh(x.flatten(1) @ weight.t()).sum(1, keepdim=True)


def aam_head() -> nn.Module:
    torch.manual_seed(5)
    return rankplug.AAMAuxClassifier(D_IN, C, scale=10.0, margin=0.4, reduction="none")


def aam_head_twin(head: nn.Module, features: Tensor, targets: Tensor) -> Tensor:
    cosine = TF.linear(TF.normalize(features.flatten(1), dim=1), TF.normalize(head.weight, dim=1))
    return F.additive_angular_margin_loss(cosine, targets, scale=10.0, margin=0.4, reduction="none")


def triplet_head() -> nn.Module:
    torch.manual_seed(6)
    return rankplug.TripletMetricDiscriminatorHead(D_IN, embed_dim=K, alpha=2.0, reduction="none")


def triplet_head_call(head: nn.Module, anchor: Tensor, positive: Tensor, fake: Tensor, **images: Tensor) -> Tensor:
    loss_d = head.discriminator_loss(head(anchor), head(positive), head(fake), **images)
    return loss_d + head.generator_loss(head(positive), head(fake))


def triplet_head_twin(head: nn.Module, anchor: Tensor, positive: Tensor, fake: Tensor, **images: Tensor) -> Tensor:
    a, p, f = (TF.linear(x.flatten(1), head.embed.weight, head.embed.bias) for x in (anchor, positive, fake))
    loss_d = F.triplet_metric_discriminator_loss(a, p, f, alpha=2.0, reduction="none", **images)
    return loss_d + F.triplet_metric_generator_loss(p, f, reduction="none")


def stage_rank_loss() -> nn.Module:
    criterion = rankplug.StageRankLoss(clamp_weight=3.0, reduction="none")
    criterion.set_markers(0.8, -0.4)
    return criterion


CONTRACTS: dict[str, Contract] = {
    "HingeMarginLoss": Contract(
        build=lambda: rankplug.HingeMarginLoss(margin=0.7, reduction="none"),
        call=lambda m, **t: m(**t),
        twin=lambda m, **t: F.hinge_margin_loss(**t, margin=0.7, reduction="none"),
        make=scores(*REAL_FAKE, shape=(N, 1)),
        differentiable=REAL_FAKE,
        bad=("real_scores", torch.zeros(N, 3), ValueError, "real_scores"),
    ),
    "SymmetricHingeLoss": Contract(
        build=lambda: rankplug.SymmetricHingeLoss(margin=0.6, reduction="sum"),
        call=lambda m, **t: m(**t),
        twin=lambda m, **t: F.symmetric_hinge_loss(**t, margin=0.6, reduction="sum"),
        make=scores(*REAL_FAKE, shape=(N, 1, 2, 2)),
        differentiable=REAL_FAKE,
        bad=("fake_scores", torch.zeros(N, dtype=torch.long), TypeError, "fake_scores"),
    ),
    "StageRankLoss": Contract(
        build=stage_rank_loss,
        call=lambda m, **t: m(**t),
        twin=lambda m, **t: F.stage_rank_loss(**t, m_high=0.8, m_low=-0.4, clamp_weight=3.0, reduction="none"),
        make=scores(*REAL_FAKE_PREV),
        differentiable=REAL_FAKE_PREV,
        bad=("prev_fake_scores", torch.zeros(N + 1), ValueError, "prev_fake_scores"),
    ),
    "GoGANRankLoss": Contract(
        build=lambda: rankplug.GoGANRankLoss(margin=0.5, disc_weight=0.8, rank_weight=0.3, reduction="none"),
        call=lambda m, **t: m(**t),
        twin=lambda m, **t: F.gogan_rank_loss(**t, margin=0.5, disc_weight=0.8, rank_weight=0.3, reduction="none"),
        make=scores(*REAL_FAKE_PREV),
        differentiable=REAL_FAKE,  # prev_fake_scores come from the frozen critic: no gradient by contract
        bad=("prev_fake_scores", torch.zeros(N, 2), ValueError, "prev_fake_scores"),
    ),
    "GradientPenalty": Contract(
        build=lambda: rankplug.GradientPenalty(weight=7.0, reduction="none"),
        call=lambda m, real, fake, mix_weights, critic_weight: m(
            critic(critic_weight), real, fake, mix_weights=mix_weights
        ),
        twin=lambda m, real, fake, mix_weights, critic_weight: F.gradient_penalty(
            critic(critic_weight), real, fake, weight=7.0, mix_weights=mix_weights, reduction="none"
        ),
        make=penalty_inputs,
        differentiable=("critic_weight",),  # x_hat is detached: the penalty trains the critic, not the samples
        bad=("fake", torch.zeros(N, 3), ValueError, "fake"),
        lowered=("real", "fake"),
        autocast=True,
        # GradientPenalty's docs: torch cannot compile a double backward; D is compiled, the penalty runs eagerly.
        compiles=False,
    ),
    "TripletMetricDiscriminatorLoss": Contract(
        build=lambda: rankplug.TripletMetricDiscriminatorLoss(alpha=3.0, margin_norm="sum", reduction="none"),
        call=lambda m, anchor_emb, positive_emb, fake_emb, **images: m(anchor_emb, positive_emb, fake_emb, **images),
        twin=lambda m, anchor_emb, positive_emb, fake_emb, **images: F.triplet_metric_discriminator_loss(
            anchor_emb, positive_emb, fake_emb, **images, alpha=3.0, margin_norm="sum", reduction="none"
        ),
        make=embeddings,
        differentiable=TRIPLET,
        bad=("anchor_emb", torch.zeros(N), ValueError, "anchor_emb"),
    ),
    "TripletMetricGeneratorLoss": Contract(
        build=lambda: rankplug.TripletMetricGeneratorLoss(reduction="sum"),
        call=lambda m, positive_emb, fake_emb, **_: m(positive_emb, fake_emb),
        twin=lambda m, positive_emb, fake_emb, **_: F.triplet_metric_generator_loss(
            positive_emb, fake_emb, reduction="sum"
        ),
        make=embeddings,
        differentiable=("positive_emb", "fake_emb"),
        bad=("fake_emb", torch.zeros(N, K, dtype=torch.int32), TypeError, "fake_emb"),
    ),
    "AdditiveAngularMarginLoss": Contract(
        build=lambda: rankplug.AdditiveAngularMarginLoss(scale=12.0, margin=0.4, reduction="none"),
        call=lambda m, **t: m(**t),
        twin=lambda m, **t: F.additive_angular_margin_loss(**t, scale=12.0, margin=0.4, reduction="none"),
        make=cosines(multi_label=False),
        differentiable=("cosine",),
        bad=("cosine", torch.zeros(N), ValueError, "cosine"),
    ),
    "AdditiveAngularMarginLoss(multi_label)": Contract(
        build=lambda: rankplug.AdditiveAngularMarginLoss(scale=12.0, margin=0.4, multi_label=True, reduction="sum"),
        call=lambda m, **t: m(**t),
        twin=lambda m, **t: F.additive_angular_margin_loss(
            **t, scale=12.0, margin=0.4, multi_label=True, reduction="sum"
        ),
        make=cosines(multi_label=True),
        differentiable=("cosine",),
        bad=("targets", torch.zeros(N, C, dtype=torch.long), TypeError, "targets"),
    ),
    "AAMAuxClassifier": Contract(
        build=aam_head,
        call=lambda head, features, targets: head.loss(head(features), targets),
        twin=aam_head_twin,
        make=features("features", labels=True),
        differentiable=("features",),
        bad=("features", torch.zeros(N, D_IN + 1), ValueError, "features"),
        autocast=True,
    ),
    "TripletMetricDiscriminatorHead": Contract(
        build=triplet_head,
        call=triplet_head_call,
        twin=triplet_head_twin,
        make=features("anchor", "positive", "fake", images=True),
        differentiable=("anchor", "positive", "fake"),
        bad=("fake", torch.zeros(N, D_IN, dtype=torch.long), TypeError, "features"),
        autocast=True,
    ),
}
NAMES = list(CONTRACTS)


def test_every_public_loss_and_head_has_a_contract():
    public = {
        name
        for name in rankplug.__all__
        if name.endswith(("Loss", "Penalty", "Head", "Classifier")) and isinstance(getattr(rankplug, name), type)
    }
    assert public == {name.split("(")[0] for name in NAMES}


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def leaves(case: Contract, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Fresh copies of the inputs, the differentiable ones requiring grad."""
    return {name: t.detach().clone().requires_grad_(name in case.differentiable) for name, t in inputs.items()}


def grads(case: Contract, out: Tensor, inputs: dict[str, Tensor]) -> tuple[Tensor, ...]:
    return torch.autograd.grad(out.sum(), [inputs[name] for name in case.differentiable])


@pytest.mark.parametrize("name", NAMES)
def test_module_equals_its_functional_twin(name):
    case = CONTRACTS[name]
    module = case.build().double()
    by_module, by_twin = leaves(case, case.make()), leaves(case, case.make())
    out, expected = case.call(module, **by_module), case.twin(module, **by_twin)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads(case, out, by_module), grads(case, expected, by_twin)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_in_float64(name):
    case = CONTRACTS[name]
    module = case.build().double()
    inputs = case.make()
    fixed = {k: v for k, v in inputs.items() if k not in case.differentiable}

    def loss(*values: Tensor) -> Tensor:
        return case.call(module, **fixed, **dict(zip(case.differentiable, values)))

    values = tuple(inputs[k].requires_grad_(True) for k in case.differentiable)
    assert torch.autograd.gradcheck(loss, values)


@pytest.mark.parametrize("name", NAMES)
def test_compiles_with_fullgraph_to_the_eager_values(name, fresh_dynamo):
    case = CONTRACTS[name]
    if not case.compiles:
        pytest.skip("documented: torch cannot compile the penalty's double backward (see GradientPenalty)")
    module = case.build()
    inputs = {k: v.float() if v.is_floating_point() else v for k, v in case.make().items()}
    eager_in, compiled_in = leaves(case, inputs), leaves(case, inputs)
    eager = case.call(module, **eager_in)
    compiled = torch.compile(lambda **t: case.call(module, **t), fullgraph=True, backend="aot_eager")(**compiled_in)
    torch.testing.assert_close(compiled, eager)
    for got, want in zip(grads(case, compiled, compiled_in), grads(case, eager, eager_in)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_inputs_give_a_finite_float32_result(name, dtype):
    case = CONTRACTS[name]
    module = case.build()
    inputs = case.make()
    lowered = case.lowered or case.differentiable
    low = {k: v.to(dtype) if k in lowered else v.float() if v.is_floating_point() else v for k, v in inputs.items()}
    context = torch.autocast("cpu", dtype=dtype) if case.autocast else contextlib.nullcontext()
    low_in = leaves(case, low)
    with context:
        out = case.call(module, **low_in)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in grads(case, out, low_in))
    if not case.autocast:  # computed in float32: the same numbers as float32 inputs of the same values
        upcast = {k: v.float() if v.is_floating_point() else v for k, v in low.items()}
        torch.testing.assert_close(out.detach(), case.call(module, **upcast), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_naming_the_argument(name):
    case = CONTRACTS[name]
    argument, value, error, named = case.bad
    inputs = {k: v.float() if v.is_floating_point() else v for k, v in case.make().items()}
    case.call(case.build(), **inputs)  # the good input passes
    with pytest.raises(error, match=rf"^{re.escape(named)} "):
        case.call(case.build(), **{**inputs, argument: value})
