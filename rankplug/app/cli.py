"""The ``rankplug`` command (also ``python -m rankplug``): ``demo``, ``train``, ``eval``, ``complete``, ``sample``.

- ``rankplug demo``: RankGAN with 3 stages and a same-compute WGAN-GP baseline on the bundled digits, evaluated
  per stage, with pictures, the score-ladder plot, ``metrics.json`` and ``report.md``
  (:func:`rankplug.app.demo.job.run_demo`). ``--conditional`` trains a conditional digits GAN with the angular-margin
  auxiliary classifier and with softmax cross entropy on the same budget and compares them.
- ``rankplug train``: one run of any method on the digits, an image folder or a CIFAR-10 copy on disk.
- ``rankplug eval RUN_DIR``: the metrics of every stage checkpoint of a run; ``--metrics fid,is,kid,prc --n 50000
  --reference PATH`` adds the paper metrics through torch-fidelity (``docs/evaluation.md``).
- ``rankplug complete RUN_DIR``: the image-completion evaluation (maths §7) of a run's stages, with a picture.
- ``rankplug sample RUN_DIR --n N --out PATH``: samples of a stage, as ``.npz`` or PNG files.

Every long step shows a progress bar (``--no-progress`` turns them off); the demo's optional dependencies
come with ``pip install "rankplug[demo]"``.

Exit status: 0 on success; 2 for a mistake in the command line (a bad option value, a directory that cannot
be used, a missing file or optional package), with a one-line message and no traceback; 1 when a file that
rankplug reads is malformed, corrupt or in use by another process, or the disk fails (the message names the
file); 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_MISSING_HINT = 'the demo needs its optional dependencies: pip install "rankplug[demo]"'
DESCRIPTION = (
    "Margin-, ranking- and metric-based GAN training (RankGAN, GoGAN, MBGAN, AAM): the demo on the bundled "
    "digits, training on your data, evaluation and image completion."
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` that shows every option's default (those that are not off or unset)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = any(action.default is v for v in (None, False, True, argparse.SUPPRESS))  # `is`: 0 == False
        shown = not unset and action.option_strings
        if shown and "%(default)" not in text:
            text = f"{text} (default: %(default)s)".lstrip()
        return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _float(text: str, what: str, accept: Callable[[float], bool]) -> float:
    """Parse a finite number that ``accept`` admits; ``what`` names it in the error (argparse adds the option)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f"expected a finite {what.removeprefix('a ')}; got {value}")
    return value


def _positive_float(text: str) -> float:
    return _float(text, "a positive number", lambda value: value > 0)


def _nonnegative_float(text: str) -> float:
    return _float(text, "a number >= 0", lambda value: value >= 0)


def _directory(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory path; got an empty string")
    return text


def _check_inception_weights(path: str | None) -> None:
    """Before anything is written: a requested Inception weights file must exist (the run would fail later)."""
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"--inception-weights: no such file: {path!r}")


def _version() -> str:
    from rankplug import __version__

    return f"rankplug {__version__}"


def _coverage(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"a coverage is a fraction in (0, 1); got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _metric_list(text: str) -> tuple[str, ...]:
    from rankplug.app.eval.fidelity import parse_metrics

    try:
        return parse_metrics(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of fid, is, kid, prc; got {text!r}"
        ) from None


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--completion-images", type=_positive_int, default=64, help="held-out images to complete")
    parser.add_argument("--completion-steps", type=_positive_int, default=100, help="RMSprop steps of the z search")
    parser.add_argument("--fid-samples", type=_positive_int, default=1000, help="samples for digits-FID / FID")
    parser.add_argument(
        "--inception-weights",
        default=None,
        metavar="PATH",
        help="FID Inception weights (weights-inception-2015-12-05-6726825d.pth) for --metrics; alone, it asks for "
        "FID and IS of --fid-samples samples (--metrics fid,is --n FID_SAMPLES)",
    )
    parser.add_argument(
        "--metrics",
        type=_metric_list,
        default=None,
        metavar="LIST",
        help="paper metrics through torch-fidelity, a comma-separated subset of fid,is,kid,prc",
    )
    parser.add_argument("--n", type=_positive_int, default=50_000, help="samples per stage for --metrics")
    parser.add_argument(
        "--reference",
        default=None,
        metavar="PATH",
        help="real images for --metrics: a folder, an .npz of images or features, or mu/sigma statistics "
        "(default: the run's training images); its features are cached by content hash",
    )
    parser.add_argument("--device", default=None, help="device of --metrics (default: cuda when available, else cpu)")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="images per Inception pass (--metrics)")


