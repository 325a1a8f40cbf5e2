"""rankplug.app.eval.fidelity and rankplug.app.eval.reference: the paper metrics through torch-fidelity (issue 16).

- The metrics on fixed features, against reference implementations written here: the Fréchet distance against
  TTUR's scipy ``sqrtm`` formula and torch-fidelity's own, to 1e-6; KID against the unbiased MMD^2 as a loop, and
  unbiased (mean 0) on two samples of one distribution; precision/recall and the Inception Score against loops.
- The reference cache by content hash, with a stand-in extractor that counts its calls (no network).
- The network path, with a weights file the test builds (tests/_fid_weights.py): the numbers equal torch-fidelity's
  ``calculate_metrics`` on the same images and weights.
- Hostile files: a weights file is read once with ``weights_only=True`` and torch-fidelity never sees its path; a
  planted, edited, truncated or linked cache entry is recomputed with a warning; references with statistics that
  are no covariance, non-finite values, wrong dtypes, lying or oversized headers, truncated archives, or images
  over the pixel bound are refused, naming the file, before anything large is allocated or decoded.

The tests that need torch-fidelity skip when it cannot be imported, unless ``RANKPLUG_REQUIRE_INCEPTION=1`` (set by
CI), where they fail.
"""

from __future__ import annotations

import importlib
import math
import os
import types
from pathlib import Path

import pytest
import torch

from rankplug.app.eval import fidelity as fidelity_module
from rankplug.app.eval import reference_files as reference_files_module
from rankplug.app.eval.fidelity import (
    INCEPTION_WEIGHTS_ENV,
    FidelityExtractor,
    InceptionFeatures,
    InceptionWeightsNotFound,
    fid_from_features,
    fidelity_weights,
    inception_score,
    kernel_inception_distance,
    minimum_samples,
    paper_metrics,
    parse_metrics,
    precision_recall,
    read_inception_weights,
)
from rankplug.app.eval.reference import (
    Reference,
    ReferenceSetError,
    check_statistics,
    load_reference,
    reference_key,
    to_uint8,
)
from rankplug.errors import CheckpointError
from tests._fid_weights import write_random_fid_inception

REQUIRED = os.environ.get("RANKPLUG_REQUIRE_INCEPTION") == "1"


