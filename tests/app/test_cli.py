"""The ``rankplug`` command in quick mode: demo outputs and resume, train / eval / complete, bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from rankplug.app import demo
from rankplug.app.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK_TRAIN = ["--stages", "2", "--steps-per-stage", "2", "--log-every", "1", "--batch-size", "8", "--no-progress"]
QUICK_EVAL = ["--completion-images", "4", "--completion-steps", "2", "--fid-samples", "40", "--no-progress"]


@pytest.fixture(autouse=True)
def _shared_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # one reference digits classifier for the whole module, never the user's ~/.cache
    monkeypatch.setenv("RANKPLUG_CACHE", str(tmp_path_factory.getbasetemp() / "rankplug-cache"))


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RANKPLUG_CACHE", str(tmp_path_factory.getbasetemp() / "rankplug-cache"))
        assert main(["demo", "--dir", str(directory), "--quick", "--no-progress"]) == 0
    return directory


def test_demo_writes_everything_the_issue_lists(demo_dir: Path) -> None:
    for run in ("rankgan", "baseline"):
        for stage in (1, 2, 3):
            assert _is_png(demo_dir / run / f"samples-stage{stage}.png")
            assert (demo_dir / run / f"models-stage{stage}.safetensors").is_file()  # a checkpoint per stage
    assert _is_png(demo_dir / "score_ladder.png")
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"rankgan", "baseline"}
    rankgan = metrics["runs"]["rankgan"]
    assert [g["stage"] for g in rankgan["gap_per_stage"]] == [1, 2, 3]
    # stages 2-3 of RankGAN log the third rung D(G_{i-1}(z)); the baseline has none
    assert rankgan["gap_per_stage"][0]["prev_fake_end"] is None
    assert all(g["prev_fake_end"] is not None for g in rankgan["gap_per_stage"][1:])
    assert all(g["prev_fake_end"] is None for g in metrics["runs"]["baseline"]["gap_per_stage"])
    # same compute: the baseline made exactly as many generator steps
    assert metrics["runs"]["baseline"]["generator_steps"] == rankgan["generator_steps"] == 3 * 4
    for entry in rankgan["stages"]:
        assert entry["digits_fid"] > 0
        assert entry["completion"]["coverages"] == [0.09, 0.25, 0.49, 0.81]  # 0.64 hides 0.49's square at 8x8
        assert 0.1 <= entry["classifier_confidence"] <= 1.0
    report = (demo_dir / "report.md").read_text()
    assert "| rankgan | 3 |" in report and "| baseline | 3 |" in report
    assert "score_ladder.png" in report and "samples.png" in report and "class_histogram.png" in report
    assert "Stage 1 " in report and "so its gradient is WGAN-GP's" in report and "mean confidence of" in report
    assert metrics["reference"]["held_out_confidence"] > 0.9


def test_demo_resumes_and_says_so(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (demo_dir / "rankgan" / "models-stage3.safetensors").read_bytes()
    assert main(["demo", "--dir", str(demo_dir), "--quick", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "resuming" in err and "last checkpoint" in err
    assert (demo_dir / "rankgan" / "models-stage3.safetensors").read_bytes() == before  # nothing retrained


def test_demo_refuses_other_settings_in_the_same_directory(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--dir", str(demo_dir), "--quick", "--seed", "3", "--no-progress"]) == 2
    assert "seed=0" in capsys.readouterr().err


def test_train_eval_complete_on_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "mbgan"
    assert main(["train", "--dir", str(run), "--method", "mbgan", *QUICK_TRAIN]) == 0
    assert "rankplug eval" in capsys.readouterr().out
    assert main(["eval", str(run), *QUICK_EVAL]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| ") >= 2 and "| 2 | 4 |" in out
    first = json.loads((run / "eval-stage2.json").read_text())
    assert main(["eval", str(run), *QUICK_EVAL]) == 0  # read back, not recomputed
    assert json.loads((run / "eval-stage2.json").read_text()) == first
    assert (
        main(["complete", str(run), "--images", "3", "--steps", "2", "--coverages", "0.25", "0.49", "--no-progress"])
        == 0
    )
    table = capsys.readouterr().out
    assert "| stage 1 |" in table and "| stage 2 |" in table and "49%" in table
    assert _is_png(run / "completion.png") and (run / "completion.md").is_file()


def test_train_refuses_a_directory_with_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "dcgan"
    assert main(["train", "--dir", str(run), "--method", "dcgan", *QUICK_TRAIN]) == 0
    capsys.readouterr()
    assert main(["train", "--dir", str(run), "--method", "wgan-gp", *QUICK_TRAIN]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "'dcgan' there, 'wgan-gp' now" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dir", "x", "--steps-per-stage", "0"], "expected a positive integer; got 0"),
        (["train", "--dir", "x", "--method", "lsgan"], "invalid choice: 'lsgan'"),
        (["demo", "--threads", "0"], "expected a positive integer; got 0"),
        (["complete", "x", "--coverages", "1.5"], "a coverage is a fraction in (0, 1); got 1.5"),
    ],
)
def test_bad_arguments_are_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_settings_that_may_be_zero_parse_as_zero() -> None:
    from rankplug.app.cli import build_parser

    args = build_parser().parse_args(["train", "--dir", "x", "--bank-size", "0", "--bank-refresh", "0", "--seed", "0"])
    assert (args.bank_size, args.bank_refresh, args.seed) == (0, 0, 0)


def test_a_negative_bank_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--dir", str(tmp_path / "run"), "--bank-size", "-1"]) == 2
    assert "bank_size must be an int in [0, 100000000]; got -1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_inputs_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dir", str(tmp_path / "r"), "--data", "folder"]) == 2
    assert "data 'folder' needs data_root" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if "seconds" not in k and k not in ("machine", "date")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_demo_is_deterministic_and_fixed(demo_dir: Path, tmp_path: Path) -> None:
    # issue 12: no step count from a timing; the same command and seed write the same metrics (timings aside)
    assert main(["demo", "--dir", str(tmp_path / "again"), "--quick", "--no-progress"]) == 0
    first = json.loads((demo_dir / "metrics.json").read_text())
    second = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert _without_timings(first) == _without_timings(second)
    histogram = first["runs"]["rankgan"]["stages"][-1]["class_histogram"]
    assert len(histogram) == 10 and sum(histogram) == 64
    assert _is_png(demo_dir / "samples.png") and _is_png(demo_dir / "class_histogram.png")
    assert "## Classes of the samples" in (demo_dir / "report.md").read_text()


def test_demo_schedule_is_the_documented_one() -> None:
    configs = demo.demo_configs()
    assert set(configs) == {"rankgan", "baseline"}
    for config in configs.values():
        assert (config.data, config.size, config.width, config.stages, config.steps_per_stage) == (
            "mnist",
            16,
            32,
            3,
            300,
        )
    assert configs["baseline"].method == "wgan-gp" and configs["rankgan"].margin == demo.DEMO_MARGIN
    full = demo.demo_configs(full=True)["rankgan"]
    assert full.encoder and full.clamp_weight == 1.0 and full.plateau_patience is not None  # docs/results.md §1


def test_python_dash_m_rankplug_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rankplug", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0
    assert "{demo,train,eval,complete,sample}" in result.stdout


def test_conditional_demo_compares_both_heads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--conditional", "--quick", "--dir", str(tmp_path), "--no-progress"]) == 0
    out = tmp_path / "conditional"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"aam", "ce"}
    for head, run in metrics["runs"].items():
        assert {"gan_train", "gan_test", "digits_fid"} <= set(run["metrics"]), head
        assert _is_png(out / f"samples-{head}.png")
    report = (out / "report.md").read_text()
    assert "| aam |" in report and "| ce |" in report
    assert main(["demo", "--conditional", "--quick", "--dir", str(tmp_path), "--no-progress"]) == 0
    assert "resuming the finished run in" in capsys.readouterr().err


def test_eval_with_missing_inception_weights_fails_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # issue 10, finding 11: a requested output that cannot be produced is an error (it used to exit 0)
    run = tmp_path / "wgan"
    assert main(["train", "--dir", str(run), "--method", "wgan-gp", *QUICK_TRAIN]) == 0
    missing = tmp_path / "nowhere" / "pt_inception.pth"
    assert main(["eval", str(run), *QUICK_EVAL, "--inception-weights", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"error: --inception-weights: no such file: {str(missing)!r}" in err
    assert not list(run.glob("eval-stage*.json"))


def test_full_demo_says_how_long_from_a_timing_it_does_not_use() -> None:
    seconds = demo.estimate_seconds(demo.demo_configs(quick=True))
    assert 0 < seconds < 600  # 24 quick steps on any machine


# ---------------------------------------------------------------------------------------------------------------
# rankplug eval --metrics: the paper metrics through torch-fidelity (issue 16), with a weights file built here.


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("paper") / "rankgan"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RANKPLUG_CACHE", str(tmp_path_factory.getbasetemp() / "rankplug-cache"))
        assert main(["train", "--dir", str(run), "--method", "rankgan", *QUICK_TRAIN]) == 0
    return run


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.app.eval.test_fidelity import _import_or_skip

    _import_or_skip("torchvision")
    _import_or_skip("torch_fidelity")
    from tests._fid_weights import write_random_fid_inception

    return write_random_fid_inception(tmp_path_factory.mktemp("weights") / "random_fid_inception.pth")


def _reference_folder(path: Path, n: int = 4) -> Path:
    from PIL import Image

    path.mkdir(parents=True)
    pixels = torch.rand(n, 8, 8, generator=torch.Generator().manual_seed(0)).mul(255).to(torch.uint8).numpy()
    for k, image in enumerate(pixels):
        Image.fromarray(image, mode="L").save(path / f"{k}.png")
    return path


def test_eval_paper_metrics_show_in_table_and_json_and_reuse_the_reference(
    quick_run: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKPLUG_CACHE", str(tmp_path / "cache"))
    reference = _reference_folder(tmp_path / "real")
    paper = ["--metrics", "fid,is,kid,prc", "--reference", str(reference), "--inception-weights", str(weights)]
    assert main(["eval", str(quick_run), *QUICK_EVAL, *paper, "--n", "10", "--force"]) == 0
    out = capsys.readouterr().out
    assert "| SSIM | FID | IS | KID | precision | recall |" in out
    rows = [line for line in out.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2 and all(row.count(" ± ") == 2 and " - |" not in row.split("SSIM")[-1] for row in rows)
    scores = json.loads((quick_run / "eval-stage2.json").read_text())["paper_metrics"]
    assert {"fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall"} <= set(scores)
    assert scores["n"] == 10 and scores["reference"]["images"] == 4 and scores["kid_subset_size"] == 4
    assert set(scores["seconds"]) == {"fid", "is", "kid", "prc", "samples", "reference"}
    (cached,) = (tmp_path / "cache" / "fidelity").glob("*.npz")
    assert cached.stem == scores["reference"]["sha256"]
    written = cached.stat().st_mtime_ns
    # Another evaluation against the same images reads their features back (the file is not rewritten).
    assert main(["eval", str(quick_run), *QUICK_EVAL, *paper[:1], "fid", *paper[2:], "--n", "2", "--force"]) == 0
    assert "| SSIM | FID |" in capsys.readouterr().out
    assert list((tmp_path / "cache" / "fidelity").glob("*.npz")) == [cached] and cached.stat().st_mtime_ns == written


def _stats_file(path: Path) -> Path:
    import numpy as np

    np.savez(path, mu=np.zeros(2048), sigma=np.eye(2048))
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--metrics", "fid,foo"], "argument --metrics: expected a comma-separated list of fid, is, kid, prc"),
        (["--metrics", "is", "--n", "5"], "--n must be >= 10 for --metrics is; got 5"),
        (["--metrics", "fid", "--reference", "{tmp}/nowhere"], "--reference: no such file or folder"),
        (["--reference", "{tmp}"], "--reference applies to --metrics, which was not given"),
        (["--metrics", "fid", "--device", "cuda:7"], "--device"),
        (["--metrics", "fid", "--inception-weights", "{tmp}/w.pth"], "--inception-weights: FID Inception weights"),
        (["--metrics", "kid", "--reference", "{stats}", "--inception-weights", "{weights}"], "--reference: "),
    ],
)
def test_eval_paper_metric_mistakes_are_one_line_naming_the_flag(
    quick_run: Path,
    weights: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    stats = _stats_file(tmp_path / "stats.npz") if "{stats}" in extra else None
    argv = ["eval", str(quick_run), *QUICK_EVAL, "--force"]
    argv += [arg.format(tmp=tmp_path, stats=stats, weights=weights) for arg in extra]
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert message in lines[-1] and not any("Traceback" in line for line in lines)
    if "fid,foo" not in extra:  # argparse prints its usage first; rankplug's own refusals are one line
        assert len(lines) == 1, lines
    err = lines[-1]
    if stats is not None:
        assert "holds statistics (mu, sigma) only; kid and prc need the real images" in err


def _hostile_reference(kind: str, tmp_path: Path) -> Path:
    import numpy as np

    from tests.app.eval.test_fidelity import _png_header

    if kind == "negative sigma":  # the probe: mu = 0, sigma = -1e6 I gave FID 0.00 with exit 0
        path = tmp_path / "stats.npz"
        np.savez(path, mu=np.zeros(2048), sigma=-1e6 * np.eye(2048, dtype=np.float32))
    elif kind == "truncated":
        path = tmp_path / "cut.npz"
        np.savez(path, mu=np.zeros(2048), sigma=np.eye(2048, dtype=np.float32))
        path.write_bytes(path.read_bytes()[:100_000])
    elif kind == "NaN images":
        path = tmp_path / "nan.npz"
        np.savez(path, images=np.full((4, 3, 8, 8), np.nan, dtype=np.float32))
    else:  # a 20000 x 20000 PNG among small ones
        path = _reference_folder(tmp_path / "real")
        _png_header(path / "huge.png", 20000, 20000)
    return path


@pytest.mark.parametrize("kind", ["negative sigma", "truncated", "NaN images", "huge image"])
def test_eval_refuses_a_hostile_reference_in_one_line_naming_the_file(
    quick_run: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    reference = _hostile_reference(kind, tmp_path)
    argv = ["eval", str(quick_run), *QUICK_EVAL, "--force", "--metrics", "fid", "--n", "4"]
    argv += ["--reference", str(reference), "--inception-weights", str(weights)]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rankplug eval: error: --reference: "), lines
    assert str(reference) in lines[0]


def test_inception_weights_alone_asks_for_fid_and_is_of_fid_samples(
    quick_run: Path, weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rankplug.app.eval import commands

    asked = {}

    class Stop(Exception):
        pass

    def capture(config, metrics, n, reference, *args):
        asked.update(metrics=metrics, n=n, reference=reference)
        raise Stop

    monkeypatch.setattr(commands, "_PaperMetrics", capture)
    with pytest.raises(Stop):
        main(["eval", str(quick_run), *QUICK_EVAL, "--force", "--inception-weights", str(weights)])
    assert asked == {"metrics": ("fid", "is"), "n": 40, "reference": None}
    too_few = ["eval", str(quick_run), *QUICK_EVAL[:4], "--fid-samples", "5", "--inception-weights", str(weights)]
    assert main(too_few) == 2
    assert "--fid-samples must be >= 10 for FID and IS" in capsys.readouterr().err


def test_eval_table_has_a_column_for_every_metric_computed() -> None:
    from rankplug.app.cli import eval_table

    base = {"stage": 1, "generator_steps": 4, "gap_end": 0.5, "completion": {"psnr": [20.0], "ssim": [0.5]}}
    plain = eval_table([{**base, "eval_settings": {}}])
    assert plain[0] == "| stage | generator steps | gap Γ (end) | digits-FID | completion PSNR (dB) | SSIM |"
    paper = {"fid": 12.345, "is_mean": 3.0, "is_std": 0.25, "kid_mean": 0.01234, "kid_std": 0.002}
    entry = {
        **base,
        "digits_fid": 7.0,
        "gan_train": 0.9,
        "gan_test": 0.8,
        "eval_settings": {"paper_metrics": {"metrics": ["fid", "is", "kid"]}},
        "paper_metrics": paper,
    }
    header, _, row = eval_table([entry])
    assert header.endswith("| SSIM | GAN-train | GAN-test | FID | IS | KID |")
    assert row == "| 1 | 4 | 0.500 | 7.00 | 20.00 | 0.500 | 0.900 | 0.800 | 12.35 | 3.00 ± 0.25 | 0.0123 ± 0.0020 |"