# One line of help per setting of rankplug.app.training.TrainConfig; every setting is a flag of `rankplug train`.
_SETTING_HELP = {
    "method": "training method (a rankplug.StageObjective variant)",
    "stages": "stages (segments for single-stage methods)",
    "steps_per_stage": "generator steps per stage (the most, with --plateau-patience)",
    "plateau_patience": "end a stage once the gap stayed within --plateau-tolerance for this many records",
    "plateau_tolerance": "the band of the plateau rule, in score units",
    "data": "data set",
    "data_root": "image folder or CIFAR-10 root (--data folder / cifar10)",
    "size": "image side, a power of two",
    "workers": "DataLoader worker processes",
    "batch_size": "real and fake batch size",
    "n_critic": "critic steps per generator step",
    "optimizer": "optimizer of both networks",
    "lr_d": "critic learning rate",
    "lr_g": "generator learning rate",
    "beta1": "Adam beta1",
    "beta2": "Adam beta2",
    "nz": "latent size",
    "width": "network width",
    "latent": "prior of z",
    "critic_norm": "critic normalisation (batch: DCGAN/MBGAN's BatchNorm critic, no gradient penalty)",
    "margin": "eps of the margin losses",
    "clamp_weight": "lambda_clamp of RankGAN Eq. 6",
    "clamp_on": "RankGAN's clamp on each sample (as printed) or on the batch means",
    "control": "the same-steps control of a staged method: every stage trains with stage 1's losses",
    "anchor_scores": "GoGAN's rank hinge on scores anchored to the previous critic's mean on the data",
    "weight_clip": "clip the critic's weights to [-c, c] after each step (WGAN's, GoGAN's; 0: off)",
    "gp_weight": "lambda_gp of the gradient penalty (Eq. 5)",
    "disc_weight": "GoGAN's lambda_1",
    "rank_weight": "GoGAN's lambda_2",
    "embed_dim": "MBGAN's embedding size K",
    "alpha": "MBGAN's margin weight (Eq. 4)",
    "margin_norm": "MBGAN's margin norm over pixels",
    "encoder": "RankGAN's VAE encoder (Sec. 3.3) for the latents",
    "encoder_epochs": "epochs of the encoder's stage 0",
    "class_head": "auxiliary classifier of a conditional GAN",
    "cls_weight": "lambda_cls of the class terms",
    "aam_scale": "s of the AAM head",
    "aam_margin": "m of the AAM head (radians)",
    "marker_images": "real images over which RankGAN's markers are taken",
    "bank_size": "latents in the previous-stage bank (0: off); stage >= 2 critic steps reuse G_{i-1}(z)",
    "bank_refresh": "critic steps between re-draws of the bank (0: once per stage)",
    "ema": "decay of the generator's EMA (0: off); the EMA generator is sampled and evaluated",
    "amp": "mixed precision (bfloat16 on CPU, float16 on CUDA)",
    "device": "torch device, e.g. cuda or cuda:1 (under torchrun: each rank's cuda:LOCAL_RANK)",
    "seed": "seed of torch and Python's random",
    "log_every": "generator steps between records",
    "tensorboard": "write TensorBoard event files to RUN/tensorboard",
}


