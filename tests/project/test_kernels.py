"""The compiled CPU kernel of the AAM head (rankplug/csrc/aam_cpu.cpp) against the eager path it replaces.

Every comparison runs the same call twice, once on the eager PyTorch path (``RANKPLUG_KERNELS=0``, whose own
tests in test_angular.py check it against autograd of the composite and a Python loop) and once on the kernel,
and compares values and gradients for the features and the class weights.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from rankplug import AAMAuxClassifier, _kernels

REQUIRED = os.environ.get("RANKPLUG_REQUIRE_KERNELS") == "1"


@pytest.fixture
def kernel(monkeypatch):
    """The loaded extension (skipped where it cannot be built, unless RANKPLUG_REQUIRE_KERNELS=1, as in CI)."""
    monkeypatch.delenv("RANKPLUG_KERNELS", raising=False)
    _kernels.reset()
    module = _kernels.aam_cpu()
    if module is None:
        status = _kernels.kernel_status()["aam_cpu"]
        if REQUIRED:
            pytest.fail(f"the compiled AAM kernel is required here and is not available: {status}")
        pytest.skip(f"the compiled AAM kernel is not available here: {status}")
    return module


def on_path(eager: bool, fn):
    previous = os.environ.pop("RANKPLUG_KERNELS", None)
    if eager:
        os.environ["RANKPLUG_KERNELS"] = "0"
    _kernels.reset()
    try:
        return fn()
    finally:
        os.environ.pop("RANKPLUG_KERNELS", None)
        if previous is not None:
            os.environ["RANKPLUG_KERNELS"] = previous
        _kernels.reset()


def head_loss_and_grads(head, features, labels, weights=None):
    def run():
        f = features.clone().requires_grad_(True)
        logits = head(f)
        loss = head.loss(logits, labels)
        total = loss.sum() if weights is None else (loss * weights).sum()
        grads = torch.autograd.grad(total, [f, head.weight])
        return logits.detach(), loss.detach(), grads, type(loss.grad_fn).__name__, loss.grad_fn.name()

    return run


def assert_paths_agree(head, features, labels, *, rtol, atol, weights=None):
    run = head_loss_and_grads(head, features, labels, weights)
    eager, fused = on_path(True, run), on_path(False, run)
    assert eager[3] != "CppFunction", eager[3]
    assert "rankplug_aam::MarginCrossEntropy" in fused[4], fused[4]
    torch.testing.assert_close(fused[0], eager[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(fused[1], eager[1], rtol=rtol, atol=atol, equal_nan=True)
    for a, b in zip(fused[2], eager[2]):
        scale = b.abs().nan_to_num(0.0).max().clamp_min(1.0)  # a zero feature's gradient is of order s / 1e-12
        torch.testing.assert_close(a / scale, b / scale, rtol=rtol, atol=atol, equal_nan=True)


def hard_batch(n, d, classes, dtype, seed):
    """Random features plus the edge rows: a zero feature, features along and opposite their class weight
    (cos = +-1), one opposite another class's weight, and tiny and large scales.

    In float32 the rows along a class weight are left out: there ``s^2 - t^2`` cancels to a few ulps of ``s^2``,
    so the margin's slope at ``cos = 1`` (``cos m + sin m cot theta``, unbounded as theta -> 0) depends on the last
    bit of the cosine, which the two paths round differently (in float64 they agree)."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, d, dtype=dtype, generator=generator)
    features = torch.randn(n, d, dtype=dtype, generator=generator)
    labels = torch.randint(classes, (n,), generator=generator)
    features[0] = 0.0
    if dtype == torch.float64:
        features[1] = 3.0 * weight[labels[1]]
        features[2] = -0.5 * weight[labels[2]]
    features[3] = -2.0 * weight[(labels[3] + 1) % classes]
    features[4] *= 1e-6
    features[5] *= 1e6
    return features, weight, labels


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
# C <= d and C > d (two ways of taking the radial terms); C <= 32 and C > 32 (the softmax by hand or ATen's)
@pytest.mark.parametrize(
    ("n", "d", "classes"), [(9, 12, 5), (9, 12, 20), (50, 4, 30), (6, 1, 3), (9, 48, 40), (7, 6, 33)]
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("scale", "margin"), [(16.0, 0.3), (1.0, 0.0), (64.0, 1.2), (7.5, 0.01)])
def test_kernel_equals_the_eager_path(kernel, dtype, n, d, classes, reduction, scale, margin):
    features, weight, labels = hard_batch(n, d, classes, dtype, seed=n * d + classes)
    head = AAMAuxClassifier(d, classes, scale=scale, margin=margin, reduction=reduction).to(dtype)
    with torch.no_grad():
        head.weight.copy_(weight)
    weights = torch.rand(n, dtype=dtype) if reduction == "none" else None
    # float32: the two paths round differently; s = 64 turns a 1e-7 cosine difference into 1e-5 of a logit
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    assert_paths_agree(head, features, labels, weights=weights, **tol)


