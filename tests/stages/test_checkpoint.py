"""Hardening of StageManager and its checkpoint files, one section per finding of the external probe.

4. ``load()`` is all or nothing and raises one error type, ``CheckpointError``.
5. ``advance()`` on a full disk keeps its stage.
6. Checkpoints are checksummed; temporary files are exclusive and cleaned up after a killed process.
7. A non-finite gap never ends a stage through the plateau test.
"""

from __future__ import annotations

import copy
import errno
import math
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import rankplug
from rankplug.stages import CHECKPOINT_NAME, StageManager
from rankplug.stages import checkpoint as checkpoint_file
from rankplug.stages.checkpoint import atomic_save, safe_load

ROOT = Path(__file__).resolve().parents[2]
# build() computes markers with untrained critics, whose order is arbitrary
pytestmark = pytest.mark.filterwarnings("ignore:the previous stage")


# ----------------------------------------------------------------------------------------------------- helpers
class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(6, 8)

    def forward(self, x):
        return self.net(x).chunk(2, dim=1)


def build(seed: int, directory: Path | None = None) -> StageManager:
    """A stage-2 manager with EMA, encoder, two stepped Adam optimizers, markers, records and a plateau."""
    torch.manual_seed(seed)
    generator = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6))
    ema = copy.deepcopy(generator)
    discriminator = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    manager = StageManager(
        generator, discriminator, encoder=Encoder(), ema_generator=ema, directory=directory, latent_shape=4
    )
    for name, module in (("opt_g", generator), ("opt_d", discriminator)):
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
        manager.register(name, optimizer)
    step(manager)
    manager.record(torch.randn(8), torch.randn(8))
    manager.advance()
    step(manager)
    manager.compute_markers([torch.randn(8, 6) + 3.0])
    for _ in range(3):
        manager.record(torch.randn(8) + 3.0, torch.randn(8), torch.randn(8))
    return manager


def step(manager: StageManager) -> None:
    fake = manager.generator(manager.sample_latent(8))
    loss = manager.discriminator(fake).mean()
    for optimizer in manager.registered.values():
        optimizer.zero_grad()
    loss.backward()
    for optimizer in manager.registered.values():
        optimizer.step()


def fingerprint(manager: StageManager) -> dict:
    """Everything a load may change, copied: weights, frozen copies, registered state, RNG, stage, history."""
    state = copy.deepcopy(manager.state_dict())
    state["previous_object"] = id(manager.previous)
    state["plateau_exact"] = (manager._plateau_reference, manager._plateau_count)
    return state


def assert_same(before: dict, after: dict) -> None:
    flat_before, flat_after = flatten(before), flatten(after)
    assert flat_before.keys() == flat_after.keys()
    for key, value in flat_before.items():
        other = flat_after[key]
        if isinstance(value, torch.Tensor):
            assert isinstance(other, torch.Tensor) and value.dtype == other.dtype and torch.equal(value, other), key
        else:
            assert type(value) is type(other) and value == other, key


def flatten(tree, prefix=""):
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}/{key}"))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            out.update(flatten(value, f"{prefix}/{index}"))
    else:
        out[prefix] = tree
    return out


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory) -> dict:
    """A valid checkpoint of ``build(0)``, as ``load()`` reads it."""
    directory = tmp_path_factory.mktemp("good")
    build(0).save(directory)
    return safe_load(directory / CHECKPOINT_NAME)


# ---------------------------------------------------------------------- 4. load() is all or nothing, one error
def _set(path, value):
    def mutate(state):
        *parents, last = path
        node = state
        for key in parents:
            node = node[key]
        node[last] = value(node[last]) if callable(value) else value

    return mutate


def _delete(*path):
    def mutate(state):
        *parents, last = path
        node = state
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def _python_rng_with_bad_index(state):
    version, internal, gauss = state["rng"]["python"]
    state["rng"]["python"] = (version, (*internal[:-1], 10**6), gauss)  # passes the checks, fails in setstate


