"""Issue 10 on the command line and run directories: no code runs from a run directory, a refused call changes
nothing, one process at a time, and every user mistake or bad file gets one line and an exit status, never a
traceback."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rankplug.app import cli
from rankplug.app.cli import main
from rankplug.app.runs import LOCK_NAME, RunLockedError, lock_run
from rankplug.app.weights import read_stage_weights, save_stage_weights

QUICK_TRAIN = ["--stages", "2", "--steps-per-stage", "2", "--log-every", "1", "--batch-size", "8", "--no-progress"]
QUICK_EVAL = ["--completion-images", "4", "--completion-steps", "2", "--fid-samples", "40", "--no-progress"]


@pytest.fixture(autouse=True)
def _shared_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKPLUG_CACHE", str(tmp_path_factory.getbasetemp() / "rankplug-cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-stage wgan-gp run directory, copied by the tests that damage it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RANKPLUG_CACHE", str(tmp_path_factory.getbasetemp() / "rankplug-cache"))
        assert main(["train", "--dir", str(run), "--method", "wgan-gp", *QUICK_TRAIN]) == 0
    return run


def _copy(run: Path, to: Path) -> Path:
    to.mkdir()
    for path in run.iterdir():
        (to / path.name).write_bytes(path.read_bytes())
    return to


def _snapshot(directory: Path) -> dict[str, bytes]:
    """Every file's bytes but the lock's (which records who last held the directory)."""
    files = [p for p in sorted(directory.rglob("*")) if p.is_file() and p.name != LOCK_NAME]
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        status = main(list(argv))
    except SystemExit as exit_info:  # argparse's own errors
        status = int(exit_info.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


class _Plant:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


# ------------------------------------------------------------------------------- 1. no code from a run directory


def test_a_poisoned_cifar_folder_named_by_run_json_runs_no_code(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(trained, tmp_path / "evil")
    spec = json.loads((run / "run.json").read_text())
    spec["config"].update(data="cifar10", data_root=str(tmp_path / "evil-data"), size=32)
    (run / "run.json").write_text(json.dumps(spec))
    batches = tmp_path / "evil-data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    marker = tmp_path / "pwned"
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        (batches / name).write_bytes(pickle.dumps({"data": _Plant(marker), "labels": [0]}))
    for command in (["eval", str(run), *QUICK_EVAL], ["complete", str(run), "--images", "2", "--steps", "1"]):
        status, err = _run_cli(capsys, *command)
        assert status == 1, err
        assert "is not a CIFAR-10 batch file: refusing" in err
        assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"size": 4096}, "size must be a power of two from 8 to 256"),
        ({"batch_size": -3}, "batch_size must be an int in"),
        ({"method": "os.system"}, "method must be one of"),
        ({"margin": "1"}, "margin must be a real number; got str"),
        ({"data": "folder", "data_root": 7}, "data_root must be a non-empty path string; got 7"),
    ],
)
def test_run_json_settings_are_validated_before_use(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: dict, message: str
) -> None:
    run = _copy(trained, tmp_path / "run")
    spec = json.loads((run / "run.json").read_text())
    spec["config"].update(edit)
    (run / "run.json").write_text(json.dumps(spec))
    status, err = _run_cli(capsys, "eval", str(run), *QUICK_EVAL)
    assert status == 1
    assert f"{run / 'run.json'} is not a valid run file" in err and message in err


class _Holder(torch.nn.Module):
    """A module whose ``state_dict`` is ``state``: to write an edited stage file with the library's own writer."""

    def __init__(self, state: dict) -> None:
        super().__init__()
        self.state = state

    def state_dict(self, *args: object, **kwargs: object) -> dict:  # type: ignore[override]
        return self.state