def _add_train_settings(parser: argparse.ArgumentParser) -> None:
    """A flag per TrainConfig field, defaulting to None so that only flags given override the preset / file."""
    from rankplug.app.training.config import (
        CLASS_HEADS,
        CRITIC_NORMS,
        DATA_KINDS,
        LATENTS,
        OPTIMIZERS,
        SIZES,
        TrainConfig,
    )
    from rankplug.functional.ranking import CLAMP_ON
    from rankplug.methods import METHODS

    choices: dict[str, tuple[Any, ...]] = {
        "method": tuple(METHODS),
        "data": DATA_KINDS,
        "size": SIZES,
        "optimizer": OPTIMIZERS,
        "latent": LATENTS,
        "critic_norm": CRITIC_NORMS,
        "class_head": CLASS_HEADS,
        "margin_norm": ("mean", "sum"),
        "clamp_on": CLAMP_ON,
    }
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        name, default = field.name, getattr(defaults, field.name)
        flag = "--" + name.replace("_", "-")
        text = f"{_SETTING_HELP[name]} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        kind: Any = _finite_float if isinstance(default, float) else _positive_int if isinstance(default, int) else str
        if name in ("seed", "workers", "bank_size", "bank_refresh"):  # may be 0
            kind = int
        elif name in ("plateau_patience", "log_every"):  # None by default
            kind = _positive_int
        parser.add_argument(flag, type=kind, default=None, choices=choices.get(name), help=text)


def _finite_float(text: str) -> float:
    return _float(text, "a number", lambda value: True)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rankplug`` command."""
    from rankplug.app.training.config import PRESETS  # here, not at import: Ctrl-C while torch loads lands in main()

    parser = argparse.ArgumentParser(prog="rankplug", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,train,eval,complete,sample}")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, formatter_class=_Formatter)

    demo = add("demo", "train RankGAN stages and a baseline on the bundled digits, and report")
    demo.add_argument("--dir", type=_directory, default="rankplug-demo", help="demo directory")
    demo.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the WGAN-GP baseline")
    demo.add_argument("--conditional", action="store_true", help="AAM vs softmax auxiliary classifier instead")
    demo.add_argument("--seed", type=int, default=0, help="seed of both runs")
    demo.add_argument(
        "--threads", type=_positive_int, default=1, help="torch threads per run (1: the same numbers every run)"
    )
    demo.add_argument(
        "--jobs", type=_positive_int, default=2, help="runs trained at once, each in its own process (default 2)"
    )
    demo.add_argument("--full", action="store_true", help="RankGAN with the paper's settings (longer; says how long)")
    demo.add_argument("--quick", action="store_true", help="a few steps only (a smoke test)")
    demo.add_argument("--inception-weights", default=None, metavar="PATH", help="adds Inception FID / IS")
    _add_common(demo)

    tr = add("train", "train one run (any method, your data); under torchrun, one run on every rank")
    tr.add_argument(
        "--dir", type=_directory, required=True, help="run directory; an existing run with the same settings resumes"
    )
    tr.add_argument("--preset", choices=tuple(PRESETS), default=None, help="a paper's settings; flags override them")
    tr.add_argument("--config", default=None, metavar="FILE", help="settings from a TOML file (flags override them)")
    tr.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch threads on the CPU (1: small models do not stall when the machine is shared; raise it on a "
        "machine of your own)",
    )
    _add_train_settings(tr)
    _add_common(tr)

    ev = add("eval", "metrics of every stage checkpoint of a run directory")
    ev.add_argument("run_dir", help="a run directory made by `rankplug train` (or a demo's rankgan/ or baseline/)")
    ev.add_argument("--force", action="store_true", help="recompute stages whose results are already saved")
    _add_eval_options(ev)
    _add_common(ev)

    co = add("complete", "image completion (PSNR / SSIM per occlusion) of a run's stages")
    co.add_argument("run_dir", help="a run directory made by `rankplug train`")
    co.add_argument("--images", type=_positive_int, default=64, help="held-out images to complete")
    co.add_argument("--steps", type=_positive_int, default=100, help="RMSprop steps of the z search")
    co.add_argument("--coverages", type=_coverage, nargs="+", default=None, help="occluded fractions")
    co.add_argument("--perceptual-weight", type=_nonnegative_float, default=0.1, help="lambda of -D(G(z)) (GoGAN: 0.1)")
    _add_common(co)

    sa = add("sample", "samples of a run's stage: a .npz of float32 images in [-1, 1], or a folder of PNG files")
    sa.add_argument("run_dir", help="a run directory made by `rankplug train` (or a demo's rankgan/ or baseline/)")
    sa.add_argument("--stage", type=_positive_int, default=None, help="the stage (default: the last)")
    sa.add_argument("--n", type=_positive_int, required=True, help="number of samples")
    sa.add_argument("--out", required=True, metavar="PATH", help="PATH.npz (array 'images') or a folder of PNG files")
    sa.add_argument("--seed", type=int, default=0, help="seed of z")
    return parser


def _demo(args: argparse.Namespace) -> int:
    _check_inception_weights(args.inception_weights)
    from rankplug.app import demo

    if args.conditional:
        demo.run_conditional_demo(args.dir, **_options(args, "seed", "quick", "threads", "progress"))
        return 0
    options = _options(args, "baseline", "seed", "quick", "full", "threads", "jobs", "inception_weights", "progress")
    demo.run_demo(args.dir, **options)
    return 0


def _options(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The parsed options ``names`` as keyword arguments of the same names."""
    return {name: getattr(args, name) for name in names}


