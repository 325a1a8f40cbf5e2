"""rankplug.integrations.stylegan2_ada.RankGANLoss inside a StyleGAN2-ADA-shaped host (stand-ins, tiny 16x16 nets).

The host's packages ``dnnlib``, ``torch_utils`` and ``training`` come from ``tests/standins/stylegan2_ada``,
put on ``sys.path`` for the module as the host repository would be, and removed afterwards.
"""

from __future__ import annotations

import importlib
import math
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

import rankplug.functional as RF

STANDINS = Path(__file__).parent / "standins" / "stylegan2_ada"
HOST_PACKAGES = ("dnnlib", "torch_utils", "training", "legacy")
CLASS_NAME = "rankplug.integrations.stylegan2_ada.RankGANLoss"
PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")
RES, CHANNELS, Z_DIM, W_DIM = 16, 3, 8, 16


def _purge_host_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in HOST_PACKAGES:
            del sys.modules[name]


@pytest.fixture(scope="module")
def host():
    """The stand-in host packages, importable as top-level ``dnnlib``, ``torch_utils`` and ``training``."""
    _purge_host_modules()  # another stand-in (or a real host) may have put same-named packages in sys.modules
    sys.path.insert(0, str(STANDINS))
    try:
        yield types.SimpleNamespace(
            util=importlib.import_module("dnnlib.util"),
            stats=importlib.import_module("torch_utils.training_stats"),
            networks=importlib.import_module("training.networks"),
            augment=importlib.import_module("training.augment"),
        )
    finally:
        sys.path.remove(str(STANDINS))
        _purge_host_modules()


def make_networks(host, c_dim: int = 0, seed: int = 0):
    torch.manual_seed(seed)
    G = host.networks.Generator(z_dim=Z_DIM, c_dim=c_dim, w_dim=W_DIM, img_resolution=RES, img_channels=CHANNELS)
    D = host.networks.Discriminator(c_dim=c_dim, img_resolution=RES, img_channels=CHANNELS)
    augment_pipe = host.augment.AugmentPipe(xflip=1, xint=1, brightness=1)
    # As the host's training_loop does: every network starts with requires_grad False; phases switch it on.
    for module in (G, D, augment_pipe):
        module.train().requires_grad_(False)
    return G, D, augment_pipe


def build_loss(host, G, D, augment_pipe, **loss_kwargs):
    # Exactly how training_loop builds it: the loop's modules as keywords plus loss_kwargs with class_name.
    return host.util.construct_class_by_name(
        class_name=CLASS_NAME,
        device=torch.device("cpu"),
        G_mapping=G.mapping,
        G_synthesis=G.synthesis,
        D=D,
        augment_pipe=augment_pipe,
        **loss_kwargs,
    )