def _import_or_skip(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except (ImportError, RuntimeError, OSError) as error:  # a mismatched torchvision raises RuntimeError / OSError
        if REQUIRED:
            pytest.fail(f"RANKPLUG_REQUIRE_INCEPTION=1 but {name} cannot be imported: {error!r}")
        pytest.skip(f"{name} cannot be imported: {error!r}")


@pytest.fixture
def fidelity() -> types.ModuleType:
    return _import_or_skip("torch_fidelity")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No user weights variable, an empty torch hub, and a private rankplug cache."""
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("RANKPLUG_CACHE", str(tmp_path / "cache"))


def _gaussian_features(n: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / math.sqrt(dim)
    return (torch.randn(n, dim, generator=generator, dtype=torch.float64) @ mixing) * scale + shift


# ---------------------------------------------------------------------------------------------------------------
# The metrics on fixed features.


def _ttur_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """TTUR's fid.py / pytorch-fid: numpy statistics and scipy's sqrtm of sigma1 sigma2."""
    np = pytest.importorskip("numpy")
    linalg = pytest.importorskip("scipy.linalg")
    r, f = real.numpy(), fake.numpy()
    mu1, mu2 = r.mean(axis=0), f.mean(axis=0)
    sigma1, sigma2 = np.cov(r, rowvar=False), np.cov(f, rowvar=False)
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize(("n_real", "n_fake", "dim"), [(400, 300, 64), (50, 500, 32), (3000, 2500, 16)])
def test_frechet_distance_matches_ttur_and_torch_fidelity_to_1e6(fidelity, n_real, n_fake, dim):
    real = _gaussian_features(n_real, dim, seed=1)
    fake = _gaussian_features(n_fake, dim, seed=2, shift=0.3, scale=1.4)
    ours = fid_from_features(real.mean(0), torch.cov(real.T), fake)
    assert ours > 1.0  # a real distance, not a degenerate 0
    assert ours == pytest.approx(_ttur_fid(real, fake), abs=1e-6, rel=0)
    assert ours == pytest.approx(_fidelity_fid(real, fake), abs=1e-6, rel=0)


def test_frechet_distance_with_fewer_generated_features_than_dimensions(fidelity):
    # 40 generated features in 64 dimensions: a singular covariance. rankplug takes the trace in the 40 x 40 space
    # (exact); torch-fidelity's eigenvalues of the singular 64 x 64 product carry ~1e-8 relative error, so the two
    # agree to that, and the 64 x 64 route of rankplug.app.eval.frechet_distance does too.
    from rankplug.app.eval import frechet_distance

    real, fake = _gaussian_features(300, 64, seed=1), _gaussian_features(40, 64, seed=2, shift=0.3, scale=1.4)
    ours = fid_from_features(real.mean(0), torch.cov(real.T), fake)
    assert ours == pytest.approx(_fidelity_fid(real, fake), rel=1e-7)
    assert ours == pytest.approx(
        frechet_distance(real.mean(0), torch.cov(real.T), fake.mean(0), torch.cov(fake.T)), rel=1e-7
    )


def _fidelity_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    stats = [{"mu": x.mean(0).numpy(), "sigma": torch.cov(x.T).numpy()} for x in (real, fake)]
    return float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)["frechet_inception_distance"])


def test_fid_is_zero_for_the_same_set_and_its_example_holds():
    features = _gaussian_features(100, 16, seed=3)
    assert fid_from_features(features.mean(0), torch.cov(features.T), features) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"real_mu has shape \(3,\).*expected \(16,\)"):
        fid_from_features(torch.zeros(3), torch.eye(3), features)


def _unbiased_mmd2_loop(x: torch.Tensor, y: torch.Tensor) -> float:
    """Binkowski et al. 2018, Eq. 4, with k(a, b) = (a.b / d + 1)^3, as plain loops."""
    m, d = x.shape[0], x.shape[1]

    def k(a: torch.Tensor, b: torch.Tensor) -> float:
        return (float(a @ b) / d + 1) ** 3

    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    across = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2 * across / (m * m)


def test_kid_equals_the_unbiased_mmd_as_a_loop(fidelity):
    real = _gaussian_features(12, 6, seed=4).float()
    fake = _gaussian_features(12, 6, seed=5, shift=0.5).float()
    # One subset of every feature: a permutation of both sets, which the MMD does not see.
    kid, std = kernel_inception_distance(real, fake, subsets=1, subset_size=12)
    assert kid == pytest.approx(_unbiased_mmd2_loop(real.double(), fake.double()), rel=1e-5)
    assert std == 0.0


def test_kid_is_unbiased_on_two_samples_of_one_distribution(fidelity):
    # E[MMD^2_u] = 0 when both samples come from one distribution. 300 independent pairs of 40 features: the mean
    # of the estimates must lie within 4 standard errors of 0, while the biased V-statistic (the same sums with
    # the diagonal kept) sits far above it, so the check can tell the two apart.
    unbiased, biased = [], []
    spread = torch.linspace(0.5, 2.0, 8)  # one fixed, anisotropic Gaussian for both samples
    for trial in range(300):
        x = torch.randn(40, 8, generator=torch.Generator().manual_seed(2 * trial)) * spread
        y = torch.randn(40, 8, generator=torch.Generator().manual_seed(2 * trial + 1)) * spread
        unbiased.append(kernel_inception_distance(x, y, subsets=1, subset_size=40)[0])
        kxx, kyy, kxy = ((a.double() @ b.double().T / 8 + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        biased.append(float(kxx.mean() + kyy.mean() - 2 * kxy.mean()))
    values = torch.tensor(unbiased, dtype=torch.float64)
    standard_error = float(values.std() / math.sqrt(len(unbiased)))
    assert abs(float(values.mean())) < 4 * standard_error
    assert float(torch.tensor(biased).mean()) > 20 * standard_error
    assert (values < 0).any()  # unbiased estimates of 0 are negative about half the time


def test_kid_separates_distributions_and_checks_its_arguments(fidelity):
    real, fake = _gaussian_features(200, 8, seed=6), _gaussian_features(200, 8, seed=7, shift=1.0)
    assert kernel_inception_distance(real, fake, subsets=10, subset_size=100)[0] > 0.1
    with pytest.raises(ValueError, match=r"fake_features has shape \(50, 8\); expected \(N, D\) with N >= 100"):
        kernel_inception_distance(real, fake[:50], subset_size=100)


def _precision_recall_loop(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019, Eq. 1-2, as plain loops over pairs."""

    def radius(points: torch.Tensor, i: int) -> float:
        return sorted(float((points[i] - points[j]).norm()) for j in range(points.shape[0]))[k]  # [0] is itself

    def inside(sample: torch.Tensor, points: torch.Tensor) -> bool:
        return any(float((sample - points[i]).norm()) <= radius(points, i) for i in range(points.shape[0]))

    precision = sum(inside(fake[j], real) for j in range(fake.shape[0])) / fake.shape[0]
    recall = sum(inside(real[i], fake) for i in range(real.shape[0])) / real.shape[0]
    return precision, recall


def test_precision_recall_match_the_definition_and_are_not_swapped(fidelity):
    real = _gaussian_features(30, 4, seed=8).float()
    fake = (_gaussian_features(20, 4, seed=9) * 0.3).float()  # concentrated inside the real spread
    precision, recall = precision_recall(real, fake)
    assert (precision, recall) == pytest.approx(_precision_recall_loop(real, fake, 3), abs=1e-6)
    assert precision > 0.9 > 0.6 > recall  # the generated set covers little of the real one


def test_inception_score_matches_the_definition(fidelity):
    logits = torch.randn(40, 7, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    p = logits.softmax(dim=1)
    marginal = p.mean(dim=0)
    expected = math.exp(float(sum((p[i] * (p[i] / marginal).log()).sum() for i in range(40)) / 40))
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx(expected, rel=1e-9) and std == 0.0
    assert inception_score(torch.eye(5).repeat(4, 1) * 60, splits=1)[0] == pytest.approx(5.0, rel=1e-6)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: parse_metrics("fid,lpips"), "metrics must be a comma-separated list of fid, is, kid, prc"),
        (lambda: parse_metrics(""), "metrics must be a comma-separated list"),
        (lambda: to_uint8(torch.zeros(2, 2, 4, 4)), r"images has shape \(2, 2, 4, 4\); expected \(N, C, H, W\)"),
        (lambda: to_uint8(torch.zeros(2, 3, 4, 4, dtype=torch.int32)), "float in \\[-1, 1\\] or uint8"),
    ],
)
def test_bad_settings_are_named(call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()


def test_metric_names_and_minimum_samples():
    assert parse_metrics("prc,fid,fid") == ("fid", "prc")
    assert parse_metrics(["is"]) == ("is",)
    assert [minimum_samples(m) for m in (("fid",), ("kid",), ("prc",), ("fid", "is"))] == [2, 2, 4, 10]


def test_to_uint8_is_what_a_png_file_holds():
    images = torch.linspace(-1.2, 1.2, 50).view(2, 1, 5, 5)
    pixels = to_uint8(images)
    assert pixels.shape == (2, 3, 5, 5) and pixels.dtype == torch.uint8
    expected = images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)  # rankplug sample's PNG conversion
    assert torch.equal(pixels[:, 1:2], expected) and torch.equal(pixels[:, 0], pixels[:, 2])
    assert torch.equal(to_uint8(pixels), pixels)