def train_config(args: argparse.Namespace) -> Any:
    """The run's settings: the method's defaults, then ``--preset``, then ``--config FILE``, then the flags given."""
    from rankplug.app.training.config import FIELDS, TrainConfig

    settings: dict[str, Any] = {}
    preset = args.preset
    if args.config is not None:
        from_file = TrainConfig.read_toml(args.config)
        preset = preset or from_file.pop("preset", None)
        from_file.pop("preset", None)
        settings.update(from_file)
    settings.update({name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None})
    try:
        return TrainConfig.from_preset(preset, **settings)
    except TypeError as error:  # a wrongly typed value (a TOML float for an int, a list, ...): the user's mistake
        where = f"--config {args.config}: " if args.config is not None else ""
        raise ValueError(f"{where}{error}") from error


def _train(args: argparse.Namespace) -> int:
    from rankplug.app.report import gap_summary
    from rankplug.app.runs import check_directory_argument, train_run

    config = train_config(args)
    check_directory_argument(args.dir, "--dir")
    check_device(config.device)
    if config.device == "cpu":
        import torch

        torch.set_num_threads(args.threads)
    result = train_run(args.dir, config, progress=args.progress)
    if int(os.environ.get("RANK", "0")) == 0:
        gap = gap_summary(result["stages"][-1])["gap_end"]  # the definition `rankplug eval` reports too
        print(
            f"{config.method}: {result['generator_steps']} generator steps in {result['wall_time']:.0f} s; "
            f"gap at the end {float('nan') if gap is None else gap:.4f} (mean of the last 5 records). "
            f"Next: rankplug eval {args.dir}"
        )
    return 0


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before anything is written."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1): {error}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type != "cpu":
        try:
            torch.empty(0, device=parsed)
        except (RuntimeError, AssertionError) as error:
            raise ValueError(f"device {device!r} is not usable on this machine: {error}") from None


