"""experiments/mbgan_mnist.py: its pre-registered rules (collapse, the two collapse claims, the gate, the probe
claim) on made-up numbers, its settings, the untrained critic, and its tables from made-up run records (a real
smoke run trains: ``OMP_NUM_THREADS=1 python experiments/mbgan_mnist.py --quick --jobs 1``)."""

from __future__ import annotations

import doctest
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.project._experiments import import_experiment

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"


@pytest.fixture(scope="module")
def study() -> Any:
    return import_experiment("mbgan_mnist")


def test_the_doctests_pass(study: Any) -> None:
    result = doctest.testmod(study, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 15 and result.failed == 0


def test_collapse_rule_at_its_thresholds(study: Any) -> None:
    assert study.collapse_reasons(0.5, 0.25, False) == []  # the thresholds themselves are not collapse
    assert study.collapse_reasons(0.501, 0.9, False) == ["top-class share 0.501 > 0.5"]
    assert study.collapse_reasons(0.1, 0.249, False) == ["diversity ratio 0.249 < 0.25"]
    assert study.collapse_reasons(0.1, 0.9, True) == ["non-finite"]


def test_diversity_ratio_on_tiny_tensors(study: Any) -> None:
    data = torch.tensor([[[-1.0, 1.0]], [[1.0, -1.0]], [[-1.0, -1.0]], [[1.0, 1.0]]])  # (4, 1, 2)
    assert study.diversity_ratio(data, data) == pytest.approx(1.0)
    assert study.diversity_ratio(0.2 * data, data) == pytest.approx(0.2)
    assert study.diversity_ratio(data[:1].expand(4, 1, 2), data) == 0.0  # one image repeated: no spread
    sd = torch.tensor([[0.0, 3.0], [2.0, 3.0]]).std(0).mean() / data.flatten(1).std(0).mean()
    assert study.diversity_ratio(torch.tensor([[0.0, 3.0], [2.0, 3.0]]), data) == pytest.approx(float(sd))


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"a0.2": 3, "a2": 3, "a20": 1, "a200": 1}, "confirmed"),
        ({"a0.2": 4, "a2": 4, "a20": 0, "a200": 0}, "confirmed"),
        ({"a0.2": 1, "a2": 1, "a20": 0, "a200": 0}, "refuted"),  # the small alphas do not collapse
        ({"a0.2": 4, "a2": 4, "a20": 0, "a200": 3}, "refuted"),  # a large alpha collapses
        ({"a0.2": 4, "a2": 2, "a20": 0, "a200": 0}, "mixed"),
        ({"a0.2": 4, "a2": 0, "a20": 0, "a200": 0}, "mixed"),  # one small alpha collapses, the other not
        ({"a0.2": 4, "a2": 4, "a20": 2, "a200": 0}, "mixed"),
    ],
)
def test_claim_verdict_on_four_seeds(study: Any, counts: dict[str, int], expected: str) -> None:
    collapsed = {arm: (c, 4) for arm, c in counts.items()}
    assert study.claim_verdict(collapsed, ["a0.2", "a2"], ["a20", "a200"]) == expected


def test_the_claims_name_the_sweeps_arms(study: Any) -> None:
    for claim in study.CLAIMS.values():
        assert set(claim["collapse"]) | set(claim["stable"]) <= set(study.SWEEP_ARMS)
    assert study.CLAIMS["K"]["stable"] == (study.REFERENCE,)
    assert {study.arm_settings(a) for a in study.SWEEP_ARMS} == {
        (0.2, 500),
        (2.0, 500),
        (20.0, 500),
        (200.0, 500),
        (20.0, 5),
        (20.0, 50),
    }


def test_gate_and_probe_rules(study: Any) -> None:
    assert study.choose_setting({"10x1": 3.0, "10x4": 2.99}) == ("10x1", ["10x1"])  # >= 3 passes
    assert study.choose_setting({"10x1": 5.0, "100x4": 5.0}) == ("10x1", ["10x1", "100x4"])  # a tie: the first
    assert study.choose_setting({"10x1": float("nan"), "100x1": -4.0}) == (None, [])
    assert study.probe_verdict({"mean": 0.0, "t95": [-1.99, 2.0]}) == "confirmed"
    assert study.probe_verdict({"mean": -3.0, "t95": [-4.0, -2.01]}) == "refuted"
    assert study.probe_verdict({"mean": -2.0, "t95": [-3.0, -1.0]}) == "inconclusive"
    assert study.probe_verdict({"mean": float("nan"), "t95": None}) == "not measured"


def test_labelled_subsets_are_balanced_fixed_and_nested(study: Any) -> None:
    labels = study.probe_data().train_labels
    assert labels.shape == (4000,)
    small, large = study.balanced_subset(labels, 10), study.balanced_subset(labels, 100)
    assert torch.bincount(labels[small], minlength=10).tolist() == [10] * 10
    assert torch.bincount(labels[large], minlength=10).tolist() == [100] * 10
    assert set(small.tolist()) <= set(large.tolist())
    assert torch.equal(small, study.balanced_subset(labels, 10))
    assert not torch.equal(small, study.balanced_subset(labels, 10, seed=1))