def real_batch(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Toy data in [-1, 1]: diagonal stripes with random phase and frequency."""
    u = torch.linspace(0, 1, RES)
    grid = (u[:, None] + u[None, :]).expand(n, 1, RES, RES)
    phase = torch.rand(n, 1, 1, 1, generator=generator) * 2 * math.pi
    freq = 2 + torch.randint(0, 2, (n, 1, 1, 1), generator=generator)
    img = torch.sin(2 * math.pi * freq * grid + phase)
    return img.expand(n, CHANNELS, RES, RES).contiguous()


def run_phase(loss, phase, module, real, z, c, *, sync=True, gain=1):
    """One host phase: requires_grad on the phase's module only, fresh gradients, then the loss's backward."""
    module.requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    loss.accumulate_gradients(phase=phase, real_img=real, real_c=c, gen_z=z, gen_c=c, sync=sync, gain=gain)
    module.requires_grad_(False)


def host_train(host, loss, G, D, augment_pipe, iterations, *, batch=8, batch_gpu=4, ada_target=0.6, seed=0):
    """A compact copy of the host's schedule: phases Gmain, Greg (every 4), Dmain, Dreg (every 16), rounds of
    ``batch_gpu`` with ``sync`` on the last round and ``gain`` = interval, lazy-regularisation Adam settings,
    G_ema and the ADA update of ``augment_pipe.p`` from ``Loss/signs/real``."""
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    phases = []
    for name, module, lr, interval in (("G", G, 2e-3, 4), ("D", D, 2e-3, 16)):
        ratio = interval / (interval + 1)
        opt = torch.optim.Adam(module.parameters(), lr=lr * ratio, betas=(0.0, 0.99**ratio))
        phases += [(name + "main", module, opt, 1), (name + "reg", module, opt, interval)]
    G_ema = pickle.loads(pickle.dumps(G)).eval()
    c = torch.zeros(batch_gpu, G.c_dim)
    history = []
    for step in range(iterations):
        reals = real_batch(batch, data).split(batch_gpu)
        for name, module, opt, interval in phases:
            if step % interval:
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            for index, real in enumerate(reals):
                z = torch.randn(batch_gpu, G.z_dim)
                loss.accumulate_gradients(
                    phase=name, real_img=real, real_c=c, gen_z=z, gen_c=c, sync=index == len(reals) - 1, gain=interval
                )
            module.requires_grad_(False)
            opt.step()
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(torch.lerp(p, p_ema, 0.9))
        if step % 4 == 3:  # the host's ADA heuristic, from the signs the loss reported
            signs = host.stats.mean("Loss/signs/real")
            adjust = math.copysign(batch * 4 / 2000, signs - ada_target)
            augment_pipe.p.copy_((augment_pipe.p + adjust).clamp(min=0))
        history.append({key: host.stats.mean(key) for key in ("Loss/D/loss", "Loss/G/loss")})
        history[-1]["real"] = host.stats.values("Loss/scores/real")[-batch:].mean().item()
        history[-1]["fake"] = host.stats.values("Loss/scores/fake")[-batch:].mean().item()
        host.stats.reset()
    return G_ema, history


@pytest.fixture(scope="module")
def stage1(host, tmp_path_factory):
    """Stage 1 trained for a few dozen host iterations, saved as a host snapshot pickle."""
    G, D, augment_pipe = make_networks(host)
    augment_pipe.p.fill_(0.0)
    host.stats.reset()
    loss = build_loss(host, G, D, augment_pipe, r1_gamma=1.0, pl_weight=2.0, style_mixing_prob=0.9)
    G_ema, history = host_train(host, loss, G, D, augment_pipe, iterations=60)
    path = tmp_path_factory.mktemp("stage1") / "network-snapshot-000000.pkl"
    with open(path, "wb") as file:  # what the host writes: G, D, G_ema, augment_pipe
        pickle.dump({"G": G, "D": D, "G_ema": G_ema, "augment_pipe": augment_pipe}, file)
    return types.SimpleNamespace(G=G, D=D, augment_pipe=augment_pipe, history=history, path=path)


def stage2(host, stage1, variant, **kwargs):
    """Stage-2 live networks resumed from the stage-1 snapshot (as ``--resume`` does) and its loss."""
    G, D, augment_pipe = make_networks(host, seed=1)
    G.load_state_dict(stage1.G.state_dict())
    D.load_state_dict(stage1.D.state_dict())
    kwargs.setdefault("clamp_weight", 1.0)
    loss = build_loss(host, G, D, augment_pipe, previous=str(stage1.path), variant=variant, **kwargs)
    return G, D, augment_pipe, loss


# --------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("variant", ["stage1", "rankgan", "gogan"])
def test_every_phase_runs_with_gain_and_reports_the_ada_statistic(host, stage1, variant):
    if variant == "stage1":
        G, D, augment_pipe = make_networks(host)
        loss = build_loss(host, G, D, augment_pipe)
        assert loss.stage == 1
    else:
        G, D, augment_pipe, loss = stage2(host, stage1, variant)
        assert loss.stage == 2
    assert type(loss).__module__ == "rankplug.integrations.stylegan2_ada"
    real, z, c = real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0)
    for phase in PHASES:
        host.stats.reset()
        module = G if phase.startswith("G") else D
        other = D if module is G else G
        other.zero_grad(set_to_none=True)
        run_phase(loss, phase, module, real, z, c, gain=4)
        assert all(p.grad is None for p in other.parameters()), phase
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), phase
        if phase.startswith("D"):
            signs = host.stats.values("Loss/signs/real")
            assert signs.numel() == 4 and torch.isfinite(signs).all() and set(signs.tolist()) <= {-1.0, 0.0, 1.0}
        reported = set(host.stats.records)
        expected = {
            "Gmain": {"Loss/scores/fake", "Loss/signs/fake", "Loss/G/loss"},
            "Greg": {"Loss/pl_penalty", "Loss/G/reg"},
            "Dmain": {"Loss/scores/fake", "Loss/signs/fake", "Loss/scores/real", "Loss/signs/real", "Loss/D/loss"},
            "Dreg": {"Loss/scores/real", "Loss/signs/real", "Loss/r1_penalty", "Loss/D/reg"},
        }
        expected["Gboth"] = expected["Gmain"] | expected["Greg"]
        expected["Dboth"] = expected["Dmain"] | expected["Dreg"]
        assert expected[phase] <= reported, (phase, reported)
        for key in reported:
            assert torch.isfinite(host.stats.values(key)).all(), key
    if variant != "stage1":
        assert "Loss/scores/prev_fake" in host.stats.records


def test_gain_scales_every_gradient(host):
    G, D, augment_pipe = make_networks(host)
    augment_pipe.p.fill_(0.0)
    loss = build_loss(host, G, D, augment_pipe, style_mixing_prob=0.0)
    real, z, c = real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0)
    grads = []
    for gain in (1, 3):
        torch.manual_seed(5)  # the same synthesis noise both times
        run_phase(loss, "Dboth", D, real, z, c, gain=gain)
        grads.append([p.grad.clone() for p in D.parameters()])
    for one, three in zip(*grads):
        torch.testing.assert_close(three, 3 * one)


@pytest.mark.parametrize("variant", ["rankgan", "gogan"])
def test_every_discriminator_input_goes_through_the_augment_pipe(host, stage1, variant):
    G, D, augment_pipe, loss = stage2(host, stage1, variant, markers=None)
    augmented: list[int] = []
    fed: list[tuple[str, int]] = []
    augment_pipe.register_forward_hook(lambda module, args, out: augmented.append(id(out)))
    for name, module in (("D", D), ("previous_D", loss.previous_D)):
        module.register_forward_pre_hook(lambda module, args, name=name: fed.append((name, id(args[0]))))
    real, z, c = real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0)
    for phase in PHASES:
        run_phase(loss, phase, G if phase.startswith("G") else D, real, z, c)
    if variant == "rankgan":
        assert loss.markers is not None  # computed lazily on the first Dmain, also through the pipe
    assert fed and all(identity in augmented for _, identity in fed)
    assert len(augmented) == len(fed)
    # The previous stage's fakes are among them: scored by the current D (RankGAN) or the frozen one (GoGAN).
    previous_calls = sum(name == "previous_D" for name, _ in fed)
    if variant == "gogan":
        assert previous_calls == 2  # Dmain and Dboth
    else:
        assert previous_calls == 1 + loss.marker_batches  # the markers: one real batch, marker_batches fake ones


@pytest.mark.parametrize("variant", ["stage1", "rankgan", "gogan"])
def test_live_d_gets_the_documented_gradient_and_frozen_networks_none(host, stage1, variant):
    if variant == "stage1":
        G, D, augment_pipe = make_networks(host)
        loss = build_loss(host, G, D, augment_pipe, margin=2.0)
    else:
        G, D, augment_pipe, loss = stage2(host, stage1, variant, markers=(0.5, -0.5), margin=2.0, rank_weight=0.5)
    augment_pipe.p.fill_(0.5)  # the pipe really changes the images
    live_inputs, previous_inputs = [], []
    hooks = [D.register_forward_pre_hook(lambda module, args: live_inputs.append(args[0].detach().clone()))]
    if loss.previous_D is not None:
        hook = loss.previous_D.register_forward_pre_hook(lambda module, args: previous_inputs.append(args[0].clone()))
        hooks.append(hook)
    real, z, c = real_batch(6), torch.randn(6, Z_DIM), torch.zeros(6, 0)
    run_phase(loss, "Dmain", D, real, z, c, gain=2)
    for hook in hooks:
        hook.remove()
    got = [p.grad.clone() for p in D.parameters()]

    # By hand: the documented loss on the very images D saw (augmented), through rankplug.functional.
    D.requires_grad_(True)
    D.zero_grad(set_to_none=True)
    scores = [D(images, c) for images in live_inputs]  # order: fake, (previous fake for RankGAN), real
    if variant == "stage1":
        fake, real_scores = scores
        expected = RF.hinge_margin_loss(real_scores, fake, margin=2.0)
    elif variant == "rankgan":
        fake, prev_fake, real_scores = scores
        expected = RF.stage_rank_loss(real_scores, fake, prev_fake, m_high=0.5, m_low=-0.5, clamp_weight=1.0)
    else:
        fake, real_scores = scores
        with torch.no_grad():
            (prev_images,) = previous_inputs
            prev_fake = stage1.D(prev_images, c)  # the frozen previous D is a copy of stage 1's D
        expected = RF.gogan_rank_loss(real_scores, fake, prev_fake, margin=2.0, rank_weight=0.5)
    (2 * expected).backward()
    D.requires_grad_(False)
    for mine, theirs in zip(got, (p.grad for p in D.parameters())):
        torch.testing.assert_close(mine, theirs)

    if loss.previous_G is not None:
        for phase in PHASES:
            run_phase(loss, phase, G if phase.startswith("G") else D, real, z, c)
        for frozen in (loss.previous_G, loss.previous_D):
            assert not frozen.training
            assert all(not p.requires_grad and p.grad is None for p in frozen.parameters())
        # The frozen copies are copies: the stage-1 snapshot's weights, untouched by stage-2 training.
        for frozen, source in ((loss.previous_D, stage1.D), (loss.previous_G, stage1.G)):
            for a, b in zip(frozen.state_dict().values(), source.state_dict().values()):
                torch.testing.assert_close(a, b)


def test_r1_is_the_documented_penalty(host):
    G, D, augment_pipe = make_networks(host)
    augment_pipe.p.fill_(0.0)  # identity pipe: the gradient w.r.t. the reals is the gradient w.r.t. D's input
    loss = build_loss(host, G, D, augment_pipe, r1_gamma=3.0)
    real, z, c = real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0)
    run_phase(loss, "Dreg", D, real, z, c, gain=16)
    got = [p.grad.clone() for p in D.parameters()]
    D.requires_grad_(True)
    D.zero_grad(set_to_none=True)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x, c).sum(), x, create_graph=True)
    (16 * (3.0 / 2) * grad.square().flatten(1).sum(1).mean()).backward()
    for mine, p in zip(got, D.parameters()):
        # The output bias does not reach the input gradient: zero in the loss (kept in the graph for DDP), None here.
        torch.testing.assert_close(mine, torch.zeros_like(mine) if p.grad is None else p.grad)


def test_lazy_markers_use_the_frozen_previous_stage(host, stage1):
    batches = [real_batch(5, torch.Generator().manual_seed(i)) for i in range(3)]
    _, D, augment_pipe, loss = stage2(host, stage1, "rankgan", marker_data=batches, marker_statistic="median")
    augment_pipe.p.fill_(0.0)
    run_phase(loss, "Dmain", D, real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0))
    m_high, m_low = loss.markers
    with torch.no_grad():
        expected = stage1.D(torch.cat(batches), torch.zeros(15, 0)).flatten()
    assert m_high == pytest.approx(float(expected.double().median()), abs=1e-5) or m_high == pytest.approx(
        float(torch.quantile(expected.double(), 0.5)), abs=1e-5
    )
    assert m_low <= m_high


def test_bad_settings_fail_at_construction(host):
    G, D, augment_pipe = make_networks(host)
    with pytest.raises(ValueError, match="variant must be one of"):
        build_loss(host, G, D, augment_pipe, variant="wgan")
    with pytest.raises(ValueError, match="m_low must be <= m_high"):
        build_loss(host, G, D, augment_pipe, markers=(0.0, 1.0))
    with pytest.raises(TypeError, match="previous must be None"):
        build_loss(host, G, D, augment_pipe, previous=3)
    loss = build_loss(host, G, D, augment_pipe)
    with pytest.raises(ValueError, match="phase must be one of"):
        loss.accumulate_gradients("Gall", real_batch(2), torch.zeros(2, 0), torch.randn(2, Z_DIM), None, True, 1)


def test_host_schedule_trains_stage1_then_stage2_from_the_snapshot(host, stage1):
    for entry in stage1.history:
        assert all(math.isfinite(v) for v in entry.values()), entry
    late = stage1.history[-10:]
    assert sum(e["real"] - e["fake"] for e in late) / len(late) > 0.1  # D ranks the data above G's samples
    for variant in ("rankgan", "gogan"):
        G, D, augment_pipe, loss = stage2(host, stage1, variant)
        host.stats.reset()
        _, history = host_train(host, loss, G, D, augment_pipe, iterations=12, seed=1)
        for entry in history:
            assert all(math.isfinite(v) for v in entry.values()), (variant, entry)
        assert sum(e["real"] - e["fake"] for e in history) / len(history) > 0, variant
        if variant == "rankgan":
            m_high, m_low = loss.markers
            assert m_high >= m_low


@pytest.mark.filterwarnings("ignore:`broadcast_buffers` is deprecated:FutureWarning")
@pytest.mark.parametrize("variant", ["rankgan", "gogan"])
def test_ddp_wrapped_modules_sync_through_the_hosts_ddp_sync(host, stage1, tmp_path, variant):
    # A one-process gloo group: DDP's reducer raises if a synced backward misses a parameter or if the
    # no_sync / sync pattern of the phases is inconsistent.
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        G, D, augment_pipe = make_networks(host)
        G.load_state_dict(stage1.G.state_dict())
        D.load_state_dict(stage1.D.state_dict())
        wrapped = {}
        for name, module in (("G_mapping", G.mapping), ("G_synthesis", G.synthesis), ("D", D)):
            module.requires_grad_(True)
            wrapped[name] = torch.nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)
            module.requires_grad_(False)
        loss = host.util.construct_class_by_name(
            class_name=CLASS_NAME,
            device="cpu",
            augment_pipe=augment_pipe,
            previous=str(stage1.path),
            variant=variant,
            **wrapped,
        )
        real, z, c = real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0)
        for phase in PHASES:
            for sync in (False, True):  # two accumulation rounds, the last one synced
                module = G if phase.startswith("G") else D
                module.requires_grad_(True)
                loss.accumulate_gradients(phase, real, c, z, c, sync, 1)
                module.requires_grad_(False)
        assert all(isinstance(m, torch.nn.Module) and not hasattr(m, "module") for m in (loss.previous_D,))
        dist.barrier()  # the ranks leave together (a lone gloo exit can abort)
    finally:
        dist.destroy_process_group()


def test_docstring_examples_of_the_integration_run():
    # integrations/ is outside pytest's doctest paths; run its examples here. The compact loop that used to sit
    # next to the adapter is examples/stylegan2_ada_compact_loop.py now (tests/test_examples.py).
    import doctest

    from rankplug.integrations import stylegan2_ada

    result = doctest.testmod(stylegan2_ada, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def _write_folder(folder, count):
    """``count`` 16x16 RGB PNGs of the toy stripes; returns them as the host's loop would see them, in [-1, 1]."""
    from PIL import Image

    folder.mkdir()
    images = real_batch(count, torch.Generator().manual_seed(7))
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:03d}.png")
    return pixels.float() / 127.5 - 1


