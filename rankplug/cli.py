"""The ``rankplug`` command (also ``python -m rankplug``): ``demo``, ``train``, ``eval`` and ``complete``.

- ``rankplug demo``: RankGAN with 3 stages and a same-compute WGAN-GP baseline on the bundled digits, evaluated
  per stage, with pictures, the score-ladder plot, ``metrics.json`` and ``report.md``
  (:func:`rankplug.demo.job.run_demo`). ``--conditional`` trains a conditional digits GAN with the angular-margin
  auxiliary classifier and with softmax cross entropy on the same budget and compares them.
- ``rankplug train``: one run of any method on the digits, an image folder or a CIFAR-10 copy on disk.
- ``rankplug eval RUN_DIR``: the metrics of every stage checkpoint of a run.
- ``rankplug complete RUN_DIR``: the image-completion evaluation (MATH §7) of a run's stages, with a picture.

Every long step shows a progress bar (``--no-progress`` turns them off); the demo's optional dependencies
come with ``pip install "rankplug[demo]"``.

Exit status: 0 on success; 2 for a mistake in the command line (a bad option value, a directory that cannot
be used, a missing file or optional package), with a one-line message and no traceback; 1 when a file that
rankplug reads is malformed, corrupt or in use by another process, or the disk fails (the message names the
file); 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import math
import sys
from collections.abc import Sequence
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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite positive number; got {value}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {value}")
    return value


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


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--completion-images", type=_positive_int, default=64, help="held-out images to complete")
    parser.add_argument("--completion-steps", type=_positive_int, default=100, help="RMSprop steps of the z search")
    parser.add_argument("--fid-samples", type=_positive_int, default=1000, help="samples for digits-FID / FID")
    parser.add_argument(
        "--inception-weights",
        default=None,
        metavar="PATH",
        help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth) for Inception FID / IS",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rankplug`` command."""
    from rankplug.demo.train import METHODS  # here, not at import: Ctrl-C while torch loads lands in main()

    parser = argparse.ArgumentParser(prog="rankplug", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,train,eval,complete}")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, formatter_class=_Formatter)

    demo = add("demo", "train RankGAN stages and a baseline on the bundled digits, and report")
    demo.add_argument("--dir", type=_directory, default="rankplug-demo", help="demo directory")
    demo.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the WGAN-GP baseline")
    demo.add_argument("--conditional", action="store_true", help="AAM vs softmax auxiliary classifier instead")
    demo.add_argument("--size", type=int, choices=(16, 32), default=16, help="image side")
    demo.add_argument("--stages", type=_positive_int, default=3, help="RankGAN stages")
    demo.add_argument("--steps-per-stage", type=_positive_int, default=None, help="default: fit --budget")
    demo.add_argument("--budget", type=_positive_float, default=170.0, help="seconds of training to aim for")
    demo.add_argument("--seed", type=int, default=0, help="seed of both runs")
    demo.add_argument("--quick", action="store_true", help="a few steps only (a smoke test)")
    demo.add_argument("--inception-weights", default=None, metavar="PATH", help="adds Inception FID / IS")
    _add_common(demo)

    tr = add("train", "train one run (any method, your data)")
    tr.add_argument(
        "--dir", type=_directory, required=True, help="run directory; an existing run with the same settings resumes"
    )
    tr.add_argument("--method", choices=METHODS, default="rankgan", help="training method")
    tr.add_argument("--stages", type=_positive_int, default=3, help="stages (segments for single-stage methods)")
    tr.add_argument("--steps-per-stage", type=_positive_int, default=300, help="generator steps per stage")
    tr.add_argument("--data", choices=("digits", "folder", "cifar10"), default="digits", help="data set")
    tr.add_argument("--data-root", default=None, help="image folder or CIFAR-10 root (--data folder / cifar10)")
    tr.add_argument("--size", type=int, choices=(16, 32), default=16, help="image side")
    tr.add_argument("--encoder", action="store_true", help="RankGAN's VAE encoder (Sec. 3.3) for the latents")
    tr.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1")
    tr.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, float16 on CUDA)")
    tr.add_argument("--seed", type=int, default=0, help="seed of torch and Python's random")
    tr.add_argument("--batch-size", type=_positive_int, default=64, help="real and fake batch size")
    tr.add_argument("--n-critic", type=_positive_int, default=None, help="default 5 (1 for mbgan, dcgan)")
    tr.add_argument("--margin", type=_nonnegative_float, default=1.0, help="eps of the margin losses")
    tr.add_argument("--log-every", type=_positive_int, default=10, help="generator steps between records")
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
    return parser