def test_settings_are_the_preset_and_dcgan_differs_only_in_its_loss(study: Any) -> None:
    from rankplug.app.training import TrainConfig

    config = study.mbgan_config("mbgan-a0.2-k50", 3, 800)
    preset = TrainConfig.from_preset("mbgan")
    assert (config.method, config.alpha, config.embed_dim, config.margin_norm) == ("mbgan", 0.2, 50, "mean")
    assert (config.data, config.size, config.width, config.stages, config.steps_per_stage) == ("mnist", 16, 64, 1, 800)
    assert (config.seed, config.log_every) == (3, import_experiment("mnist_study").log_every_for(800))
    for key in ("critic_norm", "batch_size", "latent", "optimizer", "lr_d", "lr_g", "beta1", "beta2", "n_critic"):
        assert getattr(config, key) == getattr(preset, key)
    dcgan = study.dcgan_config(3, 800).to_dict()
    mbgan = study.mbgan_config(study.REFERENCE, 3, 800).to_dict()
    assert {k for k in dcgan if dcgan[k] != mbgan[k]} <= {"method", "alpha", "embed_dim", "margin_norm"}
    assert dcgan["method"] == "dcgan"


def test_the_untrained_critic_is_the_trainers_and_shared_by_both_methods(study: Any) -> None:
    dcgan = study.untrained_critic(study.dcgan_config(0, 20))
    mbgan = study.untrained_critic(study.mbgan_config(study.REFERENCE, 0, 20))
    other = study.untrained_critic(study.dcgan_config(1, 20))
    a, b, c = (m.trunk.state_dict() for m in (dcgan, mbgan, other))
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed: the same trunk whatever the head
    assert not all(torch.equal(a[k], c[k]) for k in a)
    torch.manual_seed(0)
    from rankplug.app.training import Discriminator, Generator

    Generator(32, 64, 16, 1)  # the trainer builds the generator first, from the same RNG
    rebuilt = Discriminator(64, 16, 1, norm="batch").trunk.state_dict()
    assert all(torch.equal(a[k], rebuilt[k]) for k in a)


def _made_up_run(arm: str, seed: int, *, collapsed: bool, fid: float, accuracy: float) -> dict[str, Any]:
    share = 0.9 if collapsed else 0.12
    return {
        "arm": arm,
        "seed": seed,
        "train": {"stages": [{"stage": 1, "hinges": {}}]},
        "samples": {
            "fid": fid,
            "entropy": 0.2 if collapsed else 0.99,
            "top_share": share,
            "diversity": 0.8,
            "non_finite": False,
            "class_histogram": [100] * 10,
            "collapsed": collapsed,
            "collapse_reasons": ["top-class share 0.9 > 0.5"] if collapsed else [],
            "hinges": {
                "active_triplet": {"first_half": 0.6, "last_half": 0.01 if "a0.2" in arm else 0.5},
                "margin_ratio": {"first_half": 1.2, "last_half": 0.9},
            },
        },
        "probes": {"10x1": {"accuracy": accuracy}},
    }


def test_sweep_and_headline_tables_from_made_up_runs(study: Any) -> None:
    seeds = [0, 1, 2, 3]
    collapsing = {"mbgan-a0.2-k500", "mbgan-a2-k500"}
    runs = [
        _made_up_run(
            arm, s, collapsed=arm in collapsing, fid=100.0 + 10 * s + (50 if arm in collapsing else 0), accuracy=0.8
        )
        for arm in study.SWEEP_ARMS
        for s in seeds
    ]
    sweep = study.analyse_sweep(runs, study.SWEEP_ARMS, seeds)
    assert sweep["verdicts"]["alpha"]["verdict"] == "confirmed"
    assert sweep["verdicts"]["K"]["verdict"] == "refuted"  # K = 5 and 50 did not collapse
    assert sweep["verdicts"]["hinges"] == {"dead": ["mbgan-a0.2-k500"], "saturated": []}
    assert sweep["per_arm"]["mbgan-a2-k500"]["fid_minus_reference"]["mean"] == pytest.approx(50.0)
    assert sweep["per_arm"][study.REFERENCE]["fid_minus_reference"] is None
    assert "| mbgan-a0.2-k500 | 4 / 4 | 165.0 [" in sweep["text"]
    assert "**confirmed** (collapsed: mbgan-a0.2-k500 4/4, mbgan-a2-k500 4/4" in sweep["text"]

    points = {
        study.REFERENCE: [0.80, 0.82, 0.79, 0.81],
        "dcgan": [0.805, 0.81, 0.80, 0.80],
        "untrained": [0.6, 0.62, 0.6, 0.62],
    }
    head = [_made_up_run(arm, s, collapsed=False, fid=90.0, accuracy=points[arm][s]) for arm in points for s in seeds]
    h = study.headline_analysis(head, seeds, "10x1", {"accuracy": 0.7})
    diff = h["differences_points"][f"{study.REFERENCE} - dcgan"]
    assert diff["per_seed"] == pytest.approx([-0.5, 1.0, -1.0, 1.0])
    assert h["verdict"] == "confirmed" and math.isclose(h["pixels_points"], 70.0)
    assert "| untrained critic | 61.0 [59.2, 62.8] | - |" in study.headline_text(h, seeds)

    gate_runs = [_made_up_run("dcgan", s, collapsed=False, fid=90.0, accuracy=0.70 + 0.01 * s) for s in (0, 1)]
    gate_runs += [_made_up_run("untrained", s, collapsed=False, fid=0.0, accuracy=0.67) for s in (0, 1)]
    gate = study.gate_analysis(gate_runs, [0, 1], [(10, 1)], {"10": {"accuracy": 0.6}})
    assert gate["per_setting"]["10x1"]["mean_difference_points"] == pytest.approx(3.5)
    assert gate["passed"] and gate["chosen"] == {"labels_per_class": 10, "grid": 1}