def test_statistics_only_reference_refuses_kid_and_prc():
    reference = Reference(torch.zeros(4), torch.eye(4), None, 0, "k", "stats.npz (statistics)")
    fake = InceptionFeatures(torch.randn(12, 4, dtype=torch.float64), torch.randn(12, 6))
    with pytest.raises(ReferenceSetError, match=r"stats.npz \(statistics\) holds statistics \(mu, sigma\) only"):
        paper_metrics(reference, fake, ("fid", "kid"))
    assert set(paper_metrics(reference, fake, ("fid",))) == {"fid", "seconds"}


# ---------------------------------------------------------------------------------------------------------------
# The reference set and its cache, with a stand-in extractor.


class CountingExtractor:
    """Stands in for FidelityExtractor: features are per-channel means and spreads, so content decides them."""

    def __init__(self, weights_sha256: str = "w" * 64) -> None:
        self.weights_sha256 = weights_sha256
        self.batch_size = 3
        self.images_seen = 0

    def extract(self, batches, *, total=None, progress=False, desc=""):
        pools = []
        for batch in batches:
            assert batch.dtype == torch.uint8 and batch.shape[1] == 3
            self.images_seen += batch.shape[0]
            stats = torch.cat([batch.float().mean(dim=(2, 3)), batch.float().std(dim=(2, 3))], dim=1)
            pools.append(torch.cat([stats, torch.zeros(batch.shape[0], 2048 - 6)], dim=1))
        pool = torch.cat(pools)
        return InceptionFeatures(pool, torch.zeros(pool.shape[0], 1008))


def _write_pngs(folder: Path, images: torch.Tensor) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for k, pixels in enumerate(to_uint8(images).permute(0, 2, 3, 1).numpy()):
        Image.fromarray(pixels).save(folder / f"{k:03d}.png")
    return folder


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_reference_features_are_computed_once_per_content_and_weights(tmp_path):
    images = _images(7, seed=0)
    first, copy = _write_pngs(tmp_path / "a", images), _write_pngs(tmp_path / "elsewhere" / "b", images)
    extractor = CountingExtractor()
    reference = load_reference(first, extractor)
    assert extractor.images_seen == 7 and reference.num_images == 7 and reference.features is not None
    assert reference.key == reference_key(first, extractor.weights_sha256)
    again = load_reference(copy, extractor)  # the same images elsewhere: read from the cache
    assert extractor.images_seen == 7 and again.key == reference.key
    assert torch.equal(again.features, reference.features) and torch.equal(again.sigma, reference.sigma)
    cached = list((tmp_path / "cache" / "fidelity").glob("*.npz"))
    assert [path.stem for path in cached] == [reference.key]
    other_weights = CountingExtractor("v" * 64)
    load_reference(first, other_weights)
    assert other_weights.images_seen == 7  # another weights file: recomputed
    changed = images.clone()
    changed[3, 0, 2, 2] = -changed[3, 0, 2, 2]
    load_reference(_write_pngs(tmp_path / "changed", changed), extractor)
    assert extractor.images_seen == 14  # one changed pixel: recomputed


