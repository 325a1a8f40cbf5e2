"""experiments/aam_mnist.py: its pre-registered rules (the curve's stopping rule, the verdicts, the choice of the
tuned weight) and its tables on made-up run records; no training (a smoke run takes about a minute:
``OMP_NUM_THREADS=1 python experiments/aam_mnist.py --quick --jobs 1``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.project._experiments import import_experiment

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"


@pytest.fixture(scope="module")
def study() -> Any:
    return import_experiment("aam_mnist")


def test_the_doctests_pass(study: Any) -> None:
    import doctest

    result = doctest.testmod(study, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0


def test_curve_length_is_the_first_step_after_which_the_mean_stays_within_one_point(study: Any) -> None:
    steps = [250, 500, 750, 1000, 1250, 1500]
    # 750: the next two are +1.0 and +0.5 over it (a rise of exactly one point still counts as flat)
    assert study.curve_length(steps, [50.0, 60.0, 70.0, 71.0, 70.5, 75.0]) == (750, True)
    # each look-ahead is compared with the value at S, not with its predecessor: +0.8 then +1.6 over 70 breaks it
    assert study.curve_length(steps, [50.0, 60.0, 70.0, 70.8, 71.6, 71.7]) == (1000, True)
    # a fall counts as no rise
    assert study.curve_length(steps, [80.0, 70.0, 60.0, 61.0, 62.0, 63.0]) == (250, True)
    # the last two steps have no two measurements after them: a curve that keeps rising has not flattened
    assert study.curve_length(steps, [10.0, 20.0, 30.0, 40.0, 50.0, 50.0]) == (1500, False)
    # a missing measurement never qualifies a step
    assert study.curve_length(steps, [50.0, math.nan, 50.0, 50.5, 50.2, 52.0]) == (750, True)
    with pytest.raises(ValueError):
        study.curve_length([250, 500], [1.0])


def test_best_weight_breaks_ties_towards_the_papers_weight(study: Any) -> None:
    assert study.best_weight({0.3: 91.0, 1.0: 90.0, 3.0: 89.0}) == 0.3
    assert study.best_weight({0.3: 91.0, 1.0: 91.0, 3.0: 89.0}) == 1.0
    assert study.best_weight({0.3: 89.0, 1.0: 88.0, 3.0: 89.0}) == 0.3
    assert study.best_weight({0.3: math.nan, 1.0: 88.0, 3.0: 89.5}) == 3.0


def test_per_class_helpers(study: Any) -> None:
    assert study.first_per_class([2, 0, 1, 0, 2, 1, 0], 2, classes=3) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match=r"\[1\]"):
        study.first_per_class([0, 0, 1], 2, classes=2)
    accuracy = study.per_class_accuracy([0, 0, 2], [0, 1, 1], classes=3)
    assert accuracy[:2] == [1.0, 0.0] and math.isnan(accuracy[2])


def made_up_runs(study: Any, seeds: list[int]) -> list[dict[str, Any]]:
    """AAM's GAN-train 5 points over CE's (+-0.5 by seed), its GAN-test 4 points under; cosine's equal to CE's but
    for a seed-alternating +-1 point."""
    runs = []
    for k, seed in enumerate(seeds):
        wobble = 0.005 * (-1) ** k
        base = {"gan_train": 0.80, "gan_test": 0.90, "fid": 20.0, "entropy": 0.99}
        figures = {
            "ce": base,
            "cosine": dict(base, gan_train=0.80 + 2 * wobble, gan_test=0.90 - 2 * wobble),
            "aam": dict(base, gan_train=0.85 + wobble, gan_test=0.86 + wobble, fid=15.0 + 10 * wobble),
        }
        for head in study.HEADS:
            runs.append(
                {
                    "head": head,
                    "weight": 1.0,
                    "seed": seed,
                    "final": dict(figures[head], gan_test_per_class=[figures[head]["gan_test"]] * 10),
                    "class_terms": {
                        key: {"first_half": 2.0, "last_half": 1.0}
                        if key.startswith("cls")
                        else {"first_half": 0.3, "last_half": 0.9}
                        for key in study.CLASS_TERMS
                    },
                }
            )
    return runs


def test_compare_heads_reads_the_pre_registered_verdicts(study: Any) -> None:
    seeds = list(range(8))
    out = study.compare_heads(made_up_runs(study, seeds), seeds, {h: 1.0 for h in study.HEADS}, "Made up")
    claim = out["differences"]["AAM - CE"]
    assert claim["gan_train"]["per_seed"] == pytest.approx([5.5, 4.5] * 4)  # percentage points
    assert claim["gan_train"]["t95"][0] > 0 and claim["gan_test"]["t95"][1] < 0
    verdicts = out["verdicts"]
    assert (verdicts["gan_train"], verdicts["gan_test"]) == ("confirmed", "refuted")
    assert verdicts["fid (secondary, lower is better)"] == "confirmed"  # FID 5 lower
    assert verdicts["normalisation (cosine - CE)"]["gan_train"] == "inconclusive"
    assert verdicts["margin (AAM - cosine)"]["gan_train"] == "helps"
    assert verdicts["margin (AAM - cosine)"]["gan_test"] == "hurts"
    assert out["figures"]["aam"]["gan_train"]["mean"] == pytest.approx(85.0)
    assert out["figures"]["ce"]["gan_test_per_class"] == pytest.approx([90.0] * 10)
    text = out["text"]
    assert "| AAM - CE | 5.0 [" in text and "GAN-train confirmed, GAN-test refuted" in text
    assert "| CE | 2.000 -> 1.000 | 30 % -> 90 % | 2.000 -> 1.000 | 30 % -> 90 % |" in text


def test_one_seed_gives_no_verdict(study: Any) -> None:
    out = study.compare_heads(made_up_runs(study, [0]), [0], {h: 1.0 for h in study.HEADS}, "One")
    assert out["verdicts"]["gan_train"] == "one seed"
    assert out["differences"]["AAM - CE"]["gan_train"]["t95"] is None


def test_tuning_picks_each_heads_weight_by_mean_gan_train(study: Any) -> None:
    runs = []
    best = {"ce": 3.0, "cosine": 1.0, "aam": 0.3}
    for head in study.HEADS:
        for weight in (0.3, 1.0, 3.0):
            for seed in (100, 101):
                gan_train = 0.9 if weight == best[head] else 0.8
                runs.append({"head": head, "weight": weight, "seed": seed, "final": {"gan_train": gan_train}})
    tuning = study.tuning_analysis(runs, [100, 101], [0.3, 1.0, 3.0])
    assert tuning["best_weight"] == best
    assert tuning["grid"]["ce"]["3"]["gan_train"]["mean"] == pytest.approx(90.0)


def test_options(study: Any, tmp_path: Path) -> None:
    quick = study.parse(["--quick", "--work", str(tmp_path)])
    assert (quick.steps, quick.seeds, quick.curve_max, quick.curve_every) == (20, [0], 20, 10)
    assert study.RESULTS.resolve() not in Path(quick.output).resolve().parents
    assert study.RESULTS.resolve() not in Path(quick.curve_output).resolve().parents
    full = study.parse(["--work", str(tmp_path)])
    assert full.seeds == list(range(8)) and full.tune_seeds == [100, 101] and full.steps is None
    assert Path(full.output) == study.RESULTS / "aam_mnist.json"
    for bad in (["--curve", "--tune"], ["--tune-seeds", "0", "100"], ["--curve-every", "700"], ["--weights", "3"]):
        with pytest.raises(SystemExit):
            study.parse(["--work", str(tmp_path), *bad])
    record = tmp_path / "curve.json"
    record.write_text(json.dumps({"chosen_steps": 1250, "flattened": True, "settings": {"width": 32}}))
    args = study.parse(["--work", str(tmp_path), "--curve-record", str(record)])
    steps, source = study.headline_steps(args)
    assert steps == 1250 and str(record) in source
    assert study.headline_steps(study.parse(["--work", str(tmp_path), "--steps", "700"]))[0] == 700
