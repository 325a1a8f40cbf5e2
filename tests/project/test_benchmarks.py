"""The benchmarks' measuring code, in tiny mode: structure and the facts the figures rest on (never timings)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from benchmarks import _common, aam, stage_memory, stage_overhead, triplet
from benchmarks._models import build

CPU = torch.device("cpu")


def test_interleaved_medians_structure():
    calls = {"a": 0, "b": 0}

    def bump(name):
        def fn():
            calls[name] += 1

        return fn

    out = _common.interleaved_medians({"a": bump("a"), "b": bump("b")}, CPU, rounds=3, iterations=2, warmup=1)
    assert set(out) == {"a", "b"}
    for entry in out.values():
        assert entry["rounds"] == 3 and entry["iterations"] == 2 and len(entry["samples_s"]) == 3
        assert entry["q1_s"] <= entry["median_s"] <= entry["q3_s"]
        assert entry["sys_mean_s"] >= 0 and entry["minor_faults_mean"] >= 0
    assert calls == {"a": 1 + 3 * 2, "b": 1 + 3 * 2}


def test_interleaved_medians_count_the_page_faults_of_fresh_memory():
    # Touching 64 MiB of freshly mapped memory faults in its pages (4 KiB each): the counter must see them.
    def touch():
        torch.ones(16 * 2**20, dtype=torch.float32).sum()

    out = _common.interleaved_medians({"touch": touch}, CPU, rounds=2, iterations=1, warmup=0)
    assert out["touch"]["minor_faults_mean"] > 1000


def test_set_malloc_rejects_an_unknown_mode_and_records_default():
    with pytest.raises(ValueError, match="malloc must be one of tuned, default; got 'fast'"):
        _common.set_malloc("fast")
    assert _common.set_malloc("default") == {"mode": "default"}
    assert _common.machine_info(CPU)["malloc"] == {"mode": "default"}


def test_set_malloc_tuned_sets_glibc_heap_options(tmp_path):
    # In a child process: the tuned heap never trims, which this test process should not inherit.
    import platform
    import subprocess

    code = (
        "import json, torch; from benchmarks import _common; "
        "print(json.dumps(_common.set_malloc('tuned'))); torch.ones(2**22).sum()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    state = json.loads(done.stdout.strip().splitlines()[-1])
    if platform.libc_ver()[0] == "glibc":
        assert state == {"mode": "tuned", **_common.MALLOC_TUNED}
    else:
        assert state["mode"] == "default" and "needs glibc" in state["note"]


def test_record_has_machine_details(tmp_path):
    machine = _common.machine_info(CPU)
    path = _common.write_record(tmp_path / "r.json", "aam", ["--quick"], machine, {"x": 1}, {"y": [1, 2]})
    record = json.loads(path.read_text())
    assert tuple(record) == _common.RECORD_KEYS
    assert set(_common.MACHINE_KEYS) <= set(record["machine"]) and "load_average_end" in record["machine"]
    assert record["machine"]["malloc"]["mode"] in _common.MALLOC_MODES
    assert record["machine"]["torch"] == torch.__version__ and record["machine"]["device"] == "cpu"
    assert record["command"] == "python -m benchmarks.aam --quick"


def test_nonfinite_rows_counts_samples():
    grad = torch.zeros(5, 2, 3)
    grad[1, 0, 0] = float("nan")
    grad[3, 1, 2] = float("inf")
    grad[3, 0, 0] = float("-inf")
    assert _common.nonfinite_rows(grad) == 2
    assert _common.nonfinite_rows(None) == 0
    assert _common.split_evenly(10, 4) == [3, 3, 2, 2]


# ---------------------------------------------------------------------------------------------- stage overhead
def test_efficiency_arithmetic():
    def entry(ms):
        return {"median_s": ms / 1e3, "samples_s": [ms / 1e3] * 3}

    times = {
        "baseline": entry(100),
        "gogan": entry(130),
        "rankgan": entry(160),
        "rankgan_batched": entry(150),
        "floor_g_prev": entry(20),
        "floor_d_prev": entry(10),
        "floor_d_fwd_bwd": entry(40),
        "frozen_g_rankplug": entry(22),
        "gogan_bank": entry(103),
        "rankgan_bank": entry(118),
    }
    s = stage_overhead.summarise(times)
    assert s["rankgan_efficiency"] == pytest.approx(60 / 60)  # (160 - 100) / (20 + 40)
    assert s["gogan_efficiency"] == pytest.approx(30 / 30)
    assert s["rankgan_batched_efficiency"] == pytest.approx(50 / 60)
    assert s["rankgan_ratio"] == pytest.approx(1.6) and s["gogan_ratio"] == pytest.approx(1.3)
    assert s["rankgan_floor_ms"] == pytest.approx(160) and s["gogan_floor_ms"] == pytest.approx(130)
    assert s["gogan_bank_ratio"] == pytest.approx(1.03) and s["rankgan_bank_ratio"] == pytest.approx(1.18)
    # The fill (one per stage) spread over STAGE_CRITIC_STEPS baseline steps.
    fills = {"scores_fill_s": 5.0, "images_fill_s": 10.0, "scores_mib": 1.0, "images_mib": 2.0}
    s = stage_overhead.summarise(times, fills)
    steps = stage_overhead.STAGE_CRITIC_STEPS
    assert s["gogan_bank_amortised_ratio"] == pytest.approx(1.03 + 5.0 / (steps * 0.1))
    assert s["rankgan_bank_amortised_ratio"] == pytest.approx(1.18 + 10.0 / (steps * 0.1))
    assert s["rankgan_bank_fill_ms"] == pytest.approx(10_000) and s["gogan_bank_mib"] == 1.0
    verdicts = stage_overhead.bank_verdicts([{"model": "m", "summary": s}])
    assert verdicts["gogan_bank_ratio"]["met"] == (1.03 + 5.0 / (steps * 0.1) <= 1.05)
    assert verdicts["rankgan_bank_ratio"]["worst"] == pytest.approx(s["rankgan_bank_amortised_ratio"])
    # The interval's upper end carries the fill too; a median under the target with an interval over it is "met"
    # at the median only.
    s["rankgan_bank_ratio_ci90_high"] = 1.19
    verdicts = stage_overhead.bank_verdicts([{"model": "m", "summary": s}, {"model": "n", "summary": dict(s)}])
    entry = verdicts["rankgan_bank_ratio"]
    assert entry["worst_ci90_high"] == pytest.approx(1.19 + 10.0 / (steps * 0.1))
    assert entry["met"] == (s["rankgan_bank_amortised_ratio"] <= 1.20)
    assert entry["met_at_ci90_high"] == (1.19 + 10.0 / (steps * 0.1) <= 1.20)


@pytest.mark.parametrize("model", ["dcgan32", "dcgan64", "stylegan2_ada"])
def test_models_have_the_stated_shapes(model):
    nets = build(model, width=2, nz=4)
    images = nets["G"](torch.randn(2, *nets["latent_shape"]))
    assert images.shape == (2, *nets["image_shape"])
    assert nets["D"](images).shape == (2, 1)


def test_stage_overhead_measures_every_configuration():
    result = stage_overhead.measure(
        "stylegan2_ada", batch=2, device=CPU, rounds=1, iterations=1, width=4, nz=8, bank_size=32
    )
    assert set(result["times"]) == {
        "baseline",
        "gogan",
        "rankgan",
        "rankgan_batched",
        "floor_g_prev",
        "floor_d_prev",
        "floor_d_fwd_bwd",
        "frozen_g_rankplug",
        "gogan_bank",
        "rankgan_bank",
        "baseline_batched",
        "rankgan_bank_batched",
    }
    assert {"rankgan_efficiency", "gogan_efficiency", "rankgan_ratio", "gogan_ratio"} <= set(result["summary"])
    assert {"gogan_bank_ratio", "rankgan_bank_ratio", "gogan_bank_amortised_ratio"} <= set(result["summary"])
    assert {"rankgan_bank_batched_ratio", "baseline_batched_ms"} <= set(result["summary"])
    assert result["bank"]["images_mib"] > 0 and result["bank"]["size"] == 32


def test_stage_steps_train_the_live_critic_only():
    steps, manager = stage_overhead.make_steps("dcgan32", batch=2, device=CPU, width=4, nz=8, bank_size=16)
    for name in ("rankgan", "gogan", "rankgan_bank", "gogan_bank"):
        live = [p.detach().clone() for p in manager.discriminator.parameters()]
        frozen = [p.detach().clone() for p in manager.previous.discriminator.parameters()]
        steps[name]()
        assert any(not torch.equal(a, p) for a, p in zip(live, manager.discriminator.parameters())), name
        assert all(torch.equal(a, p) for a, p in zip(frozen, manager.previous.discriminator.parameters())), name


def test_bank_steps_draw_the_frozen_outputs_of_the_same_stage():
    steps, manager = stage_overhead.make_steps("dcgan32", batch=2, device=CPU, width=4, nz=8, bank_size=16)
    steps["rankgan_bank"]()
    steps["gogan_bank"]()
    images, scores = manager.banks["images"], manager.banks["scores"]
    assert images.bank.keep == "images" and scores.bank.keep == "scores"
    assert images.bank.fills == scores.bank.fills == 1 and images.bank.draws == 1
    # the banks' frozen stage holds the same weights as the manager's: the same G_1 and D_1
    for bank_manager in (images, scores):
        for a, b in zip(bank_manager.previous.generator.parameters(), manager.previous.generator.parameters()):
            assert torch.equal(a, b)
    draw = scores.draw_previous(3)
    expected = manager.previous.discriminator(manager.previous.generator(draw.z)).flatten()
    torch.testing.assert_close(draw.scores, expected)


def test_amp_and_channels_last_steps_run():
    steps, manager = stage_overhead.make_steps(
        "dcgan32", batch=2, device=CPU, amp=True, channels_last=True, width=4, nz=8, bank_size=16
    )
    for name in ("baseline", "gogan", "rankgan", "rankgan_batched", "floor_d_fwd_bwd", "gogan_bank", "rankgan_bank"):
        steps[name]()
    assert all(torch.isfinite(p).all() for p in manager.discriminator.parameters())


# ------------------------------------------------------------------------------------------------ stage memory
def test_stage_memory_is_flat_in_tensor_bytes():
    records = stage_memory.measure(CPU, stages=8, steps=1, batch=2, width=2)
    assert [r["stage"] for r in records] == list(range(2, 9))
    assert records[-1]["tensor_bytes"] == records[0]["tensor_bytes"]
    assert len({r["manager_bytes"] for r in records}) == 1
    assert stage_memory.spread([100, 104, None, 102]) == pytest.approx(0.04)


# --------------------------------------------------------------------------------------------- NaN probes
def test_aam_probe_finds_nans_in_an_unsafe_loss_and_none_in_rankplug():
    factories = {"rankplug": aam.RankplugAAM, "linear_ce": aam.LinearCE, "unsafe_arccos": aam.ArccosArcFace}
    report = aam.nan_probe(factories, CPU, inputs=240, d=16, num_classes=8, batch=20)
    for name in factories:
        assert report[name]["inputs"] == 240 and len(report[name]["cells"]) == 12
    assert report["unsafe_arccos"]["nonfinite_feature_grads"] > 0
    assert report["rankplug"]["nonfinite_feature_grads"] == 0
    assert report["rankplug"]["nonfinite_weight_grad_batches"] == 0 and report["rankplug"]["nonfinite_losses"] == 0
    assert report["linear_ce"]["nonfinite_feature_grads"] == 0


def test_aam_adversarial_inputs_hit_cos_exactly_one():
    gen = torch.Generator().manual_seed(0)
    weight = aam.adversarial_weights(8, 16, gen)
    features, labels = aam.adversarial_batch("equal", weight, 32, gen)
    head = aam.RankplugAAM(16, 8)
    head.set_class_weight(weight)
    cos = head.head.cosine(features).gather(1, labels[:, None]).squeeze(1)
    aligned = labels < 4  # axis-aligned class weights: normalisation is exact
    assert aligned.any() and (cos[aligned] == 1.0).all()
    features, labels = aam.adversarial_batch("opposite", weight, 32, gen)
    cos = head.head.cosine(features).gather(1, labels[:, None]).squeeze(1)
    assert (cos[labels < 4] == -1.0).all()


def test_aam_speed_structure_without_pml():
    out = aam.measure_speed([(4, 8, 3)], ["rankplug", "insightface_style", "linear_ce"], CPU, rounds=1, block_s=1e-4)
    assert len(out) == 1 and set(out[0]["times"]) == {"rankplug", "insightface_style", "linear_ce"}
    assert set(out[0]["ratios"]) == {"rankplug_over_linear_ce", "rankplug_over_insightface_style"}


def test_aam_peers_agree_on_the_loss_at_m_zero_free_points():
    # Same weights and inputs: rankplug and the combined-margin loss compute the same ArcFace loss.
    torch.manual_seed(0)
    peers = aam.make_peers(["rankplug", "insightface_style"], 16, 5, CPU)
    features, labels = torch.randn(6, 16), torch.randint(5, (6,))
    losses = [peer(features, labels) for peer in peers.values()]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)


def test_triplet_probe_finds_nans_in_a_naive_norm_and_none_in_rankplug():
    fns = {"rankplug": triplet.rankplug_loss, "naive": triplet.naive_norm_loss}
    report = triplet.nan_probe(fns, CPU, inputs=120, features=8, embed_dim=6, batch=10)
    assert report["naive"]["nonfinite_input_grads"] > 0
    assert report["rankplug"]["nonfinite_input_grads"] == 0 and report["rankplug"]["nonfinite_head_grad_batches"] == 0
    assert all(v["inputs"] == 120 for v in report.values())


def test_missing_pml_exits_with_a_clear_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_metric_learning", None)
    for module in (aam, triplet):
        with pytest.raises(SystemExit, match="pip install pytorch-metric-learning"):
            module.require_pml()


# ------------------------------------------------------------------------------------------ with PML installed
def test_pml_peers_match_rankplug_on_the_same_inputs():
    pytest.importorskip("pytorch_metric_learning")
    torch.manual_seed(0)
    peers = aam.make_peers(["rankplug", "pml_arcface"], 16, 5, CPU)
    features, labels = torch.randn(6, 16), torch.randint(5, (6,))
    values = [peer(features, labels) for peer in peers.values()]
    torch.testing.assert_close(values[0], values[1], rtol=1e-4, atol=1e-4)  # same ArcFace loss, s and m
    out = triplet.measure_speed([(4, 6)], triplet.losses_available(), CPU, rounds=1, block_s=1e-4)
    assert set(out[0]["ratios"]) == {"rankplug_over_pml_triplet"}
    report = aam.nan_probe({"pml_arcface": aam.PMLArcFace}, CPU, inputs=24, d=16, num_classes=8, batch=4)
    assert report["pml_arcface"]["inputs"] == 24


def test_stylegan2_ada_bank_times_every_configuration_and_its_banks_skip_the_frozen_stage(tmp_path):
    from benchmarks import stylegan2_ada_bank

    out = stylegan2_ada_bank.main(["--quick", "--output", str(tmp_path / "bank.json"), "--malloc", "default"])
    record = json.loads((tmp_path / "bank.json").read_text())
    assert set(record["results"]["times"]) == set(stylegan2_ada_bank.CONFIGS)
    summary = out["summary"]
    assert {"rankgan_bank_speedup", "gogan_bank_speedup", "gogan_bank_noaug_speedup"} <= set(summary)
    assert all(summary[f"{name}_ratio"] > 0 for name in stylegan2_ada_bank.CONFIGS[1:])
    assert {name: fill["keep"] for name, fill in record["results"]["fills"].items()} == {
        "rankgan_bank": "images", "gogan_bank": "images", "gogan_bank_noaug": "scores"
    }  # fmt: skip
    built = stylegan2_ada_bank.make_steps(batch=2, size=16, width=4, z_dim=8, bank_size=8)
    calls = []
    for name in ("rankgan_bank", "gogan_bank_noaug"):
        loss = built["losses"][name]
        built["steps"][name]()  # fills the bank
        loss.previous_G.register_forward_pre_hook(lambda module, args, name=name: calls.append(name))
        built["steps"][name]()
    assert calls == []  # with the bank, a round never runs the frozen generator
