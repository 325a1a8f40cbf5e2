"""StageManager: freezing, flat memory, markers (also under torchrun), resume in a fresh process, crash safety."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

import rankplug
from rankplug.stages import CHECKPOINT_NAME, CheckpointError
from rankplug.stages.checkpoint import atomic_save

WORKER = Path(__file__).resolve().parents[1] / "stage_programs" / "worker.py"
ROOT = Path(__file__).resolve().parents[2]


def run_worker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(WORKER), *args], env=env, capture_output=True, text=True, timeout=timeout, check=True
    )


def small_gan() -> tuple[nn.Module, nn.Module]:
    generator = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6))
    discriminator = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    return generator, discriminator


class Parent(nn.Module):
    def __init__(self, frozen: nn.Module) -> None:
        super().__init__()
        self.frozen = frozen
        self.live = nn.Linear(2, 2)


# ------------------------------------------------------------------------------------------------------- freezing
def test_frozen_copy_stays_in_eval_after_parent_train():
    generator, discriminator = small_gan()
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    manager.advance()
    frozen = manager.previous.generator
    parent = Parent(frozen)
    parent.train()
    assert parent.live.training
    assert not any(m.training for m in frozen.modules())
    frozen.train()
    assert not any(m.training for m in frozen.modules())


def test_frozen_batchnorm_statistics_do_not_change():
    generator, discriminator = small_gan()
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    manager.advance()
    frozen = manager.previous.generator
    Parent(frozen).train()
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    for _ in range(3):
        frozen(torch.randn(16, 4) * 5 + 3)
    for key, value in frozen.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_frozen_copy_has_no_grads_and_builds_no_graph():
    generator, discriminator = small_gan()
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    manager.advance()
    for module in manager.previous.modules().values():
        assert all(not p.requires_grad for p in module.parameters())
    z = torch.randn(8, 4, requires_grad=True)
    out = manager.previous.discriminator(manager.previous.generator(z))
    assert out.grad_fn is None and not out.requires_grad
    assert all(p.grad is None for p in manager.previous.generator.parameters())


def test_optimizer_steps_on_live_model_do_not_touch_frozen_copy():
    generator, discriminator = small_gan()
    optimizer = torch.optim.SGD(list(generator.parameters()) + list(discriminator.parameters()), lr=0.5)
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    manager.advance()
    frozen = {k: v.clone() for k, v in manager.previous.generator.state_dict().items()}
    for _ in range(3):
        loss = discriminator(generator(torch.randn(8, 4))).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not torch.equal(generator[0].weight, manager.previous.generator[0].weight)
    for key, value in manager.previous.generator.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert manager.generator is generator  # the live module trains in place


def test_ddp_style_wrapper_is_unwrapped():
    generator, discriminator = small_gan()
    wrapped = nn.DataParallel(generator)
    manager = rankplug.StageManager(wrapped, discriminator, latent_shape=4)
    manager.advance()
    assert isinstance(manager.previous.generator, nn.Sequential)


def test_advance_can_reset_optimizer_state():
    generator, discriminator = small_gan()
    optimizer = torch.optim.Adam(generator.parameters())
    generator(torch.randn(4, 4)).sum().backward()
    optimizer.step()
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    manager.register("opt", optimizer)
    manager.advance()
    assert len(optimizer.state) > 0
    manager.advance(reset_optimizers=True)
    assert len(optimizer.state) == 0 and optimizer.param_groups[0]["lr"] == 1e-3


# --------------------------------------------------------------------------------------------------------- memory
def test_memory_is_flat_over_eight_stages(tmp_path):
    generator, discriminator = small_gan()
    ema = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6))
    manager = rankplug.StageManager(generator, discriminator, ema_generator=ema, directory=tmp_path, latent_shape=4)
    footprints, dropped = [], []
    for _ in range(7):
        if manager.previous is not None:
            dropped.append(weakref.ref(manager.previous.generator))
        manager.advance()
        footprints.append(manager.memory_footprint())
    assert manager.stage == 8
    assert all(f == footprints[0] for f in footprints), footprints
    gc.collect()
    assert all(ref() is None for ref in dropped), "an old frozen stage is still alive in memory"
    written = sorted(p.name for p in tmp_path.glob("stage-*.pt"))
    assert written == [f"stage-{i:04d}.pt" for i in range(1, 7)]  # older stages on disk, stage 7 in memory


# -------------------------------------------------------------------------------------------------------- markers
class ScalarCritic(nn.Module):
    def forward(self, x):
        return x.sum(dim=1, keepdim=True)


class ShiftGenerator(nn.Module):
    def forward(self, z):
        return z - 10.0


def test_markers_mean_and_median_equal_hand_computation():
    manager = rankplug.StageManager(ShiftGenerator(), ScalarCritic(), latent_shape=3)
    manager.advance()
    batches = [torch.tensor([[1.0, 0, 0], [4.0, 0, 0]]), torch.tensor([[0.0, 2, 0], [0.0, 0, 9], [3.0, 3, 3]])]
    torch.manual_seed(0)
    latents = [torch.randn(2, 3), torch.randn(3, 3)]
    torch.manual_seed(0)
    high, low = manager.compute_markers(batches, statistic="mean")
    real_scores = [1.0, 4.0, 2.0, 9.0, 9.0]
    fake_scores = [float(z.sum() - 30.0) for batch in latents for z in batch]
    assert high == pytest.approx(sum(real_scores) / 5)
    assert low == pytest.approx(sum(fake_scores) / 5)
    torch.manual_seed(0)
    high, low = manager.compute_markers(batches, statistic="median")
    assert high == pytest.approx(4.0)
    assert low == pytest.approx(sorted(fake_scores)[2])
    assert manager.markers == (high, low)
    assert manager.history[-1]["markers"]["statistic"] == "median"


def test_median_of_even_count_is_mean_of_middle_values():
    manager = rankplug.StageManager(ShiftGenerator(), ScalarCritic(), latent_shape=1)
    manager.advance()
    high, _ = manager.compute_markers([torch.tensor([[1.0], [2.0], [3.0], [10.0]])], statistic="median")
    assert high == pytest.approx(2.5)


def test_markers_need_a_previous_stage_and_a_known_statistic():
    manager = rankplug.StageManager(ShiftGenerator(), ScalarCritic(), latent_shape=1)
    with pytest.raises(ValueError, match="markers need a previous stage"):
        manager.compute_markers([torch.zeros(2, 1)])
    manager.advance()
    with pytest.raises(ValueError, match="statistic must be one of 'mean', 'median'; got 'max'"):
        manager.compute_markers([torch.zeros(2, 1)], statistic="max")


@pytest.mark.filterwarnings("ignore:the previous stage")  # an untrained critic: order is arbitrary
def test_markers_and_frozen_copies_under_torchrun_with_ddp(tmp_path):
    torch.manual_seed(3)
    # 5 batches of unequal sizes: rank 0 gets batches 0, 2, 4 and rank 1 gets 1, 3 (a smaller last batch).
    data = [torch.randn(n, 8) for n in (6, 5, 7, 3, 2)]
    latents = [torch.randn(b.shape[0], 4) for b in data]
    torch.save(data, tmp_path / "data.pt")
    torch.save(latents, tmp_path / "latents.pt")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=0",
            "--standalone",
            str(WORKER),
            "markers",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    outputs = [torch.load(p) for p in sorted(tmp_path.glob("markers-rank*.pt"))]
    assert len(outputs) == 2
    assert outputs[0]["checksum"] == outputs[1]["checksum"]  # frozen copies identical on every rank
    sys.path.insert(0, str(WORKER.parent))
    try:
        import worker
    finally:
        sys.path.pop(0)
    manager, _ = worker.build(0)
    manager.advance()
    for statistic in ("mean", "median"):
        iterator = iter(latents)
        manager.sample_latent = lambda n, real=None, it=iterator: next(it)
        expected = manager.compute_markers(data, statistic=statistic)
        for out in outputs:
            assert out[statistic] == pytest.approx(expected, rel=1e-12), statistic


# --------------------------------------------------------------------------------------------------------- resume
def test_resume_in_fresh_process_is_bit_for_bit(tmp_path):
    k = 6
    run_worker("uninterrupted", str(tmp_path), str(k))
    run_worker("first_half", str(tmp_path), str(k))
    run_worker("second_half", str(tmp_path), str(k))
    a = torch.load(tmp_path / "uninterrupted.pt")
    b = torch.load(tmp_path / "resumed.pt")
    for group in ("live", "registered"):
        flat_a, flat_b = _flatten(a[group]), _flatten(b[group])
        assert flat_a.keys() == flat_b.keys()
        for key in flat_a:
            assert _equal(flat_a[key], flat_b[key]), f"{group}/{key}"
    assert a["markers"] == b["markers"]
    assert a["history"] == b["history"]
    assert torch.equal(a["next"], b["next"])  # the RNG continues where it left off


def _flatten(tree, prefix=""):
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}/{key}"))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            out.update(_flatten(value, f"{prefix}/{index}"))
    else:
        out[prefix] = tree
    return out


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


# --------------------------------------------------------------------------------------------------- crash safety
def test_sigkill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(WORKER), "slow_save", str(tmp_path)], env=env)
    deadline = time.monotonic() + 120
    while not (tmp_path / "saving").exists():
        assert process.poll() is None, "worker exited before the slow save"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)  # well inside the slow write
    partial = list(tmp_path.glob(f".{CHECKPOINT_NAME}.tmp-*"))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "finished").exists(), "the save finished before the kill: the test proves nothing"
    assert partial, "no temporary file was being written when the process was killed"
    run_worker("load_snapshot", str(tmp_path))
    good, loaded = torch.load(tmp_path / "good.pt"), torch.load(tmp_path / "loaded.pt")
    for group in ("live", "previous", "registered"):
        flat_good, flat_loaded = _flatten(good[group]), _flatten(loaded[group])
        assert flat_good.keys() == flat_loaded.keys()
        assert all(_equal(flat_good[k], flat_loaded[k]) for k in flat_good), group


def test_checkpoint_with_pickled_callable_is_refused(tmp_path):
    generator, discriminator = small_gan()
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    state = manager.state_dict()
    state["history"].append({"payload": os.system})  # a callable: unpickling it would run code
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="refusing to load"):
        manager.load(tmp_path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    generator, discriminator = small_gan()
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    manager.save(tmp_path)
    data = (tmp_path / CHECKPOINT_NAME).read_bytes()
    (tmp_path / CHECKPOINT_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        manager.load(tmp_path)


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    atomic_save({"x": torch.ones(3)}, tmp_path / "a.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


# ---------------------------------------------------------------------------------------- latents, encoder, end
class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(6, 8)

    def forward(self, x):
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar


def test_sample_latent_with_and_without_encoder():
    generator, discriminator = small_gan()
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    assert manager.sample_latent(5).shape == (5, 4)
    encoder = Encoder()
    manager = rankplug.StageManager(generator, discriminator, encoder=encoder, latent_shape=4)
    real = torch.randn(5, 6)
    torch.manual_seed(1)
    z = manager.sample_latent(5, real=real)
    torch.manual_seed(1)
    mu, logvar = encoder(real)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * torch.randn(5, 4))
    with pytest.raises(ValueError, match="real has batch size 5; expected n = 3"):
        manager.sample_latent(3, real=real)
    with pytest.raises(ValueError, match="latent_shape is not set"):
        rankplug.StageManager(generator, discriminator).sample_latent(2)


def test_pretrain_encoder_reduces_vae_loss_and_freezes_encoder():
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 6))
    encoder = Encoder()
    manager = rankplug.StageManager(generator, nn.Linear(6, 1), encoder=encoder, latent_shape=4)
    mixing = torch.randn(2, 6)
    data = [torch.randn(32, 2) @ mixing for _ in range(8)]  # data on a 2-D plane: a VAE can learn it
    losses = manager.pretrain_encoder(data, epochs=15, lr=1e-2, kl_weight=1.0)
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(not p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training
    assert any(p.requires_grad for p in generator.parameters())


def test_stage_ends_by_length_or_plateau():
    generator, discriminator = small_gan()
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4, stage_length=3)
    for _ in range(2):
        manager.record(torch.ones(4), torch.zeros(4))
        assert not manager.stage_done
    manager.record(torch.ones(4), torch.zeros(4))
    assert manager.stage_done
    manager = rankplug.StageManager(generator, discriminator, plateau_patience=3, plateau_tolerance=0.1)
    for gap in (5.0, 3.0, 1.0, 1.05, 0.98):
        manager.record(torch.full((4,), gap), torch.zeros(4))
        assert not manager.stage_done
    manager.record(torch.full((4,), 1.02), torch.zeros(4))
    assert manager.stage_done
    manager.advance()
    assert not manager.stage_done


def test_history_is_plain_json_data():
    import json

    generator, discriminator = small_gan()
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    manager.record(torch.tensor([2.0, 4.0]), torch.tensor([0.0, 1.0]), torch.tensor([-1.0, -1.0]))
    manager.advance()
    manager.compute_markers([torch.randn(4, 6)])
    text = json.dumps(manager.history)
    entry = json.loads(text)[0]
    assert entry["gap"] == [2.5] and entry["real"] == [3.0] and entry["fake"] == [0.5] and entry["prev_fake"] == [-1.0]
    assert json.loads(text)[1]["markers"]["statistic"] == "mean"


def test_markers_with_batch_statistics_for_a_batchnorm_critic():
    torch.manual_seed(0)
    generator = nn.Linear(4, 6)
    discriminator = nn.Sequential(nn.Linear(6, 1), nn.BatchNorm1d(1))
    discriminator[1].running_mean.fill_(5.0)  # running statistics far from any batch's own
    discriminator[1].running_var.fill_(0.01)
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    manager.advance()
    frozen = manager.previous.discriminator
    running = frozen[1].running_mean.clone(), frozen[1].running_var.clone()
    batches = [torch.randn(16, 6) for _ in range(3)]
    high, low = manager.compute_markers(batches, batch_statistics=True)
    # Each batch is normalised by its own statistics, so each batch's scores average to beta = 0.
    assert high == pytest.approx(0.0, abs=1e-5) and low == pytest.approx(0.0, abs=1e-5)
    eval_high, _ = manager.compute_markers(batches)
    assert abs(eval_high) > 0.1  # with running statistics the scale differs
    assert torch.equal(frozen[1].running_mean, running[0]) and torch.equal(frozen[1].running_var, running[1])
    assert not frozen.training


def test_frozen_submodules_build_no_graph_and_copies_stay_correct():
    import copy
    import io

    generator, discriminator = small_gan()
    manager = rankplug.StageManager(generator, discriminator, latent_shape=4)
    manager.advance()
    frozen = manager.previous.generator
    z = torch.randn(8, 4, requires_grad=True)
    assert not frozen[0](z).requires_grad  # a submodule called directly, as hosts do (G.mapping)
    clone = copy.deepcopy(frozen)
    with torch.no_grad():
        clone[0].weight.add_(1.0)
    assert not torch.equal(clone(z), frozen(z))  # the copy's forward uses the copy's weights
    buffer = io.BytesIO()
    torch.save(frozen, buffer)  # whole-module pickling (snapshots) still works
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(restored(z), frozen(z))
    restored.train()
    assert not restored.training and not restored(z).requires_grad
