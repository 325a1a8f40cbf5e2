"""The previous-stage bank: exact pairs (RankGAN / GoGAN Eq. 4), fills and refreshes, memory, save/load, DDP."""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from rankplug.app.training import TrainConfig, train
from rankplug.stages import CheckpointError, PreviousStageBank, StageManager, bank_bytes


def small_gan() -> tuple[nn.Module, nn.Module]:
    # BatchNorm in G: a frozen copy is in eval mode, so a sample does not depend on the batch it is made in.
    generator = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6))
    discriminator = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    return generator, discriminator


def manager_at_stage_2(bank: PreviousStageBank, **kwargs) -> StageManager:
    torch.manual_seed(0)
    generator, discriminator = small_gan()
    manager = StageManager(generator, discriminator, latent_shape=4, bank=bank, **kwargs)
    generator(torch.randn(16, 4))  # BatchNorm statistics that differ from the initial ones
    manager.advance()
    return manager


def train_live_step(manager: StageManager) -> None:
    with torch.no_grad():
        for parameter in list(manager.generator.parameters()) + list(manager.discriminator.parameters()):
            parameter.add_(0.1)


# ------------------------------------------------------------------------------------------------ exact pairs
def test_drawn_rows_are_the_frozen_stage_outputs_on_the_drawn_latents():
    manager = manager_at_stage_2(PreviousStageBank(40, keep="both", fill_batch=7))  # fills in ragged chunks
    train_live_step(manager)  # the live networks move on; the frozen ones, and the bank, do not
    for _ in range(3):
        draw = manager.draw_previous(9)
        images = manager.previous.generator(draw.z)
        torch.testing.assert_close(draw.images, images)  # RankGAN Eq. 4: G_{i-1}(z) for this very z
        torch.testing.assert_close(draw.scores, manager.previous.discriminator(images).flatten())  # GoGAN Eq. 4
        assert not draw.images.requires_grad and not draw.scores.requires_grad
    live = manager.generator(draw.z)  # the same z feeds the live generator
    assert not torch.allclose(live, draw.images)


def test_a_bank_keeps_only_what_it_is_asked_for():
    images = manager_at_stage_2(PreviousStageBank(8, keep="images")).draw_previous(4)
    scores = manager_at_stage_2(PreviousStageBank(8, keep="scores")).draw_previous(4)
    assert images.images.shape == (4, 6) and images.scores is None
    assert scores.images is None and scores.scores.shape == (4,)


def test_rows_are_drawn_from_the_bank_latents():
    manager = manager_at_stage_2(PreviousStageBank(5, keep="images"))
    draw = manager.draw_previous(50)
    bank_z = manager.bank.z
    assert all(any(torch.equal(z, row) for row in bank_z) for z in draw.z)
    assert len({tuple(z.tolist()) for z in draw.z}) > 1


def test_take_returns_the_asked_rows_counts_a_draw_and_refuses_bad_rows():
    manager = manager_at_stage_2(PreviousStageBank(6, keep="both"))
    manager.fill_bank()
    bank = manager.bank
    draw = bank.take(torch.tensor([5, 0, 5]), torch.device("cpu"))
    torch.testing.assert_close(draw.z, bank.z[[5, 0, 5]])
    torch.testing.assert_close(draw.images, bank.images[[5, 0, 5]])
    torch.testing.assert_close(draw.scores, bank.scores[[5, 0, 5]])
    assert bank.draws == 1
    for rows, message in (
        (torch.tensor([0, 6]), r"rows must lie in \[0, 6\); got 0..6"),
        (torch.tensor([-1]), r"rows must lie in \[0, 6\)"),
        (torch.tensor([[0]]), "rows must be a 1-D int32 / int64 tensor"),
        (torch.tensor([0.0]), "rows must be a 1-D int32 / int64 tensor"),
    ):
        with pytest.raises(ValueError, match=message):
            bank.take(rows, torch.device("cpu"))
    assert bank.draws == 1  # a refused take changes nothing
    with pytest.raises(ValueError, match="the bank is empty"):
        PreviousStageBank(3).take(torch.tensor([0]), torch.device("cpu"))