D_WEIGHT = ("live", "discriminator", "0.weight")
STATE_KEYS = ("format", "stage", "markers", "live", "encoder", "previous", "registered", "rng", "history", "plateau")
MALFORMED = {
    **{f"missing {key}": _delete(key) for key in STATE_KEYS},
    "extra key": _set(("extra",), 1),
    "format 2": _set(("format",), 2),
    "stage str": _set(("stage",), "2"),
    "stage 0": _set(("stage",), 0),
    "stage bool": _set(("stage",), True),
    "stage float": _set(("stage",), 2.0),
    "stage 3 with previous 1": _set(("stage",), 3),
    "markers nan": _set(("markers",), [math.nan, 0.0]),
    "markers inf": _set(("markers",), [1.0, math.inf]),
    "markers one value": _set(("markers",), [1.0]),
    "markers str": _set(("markers",), "high"),
    "markers with a str": _set(("markers",), [1.0, "low"]),
    "D weight shape": _set(D_WEIGHT, lambda w: torch.zeros(w.shape[0] + 1, w.shape[1])),
    "D weight dtype": _set(D_WEIGHT, lambda w: w.double()),
    "D weight as list": _set(D_WEIGHT, lambda w: w.tolist()),
    "D missing key": _delete(*D_WEIGHT),
    "D extra key": _set(("live", "discriminator", "9.weight"), torch.zeros(1)),
    "live missing D": _delete("live", "discriminator"),
    "live extra network": _set(("live", "critic2"), {}),
    "live not a dict": _set(("live",), [1, 2]),
    "previous D shape": _set(
        ("previous", "weights", "discriminator", "2.weight"), lambda w: torch.zeros(w.shape[0], w.shape[1] + 2)
    ),
    "previous stage 5": _set(("previous", "stage"), 5),
    "previous none at stage 2": _set(("previous",), None),
    "previous missing EMA": _delete("previous", "weights", "ema_generator"),
    "previous missing weights": _delete("previous", "weights"),
    "encoder none": _set(("encoder",), None),
    "encoder shape": _set(("encoder", "net.bias"), torch.zeros(3)),
    "registered missing opt_d": _delete("registered", "opt_d"),
    "registered extra": _set(("registered", "scaler"), {}),
    "optimizer no groups": _set(("registered", "opt_d", "param_groups"), []),
    "optimizer state shape": _set(("registered", "opt_d", "state", 0, "exp_avg"), torch.zeros(3, 3)),
    "optimizer state for no parameter": _set(("registered", "opt_d", "state", 99), {"step": torch.tensor(1.0)}),
    "optimizer state not a dict": _set(("registered", "opt_g", "state"), 7),
    "rng missing torch": _delete("rng", "torch"),
    "rng torch wrong size": _set(("rng", "torch"), torch.zeros(7, dtype=torch.uint8)),
    "rng python not a tuple": _set(("rng", "python"), 3),
    "rng python bad index": _python_rng_with_bad_index,
    "history not a list": _set(("history",), {"stage": 1}),
    "history too short": _set(("history",), lambda h: h[:1]),
    "history entry missing gap": _delete("history", 1, "gap"),
    "history gap with a str": _set(("history", 1, "gap"), lambda g: [*g, "x"]),
    "history stage wrong": _set(("history", 0, "stage"), 2),
    "history series lengths": _set(("history", 1, "real"), lambda r: r[:-1]),
    "plateau one value": _set(("plateau",), [None]),
    "plateau negative count": _set(("plateau",), [None, -1]),
    "plateau str reference": _set(("plateau",), ["a", 0]),
    "plateau nan reference": _set(("plateau",), [math.nan, 0]),
}


@pytest.mark.parametrize("route", ["load", "load_state_dict"])
@pytest.mark.parametrize("variant", sorted(MALFORMED))
def test_malformed_checkpoint_raises_checkpoint_error_and_changes_nothing(saved_state, tmp_path, variant, route):
    bad = copy.deepcopy(saved_state)
    MALFORMED[variant](bad)
    manager = build(1)  # another stage-2 manager: a half-done load would show in every field
    before = fingerprint(manager)
    with pytest.raises(rankplug.CheckpointError):
        if route == "load":
            atomic_save(bad, tmp_path / CHECKPOINT_NAME)
            manager.load(tmp_path)
        else:
            manager.load_state_dict(bad)
    assert_same(before, fingerprint(manager))


