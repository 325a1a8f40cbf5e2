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

import numpy as np
import pytest
import torch

import rankplug.functional as RF
from rankplug.integrations.stylegan2_ada_bank import split_rows

STANDINS = Path(__file__).resolve().parents[1] / "standins" / "stylegan2_ada"
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


# ------------------------------------------------------------------------------------ the previous-stage bank
def _frozen_noise_off(loss):
    # The stand-in's synthesis adds noise_strength * randn per layer; with it at 0 a generator call is a function of
    # its inputs, so a kept G_{i-1} image can be compared with a fresh call on the same row.
    loss.previous_G.synthesis.noise_strength.data.zero_()


def _mixed_by_hand(G, z, c, z2, cutoff):
    ws = G.mapping(z, c, skip_w_avg_update=True).clone()  # the stand-in's ws are an expanded w
    ws2 = G.mapping(z2, c, skip_w_avg_update=True)
    for row, layer in enumerate(cutoff.tolist()):
        if layer > 0:
            ws[row, layer:] = ws2[row, layer:]
    return ws


@pytest.mark.parametrize("variant", ["rankgan", "gogan"])
def test_the_bank_pairs_each_row_exactly_and_gives_the_documented_gradient(host, stage1, variant):
    G, D, augment_pipe, loss = stage2(
        host, stage1, variant, markers=(0.5, -0.5), bank_size=32, style_mixing_prob=0.5, rank_weight=0.5
    )
    _frozen_noise_off(loss)
    G.synthesis.noise_strength.data.zero_()
    augment_pipe.p.fill_(0.0)  # identity: what D sees is the kept image itself
    assert loss.bank is not None and loss.bank.keep == "images"  # an augment pipe: scores would go stale
    live_ws, d_inputs, previous_inputs = [], [], []
    hooks = [
        G.synthesis.register_forward_pre_hook(lambda module, args: live_ws.append(args[0].clone())),
        D.register_forward_pre_hook(lambda module, args: d_inputs.append(args[0].detach().clone())),
        loss.previous_D.register_forward_pre_hook(lambda module, args: previous_inputs.append(args[0].clone())),
    ]
    real, z, c = real_batch(6), torch.randn(6, Z_DIM), torch.zeros(6, 0)
    calls = []
    loss.previous_G.register_forward_pre_hook(lambda module, args: calls.append(1))
    torch.manual_seed(3)
    run_phase(loss, "Dmain", D, real, z, c)
    for hook in hooks:
        hook.remove()
    got = [p.grad.clone() for p in D.parameters()]
    assert loss.bank.filled and loss.bank.z.shape == (32, 2 * Z_DIM + 1) and loss.bank.fills == 1
    cutoffs = loss.bank.z[:, -1]
    assert 0 < int((cutoffs > 0).sum()) < 32  # style mixing drawn per row, about half of them
    assert cutoffs.max() < G.num_ws and cutoffs.min() >= 0

    # Which rows were drawn: the live G's ws name them (each row's own z, and its z2 from its cutoff on).
    (ws,) = live_ws
    rows = []
    for sample in ws:
        matches = [
            r for r in range(32) if torch.allclose(sample, _mixed_by_hand(G, *split_rows(loss.bank.z[r : r + 1], 0))[0])
        ]
        assert len(matches) >= 1
        rows.append(matches[0])
    drawn = loss.bank.z[rows]
    bank_z, bank_c, bank_z2, bank_cut = split_rows(drawn, 0)
    with torch.no_grad():  # the exact pair of Eq. 4: the frozen G_{i-1} on the very same row
        prev_img = stage1.G.synthesis(_mixed_by_hand(stage1.G, bank_z, bank_c, bank_z2, bank_cut), noise_mode="const")
        fake_img = G.synthesis(ws, noise_mode="const")

    D.requires_grad_(True)
    D.zero_grad(set_to_none=True)
    if variant == "rankgan":
        fake_seen, prev_seen, real_seen = d_inputs
        torch.testing.assert_close(prev_seen, prev_img)
        torch.testing.assert_close(fake_seen, fake_img)
        expected = RF.stage_rank_loss(
            D(real_seen, c), D(fake_seen, c), D(prev_seen, c), m_high=0.5, m_low=-0.5, clamp_weight=1.0
        )
    else:
        fake_seen, real_seen = d_inputs
        (prev_seen,) = previous_inputs  # the frozen D_{i-1} on the kept image (augmented at use)
        torch.testing.assert_close(prev_seen, prev_img)
        with torch.no_grad():
            prev_scores = stage1.D(prev_seen, c)
        expected = RF.gogan_rank_loss(D(real_seen, c), D(fake_seen, c), prev_scores, margin=1.0, rank_weight=0.5)
    expected.backward()
    D.requires_grad_(False)
    for mine, theirs in zip(got, (p.grad for p in D.parameters())):
        torch.testing.assert_close(mine, theirs)
    # G_{i-1} ran only to fill the bank: once per fill_batch chunk of rows, never in the Dmain round itself.
    fills_calls = len(calls)
    run_phase(loss, "Dmain", D, real, z, c)
    assert len(calls) == fills_calls and loss.bank.fills == 1 and loss.bank.draws == 2


