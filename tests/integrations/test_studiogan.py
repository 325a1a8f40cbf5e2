"""rankplug.integrations.studiogan inside StudioGAN's WORKER (the from-scratch stand-in, tests/standins/studiogan).

The stand-in's ``src/`` modules (``config``, ``worker``, ``models``, ``utils``, ...) are importable top-level for
this module, as they are when StudioGAN runs ``python3 src/main.py``, and removed afterwards. The end-to-end test
applies the diff of docs/integrations_studiogan.md to a copy of the stand-in and runs its ``main.py`` with ``-DDP``
(two gloo ranks) and ``-mpc``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rankplug.functional as RF
from rankplug.integrations import studiogan
from rankplug.integrations.settings import OTHER_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standins" / "studiogan"
HOST_MODULES = ("config", "worker", "loader", "models", "utils", "data_util", "main")


def _purge() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in HOST_MODULES:
            del sys.modules[name]


@pytest.fixture(scope="module")
def example():
    """examples/studiogan_stages.py, whose make_worker builds a stand-in WORKER as loader.load_worker does."""
    _purge()
    spec = importlib.util.spec_from_file_location("studiogan_stages", ROOT / "examples" / "studiogan_stages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        if str(module.STANDIN) in sys.path:
            sys.path.remove(str(module.STANDIN))
        _purge()


@pytest.fixture(scope="module")
def stage1(example, tmp_path_factory):
    """A stage-1 run of 12 steps with the margin loss, its checkpoint folder written by WORKER.save."""
    ckpt_dir = tmp_path_factory.mktemp("stage1")
    worker = example.make_worker(ckpt_dir)
    studiogan.patch_worker(worker)
    example.train_stage(worker, 12)
    return ckpt_dir


def test_patch_worker_replaces_both_losses_and_stage_1_is_the_margin_loss(example, tmp_path):
    worker = example.make_worker(tmp_path)
    before = worker.LOSS.d_loss
    loss = studiogan.patch_worker(worker, margin=0.5)
    assert worker.LOSS.d_loss == loss.d_loss and worker.LOSS.g_loss == loss.g_loss and before != loss.d_loss
    assert worker.rankplug is loss and loss.stage == 1
    real, fake = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
    torch.testing.assert_close(worker.LOSS.d_loss(real, fake, DDP=False), RF.hinge_margin_loss(real, fake, margin=0.5))
    torch.testing.assert_close(worker.LOSS.g_loss(fake, DDP=False), -fake.mean())
    worker.prepare_train_iter(epoch_counter=0)
    _, d_loss = worker.train_discriminator(current_step=0)  # StudioGAN's own loop calls it
    assert torch.isfinite(d_loss) and loss.latest.keys() == {"real", "fake"}


def test_stage_2_starts_from_the_previous_checkpoint_and_freezes_a_copy(example, stage1, tmp_path):
    worker = example.make_worker(tmp_path / "own", seed=5)
    loss = studiogan.patch_worker(worker, previous=stage1, clamp_weight=1.0)
    saved = torch.load(next(stage1.glob("model=G-current-weights-step=*.pth")), weights_only=True)["state_dict"]
    for key, value in worker.Gen.state_dict().items():  # RankGAN Algorithm 1: stage i starts from stage i - 1
        torch.testing.assert_close(value, saved[key])
    for frozen in (loss.previous_G, loss.previous_D):
        assert not frozen.training and all(not p.requires_grad for p in frozen.parameters())
    example.train_stage(worker, 3)
    for key, value in loss.previous_G.state_dict().items():  # training stage 2 leaves the copy alone
        torch.testing.assert_close(value, saved[key])


def test_a_run_resuming_its_own_checkpoint_is_not_reset_to_the_previous_stage(example, stage1, tmp_path):
    worker = example.make_worker(tmp_path / "own", seed=5)
    worker.save(step=3)  # the run's own checkpoint, as after -ckpt
    mine = {k: v.clone() for k, v in worker.Gen.state_dict().items()}
    studiogan.patch_worker(worker, previous=stage1, clamp_weight=1.0)
    for key, value in worker.Gen.state_dict().items():
        torch.testing.assert_close(value, mine[key])


def test_rankgan_gives_the_previous_generator_the_fakes_latents_and_labels(example, stage1, tmp_path):
    worker = example.make_worker(tmp_path, seed=2)
    loss = studiogan.patch_worker(worker, previous=stage1, clamp_weight=1.0)
    live, previous = [], []
    worker.Gen.register_forward_pre_hook(lambda module, args: live.append([a.clone() for a in args[:2]]))
    loss.previous_G.register_forward_pre_hook(lambda module, args: previous.append([a.clone() for a in args[:2]]))
    worker.prepare_train_iter(epoch_counter=0)
    worker.train_discriminator(current_step=0)
    assert len(live) == len(previous) == 1  # one critic round: one fake batch, one G_{i-1}(z) batch
    assert torch.equal(live[0][0], previous[0][0]) and torch.equal(live[0][1], previous[0][1])
    assert "prev_fake" in loss.latest


@pytest.mark.parametrize("variant", ["rankgan", "gogan"])
def test_the_stage_2_critic_loss_is_the_documented_one(example, stage1, tmp_path, variant):
    worker = example.make_worker(tmp_path, seed=3)
    options = {"clamp_weight": 2.0, "margin": 0.5, "rank_weight": 0.5, "markers": (0.6, -0.2)}
    loss = studiogan.patch_worker(worker, previous=stage1, variant=variant, **options)
    z, labels = torch.randn(8, worker.MODEL.z_dim), torch.zeros(8, dtype=torch.long)
    worker.Gen(z, labels)  # the generator call the hook records: the step's fakes
    real, fake = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
    got = loss.d_loss(real, fake, DDP=False)
    with torch.no_grad():
        prev_images = loss.previous_G(z, labels)
    if variant == "rankgan":  # the live D scores G_{i-1}(z), RankGAN Eq. 4 + 6
        prev = worker.Dis(prev_images, labels)["adv_output"]
        expected = RF.stage_rank_loss(real, fake, prev, m_high=0.6, m_low=-0.2, clamp_weight=2.0)
    else:  # the frozen D_{i-1}, GoGAN Eq. 3-5
        prev = loss.previous_D(prev_images, labels)["adv_output"]
        expected = RF.gogan_rank_loss(real, fake, prev, margin=0.5, rank_weight=0.5)
    torch.testing.assert_close(got, expected)
    worker.Dis.zero_grad(set_to_none=True)
    got.backward()
    touched = any(p.grad is not None and p.grad.abs().sum() > 0 for p in worker.Dis.parameters())
    assert touched == (variant == "rankgan")  # only RankGAN's prev term trains the live D through G_{i-1}(z)


def test_markers_come_from_the_data_through_the_frozen_previous_stage(example, stage1, tmp_path, capsys):
    worker = example.make_worker(tmp_path, seed=4)
    loss = studiogan.patch_worker(worker, previous=stage1, marker_statistic="mean")
    assert loss.marker_sample_sizes == (256, 256)  # the whole (smaller) data set, and as many fakes
    images = worker.train_dataloader.dataset.tensors[0]
    with torch.no_grad():
        expected = loss.previous_D(images, torch.zeros(256, dtype=torch.long))["adv_output"].double().mean()
    m_high, m_low = loss.markers
    assert m_high == pytest.approx(float(expected), abs=1e-5) and m_low <= m_high
    assert "from 256 real images and 256 previous-stage fakes" in capsys.readouterr().out
    fewer = studiogan.patch_worker(example.make_worker(tmp_path / "b", seed=4), previous=stage1, marker_images=20)
    assert fewer.marker_sample_sizes == (20, 20)


def test_rankgan_generator_loss_uses_the_latest_real_logits(example, stage1, tmp_path):
    worker = example.make_worker(tmp_path, seed=6)
    loss = studiogan.patch_worker(worker, previous=stage1, markers=(1.0, 0.0))
    fake = torch.randn(8, requires_grad=True)
    with pytest.raises(ValueError, match="needs D_i\\(x\\) for 8 samples from a critic step first"):
        loss.g_loss(fake, DDP=False)
    worker.Gen(torch.randn(8, worker.MODEL.z_dim), torch.zeros(8, dtype=torch.long))
    real = torch.randn(8)
    loss.d_loss(real, torch.randn(8), DDP=False)
    torch.testing.assert_close(loss.g_loss(fake, DDP=False), RF.stage_rank_generator_loss(real, fake))


def test_unsupported_settings_are_refused_with_the_reason(example, stage1, tmp_path):
    worker = example.make_worker(tmp_path)
    worker.LOSS.adv_loss = "MH"
    with pytest.raises(ValueError, match="'MH' \\(multi-hinge\\)"):
        studiogan.patch_worker(worker)
    worker.LOSS.adv_loss, worker.LOSS.apply_zcr = "hinge", True
    with pytest.raises(ValueError, match="apply_zcr"):
        studiogan.patch_worker(worker, previous=stage1)
    worker.LOSS.apply_zcr, worker.is_stylegan = False, True
    with pytest.raises(ValueError, match="StyleGAN backbones"):
        studiogan.patch_worker(worker, previous=stage1)
    worker.is_stylegan, plain = False, worker.Gen
    worker.Gen = torch.nn.DataParallel(plain)
    worker.Gen.device_ids = [0, 1]  # what StudioGAN builds without -DDP on two GPUs (set by hand on this CPU)
    with pytest.raises(ValueError, match="several GPUs without -DDP"):
        studiogan.patch_worker(worker, previous=stage1)
    worker.Gen = plain
    with pytest.raises(ValueError, match="variant 'margin' has one stage"):
        studiogan.patch_worker(worker, previous=stage1, variant="margin")
    with pytest.raises(ValueError, match="variant must be one of"):
        studiogan.patch_worker(worker, variant="mbgan")
    with pytest.raises(FileNotFoundError, match="holds no model=G-current-weights-step"):
        studiogan.patch_worker(worker, previous=tmp_path / "empty")
    with pytest.raises(TypeError, match="worker must be StudioGAN's WORKER; it has no 'Gen' attribute"):
        studiogan.patch_worker(object())
    with pytest.raises(ValueError, match="RANKPLUG_MARKER_IMAGES must be a int; got 'many'"):
        studiogan.options_from_env({"RANKPLUG_MARKER_IMAGES": "many"})


def test_the_example_trains_both_stages(example, capsys):
    out = example.main(["--steps", "6"])
    assert out["stage 2"]["stage"] == 2 and out["stage 2"]["markers"] is not None
    assert all(np.isfinite(v) for summary in out.values() for v in summary["latest"].values())
    assert "stage 2: rankgan against the frozen stage 1" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ the previous-stage bank
def conditional_worker(example, directory, *, classes=3, seed=0):
    """A stand-in WORKER whose networks and data carry ``classes`` labels (the example's has one class)."""
    worker = example.make_worker(directory, seed=seed)  # puts the stand-in's src/ on sys.path
    import models.model as model

    sizes = {"img_size": 16, "img_channels": 3, "num_classes": classes}
    worker.Gen, worker.Dis = model.Generator(z_dim=worker.MODEL.z_dim, **sizes), model.Discriminator(**sizes)
    worker.DATA.num_classes = classes
    opt = worker.OPTIMIZATION
    opt.g_optimizer = torch.optim.Adam(worker.Gen.parameters(), lr=opt.g_lr, betas=(opt.beta1, opt.beta2))
    opt.d_optimizer = torch.optim.Adam(worker.Dis.parameters(), lr=opt.d_lr, betas=(opt.beta1, opt.beta2))
    return worker


@pytest.fixture(scope="module")
def conditional_stage1(example, tmp_path_factory):
    directory = tmp_path_factory.mktemp("conditional_stage1")
    conditional_worker(example, directory).save(step=1)
    return directory


def test_the_bank_gives_the_fakes_latents_of_their_own_labels_and_pairs_them_exactly(
    example, conditional_stage1, tmp_path
):
    worker = conditional_worker(example, tmp_path, seed=2)
    loss = studiogan.patch_worker(worker, previous=conditional_stage1, markers=(0.6, -0.2), clamp_weight=2.0,
                                  bank_size=10)  # fmt: skip
    assert loss.bank.size == 12 and loss.bank.keep == "images"  # ceil(10 / 3) = 4 latents for each of 3 classes
    seen, previous_calls = [], []
    worker.Gen.register_forward_pre_hook(lambda module, args: seen.append([a.clone() for a in args[:2]]))
    loss.previous_G.register_forward_pre_hook(lambda module, args: previous_calls.append(1))
    worker.prepare_train_iter(epoch_counter=0)
    worker.train_discriminator(current_step=0)  # the first critic round fills the bank, then draws from it
    assert loss.bank.fills == 1 and loss.bank.draws == 1 and len(previous_calls) == 1  # the fill: one chunk
    bank_labels = loss.bank.z[:, -1].long()
    assert bank_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    ((z, labels),) = seen
    for row_z, label in zip(z, labels):  # each fake's z is a bank latent of the label the worker drew for it
        assert any(torch.equal(row_z, bank_z) for bank_z in loss.bank.z[bank_labels == label, :-1])
    assert "prev_fake" in loss.latest

    # By hand: a critic round's loss on one generator call, G_{i-1} on the very z and labels the live G got.
    seen.clear()
    loss._critic_round = True  # what the wrapped train_discriminator sets around a round
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0, 2])
    original = torch.randn(8, worker.MODEL.z_dim)
    worker.Gen(original, labels)
    loss._critic_round = False
    ((z, got_labels),) = seen
    assert torch.equal(got_labels, labels) and not torch.equal(z, original)
    real, fake = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
    got = loss.d_loss(real, fake, DDP=False)
    assert len(previous_calls) == 1  # still only the fill: d_loss took G_{i-1}(z) from the bank
    with torch.no_grad():
        prev_images = loss.previous_G(z, labels)
    prev = worker.Dis(prev_images, labels)["adv_output"]
    torch.testing.assert_close(got, RF.stage_rank_loss(real, fake, prev, m_high=0.6, m_low=-0.2, clamp_weight=2.0))