@pytest.mark.parametrize("marker_images", [5000, 5])
def test_markers_from_a_marker_dataset_use_its_images(host, stage1, tmp_path, marker_images, capsys):
    images = _write_folder(tmp_path / "data", 12)
    spec = {"class_name": "training.dataset.ImageFolderDataset", "path": str(tmp_path / "data"), "xflip": False}
    _, D, augment_pipe, loss = stage2(host, stage1, "rankgan", marker_dataset=spec, marker_images=marker_images)
    augment_pipe.p.fill_(0.0)  # identity pipe: the markers are the frozen D's plain scores
    run_phase(loss, "Dmain", D, real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0))
    count = min(marker_images, 12)
    assert loss.marker_sample_sizes == (count, count)  # the whole set when it is smaller than marker_images
    chosen = torch.randperm(12, generator=torch.Generator().manual_seed(0))[:count]
    with torch.no_grad():
        expected = stage1.D(images[chosen], torch.zeros(count, 0)).double().mean()
    m_high, m_low = loss.markers
    assert m_high == pytest.approx(float(expected), abs=1e-5)
    assert m_low <= m_high
    assert f"from {count} real images and {count} previous-stage fakes" in capsys.readouterr().out
    # Once per stage: a second Dmain keeps them.
    run_phase(loss, "Dmain", D, real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0))
    assert loss.markers == (m_high, m_low)


