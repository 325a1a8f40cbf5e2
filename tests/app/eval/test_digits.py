"""Tests of rankplug.app.eval.digits: Fréchet distance against closed forms, the cached reference classifier,
FID, GAN-test and GAN-train on the embedded digits."""

from __future__ import annotations

import math

import pytest
import torch

from rankplug.app.eval import digits
from rankplug.app.eval.digits import (
    CACHE_VERSION,
    DigitsClassifier,
    digits_fid,
    frechet_distance,
    gan_test,
    gan_train,
    reference_classifier,
    train_classifier,
)
from rankplug.stages.checkpoint import atomic_save, safe_load


def _random_cov(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cache = tmp_path_factory.mktemp("digits_cache")
    classifier, split = reference_classifier(16, cache_dir=cache)
    return cache, classifier, split


# --- frechet_distance ---------------------------------------------------------------------------------------


def test_frechet_identical_gaussians_is_zero():
    mu = torch.randn(5, dtype=torch.float64)
    sigma = _random_cov(5, 0)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_diagonal_closed_form():
    g = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(6, generator=g), torch.randn(6, generator=g)
    s1, s2 = torch.rand(6, generator=g) + 0.1, torch.rand(6, generator=g) * 3 + 0.1
    expected = float((mu1 - mu2).double().square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).double().sum())
    got = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(expected, rel=1e-6)


def test_frechet_one_dimensional_is_wasserstein():
    # In 1-D the Fréchet distance is (m1 - m2)^2 + (std1 - std2)^2.
    got = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]]))
    assert got == pytest.approx(9.0 + 1.0)


def test_frechet_symmetric_and_nonnegative():
    for seed in range(5):
        mu1, mu2 = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
        s1, s2 = _random_cov(8, seed), _random_cov(8, seed + 100)
        forward, backward = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
        assert forward >= 0 and backward >= 0
        assert forward == pytest.approx(backward, rel=1e-8)


def test_frechet_singular_covariances_stay_finite():
    # Rank-1 covariances (fewer samples than dimensions) must not produce NaN from sqrt of -1e-17 eigenvalues.
    v = torch.randn(10, 1, dtype=torch.float64)
    s = v @ v.T
    got = frechet_distance(torch.zeros(10), s, torch.zeros(10), s)
    assert math.isfinite(got) and got == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.zeros(10), s, torch.zeros(10), torch.zeros(10, 10)) == pytest.approx(float(s.trace()))


def test_frechet_matches_product_eigenvalues():
    # tr sqrt(S1^1/2 S2 S1^1/2) equals the sum of square roots of the eigenvalues of S1 S2.
    s1, s2 = _random_cov(4, 7), _random_cov(4, 8)
    cross = torch.linalg.eigvals(s1 @ s2).real.clamp_min(0).sqrt().sum()
    expected = float(s1.trace() + s2.trace() - 2 * cross)
    assert frechet_distance(torch.zeros(4), s1, torch.zeros(4), s2) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((torch.zeros(3, 1), torch.eye(3), torch.zeros(3), torch.eye(3)), ValueError, r"mu1 has shape \(3, 1\)"),
        ((torch.zeros(3), torch.eye(2), torch.zeros(3), torch.eye(3)), ValueError, r"sigma1 has shape \(2, 2\)"),
        ((torch.zeros(3), torch.eye(3), torch.zeros(2), torch.eye(2)), ValueError, "mu2 has shape"),
        ((torch.zeros(3), torch.eye(3), torch.zeros(3), torch.full((3, 3), math.nan)), ValueError, "finite"),
        (([0.0], torch.eye(1), torch.zeros(1), torch.eye(1)), TypeError, "mu1 must be a torch.Tensor"),
    ],
)
def test_frechet_errors(args, error, message):
    with pytest.raises(error, match=message):
        frechet_distance(*args)


# --- classifier -----------------------------------------------------------------------------------------------