def _check_paper_metric_options(args: argparse.Namespace) -> None:
    """``--metrics`` and its flags, before anything is computed: each mistake is one line naming its flag."""
    from rankplug.app.eval.fidelity import InceptionWeightsNotFound, fidelity_weights, minimum_samples

    given = [flag for flag, value in (("--reference", args.reference), ("--device", args.device)) if value]
    if args.metrics is None:
        if given:
            raise ValueError(f"{given[0]} applies to --metrics, which was not given (e.g. --metrics fid,is,kid,prc)")
        if args.inception_weights is None:
            return
        least = minimum_samples(("fid", "is"))  # --inception-weights alone: FID and IS of --fid-samples samples
        if args.fid_samples < least:
            raise ValueError(
                f"--fid-samples must be >= {least} for FID and IS (--inception-weights without --metrics); "
                f"got {args.fid_samples}"
            )
    elif args.n < minimum_samples(args.metrics):
        least = minimum_samples(args.metrics)
        raise ValueError(f"--n must be >= {least} for --metrics {','.join(args.metrics)}; got {args.n}")
    if args.reference is not None and not Path(args.reference).expanduser().exists():
        raise ValueError(f"--reference: no such file or folder: {args.reference!r}")
    if args.device is not None:
        try:
            check_device(args.device)
        except ValueError as error:
            raise ValueError(f"--device: {error}") from None
    try:
        fidelity_weights(args.inception_weights)
    except InceptionWeightsNotFound as error:
        looked = [line.strip(" -") for line in str(error).splitlines()[1:] if line.startswith("  - ")]
        places = "; ".join(looked).replace("weights= argument", "--inception-weights")
        raise ValueError(
            f"--inception-weights: FID Inception weights not found ({places}); download "
            "pt_inception-2015-12-05-6726825d.pth (docs/evaluation.md) and pass --inception-weights PATH"
        ) from None


def _eval(args: argparse.Namespace) -> int:
    if args.metrics is None:
        _check_inception_weights(args.inception_weights)
    _check_paper_metric_options(args)
    from rankplug.app.eval.commands import evaluate_run
    from rankplug.app.eval.fidelity import ReferenceSetError

    names = ("completion_images", "completion_steps", "fid_samples", "inception_weights", "progress", "force")
    paper = ("metrics", "n", "reference", "device", "batch_size")
    try:
        results = evaluate_run(args.run_dir, **_options(args, *names, *paper))
    except ReferenceSetError as error:
        raise ValueError(f"--reference: {error}") from None
    for line in eval_table(results):
        print(line)
    if any(entry.get("digits_fid") is not None for entry in results):
        print(_digits_fid_floor(args.run_dir))
    print("Γ: the mean gap D(x) - D(G(z)) of the stage's last 5 records (GoGAN Eq. 6), as `rankplug train` reports it.")
    print(f"(saved as eval-stage<i>.json in {args.run_dir})")
    return 0


def _digits_fid_floor(run_dir: str) -> str:
    """What a good digits-FID is for this run: the real training digits' own score against the held-out ones."""
    from rankplug.app.eval import digits as digits_eval
    from rankplug.app.runs import read_run_config

    config = read_run_config(run_dir)
    classifier, split = digits_eval.reference_classifier(config.size, source=config.data)
    floor = digits_eval.digits_fid(classifier, split.test_images, split.train_images)
    return (
        f"digits-FID: lower is better; the real training digits score {floor:.2f} against the held-out ones (what a "
        "generator that matched the data would score), a generator of noise scores in the hundreds or thousands."
    )


# The paper-metric columns of the eval table: header, then how a stage's paper_metrics shows in it.
_PAPER_COLUMNS: tuple[tuple[str, str, Callable[[dict[str, Any]], str]], ...] = (
    ("fid", "FID", lambda m: f"{m['fid']:.2f}"),
    ("is", "IS", lambda m: f"{m['is_mean']:.2f} ± {m['is_std']:.2f}"),
    ("kid", "KID", lambda m: f"{m['kid_mean']:.4f} ± {m['kid_std']:.4f}"),
    ("prc", "precision", lambda m: f"{m['precision']:.3f}"),
    ("prc", "recall", lambda m: f"{m['recall']:.3f}"),
)


