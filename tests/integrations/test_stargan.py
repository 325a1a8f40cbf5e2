"""The StarGAN adapter against a from-scratch stand-in of yunjey/stargan (``tests/standins/stargan``).

Covers: the head reuses ``D.conv2``'s Parameter (optimizer and checkpoint keys keep working), checkpoints move
between the softmax and the AAM head both ways, ``D.forward`` is unchanged, the drop-in ``classification_loss``
reduces to StarGAN's losses at ``m = 0``, the Solver's own ``train()`` runs after the patch, and bad hosts fail
loudly.
"""

from __future__ import annotations

import copy
import doctest
import importlib.util
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rankplug
from rankplug.integrations import stargan
from rankplug.integrations.stargan import classification_loss, install_aam_head, patch_solver
from tests.standins.stargan import Discriminator, Solver, get_loader, tiny_config

SCALE, MARGIN = 16.0, 0.3
C_DIM = {"CelebA": 5, "RaFD": 8}


def make_solver(tmp_path, dataset="CelebA", **overrides):
    config = tiny_config(tmp_path, dataset=dataset, c_dim=C_DIM[dataset], **overrides)
    loader = get_loader(dataset=dataset, c_dim=config.c_dim, image_size=config.image_size, batch_size=8)
    return Solver(loader if dataset == "CelebA" else None, loader if dataset == "RaFD" else None, config)


