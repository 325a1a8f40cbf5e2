"""Stage overhead: what a RankGAN / GoGAN stage-2 critic step costs over a WGAN-GP step, against its compute floor.

For each model (DCGAN-style 32x32 and 64x64, the tiny StyleGAN2-ADA-style stand-in) the same live ``G`` / ``D``
run these critic steps, interleaved and repeated (medians):

1. ``baseline``: a WGAN-GP critic step, ``D(G(z)) - D(x)`` plus rankplug's ``gradient_penalty`` (RankGAN Eq. 5);
2. ``gogan``: GoGAN's stage-2 step, ``GoGANRankLoss`` with the frozen previous ``D_i(G_i(z))`` (GoGAN Eq. 3-5);
3. ``rankgan``: RankGAN's stage-2 step, ``StageRankLoss`` with the current ``D`` on ``G_{i-1}(z)`` (Eq. 4 + 6);
4. the **floor**: ``baseline`` plus the method's extra passes, each timed on its own with plain networks:
   the previous generator's forward under ``torch.inference_mode`` (both methods), the previous critic's
   forward under ``inference_mode`` (GoGAN), and ``D``'s forward and backward on previous-stage fakes (RankGAN).

The frozen networks are the ``StageManager``'s (``manager.previous``), as a user's loop would call them.
``efficiency = (t_method - t_baseline) / (t_floor - t_baseline)``; 1.0 means no waste (target <= 1.10).
``rankgan_batched`` is the RankGAN step with one critic pass over ``cat(x, G(z), G_{i-1}(z))``, valid for
critics without batch-dependent layers.

With the **previous-stage bank** (:class:`rankplug.stages.PreviousStageBank`, ``K = 4096`` latents, filled once per
stage) the frozen networks no longer run at each step:

5. ``gogan_bank``: GoGAN's stage-2 step with ``z`` and ``D_i(G_i(z))`` drawn from a scores bank
   (``manager.draw_previous``), the same ``z`` fed to the live ``G``;
6. ``rankgan_bank``: RankGAN's stage-2 step with ``z`` and ``G_{i-1}(z)`` drawn from an images bank, scored by
   the current ``D``.

``gogan_bank_ratio`` / ``rankgan_bank_ratio`` are their costs over the WGAN-GP step (paired per round, medians;
targets <= 1.05 and <= 1.20). The bank's fill (``K`` latents through the frozen stage, once per stage) is timed
on its own; ``*_bank_amortised_ratio`` adds it spread over a stage of ``STAGE_CRITIC_STEPS`` critic steps
(1,000 generator steps of 5 critic steps).
"""

from __future__ import annotations

import copy
import random
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

import rankplug
from benchmarks import _common
from benchmarks._models import MODELS, build
from rankplug.functional import gradient_penalty
from rankplug.stages import PreviousStageBank

NAME = "stage_overhead"
TARGET_EFFICIENCY = 1.10
BANK_SIZE = 4096
STAGE_CRITIC_STEPS = 5000  # a stage of 1,000 generator steps with 5 critic steps each (RankGAN Algorithm 1)
#: The bank's targets: a stage-2 critic step with the bank over a WGAN-GP step (issue 15).
BANK_TARGETS = {"gogan_bank_ratio": 1.05, "rankgan_bank_ratio": 1.20}


def _wgan_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    return fake_scores.mean() - real_scores.mean()