def test_npz_images_tensors_and_folders_give_the_same_features(tmp_path):
    np = pytest.importorskip("numpy")
    images = _images(5, seed=1)
    pixels = to_uint8(images)
    sources = {
        "folder": _write_pngs(tmp_path / "pngs", images),
        "float npz": tmp_path / "float.npz",
        "uint8 NHWC npz": tmp_path / "nhwc.npz",
        "tensor": images,
    }
    np.savez(sources["float npz"], images=images.numpy())  # as rankplug sample writes
    np.savez(sources["uint8 NHWC npz"], x_train=pixels.permute(0, 2, 3, 1).numpy())  # one array, any name
    features = {name: load_reference(source, CountingExtractor()).features for name, source in sources.items()}
    for name, value in features.items():
        assert torch.equal(value, features["tensor"]), name


def test_statistics_and_feature_files_are_references_too(tmp_path):
    np = pytest.importorskip("numpy")
    features = torch.randn(6, 2048, generator=torch.Generator().manual_seed(2))
    np.savez(tmp_path / "features.npz", features=features.numpy())
    from_features = load_reference(tmp_path / "features.npz", CountingExtractor())
    assert torch.equal(from_features.features, features) and from_features.num_images == 6
    np.savez(tmp_path / "stats.npz", mu=from_features.mu.numpy(), sigma=from_features.sigma.numpy())
    stats = load_reference(tmp_path / "stats.npz", CountingExtractor())
    assert stats.features is None and torch.equal(stats.mu, from_features.mu) and "statistics" in stats.source


def test_a_damaged_cache_file_is_recomputed_with_a_warning(tmp_path):
    folder = _write_pngs(tmp_path / "a", _images(4, seed=3))
    extractor = CountingExtractor()
    key = load_reference(folder, extractor).key
    (tmp_path / "cache" / "fidelity" / f"{key}.npz").write_bytes(b"not an npz")
    with pytest.warns(RuntimeWarning, match="damaged reference cache"):
        load_reference(folder, extractor)
    assert extractor.images_seen == 8


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda d: d / "missing", "no such file or folder"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "holds no images"),
        (lambda d: (d / "x.txt").write_text("x") and d / "x.txt", "neither a folder of images nor an .npz"),
        (lambda d: _npz(d / "two.npz", a=[1.0], b=[2.0]), r"holds \['a', 'b'\]; expected 'images', 'features'"),
        (lambda d: _npz(d / "range.npz", images=torch.full((2, 3, 4, 4), 3.0)), r"float images must be in \[-1, 1\]"),
        (lambda d: _npz(d / "one.npz", images=torch.zeros(1, 3, 4, 4)), "holds 1 image; expected N >= 2"),
        (
            lambda d: _npz(d / "mu.npz", mu=torch.zeros(8), sigma=torch.eye(8)),
            r"\[.mu.\] has shape \(8,\); expected \(2048,\)",
        ),
    ],
)
def test_unusable_references_are_named(tmp_path, make, pattern):
    with pytest.raises(ReferenceSetError, match=pattern):
        load_reference(make(tmp_path), CountingExtractor())


def _npz(path: Path, **arrays) -> Path:
    np = pytest.importorskip("numpy")
    np.savez(path, **{name: np.asarray(value) for name, value in arrays.items()})
    return path


# ---------------------------------------------------------------------------------------------------------------
# The network path, with a weights file written here.


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    _import_or_skip("torchvision")
    return write_random_fid_inception(tmp_path_factory.mktemp("weights") / "random_fid_inception.pth")


class _Uint8Images(torch.utils.data.Dataset):
    """What torch-fidelity's calculate_metrics reads: uint8 (3, H, W) images."""

    def __init__(self, pixels: torch.Tensor) -> None:
        self.pixels = pixels

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.pixels[index]