def optimizer_params(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


def labels_for(dataset, n=6, generator=None):
    if dataset == "CelebA":
        return (torch.rand(n, C_DIM[dataset], generator=generator) < 0.5).float()
    return torch.randint(0, C_DIM[dataset], (n,), generator=generator)


# ---------------------------------------------------------------------------------------------- (a) Parameter


@pytest.mark.parametrize("dataset", ["CelebA", "RaFD"])
def test_patch_solver_reuses_conv2_parameter_held_by_the_optimizer(tmp_path, dataset):
    torch.manual_seed(0)
    solver = make_solver(tmp_path, dataset)
    weight = solver.D.conv2.weight
    params_before = [id(p) for p in solver.D.parameters()]

    head = patch_solver(solver, scale=SCALE, margin=MARGIN)

    assert isinstance(solver.D.conv2, rankplug.AAMAuxClassifier) and solver.D.conv2 is head
    assert solver.D.conv2.weight is weight and head.weight is weight
    assert any(p is weight for p in optimizer_params(solver.d_optimizer))
    assert [id(p) for p in solver.D.parameters()] == params_before
    assert (head.scale, head.margin, head.multi_label) == (SCALE, MARGIN, dataset == "CelebA")

    # The Solver's optimizer really trains the head: one step on the AAM loss moves the shared weight.
    before = weight.detach().clone()
    _, out_cls = solver.D(torch.randn(6, 3, 16, 16))
    solver.reset_grad()
    solver.classification_loss(out_cls, labels_for(dataset), dataset).backward()
    solver.d_optimizer.step()
    assert not torch.equal(weight.detach(), before)


def test_patch_is_idempotent_and_keeps_the_parameter(tmp_path):
    solver = make_solver(tmp_path)
    weight = solver.D.conv2.weight
    patch_solver(solver, scale=SCALE, margin=MARGIN)
    head = patch_solver(solver, scale=8.0, margin=0.1)
    assert head.weight is weight and (head.scale, head.margin) == (8.0, 0.1)
    assert list(solver.D.state_dict()) == list(Discriminator(16, 8, 5, 2).state_dict())


def test_data_parallel_discriminator_is_looked_through(tmp_path):
    solver = make_solver(tmp_path)
    solver.D = nn.DataParallel(solver.D)  # on a CPU-only machine it simply calls the wrapped module
    weight = solver.D.module.conv2.weight
    head = patch_solver(solver, scale=SCALE, margin=MARGIN)
    assert solver.D.module.conv2 is head and head.weight is weight
    assert "module.conv2.weight" in solver.D.state_dict()
    out_src, out_cls = solver.D(torch.randn(4, 3, 16, 16))
    assert out_src.shape == (4, 1, 4, 4) and out_cls.shape == (4, 5)
    assert stargan.unwrap_discriminator(nn.DataParallel(solver.D)) is solver.D.module


# -------------------------------------------------------------------------------------------- (b) checkpoints


def test_state_dict_keys_and_shapes_unchanged(tmp_path):
    solver = make_solver(tmp_path)
    before = {k: v.shape for k, v in solver.D.state_dict().items()}
    patch_solver(solver, scale=SCALE, margin=MARGIN)
    after = {k: v.shape for k, v in solver.D.state_dict().items()}
    assert list(after) == list(before) and after == before
    assert "conv2.weight" in after and after["conv2.weight"] == (5, 16, 4, 4)


def test_softmax_checkpoint_restores_into_patched_solver(tmp_path):
    torch.manual_seed(0)
    softmax = make_solver(tmp_path)  # trained with StarGAN's own head; its checkpoints are plain state_dicts
    os.makedirs(softmax.model_save_dir, exist_ok=True)
    torch.save(softmax.G.state_dict(), os.path.join(softmax.model_save_dir, "7-G.ckpt"))
    torch.save(softmax.D.state_dict(), os.path.join(softmax.model_save_dir, "7-D.ckpt"))

    torch.manual_seed(1)
    patched = make_solver(tmp_path)
    weight = patched.D.conv2.weight
    patch_solver(patched, scale=SCALE, margin=MARGIN)
    patched.restore_model(7)  # load_state_dict is strict there

    for key, value in softmax.D.state_dict().items():
        assert torch.equal(patched.D.state_dict()[key], value), key
    assert patched.D.conv2.weight is weight  # loaded in place: the optimizer still holds it


def test_patched_checkpoint_loads_strictly_into_softmax_discriminator(tmp_path):
    torch.manual_seed(0)
    solver = make_solver(tmp_path, num_iters=2, model_save_step=2)
    patch_solver(solver, scale=SCALE, margin=MARGIN)
    solver.train()  # saves 2-G.ckpt / 2-D.ckpt from the patched D
    state = torch.load(os.path.join(solver.model_save_dir, "2-D.ckpt"), map_location="cpu")
    plain = Discriminator(16, 8, 5, 2)
    plain.load_state_dict(state, strict=True)
    assert isinstance(plain.conv2, nn.Conv2d)
    assert torch.equal(plain.conv2.weight, solver.D.conv2.weight.detach())


# ------------------------------------------------------------------------------------------------ (c) forward


def test_forward_unchanged_and_out_cls_is_scaled_cosine(tmp_path):
    torch.manual_seed(0)
    solver = make_solver(tmp_path)
    plain = copy.deepcopy(solver.D)
    patch_solver(solver, scale=SCALE, margin=MARGIN)
    x = torch.randn(5, 3, 16, 16)

    out_src, out_cls = solver.D(x)
    ref_src, ref_cls = plain(x)
    assert torch.equal(out_src, ref_src)
    assert out_cls.shape == ref_cls.shape == (5, 5)

    features = plain.main(x).flatten(1)
    weight = plain.conv2.weight.flatten(1)
    cosine = F.normalize(features, dim=1) @ F.normalize(weight, dim=1).T
    torch.testing.assert_close(out_cls, SCALE * cosine)
    # Equivalently: StarGAN's own logits divided by the feature and weight norms.
    norms = features.norm(dim=1, keepdim=True) * weight.norm(dim=1)
    torch.testing.assert_close(out_cls, SCALE * ref_cls / norms)


# ------------------------------------------------------------------------------------------------- (d) losses


@pytest.mark.parametrize("dataset", ["CelebA", "RaFD"])
def test_loss_at_zero_margin_equals_stargan_loss_on_scaled_cosine(tmp_path, dataset):
    torch.manual_seed(0)
    solver = make_solver(tmp_path, dataset)
    patch_solver(solver, scale=SCALE, margin=0.0)
    _, logit = solver.D(torch.randn(6, 3, 16, 16))
    target = labels_for(dataset)

    ours = solver.classification_loss(logit, target, dataset)
    upstream = Solver.classification_loss(solver, logit, target, dataset)  # the class's unpatched method
    if dataset == "CelebA":
        by_hand = F.binary_cross_entropy_with_logits(logit, target, reduction="sum") / logit.size(0)
    else:
        by_hand = F.cross_entropy(logit, target)
    torch.testing.assert_close(ours, upstream)
    torch.testing.assert_close(ours, by_hand)


@pytest.mark.parametrize("dataset", ["CelebA", "RaFD"])
def test_margin_makes_the_loss_larger(dataset):
    generator = torch.Generator().manual_seed(0)
    # Cosines in (-0.9, 0.9): theta + m stays inside (0, pi), where the margin is monotone (maths §6).
    logit = SCALE * (torch.rand(16, C_DIM[dataset], generator=generator) * 1.8 - 0.9)
    target = labels_for(dataset, 16, generator)
    losses = [classification_loss(logit, target, dataset, scale=SCALE, margin=m).item() for m in (0.0, 0.2, 0.5)]
    assert losses[0] < losses[1] < losses[2]


def test_bound_loss_reads_the_heads_settings_at_call_time(tmp_path):
    solver = make_solver(tmp_path, "RaFD")
    head = patch_solver(solver, scale=SCALE, margin=0.0)
    logit, target = SCALE * (torch.rand(8, 8) - 0.5), torch.arange(8)
    at_zero = solver.classification_loss(logit, target, "RaFD")
    head.margin = 0.4
    expected = classification_loss(logit, target, "RaFD", scale=SCALE, margin=0.4)
    torch.testing.assert_close(solver.classification_loss(logit, target, "RaFD"), expected)
    assert expected > at_zero


def test_sliced_logits_of_train_multi_are_accepted():
    # StarGAN's "Both" mode: one head over c_dim + c2_dim columns, sliced per dataset before the loss.
    logit = SCALE * (torch.rand(6, 5 + 8) * 2 - 1)
    celeba = classification_loss(logit[:, :5], labels_for("CelebA"), "CelebA", scale=SCALE, margin=MARGIN)
    rafd = classification_loss(logit[:, 5:], labels_for("RaFD"), "RaFD", scale=SCALE, margin=MARGIN)
    assert math.isfinite(celeba.item()) and math.isfinite(rafd.item())


def test_gradients_reach_discriminator_and_generator(tmp_path):
    torch.manual_seed(0)
    solver = make_solver(tmp_path, "CelebA")
    patch_solver(solver, scale=SCALE, margin=MARGIN)
    x, c = torch.randn(4, 3, 16, 16), labels_for("CelebA", 4)
    _, out_cls = solver.D(solver.G(x, c))
    solver.reset_grad()
    solver.classification_loss(out_cls, c, "CelebA").backward()
    for net in (solver.G, solver.D):
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)