def make_steps(
    model: str,
    *,
    batch: int,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
    bank_size: int = BANK_SIZE,
    **overrides: Any,
) -> tuple[dict[str, Callable[[], Any]], rankplug.StageManager]:
    """The configurations and floor passes of one model (zero-argument callables that each run one step), and
    the ``StageManager`` they share (its ``banks`` attribute holds the two managers with a bank, by what they
    keep)."""
    torch.manual_seed(0)
    nets = build(model, **overrides)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    G = nets["G"].to(device)
    D = nets["D"].to(device)
    if channels_last:
        G, D = G.to(memory_format=memory_format), D.to(memory_format=memory_format)
    opt_d = torch.optim.Adam(D.parameters(), lr=5e-5, betas=(0.0, 0.99))  # RankGAN Algorithm 1
    manager = rankplug.StageManager(G, D, latent_shape=nets["latent_shape"])
    manager.advance()  # stage 2: manager.previous holds the frozen G_1, D_1; G and D keep training
    # The same stage with a bank: images for RankGAN (its current D scores G_{i-1}(z)), scores for GoGAN.
    banks = {}
    for keep in ("images", "scores"):
        bank = PreviousStageBank(bank_size, keep=keep)  # type: ignore[arg-type]
        banks[keep] = rankplug.StageManager(G, D, latent_shape=nets["latent_shape"], bank=bank)
        banks[keep].advance()
    # Plain copies of the same frozen weights for the floor: no wrapper, forwards under inference_mode.
    plain_prev_g = copy.deepcopy(G).eval().requires_grad_(False)
    plain_prev_d = copy.deepcopy(D).eval().requires_grad_(False)
    real = torch.randn(batch, *nets["image_shape"], device=device).clamp_(-1, 1)
    real = real.contiguous(memory_format=memory_format)
    z_fixed = manager.sample_latent(batch)
    with torch.no_grad():
        prev_fake_fixed = plain_prev_g(z_fixed)
    with warnings.catch_warnings():  # untrained nets: the markers' order is arbitrary and irrelevant to timing
        warnings.simplefilter("ignore", RuntimeWarning)
        m_high, m_low = manager.compute_markers([real])
    rank = rankplug.StageRankLoss(m_high=max(m_high, m_low), m_low=min(m_high, m_low), clamp_weight=1000.0)
    gogan = rankplug.GoGANRankLoss(margin=1.0, rank_weight=0.5)
    autocast_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and autocast_dtype == torch.float16)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=autocast_dtype, enabled=amp)

    def update(loss: Tensor) -> None:
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt_d)
        scaler.update()

    def penalty(fake: Tensor) -> Tensor:
        # Under autocast G(z) comes out in half precision; rankplug's interpolate (penalty.py) needs real and fake
        # in one dtype (torch.lerp does not promote), so the fakes are cast to the real batch's dtype here.
        fake = fake.to(real.dtype)
        return gradient_penalty(D, real, fake, weight=10.0, scaler=scaler if scaler.is_enabled() else None)

    def baseline() -> None:
        z = manager.sample_latent(batch)
        with autocast():
            with torch.no_grad():
                fake = G(z)
            loss = _wgan_loss(D(real), D(fake)) + penalty(fake)
        update(loss)

    def gogan_step() -> None:
        z = manager.sample_latent(batch)
        with autocast():
            with torch.no_grad():
                fake = G(z)
            prev = manager.previous.discriminator(manager.previous.generator(z))  # frozen D_i(G_i(z))
            loss = gogan(D(real), D(fake), prev) + penalty(fake)
        update(loss)

    def rankgan_step() -> None:
        z = manager.sample_latent(batch)
        with autocast():
            with torch.no_grad():
                fake = G(z)
            prev_fake = manager.previous.generator(z)  # frozen G_{i-1}(z)
            loss = rank(D(real), D(fake), D(prev_fake)) + penalty(fake)  # current D on all three
        update(loss)

    def gogan_bank_step() -> None:
        draw = banks["scores"].draw_previous(batch)  # z with the frozen D_i(G_i(z)), kept
        with autocast():
            with torch.no_grad():
                fake = G(draw.z)  # the same z: GoGAN Eq. 4 pairs exactly
            loss = gogan(D(real), D(fake), draw.scores) + penalty(fake)
        update(loss)

    def rankgan_bank_step() -> None:
        draw = banks["images"].draw_previous(batch)  # z with the frozen G_{i-1}(z), kept
        with autocast():
            with torch.no_grad():
                fake = G(draw.z)
            loss = rank(D(real), D(fake), D(draw.images)) + penalty(fake)  # RankGAN Eq. 4: the current D
        update(loss)

    def rankgan_batched() -> None:
        z = manager.sample_latent(batch)
        with autocast():
            with torch.no_grad():
                fake = G(z)
            prev_fake = manager.previous.generator(z)
            real_scores, fake_scores, prev_scores = D(torch.cat([real, fake, prev_fake])).split(batch)
            loss = rank(real_scores, fake_scores, prev_scores) + penalty(fake)
        update(loss)

    # Both steps with their critic passes batched into one forward (exact for a gradient-penalty critic, which has
    # no batch-dependent layer): a like-for-like ratio of the two, reported beside the unbatched one.
    def baseline_batched() -> None:
        z = manager.sample_latent(batch)
        with autocast():
            with torch.no_grad():
                fake = G(z)
            real_scores, fake_scores = D(torch.cat([real, fake.to(real.dtype)])).split(batch)
            loss = _wgan_loss(real_scores, fake_scores) + penalty(fake)
        update(loss)

    def rankgan_bank_batched() -> None:
        draw = banks["images"].draw_previous(batch)
        with autocast():
            with torch.no_grad():
                fake = G(draw.z)
            both = torch.cat([real, fake.to(real.dtype), draw.images.to(real.dtype)])
            real_scores, fake_scores, prev_scores = D(both).split(batch)
            loss = rank(real_scores, fake_scores, prev_scores) + penalty(fake)
        update(loss)

    params = [p for p in D.parameters() if p.requires_grad]

    def floor_g_prev() -> None:  # both methods: G_{i-1}(z)
        with torch.inference_mode(), autocast():
            plain_prev_g(z_fixed)

    def floor_d_prev() -> None:  # GoGAN: D_i(G_i(z)) with the frozen critic
        with torch.inference_mode(), autocast():
            plain_prev_d(prev_fake_fixed)

    def floor_d_fwd_bwd() -> None:  # RankGAN: the current D's forward and backward on G_{i-1}(z)
        with autocast():
            scores = D(prev_fake_fixed)
        torch.autograd.grad(scaler.scale(scores.float().mean()), params)

    def frozen_g_rankplug() -> None:  # the StageManager's frozen copy (forwards under no_grad), for comparison
        with autocast():
            manager.previous.generator(z_fixed)

    steps = {
        "baseline": baseline,
        "gogan": gogan_step,
        "rankgan": rankgan_step,
        "rankgan_batched": rankgan_batched,
        "gogan_bank": gogan_bank_step,
        "rankgan_bank": rankgan_bank_step,
        "baseline_batched": baseline_batched,
        "rankgan_bank_batched": rankgan_bank_batched,
        "floor_g_prev": floor_g_prev,
        "floor_d_prev": floor_d_prev,
        "floor_d_fwd_bwd": floor_d_fwd_bwd,
        "frozen_g_rankplug": frozen_g_rankplug,
    }
    manager.banks = banks  # type: ignore[attr-defined]
    return steps, manager