def test_the_numbers_are_torch_fidelitys_own(fidelity, weights_file, tmp_path):
    real = torch.nn.functional.interpolate(_images(4, seed=4), size=(12, 12), mode="bilinear")
    fake = _images(10, seed=5).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    ours = fidelity_module.fidelity_metrics(real, fake, weights=weights_file, device="cpu", batch_size=4)
    theirs = fidelity.calculate_metrics(
        input1=_Uint8Images(to_uint8(fake)),
        input2=_Uint8Images(to_uint8(real)),
        cuda=False,
        isc=True,
        fid=True,
        kid=True,
        prc=True,
        kid_subset_size=4,  # what rankplug picks here: min(1000, 4 real, 10 generated)
        save_cpu_ram=True,  # no DataLoader worker processes
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(weights_file),
        cache=False,
        verbose=False,
    )
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert ours["fid"] > 0.01  # the random network still tells the two sets apart
    assert (ours["is_mean"], ours["is_std"]) == pytest.approx(
        (theirs["inception_score_mean"], theirs["inception_score_std"]), rel=1e-6
    )
    assert (ours["kid_mean"], ours["kid_std"]) == pytest.approx(
        (theirs["kernel_inception_distance_mean"], theirs["kernel_inception_distance_std"]), rel=1e-5
    )
    assert (ours["precision"], ours["recall"]) == (theirs["precision"], theirs["recall"])
    assert ours["kid_subset_size"] == 4 and set(ours["seconds"]) == {"fid", "is", "kid", "prc", "reference", "features"}


def test_weights_lookup_order_and_torch_fidelitys_file_name(tmp_path, weights_file, monkeypatch):
    with pytest.raises(InceptionWeightsNotFound, match="FID Inception weights not found") as error:
        fidelity_weights()
    assert len(error.value.searched) == 2  # both names in the torch hub cache
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    checkpoints.mkdir(parents=True)
    theirs = checkpoints / fidelity_module.FIDELITY_WEIGHTS_FILENAME
    os.link(weights_file, theirs)
    assert fidelity_weights() == theirs  # torch-fidelity's own cache name, after rankplug's places
    pytorch_fid = checkpoints / fidelity_module.INCEPTION_WEIGHTS_FILENAME
    os.link(weights_file, pytorch_fid)
    assert fidelity_weights() == pytorch_fid
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path / "typo.pth"))
    with pytest.raises(InceptionWeightsNotFound, match=r"typo\.pth"):  # an explicit place that is wrong is an error
        fidelity_weights()
    with pytest.raises(InceptionWeightsNotFound, match=r"weights= argument: .*nowhere\.pth \(no such file\)"):
        fidelity_weights(tmp_path / "nowhere.pth")