def test_shape_mismatch_message_names_the_tensor_and_both_shapes(saved_state):
    bad = copy.deepcopy(saved_state)
    MALFORMED["D weight shape"](bad)
    with pytest.raises(rankplug.CheckpointError, match=r"live\['discriminator'\]\['0.weight'\] has shape \(9, 6\)"):
        build(1).load_state_dict(bad)


class Fussy:
    """A registered helper that takes part of a state of 7s, then refuses the rest (a half-applied load)."""

    def __init__(self) -> None:
        self.value = torch.arange(3.0)

    def state_dict(self):
        return {"value": self.value.clone()}

    def load_state_dict(self, state):
        self.value.copy_(state["value"])
        if bool((state["value"] == 7).any()):
            raise RuntimeError("this helper refuses the rest of its state")


def test_registered_object_failing_midway_is_rolled_back(tmp_path):
    source = build(0)
    source.register("fussy", Fussy())
    source._registered["fussy"].value.fill_(7.0)
    source.save(tmp_path)
    manager = build(1)
    manager.register("fussy", Fussy())
    before = fingerprint(manager)
    with pytest.raises(rankplug.CheckpointError, match="'fussy' refused its state: this helper refuses"):
        manager.load(tmp_path)
    assert_same(before, fingerprint(manager))
    assert torch.equal(manager._registered["fussy"].value, torch.arange(3.0))


def test_valid_checkpoint_still_loads_bit_for_bit(saved_state, tmp_path):
    state = copy.deepcopy(saved_state)
    state["history"][1]["markers_used"] = [1.0, 0.0]  # keys a trainer adds to its history are kept
    state["history"][1]["gap"][0] = math.nan  # and a diverged record is data, not a malformed file
    atomic_save(state, tmp_path / CHECKPOINT_NAME)
    manager = build(1)
    manager.load(tmp_path)
    reference = build(0)
    assert manager.history[1]["markers_used"] == [1.0, 0.0]
    for module, expected in zip(manager._live().values(), reference._live().values()):
        for a, b in zip(module.state_dict().values(), expected.state_dict().values()):
            assert torch.equal(a, b)
    assert manager.stage == 2 and manager.previous.stage == 1 and manager.markers == reference.markers


def test_checkpoint_error_is_public():
    assert rankplug.CheckpointError is checkpoint_file.CheckpointError and "CheckpointError" in rankplug.__all__
    # a RuntimeError as it always was, and a ValueError like the settings mismatch a registered object raises
    assert issubclass(rankplug.CheckpointError, RuntimeError) and issubclass(rankplug.CheckpointError, ValueError)