def time_fills(manager: rankplug.StageManager, device: torch.device) -> dict[str, float]:
    """CPU (or, on CUDA, wall) seconds of one fill of each bank, and its size in MiB."""
    out = {}
    for keep, bank_manager in manager.banks.items():  # type: ignore[attr-defined]
        _common.synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        bank_manager.fill_bank()
        _common.synchronize(device)
        out[f"{keep}_fill_s"] = (time.perf_counter() - wall) if device.type == "cuda" else time.process_time() - cpu
        out[f"{keep}_mib"] = bank_manager.bank.nbytes / 2**20
    return out


def _efficiencies(t: dict[str, float]) -> dict[str, float]:
    base = t["baseline"]
    extra_rankgan = t["floor_g_prev"] + t["floor_d_fwd_bwd"]
    extra_gogan = t["floor_g_prev"] + t["floor_d_prev"]
    return {
        "rankgan_efficiency": (t["rankgan"] - base) / extra_rankgan,
        "rankgan_batched_efficiency": (t["rankgan_batched"] - base) / extra_rankgan,
        "gogan_efficiency": (t["gogan"] - base) / extra_gogan,
        "rankgan_ratio": t["rankgan"] / base,
        "gogan_ratio": t["gogan"] / base,
        "rankgan_bank_ratio": t["rankgan_bank"] / base,
        "gogan_bank_ratio": t["gogan_bank"] / base,
        **(
            {"rankgan_bank_batched_ratio": t["rankgan_bank_batched"] / t["baseline_batched"]}
            if "rankgan_bank_batched" in t and "baseline_batched" in t
            else {}
        ),
    }