def test_importing_the_backend_modules_imports_no_optional_dependency():
    import subprocess
    import sys

    code = (
        "import sys; import rankplug.app.eval.fidelity, rankplug.app.eval.inception_weights; "
        "import rankplug.app.eval.reference, rankplug.app.eval.reference_files; "
        "print([m for m in ('torchvision', 'torch_fidelity', 'PIL', 'scipy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# Which way precision and recall point.


def test_a_mode_collapsed_generator_gets_high_precision_and_low_recall(fidelity):
    # The real data: four separated clusters. The generator makes one of them: everything it makes looks real
    # (precision ~1), and it covers a quarter of the real data (recall ~0.25).
    generator = torch.Generator().manual_seed(11)
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    real = torch.cat([centre + torch.randn(100, 2, generator=generator) for centre in centres])
    fake = centres[0] + torch.randn(100, 2, generator=generator)
    scores = paper_metrics(Reference.from_features(real), InceptionFeatures(fake, torch.zeros(100, 4)), ("prc",))
    assert scores["precision"] > 0.9
    assert 0.15 < scores["recall"] < 0.3
    # rankplug passes (fake, real) to torch-fidelity on purpose: its first argument is the generated set, and the
    # other order swaps the two numbers.
    from torch_fidelity.metric_prc import prc_features_to_metric

    swapped = prc_features_to_metric(
        real, fake, prc_neighborhood=3, prc_batch_size=64, save_cpu_ram=True, verbose=False
    )
    assert (swapped["precision"], swapped["recall"]) == pytest.approx((scores["recall"], scores["precision"]))


# ---------------------------------------------------------------------------------------------------------------
# Hostile weights files: read once, with weights_only=True; torch-fidelity never sees the path.


class _RunsCode:
    """Unpickling this creates ``marker``: the stand-in for code pickled into a weights file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weights_holding_pickled_code_are_refused_without_running_it(tmp_path):
    marker, hostile = tmp_path / "ran", tmp_path / "hostile.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048), "hook": _RunsCode(marker)}, hostile)
    with pytest.raises(CheckpointError, match=r"refusing to load .*hostile\.pth"):
        read_inception_weights(hostile)
    assert not marker.exists()
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, tmp_path / "imagenet.pth")
    with pytest.raises(CheckpointError, match=r"expected fc\.weight of shape \(1008, 2048\), got fc\.weight of shape"):
        read_inception_weights(tmp_path / "imagenet.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "imagenet.pth").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cut\.pth"):
        read_inception_weights(tmp_path / "cut.pth")


def test_torch_fidelity_never_opens_the_weights_file(fidelity, weights_file, tmp_path, monkeypatch):
    # The probe's attack: rankplug checked the file with weights_only=True, then torch-fidelity opened the same
    # path with weights_only=False, so a file swapped in between ran its pickled code. Here the file is swapped
    # right after rankplug's read: nothing runs, and the network holds the tensors rankplug read.
    import hashlib
    import io
    import shutil

    user_file, marker, hostile = tmp_path / "weights.pth", tmp_path / "ran", tmp_path / "hostile.pth"
    shutil.copyfile(weights_file, user_file)
    torch.save({"hook": _RunsCode(marker)}, hostile)
    original = torch.load(weights_file, weights_only=True)
    calls = []
    real_load = torch.load

    def spying_load(source, *args, **kwargs):
        calls.append((source, kwargs.get("weights_only")))
        if len(calls) == 1:
            os.replace(hostile, user_file)
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spying_load)
    extractor = FidelityExtractor(user_file, device="cpu")
    assert not marker.exists()
    assert calls[0][1] is True  # rankplug's one read
    assert all(isinstance(source, io.BytesIO) for source, _ in calls)  # no torch.load ever got a path
    assert torch.equal(extractor.network.fc.weight, original["fc.weight"])
    assert extractor.weights_sha256 == hashlib.sha256(weights_file.read_bytes()).hexdigest()  # of the bytes read


# ---------------------------------------------------------------------------------------------------------------
# The cache: entries carry a checksum of their key and contents; anything else is recomputed with a warning.


def _resave(path: Path, **changes) -> None:
    np = pytest.importorskip("numpy")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    path.unlink()
    np.savez(path, **{name: value for name, value in arrays.items() if value is not None})


def _edit_mu(entry: Path, tmp_path: Path) -> None:  # the probe: FID 0 -> 2e7 with exit 0
    _resave(entry, mu=torch.full((2048,), 1e3, dtype=torch.float64).numpy())


def _drop_checksum(entry: Path, tmp_path: Path) -> None:  # planted by hand, without one
    _resave(entry, checksum=None)


def _truncate(entry: Path, tmp_path: Path) -> None:
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])


def _symlink(entry: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.npz"
    entry.rename(target)
    entry.symlink_to(target)


def _other_key(entry: Path, tmp_path: Path) -> None:  # a valid entry of other images, copied under this name
    other = load_reference(_write_pngs(tmp_path / "other", _images(4, seed=9)), CountingExtractor())
    entry.write_bytes((entry.parent / f"{other.key}.npz").read_bytes())


def _grow(entry: Path, tmp_path: Path) -> None:
    with open(entry, "ab") as handle:
        handle.write(b"\0" * (1 << 20))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_edit_mu, "checksum does not match"),
        (_drop_checksum, "checksum is missing"),
        (_truncate, "not a readable .npz"),
        (_symlink, "not a regular file"),
        (_other_key, "written for another key"),
        (_grow, "more than the"),
    ],
)
def test_a_planted_or_damaged_cache_entry_is_recomputed_with_a_warning(tmp_path, damage, why):
    folder = _write_pngs(tmp_path / "a", _images(4, seed=3))
    extractor = CountingExtractor()
    first = load_reference(folder, extractor)
    entry = tmp_path / "cache" / "fidelity" / f"{first.key}.npz"
    damage(entry, tmp_path)
    with pytest.warns(RuntimeWarning, match=f"damaged reference cache entry .*{first.key}.*{why}"):
        again = load_reference(folder, extractor)
    assert extractor.images_seen == 8  # recomputed
    assert torch.equal(again.mu, first.mu) and torch.equal(again.sigma, first.sigma)
    assert entry.is_file() and not entry.is_symlink()  # rewritten as a regular file
    if damage is _symlink:
        assert torch.equal(load_reference(tmp_path / "elsewhere.npz", extractor).mu.float(), first.mu.float())
    load_reference(folder, extractor)  # the rewritten entry is trusted again
    assert extractor.images_seen == 8


def test_cache_entries_hold_their_key_and_a_checksum(tmp_path):
    np = pytest.importorskip("numpy")
    reference = load_reference(_write_pngs(tmp_path / "a", _images(4, seed=3)), CountingExtractor())
    with np.load(tmp_path / "cache" / "fidelity" / f"{reference.key}.npz") as data:
        assert str(data["key"]) == reference.key and len(str(data["checksum"])) == 64
        assert data["features"].dtype == np.float32 and data["sigma"].shape == (2048, 2048)
        assert "features" in data.files  # still a features reference for anyone reading it


# ---------------------------------------------------------------------------------------------------------------
# Hostile references: refused with the file's name, before anything large is allocated or decoded.


def _stats(path: Path, mu=None, sigma=None, **extra) -> Path:
    np = pytest.importorskip("numpy")
    mu = np.zeros(2048) if mu is None else mu
    sigma = np.eye(2048, dtype=np.float32) if sigma is None else sigma
    np.savez(path, mu=mu, sigma=sigma, **extra)
    return path


def _hostile_npz(name: str, tmp_path: Path) -> Path:
    np = pytest.importorskip("numpy")
    path = tmp_path / f"{name}.npz"
    eye = np.eye(2048, dtype=np.float32)
    if name == "negative_sigma":  # the probe: mu = 0, sigma = -1e6 I gave FID 0.00
        return _stats(path, sigma=-1e6 * eye)
    if name == "asymmetric_sigma":
        return _stats(path, sigma=eye + np.triu(np.ones_like(eye), 1) * 0.5)
    if name == "nan_mu":
        return _stats(path, mu=np.full(2048, np.nan))
    if name == "inf_sigma":
        return _stats(path, sigma=np.diag(np.full(2048, np.inf, dtype=np.float32)))
    if name == "huge_values":
        return _stats(path, mu=np.full(2048, 1e200))
    if name == "bool_sigma":
        return _stats(path, sigma=eye.astype(bool))
    if name == "complex_sigma":
        return _stats(path, sigma=eye.astype(np.complex64))
    if name == "string_mu":
        return _stats(path, mu=np.array(["0"] * 2048))
    if name == "zero_images":
        return _stats(path, num_images=np.array(0))
    if name == "bool_num_images":
        return _stats(path, num_images=np.array(True))
    if name == "nan_features":
        np.savez(path, features=np.full((4, 2048), np.nan, dtype=np.float32))
    elif name == "integer_features":
        np.savez(path, features=np.ones((4, 2048), dtype=np.int64))
    elif name == "nan_images":
        np.savez(path, images=np.full((4, 3, 8, 8), np.nan, dtype=np.float32))
    elif name == "uint16_images":
        np.savez(path, images=np.zeros((4, 3, 8, 8), dtype=np.uint16))
    elif name == "object_images":
        np.savez(path, images=np.array([None, 1], dtype=object))
    elif name == "truncated":
        _stats(path)
        path.write_bytes(path.read_bytes()[: -(1 << 20)])
    elif name == "not_a_zip":
        path.write_bytes(b"mu and sigma")
    return path


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("negative_sigma", "sigma is not positive semi-definite"),
        ("asymmetric_sigma", "sigma is not symmetric"),
        ("nan_mu", "mu.* holds NaN or infinite values"),
        ("inf_sigma", "sigma.* holds NaN or infinite values"),
        ("huge_values", r"values beyond \+-1e\+08"),
        ("bool_sigma", "dtype bool; expected real floating point"),
        ("complex_sigma", "dtype complex64; expected real floating point"),
        ("string_mu", "dtype <U1; expected real floating point"),
        ("zero_images", r"num_images.* is 0; expected the number of images, >= 1"),
        ("bool_num_images", "num_images.* is bool of shape"),
        ("nan_features", "features.* holds NaN or infinite values"),
        ("integer_features", "features.* has dtype int64; expected real floating point"),
        ("nan_images", "images.* holds NaN or infinite values"),
        ("uint16_images", "dtype uint16; expected uint8, or float"),
        ("object_images", "holds Python objects"),
        ("truncated", "not a readable .npz"),
        ("not_a_zip", "not a readable .npz"),
    ],
)
def test_hostile_npz_references_are_refused_naming_the_file(tmp_path, name, pattern):
    path = _hostile_npz(name, tmp_path)
    with pytest.raises(ReferenceSetError, match=pattern) as error:
        load_reference(path, CountingExtractor())
    assert str(path) in str(error.value)


def test_statistics_checks_accept_a_rank_deficient_covariance_in_float32():
    features = torch.randn(50, 2048, generator=torch.Generator().manual_seed(4))
    sigma = torch.cov(features.T.double()).float()  # rank 49: eigenvalues of ~-1e-7 from float32 rounding
    _, checked = check_statistics(features.mean(0), sigma, "fid_stats.npz")
    assert checked.dtype == torch.float64 and torch.equal(checked, sigma.double())


def _lying_npz(path: Path, shape: tuple[int, ...]) -> Path:
    """An .npz whose sigma header declares ``shape`` of float64 while holding 16 bytes."""
    np = pytest.importorskip("numpy")
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("mu.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(2048))
        with archive.open("sigma.npy", "w") as member:
            header = {"descr": "<f8", "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(member, header)  # the magic string, then the header
            member.write(b"\0" * 16)
    return path


def test_array_sizes_are_bounded_from_the_header_before_allocating(tmp_path, monkeypatch):
    import tracemalloc

    # The probe: a 31 MB .npz declaring a 30000^2 sigma tried to allocate 6.7 GiB.
    lying = _lying_npz(tmp_path / "lying.npz", (30000, 30000))
    tracemalloc.start()
    try:
        with pytest.raises(ReferenceSetError, match=r"lying\.npz\['sigma'\] declares shape \(30000, 30000\)"):
            load_reference(lying, CountingExtractor())
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()
    # A member of the wrong shape is refused from its header: its data is never read.
    read, original = [], reference_files_module.Npz.read

    def spying_read(self, name):
        read.append(name)
        return original(self, name)

    monkeypatch.setattr(reference_files_module.Npz, "read", spying_read)
    with pytest.raises(ReferenceSetError, match=r"\['sigma'\] has shape \(3, 3\); expected \(2048, 2048\)"):
        load_reference(_stats(tmp_path / "small.npz", sigma=torch.eye(3).numpy()), CountingExtractor())
    assert "sigma" not in read
    monkeypatch.undo()
    # Past the per-array bound: refused before reading.
    monkeypatch.setattr(reference_files_module, "MAX_ARRAY_BYTES", 1 << 10)
    np = pytest.importorskip("numpy")
    np.savez(tmp_path / "features.npz", features=np.zeros((4, 2048), dtype=np.float32))
    with pytest.raises(ReferenceSetError, match=r"features\.npz\['features'\] declares shape \(4, 2048\).*at most"):
        load_reference(tmp_path / "features.npz", CountingExtractor())


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width x height`` 8-bit grey pixels in its header and holds no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [9000, 20000])
def test_an_image_over_the_pixel_bound_is_refused_before_decoding(tmp_path, monkeypatch, side):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # as much ML code sets it: rankplug's own bound holds
    folder = tmp_path / "real"
    _write_pngs(folder, _images(3, seed=1))
    huge = _png_header(folder / "huge.png", side, side)
    decoded, open_image = [], reference_files_module.open_image

    def spying_open(path, mode):
        decoded.append(path)
        return open_image(path, mode)

    monkeypatch.setattr(reference_files_module, "open_image", spying_open)
    with pytest.raises(ReferenceSetError, match=rf"huge\.png is {side} x {side} pixels; .* at most 67108864"):
        load_reference(folder, CountingExtractor())
    assert huge not in decoded


def test_a_broken_image_is_refused_naming_it(tmp_path):
    folder = _write_pngs(tmp_path / "real", _images(3, seed=1))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ReferenceSetError, match=r"broken\.png"):
        load_reference(folder, CountingExtractor())


def test_sixteen_bit_pngs_are_scaled_as_the_training_loader_scales_them(tmp_path):
    np = pytest.importorskip("numpy")
    from PIL import Image

    from rankplug.app.data import load_image_folder

    folder = tmp_path / "wide"
    folder.mkdir()
    values = np.array([[0, 1000, 32768, 65535]] * 4, dtype=np.uint16)
    for k in range(2):
        Image.fromarray(values).save(folder / f"{k}.png")  # 16-bit grey: Pillow mode I;16
    assert Image.open(folder / "0.png").mode.startswith("I")
    seen = []

    class Capturing(CountingExtractor):
        def extract(self, batches, **kwargs):
            batches = list(batches)
            seen.extend(batches)
            return super().extract(batches, **kwargs)

    load_reference(folder, Capturing())
    pixels = torch.cat(seen)
    assert pixels[0, 0, 0].tolist() == [0, 4, 128, 255]  # round(v / 257), not clipped to 255
    trained_on, _ = load_image_folder(folder, size=4, channels=1)
    assert torch.equal(pixels[:, :1], trained_on.add(1).mul(127.5).round().to(torch.uint8))


def test_nan_tensors_are_refused_as_references_and_as_samples():
    images = _images(4, seed=2)
    images[2, 0, 0, 0] = float("nan")
    with pytest.raises(ReferenceSetError, match="NaN or infinite"):
        load_reference(images, CountingExtractor())
    with pytest.raises(ValueError, match="images hold NaN or infinite values"):
        to_uint8(images)


# ---------------------------------------------------------------------------------------------------------------
# Layout: no import cycle among the evaluation and data modules, counting imports inside functions.


def test_no_import_cycles_among_the_eval_and_data_modules():
    import ast

    root = Path(__file__).resolve().parents[3]
    modules = {}
    for folder in ("rankplug/app/eval", "rankplug/app/data"):
        for path in sorted((root / folder).glob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    edges = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
                    # Importing a submodule runs its package's __init__ first (unless that package holds this
                    # module, and so is being imported already).
                    package = target.rpartition(".")[0]
                    if package in modules and package != name and not name.startswith(f"{package}."):
                        edges[name].add(package)

    def cycle_from(start, node, seen):
        for nxt in edges[node]:
            if nxt == start:
                return [*seen, nxt]
            if nxt not in seen:
                found = cycle_from(start, nxt, [*seen, nxt])
                if found:
                    return found
        return None

    cycles = [found for name in modules if (found := cycle_from(name, name, [name]))]
    assert not cycles, cycles[0]
    assert "rankplug.app.eval.fidelity" not in edges["rankplug.app.eval.reference"]