def _demo(args: argparse.Namespace) -> int:
    _check_inception_weights(args.inception_weights)
    if args.conditional:
        from rankplug.demo.job import run_conditional_demo

        run_conditional_demo(args.dir, seed=args.seed, quick=args.quick, progress=args.progress)
        return 0
    from rankplug.demo.job import run_demo

    run_demo(
        args.dir,
        baseline=args.baseline,
        size=args.size,
        stages=args.stages,
        steps_per_stage=args.steps_per_stage,
        budget_seconds=args.budget,
        seed=args.seed,
        quick=args.quick,
        inception_weights=args.inception_weights,
        progress=args.progress,
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from rankplug.demo.job import train_run
    from rankplug.runs import check_directory_argument

    if args.data != "digits" and args.data_root is None:
        raise ValueError(f"--data {args.data} needs --data-root")
    if args.data == "digits" and args.data_root is not None:
        raise ValueError("--data-root is for --data folder or cifar10; the digits are bundled")
    check_directory_argument(args.dir, "--dir")
    kwargs: dict[str, Any] = {
        "size": args.size,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "margin": args.margin,
        "log_every": args.log_every,
        "device": args.device,
        "amp": args.amp,
        "encoder": args.encoder,
    }
    if args.n_critic is not None:
        kwargs["n_critic"] = args.n_critic
    result = train_run(
        args.dir,
        method=args.method,
        data=args.data,
        data_root=args.data_root,
        stages=args.stages,
        steps_per_stage=args.steps_per_stage,
        progress=args.progress,
        **kwargs,
    )
    last = result["stages"][-1]
    print(
        f"{args.method}: {result['generator_steps']} generator steps in {result['wall_time']:.0f} s; "
        f"gap at the end {last['gap'][-1]:.4f}. Next: rankplug eval {args.dir}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    _check_inception_weights(args.inception_weights)
    from rankplug.demo.job import evaluate_run

    results = evaluate_run(
        args.run_dir,
        completion_images=args.completion_images,
        completion_steps=args.completion_steps,
        fid_samples=args.fid_samples,
        inception_weights=args.inception_weights,
        progress=args.progress,
        force=args.force,
    )
    print("| stage | generator steps | gap Γ (end) | digits-FID | completion PSNR (dB) | SSIM |")
    print("|---|---|---|---|---|---|")
    for entry in results:
        psnr = entry["completion"]["psnr"]
        ssim = entry["completion"]["ssim"]
        fid = entry.get("digits_fid")
        gap = entry.get("gap_end")
        print(
            f"| {entry['stage']} | {entry['generator_steps']} | {'-' if gap is None else f'{gap:.3f}'} "
            f"| {'-' if fid is None else f'{fid:.2f}'} | {sum(psnr) / len(psnr):.2f} | {sum(ssim) / len(ssim):.3f} |"
        )
    print(f"(saved as eval-stage<i>.json in {args.run_dir})")
    return 0


def _complete(args: argparse.Namespace) -> int:
    from rankplug.demo.job import complete_run

    table = complete_run(
        args.run_dir,
        images=args.images,
        steps=args.steps,
        coverages=args.coverages,
        perceptual_weight=args.perceptual_weight,
        progress=args.progress,
    )
    print(table)
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

    try:
        args = build_parser().parse_args(argv)
        handlers = {"demo": _demo, "train": _train, "eval": _eval, "complete": _complete}
        return handlers[args.command](args)
    except ModuleNotFoundError as error:
        say(f"{error}; {_MISSING_HINT}")
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


__all__ = ["build_parser", "main"]

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