def test_edited_checkpoint_settings_are_refused_before_allocating(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a width of 10^6 would have allocated hundreds of GB before the shape check
    run = _copy(trained, tmp_path / "run")
    path = run / "models-stage1.safetensors"
    facts, states = read_stage_weights(path)
    facts["config"]["width"] = 1_000_000
    networks = {name: _Holder(state) for name, state in states.items()}
    save_stage_weights(path, networks, **facts)  # a valid file (checksum and all) whose settings were edited
    status, err = _run_cli(capsys, "eval", str(run), *QUICK_EVAL)
    assert status == 1
    assert f"{path} is not a valid rankplug stage checkpoint: width must be an int in [1, 1024]" in err


# --------------------------------------------------------------------------- 2. a refused call changes nothing


@pytest.mark.parametrize(
    "bad",
    [
        ["--device", "cuda:7"],
        ["--device", "foo"],
        ["--margin", "-1"],
        ["--margin", "nan"],
        ["--steps-per-stage", "3", "--log-every", "10"],
        ["--data", "folder", "--data-root", "/nonexistent/images"],
    ],
)
def test_a_refused_start_leaves_no_trace_and_the_directory_stays_usable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: list[str]
) -> None:
    run = tmp_path / "X"
    status, err = _run_cli(capsys, "train", "--dir", str(run), *bad)
    assert status == 2 and "error" in err
    assert not run.exists()
    status, err = _run_cli(capsys, "train", "--dir", str(run), "--method", "margin", *QUICK_TRAIN)
    assert status == 0, err


def test_a_refused_resume_leaves_the_run_as_it_was(trained: Path, tmp_path: Path, capsys) -> None:
    run = _copy(trained, tmp_path / "run")
    before = _snapshot(run)
    status, err = _run_cli(capsys, "train", "--dir", str(run), "--method", "wgan-gp", *QUICK_TRAIN, "--seed", "5")
    assert status == 2 and "holds a run with other settings (seed 0 there, 5 now)" in err
    assert _snapshot(run) == before  # the lock file, which records who held it last, aside