def test_a_critic_that_sees_the_latents_scores_each_chunk_with_its_own_rows():
    bank = PreviousStageBank(10, keep="scores", fill_batch=3)  # ragged chunks: 3, 3, 3, 1
    rows = torch.cat([torch.randn(10, 4), torch.arange(10.0)[:, None]], dim=1)  # [z | label]
    generator = torch.nn.Linear(4, 2)
    seen = []

    def critic(fake, chunk):
        seen.append(chunk.shape[0])
        return fake.sum(1) + 100 * chunk[:, -1]  # the label must come from the chunk that made fake

    bank.fill(2, rows, lambda chunk: generator(chunk[:, :-1]), critic, lambda out: out, critic_sees_latents=True)
    with torch.no_grad():
        expected = generator(rows[:, :-1]).sum(1) + 100 * rows[:, -1]
    torch.testing.assert_close(bank.scores, expected)
    assert seen == [3, 3, 3, 1]


# ----------------------------------------------------------------------------------------- fills and refreshes
def test_bank_fills_once_per_stage_refreshes_on_schedule_and_empties_at_advance():
    manager = manager_at_stage_2(PreviousStageBank(16, keep="images", refresh_every=3))
    assert not manager.bank.filled and manager.bank_due
    manager.draw_previous(4)
    first = manager.bank.z.clone()
    manager.draw_previous(4)
    manager.draw_previous(4)
    assert manager.bank.fills == 1 and torch.equal(manager.bank.z, first) and manager.bank_due
    manager.draw_previous(4)  # the 4th draw re-draws the bank first
    assert manager.bank.fills == 2 and not torch.equal(manager.bank.z, first)
    train_live_step(manager)
    manager.advance()  # stage 3: the frozen stage changed, so its outputs must be made again
    assert not manager.bank.filled and manager.memory_footprint() == manager_footprint_without_bank(manager)
    draw = manager.draw_previous(4)
    assert manager.bank.stage == 3
    torch.testing.assert_close(draw.images, manager.previous.generator(draw.z))


def manager_footprint_without_bank(manager: StageManager) -> dict[str, int]:
    bank, manager.bank = manager.bank, None
    try:
        return manager.memory_footprint()
    finally:
        manager.bank = bank


def test_without_refresh_the_bank_lasts_the_stage():
    manager = manager_at_stage_2(PreviousStageBank(16, keep="scores"))
    for _ in range(20):
        manager.draw_previous(4)
    assert manager.bank.fills == 1 and manager.bank.draws == 20


def test_memory_cost_is_the_documented_formula():
    for keep in ("images", "scores", "both"):
        manager = manager_at_stage_2(PreviousStageBank(32, keep=keep))
        before = manager.memory_footprint()["bytes"]
        manager.fill_bank()
        assert manager.bank.nbytes == bank_bytes(32, (4,), (6,), keep)
        assert manager.memory_footprint()["bytes"] - before == manager.bank.nbytes
    assert bank_bytes(4096, (32,), (1, 8, 8), "images") == 4096 * (32 + 64) * 4


def test_bank_device_holds_the_bank_and_draws_go_to_the_generator():
    manager = manager_at_stage_2(PreviousStageBank(8, keep="both", device="cpu"))
    draw = manager.draw_previous(3)
    assert all(t.device.type == "cpu" for t in manager.bank.tensors().values())
    assert draw.z.device == next(manager.generator.parameters()).device


