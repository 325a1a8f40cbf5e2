"""Run NVlabs/stylegan2-ada-pytorch's own ``train.py`` with rankplug's stage loss, leaving every upstream file as is.

Usage (the options before ``--`` are rankplug's, everything after it goes to ``train.py`` unchanged)::

    python -m rankplug.integrations.stylegan2_ada_launch STYLEGAN2_ADA_DIR [stage options] -- TRAIN_FLAGS

What it does, in this order:

1. puts ``STYLEGAN2_ADA_DIR`` first on ``sys.path`` and applies :func:`apply_compat_fixes` (upstream's
   ``InfiniteSampler`` on torch releases whose ``Sampler.__init__`` takes no argument; ``distutils`` on Python
   releases without it);
2. wraps ``train.setup_training_loop_kwargs`` so that the options ``train.py`` builds name
   :class:`rankplug.integrations.stylegan2_ada.RankGANLoss` as ``loss_kwargs.class_name`` and carry the stage
   options (``previous``, ``variant``, ...) and, for a RankGAN stage ``>= 2``, ``marker_dataset`` (the
   training set's own options, so the markers of RankGAN Eq. 6 come from up to ``--marker-images`` real images);
   the run directory's name gets a ``-rankplug`` suffix;
3. wraps ``train.subprocess_fn`` so that every rank, the processes ``--gpus=N`` spawns included, applies the
   fixes before ``training_loop`` runs;
4. calls ``train.main()`` with ``TRAIN_FLAGS`` as its command line.

``--previous`` also resumes the live networks from the same snapshot (RankGAN Algorithm 1: stage ``i`` starts
from stage ``i - 1``) unless ``TRAIN_FLAGS`` already has a ``--resume``. Nothing is written into the upstream
checkout; ``training_options.json`` in the run directory records the loss and every stage option.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from rankplug.integrations.settings import check_device_setting, check_weight_setting
from rankplug.methods import STAGED, StageObjective

LOSS_CLASS = "rankplug.integrations.stylegan2_ada.RankGANLoss"
#: Files a stylegan2-ada-pytorch checkout has; the launcher refuses a folder without them.
UPSTREAM_FILES = ("train.py", "training/training_loop.py", "torch_utils/misc.py", "dnnlib/util.py")
#: The launcher's stage options and the RankGANLoss keyword each one sets.
STAGE_OPTIONS = {
    "previous": "previous",
    "variant": "variant",
    "margin": "margin",
    "clamp_weight": "clamp_weight",
    "rank_weight": "rank_weight",
    "markers": "markers",
    "marker_statistic": "marker_statistic",
    "marker_images": "marker_images",
    "previous_generator": "previous_generator",
    "sign_reference": "sign_reference",
    "bank_size": "bank_size",
    "bank_refresh_every": "bank_refresh_every",
    "bank_device": "bank_device",
}


# --------------------------------------------------------------------------------------- compatibility fixes
class _SamplerTakingDataSource(torch.utils.data.Sampler):  # type: ignore[type-arg]
    """A ``Sampler`` base whose ``__init__`` takes the ``data_source`` argument older torch releases accepted.

    Upstream's ``InfiniteSampler.__init__`` calls ``super().__init__(dataset)``. torch dropped ``data_source``
    from ``Sampler.__init__`` (it had been ignored and deprecated), and without this base the call reaches
    ``object.__init__`` and raises ``TypeError: object.__init__() takes exactly one argument``.
    """

    def __init__(self, data_source: object = None) -> None:
        super().__init__()


def _sampler_rejects_data_source() -> bool:
    probe = torch.utils.data.Sampler.__new__(torch.utils.data.Sampler)
    try:
        torch.utils.data.Sampler.__init__(probe, [0])  # type: ignore[call-arg]
    except TypeError:
        return True
    return False


def _fix_infinite_sampler() -> bool:
    misc = importlib.import_module("torch_utils.misc")
    sampler = getattr(misc, "InfiniteSampler", None)
    if sampler is None or _SamplerTakingDataSource in sampler.__mro__ or not _sampler_rejects_data_source():
        return False
    # Only upstream's class changes: its base becomes a Sampler that swallows the argument. Every other Sampler,
    # and torch itself, are untouched.
    sampler.__bases__ = tuple(
        _SamplerTakingDataSource if base is torch.utils.data.Sampler else base for base in sampler.__bases__
    )
    return True


def _strtobool(value: str) -> int:
    """``distutils.util.strtobool``, which upstream's ``dnnlib.util`` imports: 1 for yes-words, 0 for no-words."""
    word = value.lower()
    if word in ("y", "yes", "t", "true", "on", "1"):
        return 1
    if word in ("n", "no", "f", "false", "off", "0"):
        return 0
    raise ValueError(f"invalid truth value {value!r}")