# -------------------------------------------------------------------------------------------- (e) training


def _fixed_batch_metrics(solver, dataset):
    faces = (solver.celeba_loader or solver.rafd_loader).dataset  # the whole synthetic training set
    images, labels = faces.images, faces.labels
    with torch.no_grad():
        _, out_cls = solver.D(images)
        loss = solver.classification_loss(out_cls, labels, dataset).item()
    if dataset == "CelebA":
        accuracy = ((out_cls > 0).float() == labels).float().mean().item()
    else:
        accuracy = (out_cls.argmax(dim=1) == labels).float().mean().item()
    return loss, accuracy


@pytest.mark.parametrize("dataset", ["CelebA", "RaFD"])
def test_solver_train_runs_after_patch(tmp_path, dataset):
    torch.manual_seed(0)
    solver = make_solver(tmp_path, dataset, num_iters=20, use_tensorboard=True, log_step=1, model_save_step=20)
    patch_solver(solver, scale=SCALE, margin=MARGIN)
    loss_before, accuracy_before = _fixed_batch_metrics(solver, dataset)

    solver.train()  # StarGAN's own loop, unchanged

    scalars = solver.logger.scalars
    assert len(scalars["D/loss_cls"]) == 20 and len(scalars["G/loss_cls"]) == 10
    assert all(math.isfinite(v) for series in scalars.values() for _, v in series)
    loss_after, accuracy_after = _fixed_batch_metrics(solver, dataset)
    assert loss_after < loss_before
    assert accuracy_after > accuracy_before
    assert os.path.exists(os.path.join(solver.model_save_dir, "20-D.ckpt"))


