"""experiments/mnist_study.py: its interval and table helpers on made-up numbers, and the JSON its ``--quick`` and
``--pilot`` modes write, with the training and scoring replaced by made-up run records (a real smoke run takes
minutes; ``OMP_NUM_THREADS=1 python experiments/mnist_study.py --paper rankgan --quick`` runs it)."""

from __future__ import annotations

import doctest
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from tests.project._experiments import import_experiment

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"


@pytest.fixture(scope="module")
def study() -> Any:
    return import_experiment("mnist_study")


def test_the_doctests_pass(study: Any) -> None:
    result = doctest.testmod(study, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


def test_paired_interval_on_made_up_numbers(study: Any) -> None:
    from _study import paired_difference

    staged, control = [10.0, 12.0, 11.0, 13.0], [14.0, 15.0, 13.0, 17.0]  # differences -4, -3, -2, -4
    entry = paired_difference(staged, control)
    assert entry["per_seed"] == [-4.0, -3.0, -2.0, -4.0]
    assert entry["mean"] == pytest.approx(-3.25)
    half = 3.182446305284263 * math.sqrt(0.9166666666666666) / 2  # t_{0.975, 3} * sd / sqrt(4)
    assert entry["t95"] == pytest.approx([-3.25 - half, -3.25 + half])
    assert entry["bootstrap95"][0] >= -4.0 and entry["bootstrap95"][1] <= -2.0
    assert study.verdict(entry, better="lower") == "confirmed"
    assert study.verdict(entry, better="higher") == "refuted"
    assert study.verdict(paired_difference([1.0, -1.0, 2.0], [0.0, 0.0, 0.0]), better="lower") == "inconclusive"
    assert study.verdict(paired_difference([1.0], [0.0]), better="lower") == "one seed"


def test_non_inferiority_and_hinge_states(study: Any) -> None:
    assert study.at_or_above({"mean": 0.3, "t95": [0.1, 0.5]}) == "above"
    assert study.at_or_above({"mean": 0.0, "t95": [-0.09, 0.1]}) == "at or above"
    assert study.at_or_above({"mean": 0.0, "t95": [-0.5, 0.5]}) == "inconclusive"
    assert study.at_or_above({"mean": -0.3, "t95": [-0.5, -0.1]}) == "below"
    assert [study.hinge_state(v) for v in (0.0, 0.049, 0.05, 0.95, 0.951, float("nan"))] == [
        "dead",
        "dead",
        "live",
        "live",
        "saturated",
        "unknown",
    ]


def test_choose_eps(study: Any) -> None:
    grid = {
        1.0: {"gogan_disc": 0.9, "gogan_rank": 0.02},
        3.0: {"gogan_disc": 0.7, "gogan_rank": 0.25},
        10.0: {"gogan_disc": 0.5, "gogan_rank": 0.5},
    }
    assert study.choose_eps(grid) == (3.0, True)
    assert study.choose_eps({1.0: {"gogan_disc": 1.0, "gogan_rank": 1.0}, 3.0: {"gogan_disc": 0.85}}) == (1.0, False)
    assert study.choose_eps({}) == (None, False)


def test_coverages_at_16_px_are_all_distinct(study: Any) -> None:
    from rankplug.app.eval import COVERAGES

    kept, dropped, sides = study.unique_coverages(16, COVERAGES)
    assert kept == list(COVERAGES) and dropped == []
    assert sides == {"0.09": 5, "0.25": 8, "0.49": 11, "0.64": 13, "0.81": 14}


def test_the_arms_are_the_briefs(study: Any) -> None:
    rank = {arm: study.rankgan_config(arm, 3, 40) for arm in study.RANKGAN_ARMS}
    assert all(c.stages == 2 and c.steps_per_stage == 40 and c.plateau_patience is None for c in rank.values())
    assert all(c.data == "mnist" and c.size == 16 and c.width == 32 and c.seed == 3 for c in rank.values())
    assert (rank["rankgan-batch-1000"].clamp_on, rank["rankgan-batch-1000"].clamp_weight) == ("batch", 1000.0)
    assert (rank["rankgan-sample-1"].clamp_on, rank["rankgan-sample-1"].clamp_weight) == ("sample", 1.0)
    assert rank["control"].control and not rank["rankgan-sample-1"].control
    wgan = rank["wgan-gp"]
    assert wgan.method == "wgan-gp" and wgan.encoder and (wgan.lr_d, wgan.lr_g, wgan.beta2) == (5e-5, 1e-4, 0.99)
    go = {arm: study.gogan_config(arm, 0, 40, 3.0) for arm in study.GOGAN_ARMS}
    assert all(go[a].margin == 3.0 and go[a].optimizer == "rmsprop" for a in go if a != "wgan-gp")
    assert (go["gogan-clip"].gp_weight, go["gogan-clip"].weight_clip) == (0.0, 0.01)
    assert go["gogan-clip-control"].control and go["gogan-clip-control"].weight_clip == 0.01
    assert go["gogan-gp"].gp_weight == 10.0 and go["gogan-gp-control"].control
    assert go["wgan-gp"].method == "wgan-gp" and go["wgan-gp"].optimizer == "rmsprop"
    names = {study.run_name(a, 0, c) for a, c in go.items()}
    assert len(names) == len(go) and "gogan-gp-eps3-s40-w32-seed0" in names


# ------------------------------------------------------------------------------------------- made-up runs
EFFECT = {"rankgan-sample-1": -20.0, "rankgan-batch-1": -10.0, "rankgan-sample-1000": 30.0}


def _hinges(paper: str, arm: str, stage: int) -> dict[str, dict[str, float]]:
    if arm == "wgan-gp":
        return {}
    if stage == 1 or arm.endswith("control") or arm == "control":
        names = ["margin"]
    else:
        names = ["rank", "clamp"] if paper == "rankgan" else ["gogan_disc", "gogan_rank"]
    return {n: {"first_half": 0.6, "last_half": 0.01 if n == "clamp" else 0.5} for n in names}


def fake_run(task: tuple[Any, ...]) -> dict[str, Any]:
    """A run record shaped as ``one_run`` returns it, with figures drawn from the seed."""
    paper, arm, seed, config, _run_dir, evaluation = task
    rng = random.Random(seed)
    base = 100.0 + 10 * rng.random()
    stages: dict[str, Any] = {}
    for stage in (1, 2):
        shift = 0.0 if stage == 1 else EFFECT.get(arm, 0.0) + rng.gauss(0, 1)
        entry: dict[str, Any] = {
            "generator_steps": stage * config.steps_per_stage,
            "gap_last_half": 1.0,
            "critic_real_mean": float(stage),
            "fid_prior": base + shift,
            "entropy_prior": 0.9,
        }
        if paper == "rankgan":
            entry.update(fid_encoder=base / 2 + shift, entropy_encoder=0.95)
        if stage in evaluation["completion_stages"].get(arm.split("@")[0], ()):
            k = len(evaluation["coverages"])
            gain = 0.3 if arm in ("gogan-gp", "gogan-clip") and stage == 2 else 0.0
            psnr = [20.0 - i + gain + 0.01 * rng.random() for i in range(k)]
            entry.update(psnr=psnr, ssim=[0.5] * k, hole_psnr=psnr, psnr_mean=sum(psnr) / k, ssim_mean=0.5)
        stages[str(stage)] = entry
    stages["2"]["drift"] = 1.0
    eps = config.margin if "@" in arm else None
    train_stages = []
    for stage in (1, 2):
        hinges = _hinges(paper, arm.split("@")[0], stage)
        if eps is not None and stage == 2:  # the pilots: only eps 3 (penalty) and 0.03 (clipping) in the band
            hinges = {h: {"first_half": 1.0, "last_half": 0.5 if eps in (3.0, 0.03) else 1.0} for h in hinges}
        train_stages.append(
            {
                "stage": stage,
                "steps": config.steps_per_stage,
                "cpu_seconds": 0.2 * config.steps_per_stage + 1.0,
                "cpu_seconds_per_step": 0.2,
                "hinges": hinges,
            }
        )
    return {
        "arm": arm,
        "seed": seed,
        "run_dir": "made-up",
        "train": {"config": config.to_dict(), "stages": train_stages},
        "stages": stages,
        "stage1_fingerprint": f"seed{seed}",
        "fingerprints": {"1": f"seed{seed}", "2": f"{arm}{seed}"},
        "cpu_seconds": {"train": 9.0, "eval": 2.0, "eval_fid": 1.0, "eval_completion": 0.5, "total": 11.0},
    }


@pytest.fixture
def offline(study: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(study, "run_tasks", lambda tasks, worker, jobs: [fake_run(t) for t in tasks])
    monkeypatch.setattr(study, "warm_classifier", lambda: None)
    return study


def test_rankgan_quick_json(offline: Any, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    offline.main(["--paper", "rankgan", "--quick", "--seeds", "0", "1", "2", "--output", str(out), "--work", "w"])
    record = json.loads(out.read_text())
    for key in ("commit", "library_modified", "command", "seeds", "runs", "hinges", "tables", "analysis", "cost"):
        assert key in record, key
    assert record["paper"] == "rankgan" and record["mode"] == "quick" and record["seeds"] == [0, 1, 2]
    assert record["command"].startswith("python experiments/mnist_study.py --paper rankgan")
    assert "--quick" in record["command"] and record["plateau_rule"] == "off"
    assert len(record["runs"]) == 6 * 3 and set(record["settings"]) == set(offline.RANKGAN_ARMS)
    run = record["runs"][0]
    assert {"1", "2"} <= set(run["stages"]) and "fid_encoder" in run["stages"]["2"]
    assert record["hinges"]["rankgan-sample-1"]["2"]["clamp"]["state"] == "dead"
    assert set(record["hinges"]["rankgan-sample-1"]["2"]["rank"]) == {"first_half", "last_half", "state"}
    analysis = record["analysis"]
    assert analysis["verdicts"]["rankgan-sample-1"]["primary"] == "confirmed"
    assert analysis["verdicts"]["rankgan-sample-1000"]["primary"] == "refuted"
    assert analysis["verdicts"]["rankgan-sample-1"]["dead_hinges"] == ["stage 2 clamp"]
    assert analysis["stage1_identical"] is True
    primary = analysis["differences"]["rankgan-sample-1"]["fid_encoder vs control"]
    assert primary["mean"] < -15 and len(primary["per_seed"]) == 3 and primary["t95"][1] < 0
    assert "| rankgan-sample-1 |" in record["tables"] and "confirmed" in record["tables"]
    cost = record["cost"]
    assert cost["runs"] == 6 * len(offline.SEEDS) and cost["estimated_total_cpu_seconds"] > 0
    assert cost["target_settings"]["steps"] == offline.DEFAULT_STEPS["rankgan"]


def test_gogan_pilot_then_quick_json(offline: Any, tmp_path: Path) -> None:
    pilot = tmp_path / "pilot.json"
    offline.main(["--paper", "gogan", "--pilot", "--quick", "--output", str(pilot), "--work", "w"])
    recorded = json.loads(pilot.read_text())
    assert recorded["mode"] == "pilot" and recorded["chosen_eps"] == 3.0 and recorded["chosen_in_band"]
    assert set(recorded["per_eps"]) == {"1", "3", "10", "30"}
    assert recorded["per_eps"]["3"]["stage2_last_half_mean"] == {"gogan_disc": 0.5, "gogan_rank": 0.5}

    out = tmp_path / "g.json"
    argv = ["--paper", "gogan", "--quick", "--seeds", "0", "1", "--output", str(out), "--work", "w"]
    offline.main([*argv, "--pilot-record", str(pilot)])
    record = json.loads(out.read_text())
    assert record["eps"] == 3.0 and record["pilot"]["chosen_eps"] == 3.0 and "--eps 3.0" in record["command"]
    assert len(record["runs"]) == 6 * 2 and set(record["hinges"]) == set(offline.GOGAN_ARMS)
    assert record["evaluation"]["coverages"] == [0.09, 0.25, 0.49, 0.64, 0.81]
    assert "dropped as duplicates: none" in record["notes"]["coverages"]
    differences = record["analysis"]["differences"]
    assert differences["gogan-gp - control"]["psnr_mean"]["mean"] == pytest.approx(0.3, abs=0.02)
    assert record["analysis"]["verdicts"]["gogan-gp"]["primary_vs_control"] == "confirmed"
    assert "drift" in differences["gogan-gp - control"]
    per_coverage = record["analysis"]["figures"]["gogan-gp"]["per_coverage"]
    assert set(per_coverage) == {"1", "2"} and len(per_coverage["2"]["psnr"]) == 5
    assert "| gogan-gp - control |" in record["tables"]


def test_gogan_without_eps_or_pilot_refuses(offline: Any, tmp_path: Path) -> None:
    argv = ["--paper", "gogan", "--output", str(tmp_path / "g.json"), "--work", str(tmp_path / "w")]
    with pytest.raises(SystemExit, match="run --pilot first"):
        offline.main([*argv, "--pilot-record", str(tmp_path / "absent.json")])


def test_gogan_clip_follow_up_has_its_own_pilot_arms_and_json_names(offline: Any, tmp_path: Path) -> None:
    args = offline.parse(["--paper", "gogan", "--constraint", "clip", "--pilot"])
    assert args.output.endswith("gogan_mnist_clip_pilot.json") and args.pilot_eps == [0.01, 0.03, 0.1, 0.3]
    assert offline.parse(["--paper", "gogan", "--constraint", "anchor"]).pilot_record.endswith(
        "gogan_mnist_anchor_pilot.json"
    )
    pilot = tmp_path / "pilot.json"
    offline.main(["--paper", "gogan", "--constraint", "clip", "--pilot", "--quick", "--output", str(pilot)])
    recorded = json.loads(pilot.read_text())
    assert recorded["arm"] == "gogan-clip" and recorded["chosen_eps"] == 0.03 and recorded["chosen_in_band"]
    assert recorded["settings"]["0.03"]["weight_clip"] == 0.01 and recorded["settings"]["0.03"]["gp_weight"] == 0

    out = tmp_path / "g.json"
    argv = ["--paper", "gogan", "--constraint", "clip", "--quick", "--seeds", "0", "1", "--output", str(out)]
    offline.main([*argv, "--pilot-record", str(pilot)])
    record = json.loads(out.read_text())
    assert record["constraint"] == "clip" and record["eps"] == 0.03 and "--constraint clip" in record["command"]
    assert record["arms"] == ["gogan-clip", "gogan-clip-control", "wgan-gp"] and len(record["runs"]) == 3 * 2
    analysis = record["analysis"]
    assert set(analysis["verdicts"]) == {"gogan-clip"}
    assert analysis["verdicts"]["gogan-clip"]["primary_vs_control"] == "confirmed"
    assert analysis["verdicts"]["gogan-clip"]["tests_ranking"] is True  # the made-up rank hinge is 50 % active
    # the arm's own stage 1 is completed, so stage 2 - stage 1 is measured within the arm
    assert analysis["differences"]["gogan-clip stage 2 - stage 1"]["psnr_mean"]["b"] == "gogan-clip stage 1"
    assert set(analysis["figures"]["gogan-clip"]["per_coverage"]) == {"1", "2"}
    assert analysis["stage1_identical"] is True and "tests the ranking: True" in record["tables"]


def test_constraint_is_gogans() -> None:
    study = import_experiment("mnist_study")
    with pytest.raises(SystemExit):
        study.parse(["--paper", "rankgan", "--constraint", "clip"])