def eval_table(results: Sequence[dict[str, Any]]) -> list[str]:
    """The Markdown table ``rankplug eval`` prints: a column for every metric any stage has."""
    asked = {
        name
        for entry in results
        for name in (entry.get("eval_settings", {}).get("paper_metrics") or {}).get("metrics", [])
    }
    header = ["stage", "generator steps", "gap Γ (end)", "digits-FID", "completion PSNR (dB)", "SSIM"]
    conditional = any("gan_train" in entry for entry in results)
    header += ["GAN-train", "GAN-test"] if conditional else []
    header += [title for name, title, _ in _PAPER_COLUMNS if name in asked]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in results:
        psnr, ssim, gap = entry["completion"]["psnr"], entry["completion"]["ssim"], entry.get("gap_end")
        fid = entry.get("digits_fid")
        cells = [str(entry["stage"]), str(entry["generator_steps"]), "-" if gap is None else f"{gap:.3f}"]
        cells += ["-" if fid is None else f"{fid:.2f}", f"{sum(psnr) / len(psnr):.2f}", f"{sum(ssim) / len(ssim):.3f}"]
        if conditional:
            cells += [f"{entry.get(name, math.nan):.3f}" for name in ("gan_train", "gan_test")]
        paper = entry.get("paper_metrics") or {}
        cells += [show(paper) if paper else "-" for name, _, show in _PAPER_COLUMNS if name in asked]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _complete(args: argparse.Namespace) -> int:
    from rankplug.app.eval.commands import complete_run

    table = complete_run(
        args.run_dir, **_options(args, "images", "steps", "coverages", "perceptual_weight", "progress")
    )
    print(table)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from rankplug.app.eval.commands import sample_run

    out = sample_run(args.run_dir, n=args.n, out=args.out, stage=args.stage, seed=args.seed)
    print(f"wrote {args.n} samples to {out}")
    return 0


def _interrupted(args: argparse.Namespace | None) -> str:
    """What Ctrl-C leaves behind, said truthfully for the command that was running."""
    directory = getattr(args, "dir", None) or getattr(args, "run_dir", None)
    if args is None or directory is None:
        return "interrupted"
    if args.command in ("eval", "complete"):
        return "interrupted; results already written are kept"
    if any(Path(directory).rglob("stage_manager.pt")):
        return "interrupted; the last stage checkpoint is intact, run the same command to resume"
    return "interrupted before the first checkpoint; nothing to resume"


def _os_error(error: OSError) -> str:
    where = f" writing or reading {error.filename}" if error.filename else ""
    if error.errno == errno.ENOSPC:
        return f"no space left on the device{where}; the last complete checkpoint is intact, free space and rerun"
    return f"{error.strerror or error}{where}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rankplug`` console script; returns the exit status.

    User mistakes exit 2 and bad files exit 1, each with one line on stderr and no traceback.
    """
    from rankplug.errors import CheckpointError, DataFileError, RunDirectoryError

    args = None

    def say(message: str) -> None:
        print(f"rankplug{f' {args.command}' if args else ''}: {message}", file=sys.stderr)

    # The library speaks through logging ("rankplug.*" loggers); the command shows its INFO messages on stderr.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    library = logging.getLogger("rankplug")
    level = library.level
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    try:
        args = build_parser().parse_args(argv)
        handlers = {"demo": _demo, "train": _train, "eval": _eval, "complete": _complete, "sample": _sample}
        return handlers[args.command](args)
    except ModuleNotFoundError as error:
        say(f"{error}; {_MISSING_HINT}")
        return 2
    except ImportError as error:  # rankplug's own, whose message says what to install (torch-fidelity, ...)
        say(f"error: {error}")
        return 2
    except (CheckpointError, RunDirectoryError, DataFileError) as error:
        say(f"error: {error}")
        return 1
    except (ValueError, FileNotFoundError) as error:
        say(f"error: {error}")
        return 2
    except OSError as error:
        say(f"error: {_os_error(error)}")
        return 1
    except KeyboardInterrupt:
        say(_interrupted(args))
        return 130
    finally:
        library.removeHandler(handler)
        library.setLevel(level)


__all__ = ["build_parser", "eval_table", "main"]

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