def _fix_distutils() -> bool:
    # Python 3.12 removed distutils; upstream's dnnlib/util.py imports strtobool from it at import time.
    try:
        importlib.import_module("distutils.util")
    except ImportError:
        package, util = types.ModuleType("distutils"), types.ModuleType("distutils.util")
        util.strtobool = _strtobool  # type: ignore[attr-defined]
        package.util = util  # type: ignore[attr-defined]
        sys.modules["distutils"], sys.modules["distutils.util"] = package, util
        return True
    return False


def apply_compat_fixes() -> list[str]:
    """Make upstream's code run on current torch and Python, without touching its files; returns what was fixed.

    - ``InfiniteSampler``: see :class:`_SamplerTakingDataSource`. Applied only when this torch's
      ``Sampler.__init__`` rejects the argument, once.
    - ``distutils.util.strtobool``: provided when ``distutils`` cannot be imported (Python >= 3.12 without
      setuptools' copy).

    The host checkout must be importable (on ``sys.path``). Idempotent: a second call fixes nothing.

    Example:
        >>> import sys, types
        >>> misc = types.ModuleType("torch_utils.misc")
        >>> class InfiniteSampler(torch.utils.data.Sampler):
        ...     def __init__(self, dataset):
        ...         super().__init__(dataset)  # what upstream does
        ...         self.dataset = dataset
        >>> misc.InfiniteSampler = InfiniteSampler
        >>> sys.modules["torch_utils.misc"] = misc
        >>> "InfiniteSampler" in apply_compat_fixes() or not _sampler_rejects_data_source()
        True
        >>> len(InfiniteSampler([1, 2, 3]).dataset), apply_compat_fixes()
        (3, [])
        >>> del sys.modules["torch_utils.misc"]
    """
    fixed = []
    if _fix_distutils():
        fixed.append("distutils.util.strtobool")
    if _fix_infinite_sampler():
        fixed.append("InfiniteSampler")
    return fixed


