"""Quick-mode tests of the conditional demo (rankplug.demo.conditional): AAM vs cross-entropy auxiliary classifier."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from rankplug.demo import conditional as cond
from rankplug.demo.conditional import (
    HEADS,
    ConditionalDiscriminator,
    ConditionalGenerator,
    class_samples,
    compare_heads,
    evaluate_conditional,
    json_ready,
    real_reference,
    train_conditional,
)
from rankplug.eval.digits import DigitsSplit, digits_split, gan_test, reference_classifier
from rankplug.heads import AAMAuxClassifier

QUICK: dict[str, Any] = {"steps": 3, "batch_size": 16, "n_critic": 1, "width": 8, "nz": 8, "log_every": 1}


@pytest.fixture(scope="module")
def split() -> DigitsSplit:
    return digits_split(16)


@pytest.fixture(scope="module")
def data(split: DigitsSplit) -> dict[str, torch.Tensor]:
    return {"images": split.train_images[:128], "labels": split.train_labels[:128]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("digits_cache")
    reference_classifier(16, cache_dir=path)
    return path


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in module.state_dict().values()]


def _same(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(_params(first), _params(second)))


def test_networks_shapes_heads_and_no_batchnorm_in_critic() -> None:
    G = ConditionalGenerator(nz=8, ngf=8, size=32)
    images = G(torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 9]))
    assert images.shape == (5, 1, 32, 32) and images.abs().max() <= 1
    for head, kind in (("aam", AAMAuxClassifier), ("ce", torch.nn.Linear)):
        D = ConditionalDiscriminator(head, ndf=8, size=32)
        scores, logits = D(images)
        assert scores.shape == (5, 1) and logits.shape == (5, 10)
        assert isinstance(D.cls, kind)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in D.modules())
    assert ConditionalDiscriminator("ce", ndf=8).cls.bias is None  # StarGAN's bias-free class map (MATH §6)


def test_aam_head_trains_both_terms_with_the_margin() -> None:
    # MATH §6: the AAM loss (with its margin) replaces cross entropy for real images and for fakes alike.
    D = ConditionalDiscriminator("aam", ndf=8, aam_margin=0.5)
    logits = D(torch.randn(4, 1, 16, 16))[1]
    labels = torch.tensor([0, 1, 2, 3])
    margin_free = torch.nn.functional.cross_entropy(logits, labels)
    assert D.class_loss(logits, labels) > margin_free
    assert isinstance(D.cls, AAMAuxClassifier)
    D.cls.margin = 0.0
    assert torch.allclose(D.class_loss(logits, labels), margin_free)


@pytest.mark.parametrize("head", HEADS)
def test_each_head_runs_with_finite_json_ready_history(head: str, data: dict[str, torch.Tensor]) -> None:
    result = train_conditional(head, **data, **QUICK)
    assert result["head"] == head and result["generator_steps"] == 3 and result["steps_this_call"] == 3
    assert not result["resumed"] and result["settings"]["steps"] == 3
    history = result["history"]
    assert history["step"] == [1, 2, 3]
    for key, values in history.items():
        assert len(values) == 3 and all(math.isfinite(v) for v in values), key
    assert all(0 <= v <= 1 for v in history["acc_real"] + history["acc_fake"])
    assert isinstance(result["generator"], ConditionalGenerator) and not result["generator"].training
    json.dumps(json_ready(result))


def test_deterministic_for_a_seed_and_leaves_global_rng_alone(data: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = train_conditional("aam", **data, **QUICK, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    second = train_conditional("aam", **data, **QUICK, seed=3)
    other = train_conditional("aam", **data, **QUICK, seed=4)
    assert first["history"] == second["history"]
    assert _same(first["generator"], second["generator"])
    assert not _same(first["generator"], other["generator"])


def test_resume_continues_bit_for_bit(data: dict[str, torch.Tensor], tmp_path: Path) -> None:
    settings = dict(QUICK, steps=4)
    straight = train_conditional("ce", **data, **settings)
    part = train_conditional("ce", **data, **dict(settings, steps=2), directory=tmp_path)
    assert not part["resumed"] and (tmp_path / "conditional.pt").is_file()
    rest = train_conditional("ce", **data, **settings, directory=tmp_path)
    assert rest["resumed"] and rest["steps_this_call"] == 2 and rest["generator_steps"] == 4
    assert rest["history"] == straight["history"]
    assert _same(rest["generator"], straight["generator"])
    assert _same(rest["discriminator"], straight["discriminator"])
    again = train_conditional("ce", **data, **settings, directory=tmp_path)
    assert again["resumed"] and again["steps_this_call"] == 0
    with pytest.raises(ValueError, match="written with settings"):
        train_conditional("ce", **data, **dict(settings, batch_size=8), directory=tmp_path)
    with pytest.raises(ValueError, match="written with settings"):
        train_conditional("aam", **data, **settings, directory=tmp_path)
    with pytest.raises(ValueError, match="steps must be >= the 4 steps"):
        train_conditional("ce", **data, **dict(settings, steps=2), directory=tmp_path)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"head": "softmax"}, ValueError, "head must be one of 'aam', 'ce'"),
        ({"head": 1}, TypeError, "head must be a str"),
        ({"images": [[0.0]]}, TypeError, "images must be a torch.Tensor"),
        (
            {"images": torch.zeros(4, 1, 8, 8)},
            ValueError,
            r"images has shape \(4, 1, 8, 8\); expected \(M, C, 16, 16\)",
        ),
        ({"labels": torch.zeros(4)}, TypeError, "labels must have an integer dtype"),
        ({"labels": torch.zeros(3, dtype=torch.long)}, ValueError, r"labels has shape \(3,\); expected \(4,\)"),
        ({"labels": torch.full((4,), 10)}, ValueError, r"labels must lie in 0..9"),
        ({"steps": 0}, ValueError, "steps must be an int >= 1"),
        ({"steps": 2.0}, TypeError, "steps must be an int >= 1"),
        ({"n_critic": 0}, ValueError, "n_critic must be an int >= 1"),
        ({"size": 24}, ValueError, r"size must be one of \(16, 32\)"),
        ({"seed": "0"}, TypeError, "seed must be an int"),
        ({"lr_g": -1.0}, ValueError, "lr_g must be > 0"),
        ({"cls_weight": -1.0}, ValueError, "cls_weight must be >= 0"),
        ({"aam_margin": 2.0}, ValueError, r"aam_margin must be an angle in radians in \[0, pi/2\)"),
        ({"aam_scale": 0.0}, ValueError, "aam_scale must be > 0"),
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"directory": 3}, TypeError, "directory must be a str"),
    ],
)
def test_bad_arguments_raise_clear_errors(change: dict[str, Any], error: type[Exception], match: str) -> None:
    kwargs: dict[str, Any] = {"head": "aam", "images": torch.zeros(4, 1, 16, 16), "labels": torch.zeros(4).long()}
    kwargs.update(QUICK)
    kwargs.update(change)
    head = kwargs.pop("head")
    with pytest.raises(error, match=match):
        train_conditional(head, **kwargs)


def test_evaluation_errors_and_sample_layout() -> None:
    G = ConditionalGenerator(nz=8, ngf=8)
    with pytest.raises(TypeError, match="generator must be a ConditionalGenerator"):
        class_samples(torch.nn.Linear(2, 2), per_class=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="samples_per_class must be >= 2"):
        evaluate_conditional(G, samples_per_class=1)
    with pytest.raises(TypeError, match="compare_heads sets"):
        compare_heads(steps=1, head="aam")
    samples = class_samples(G, per_class=3, seed=1)
    assert samples.shape == (10, 3, 1, 16, 16)
    assert torch.equal(samples, class_samples(G, per_class=3, seed=1))
    # the same z in every row, so the rows differ only through the label
    assert not torch.equal(samples[0], samples[1])


def test_conditioning_is_learned(split: DigitsSplit, cache: Path) -> None:
    """Fails if the label does not reach G or the classification terms use the wrong targets.

    A short run on the training split; the real-trained reference classifier must then recognise the requested
    class of the samples far above chance (0.1), and relabelling the very same samples must destroy that.
    """
    # a large learning rate makes 120 steps enough (about 0.95 here with seeds 0 and 1; chance is 0.1)
    result = train_conditional(
        "aam",
        images=split.train_images,
        labels=split.train_labels,
        steps=120,
        batch_size=32,
        n_critic=1,
        width=16,
        lr_d=1e-3,
        lr_g=1e-3,
        log_every=40,
        seed=0,
    )
    classifier, _ = reference_classifier(16, cache_dir=cache)
    samples = class_samples(result["generator"], per_class=20, seed=0).flatten(0, 1)
    labels = torch.arange(10).repeat_interleave(20)
    accuracy = gan_test(classifier, samples, labels)
    shuffled = gan_test(classifier, samples, (labels + 1) % 10)
    assert accuracy > 0.4, accuracy
    assert shuffled < accuracy - 0.3


def test_compare_heads_and_evaluation_structure(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = digits_split(16)
    # a few training digits keep the quick mode quick; the evaluation still uses the full held-out split
    monkeypatch.setattr(
        cond,
        "digits_split",
        lambda size, seed=0: DigitsSplit(small.train_images[:64], small.train_labels[:64], *small[2:]),
    )
    events: list[tuple[str, int]] = []
    result = compare_heads(
        steps=2,
        seed=0,
        samples_per_class=4,
        cache_dir=cache,
        directory=tmp_path,
        callback=lambda head, record: events.append((head, record["step"])),
        batch_size=8,
        n_critic=1,
        width=8,
        log_every=1,
    )
    assert set(result["runs"]) == set(HEADS)
    assert events == [("aam", 1), ("aam", 2), ("ce", 1), ("ce", 2)]
    assert (tmp_path / "aam" / "conditional.pt").is_file() and (tmp_path / "ce" / "conditional.pt").is_file()
    for head in HEADS:
        metrics = result["runs"][head]["metrics"]
        assert 0 <= metrics["gan_test"] <= 1 and 0 <= metrics["gan_train"] <= 1 and metrics["digits_fid"] >= 0
        assert len(metrics["gan_test_per_class"]) == 10 and metrics["num_samples"] == 40
    reference = result["reference"]
    assert reference == real_reference(cache_dir=cache)
    assert reference["classifier_accuracy"] > 0.9 and reference["digits_fid"] < 50
    plain = json_ready(result)
    assert "generator" not in plain["runs"]["aam"]
    json.dumps(plain)


def test_module_exports() -> None:
    assert set(cond.__all__) <= set(dir(cond))