# ------------------------------------------------------------------------------ 5. advance() on a full disk
def _no_space(handle, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_advance_on_a_full_disk_keeps_its_stage(tmp_path, monkeypatch):
    manager = build(0, directory=tmp_path)  # stage 2: the next advance writes stage 1 to the directory
    previous, history, markers = manager.previous, copy.deepcopy(manager.history), manager.markers
    frozen = {k: v.clone() for k, v in previous.discriminator.state_dict().items()}
    monkeypatch.setattr(checkpoint_file, "_write_chunks", _no_space)
    with pytest.raises(OSError) as caught:
        manager.advance()
    assert caught.value.errno == errno.ENOSPC
    assert manager.stage == 2 and manager.previous is previous and manager.previous.stage == 1
    assert manager.history == history and manager.markers == markers
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no stage file, no temporary file
    monkeypatch.undo()
    manager.advance()  # once there is room, the same call succeeds
    assert manager.stage == 3 and manager.previous.stage == 2
    written = safe_load(tmp_path / "stage-0001.pt")
    assert written["stage"] == 1
    for key, value in frozen.items():
        assert torch.equal(written["weights"]["discriminator"][key], value), key


DDP_ADVANCE = """
import errno, os, sys
import torch, torch.distributed as dist
from torch import nn
import rankplug
from rankplug.stages import checkpoint

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
directory = sys.argv[1] if rank == 0 else None  # a directory on rank 0 only, a common pattern
manager = rankplug.StageManager(nn.Linear(2, 3), nn.Linear(3, 1), directory=directory)
manager.advance()
original = checkpoint._write_chunks
if rank == 0:
    def no_space(handle, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    checkpoint._write_chunks = no_space
try:
    manager.advance()
except OSError:
    raised = True
else:
    raised = False
assert raised, f"rank {rank} did not raise"
assert manager.stage == 2 and manager.previous.stage == 1, (rank, manager.stage)
checkpoint._write_chunks = original
manager.advance()
assert manager.stage == 3 and manager.previous.stage == 2
print(f"rank {rank} ok", flush=True)
dist.barrier()  # the ranks leave together (a lone gloo exit can abort)
dist.destroy_process_group()
"""


def test_advance_on_a_full_disk_under_torchrun_raises_on_every_rank(tmp_path):
    program = tmp_path / "ddp_advance.py"
    program.write_text(textwrap.dedent(DDP_ADVANCE))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0", "--standalone"]
    result = subprocess.run(
        [*command, str(program), str(tmp_path)], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rank 0 ok" in result.stdout and "rank 1 ok" in result.stdout
    assert (tmp_path / "stage-0001.pt").is_file()


# -------------------------------------------------------------------- 6. checksums and exclusive temporary files
@pytest.fixture
def checkpoint(tmp_path) -> Path:
    build(0).save(tmp_path)
    return tmp_path / CHECKPOINT_NAME


def _tensor_offset(data: bytes) -> int:
    """Where the bytes of D's first weight lie in the file (a tensor record of the payload)."""
    weight = build(0).discriminator[0].weight.detach().numpy().tobytes()
    offset = data.find(weight)
    assert offset > 0
    return offset + len(weight) // 2


OFFSETS = {
    "magic": lambda data: 3,
    "length": lambda data: 17,
    "digest": lambda data: 40,
    "payload start": lambda data: 56,
    "tensor record": _tensor_offset,
    "middle": lambda data: len(data) // 2,
    "last byte": lambda data: len(data) - 1,
}


@pytest.mark.parametrize("where", list(OFFSETS))
@pytest.mark.parametrize("bit", [0, 5])
def test_single_bit_flip_is_refused_as_corrupt(checkpoint, where, bit):
    data = bytearray(checkpoint.read_bytes())
    data[OFFSETS[where](bytes(data))] ^= 1 << bit
    checkpoint.write_bytes(bytes(data))
    manager = build(1)
    before = fingerprint(manager)
    with pytest.raises(rankplug.CheckpointError, match="corrupt") as caught:
        manager.load(checkpoint.parent)
    assert str(checkpoint) in str(caught.value)
    assert_same(before, fingerprint(manager))


def test_bit_flips_anywhere_are_refused(checkpoint):
    data = checkpoint.read_bytes()
    for index in range(48):
        offset = index * (len(data) - 1) // 47
        flipped = bytearray(data)
        flipped[offset] ^= 1 << (index % 8)
        checkpoint.write_bytes(bytes(flipped))
        with pytest.raises(rankplug.CheckpointError, match="corrupt"):
            safe_load(checkpoint)


def test_header_layout_and_truncation(checkpoint):
    data = checkpoint.read_bytes()
    assert data.startswith(b"\x89RANKPLUG-CKPT1\n")
    assert int.from_bytes(data[16:24], "little") == len(data) - 56
    for length in (0, 10, 40, len(data) - 1):
        checkpoint.write_bytes(data[:length])
        with pytest.raises(rankplug.CheckpointError, match="truncated"):
            safe_load(checkpoint)


def test_headerless_files(tmp_path, saved_state):
    # a plain torch.save file (an older rankplug, or torch.save) still loads, with weights_only=True
    torch.save(saved_state, tmp_path / CHECKPOINT_NAME)
    manager = build(1)
    manager.load(tmp_path)
    assert manager.markers == tuple(saved_state["markers"])
    # anything that is neither the header nor a torch.save file is refused before unpickling
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"\x00" * 100)
    with pytest.raises(rankplug.CheckpointError, match="corrupt or not a checkpoint"):
        manager.load(tmp_path)


def test_save_never_follows_a_symlink_planted_at_its_temporary_name(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "run" / CHECKPOINT_NAME
    target.parent.mkdir()
    tokens = iter(["0123456789abcdef"])
    real_token = secrets.token_hex
    monkeypatch.setattr(secrets, "token_hex", lambda n=None: next(tokens, None) or real_token(n))
    planted = [target.with_name(f".{target.name}.tmp-{os.getpid()}")]  # the name an older rankplug used
    if hasattr(checkpoint_file, "_temp_path"):
        planted.append(checkpoint_file._temp_path(target, os.getpid(), "0123456789abcdef"))
    for link in planted:
        link.symlink_to(victim)
    build(0).save(target.parent)
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and safe_load(target)["stage"] == 2
    assert all(link.is_symlink() and os.readlink(link) == str(victim) for link in planted)
    assert target.stat().st_mode & 0o077 == 0  # created 0o600: readable by its owner only


def _dead_pid() -> int:
    pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(pid.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(dead, 0)
    return dead


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / CHECKPOINT_NAME
    dead = _dead_pid()
    stale = checkpoint_file._temp_path(target, dead, "00ff00ff00ff00ff")
    stale.write_bytes(b"\0" * 100_000)  # what a SIGKILL mid-save leaves
    stale_link = checkpoint_file._temp_path(target, dead, "11ff00ff00ff00ff")
    stale_link.symlink_to(tmp_path / "victim")
    (tmp_path / "victim").write_text("precious")
    alive = checkpoint_file._temp_path(target, os.getppid(), "22ff00ff00ff00ff")  # a save still in progress
    alive.write_bytes(b"partial")
    other = checkpoint_file._temp_path(tmp_path / "other.pt", dead, "33ff00ff00ff00ff")  # another file's
    other.write_bytes(b"partial")
    build(0).save(tmp_path)
    assert not stale.exists() and not stale_link.is_symlink()
    assert (tmp_path / "victim").read_text() == "precious"
    assert alive.exists() and other.exists()
    assert safe_load(target)["stage"] == 2


# -------------------------------------------------------------------------------- 7. non-finite gaps and plateau
@pytest.mark.parametrize(("real", "fake"), [(math.nan, 0.0), (math.inf, 0.0), (0.0, math.inf), (math.inf, math.inf)])
def test_non_finite_gap_never_ends_a_stage_by_plateau(real, fake):
    manager = StageManager(nn.Linear(2, 2), nn.Linear(2, 1), plateau_patience=2, plateau_tolerance=0.1)
    with pytest.warns(RuntimeWarning, match="is not finite"):
        for _ in range(6):
            gap = manager.record(torch.full((4,), real), torch.full((4,), fake))
            assert not manager.stage_done
    assert not math.isfinite(gap) and len(manager.history[-1]["gap"]) == 6  # still logged


def test_non_finite_gap_neither_resets_nor_extends_the_plateau():
    manager = StageManager(nn.Linear(2, 2), nn.Linear(2, 1), plateau_patience=2, plateau_tolerance=0.1)
    with pytest.warns(RuntimeWarning, match="not finite"):
        for gap in (1.0, math.nan, 1.02, math.nan):
            manager.record(torch.full((4,), gap), torch.zeros(4))
            assert not manager.stage_done
    manager.record(torch.full((4,), 0.99), torch.zeros(4))  # the third finite record within the band
    assert manager.stage_done


def test_non_finite_gaps_still_count_towards_stage_length():
    manager = StageManager(nn.Linear(2, 2), nn.Linear(2, 1), stage_length=3)
    with pytest.warns(RuntimeWarning, match="not finite"):
        for _ in range(3):
            manager.record(torch.full((4,), math.nan), torch.zeros(4))
    assert manager.stage_done
