"""The demo report's story sentences come from the run's own numbers."""

from __future__ import annotations

from rankplug.app.demo import _story

REFERENCE = {"digits_fid_train_vs_held_out": 3.2, "held_out_confidence": 0.98, "held_out_accuracy": 0.97}
SETTINGS = {"rankgan": {"margin": 10.0}}


def _run(fids: list[float], histogram: list[int], confidence: float = 0.8) -> dict:
    stages = [{"digits_fid": f, "class_histogram": histogram, "classifier_confidence": confidence} for f in fids]
    return {"stages": stages}


def _text(runs: dict) -> str:
    return "\n".join(_story({"runs": runs, "reference": REFERENCE, "settings": SETTINGS}))


def test_story_names_the_confidence_classes_and_fids_of_both_runs():
    rankgan = [49, 111, 139, 82, 117, 79, 98, 42, 75, 208]
    baseline = [86, 75, 131, 108, 113, 52, 108, 51, 48, 228]
    text = _text({"rankgan": _run([77.7, 41.1, 40.9], rankgan, 0.83), "baseline": _run([77.7, 50.0], baseline, 0.79)})
    assert "77.7 -> 41.1 -> 40.9" in text and "77.7 -> 50.0" in text
    assert "mean confidence of 0.83, against 0.98 for the real held-out digits" in text
    assert "10 of the 10 classes" in text
    assert "fewest: 7, 42; most: 9, 208; an even spread is 100 each" in text
    assert "(confidence 0.79 at the end)" in text and "Stage 1 is the same run in both" in text
    apart = _text({"rankgan": _run([77.7, 41.1], rankgan), "baseline": _run([77.9, 50.0], baseline)})
    assert "Stage 1 trains the same loss in both, set apart only by floating-point rounding" in apart
    assert "eps = 10" in text and "score 3.2" in text


def test_story_counts_classes_below_two_percent_as_missing():
    histogram = [0, 10, 150, 150, 150, 140, 100, 100, 100, 100]
    text = _text({"rankgan": _run([50.0], histogram)})
    assert "8 of the 10 classes" in text and "baseline" not in text.split("One seed")[0]
