"""The demo report's story sentences come from the run's own numbers."""

from __future__ import annotations

from rankplug.app.demo import _story


def _run(fids: list[float], histogram: list[int]) -> dict:
    return {"stages": [{"digits_fid": f, "class_histogram": histogram} for f in fids]}


def test_story_names_the_fewest_and_most_frequent_class_of_both_runs():
    rankgan = [49, 111, 139, 82, 117, 79, 98, 42, 75, 208]
    baseline = [86, 75, 131, 108, 113, 52, 108, 51, 48, 228]
    (text,) = _story({"runs": {"rankgan": _run([77.7, 41.1, 40.9], rankgan), "baseline": _run([77.7, 50.0], baseline)}})
    assert "77.7 -> 41.1 -> 40.9" in text and "77.7 -> 50.0" in text
    assert "10 of the 10 classes" in text
    assert "fewest: class 7, 42; most: class 9, 208; an even spread is 100 each" in text
    assert "the baseline's last stage 48 to 228" in text


def test_story_counts_classes_below_two_percent_as_missing():
    histogram = [0, 10, 150, 150, 150, 140, 100, 100, 100, 100]
    (text,) = _story({"runs": {"rankgan": _run([50.0], histogram)}})
    assert "8 of the 10 classes" in text and "baseline" not in text.split("One seed")[0]