def test_generator_rounds_keep_their_own_latents(example, conditional_stage1, tmp_path):
    worker = conditional_worker(example, tmp_path, seed=3)
    loss = studiogan.patch_worker(worker, previous=conditional_stage1, markers=(0.6, -0.2), bank_size=12)
    worker.prepare_train_iter(epoch_counter=0)
    worker.train_discriminator(current_step=0)
    seen = []
    worker.Gen.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    worker.train_generator(current_step=0)
    (z,) = seen
    assert not any(torch.equal(row, bank_z) for row in z for bank_z in loss.bank.z[:, :-1])
    assert loss.bank.draws == 1


def test_gogan_without_augmentation_keeps_the_frozen_critics_scores(example, conditional_stage1, tmp_path):
    worker = conditional_worker(example, tmp_path, seed=4)
    loss = studiogan.patch_worker(worker, previous=conditional_stage1, variant="gogan", bank_size=6)
    assert loss.bank.keep == "scores"
    worker.prepare_train_iter(epoch_counter=0)
    worker.train_discriminator(current_step=0)
    z, labels = loss.bank.z[:, :-1], loss.bank.z[:, -1].long()
    with torch.no_grad():
        again = loss.previous_D(loss.previous_G(z, labels), labels)["adv_output"]
    torch.testing.assert_close(loss.bank.scores, again)
    calls = []
    for frozen in (loss.previous_G, loss.previous_D):
        frozen.register_forward_pre_hook(lambda module, args: calls.append(type(module).__name__))
    example.train_stage(worker, 3)
    assert calls == [] and loss.summary()["bank"] == {"size": 6, "keep": "scores", "fills": 1, "draws": 4}
    fresh = conditional_worker(example, tmp_path / "c")
    fresh.AUG.apply_diffaug = True  # with augmentation a kept score would carry a stale draw: images instead
    augmented = studiogan.patch_worker(fresh, previous=conditional_stage1, variant="gogan", bank_size=6)
    assert augmented.bank.keep == "images"


