"""rankplug.app.eval.inception: weights lookup, the error messages, input checks, and the real loading path.

The tests that run the network write their own weights file: the FID Inception architecture built from
torchvision and pytorch-gan-metrics' FID blocks with seeded random weights, so nothing is downloaded. They go
through the same torch.hub loading code as the real ``pt_inception-2015-12-05-6726825d.pth``. They skip when
torchvision or pytorch-gan-metrics cannot be imported, unless ``RANKPLUG_REQUIRE_INCEPTION=1`` (set by CI), where
a failed import fails them. The lookup, message and input-check tests need neither package.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from rankplug._checkpoint import CheckpointError
from rankplug.app.eval import (
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_FILENAME,
    INCEPTION_WEIGHTS_URL,
    InceptionStats,
    InceptionWeightsNotFound,
    find_inception_weights,
    inception_metrics,
    inception_statistics,
)
from rankplug.app.eval import inception as inception_module
from rankplug.app.eval.digits import frechet_distance

REQUIRED = os.environ.get("RANKPLUG_REQUIRE_INCEPTION") == "1"
N_IMAGES = 6  # Inception at 299 x 299 costs about 0.2 s per image on a small CPU


def _import_or_skip(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    # A torchvision built for another torch raises RuntimeError or OSError at import.
    except (ImportError, RuntimeError, OSError) as error:
        if REQUIRED:
            pytest.fail(f"RANKPLUG_REQUIRE_INCEPTION=1 but {name} cannot be imported: {error!r}")
        pytest.skip(f"{name} cannot be imported: {error!r}")


@pytest.fixture(autouse=True)
def _isolated_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and no weights variable, so a real user cache never changes a result."""
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)


def _cache_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


def _images(n: int, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth blobs in [-1, 1]: 4 x 4 random patterns upsampled, so images differ in structure, not only noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 4, 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear") * 2 - 1


# ---------------------------------------------------------------------------------------------------------------
# Lookup and messages: no torchvision needed.


def test_missing_weights_message_names_url_paths_and_options():
    with pytest.raises(InceptionWeightsNotFound) as info:
        find_inception_weights()
    message = str(info.value)
    cache = _cache_file()
    assert isinstance(info.value, FileNotFoundError)
    assert INCEPTION_WEIGHTS_URL in message
    assert str(cache) in message  # where it looked, and where to put the file
    assert INCEPTION_WEIGHTS_ENV in message and "weights=" in message and "download=True" in message
    assert info.value.searched == (cache,)


def test_missing_explicit_path_and_env_var_are_named(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "inception.pth"
    with pytest.raises(InceptionWeightsNotFound, match=r"weights= argument: .*nowhere.*no such file"):
        find_inception_weights(missing)
    with pytest.raises(InceptionWeightsNotFound, match="a directory, expected the file"):
        find_inception_weights(tmp_path)
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(missing))
    with pytest.raises(InceptionWeightsNotFound) as info:
        find_inception_weights()
    assert f"${INCEPTION_WEIGHTS_ENV}: {missing} (no such file)" in str(info.value)
    assert INCEPTION_WEIGHTS_URL in str(info.value)
    with pytest.raises(TypeError, match="weights must be a path"):
        find_inception_weights(3)  # type: ignore[arg-type]


def test_lookup_order_argument_then_env_then_cache(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "a.pth", tmp_path / "b.pth"
    explicit.write_bytes(b"x")
    from_env.write_bytes(b"x")
    cache = _cache_file()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"x")
    assert find_inception_weights() == cache
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(from_env))
    assert find_inception_weights() == from_env
    assert find_inception_weights(str(explicit)) == explicit


def _fake_gan_metrics(monkeypatch, package_name: str = "pytorch_gan_metrics") -> None:
    """Importable stand-ins for pytorch-gan-metrics, for the checks that come after the import."""
    package = types.ModuleType(package_name)
    for name in ("core", "inception"):
        module = types.ModuleType(f"{package_name}.{name}")
        setattr(package, name, module)
        monkeypatch.setitem(sys.modules, f"{package_name}.{name}", module)
    monkeypatch.setitem(sys.modules, package_name, package)


def test_missing_weights_raise_from_the_metrics_before_any_download(monkeypatch):
    _fake_gan_metrics(monkeypatch)
    images = _images(4)
    with pytest.raises(InceptionWeightsNotFound, match=re.escape(INCEPTION_WEIGHTS_FILENAME)):
        inception_metrics(images, images, splits=2)
    with pytest.raises(InceptionWeightsNotFound, match="download=True"):
        inception_statistics(images)