def test_bank_with_an_encoder_fills_from_real_images():
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(6, 8)

        def forward(self, x):
            return self.net(x).chunk(2, dim=1)

    torch.manual_seed(0)
    generator, discriminator = small_gan()
    manager = StageManager(generator, discriminator, encoder=Encoder(), latent_shape=4, bank=PreviousStageBank(10))
    manager.advance()
    assert manager.bank_due
    with pytest.raises(ValueError, match="pass real_batches holding at least 10 images"):
        manager.draw_previous(4)
    with pytest.raises(ValueError, match="real_batches hold 8 images; the bank needs 10"):
        manager.fill_bank([torch.randn(8, 6)])
    manager.fill_bank([(torch.randn(6, 6), torch.zeros(6)), torch.randn(6, 6), torch.randn(6, 6)])
    assert manager.bank.z.shape == (10, 4) and not manager.bank_due
    draw = manager.draw_previous(4)
    torch.testing.assert_close(draw.images, manager.previous.generator(draw.z))


# --------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"size": 0}, ValueError, "size must be an int >= 1; got 0"),
        ({"size": 2.5}, TypeError, "size must be an int >= 1; got float"),
        ({"size": 4, "keep": "fakes"}, ValueError, "keep must be one of"),
        ({"size": 4, "refresh_every": 0}, ValueError, "refresh_every must be an int >= 1; got 0"),
        ({"size": 4, "fill_batch": -1}, ValueError, "fill_batch must be an int >= 1; got -1"),
        ({"size": 4, "device": 3}, TypeError, "device must be None, a str or a torch.device; got int"),
    ],
)
def test_bad_bank_settings_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        PreviousStageBank(**kwargs)


def test_an_unknown_bank_device_is_a_value_error_naming_device():
    with pytest.raises(
        ValueError, match="device must be None or a device such as 'cpu', 'cuda' or 'cuda:0'; got 'foo'"
    ):
        PreviousStageBank(4, device="foo")


def test_a_cuda_bank_without_cuda_is_refused_at_construction(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine, whatever it has
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="device must be None, 'cpu' or an available device; got 'cuda', and CUDA"):
        PreviousStageBank(4, device="cuda")


def test_a_bank_larger_than_memory_is_refused_at_construction():
    # 10**12 rows of at least two float32 values (z, G(z)): 8 TB, more than any machine here holds
    with pytest.raises(
        ValueError, match=r"size must be at most \d+ on cpu, whatever the shapes .*; got 1000000000000$"
    ):
        PreviousStageBank(10**12)


def test_bank_misuse_is_refused():
    generator, discriminator = small_gan()
    with pytest.raises(TypeError, match="bank must be a PreviousStageBank or None; got int"):
        StageManager(generator, discriminator, latent_shape=4, bank=16)
    manager = StageManager(generator, discriminator, latent_shape=4, bank=PreviousStageBank(4))
    with pytest.raises(ValueError, match="call advance\\(\\) first"):
        manager.draw_previous(2)
    assert not manager.bank_due
    without = StageManager(generator, discriminator, latent_shape=4)
    without.advance()
    with pytest.raises(ValueError, match="this manager has no bank"):
        without.fill_bank()
    manager.advance()
    with pytest.raises(ValueError, match="n must be an int >= 1; got 0"):
        manager.draw_previous(0)


# ------------------------------------------------------------------------------------------------- save/load
def registered(manager: StageManager) -> StageManager:
    manager.register("opt_d", torch.optim.Adam(manager.discriminator.parameters(), lr=1e-3))
    return manager


def test_bank_survives_save_and_load_and_draws_continue_bit_for_bit(tmp_path):
    manager = registered(manager_at_stage_2(PreviousStageBank(24, keep="both", refresh_every=5)))
    for _ in range(3):
        manager.draw_previous(4)
    manager.save(tmp_path)
    expected = [manager.draw_previous(4) for _ in range(4)]  # crosses a refresh (draws 4 and 5, then a fill)

    fresh = registered(manager_at_stage_2(PreviousStageBank(24, keep="both", refresh_every=5)))
    fresh.load(tmp_path)
    assert fresh.bank.draws == 3 and fresh.bank.fills == 1 and fresh.bank.stage == 2
    for want in expected:
        got = fresh.draw_previous(4)
        for a, b in zip(want, got):
            assert torch.equal(a, b)
    assert fresh.bank.fills == 2