def test_the_bank_refreshes_and_refuses_bad_settings_by_name(example, conditional_stage1, tmp_path):
    worker = conditional_worker(example, tmp_path, seed=5)
    loss = studiogan.patch_worker(worker, previous=conditional_stage1, markers=(0.6, -0.2), bank_size=3,
                                  bank_refresh_every=2)  # fmt: skip
    worker.prepare_train_iter(epoch_counter=0)
    banks = []
    for step in range(5):
        worker.train_discriminator(current_step=step)
        banks.append(loss.bank.z.clone())
    assert loss.bank.fills == 3 and torch.equal(banks[0], banks[1]) and not torch.equal(banks[1], banks[2])
    with pytest.raises(ValueError, match="bank_size must be an int >= 0; got -2"):
        studiogan.patch_worker(conditional_worker(example, tmp_path / "b"), previous=conditional_stage1, bank_size=-2)
    loss._critic_round = True
    with pytest.raises(ValueError, match=r"labels must lie in \[0, DATA.num_classes = 3\) for the bank; got 0..3"):
        worker.Gen(torch.randn(2, worker.MODEL.z_dim), torch.tensor([0, 3]))
    bank_env = {"RANKPLUG_PREVIOUS": "ckpts", "RANKPLUG_BANK_SIZE": "4096", "RANKPLUG_BANK_DEVICE": "cpu"}
    assert studiogan.options_from_env(bank_env) == {"previous": "ckpts", "bank_size": 4096, "bank_device": "cpu"}
    with pytest.raises(
        ValueError, match="bank_device must be None or a device such as 'cpu', 'cuda' or 'cuda:0'; got 'foo'"
    ):
        studiogan.patch_worker(conditional_worker(example, tmp_path / "c"), previous=conditional_stage1, bank_size=3,
                               bank_device="foo")  # fmt: skip


