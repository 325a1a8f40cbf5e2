"""Run directories: reading their files safely, and a lock so that one process at a time writes into one.

A run directory (``rankplug train --dir``, the demo's ``rankgan/`` and ``baseline/``) is read back by
``rankplug eval`` and ``complete``, perhaps on another machine and from a copy someone sent. So nothing read
from it may run code or build something unbounded: JSON files are parsed and checked by :func:`read_json`,
checkpoints go through :func:`rankplug.stages.checkpoint.safe_load` (``weights_only=True`` and a checksum), settings
are validated before any network is built, and CIFAR-10 batches named by ``run.json`` are read with an
unpickler that only admits arrays (:func:`rankplug.app.data.read_cifar_batch`).

While a process trains or evaluates in a directory it holds :func:`lock_run`: an exclusive lock on
``.rankplug.lock`` (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows). A second process is refused with
the first one's pid. The operating system drops the lock when its holder dies, however it dies, so a lock
left by a killed process is stale by construction and the next process takes it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rankplug.errors import RunDirectoryError, RunLockedError

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

Result = TypeVar("Result")

LOCK_NAME = ".rankplug.lock"


def read_json(path: str | os.PathLike[str], *, expect: type = dict) -> Any:
    """Parse a JSON file of a run directory; raise :class:`RunDirectoryError` naming the file if it is malformed.

    NaN and infinities (which Python's ``json`` writes and reads by default) are refused like any other
    non-JSON token, and the top-level value must be an ``expect`` (a ``dict`` by default).
    """
    source = Path(path)

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not a JSON number")

    try:
        value = json.loads(source.read_text(encoding="utf-8"), parse_constant=refuse)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise RunDirectoryError(f"{source} is not a readable JSON file: {error}") from error
    if not isinstance(value, expect):
        raise RunDirectoryError(f"{source} must hold a JSON {expect.__name__}; got {type(value).__name__}")
    return value


def check_directory_argument(path: object, name: str = "--dir") -> Path:
    """A directory the caller will write into: non-empty, not an existing file, and creatable/writable.

    Nothing is created. Raises ``ValueError`` naming ``name``.
    """
    if not isinstance(path, (str, os.PathLike)) or str(path).strip() == "":
        raise ValueError(f"{name} must be a directory path; got {path!r}")
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{name} {str(directory)!r} exists and is not a directory")
    existing = directory
    while not existing.exists():  # the nearest existing ancestor decides whether we may create it
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {str(directory)!r} is not writable ({str(existing)!r} is read-only for this user)")
    return directory


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def lock_run(directory: str | os.PathLike[str], *, command: str = "rankplug") -> Iterator[Path]:
    """Hold the run directory's lock for the block; raise :class:`RunLockedError` if a live process holds it.

    The directory must exist. The lock file is opened without following a symlink, records the holder's pid,
    host and start time (for the refusal message), and is left in place afterwards (deleting it would let two
    processes lock two different files).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     with lock_run(run_dir):
        ...         pass  # train, save, evaluate
    """
    path = Path(directory) / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        raise RunDirectoryError(f"cannot open the lock file {path}: {error.strerror or error}") from error
    try:
        if not _try_lock(fd):
            raise RunLockedError(
                f"{Path(directory)} is in use by {_holder(fd)}; wait for it to finish or use another directory"
            )
        os.ftruncate(fd, 0)
        stamp = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.write(fd, (json.dumps(dict(stamp, command=command)) + "\n").encode())
        yield Path(directory)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def holds_run_lock(command: str) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Decorate a job whose first argument is an existing run directory so that it runs under :func:`lock_run`."""

    def decorate(job: Callable[..., Result]) -> Callable[..., Result]:
        @functools.wraps(job)
        def locked(run_dir: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Result:
            if not Path(run_dir).is_dir():
                raise FileNotFoundError(f"{run_dir} is not a run directory: no such directory")
            with lock_run(run_dir, command=command):
                return job(run_dir, *args, **kwargs)

        return locked

    return decorate


# ------------------------------------------------------------------------------------ the run-directory format
RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
RUN_FORMAT = "rankplug.run/1"


def read_run_config(run_dir: str | os.PathLike[str]) -> Any:
    """A run directory's ``run.json`` as a validated :class:`~rankplug.app.training.TrainConfig`.

    Raises ``FileNotFoundError`` when the directory has none and :class:`RunDirectoryError` naming the file when
    it is malformed or a setting is out of range (nothing is built from it then).
    """
    from rankplug.app.training.config import TrainConfig

    path = Path(run_dir) / RUN_FILE
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory: no such directory")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no {RUN_FILE} (made by `rankplug train`)")
    spec = read_json(path)
    if spec.get("format") != RUN_FORMAT or not isinstance(spec.get("config"), dict):
        raise RunDirectoryError(f"{path} is not a valid run file: expected format {RUN_FORMAT!r} and a config")
    try:
        return TrainConfig.from_dict(spec["config"])
    except (ValueError, TypeError) as error:
        raise RunDirectoryError(f"{path} is not a valid run file: {error}") from error


def stage_files(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(stage, path)`` of every ``models-stage<i>.safetensors`` in the directory, in stage order."""
    found = []
    for path in Path(run_dir).glob("models-stage*.safetensors"):
        stem = path.stem.rsplit("stage", 1)[-1]
        if stem.isdigit():
            found.append((int(stem), path))
    return sorted(found)


class StageModels:
    """The networks of one ``models-stage<i>.safetensors``, in eval mode, and what the file says about them.

    ``generator`` is the EMA copy when the run kept one (the one to sample and evaluate), ``raw_generator`` the
    trained one; ``encoder`` is ``None`` without RankGAN's encoder.
    """

    def __init__(
        self, config: Any, stage: int, steps: int, generator: Any, raw: Any, critic: Any, encoder: Any
    ) -> None:
        self.config, self.stage, self.generator_steps = config, stage, steps
        self.generator, self.raw_generator, self.discriminator, self.encoder = generator, raw, critic, encoder
        self.num_classes = generator.num_classes


def load_stage_models(path: str | os.PathLike[str], *, config: Any = None, device: str = "cpu") -> StageModels:
    """Load ``models-stage<i>.safetensors`` (its SHA-256 checked); its settings are validated before any network is
    built, and must equal ``config`` (the run's ``run.json``) when given."""
    from rankplug.app.training.config import TrainConfig
    from rankplug.app.weights import read_stage_weights
    from rankplug.errors import CheckpointError

    facts, states = read_stage_weights(path, device=device)
    try:
        saved = TrainConfig.from_dict(facts["config"])
        channels, classes = int(facts["channels"]), int(facts["num_classes"])
        if channels not in (1, 3) or not 1 <= classes <= 100_000:
            raise ValueError(f"channels {channels} / num_classes {classes} out of range")
        G, D, E = _build(saved, channels, classes)
        G.load_state_dict(states["generator"])
        D.load_state_dict(states["discriminator"])
        if E is not None:
            E.load_state_dict(states["encoder"])
        ema = None
        if "ema_generator" in states:
            ema = _build(saved, channels, classes)[0]
            ema.load_state_dict(states["ema_generator"])
        stage, steps = int(facts["stage"]), int(facts["generator_steps"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} is not a valid rankplug stage checkpoint: {error}") from error
    differ = "" if config is None else config.differences(saved, here=f"in {RUN_FILE}")
    if differ:
        raise RunDirectoryError(f"{path} was written by another run than {RUN_FILE} describes ({differ})")
    for module in (G, D, E, ema):
        if module is not None:
            module.eval().requires_grad_(False)
    return StageModels(saved, stage, steps, ema if ema is not None else G, G, D, E)


def load_generator(run_dir: str | os.PathLike[str], stage: int | None = None, *, device: str = "cpu") -> nn.Module:
    """The generator of a ``rankplug train`` run, in eval mode, ready to sample.

    The EMA generator when the run kept one, else the trained one, of ``stage`` (the last stage written when
    ``None``). The returned module has a ``latent_shape`` attribute (the shape of one latent code) and
    ``num_classes`` (0 for an unconditional run); call it as ``G(z)``, or ``G(z, labels)`` when conditional.

    Args:
        run_dir: the run directory (``rankplug train --dir``).
        stage: which stage, from 1; ``None`` for the last one written.
        device: where the weights are put.

    Raises:
        FileNotFoundError: ``run_dir`` holds no stage file (or not that ``stage``).
        CheckpointError: the file is damaged or not a rankplug stage file.

    Example:
        >>> import rankplug
        >>> G = rankplug.load_generator("runs/digits")                          # doctest: +SKIP
        >>> images = G(torch.randn(16, *G.latent_shape))                        # doctest: +SKIP
    """
    from rankplug.app.weights import WEIGHTS_NAME

    files = dict(stage_files(run_dir))
    if not files:
        raise FileNotFoundError(f"{run_dir} holds no stage weights ({WEIGHTS_NAME.format(stage='<i>')})")
    chosen = max(files) if stage is None else stage
    if chosen not in files:
        raise FileNotFoundError(f"{run_dir} has no stage {stage}; it has stage(s) {', '.join(map(str, sorted(files)))}")
    generator: nn.Module = load_stage_models(files[chosen], device=device).generator
    return generator


def _build(config: Any, channels: int, classes: int) -> tuple[Any, Any, Any]:
    import torch

    from rankplug.app.training.loop import Networks

    nets = Networks(config.replace(ema=0.0, amp=False), channels, classes, torch.device("cpu"))
    return nets.G, nets.D, nets.E


def write_run_file(run_dir: Path, config: Any) -> None:
    """``run.json``: the format tag and every setting."""
    write_json(run_dir / RUN_FILE, {"format": RUN_FORMAT, "config": config.to_dict()})


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (an exclusive temporary file renamed over the old one)."""
    from rankplug.stages.checkpoint import atomic_write

    atomic_write(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def train_run(
    run_dir: str | os.PathLike[str],
    config: Any,
    *,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) ``config`` in a run directory: everything is checked before anything is written.

    ``run.json`` records the config; a second call with the same config resumes from the last checkpoint (and
    says so), one with another config is refused. The directory is locked (:func:`lock_run`) while the run
    trains, so a second process is refused instead of mixing two runs. Under ``torchrun`` rank 0 writes the
    files and every rank trains. ``callback`` gets every record of the trainer (see
    :func:`rankplug.app.training.train`), beside the progress bar.
    """
    from rankplug.app.data import open_dataset

    say = echo or _stderr
    run_dir = check_directory_argument(run_dir, "run_dir")
    dataset = open_dataset(config.data, config.data_root, config.size, split="train")
    main = int(os.environ.get("RANK", "0")) == 0
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train_locked(run_dir, config, dataset, main, progress, say, callback)
    except BaseException:
        if created and main and not stage_files(run_dir):
            _remove_empty_run(run_dir)  # a run that died before its first checkpoint leaves no directory behind
        raise


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything to resume: a stage's weights or the stage manager's checkpoint."""
    from rankplug.stages import CHECKPOINT_NAME

    return bool(stage_files(run_dir)) or (run_dir / CHECKPOINT_NAME).exists()


def check_tensorboard_folder(run_dir: Path, config: Any) -> None:
    """Refuse ``tensorboard`` when ``run_dir/tensorboard`` cannot take event files, before anything is written."""
    if not config.tensorboard:
        return
    folder = run_dir / "tensorboard"
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"tensorboard: {folder} exists and is not a folder; remove it or train without --tensorboard")
    target = folder if folder.is_dir() else run_dir
    if not os.access(target, os.W_OK | os.X_OK):
        raise ValueError(f"tensorboard: {target} is not writable; fix its permissions or train without --tensorboard")


def _remove_empty_run(run_dir: Path) -> None:
    """Remove what a failed first call wrote (``run.json``, the lock, empty TensorBoard files) and the directory."""
    import shutil

    for name in (RUN_FILE, LOCK_NAME):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only if nothing else is left


def _train_locked(
    run_dir: Path,
    config: Any,
    dataset: Any,
    main: bool,
    progress: bool,
    say: Callable[[str], None],
    callback: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    from rankplug.app.training.loop import train

    with lock_run(run_dir, command=f"train {config.method}") if main else contextlib.nullcontext(run_dir):
        existing = read_run_config(run_dir) if (run_dir / RUN_FILE).is_file() else None
        if existing is None and has_checkpoint(run_dir):
            raise RunDirectoryError(
                f"{run_dir} holds checkpoints but no {RUN_FILE}: they were not written by `rankplug train` here; "
                "pick another directory"
            )
        if existing is not None and has_checkpoint(run_dir):
            differ = config.differences(existing)
            if differ:
                raise ValueError(f"{run_dir} holds a run with other settings ({differ}); pick another directory")
            if config.stages < existing.stages:
                raise ValueError(
                    f"{run_dir} holds a run of {existing.stages} stages; stages must be at least {existing.stages} "
                    "(more stages continue it)"
                )
        check_tensorboard_folder(run_dir, config)
        if main and existing != config:  # run.json changes only when nothing is refused (a run may grow)
            write_run_file(run_dir, config)
        bar = _progress_bar(config, run_dir, progress and main, say)
        hooks = [hook for hook in (bar, callback) if hook is not None]

        def each_record(event: dict[str, Any]) -> None:
            for hook in hooks:
                hook(event)

        try:
            result = train(config, dataset=dataset, directory=run_dir, callback=each_record, progress=False)
        finally:
            if bar is not None:
                bar.close()
        if main:
            write_json(
                run_dir / HISTORY_FILE, {k: v for k, v in result.items() if k not in ("generator", "discriminator")}
            )
    return result


def _stderr(message: str) -> None:
    logger.info(message)


class _Bar:
    """A tqdm bar over the generator steps, fed by the trainer's records."""

    def __init__(self, total: int, initial: int, description: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=description, unit="step", dynamic_ncols=True)

    def __call__(self, event: dict[str, Any]) -> None:
        self.bar.update(event["step"] - self.bar.n)
        self.bar.set_postfix(stage=event["stage"], gap=f"{event['gap']:.3f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _progress_bar(config: Any, run_dir: Path, enabled: bool, say: Callable[[str], None]) -> _Bar | None:
    files = stage_files(run_dir)
    total = config.stages * config.steps_per_stage
    done = 0
    if files:
        from rankplug.app.weights import read_stage_weights

        done = int(read_stage_weights(files[-1][1])[0].get("generator_steps", 0))
        status = "finished" if done >= total else "interrupted"
        say(
            f"[{config.method}] resuming the {status} run in {run_dir} from its last checkpoint ({done} of {total} steps)"
        )
    return _Bar(total, done, config.method) if enabled and done < total else None


__all__ = [
    "HISTORY_FILE",
    "LOCK_NAME",
    "RUN_FILE",
    "RunDirectoryError",
    "RunLockedError",
    "StageModels",
    "check_directory_argument",
    "holds_run_lock",
    "load_generator",
    "load_stage_models",
    "lock_run",
    "read_json",
    "read_run_config",
    "stage_files",
    "train_run",
    "write_json",
]