@pytest.mark.parametrize("classes", [6, 40])  # the softmax by hand, ATen's
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kernel_loss_on_any_logits_equals_the_eager_path(kernel, reduction, classes):
    # Logits not made by the head: past -s (the fallback, with s^2 - t^2 < 0 under the floor), past +s, a NaN
    # row (its sample's loss is NaN, on both paths) and ordinary values.
    torch.manual_seed(3)
    head = AAMAuxClassifier(4, classes, scale=5.0, margin=0.5, reduction=reduction).double()
    logits = 4.0 * torch.randn(8, classes, dtype=torch.float64)
    labels = torch.randint(classes, (8,))
    logits[0, labels[0]] = -7.0
    logits[1, labels[1]] = 9.0
    logits[2, labels[2]] = -5.0 * math.cos(0.5)  # exactly on the fallback boundary
    logits[3, labels[3]] = 5.0  # cos = 1: the floor under sin^2
    if reduction == "none":
        logits[4, 2] = float("nan")
        logits[5, (labels[5] + 1) % classes] = float("-inf")  # a class with probability 0: a finite loss

    def run():
        z = logits.clone().requires_grad_(True)
        loss = head.loss(z, labels)
        (grad,) = torch.autograd.grad(loss.sum(), [z])
        return loss.detach(), grad, loss.grad_fn.name()

    eager, fused = on_path(True, run), on_path(False, run)
    assert "rankplug_aam::MarginCrossEntropy" in fused[2] and "rankplug_aam" not in eager[2]
    torch.testing.assert_close(fused[0], eager[0], rtol=1e-12, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(fused[1], eager[1], rtol=1e-12, atol=1e-12, equal_nan=True)
    if reduction == "none":
        assert torch.isnan(fused[0][4]) and torch.isfinite(fused[0][torch.arange(8) != 4]).all()
        assert torch.isfinite(fused[1][5]).all()


@pytest.mark.parametrize(("n", "d", "classes"), [(5, 7, 3), (5, 3, 7)])
def test_kernel_gradcheck(kernel, n, d, classes):
    torch.manual_seed(4)
    head = AAMAuxClassifier(d, classes, scale=4.0, margin=0.3).double()
    features = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    weight = head.weight
    labels = torch.randint(classes, (n,))

    def loss(f, w):
        return kernel.margin_cross_entropy(kernel.scaled_cosine(f, w, 4.0), labels, 4.0, 0.3, 1)

    assert torch.autograd.gradcheck(loss, (features, weight))
    logits = kernel.scaled_cosine(features, weight, 4.0).detach().requires_grad_(True)
    for code in (0, 1, 2):
        assert torch.autograd.gradcheck(lambda z, c=code: kernel.margin_cross_entropy(z, labels, 4.0, 0.3, c), logits)


def test_kernel_path_is_taken_and_reported(kernel):
    head = AAMAuxClassifier(8, 4)
    logits = head(torch.randn(3, 8, requires_grad=True))
    loss = head.loss(logits, torch.tensor([0, 1, 3]))
    assert "ScaledCosine" in logits.grad_fn.name() and "MarginCrossEntropy" in loss.grad_fn.name()
    status = _kernels.kernel_status()
    assert status["aam_cpu"] == "loaded" and status["extension"].startswith("rankplug_aam_cpu_")


@pytest.mark.parametrize("label", [4, -1])
def test_kernel_path_names_a_bad_label(kernel, label):
    head = AAMAuxClassifier(8, 4)
    logits = head(torch.randn(3, 8))
    with pytest.raises(ValueError, match=rf"targets must be class indices in \[0, 3\]; found {label}"):
        head.loss(logits, torch.tensor([0, label, 1]))


def test_kernel_refuses_double_backward(kernel):
    head = AAMAuxClassifier(8, 4).double()
    features = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    loss = head.loss(head(features), torch.tensor([0, 1, 2]))
    with pytest.raises(RuntimeError, match="not twice differentiable"):
        torch.autograd.grad(loss, features, create_graph=True)


def test_kernel_in_place_change_of_the_logits_behaves_as_the_eager_path(kernel):
    # C > d: the output is not kept, so a change in place is differentiated through; C <= d: autograd's
    # in-place error, on both paths.
    for d, classes, ok in ((4, 9, True), (9, 4, False)):

        def run(d=d, classes=classes):
            torch.manual_seed(5)
            head = AAMAuxClassifier(d, classes).double()
            features = torch.randn(6, d, dtype=torch.float64, requires_grad=True)
            logits = head(features)
            logits.mul_(0.5)
            try:
                return torch.autograd.grad(head.loss(logits, torch.arange(6) % classes), [features])[0]
            except RuntimeError as error:
                assert "modified by an inplace operation" in str(error)
                return None

        eager, fused = on_path(True, run), on_path(False, run)
        assert (eager is not None) == ok and (fused is not None) == ok
        if ok:
            torch.testing.assert_close(fused, eager, rtol=1e-12, atol=1e-12)


def test_kernel_with_a_frozen_weight_or_frozen_features(kernel):
    torch.manual_seed(6)
    head = AAMAuxClassifier(8, 5).double()
    features = torch.randn(7, 8, dtype=torch.float64)
    labels = torch.randint(5, (7,))
    head.weight.requires_grad_(False)
    f = features.clone().requires_grad_(True)
    (only_features,) = torch.autograd.grad(head.loss(head(f), labels), [f])
    head.weight.requires_grad_(True)

    def both():
        g = features.clone().requires_grad_(True)
        return torch.autograd.grad(head.loss(head(g), labels), [g, head.weight])

    torch.testing.assert_close(only_features, on_path(True, both)[0], rtol=1e-12, atol=1e-12)
    (only_weight,) = torch.autograd.grad(head.loss(head(features), labels), [head.weight])
    torch.testing.assert_close(only_weight, on_path(True, both)[1], rtol=1e-12, atol=1e-12)


def test_kernel_under_autocast_conv_features_and_strided_input(kernel):
    torch.manual_seed(7)
    conv = nn.Conv2d(3, 4, kernel_size=2, bias=False)
    head = AAMAuxClassifier.from_conv(conv)
    features = torch.randn(5, 3, 2, 2)
    labels = torch.randint(4, (5,))
    assert_paths_agree(head, features, labels, rtol=2e-5, atol=2e-5)  # (N, C, kH, kW) features, a 4-d weight
    wide = torch.randn(12, 5).t()  # (5, 12), not contiguous
    head = AAMAuxClassifier(12, 4)
    assert_paths_agree(head, wide, labels, rtol=2e-5, atol=2e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(wide)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, head(wide))


def test_kernel_splits_large_batches_over_threads_with_the_same_result(kernel):
    torch.manual_seed(8)
    head = AAMAuxClassifier(64, 10).double()
    features, labels = torch.randn(4096, 64, dtype=torch.float64), torch.randint(10, (4096,))
    one = head_loss_and_grads(head, features, labels)()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = head_loss_and_grads(head, features, labels)()
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(two[1], one[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(two[2], one[2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_disabled_kernels_take_the_eager_path(monkeypatch):
    monkeypatch.setenv("RANKPLUG_KERNELS", "off")
    _kernels.reset()
    try:
        assert _kernels.aam_cpu() is None and _kernels.kernel_status()["aam_cpu"] == "disabled"
        head = AAMAuxClassifier(8, 4)
        loss = head.loss(head(torch.randn(3, 8, requires_grad=True)), torch.tensor([0, 1, 3]))
        assert type(loss.grad_fn).__name__ == "_CosineMarginCrossEntropyBackward"
    finally:
        monkeypatch.delenv("RANKPLUG_KERNELS")
        _kernels.reset()


def test_a_failed_build_warns_once_and_falls_back(monkeypatch):
    def no_compiler():
        raise RuntimeError("Error building extension 'x':\nc++: error: no such compiler\nninja: build stopped")

    monkeypatch.delenv("RANKPLUG_KERNELS", raising=False)
    monkeypatch.setattr(_kernels, "_load", no_compiler)
    saved = _kernels._state.pop("built", None)
    _kernels.reset()
    try:
        with pytest.warns(RuntimeWarning, match="could not be built .*no such compiler.*eager path"):
            assert _kernels.aam_cpu() is None
        assert _kernels.kernel_status()["aam_cpu"].startswith("failed: RuntimeError: c++: error: no such compiler")
        head = AAMAuxClassifier(8, 4)
        loss = head.loss(head(torch.randn(3, 8, requires_grad=True)), torch.tensor([0, 1, 3]))
        assert "CppFunction" not in type(loss.grad_fn).__name__
        assert _kernels.aam_cpu() is None  # no second attempt, no second warning
    finally:
        if saved is not None:
            _kernels._state["built"] = saved
        _kernels.reset()


def test_extension_name_holds_the_source_and_the_cpu():
    name, flags = _kernels._build_settings(b"source one")
    other, _ = _kernels._build_settings(b"source two")
    assert name != other and name.startswith("rankplug_aam_cpu_") and flags[0] == "-O3"
    assert ("-march=native" in flags) == (_kernels._cpu_identity() is not None)