# ---------------------------------------------------------------------------------------------- (f) errors


class NoClassHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Conv2d(3, 8, 4, stride=2, padding=1)
        self.conv1 = nn.Conv2d(8, 1, 3, padding=1, bias=False)


def test_discriminator_without_conv2_raises(tmp_path):
    with pytest.raises(TypeError, match="has no attribute 'conv2'"):
        install_aam_head(NoClassHead())
    solver = make_solver(tmp_path)
    solver.D = NoClassHead()
    with pytest.raises(TypeError, match=r"NoClassHead\) has no attribute 'conv2'"):
        patch_solver(solver, scale=SCALE, margin=MARGIN)


def test_conv2_with_bias_raises(tmp_path):
    solver = make_solver(tmp_path)
    solver.D.conv2 = nn.Conv2d(16, 5, kernel_size=4, bias=True)
    with pytest.raises(ValueError, match="conv2 has a bias; expected StarGAN's conv2 with bias=False"):
        patch_solver(solver, scale=SCALE, margin=MARGIN)
    assert isinstance(solver.D.conv2, nn.Conv2d)  # nothing was changed


def test_other_bad_hosts_and_settings_raise(tmp_path):
    holder = NoClassHead()
    holder.conv2 = nn.Linear(8, 5, bias=False)
    with pytest.raises(TypeError, match=r"conv2 must be a torch\.nn\.Conv2d"):
        install_aam_head(holder)
    padded = NoClassHead()
    padded.conv2 = nn.Conv2d(8, 5, kernel_size=3, padding=1, bias=False)
    with pytest.raises(ValueError, match="padding=0"):
        install_aam_head(padded)
    with pytest.raises(TypeError, match="has no discriminator module 'D'"):
        patch_solver(object(), scale=SCALE, margin=MARGIN)
    with pytest.raises(TypeError, match=r"discriminator must be a torch\.nn\.Module"):
        install_aam_head("D")
    solver = make_solver(tmp_path)
    with pytest.raises(ValueError, match=r"margin must be an angle in radians in \[0, pi/2\)"):
        patch_solver(solver, scale=SCALE, margin=2.0)
    with pytest.raises(ValueError, match="scale must be > 0"):
        patch_solver(solver, scale=0.0, margin=MARGIN)


def test_loss_input_errors():
    logit = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"dataset must be one of 'CelebA'.*got 'Both'"):
        classification_loss(logit, torch.zeros(4, 5), "Both")
    with pytest.raises(TypeError, match="targets must be a multi-hot floating-point tensor"):
        classification_loss(logit, torch.zeros(4, 5, dtype=torch.long), "CelebA")
    with pytest.raises(TypeError, match="targets must be integer class indices"):
        classification_loss(logit, torch.zeros(4), "RaFD")
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 4\]; found 7"):
        classification_loss(logit, torch.tensor([0, 1, 2, 7]), "RaFD")
    with pytest.raises(TypeError, match=r"logit must be a torch\.Tensor"):
        classification_loss([[0.0]], torch.zeros(1, 1), "CelebA")


# ------------------------------------------------------------------------------------------------- module


def test_module_imports_no_upstream_code():
    code = (
        "import sys, rankplug.integrations.stargan; "
        "bad = {'model', 'solver', 'data_loader', 'main', 'logger'} & set(sys.modules); "
        "assert not bad, bad"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)


def test_example_script_runs(capsys):
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples", "stargan_aam.py"
    )
    spec = importlib.util.spec_from_file_location("stargan_aam_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(["--dataset", "RaFD", "--num-iters", "4"])
    out = capsys.readouterr().out
    assert "rankplug's StarGAN stand-in" in out and "after 4 iterations: AAM cls loss on real" in out


def test_module_docstring_examples_run():
    # integrations/ is outside pytest's doctest paths (testpaths = tests, rankplug), so run them here.
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(stargan) if t.examples]
    assert tests
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