# ------------------------------------------------------------------------------------------- the options
def stage_loss_kwargs(
    options: argparse.Namespace | dict[str, Any], training_set_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The ``loss_kwargs`` entries for the stage options given (JSON-friendly: strings, numbers, lists, dicts).

    Only options that were given are set, so :class:`~rankplug.integrations.stylegan2_ada.RankGANLoss` keeps its
    own defaults. A RankGAN stage ``>= 2`` without ``markers``, and any stage ``>= 2`` with a ``bank_size`` (its
    bank draws labels the host's way), also gets ``marker_dataset``, a copy of the training set's options, so
    markers and labels come from the training data.

    Example:
        >>> kwargs = stage_loss_kwargs({"previous": "s1.pkl", "clamp_weight": 1.0}, {"path": "data.zip"})
        >>> kwargs["previous"], kwargs["clamp_weight"], kwargs["marker_dataset"]
        ('s1.pkl', 1.0, {'path': 'data.zip'})
        >>> stage_loss_kwargs({}, {"path": "data.zip"})  # stage 1
        {'class_name': 'rankplug.integrations.stylegan2_ada.RankGANLoss'}
    """
    given = vars(options) if isinstance(options, argparse.Namespace) else dict(options)
    unknown = sorted(set(given) - set(STAGE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown stage options {unknown}; expected some of {sorted(STAGE_OPTIONS)}")
    kwargs: dict[str, Any] = {"class_name": LOSS_CLASS}
    for name, value in given.items():
        kwargs[STAGE_OPTIONS[name]] = list(value) if isinstance(value, tuple) else value
    staged = given.get("previous") is not None
    needs_markers = StageObjective(given.get("variant", "rankgan")).needs_markers(2) and "markers" not in given
    if staged and (needs_markers or given.get("bank_size", 0) > 0):
        kwargs["marker_dataset"] = dict(training_set_kwargs)
    return kwargs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rankplug.integrations.stylegan2_ada_launch",
        description="Run stylegan2-ada-pytorch's train.py with rankplug's RankGAN / GoGAN stage loss.",
        epilog="Example: ... ~/stylegan2-ada-pytorch --previous=runs/00000-x/network-snapshot-000200.pkl "
        "-- --outdir=runs --data=data.zip --gpus=1",
        argument_default=argparse.SUPPRESS,  # options not given stay out of loss_kwargs: the loss's defaults hold
    )
    parser.add_argument("upstream", metavar="STYLEGAN2_ADA_DIR", help="your stylegan2-ada-pytorch checkout")
    parser.add_argument("--previous", metavar="PKL", help="the stage i-1 snapshot (omit for stage 1); also --resume")
    parser.add_argument("--variant", choices=STAGED, help="stage >= 2 objective [rankgan]")
    parser.add_argument("--margin", type=float, help="epsilon of the margin / GoGAN losses [1.0]")
    parser.add_argument("--clamp-weight", type=float, help="RankGAN lambda_clamp [1000, the paper's]")
    parser.add_argument("--rank-weight", type=float, help="GoGAN lambda_2 [1.0]")
    parser.add_argument("--markers", type=float, nargs=2, metavar=("M_HIGH", "M_LOW"), help="fixed markers")
    parser.add_argument("--marker-statistic", choices=("mean", "median"), help="markers' statistic [mean]")
    parser.add_argument("--marker-images", type=int, help="real images the markers use, at most [5000]")
    parser.add_argument("--previous-generator", choices=("G", "G_ema"), help="snapshot entry used as G_{i-1} [G]")
    parser.add_argument("--sign-reference", choices=("midpoint", "zero"), help="Loss/signs/* reference [midpoint]")
    parser.add_argument(
        "--bank-size",
        type=int,
        metavar="K",
        help="keep G_{i-1} on K drawn latents instead of running it per step [0: off]",
    )
    parser.add_argument("--bank-refresh-every", type=int, metavar="N", help="re-draw the bank every N Dmain rounds")
    parser.add_argument("--bank-device", metavar="DEVICE", help="where the bank lives, e.g. cpu [the loss's device]")
    return parser


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def _check_upstream(path: str) -> Path:
    root = Path(path).expanduser().resolve()
    missing = [name for name in UPSTREAM_FILES if not (root / name).is_file()]
    if missing:
        raise ValueError(
            f"STYLEGAN2_ADA_DIR {path!r} is not a stylegan2-ada-pytorch checkout: it has no {', '.join(missing)}"
        )
    return root


def _has_option(flags: Sequence[str], name: str) -> bool:
    return any(flag == name or flag.startswith(name + "=") for flag in flags)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_stage_options(options: dict[str, Any]) -> None:
    """Refuse stage options ``RankGANLoss`` or ``train.py`` would refuse later, with a ``ValueError`` naming the option.

    ``options`` are the parsed stage options (the keys of ``STAGE_OPTIONS``; those not given absent). Checked
    here, before ``train.py`` starts: the weights are finite and ``>= 0``, ``--markers`` finite with
    ``M_LOW <= M_HIGH``, the counts in range, ``--previous`` an existing file, ``--bank-device`` a device this
    machine has, and the bank options only with ``--previous`` (stage 1 has no bank).

    Example:
        >>> check_stage_options({"margin": 0.5, "bank_device": "cpu", "bank_size": 8})
        Traceback (most recent call last):
        ...
        ValueError: --bank-size and --bank-device need --previous: the bank holds the previous stage's outputs
    """
    for name in ("margin", "clamp_weight", "rank_weight"):
        if name in options:
            check_weight_setting(options[name], _flag(name))
    if "markers" in options:
        high, low = options["markers"]
        if not (math.isfinite(high) and math.isfinite(low) and low <= high):
            raise ValueError(f"--markers M_HIGH M_LOW must be finite numbers with M_LOW <= M_HIGH; got {high} {low}")
    for name, minimum in (("marker_images", 1), ("bank_size", 0), ("bank_refresh_every", 1)):
        if name in options and options[name] < minimum:
            raise ValueError(f"{_flag(name)} must be >= {minimum}; got {options[name]}")
    if "bank_device" in options:
        check_device_setting(options["bank_device"], "--bank-device")
    previous = options.get("previous")
    bank = [_flag(name) for name in ("bank_size", "bank_refresh_every", "bank_device") if name in options]
    if previous is None and bank:
        verb = "needs" if len(bank) == 1 else "need"
        raise ValueError(f"{' and '.join(bank)} {verb} --previous: the bank holds the previous stage's outputs")
    if previous is not None and not Path(previous).is_file():
        state = "is not a file" if Path(previous).exists() else "does not exist"
        raise ValueError(
            f"--previous must be the previous stage's snapshot file (network-snapshot-*.pkl); {previous!r} {state}"
        )


def _refuse(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """The user's mistake: one line on stderr, exit status 2, as argparse's own errors (without the usage)."""
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# ------------------------------------------------------------------------------------------------ running
_ORIGINAL_SUBPROCESS_FN = "_rankplug_original_subprocess_fn"


def run_rank(rank: int, args: Any, temp_dir: str) -> None:
    """``train.subprocess_fn`` with the compatibility fixes applied first (in this process, as every rank needs)."""
    apply_compat_fixes()
    train = importlib.import_module("train")
    original = getattr(train, _ORIGINAL_SUBPROCESS_FN, train.subprocess_fn)
    original(rank=rank, args=args, temp_dir=temp_dir)


def install(train: Any, options: dict[str, Any]) -> None:
    """Wrap ``train.setup_training_loop_kwargs`` and ``train.subprocess_fn`` of an imported upstream ``train``."""
    setup = train.setup_training_loop_kwargs

    def setup_with_rankplug(**config_kwargs: Any) -> tuple[str, Any]:
        desc, args = setup(**config_kwargs)
        rankplug_kwargs = stage_loss_kwargs(options, args.training_set_kwargs)
        # r1_gamma and the other StyleGAN2Loss settings train.py chose stay; the class and the stage options change.
        args.loss_kwargs.update(rankplug_kwargs)
        return desc + "-rankplug", args

    if not hasattr(train, _ORIGINAL_SUBPROCESS_FN):
        setattr(train, _ORIGINAL_SUBPROCESS_FN, train.subprocess_fn)
    train.setup_training_loop_kwargs = setup_with_rankplug
    # A module-level function: torch.multiprocessing.spawn pickles it by name into every rank's process.
    train.subprocess_fn = run_rank


def main(argv: Sequence[str] | None = None) -> None:
    """The command line (see the module docstring). ``train.main()`` may end the process, as it does upstream."""
    ours, train_flags = _split(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    options = vars(parser.parse_args(ours))
    try:
        root = _check_upstream(options.pop("upstream"))
        check_stage_options(options)
    except ValueError as error:
        _refuse(parser, str(error))
    if options.get("previous") is not None and not _has_option(train_flags, "--resume"):
        train_flags.append(f"--resume={options['previous']}")
    sys.path.insert(0, str(root))
    fixed = apply_compat_fixes()
    print(f"rankplug: {LOSS_CLASS} in {root / 'train.py'}; fixes: {', '.join(fixed) or 'none needed'}")
    train = importlib.import_module("train")
    install(train, options)
    sys.argv = [str(root / "train.py"), *train_flags]
    command = train.main
    if callable(getattr(command, "main", None)):  # upstream's click command: name it train.py in its messages
        command.main(args=train_flags, prog_name="train.py")
    else:
        command()


__all__ = [
    "LOSS_CLASS",
    "apply_compat_fixes",
    "check_stage_options",
    "install",
    "main",
    "run_rank",
    "stage_loss_kwargs",
]

if __name__ == "__main__":
    main()