# ------------------------------------------------------------------------------------- 3. one process at a time

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from rankplug.app.runs import lock_run
    with lock_run(sys.argv[1], command="test holder"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_a_second_process_is_refused_while_one_trains(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(trained, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = _snapshot(run)
        for command in (
            ["train", "--dir", str(run), "--method", "wgan-gp", *QUICK_TRAIN],
            ["eval", str(run), *QUICK_EVAL],
        ):
            status, err = _run_cli(capsys, *command)
            assert status == 1
            assert f"{run} is in use by pid {holder.pid}" in err
        assert _snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder died without unlocking: its lock is stale and the next process takes it
    assert str(holder.pid) in (run / LOCK_NAME).read_text()
    status, err = _run_cli(capsys, "eval", str(run), *QUICK_EVAL)
    assert status == 0, err


def test_lock_run_in_one_process(tmp_path: Path) -> None:
    with lock_run(tmp_path):
        with pytest.raises(RunLockedError, match=f"in use by pid {os.getpid()}"):
            with lock_run(tmp_path):
                pass
    with lock_run(tmp_path):  # released on exit
        pass


def test_eval_notices_checkpoints_of_another_run(trained: Path, tmp_path: Path, capsys) -> None:
    # two trains that raced before the lock existed left one run's run.json beside the other's checkpoints
    run = _copy(trained, tmp_path / "run")
    spec = json.loads((run / "run.json").read_text())
    spec["config"]["seed"] = 1
    (run / "run.json").write_text(json.dumps(spec))
    status, err = _run_cli(capsys, "eval", str(run), *QUICK_EVAL)
    assert status == 1
    assert (
        "models-stage1.safetensors was written by another run than run.json describes (seed 0 there, 1 in run.json)"
        in err
    )


# ------------------------------------------------------------------------------------ 11-12. no tracebacks


def test_corrupt_checkpoint_is_named_without_torch_advice(trained: Path, tmp_path: Path, capsys) -> None:
    run = _copy(trained, tmp_path / "run")
    path = run / "models-stage2.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    status, err = _run_cli(capsys, "eval", str(run), *QUICK_EVAL)
    assert status == 1 and str(path) in err
    assert "weights_only=False" not in err


def test_poisoned_checkpoint_is_refused_without_torch_advice(trained: Path, tmp_path: Path, capsys) -> None:
    run = _copy(trained, tmp_path / "run")
    marker = tmp_path / "pwned"
    torch.save({"settings": _Plant(marker)}, run / "models-stage1.safetensors")
    status, err = _run_cli(capsys, "eval", str(run), *QUICK_EVAL)
    assert status == 1 and str(run / "models-stage1.safetensors") in err
    assert "weights_only=False" not in err and not marker.exists()


@pytest.mark.parametrize("name", ["run.json", "history.json"])
@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"stages": NaN}'])
def test_malformed_json_files_are_named(trained: Path, tmp_path: Path, capsys, name: str, content: str) -> None:
    run = _copy(trained, tmp_path / "run")
    (run / name).write_text(content)
    status, err = _run_cli(capsys, "eval", str(run), *QUICK_EVAL)
    assert status == 1
    assert str(run / name) in err


def test_full_disk_is_one_line(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "models-stage1.safetensors"))

    monkeypatch.setattr(sys.modules["rankplug.app.weights"], "atomic_write", no_space)
    status, err = _run_cli(capsys, "train", "--dir", str(tmp_path / "run"), *QUICK_TRAIN)
    assert status == 1
    assert "no space left on the device writing or reading" in err and "models-stage1.safetensors" in err


def test_directory_arguments(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("")
    status, err = _run_cli(capsys, "train", "--dir", str(tmp_path / "afile"), *QUICK_TRAIN)
    assert status == 2 and "exists and is not a directory" in err
    status, err = _run_cli(capsys, "train", "--dir", "", *QUICK_TRAIN)
    assert status == 2 and "argument --dir: expected a directory path; got an empty string" in err
    # root may write anywhere, so a read-only directory is simulated where the check asks
    monkeypatch.setattr("rankplug.app.runs.os.access", lambda path, mode: False)
    status, err = _run_cli(capsys, "train", "--dir", str(tmp_path / "ro" / "run"), *QUICK_TRAIN)
    assert status == 2 and "is not writable" in err
    assert not (tmp_path / "ro").exists()


def test_option_mistakes(tmp_path: Path, capsys) -> None:
    cases = [
        (
            ["train", "--dir", str(tmp_path / "r"), "--data-root", str(tmp_path)],
            "data 'digits' is bundled and takes no data_root",
        ),
        (["train", "--dir", str(tmp_path / "d"), "--margin", "inf"], "expected a finite number; got inf"),
        (["train", "--dir", str(tmp_path / "r"), "--device", "foo"], "device 'foo' is not a torch device"),
    ]
    for argv, message in cases:
        status, err = _run_cli(capsys, *argv)
        assert status == 2 and message in err, (argv, err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()


def test_corrupt_png_in_a_folder_is_named(tmp_path: Path, capsys) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for k in range(3):
        Image.new("RGB", (20, 20), (10 * k, 0, 0)).save(images / f"{k}.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")
    status, err = _run_cli(
        capsys, "train", "--dir", str(tmp_path / "r"), "--data", "folder", "--data-root", str(images)
    )
    assert status == 1 and f"{images / 'broken.png'} is not a readable image" in err
    assert not (tmp_path / "r").exists()


def test_ctrl_c_says_what_is_left(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["rankplug.app.training.loop"], "train", interrupt)
    status, err = _run_cli(capsys, "train", "--dir", str(tmp_path / "r"), *QUICK_TRAIN)
    assert status == 130 and "interrupted before the first checkpoint; nothing to resume" in err
    monkeypatch.setattr(cli, "build_parser", interrupt)  # Ctrl-C while the command is still importing torch
    status, err = _run_cli(capsys, "train", "--dir", str(tmp_path / "r"))
    assert status == 130 and err.strip() == "rankplug: interrupted"


def test_the_command_module_imports_no_torch() -> None:
    # so that Ctrl-C while torch loads lands inside main()'s handler, and --version is instant
    code = "import sys, rankplug.app.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    version = subprocess.run([sys.executable, "-m", "rankplug", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("rankplug 0.")


def test_two_trains_started_together_one_is_refused_and_the_run_stays_whole(tmp_path: Path) -> None:
    # issue 10, finding 3: two trains on one directory with different seeds both exited 0 and mixed their files
    run = tmp_path / "run"
    base = [sys.executable, "-m", "rankplug", "train", "--dir", str(run), "--method", "wgan-gp", *QUICK_TRAIN]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # the first trains long enough (40 steps per stage) to be mid-run when the second reaches the lock
    first = subprocess.Popen(
        [*base, "--steps-per-stage", "40", "--seed", "1"], stderr=subprocess.PIPE, text=True, env=env
    )
    while not (run / LOCK_NAME).exists() and first.poll() is None:
        pass
    second = subprocess.run(
        [*base, "--steps-per-stage", "40", "--seed", "2"], capture_output=True, text=True, env=env, check=False
    )
    _, first_err = first.communicate(timeout=300)
    assert (first.returncode, second.returncode) == (0, 1), (first_err, second.stderr)
    assert f"{run} is in use by pid {first.pid}" in second.stderr
    assert "Traceback" not in first_err + second.stderr
    assert json.loads((run / "run.json").read_text())["config"]["seed"] == 1
    assert main(["eval", str(run), *QUICK_EVAL]) == 0  # checkpoints and run.json agree


def test_help_shows_defaults_and_no_rest_markup() -> None:
    parser = cli.build_parser()
    train_help = parser._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    assert "(default: 300)" in train_help and "(default: rankgan)" in train_help
    assert "``" not in parser.format_help() + train_help


# ------------------------------------------------------------- configs, refused calls that write, sample --out


@pytest.mark.parametrize(
    ("toml", "named"),
    [("stages = 2.0\n", "stages"), ('size = "8"\n', "size"), ('method = ["rankgan"]\n', "method")],
)
def test_a_wrongly_typed_toml_value_is_one_line_naming_the_key(tmp_path: Path, capsys, toml: str, named: str) -> None:
    config = tmp_path / "run.toml"
    config.write_text(toml)
    status, err = _run_cli(capsys, "train", "--dir", str(tmp_path / "run"), "--config", str(config))
    assert status == 2 and named in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_top_level_keys_beside_a_train_table_are_an_error(tmp_path: Path, capsys) -> None:
    config = tmp_path / "run.toml"
    config.write_text("stages = 2\n[train]\nsize = 8\n")
    status, err = _run_cli(capsys, "train", "--dir", str(tmp_path / "run"), "--config", str(config))
    assert status == 2 and "'stages' sit beside the [train] table" in err


def test_a_config_file_is_read_with_a_size_bound(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from rankplug.app.training import config as config_module

    monkeypatch.setattr(config_module, "MAX_CONFIG_BYTES", 64)
    config = tmp_path / "run.toml"
    config.write_text("# " + "x" * 200 + "\nstages = 2\n")
    status, err = _run_cli(capsys, "train", "--dir", str(tmp_path / "run"), "--config", str(config))
    assert status == 2 and "larger than 64 bytes" in err


def test_train_runs_with_default_log_every_for_any_steps_per_stage(tmp_path: Path, capsys) -> None:
    status, err = _run_cli(capsys, "train", "--dir", str(tmp_path / "run"), "--stages", "2", "--steps-per-stage", "3",
                           "--batch-size", "8", "--no-progress")  # fmt: skip
    assert status == 0, err
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert saved["log_every"] == 3


def test_an_explicit_log_every_that_does_not_divide_suggests_the_default(tmp_path: Path, capsys) -> None:
    status, err = _run_cli(
        capsys, "train", "--dir", str(tmp_path / "run"), "--steps-per-stage", "4", "--log-every", "3"
    )
    assert status == 2 and "leave log_every out to log every 4 steps" in err


@pytest.mark.parametrize("kind", ["file", "read-only folder"])
def test_an_unusable_tensorboard_folder_is_refused_before_run_json(tmp_path: Path, capsys, kind: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if kind == "file":
        (run / "tensorboard").write_text("not a folder")
    else:
        (run / "tensorboard").mkdir()
        (run / "tensorboard").chmod(0o500)
        if os.access(run / "tensorboard", os.W_OK):  # root ignores permissions
            pytest.skip("this user can write to a read-only folder")
    status, err = _run_cli(capsys, "train", "--dir", str(run), "--tensorboard", *QUICK_TRAIN)
    assert status == 2 and "tensorboard" in err
    assert not (run / "run.json").exists()


def test_a_run_without_checkpoints_takes_new_settings(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format": "rankplug.run/1", "config": {"seed": 5}}))
    spec_before = (run / "run.json").read_text()
    status, err = _run_cli(capsys, "train", "--dir", str(run), "--seed", "1", *QUICK_TRAIN)
    if "not a valid run file" in err:  # the format tag is the trainer's own; write one it accepts
        from rankplug.app.runs import write_run_file
        from rankplug.app.training import TrainConfig

        write_run_file(run, TrainConfig(seed=5))
        status, err = _run_cli(capsys, "train", "--dir", str(run), "--seed", "1", *QUICK_TRAIN)
    assert status == 0, err
    assert (run / "run.json").read_text() != spec_before
    assert json.loads((run / "run.json").read_text())["config"]["seed"] == 1


def test_fewer_stages_than_the_run_has_are_refused_and_run_json_is_kept(trained: Path, tmp_path: Path, capsys) -> None:
    run = _copy(trained, tmp_path / "run")
    before = _snapshot(run)
    args = [a if a != "2" or i != 1 else "1" for i, a in enumerate(QUICK_TRAIN)]  # --stages 1
    status, err = _run_cli(capsys, "train", "--dir", str(run), "--method", "wgan-gp", *args)
    assert status == 2 and "stages must be at least 2" in err
    assert _snapshot(run) == before


def test_checkpoints_without_run_json_are_refused_and_nothing_is_written(trained: Path, tmp_path: Path, capsys) -> None:
    run = _copy(trained, tmp_path / "run")
    (run / "run.json").unlink()
    before = _snapshot(run)
    status, err = _run_cli(capsys, "train", "--dir", str(run), "--method", "wgan-gp", *QUICK_TRAIN)
    assert status == 1 and "holds checkpoints but no run.json" in err
    assert _snapshot(run) == before


def test_sample_refuses_a_symlinked_out(trained: Path, tmp_path: Path, capsys) -> None:
    victim = tmp_path / "victim.npz"
    victim.write_bytes(b"keep me")
    link = tmp_path / "x.npz"
    link.symlink_to(victim)
    status, err = _run_cli(capsys, "sample", str(trained), "--n", "4", "--out", str(link))
    assert status == 2 and "symbolic link" in err
    assert victim.read_bytes() == b"keep me"


def test_sample_refuses_a_non_empty_folder(trained: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "samples"
    out.mkdir()
    (out / "000009.png").write_bytes(b"an earlier set")
    status, err = _run_cli(capsys, "sample", str(trained), "--n", "4", "--out", str(out))
    assert status == 2 and "not empty" in err
    assert sorted(p.name for p in out.iterdir()) == ["000009.png"]


def test_sample_writes_whole_sets_or_nothing(trained: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import numpy as np

    out = tmp_path / "x.npz"
    assert _run_cli(capsys, "sample", str(trained), "--n", "4", "--out", str(out))[0] == 0
    good = out.read_bytes()
    from PIL import Image

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(np, "savez", killed)
    assert _run_cli(capsys, "sample", str(trained), "--n", "8", "--out", str(out))[0] == 130
    assert out.read_bytes() == good  # the earlier file is whole
    monkeypatch.setattr(Image.Image, "save", killed)
    folder = tmp_path / "pngs"
    assert _run_cli(capsys, "sample", str(trained), "--n", "4", "--out", str(folder))[0] == 130
    assert not folder.exists()  # no partial set under the name asked for


def test_sample_bounds_n_by_memory(trained: Path, tmp_path: Path, capsys) -> None:
    status, err = _run_cli(capsys, "sample", str(trained), "--n", str(10**12), "--out", str(tmp_path / "x.npz"))
    assert status == 2 and "does not fit here" in err


def test_the_demo_checks_its_packages_before_it_writes(tmp_path: Path, capsys, monkeypatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "kornia" else real_find_spec(name, *a)
    )
    status, err = _run_cli(capsys, "demo", "--dir", str(tmp_path / "demo"), "--quick", "--no-progress")
    assert status == 2 and "the demo needs kornia: pip install 'rankplug[demo]'" in err
    assert not (tmp_path / "demo").exists()


def test_the_demo_says_resuming_only_when_there_is_a_checkpoint(tmp_path: Path) -> None:
    from rankplug.app.demo import _check_demo_dir

    said: list[str] = []
    wanted = {"seed": 0, "quick": True, "full": False, "baseline": True}
    _check_demo_dir(tmp_path, wanted, said.append)  # a new directory: demo.json written, nothing said
    (tmp_path / "rankgan").mkdir()
    _check_demo_dir(tmp_path, wanted, said.append)  # demo.json, but no checkpoint yet
    assert said == []
    (tmp_path / "rankgan" / "models-stage1.safetensors").write_bytes(b"")
    _check_demo_dir(tmp_path, wanted, said.append)
    assert len(said) == 1 and "resuming from its last checkpoints" in said[0]