def test_a_mistyped_variable_is_refused_with_the_closest_name():
    with pytest.raises(ValueError, match="RANKPLUG_CLAMPWEIGHT; did you mean RANKPLUG_CLAMP_WEIGHT"):
        studiogan.options_from_env({"RANKPLUG_PREVIOUS": "ckpts", "RANKPLUG_CLAMPWEIGHT": "1"})
    with pytest.raises(ValueError, match="unknown environment variable RANKPLUG_XYZZY; the settings are RANKPLUG_PREV"):
        studiogan.options_from_env({"RANKPLUG_XYZZY": "1"})
    # rankplug's other variables (the Inception cache, the test suite's checkouts) are not StudioGAN settings.
    others = {"RANKPLUG_CACHE": "/tmp/cache", "RANKPLUG_STUDIOGAN_DIR": "/src", "RANKPLUG_REQUIRE_INCEPTION": "1"}
    assert studiogan.options_from_env({**others, "RANKPLUG_MARGIN": "0.5"}) == {"margin": 0.5}


def test_every_rankplug_variable_is_a_setting_or_one_of_the_others():
    # A variable that rankplug (or its tests, CI and docs) uses but options_from_env does not know would make every
    # StudioGAN run under it fail as a typo.
    sources = [*(ROOT / "rankplug").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "docs").glob("*.md")]
    sources += [ROOT / ".ci" / "run", ROOT / "conftest.py", ROOT / "README.md"]
    used = set()
    for path in sources:
        if path.is_file() and path != Path(__file__).resolve():
            used |= set(re.findall(r"\bRANKPLUG_[A-Z][A-Z0-9_]*\b", path.read_text(encoding="utf-8")))
    assert used - set(studiogan.ENVIRONMENT) - set(OTHER_VARIABLES) == set()