def bootstrap_ci(values: Sequence[float], *, level: float = 0.9, resamples: int = 2000) -> tuple[float, float]:
    """A percentile bootstrap interval for the median of ``values`` (seeded, so a record is reproducible)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1.0 - level) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, int((1.0 - tail) * resamples))]


def summarise(times: dict[str, dict[str, Any]], fills: dict[str, float] | None = None) -> dict[str, float]:
    """Ratios and efficiencies: the median over rounds of each round's own value (a paired estimate, steadier
    on a shared machine than a ratio of medians), plus the medians of the times (milliseconds per step); with
    ``fills`` (:func:`time_fills`) the bank's fill cost and the ratios with it spread over a stage."""
    t = {name: entry["median_s"] for name, entry in times.items()}
    rounds = len(times["baseline"]["samples_s"])
    per_round = [_efficiencies({name: entry["samples_s"][r] for name, entry in times.items()}) for r in range(rounds)]
    summary = {key: statistics.median(values[key] for values in per_round) for key in per_round[0]}
    for key in ("rankgan_efficiency", "gogan_efficiency"):
        ordered = sorted(values[key] for values in per_round)
        quart = len(ordered) // 4
        summary[key + "_q1"], summary[key + "_q3"] = ordered[quart], ordered[len(ordered) - 1 - quart]
        summary[key + "_ci90_low"], summary[key + "_ci90_high"] = bootstrap_ci(ordered)
    summary.update(
        baseline_ms=1e3 * t["baseline"],
        rankgan_ms=1e3 * t["rankgan"],
        rankgan_floor_ms=1e3 * (t["baseline"] + t["floor_g_prev"] + t["floor_d_fwd_bwd"]),
        rankgan_batched_ms=1e3 * t["rankgan_batched"],
        gogan_ms=1e3 * t["gogan"],
        gogan_floor_ms=1e3 * (t["baseline"] + t["floor_g_prev"] + t["floor_d_prev"]),
        frozen_g_no_grad_over_inference_mode=t["frozen_g_rankplug"] / t["floor_g_prev"],
        efficiency_of_medians_rankgan=_efficiencies(t)["rankgan_efficiency"],
        efficiency_of_medians_gogan=_efficiencies(t)["gogan_efficiency"],
        gogan_bank_ms=1e3 * t["gogan_bank"],
        rankgan_bank_ms=1e3 * t["rankgan_bank"],
    )
    if "rankgan_bank_batched" in t and "baseline_batched" in t:
        summary.update(
            baseline_batched_ms=1e3 * t["baseline_batched"], rankgan_bank_batched_ms=1e3 * t["rankgan_bank_batched"]
        )
    for key in ("gogan_bank_ratio", "rankgan_bank_ratio", "rankgan_bank_batched_ratio"):
        if key not in summary:
            continue
        ordered = sorted(values[key] for values in per_round)
        summary[key + "_ci90_low"], summary[key + "_ci90_high"] = bootstrap_ci(ordered)
    for name in ("baseline", "gogan_bank", "rankgan_bank", "floor_d_fwd_bwd"):  # the kernel's share, per step
        if "sys_mean_s" in times.get(name, {}):
            summary[f"{name}_sys_ms"] = 1e3 * times[name]["sys_mean_s"]
            summary[f"{name}_minor_faults"] = times[name]["minor_faults_mean"]
    if fills is not None:
        for method, keep in (("gogan", "scores"), ("rankgan", "images")):
            fill = fills[f"{keep}_fill_s"]
            summary[f"{method}_bank_fill_ms"] = 1e3 * fill
            summary[f"{method}_bank_mib"] = fills[f"{keep}_mib"]
            # The step's paired ratio plus the fill spread over a stage, in baseline steps.
            summary[f"{method}_bank_amortised_ratio"] = summary[f"{method}_bank_ratio"] + fill / (
                STAGE_CRITIC_STEPS * t["baseline"]
            )
    return summary