def test_wrong_explicit_path_is_an_error_even_with_download(tmp_path, monkeypatch):
    _fake_gan_metrics(monkeypatch)
    with pytest.raises(InceptionWeightsNotFound, match="Fix the path"):
        inception_statistics(_images(2), weights=tmp_path / "typo.pth", download=True)


def test_missing_packages_give_an_install_hint(monkeypatch):
    for package in ("pytorch_gan_metrics", "pytorch_image_generation_metrics"):  # the old name and the new one
        for name in (package, f"{package}.core", f"{package}.inception"):
            monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes the import fail
    images = _images(4)
    with pytest.raises(ImportError) as info:
        inception_metrics(images, images, splits=2)
    message = str(info.value)
    assert 'pip install "rankplug[eval]"' in message
    assert "torchvision must be the build made for the installed torch" in message
    with pytest.raises(ImportError, match="pytorch-gan-metrics and torchvision"):
        inception_statistics(images)


def test_the_renamed_package_is_used_when_the_old_module_is_missing(monkeypatch):
    # pytorch-gan-metrics 0.5.4 is an empty shim that installs pytorch-image-generation-metrics (issue 10, item 13)
    from rankplug.app.eval import inception

    for name in ("pytorch_gan_metrics", "pytorch_gan_metrics.core", "pytorch_gan_metrics.inception"):
        monkeypatch.setitem(sys.modules, name, None)
    _fake_gan_metrics(monkeypatch, "pytorch_image_generation_metrics")
    core, fid_blocks = inception._import_gan_metrics()
    assert core.__name__ == "pytorch_image_generation_metrics.core"
    assert fid_blocks.__name__ == "pytorch_image_generation_metrics.inception"


def test_unsafe_or_wrong_weights_files_are_refused(tmp_path, monkeypatch):
    _fake_gan_metrics(monkeypatch)
    images = _images(2)
    pickled_code = tmp_path / "code.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048), "hook": os.getcwd}, pickled_code)
    with pytest.raises(CheckpointError, match="refusing to load"):
        inception_statistics(images, weights=pickled_code)
    imagenet = tmp_path / "imagenet.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, imagenet)
    with pytest.raises(CheckpointError, match=r"expected fc.weight of shape \(1008, 2048\), got .*\(1000, 2048\)"):
        inception_statistics(images, weights=imagenet)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"refusing to load|unreadable or truncated"):
        inception_statistics(images, weights=garbage)


def _metrics(real=None, fake=None, **kwargs):
    real = _images(4) if real is None else real
    return inception_metrics(real, _images(4) if fake is None else fake, **{"splits": 2, **kwargs})


BAD_INPUTS = [
    (lambda: _metrics(fake=_images(4, 2)), ValueError, r"fake_images has shape \(4, 2, 16, 16\); expected \(N, C, H, W\) with C = 1"),
    (lambda: _metrics(fake=_images(4)[0]), ValueError, r"fake_images has shape \(3, 16, 16\); expected \(N, C, H, W\)"),
    (lambda: _metrics(real=_images(4)[..., :0]), ValueError, r"real has shape \(4, 3, 16, 0\); expected H, W >= 1"),
    (lambda: _metrics(real=_images(1)), ValueError, r"real has shape \(1, 3, 16, 16\); expected N >= 2"),
    (lambda: _metrics(fake=_images(4).mul(255).byte()), TypeError, "fake_images must have a floating-point dtype"),
    (lambda: _metrics(fake=(_images(4) + 1) * 127.5), ValueError, r"fake_images has values in \[.*\]; expected \[-1, 1\]"),
    (lambda: _metrics(fake=_images(4) * float("nan")), ValueError, "fake_images holds NaN"),
    (lambda: _metrics(splits=5), ValueError, "splits must be <= the number of fake images, 4; got 5"),
    (lambda: _metrics(splits=0), ValueError, "splits must be an int >= 1; got 0"),
    (lambda: _metrics(batch_size=2.5), TypeError, "batch_size must be an int >= 1; got float"),
    (lambda: _metrics(real=[1.0]), TypeError, "real must be images .*got list"),
    (lambda: _metrics(download="yes"), TypeError, "download must be a bool; got str"),
    (lambda: inception_statistics(_images(1)), ValueError, r"images has shape \(1, 3, 16, 16\); expected N >= 2"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "pattern"), BAD_INPUTS)