def test_bank_variables_need_a_previous_stage():
    with pytest.raises(ValueError, match=r"RANKPLUG_BANK_SIZE set without RANKPLUG_PREVIOUS: .* a previous stage"):
        studiogan.options_from_env({"RANKPLUG_BANK_SIZE": "64"})
    with pytest.raises(ValueError, match="RANKPLUG_BANK_REFRESH_EVERY, RANKPLUG_BANK_DEVICE set without"):
        studiogan.options_from_env({"RANKPLUG_BANK_REFRESH_EVERY": "2", "RANKPLUG_BANK_DEVICE": "cpu"})
    assert studiogan.options_from_env({"RANKPLUG_BANK_SIZE": ""}) == {}  # empty: unset


def test_the_bank_device_variable_is_checked_by_name():
    env = {"RANKPLUG_PREVIOUS": "ckpts", "RANKPLUG_BANK_SIZE": "8"}
    with pytest.raises(
        ValueError, match="RANKPLUG_BANK_DEVICE must be None or a device such as 'cpu', 'cuda' or 'cuda:0'; got 'foo'"
    ):
        studiogan.options_from_env({**env, "RANKPLUG_BANK_DEVICE": "foo"})
    with pytest.raises(ValueError, match=r"RANKPLUG_BANK_DEVICE must be None, 'cpu' or .*; got 'cuda:99'"):
        studiogan.options_from_env({**env, "RANKPLUG_BANK_DEVICE": "cuda:99"})


def _doc_diff() -> str:
    text = (ROOT / "docs" / "integrations_studiogan.md").read_text()
    (diff,) = re.findall(r"^```diff\n(.*?)^```", text, re.M | re.S)
    return diff