def measure(
    model: str,
    *,
    batch: int,
    device: torch.device,
    rounds: int,
    iterations: int,
    amp: bool = False,
    channels_last: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Time one model's configurations (interleaved medians) and summarise them; the core of the benchmark."""
    steps, manager = make_steps(model, batch=batch, device=device, amp=amp, channels_last=channels_last, **overrides)
    times = _common.interleaved_medians(steps, device, rounds=rounds, iterations=iterations)
    fills = time_fills(manager, device)
    return {
        "model": model,
        "batch": batch,
        "amp": amp,
        "channels_last": channels_last,
        **overrides,
        "times": times,
        "bank": {"size": len(manager.banks["images"].bank.z), **fills},  # type: ignore[attr-defined]
        "summary": summarise(times, fills),
    }


SETTINGS = {
    "full": {
        "batch": {"dcgan32": 32, "dcgan64": 32, "stylegan2_ada": 32},
        "width": {"dcgan32": 32, "dcgan64": 16, "stylegan2_ada": 32},
        # 121 rounds: the 90% interval of a paired median ratio was +-0.025 at 41 rounds, wider than the gap
        # between RankGAN's floor and its target; at 121 it measured +-0.01 to +-0.02 (RankGAN + bank).
        "rounds": 121,
        "iterations": 1,
        "bank_size": BANK_SIZE,
        "stage_critic_steps": STAGE_CRITIC_STEPS,
    },
    "quick": {
        "batch": {"dcgan32": 8, "dcgan64": 4, "stylegan2_ada": 8},
        "width": {"dcgan32": 8, "dcgan64": 4, "stylegan2_ada": 8},
        "rounds": 2,
        "iterations": 1,
        "bank_size": 64,
        "stage_critic_steps": STAGE_CRITIC_STEPS,
    },
}


def profile(model: str, *, batch: int, device: torch.device, width: int, calls: int = 10) -> None:
    """Print ``torch.profiler`` evidence for one model: ATen calls and self CPU per step of each configuration."""
    steps, _ = make_steps(model, batch=batch, device=device, width=width)
    rows, by_op = [], {}
    for name, fn in steps.items():
        out = _common.profile_table(fn, calls=calls)
        rows.append([name, out["aten_calls_per_call"], out["self_cpu_ms_per_call"]])
        by_op[name] = out["by_op"]
        if name in ("baseline", "rankgan", "gogan"):
            print(f"\n### {model}: {name}")
            print(out["table"])
    print(_common.table(["configuration", "ATen calls per step", "self CPU ms per step (profiled)"], rows))
    # Per operator: the method's step minus the baseline and its floor passes. What remains is the work the
    # step does beyond the floor (calls) and where its time goes (ms); noise shows as +- on the big operators.
    for method, parts in (
        ("rankgan", ("floor_g_prev", "floor_d_fwd_bwd")),
        ("gogan", ("floor_g_prev", "floor_d_prev")),
    ):
        diff = {}
        for op in set().union(*(by_op[n] for n in (method, "baseline", *parts))):
            calls_ = by_op[method].get(op, (0, 0))[0] - sum(by_op[n].get(op, (0, 0))[0] for n in ("baseline", *parts))
            ms = by_op[method].get(op, (0, 0))[1] - sum(by_op[n].get(op, (0, 0))[1] for n in ("baseline", *parts))
            diff[op] = (calls_, ms)
        top = sorted(diff.items(), key=lambda item: -abs(item[1][1]))[:12]
        print(f"\n{model}: {method} step minus (baseline + {' + '.join(parts)}), per step")
        print(_common.table(["operator", "extra calls", "extra self CPU ms"], [[op, c, ms] for op, (c, ms) in top]))


def bank_verdicts(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per bank target (:data:`BANK_TARGETS`), the worst model's ratio (the step alone and with the fill spread over
    a stage both count) and whether every model meets it."""
    out = {}
    for key, target in BANK_TARGETS.items():
        amortised = key.replace("_ratio", "_amortised_ratio")
        values = {r["model"]: max(r["summary"][key], r["summary"].get(amortised, 0.0)) for r in results}
        # The upper end of the step ratio's 90% interval, plus the fill spread over a stage.
        highs = {
            r["model"]: r["summary"].get(key + "_ci90_high", r["summary"][key])
            + r["summary"].get(amortised, r["summary"][key])
            - r["summary"][key]
            for r in results
        }
        model = max(values, key=values.__getitem__)
        high_model = max(highs, key=highs.__getitem__)
        out[key] = {
            "target": target,
            "worst": values[model],
            "worst_model": model,
            "met": values[model] <= target,
            "worst_ci90_high": highs[high_model],
            "worst_ci90_high_model": high_model,
            "met_at_ci90_high": highs[high_model] <= target,
        }
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 + GradScaler on CUDA)")
    p.add_argument("--channels-last", action="store_true", help="channels_last networks and images")
    p.add_argument("--profile", action="store_true", help="print torch.profiler tables instead of timing")
    args = p.parse_args(argv)
    device = _common.setup(args)
    if args.profile:
        full = SETTINGS["full"]
        for model in args.models:
            profile(model, batch=full["batch"][model], device=device, width=full["width"][model])
        return {}
    machine = _common.machine_info(device)
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    settings.update(amp=args.amp, channels_last=args.channels_last, nz=64, quick=args.quick)
    results = []
    rows = []
    for model in args.models:
        result = measure(
            model,
            batch=settings["batch"][model],
            device=device,
            rounds=settings["rounds"],
            iterations=settings["iterations"],
            # The stand-in's mapping network is not autocast-safe (its w_avg update lerps a half-precision w into
            # a float32 buffer); upstream StyleGAN2-ADA runs fp16 through its own layers, not autocast.
            amp=args.amp and model != "stylegan2_ada",
            channels_last=args.channels_last,
            width=settings["width"][model],
            bank_size=settings["bank_size"],
        )
        results.append(result)
        s = result["summary"]
        rows.append(
            [
                model,
                result["batch"],
                s["baseline_ms"],
                s["gogan_ms"],
                s["gogan_floor_ms"],
                s["gogan_ratio"],
                s["gogan_efficiency"],
                s["rankgan_ms"],
                s["rankgan_floor_ms"],
                s["rankgan_ratio"],
                s["rankgan_efficiency"],
                s["rankgan_batched_efficiency"],
            ]
        )
    print(
        _common.table(
            [
                "model",
                "N",
                "WGAN-GP ms",
                "GoGAN ms",
                "GoGAN floor ms",
                "GoGAN/base",
                "GoGAN eff.",
                "RankGAN ms",
                "RankGAN floor ms",
                "RankGAN/base",
                "RankGAN eff.",
                "RankGAN 1-pass eff.",
            ],
            rows,
        )
    )
    for r in results:
        s = r["summary"]
        print(
            f"{r['model']}: GoGAN efficiency {s['gogan_efficiency']:.2f} (90% CI of the median "
            f"{s['gogan_efficiency_ci90_low']:.2f}-{s['gogan_efficiency_ci90_high']:.2f}), RankGAN "
            f"{s['rankgan_efficiency']:.2f} ({s['rankgan_efficiency_ci90_low']:.2f}-{s['rankgan_efficiency_ci90_high']:.2f})"
        )
    print(
        _common.table(
            [
                "model",
                "WGAN-GP ms",
                "GoGAN + bank ms",
                "GoGAN + bank / WGAN-GP",
                "with the fill per stage",
                "RankGAN + bank ms",
                "RankGAN + bank / WGAN-GP",
                "with the fill per stage",
                "fill ms (scores / images)",
                "bank MiB (scores / images)",
            ],
            [
                [
                    r["model"],
                    r["summary"]["baseline_ms"],
                    r["summary"]["gogan_bank_ms"],
                    r["summary"]["gogan_bank_ratio"],
                    r["summary"]["gogan_bank_amortised_ratio"],
                    r["summary"]["rankgan_bank_ms"],
                    r["summary"]["rankgan_bank_ratio"],
                    r["summary"]["rankgan_bank_amortised_ratio"],
                    f"{r['summary']['gogan_bank_fill_ms']:.0f} / {r['summary']['rankgan_bank_fill_ms']:.0f}",
                    f"{r['summary']['gogan_bank_mib']:.1f} / {r['summary']['rankgan_bank_mib']:.1f}",
                ]
                for r in results
            ],
        )
    )
    print(  # like for like: both steps with their critic passes batched (report only; the targets use the above)
        _common.table(
            ["model", "WGAN-GP batched ms", "RankGAN + bank batched ms", "RankGAN + bank / WGAN-GP, both batched"],
            [
                [
                    r["model"],
                    r["summary"].get("baseline_batched_ms", float("nan")),
                    r["summary"].get("rankgan_bank_batched_ms", float("nan")),
                    r["summary"].get("rankgan_bank_batched_ratio", float("nan")),
                ]
                for r in results
            ],
        )
    )
    print(  # where the kernel's time goes: page faults (see --malloc)
        _common.table(
            [
                "model",
                "malloc",
                "sys ms per step (WGAN-GP / GoGAN + bank / RankGAN + bank)",
                "minor page faults per step",
            ],
            [
                [
                    r["model"],
                    _common.MALLOC["mode"],
                    " / ".join(f"{r['summary'].get(n + '_sys_ms', float('nan')):.2f}" for n in names),
                    " / ".join(f"{r['summary'].get(n + '_minor_faults', float('nan')):.0f}" for n in names),
                ]
                for r in results
                for names in [("baseline", "gogan_bank", "rankgan_bank")]
            ],
        )
    )
    worst = max(max(r["summary"]["rankgan_efficiency"], r["summary"]["gogan_efficiency"]) for r in results)
    verdict = "met" if worst <= TARGET_EFFICIENCY else "NOT met"
    print(
        f"target efficiency <= {TARGET_EFFICIENCY}: {verdict} (worst {worst:.3f}); median of {settings['rounds']} rounds"
    )
    bank_targets = bank_verdicts(results)
    for key, entry in bank_targets.items():
        print(
            f"target {key} <= {entry['target']}: {'met' if entry['met'] else 'NOT met'} (worst {entry['worst']:.3f}, "
            f"{entry['worst_model']}; upper end of the 90% interval {entry['worst_ci90_high']:.3f}, "
            f"{entry['worst_ci90_high_model']}: {'met' if entry['met_at_ci90_high'] else 'NOT met'} there)"
        )
    path = _common.write_record(
        _common.default_output(NAME, args, device),
        NAME,
        argv,
        machine,
        settings,
        {
            "models": results,
            "worst_efficiency": worst,
            "target_efficiency": TARGET_EFFICIENCY,
            "bank_targets": bank_targets,
        },
    )
    print(f"wrote {path}")
    return {"results": results, "path": str(path)}


if __name__ == "__main__":
    main()
