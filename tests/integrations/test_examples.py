"""The runnable examples train: finite numbers, and the generator moves towards the data."""

from __future__ import annotations

import doctest
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("loss", ["margin", "wgan"])
def test_swap_one_loss_line_trains(loss, capsys):
    result = load("swap_one_loss_line").main(["--loss", loss, "--steps", "150"])
    # The generator starts near the origin, about 2.2 from the data's mean.
    assert result["distance"] < 1.0, result
    assert capsys.readouterr().out.count("step") >= 5


# ------------------------------------------------------------------ the compact StyleGAN2-ADA-style loop
COMPACT_LOOP = "stylegan2_ada_compact_loop"


def test_compact_loop_has_a_command_line(capsys):
    with pytest.raises(SystemExit) as stop:
        load(COMPACT_LOOP).main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "--previous" in out and "--variant" in out


def test_compact_loop_docstring_examples_run():
    pytest.importorskip("kornia")
    module = load(COMPACT_LOOP)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_compact_loop_networks_have_the_hosts_call_shapes():
    networks = load(COMPACT_LOOP).make_networks(resolution=32, channels=1, z_dim=8, w_dim=16)
    z, c = torch.randn(3, 8), torch.zeros(3, 0)
    assert networks.G.mapping(z, c).shape == (3, 1, 16)  # (N, num_ws, w_dim) with a single style
    images = networks.G(z, c)
    assert images.shape == (3, 1, 32, 32) and images.abs().max() <= 1
    assert networks.D(images, c).shape == (3, 1)
    with pytest.raises(ValueError, match="resolution must be a power of two >= 4; got 24"):
        load(COMPACT_LOOP).make_networks(resolution=24)


@pytest.mark.parametrize("variant", ["rankgan", "gogan"])
def test_two_stages_on_the_compact_loop(variant, tmp_path, monkeypatch, capsys):
    pytest.importorskip("kornia")
    # The two-stage example imports the compact loop next to it, as it does when run from examples/.
    monkeypatch.setitem(sys.modules, COMPACT_LOOP, load(COMPACT_LOOP))
    args = ["--iterations", "12", "--variant", variant, "--run-dir", str(tmp_path)]
    stages = load("stylegan2_ada_rankgan").main(args)
    for out in stages.values():
        assert out["history"] and out["snapshot"].is_file()
        for entry in out["history"]:
            assert all(math.isfinite(value) for value in entry.values()), entry
    assert f"stage 2: {variant} against the frozen stage 1" in capsys.readouterr().out


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def test_compact_loop_trains_under_torchrun_with_gloo(tmp_path):
    pytest.importorskip("kornia")
    common = ["--batch", "8", "--batch-gpu", "4", "--log-every", "3", "--ada-interval", "1", "--ada-kimg", "0.2"]
    launcher = [
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(EXAMPLES / f"{COMPACT_LOOP}.py"),
    ]
    stage1_dir, stage2_dir = tmp_path / "stage1", tmp_path / "stage2"
    out = _run(*launcher, "--run-dir", str(stage1_dir), "--iterations", "6", *common)
    assert out.returncode == 0, out.stderr[-3000:]
    snapshot = stage1_dir / "network-snapshot.pt"
    previous = ["--resume", str(snapshot), "--previous", str(snapshot), "--variant", "rankgan"]  # markers: all ranks
    out = _run(*launcher, "--run-dir", str(stage2_dir), "--iterations", "3", *common, *previous)
    assert out.returncode == 0, out.stderr[-3000:]
    for run_dir in (stage1_dir, stage2_dir):
        lines = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
        assert lines, run_dir
        for entry in lines:
            assert all(math.isfinite(value) for value in entry.values()), entry
        assert (run_dir / "network-snapshot.pt").is_file()
    first = [json.loads(line) for line in (stage1_dir / "stats.jsonl").read_text().splitlines()]
    assert first[-1]["augment_p"] != 0.0  # ADA moved p from its initial 0


def _image_folder(folder: Path, count: int, side: int = 16) -> Path:
    from PIL import Image

    folder.mkdir()
    generator = torch.Generator().manual_seed(3)
    images = load(COMPACT_LOOP).toy_images(count, side, 3, generator)
    for index, image in enumerate(((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:03d}.png")
    return folder


def test_compact_loop_trains_on_an_image_folder_and_logs_the_stage_2_ladder(tmp_path, capsys):
    pytest.importorskip("kornia")
    module = load(COMPACT_LOOP)
    data = _image_folder(tmp_path / "images", 30)  # rankplug.app.data holds every 10th out: 27 to train on
    common = ["--data", "folder", "--data-root", str(data), "--batch", "8", "--batch-gpu", "4", "--log-every", "2"]
    stage1 = module.main(["--run-dir", str(tmp_path / "s1"), "--iterations", "4", *common])
    snapshot = str(stage1["snapshot"])
    stage2 = module.main(
        ["--run-dir", str(tmp_path / "s2"), "--iterations", "4", "--resume", snapshot, "--previous", snapshot, *common]
    )
    first = [json.loads(line) for line in (tmp_path / "s1" / "stats.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (tmp_path / "s2" / "stats.jsonl").read_text().splitlines()]
    assert not set(module.STAGE_LOGGED) & set(first[-1])  # nothing to rank against at stage 1
    assert set(module.STAGE_LOGGED) <= set(second[-1])
    m_high, m_low = second[-1]["Loss/markers/high"], second[-1]["Loss/markers/low"]
    assert m_high >= m_low and all(math.isfinite(v) for v in second[-1].values())
    out = capsys.readouterr().out
    assert f"markers m_high={m_high:.4g} m_low={m_low:.4g} from 27 real images" in out  # the whole train split
    assert stage2["history"][-1]["Loss/scores/prev_fake"] == second[-1]["Loss/scores/prev_fake"]


def test_compact_loop_marker_images_bounds_the_marker_sample(tmp_path):
    module = load(COMPACT_LOOP)
    dataset = module.open_data("folder", str(_image_folder(tmp_path / "images", 30)), 16, 3)
    shape = {"resolution": 16, "channels": 3}
    one = module.marker_batches(dataset, 10, 4, shape, rank=0, world=1)
    assert [b.shape[0] for b in one] == [4, 4, 2]
    halves = [module.marker_batches(dataset, 10, 4, shape, rank=r, world=2) for r in (0, 1)]
    assert sum(b.shape[0] for part in halves for b in part) == 10  # the two ranks split the same 10 images
    together = torch.cat([torch.cat(part) for part in halves])
    assert torch.unique(together.flatten(1), dim=0).shape[0] == 10
    with pytest.raises(ValueError, match="data kind must be one of"):
        module.open_data("lsun", None, 16, 3)


def test_compact_loop_says_why_its_clamp_weight_is_1(capsys):
    module = load(COMPACT_LOOP)
    assert module.CLAMP_WEIGHT == 1.0 and module.parse_args(["--run-dir", "x"]).clamp_weight == 1.0
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert "the paper's 1000 swamps the ranking term" in " ".join(capsys.readouterr().out.split())
