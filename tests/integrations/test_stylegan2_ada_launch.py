"""``python -m rankplug.integrations.stylegan2_ada_launch`` on a copy of the stand-in checkout, and on the real one.

Every run is a subprocess, as a user runs it: ``train``, ``training`` and ``torch_utils`` then never leak into
this test process. The stand-in's ``InfiniteSampler`` makes upstream's ``super().__init__(dataset)`` call, so a run
only gets past it with the launcher's fix on the torch releases that need it.

The real-repository test uses ``RANKPLUG_STYLEGAN2_ADA_DIR`` (a stylegan2-ada-pytorch checkout) or, failing that,
a shallow ``git clone`` into a temporary folder; it is skipped without either, and when click, psutil or requests
(upstream's own requirements) are missing. Nothing of upstream is committed to rankplug.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

STANDIN = Path(__file__).resolve().parents[1] / "standins" / "stylegan2_ada"
LAUNCH = [sys.executable, "-m", "rankplug.integrations.stylegan2_ada_launch"]
LOSS_CLASS = "rankplug.integrations.stylegan2_ada.RankGANLoss"
UPSTREAM_URL = "https://github.com/NVlabs/stylegan2-ada-pytorch"


def _sampler_rejects_data_source() -> bool:
    from rankplug.integrations.stylegan2_ada_launch import _sampler_rejects_data_source as rejects

    return rejects()


def run(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [*args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )


def hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def write_images(folder: Path, count: int, side: int = 16) -> Path:
    """Diagonal stripes, 8-bit RGB PNGs: a data set the tiny stand-in networks can tell from noise."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    u = np.linspace(0, 1, side)
    for index in range(count):
        wave = np.sin(2 * np.pi * (2 + rng.randint(2)) * (u[:, None] + u[None, :]) + rng.rand() * 2 * np.pi)
        pixels = (wave * 127.5 + 127.5).astype(np.uint8)
        Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(folder / f"{index:03d}.png")
    return folder


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the stand-in checkout (the tests check that the launcher leaves its files as they are)."""
    root = tmp_path_factory.mktemp("stylegan2-ada-pytorch")
    shutil.copytree(STANDIN, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("data") / "stripes", 48)


@pytest.fixture(scope="module")
def stage1(checkout, data, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("runs")
    before = hashes(checkout)
    out = run(*LAUNCH, str(checkout), "--", f"--outdir={outdir}", f"--data={data}", "--kimg=0.1", cwd=outdir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert hashes(checkout) == before  # no upstream file written or changed
    (run_dir,) = outdir.iterdir()
    return run_dir, out


def test_stage1_runs_upstream_train_py_with_rankplugs_loss(stage1):
    run_dir, out = stage1
    assert run_dir.name.endswith("-rankplug")
    options = json.loads((run_dir / "training_options.json").read_text())
    assert options["loss_kwargs"] == {"class_name": LOSS_CLASS, "r1_gamma": 0.05}  # train.py's r1_gamma kept
    fixes = "InfiniteSampler" if _sampler_rejects_data_source() else "none needed"
    assert f"fixes: {fixes}" in out.stdout
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert stats and all(np.isfinite(entry["Loss/D/loss"]) for entry in stats)
    assert "Loss/scores/prev_fake" not in stats[-1]
    assert json.loads((run_dir / "final-rank0.json").read_text()) == {"stage": 1, "markers": None}
    assert list(run_dir.glob("network-snapshot-*.pkl"))


def test_stage2_on_two_ranks_takes_markers_from_the_data_set_on_every_rank(checkout, data, stage1, tmp_path):
    run_dir, _ = stage1
    previous = sorted(run_dir.glob("network-snapshot-*.pkl"))[-1]
    before = hashes(checkout)
    stage = ["--previous", str(previous), "--clamp-weight=1", "--marker-images=40"]
    flags = [f"--outdir={tmp_path}", f"--data={data}", "--gpus=2", "--batch=8", "--kimg=0.03"]
    out = run(*LAUNCH, str(checkout), *stage, "--", *flags, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert hashes(checkout) == before
    (stage2_dir,) = tmp_path.iterdir()
    options = json.loads((stage2_dir / "training_options.json").read_text())
    loss_kwargs = options["loss_kwargs"]
    assert loss_kwargs["class_name"] == LOSS_CLASS and loss_kwargs["previous"] == str(previous)
    assert loss_kwargs["clamp_weight"] == 1.0 and loss_kwargs["marker_images"] == 40
    assert loss_kwargs["marker_dataset"]["path"] == str(data)  # the training set's own options
    assert options["resume_pkl"] == str(previous)  # --previous resumes from the same snapshot
    # 40 of the 48 images, split between the two ranks and gathered: one line, printed by rank 0.
    assert out.stdout.count("from 40 real images and 40 previous-stage fakes") == 1, out.stdout[-2000:]
    finals = [json.loads((stage2_dir / f"final-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert finals[0]["stage"] == 2 and finals[0]["markers"] is not None
    assert finals[0] == finals[1]  # the same markers on every rank
    m_high, m_low = finals[0]["markers"]
    assert m_high >= m_low
    stats = [json.loads(line) for line in (stage2_dir / "stats.jsonl").read_text().splitlines()]
    assert {"Loss/scores/prev_fake", "Loss/markers/high", "Loss/markers/low"} <= set(stats[0])
    assert stats[0]["Loss/markers/high"] == pytest.approx(m_high)


def test_gogan_stage_gets_no_marker_dataset(checkout, data, stage1, tmp_path):
    run_dir, _ = stage1
    previous = sorted(run_dir.glob("network-snapshot-*.pkl"))[-1]
    flags = [f"--outdir={tmp_path}", f"--data={data}", "--kimg=0.01", f"--resume={previous}", "--dry-run"]
    out = run(*LAUNCH, str(checkout), "--previous", str(previous), "--variant=gogan", "--", *flags, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    options = json.loads(out.stdout.split("Training options:\n", 1)[1].split("\nOutput directory", 1)[0])
    assert options["loss_kwargs"]["variant"] == "gogan" and "marker_dataset" not in options["loss_kwargs"]
    assert options["resume_pkl"] == str(previous)  # the user's own --resume, not a second one


def test_a_gogan_stage_with_the_bank_trains_and_gets_the_data_set_for_its_labels(checkout, data, stage1, tmp_path):
    run_dir, _ = stage1
    previous = sorted(run_dir.glob("network-snapshot-*.pkl"))[-1]
    stage = ["--previous", str(previous), "--variant=gogan", "--bank-size=64", "--bank-device=cpu"]
    flags = [f"--outdir={tmp_path}", f"--data={data}", "--batch=8", "--kimg=0.03"]
    out = run(*LAUNCH, str(checkout), *stage, "--", *flags, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (stage2_dir,) = tmp_path.iterdir()
    loss_kwargs = json.loads((stage2_dir / "training_options.json").read_text())["loss_kwargs"]
    assert loss_kwargs["bank_size"] == 64 and loss_kwargs["bank_device"] == "cpu"
    assert loss_kwargs["marker_dataset"]["path"] == str(data)  # the bank's labels, drawn the host's way
    stats = [json.loads(line) for line in (stage2_dir / "stats.jsonl").read_text().splitlines()]
    assert all(np.isfinite(entry["Loss/D/loss"]) and "Loss/scores/prev_fake" in entry for entry in stats)


@pytest.mark.skipif(not _sampler_rejects_data_source(), reason="this torch's Sampler still takes data_source")
def test_without_the_launcher_the_standin_fails_as_upstream_does(checkout, data, tmp_path):
    out = run(sys.executable, str(checkout / "train.py"), f"--outdir={tmp_path}", f"--data={data}", cwd=checkout)
    assert out.returncode != 0
    assert "TypeError: object.__init__() takes exactly one argument" in out.stderr


def test_bad_arguments_are_refused_by_name(checkout, tmp_path):
    out = run(*LAUNCH, str(tmp_path), "--", "--outdir=x", cwd=tmp_path)
    assert out.returncode == 2
    assert "STYLEGAN2_ADA_DIR" in out.stderr and "has no train.py" in out.stderr
    out = run(*LAUNCH, str(checkout), "--marker-images=0", "--", "--outdir=x", cwd=tmp_path)
    assert out.returncode == 2 and "--marker-images must be >= 1; got 0" in out.stderr
    out = run(*LAUNCH, str(checkout), "--variant=wgan", cwd=tmp_path)
    assert out.returncode == 2 and "--variant: invalid choice: 'wgan'" in out.stderr
    out = run(*LAUNCH, str(checkout), "--bank-size=-4", "--", "--outdir=x", cwd=tmp_path)
    assert out.returncode == 2 and "--bank-size must be >= 0; got -4" in out.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--margin", "nan"], "--margin must be a finite number >= 0; got nan"),
        (["--clamp-weight", "-1"], "--clamp-weight must be a finite number >= 0; got -1.0"),
        (["--rank-weight=inf"], "--rank-weight must be a finite number >= 0; got inf"),
        (["--markers", "0", "1"], "--markers M_HIGH M_LOW must be finite numbers with M_LOW <= M_HIGH; got 0.0 1.0"),
        (["--previous", "missing.pkl"], "--previous must be the previous stage's snapshot file"),
        (
            ["--previous", "prev.pkl", "--bank-size=8", "--bank-device", "foo"],
            "--bank-device must be None or a device such as",
        ),
        (["--previous", "prev.pkl", "--bank-device=cuda:99"], "--bank-device must be None, 'cpu' or "),
        (["--bank-size=8"], "--bank-size needs --previous: the bank holds the previous stage's outputs"),
    ],
)
def test_bad_stage_options_are_refused_in_one_line_before_train_py_starts(
    checkout, tmp_path, monkeypatch, capsys, options, message
):
    from rankplug.integrations import stylegan2_ada_launch

    monkeypatch.chdir(tmp_path)
    (tmp_path / "prev.pkl").write_bytes(b"")
    started = []
    monkeypatch.setattr(stylegan2_ada_launch, "apply_compat_fixes", lambda: started.append(True) or [])
    with pytest.raises(SystemExit) as exit_info:
        stylegan2_ada_launch.main([str(checkout), *options, "--", f"--outdir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and started == [] and not (tmp_path / "runs").exists()
    assert len(err.splitlines()) == 1 and message in err, err
    assert err.startswith("python -m rankplug.integrations.stylegan2_ada_launch: error: ")


def test_stage_loss_kwargs_refuses_unknown_options():
    from rankplug.integrations.stylegan2_ada_launch import stage_loss_kwargs

    with pytest.raises(ValueError, match=r"unknown stage options \['clamp'\]"):
        stage_loss_kwargs({"clamp": 1.0}, {})
    markers = stage_loss_kwargs({"previous": "p.pkl", "markers": (1.0, 0.0)}, {"path": "d"})
    assert markers["markers"] == [1.0, 0.0] and "marker_dataset" not in markers  # JSON list, no data pass


def test_distutils_fix_provides_strtobool_when_distutils_is_missing(tmp_path):
    code = (
        "import sys; sys.modules['distutils'] = None; sys.modules['distutils.util'] = None\n"
        "from rankplug.integrations.stylegan2_ada_launch import _fix_distutils\n"
        "assert _fix_distutils()\n"
        "from distutils.util import strtobool\n"
        "print(strtobool('Yes'), strtobool('off'))\n"
        "try:\n    strtobool('maybe')\nexcept ValueError as error:\n    print(error)\n"
    )
    out = run(sys.executable, "-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["1 0", "invalid truth value 'maybe'"]


def test_sampler_fix_changes_only_upstreams_class(tmp_path):
    code = (
        f"import sys; sys.path.insert(0, {str(STANDIN)!r})\n"
        "import torch\n"
        "from torch_utils import misc\n"
        "from rankplug.integrations.stylegan2_ada_launch import apply_compat_fixes, _sampler_rejects_data_source\n"
        "first, second = apply_compat_fixes(), apply_compat_fixes()\n"
        "sampler = misc.InfiniteSampler(dataset=list(range(10)), rank=1, num_replicas=2, seed=3)\n"
        "it = iter(sampler); print(first, second, [next(it) for _ in range(5)])\n"
        "print(torch.utils.data.Sampler.__bases__, _sampler_rejects_data_source())\n"
    )
    out = run(sys.executable, "-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    first_line, second_line = out.stdout.splitlines()[:2]
    expected = "['InfiniteSampler'] []" if _sampler_rejects_data_source() else "[] []"
    assert first_line.startswith(expected)
    indices = json.loads(first_line[len(expected) :])
    assert len(indices) == 5 and all(0 <= i < 10 for i in indices)
    assert second_line.endswith(str(_sampler_rejects_data_source()))  # torch's own Sampler is unchanged


def _real_checkout(tmp_path_factory) -> Path:
    given = os.environ.get("RANKPLUG_STYLEGAN2_ADA_DIR")
    if given:
        return Path(given)
    if shutil.which("git") is None:
        pytest.skip("no RANKPLUG_STYLEGAN2_ADA_DIR and no git to clone stylegan2-ada-pytorch")
    target = tmp_path_factory.mktemp("real") / "stylegan2-ada-pytorch"
    try:
        clone = subprocess.run(
            ["git", "clone", "--depth", "1", "--quiet", UPSTREAM_URL, str(target)],
            capture_output=True,
            timeout=60,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except subprocess.TimeoutExpired:
        pytest.skip("cloning stylegan2-ada-pytorch timed out")
    if clone.returncode != 0:
        pytest.skip(f"cannot clone {UPSTREAM_URL} (set RANKPLUG_STYLEGAN2_ADA_DIR): {clone.stderr.decode()[-200:]}")
    return target


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the real run would train; this test stops at CUDA")
def test_real_upstream_gets_as_far_as_its_cuda_requirement(tmp_path_factory, tmp_path):
    for module in ("click", "psutil", "requests"):
        pytest.importorskip(module, reason=f"stylegan2-ada-pytorch's train.py needs {module}")
    root = _real_checkout(tmp_path_factory)
    before = hashes(root)
    data = write_images(tmp_path / "data", 8, side=32)
    flags = [f"--outdir={tmp_path / 'runs'}", f"--data={data}", "--gpus=1", "--kimg=1", "--metrics=none", "--workers=1"]
    out = run(*LAUNCH, str(root), "--", *flags, cwd=tmp_path, timeout=600)
    assert "object.__init__() takes exactly one argument" not in out.stderr
    # Upstream's training_loop moves the networks to torch.device('cuda', rank) right after this line.
    assert "Constructing networks..." in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.returncode != 0
    assert any(word in out.stderr for word in ("NVIDIA", "CUDA", "cuda")), out.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    options = json.loads((run_dir / "training_options.json").read_text())
    assert options["loss_kwargs"]["class_name"] == LOSS_CLASS
    assert hashes(root) == before