def test_a_path_is_a_marker_dataset_too(host, stage1, tmp_path):
    _write_folder(tmp_path / "data", 6)
    _, D, _, loss = stage2(host, stage1, "rankgan", marker_dataset=str(tmp_path / "data"))
    run_phase(loss, "Dmain", D, real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0))
    assert loss.marker_sample_sizes == (6, 6)


def test_bad_marker_options_fail_at_construction_by_name(host, stage1, tmp_path):
    G, D, augment_pipe = make_networks(host)
    with pytest.raises(ValueError, match=r"marker_data .* or marker_dataset .*, not both"):
        build_loss(host, G, D, augment_pipe, marker_data=[real_batch(2)], marker_dataset="data")
    with pytest.raises(TypeError, match="marker_dataset must be a data set path or the host's training_set_kwargs"):
        build_loss(host, G, D, augment_pipe, marker_dataset=3)
    with pytest.raises(ValueError, match="marker_images"):
        build_loss(host, G, D, augment_pipe, marker_dataset="data", marker_images=0)
    _, D, _, loss = stage2(host, stage1, "rankgan", marker_dataset={"class_name": "no_such_host.Data", "path": "x"})
    with pytest.raises(ImportError, match=r"marker_dataset needs the host's 'no_such_host\.Data'"):
        run_phase(loss, "Dmain", D, real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0))