def test_bad_inputs_raise_before_anything_is_loaded(call, error, pattern, monkeypatch):
    _fake_gan_metrics(monkeypatch)  # so that an unchecked input would reach the weights lookup, not the import
    with pytest.raises(error, match=pattern):
        call()


def test_statistics_file_round_trip_and_pytorch_gan_metrics_format(tmp_path):
    np = pytest.importorskip("numpy")
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(5, 2048, generator=generator, dtype=torch.float64)
    stats = InceptionStats(features.mean(0), torch.cov(features.T), 5)
    loaded = InceptionStats.load(stats.save(tmp_path / "sub" / "real.npz"))
    assert torch.equal(loaded.mu, stats.mu) and torch.equal(loaded.sigma, stats.sigma) and loaded.num_images == 5
    theirs = tmp_path / "theirs.npz"  # pytorch-gan-metrics' calc_and_save_stats writes only mu and sigma
    np.savez_compressed(theirs, mu=stats.mu.numpy(), sigma=stats.sigma.numpy())
    assert InceptionStats.load(theirs).num_images == 0
    np.savez_compressed(tmp_path / "small.npz", mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(ValueError, match=r"mu of shape \(64,\) and sigma of shape \(64, 64\); expected \(2048,\)"):
        InceptionStats.load(tmp_path / "small.npz")
    with pytest.raises(FileNotFoundError, match="no Inception statistics file"):
        inception_metrics(tmp_path / "absent.npz", _images(2), splits=1)


@pytest.mark.parametrize(("n_real", "n_fake"), [(7, 3), (3, 7), (40, 2)])
def test_small_sample_fid_equals_the_full_frechet_distance(n_real, n_fake):
    """The N x N route of _fid against the textbook 2048 -> D x D formula (D = 24 here, to stay fast)."""
    generator = torch.Generator().manual_seed(n_real)
    real = torch.randn(n_real, 24, generator=generator, dtype=torch.float64)
    fake = torch.randn(n_fake, 24, generator=generator, dtype=torch.float64) * 1.5 + 0.3
    real_stats = InceptionStats(real.mean(0), torch.cov(real.T), n_real)
    expected = frechet_distance(real_stats.mu, real_stats.sigma, fake.mean(0), torch.cov(fake.T))
    # The D x D route takes square roots of the ~1e-16 eigenvalues a rank-deficient covariance leaves, so the
    # two agree to ~1e-8 relative; the N x N route never sees those null directions.
    assert inception_module._fid(real_stats, fake) == pytest.approx(expected, rel=1e-6)
    assert inception_module._fid(InceptionStats(fake.mean(0), torch.cov(fake.T), n_fake), fake) == pytest.approx(
        0.0, abs=1e-9
    )


def test_importing_rankplug_eval_imports_no_optional_dependency():
    code = (
        "import sys; import rankplug.app.eval; "
        "print([m for m in ('torchvision', 'pytorch_gan_metrics', 'scipy', 'kornia', 'sklearn') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# The real loading path, with a weights file written here.


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """A state dict with exactly the keys and shapes of the real FID Inception weights, random but seeded."""
    _import_or_skip("torchvision")
    fid_blocks = _import_or_skip("pytorch_gan_metrics.inception")
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    # The construction pytorch-gan-metrics' fid_inception_v3() performs before it loads the weights.
    net = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    net.Mixed_5b = fid_blocks.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid_blocks.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid_blocks.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid_blocks.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid_blocks.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid_blocks.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid_blocks.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid_blocks.FIDInceptionE_1(1280)
    net.Mixed_7c = fid_blocks.FIDInceptionE_2(2048)
    for module in net.modules():
        # He initialisation keeps activations at unit scale through the ~40 conv layers; PyTorch's default
        # would shrink them by ~1/6 per layer until every feature is ~0 and all FIDs look alike.
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.05)
    path = tmp_path_factory.mktemp("weights") / "random_fid_inception.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def hub_spy(monkeypatch):
    """Records the hub directory at each weights load, and fails any download attempt."""
    fid_blocks = _import_or_skip("pytorch_gan_metrics.inception")
    real_loader = fid_blocks.load_state_dict_from_url
    seen: list[str] = []

    def spy(url, *args, **kwargs):
        assert url == INCEPTION_WEIGHTS_URL
        seen.append(torch.hub.get_dir())
        return real_loader(url, *args, **kwargs)

    def no_download(url, dst, *args, **kwargs):
        raise AssertionError(f"attempted to download {url} to {dst}")

    monkeypatch.setattr(fid_blocks, "load_state_dict_from_url", spy)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return seen


@pytest.fixture(scope="module")
def scored(weights_file, tmp_path_factory):
    """Every network result the checks below need, computed once (Inception is slow on a CPU)."""
    real, near, noise = _images(N_IMAGES), None, None
    near = (real + 0.1 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with pytest.MonkeyPatch.context() as patch:
        # As a user with the file in the torch hub cache ($TORCH_HOME/hub/checkpoints/...).
        home = tmp_path_factory.mktemp("torch_home")
        patch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
        patch.setenv("TORCH_HOME", str(home))
        patch.setattr(torch.hub, "_hub_dir", None)
        cache = home / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILENAME
        cache.parent.mkdir(parents=True)
        shutil.copyfile(weights_file, cache)
        from_cache = inception_statistics(real)
        same = inception_metrics(from_cache, real, splits=2)
        closer = inception_metrics(real, near, splits=2, batch_size=4)
        # As a user pointing at the file with weights= (the cache is emptied, so only the path can work).
        cache.unlink()
        from_path = inception_statistics(real, weights=weights_file, batch_size=4)
        further = inception_metrics(from_path, noise, weights=weights_file, splits=2)
    return {"cache": from_cache, "path": from_path, "same": same, "closer": closer, "further": further}


def test_url_matches_pytorch_gan_metrics():
    fid_blocks = _import_or_skip("pytorch_gan_metrics.inception")
    assert fid_blocks.FID_WEIGHTS_URL == INCEPTION_WEIGHTS_URL
    assert INCEPTION_WEIGHTS_URL.endswith("/" + INCEPTION_WEIGHTS_FILENAME)


def test_cache_and_explicit_path_load_the_same_weights_deterministically(scored):
    assert scored["cache"].num_images == N_IMAGES
    assert scored["cache"].mu.shape == (2048,) and scored["cache"].sigma.shape == (2048, 2048)
    assert torch.equal(scored["cache"].mu, scored["path"].mu)
    assert torch.equal(scored["cache"].sigma, scored["path"].sigma)
    assert scored["cache"].mu.abs().max() > 1e-3  # the features are not all ~0


def test_fid_is_zero_for_identical_sets_and_grows_with_the_difference(scored):
    assert scored["same"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < scored["closer"]["fid"] < scored["further"]["fid"] / 2


def test_inception_score_is_finite_and_at_least_one(scored):
    for result in (scored["same"], scored["closer"], scored["further"]):
        assert set(result) == {"fid", "is_mean", "is_std"}
        assert all(isinstance(value, float) for value in result.values())
        assert 1 - 1e-9 <= result["is_mean"] < 1008 and result["is_std"] >= 0


def test_cache_file_is_read_in_place_and_explicit_path_through_a_restored_temporary_hub(weights_file, hub_spy):
    cache = _cache_file()
    cache.parent.mkdir(parents=True)
    os.link(weights_file, cache)  # another name for the same data, so weights=weights_file is not the cache file
    images = _images(2, channels=1)
    inception_statistics(images)
    assert hub_spy == [torch.hub.get_dir()]  # the user's own hub directory, untouched
    inception_statistics(images, weights=weights_file)
    assert hub_spy[1] != torch.hub.get_dir() and not Path(hub_spy[1]).exists()  # temporary, removed afterwards
    assert torch.hub._hub_dir is None  # restored as it was: unset, still following $TORCH_HOME


def test_grey_images_are_repeated_into_three_channels(weights_file):
    grey = _images(2, channels=1, size=8)
    from_grey = inception_statistics(grey, weights=weights_file)
    from_rgb = inception_statistics(grey.repeat(1, 3, 1, 1), weights=weights_file)
    assert torch.allclose(from_grey.mu, from_rgb.mu, rtol=0, atol=1e-6)


def test_download_true_fetches_into_the_hub_cache(weights_file, monkeypatch):
    _import_or_skip("pytorch_gan_metrics.inception")
    fetched: list[str] = []

    def fake_download(url, dst, *args, **kwargs):  # stands in for the network
        fetched.append(url)
        shutil.copyfile(weights_file, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    images = _images(2)
    with pytest.raises(InceptionWeightsNotFound):
        inception_statistics(images)
    assert fetched == []
    stats = inception_statistics(images, download=True, progress=True)
    assert fetched == [INCEPTION_WEIGHTS_URL] and _cache_file().is_file()
    assert find_inception_weights() == _cache_file() and stats.num_images == 2