def test_gogan_without_augmentation_keeps_the_frozen_critics_scores(host, stage1):
    G, D, _ = make_networks(host, seed=1)
    G.load_state_dict(stage1.G.state_dict())
    D.load_state_dict(stage1.D.state_dict())
    loss = build_loss(host, G, D, None, previous=str(stage1.path), variant="gogan", bank_size=16)
    _frozen_noise_off(loss)
    assert loss.bank.keep == "scores"
    real, z, c = real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0)
    run_phase(loss, "Dmain", D, real, z, c)  # fills the bank: G_{i-1} and D_{i-1} on its 16 rows
    assert loss.bank.images is None and loss.bank.scores.shape == (16,)
    with torch.no_grad():
        z_rows, c_rows, z2_rows, cut_rows = split_rows(loss.bank.z, 0)
        ws = _mixed_by_hand(stage1.G, z_rows, c_rows, z2_rows, cut_rows)
        again = stage1.D(stage1.G.synthesis(ws, noise_mode="const"), c_rows)
    torch.testing.assert_close(loss.bank.scores, again.flatten())
    calls = []
    for frozen in (loss.previous_G, loss.previous_D):
        frozen.register_forward_pre_hook(lambda module, args: calls.append(type(module).__name__))
    for phase in PHASES:
        run_phase(loss, phase, G if phase.startswith("G") else D, real, z, c)
    assert calls == []  # neither frozen network runs once the bank is filled
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())


def test_the_bank_refreshes_and_fails_clearly(host, stage1, tmp_path):
    G, D, augment_pipe, loss = stage2(host, stage1, "rankgan", markers=(0.5, -0.5), bank_size=8, bank_refresh_every=2)
    real, z, c = real_batch(4), torch.randn(4, Z_DIM), torch.zeros(4, 0)
    first = []
    for _ in range(5):
        run_phase(loss, "Dmain", D, real, z, c)
        first.append(loss.bank.z.clone())
    assert loss.bank.fills == 3  # filled at draws 1, 3 and 5
    assert torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    G, D, augment_pipe = make_networks(host)
    with pytest.raises(ValueError, match="bank_size must be an int >= 0; got -1"):
        build_loss(host, G, D, augment_pipe, previous=str(stage1.path), bank_size=-1)
    with pytest.raises(
        ValueError, match="bank_device must be None or a device such as 'cpu', 'cuda' or 'cuda:0'; got 'foo'"
    ):
        build_loss(host, G, D, augment_pipe, previous=str(stage1.path), bank_size=8, bank_device="foo")
    with pytest.raises(ValueError, match=r"bank_device must be None, 'cpu' or .*; got 'cuda:99'"):
        build_loss(host, G, D, augment_pipe, previous=str(stage1.path), bank_size=8, bank_device="cuda:99")
    # Conditional data: the bank's labels come from the data set, so it needs marker_dataset.
    Gc, Dc, pipe = make_networks(host, c_dim=3)
    loss = build_loss(host, Gc, Dc, pipe, previous=(Gc, Dc), markers=(0.5, -0.5), bank_size=8)
    labels = torch.eye(3)[torch.tensor([0, 1, 2, 1])]
    with pytest.raises(ValueError, match="pass marker_dataset"):
        run_phase(loss, "Dmain", Dc, real, torch.randn(4, Z_DIM), labels)


def test_a_conditional_bank_draws_the_data_sets_labels(host, monkeypatch):
    table = np.eye(3, dtype=np.float32)[[0, 2, 2, 2]]  # a data set with one image of class 0, three of class 2

    class Labelled:
        def __init__(self, path, **options):
            self.path = path

        def __len__(self):
            return len(table)

        def get_label(self, index):
            return table[index]

    module = types.ModuleType("labelled_data")
    module.Labelled = Labelled
    monkeypatch.setitem(sys.modules, "labelled_data", module)
    G, D, pipe = make_networks(host, c_dim=3)
    loss = build_loss(
        host, G, D, pipe, previous=(G, D), markers=(0.5, -0.5), bank_size=400,
        marker_dataset={"class_name": "labelled_data.Labelled", "path": "data.zip"},
    )  # fmt: skip
    seen = []
    D.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    torch.manual_seed(0)
    run_phase(loss, "Dmain", D, real_batch(4), torch.randn(4, Z_DIM), torch.eye(3)[[1, 1, 1, 1]])
    bank_c = split_rows(loss.bank.z, 3)[1]
    assert set(map(tuple, bank_c.tolist())) == {(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)}  # never the host's class 1
    assert 0.15 < float(bank_c[:, 0].mean()) < 0.35  # class 0 is a quarter of the data set
    fake_c, prev_c, real_c = seen  # the fakes of both stages get their rows' labels, the reals their own
    torch.testing.assert_close(fake_c, prev_c)
    assert fake_c[:, 1].sum() == 0 and real_c[:, 1].sum() == 4


def test_a_host_schedule_trains_with_the_bank(host, stage1):
    G, D, augment_pipe, loss = stage2(host, stage1, "rankgan", bank_size=64, bank_device="cpu")
    host.stats.reset()
    _, history = host_train(host, loss, G, D, augment_pipe, iterations=6)
    assert all(math.isfinite(v) for entry in history for v in entry.values())
    assert loss.bank.fills == 1 and loss.bank.draws == 6 * 2  # one Dmain round per batch_gpu chunk (8 / 4)
