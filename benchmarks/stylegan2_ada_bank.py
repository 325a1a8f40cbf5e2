"""StyleGAN2-ADA adapter with the previous-stage bank: what a stage-2 ``Dmain`` round costs, with and without it.

The adapter (``integrations/stylegan2_ada.py``, :class:`RankGANLoss`) on the tiny StyleGAN2-ADA stand-in of
``tests/standins`` (mapping + synthesis with style mixing, conv critic, the stand-in's ``AugmentPipe``), one
``accumulate_gradients("Dmain", ...)`` call per step, interleaved and repeated (medians of per-round ratios):

1. ``stage1``: the stage-1 ``Dmain`` (the margin loss; no frozen network), the reference;
2. ``rankgan`` / ``rankgan_bank``: RankGAN's stage 2, ``G_{i-1}`` per round or from the bank (``keep="images"``);
3. ``gogan`` / ``gogan_bank``: GoGAN's stage 2 with the augment pipe, so the bank keeps images and the frozen
   ``D_{i-1}`` still scores them (augmented at use);
4. ``gogan_noaug`` / ``gogan_bank_noaug``: GoGAN without an augment pipe, where the bank keeps the frozen
   critic's scores (neither frozen network runs per round).

``*_ratio`` is a configuration's cost over ``stage1``; ``*_bank_speedup`` is the per-round cost without the bank
over with it. The bank's one fill is left out of the step times (it is timed on its own and reported).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks import _common
from benchmarks._models import STANDIN, stylegan_standin
from rankplug.integrations.stylegan2_ada import RankGANLoss

NAME = "stylegan2_ada_bank"
CONFIGS = ("stage1", "rankgan", "rankgan_bank", "gogan", "gogan_bank", "gogan_noaug", "gogan_bank_noaug")
SETTINGS = {
    "full": {"batch": 32, "size": 32, "width": 32, "z_dim": 64, "bank_size": 4096, "rounds": 41},
    "quick": {"batch": 4, "size": 16, "width": 8, "z_dim": 8, "bank_size": 16, "rounds": 2},
}


def make_steps(*, batch: int, size: int, width: int, z_dim: int, bank_size: int) -> dict[str, Any]:
    """Zero-argument callables, one ``Dmain`` round each, and the losses behind them (by configuration)."""
    torch.manual_seed(0)
    generator, discriminator = (wrapped.network for wrapped in stylegan_standin(size=size, z_dim=z_dim, channels=width))
    from training.augment import AugmentPipe  # the stand-in's: stylegan_standin put it on sys.path

    generator.train().requires_grad_(False)
    discriminator.train().requires_grad_(False)
    previous = (generator, discriminator)  # frozen copies are made by the loss
    pipe = AugmentPipe(xflip=1, xint=1, brightness=1)
    pipe.p.fill_(0.2)
    common = {"style_mixing_prob": 0.9, "r1_gamma": 0.0, "pl_weight": 0.0}
    staged = {"previous": previous, "markers": (0.5, -0.5), "clamp_weight": 1.0}
    specs = {
        "stage1": ({}, pipe),
        "rankgan": ({**staged, "variant": "rankgan"}, pipe),
        "rankgan_bank": ({**staged, "variant": "rankgan", "bank_size": bank_size}, pipe),
        "gogan": ({**staged, "variant": "gogan"}, pipe),
        "gogan_bank": ({**staged, "variant": "gogan", "bank_size": bank_size}, pipe),
        "gogan_noaug": ({**staged, "variant": "gogan"}, None),
        "gogan_bank_noaug": ({**staged, "variant": "gogan", "bank_size": bank_size}, None),
    }
    real = torch.rand(batch, 3, size, size) * 2 - 1
    c = torch.zeros(batch, 0)
    losses, steps = {}, {}
    for name, (kwargs, augment) in specs.items():
        loss = RankGANLoss("cpu", generator.mapping, generator.synthesis, discriminator, augment, **common, **kwargs)
        losses[name] = loss

        def step(loss: Any = loss) -> None:
            discriminator.requires_grad_(True)
            for p in discriminator.parameters():
                p.grad = None
            loss.accumulate_gradients("Dmain", real, c, torch.randn(batch, z_dim), c, True, 1)
            discriminator.requires_grad_(False)

        steps[name] = step
    return {"steps": steps, "losses": losses, "c_dim": 0}


def summarise(times: dict[str, dict[str, Any]]) -> dict[str, float]:
    rounds = len(times["stage1"]["samples_s"])
    sample = {name: entry["samples_s"] for name, entry in times.items()}
    out: dict[str, float] = {f"{name}_ms": 1e3 * entry["median_s"] for name, entry in times.items()}
    for name in CONFIGS[1:]:
        out[f"{name}_ratio"] = statistics.median(sample[name][r] / sample["stage1"][r] for r in range(rounds))
    for plain, banked in (("rankgan", "rankgan_bank"), ("gogan", "gogan_bank"), ("gogan_noaug", "gogan_bank_noaug")):
        out[f"{banked}_speedup"] = statistics.median(sample[plain][r] / sample[banked][r] for r in range(rounds))
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    device = _common.setup(args)
    if device.type != "cpu":
        raise SystemExit("this benchmark runs the CPU stand-in only; --device cpu")
    machine = _common.machine_info(device)
    settings = dict(SETTINGS["quick" if args.quick else "full"], quick=args.quick, standin=str(STANDIN))
    built = make_steps(**{k: settings[k] for k in ("batch", "size", "width", "z_dim", "bank_size")})
    fills = {}
    for name, loss in built["losses"].items():  # fill each bank once, outside the timed rounds
        if loss.bank is not None:
            start = time.process_time()
            loss.fill_bank(built["c_dim"])
            fills[name] = {"fill_s": time.process_time() - start, "mib": loss.bank.nbytes / 2**20,
                           "keep": loss.bank.keep}  # fmt: skip
    times = _common.interleaved_medians(built["steps"], device, rounds=settings["rounds"], iterations=1)
    summary = summarise(times)
    print(
        _common.table(
            ["configuration", "ms per Dmain round", "over stage 1", "bank keeps"],
            [
                [name, summary[f"{name}_ms"], summary.get(f"{name}_ratio", 1.0), fills.get(name, {}).get("keep", "-")]
                for name in CONFIGS
            ],
        )
    )
    for name in ("rankgan_bank", "gogan_bank", "gogan_bank_noaug"):
        print(f"{name}: {summary[name + '_speedup']:.3f}x faster per round than without the bank")
    path = _common.write_record(
        _common.default_output(NAME, args, device),
        NAME,
        argv,
        machine,
        settings,
        {"times": times, "fills": fills, "summary": summary},
    )
    print(f"wrote {path}")
    return {"summary": summary, "path": str(path)}


if __name__ == "__main__":
    main()