def test_checkpoint_without_a_filled_bank_empties_the_bank(tmp_path):
    manager = manager_at_stage_2(PreviousStageBank(8))
    manager.save(tmp_path)  # the bank is empty: saved as None
    loaded = manager_at_stage_2(PreviousStageBank(8))
    loaded.draw_previous(2)
    loaded.load(tmp_path)
    assert not loaded.bank.filled
    plain = StageManager(*small_gan(), latent_shape=4)
    plain.advance()
    state = plain.state_dict()
    assert "bank" not in state  # a manager without a bank writes checkpoints as before
    loaded.load_state_dict(state)  # and they load into one with a bank, which starts empty
    assert not loaded.bank.filled


def _bank_state(manager: StageManager) -> dict:
    return copy.deepcopy(manager.state_dict())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["bank"].update(size=25), "checkpoint bank has size 25; this manager's bank has 24"),
        (lambda s: s["bank"].update(keep="images"), "checkpoint bank has keep 'images'"),
        (lambda s: s["bank"].update(stage=3), "checkpoint bank is for stage 3; expected the checkpoint's stage 2"),
        (lambda s: s["bank"].update(draws=-1), "bank\\['draws'\\] must be an int >= 0"),
        (lambda s: s["bank"].update(ranks=[]), "must be a non-empty list"),
        (lambda s: s["bank"]["ranks"][0].update(z=torch.zeros(24, 5)), "has shape \\(24, 5\\); expected \\(24, 4\\)"),
        (lambda s: s["bank"]["ranks"][0].update(scores=torch.zeros(23)), "has shape \\(23,\\); expected \\(24,\\)"),
        (lambda s: s["bank"]["ranks"][0].update(images=torch.zeros(24, 6).long()), "must be a floating-point"),
        (lambda s: s["bank"]["ranks"][0].pop("images"), "missing \\['images'\\]"),
        (lambda s: s["bank"].pop("fills"), "missing \\['fills'\\]"),
    ],
)
def test_a_bank_that_does_not_fit_is_refused_and_nothing_changes(edit, message):
    assert_refused_and_nothing_changes(edit, message)


def assert_refused_and_nothing_changes(edit, message: str) -> None:
    source = manager_at_stage_2(PreviousStageBank(24, keep="both"))
    source.draw_previous(4)
    state = _bank_state(source)
    edit(state)
    target = manager_at_stage_2(PreviousStageBank(24, keep="both"))
    target.draw_previous(4)
    before = target.bank.snapshot()
    weights = copy.deepcopy(target.discriminator.state_dict())
    with pytest.raises(CheckpointError, match=message):
        target.load_state_dict(state)
    assert target.bank.snapshot() == before  # the same tensors, draws and fills
    for key, value in target.discriminator.state_dict().items():
        assert torch.equal(value, weights[key])


# The findings of the external probe on saved banks: each loaded without complaint before.
def test_saved_bank_images_of_another_shape_than_the_generator_makes_are_refused():
    def edit(state):
        state["bank"]["ranks"][0]["images"] = torch.zeros(24, 7)  # G_{i-1} makes (24, 6)

    assert_refused_and_nothing_changes(
        edit, r"bank\['ranks'\]\[0\]\['images'\] has shape \(24, 7\); expected \(24, 6\), the previous generator"
    )


def test_saved_float16_bank_images_are_refused_on_the_cpu():
    def edit(state):
        images = state["bank"]["ranks"][0]["images"]
        state["bank"]["ranks"][0]["images"] = images.half()  # no fill on the CPU makes float16

    assert_refused_and_nothing_changes(
        edit, r"bank\['ranks'\]\[0\]\['images'\] has dtype torch.float16; expected one of torch.float32, torch.bfloat16"
    )


def test_a_saved_refresh_every_that_is_not_an_int_is_refused():
    assert_refused_and_nothing_changes(
        lambda s: s["bank"].update(refresh_every="5"),
        r"bank\['refresh_every'\] must be None or an int >= 1; got str",
    )