def test_the_documented_two_lines_under_ddp_and_mixed_precision(tmp_path):
    checkout = tmp_path / "StudioGAN"
    shutil.copytree(STANDIN, checkout, ignore=shutil.ignore_patterns("__pycache__"))
    applied = subprocess.run(["git", "apply", "-"], input=_doc_diff(), cwd=checkout, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    changed = subprocess.run(["git", "diff", "--no-index", "--numstat", str(STANDIN / "src"), str(checkout / "src")],
                             capture_output=True, text=True).stdout  # fmt: skip
    assert [line.split()[:2] for line in changed.splitlines() if "__pycache__" not in line] == [["2", "0"]]
    data = tmp_path / "data" / "class0"
    data.mkdir(parents=True)
    from PIL import Image

    rng = np.random.RandomState(0)
    for index in range(32):
        Image.fromarray((rng.rand(16, 16, 3) * 255).astype(np.uint8)).save(data / f"{index:02d}.png")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text('{"OPTIMIZATION": {"total_steps": 4}, "LOSS": {"adv_loss": "hinge"}}')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "src/main.py", "-t", "-cfg", str(cfg), "-data", str(data.parent)]
    first = subprocess.run(
        [*command, "-save", str(tmp_path / "s1")], cwd=checkout, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr[-3000:]
    (previous,) = (tmp_path / "s1" / "checkpoints").iterdir()
    env.update(RANKPLUG_PREVIOUS=str(previous), RANKPLUG_CLAMP_WEIGHT="1", RANKPLUG_MARKER_IMAGES="30")
    second = subprocess.run([*command, "-save", str(tmp_path / "s2"), "-DDP", "-mpc"], cwd=checkout, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("from 30 real images and 30 previous-stage fakes") == 1  # printed by rank 0
    finals = [json.loads((tmp_path / "s2" / f"final-rank{rank}.json").read_text())["rankplug"] for rank in (0, 1)]
    assert finals[0]["stage"] == 2 and finals[0]["variant"] == "rankgan"
    assert finals[0]["markers"] == finals[1]["markers"] and finals[0]["marker_sample_sizes"] == [30, 30]
    assert all(np.isfinite(v) for final in finals for v in final["latest"].values())
    # The same stage with the bank (RANKPLUG_BANK_SIZE): each rank fills its own once, under -DDP and -mpc.
    env.update(RANKPLUG_BANK_SIZE="64")
    third = subprocess.run([*command, "-save", str(tmp_path / "s3"), "-DDP", "-mpc"], cwd=checkout, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert third.returncode == 0, third.stderr[-3000:]
    finals = [json.loads((tmp_path / "s3" / f"final-rank{rank}.json").read_text())["rankplug"] for rank in (0, 1)]
    assert [final["bank"]["fills"] for final in finals] == [1, 1] and finals[0]["bank"]["draws"] == 5
    assert all(np.isfinite(v) for final in finals for v in final["latest"].values())


def test_the_interfaces_it_relies_on_are_those_of_a_real_checkout():
    """Read (never import) a real StudioGAN's losses.py, worker.py and config.py: the calls the adapter fits."""
    import ast

    directory = os.environ.get("RANKPLUG_STUDIOGAN_DIR")
    if not directory:
        pytest.skip("set RANKPLUG_STUDIOGAN_DIR to a checkout of POSTECH-CVLab/PyTorch-StudioGAN")
    src = Path(directory) / "src"
    losses = ast.parse((src / "utils" / "losses.py").read_text())
    signatures = {f.name: [a.arg for a in f.args.args] for f in losses.body if isinstance(f, ast.FunctionDef)}
    for name in ("vanilla", "logistic", "least_square", "hinge", "wasserstein"):
        short = {"least_square": "ls"}.get(name, name)
        assert signatures[f"d_{short}"] == ["d_logit_real", "d_logit_fake", "DDP"]
        assert signatures[f"g_{short}"] == ["d_logit_fake", "DDP"]
    worker = (src / "worker.py").read_text()
    assert 'self.LOSS.d_loss(real_dict["adv_output"], fake_dict["adv_output"], DDP=self.DDP)' in worker
    assert 'self.LOSS.g_loss(fake_dict["adv_output"], DDP=self.DDP)' in worker
    assert worker.index("self.cfgs.define_losses()") < worker.index("def train_discriminator")  # set in __init__
    for attribute in ("self.Gen = Gen", "self.Dis = Dis", "self.Gen_ema = Gen_ema", "self.local_rank = local_rank",
                      "self.train_dataloader = train_dataloader", "self.is_stylegan ="):  # fmt: skip
        assert attribute in worker, attribute
    assert "generator(zs, fake_labels, eval=not is_train)" in (src / "utils" / "sample.py").read_text()
    config = (src / "config.py").read_text()
    for default in ('self.MODEL.info_type = "N/A"', "self.LOSS.apply_zcr = False", "self.OPTIMIZATION.d_first = True"):
        assert default in config, default


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(studiogan, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