def test_classifier_shapes_and_resize():
    net = DigitsClassifier()
    for size in (16, 32):
        x = torch.rand(3, 1, size, size) * 2 - 1
        assert net(x).shape == (3, 10)
        assert net.features(x).shape == (3, DigitsClassifier.feature_dim)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(2, 3, 16, 16), r"images has shape \(2, 3, 16, 16\); expected \(N, 1, S, S\)"),
        (torch.zeros(2, 1, 16, 8), r"expected \(N, 1, S, S\)"),
        (torch.zeros(16, 16), r"images has shape \(16, 16\)"),
        (torch.zeros(0, 1, 16, 16), "empty batch"),
    ],
)
def test_classifier_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        DigitsClassifier()(images)


def test_train_classifier_deterministic_and_leaves_global_rng_alone():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(40, 1, 16, 16, generator=g) * 2 - 1, torch.randint(0, 10, (40,), generator=g)
    state = torch.get_rng_state()
    a = train_classifier(images, labels, epochs=2, seed=3, batch_size=16)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_classifier(images, labels, epochs=2, seed=3, batch_size=16)
    c = train_classifier(images, labels, epochs=2, seed=4, batch_size=16)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.head.weight, c.head.weight)


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (torch.full((4,), 10), ValueError, r"labels must lie in 0\.\.9; got values in 10\.\.10"),
        (torch.tensor([0, 1, -1, 2]), ValueError, r"got values in -1\.\.2"),
        (torch.zeros(4, 1, dtype=torch.long), ValueError, r"labels has shape \(4, 1\); expected \(N,\)"),
        (torch.zeros(3, dtype=torch.long), ValueError, "labels has 3 labels but images has 4 images"),
        (torch.zeros(4), TypeError, "integer dtype"),
    ],
)
def test_train_classifier_bad_labels(labels, error, message):
    with pytest.raises(error, match=message):
        train_classifier(torch.zeros(4, 1, 16, 16), labels, epochs=1)