def test_saved_bank_counts_beyond_int64_are_refused():
    assert_refused_and_nothing_changes(
        lambda s: s["bank"].update(draws=10**30),
        r"bank\['draws'\] must be an int in \[0, 9223372036854775807\]; got 1000000000000000000000000000000",
    )


def test_a_bank_filled_under_autocast_still_resumes_bit_for_bit(tmp_path):
    manager = manager_at_stage_2(PreviousStageBank(8, keep="both"))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the trainer's --amp fills it on the CPU
        manager.draw_previous(2)
    assert manager.bank.images.dtype == torch.bfloat16 and manager.bank.z.dtype == torch.float32
    manager.save(tmp_path)
    expected = manager.draw_previous(2)
    fresh = manager_at_stage_2(PreviousStageBank(8, keep="both"))
    fresh.load(tmp_path)
    for want, got in zip(expected, fresh.draw_previous(2)):
        assert torch.equal(want, got)


def test_a_bank_checkpoint_into_a_manager_without_a_bank_is_refused():
    source = manager_at_stage_2(PreviousStageBank(8))
    source.draw_previous(2)
    target = StageManager(*small_gan(), latent_shape=4)
    target.advance()
    with pytest.raises(CheckpointError, match="holds a previous-stage bank but this manager has none"):
        target.load_state_dict(source.state_dict())


def test_a_failed_apply_puts_the_bank_back():
    class Refuses:
        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            raise RuntimeError("no")

    source = manager_at_stage_2(PreviousStageBank(8))
    source.register("thing", Refuses())
    source.draw_previous(2)
    state = source.state_dict()
    target = manager_at_stage_2(PreviousStageBank(8))
    target.register("thing", Refuses())
    target.draw_previous(2)
    target.draw_previous(2)
    before = target.bank.snapshot()
    with pytest.raises(CheckpointError):
        target.load_state_dict(state)
    assert target.bank.snapshot() == before


# ------------------------------------------------------------------------------------------------------ DDP
def _ddp_worker(rank: int, world: int, init_file: str, directory: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)  # each rank its own random state, as the trainer seeds them
        generator, discriminator = small_gan()
        torch.manual_seed(0)
        manager = StageManager(generator, discriminator, latent_shape=4, bank=PreviousStageBank(6, keep="both"))
        manager.advance()
        torch.manual_seed(100 + rank)
        manager.draw_previous(2)
        mine = manager.bank.z.clone()
        manager.save(directory)
        fresh = StageManager(*small_gan(), latent_shape=4, bank=PreviousStageBank(6, keep="both"))
        fresh.load(directory)
        results[rank] = (mine.tolist(), fresh.bank.z.tolist(), fresh.bank.draws)
        dist.barrier()  # the ranks leave together (a lone gloo exit can abort)
    finally:
        dist.destroy_process_group()


def test_each_rank_keeps_its_own_bank_through_save_and_load(tmp_path):
    init_file = tempfile.mktemp(dir=tmp_path)
    with mp.Manager() as shared:
        results = shared.dict()
        mp.spawn(_ddp_worker, args=(2, init_file, str(tmp_path / "run"), results), nprocs=2, join=True)
        results = dict(results)
    (mine0, loaded0, draws0), (mine1, loaded1, draws1) = results[0], results[1]
    assert mine0 != mine1  # two ranks, two banks
    assert loaded0 == mine0 and loaded1 == mine1 and draws0 == draws1 == 1


def test_loading_a_bank_written_by_another_number_of_ranks_empties_it():
    source = manager_at_stage_2(PreviousStageBank(8))
    source.draw_previous(2)
    state = source.state_dict()
    state["bank"]["ranks"] = state["bank"]["ranks"] * 2  # as two ranks write it
    target = manager_at_stage_2(PreviousStageBank(8))
    with pytest.warns(RuntimeWarning, match="written by 2 rank\\(s\\) and this run has 1"):
        target.load_state_dict(state)
    assert not target.bank.filled


