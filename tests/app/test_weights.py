"""Stage weights anyone can read: ``models-stage<i>.safetensors`` and ``rankplug.load_generator``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rankplug
from rankplug.app.runs import train_run
from rankplug.app.training import TrainConfig
from rankplug.app.weights import read_stage_weights, save_stage_weights
from rankplug.errors import CheckpointError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("weights") / "run"
    config = TrainConfig(method="wgan-gp", stages=2, steps_per_stage=2, size=8, width=8, batch_size=8, ema=0.9)
    train_run(run, config, progress=False)
    return run


def test_the_weights_open_with_safetensors_alone(run_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(run_dir / "models-stage2.safetensors"), framework="pt") as handle:
        names = set(handle.keys())
        metadata = handle.metadata()
    assert any(name.startswith("generator.") for name in names)
    assert any(name.startswith("discriminator.") for name in names)
    assert any(name.startswith("ema_generator.") for name in names)
    assert metadata["format"] == "rankplug.weights/1" and '"size": 8' in metadata["config"]


def test_load_generator_returns_the_last_stage_in_eval_mode_with_its_latent_shape(run_dir: Path) -> None:
    G = rankplug.load_generator(run_dir)
    assert not G.training and G.latent_shape == (32,)
    images = G(torch.randn(3, *G.latent_shape))
    assert images.shape == (3, 1, 8, 8) and float(images.abs().max()) <= 1.0
    _, states = read_stage_weights(run_dir / "models-stage2.safetensors")
    for key, value in G.state_dict().items():  # the EMA copy, as the run kept one
        assert torch.equal(value, states["ema_generator"][key])


def test_load_generator_picks_a_stage_and_names_what_is_missing(run_dir: Path, tmp_path: Path) -> None:
    first = rankplug.load_generator(run_dir, stage=1)
    last = rankplug.load_generator(run_dir)
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), last.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="has no stage 5; it has stage"):
        rankplug.load_generator(run_dir, stage=5)
    with pytest.raises(FileNotFoundError, match="holds no stage weights"):
        rankplug.load_generator(tmp_path)


def test_an_edited_tensor_fails_the_checksum(run_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = run_dir / "models-stage1.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, str(edited), metadata=metadata)
    with pytest.raises(CheckpointError, match="do not match the SHA-256"):
        read_stage_weights(edited)


def test_a_file_that_is_not_a_stage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=r"not a readable \.safetensors file"):
        read_stage_weights(path)
    save_stage_weights(path, {"generator": torch.nn.Linear(2, 2)}, stage=1)
    facts, states = read_stage_weights(path)
    assert facts == {"stage": 1} and set(states) == {"generator"}
    with pytest.raises(ValueError, match="networks must be named from"):
        save_stage_weights(path, {"critic": torch.nn.Linear(2, 2)})