def test_train_classifier_bad_settings():
    images, labels = torch.zeros(4, 1, 16, 16), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="epochs must be an int >= 1; got 0"):
        train_classifier(images, labels, epochs=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        train_classifier(images, labels, lr=-1.0)
    with pytest.raises(ValueError, match="empty batch"):
        train_classifier(torch.zeros(0, 1, 16, 16), torch.zeros(0, dtype=torch.long))


# --- reference classifier and its cache ---------------------------------------------------------------------


def test_reference_accuracy_and_split(reference):
    _, classifier, split = reference
    assert split.train_images.shape == (1347, 1, 16, 16) and split.test_images.shape == (450, 1, 16, 16)
    assert gan_test(classifier, split.test_images, split.test_labels) > 0.90


def test_reference_loaded_from_cache(reference, monkeypatch):
    cache, classifier, _ = reference

    def refuse(*args, **kwargs):
        raise AssertionError("train_classifier must not run when the cache is valid")

    monkeypatch.setattr(digits, "train_classifier", refuse)
    loaded, _ = reference_classifier(16, cache_dir=cache)
    for (name, a), b in zip(classifier.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert safe_load(cache / "digits_classifier_s16_seed0.pt")["version"] == CACHE_VERSION


def test_reference_deterministic(reference, tmp_path):
    _, classifier, split = reference
    again, split_again = reference_classifier(16, cache_dir=tmp_path)
    assert torch.equal(split.test_labels, split_again.test_labels)
    for (name, a), b in zip(classifier.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_reference_cache_env_var(reference, monkeypatch):
    cache, _, _ = reference
    monkeypatch.setenv("RANKPLUG_CACHE", str(cache))
    monkeypatch.setattr(digits, "train_classifier", lambda *a, **k: pytest.fail("cache in $RANKPLUG_CACHE ignored"))
    reference_classifier(16)


def _spy(monkeypatch):
    calls = []

    def fake_train(images, labels, **kwargs):
        calls.append(kwargs)
        return DigitsClassifier().eval()

    monkeypatch.setattr(digits, "train_classifier", fake_train)
    return calls


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_reference_retrains_corrupt_cache(tmp_path, monkeypatch, kind):
    path = tmp_path / "digits_classifier_s16_seed0.pt"
    if kind == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        atomic_save(
            {"version": CACHE_VERSION, "size": 16, "seed": 0, "state_dict": DigitsClassifier().state_dict()}, path
        )
        path.write_bytes(path.read_bytes()[:200])
    calls = _spy(monkeypatch)
    with pytest.warns(RuntimeWarning, match="ignoring the digits classifier cache"):
        reference_classifier(16, cache_dir=tmp_path)
    assert len(calls) == 1
    assert safe_load(path)["version"] == CACHE_VERSION


def test_reference_retrains_stale_version(tmp_path, monkeypatch):
    path = tmp_path / "digits_classifier_s16_seed0.pt"
    atomic_save({"version": "digits-cnn-v0", "size": 16, "seed": 0, "state_dict": {}}, path)
    calls = _spy(monkeypatch)
    with pytest.warns(RuntimeWarning, match="digits-cnn-v0"):
        reference_classifier(16, cache_dir=tmp_path)
    assert len(calls) == 1
    assert safe_load(path)["version"] == CACHE_VERSION


def test_reference_retrains_mismatched_weights(tmp_path, monkeypatch):
    path = tmp_path / "digits_classifier_s16_seed0.pt"
    payload = {"version": CACHE_VERSION, "size": 16, "seed": 0, "state_dict": {"head.weight": torch.zeros(2, 2)}}
    atomic_save(payload, path)
    calls = _spy(monkeypatch)
    with pytest.warns(RuntimeWarning, match="retraining"):
        reference_classifier(16, cache_dir=tmp_path)
    assert len(calls) == 1


# --- FID, GAN-test, GAN-train ---------------------------------------------------------------------------------


def test_digits_fid_orders_real_and_noise(reference):
    _, classifier, split = reference
    real = split.train_images
    assert digits_fid(classifier, real, real.clone()) == pytest.approx(0.0, abs=1e-6)
    halves = digits_fid(classifier, real[:600], real[600:1200])
    noise = torch.rand(600, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert digits_fid(classifier, real[:600], noise) > 10 * halves


def test_digits_fid_errors(reference):
    _, classifier, split = reference
    with pytest.raises(ValueError, match="fake_images has 1 image; a covariance needs N >= 2"):
        digits_fid(classifier, split.test_images, split.test_images[:1])
    with pytest.raises(ValueError, match=r"fake_images has shape \(4, 16, 16\)"):
        digits_fid(classifier, split.test_images, torch.zeros(4, 16, 16))


def test_gan_test_real_and_shuffled(reference):
    _, classifier, split = reference
    accuracy = gan_test(classifier, split.test_images, split.test_labels)
    assert accuracy > 0.9
    shuffled = split.test_labels[torch.randperm(450, generator=torch.Generator().manual_seed(0))]
    assert gan_test(classifier, split.test_images, shuffled) < 0.25
    with pytest.raises(ValueError, match="fake_labels has 449 labels but fake_images has 450 images"):
        gan_test(classifier, split.test_images, split.test_labels[:-1])


def test_gan_train_real_and_noise(reference):
    _, _, split = reference
    real = gan_train(split.train_images[:600], split.train_labels[:600], split.test_images, split.test_labels, epochs=6)
    assert real > 0.85
    noise = torch.rand(600, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    chance = gan_train(noise, split.train_labels[:600], split.test_images, split.test_labels, epochs=6)
    assert chance < 0.3
    with pytest.raises(ValueError, match=r"test_labels must lie in 0\.\.9"):
        gan_train(noise, split.train_labels[:600], split.test_images, split.test_labels + 1)