# --------------------------------------------------------------------------------------------------- trainer
def test_train_config_bank_settings_are_validated():
    assert TrainConfig().bank_size == 0 and TrainConfig().bank_refresh == 0
    with pytest.raises(ValueError, match="bank_size must be an int in \\[0, 100000000\\]; got -1"):
        TrainConfig(bank_size=-1)
    with pytest.raises(
        ValueError, match="bank_size is for the staged methods \\(rankgan, gogan\\); got method 'wgan-gp'"
    ):
        TrainConfig(method="wgan-gp", bank_size=64)
    with pytest.raises(ValueError, match="bank_refresh needs a bank"):
        TrainConfig(method="gogan", bank_refresh=10)


@pytest.mark.parametrize(("method", "keep"), [("gogan", "scores"), ("rankgan", "images")])
def test_trainer_draws_stage_2_critic_latents_from_the_bank(method, keep, monkeypatch):
    config = TrainConfig(
        method=method,
        stages=2,
        steps_per_stage=4,
        log_every=2,
        size=8,
        batch_size=8,
        width=4,
        n_critic=2,
        marker_images=16,
        bank_size=32,
        bank_refresh=5,
    )
    from rankplug.app.training import loop

    seen = {}
    original = loop.Trainer.bank_draw

    def spy(self, n):
        draw = original(self, n)
        seen.setdefault("bank", self.manager.bank)
        seen["draws"] = seen.get("draws", 0) + 1
        # the frozen stage's outputs on the drawn z, as the step without a bank would make them
        previous = self.manager.previous
        images = previous.generator(draw.z)
        if keep == "images":
            torch.testing.assert_close(draw.images, images)
        else:
            torch.testing.assert_close(draw.scores, previous.discriminator(images).flatten())
        return draw

    monkeypatch.setattr(loop.Trainer, "bank_draw", spy)
    from rankplug.app.data import DigitsDataset

    result = train(config, dataset=DigitsDataset(8))
    assert result["generator_steps"] == 8
    assert seen["draws"] == 4 * 2  # stage 2 only: 4 generator steps of 2 critic steps
    assert seen["bank"].keep == keep and seen["bank"].fills == 2  # 8 draws, a refresh after 5


def test_a_trainer_bank_too_large_for_memory_is_a_clear_error_before_its_images_are_kept(monkeypatch):
    from rankplug.app.data import DigitsDataset
    from rankplug.stages import bank

    # --bank-size 10**8 on a machine without 38 GiB, scaled down: room for the latents, not for the 8x8 images
    memory = 10_000 * bank_bytes(1, (32,), (1,), "images")
    monkeypatch.setattr(bank, "device_memory", lambda device: memory)
    config = TrainConfig(stages=2, steps_per_stage=2, log_every=1, size=8, batch_size=8, width=4, bank_size=10_000)
    largest = memory // bank_bytes(1, (32,), (1, 8, 8), "images")
    with pytest.raises(
        ValueError, match=rf"size must be at most {largest} on cpu, for latents \(32,\) and images \(1, 8, 8\)"
    ):
        train(config, dataset=DigitsDataset(8))


def test_trainer_checkpoints_at_a_stage_end_without_the_spent_bank(tmp_path):
    from rankplug.app.data import DigitsDataset
    from rankplug.stages import CHECKPOINT_NAME
    from rankplug.stages.checkpoint import safe_load

    config = TrainConfig(
        method="gogan",
        stages=2,
        steps_per_stage=2,
        log_every=1,
        size=8,
        batch_size=8,
        width=4,
        n_critic=1,
        bank_size=16,
    )
    first = train(config, dataset=DigitsDataset(8), directory=tmp_path)
    state = safe_load(tmp_path / CHECKPOINT_NAME)
    assert state["stage"] == 2 and state["bank"] is None  # written after stage 2 ended: nothing left to reuse
    grown = train(config.replace(stages=3), dataset=DigitsDataset(8), directory=tmp_path)  # resumes, stage 3
    assert grown["resumed"] and grown["generator_steps"] == first["generator_steps"] + 2
