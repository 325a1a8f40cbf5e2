"""The FID Inception weights: found in a local file (nothing is downloaded), read once, and checked.

:func:`fidelity_weights` finds the file (a ``weights=`` argument, ``$RANKPLUG_INCEPTION_WEIGHTS``, or the torch hub
cache under pytorch-fid's or torch-fidelity's name), and raises :class:`InceptionWeightsNotFound`, saying where it
looked and where to download the file, when it is missing. :func:`read_inception_weights` reads it once, with
``torch.load(weights_only=True)``, and checks that it is the FID Inception. :func:`inception_network` builds
torch-fidelity's network from the checked tensors, never from the file's path: torch-fidelity would open the path
again with ``weights_only=False``, which runs any code pickled into the file. :mod:`rankplug.app.eval.fidelity`
re-exports these names. This module never imports torch-fidelity: its module comes in as an argument.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import NamedTuple, Union

import torch
from torch import Tensor

from rankplug._validation import shape_str
from rankplug.app.eval.reference import FEATURE_DIM
from rankplug.errors import CheckpointError

__all__ = [
    "EXTRACTOR_NAME",
    "FIDELITY_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_URL",
    "MAX_WEIGHTS_BYTES",
    "NUM_CLASSES",
    "InceptionWeights",
    "InceptionWeightsNotFound",
    "fidelity_weights",
    "inception_network",
    "read_inception_weights",
]

FIDELITY_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
"""The name torch-fidelity gives the converted TensorFlow FID Inception weights in the torch hub cache."""

INCEPTION_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
"""The name pytorch-fid gives the same weights (the same tensors under the same keys)."""

INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
"""Where the weights come from (about 96 MB); rankplug never downloads it."""

INCEPTION_WEIGHTS_ENV = "RANKPLUG_INCEPTION_WEIGHTS"
"""Environment variable holding the path of the weights file, used when no ``weights=`` argument is given."""

MAX_WEIGHTS_BYTES = 512 << 20
"""The largest weights file rankplug reads (the FID Inception is 96 MB); a larger one is refused unread."""

EXTRACTOR_NAME = "inception-v3-compat"  # torch-fidelity's registered name of this feature extractor
NUM_CLASSES = 1008  # the TensorFlow Inception's classes (1000 ImageNet classes and 8 unused)
PathLike = Union[str, "os.PathLike[str]"]


class InceptionWeightsNotFound(FileNotFoundError):
    """The FID Inception weights file is missing; the message says where rankplug looked and how to get it.

    Attributes:
        searched: the paths looked at, in order.
    """

    def __init__(self, message: str, searched: tuple[Path, ...]) -> None:
        super().__init__(message)
        self.searched = searched


def _hub_files() -> list[Path]:
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return [checkpoints / INCEPTION_WEIGHTS_FILENAME, checkpoints / FIDELITY_WEIGHTS_FILENAME]


def _not_found(looked: list[tuple[str, Path | None, str]]) -> InceptionWeightsNotFound:
    lines = [f"  - {where}: {why}" if path is None else f"  - {where}: {path} ({why})" for where, path, why in looked]
    message = (
        "FID Inception weights not found. Looked at:\n"
        + "\n".join(lines)
        + f"\nDownload the file (about 96 MB) from\n  {INCEPTION_WEIGHTS_URL}\nand put it at\n  {_hub_files()[1]}\n"
        f"or anywhere else and pass weights='/path/to/{FIDELITY_WEIGHTS_FILENAME}' (--inception-weights) or set "
        f"{INCEPTION_WEIGHTS_ENV}. Nothing is downloaded."
    )
    return InceptionWeightsNotFound(message, tuple(path for _, path, _ in looked if path is not None))


def fidelity_weights(weights: PathLike | None = None) -> Path:
    """Path of the FID Inception weights file; raise :class:`InceptionWeightsNotFound` if it is missing.

    The first of these that is given is used, and must exist (a mistyped path fails rather than falling back):

    1. ``weights``, a path to the file;
    2. the environment variable ``RANKPLUG_INCEPTION_WEIGHTS`` (:data:`INCEPTION_WEIGHTS_ENV`);
    3. the torch hub cache, ``<torch.hub.get_dir()>/checkpoints/``, under pytorch-fid's name for the file
       (:data:`INCEPTION_WEIGHTS_FILENAME`), then torch-fidelity's (:data:`FIDELITY_WEIGHTS_FILENAME`).

    This is the lookup only; :func:`read_inception_weights` reads and checks the file. Nothing is downloaded.

    Example:
        >>> try:
        ...     fidelity_weights("/nowhere/pt_inception.pth")
        ... except InceptionWeightsNotFound as error:
        ...     print(str(error).splitlines()[1])
          - weights= argument: /nowhere/pt_inception.pth (no such file)
    """
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise TypeError(f"weights must be a path (str or os.PathLike) or None; got {type(weights).__name__}")
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        raise _not_found([("weights= argument", path, "a directory" if path.is_dir() else "no such file")])
    looked: list[tuple[str, Path | None, str]] = [("weights= argument", None, "not given")]
    from_env = os.environ.get(INCEPTION_WEIGHTS_ENV, "")
    if from_env:
        path = Path(from_env).expanduser()
        if path.is_file():
            return path
        looked.append((f"${INCEPTION_WEIGHTS_ENV}", path, "a directory" if path.is_dir() else "no such file"))
        raise _not_found(looked)
    looked.append((f"${INCEPTION_WEIGHTS_ENV}", None, "not set"))
    for cached in _hub_files():
        if cached.is_file():
            return cached
        looked.append(("torch hub cache", cached, "no such file"))
    raise _not_found(looked)


class InceptionWeights(NamedTuple):
    """The FID Inception weights, read once and checked by :func:`read_inception_weights`.

    Attributes:
        path: the file they were read from.
        sha256: the SHA-256 of the bytes read (part of every reference cache key).
        state_dict: the tensors, on the CPU.
    """

    path: Path
    sha256: str
    state_dict: dict[str, Tensor]


def read_inception_weights(path: PathLike) -> InceptionWeights:
    """Read a weights file once, with ``torch.load(weights_only=True)``, and check that it is the FID Inception.

    The bytes are read into memory once, so the SHA-256 and the tensors come from the same read, whatever happens
    to the file afterwards. Refused: a file over :data:`MAX_WEIGHTS_BYTES` (before it is read), one that holds
    pickled objects other than tensors and plain data, one that is not a mapping of names to tensors, one without
    the 1008-class ``fc.weight`` of shape ``(1008, 2048)``, and one with NaN or infinite weights.

    Raises:
        rankplug.errors.CheckpointError: the file is unreadable, too large, truncated, holds pickled code or is not
            the FID Inception; the message names the file.
    """
    source = Path(path)
    try:
        with open(source, "rb") as handle:
            data = handle.read(MAX_WEIGHTS_BYTES + 1)
    except OSError as error:
        raise CheckpointError(f"Inception weights file {source} cannot be read: {error.strerror or error}") from error
    if len(data) > MAX_WEIGHTS_BYTES:
        raise CheckpointError(
            f"Inception weights file {source} is over {MAX_WEIGHTS_BYTES >> 20} MiB; the FID Inception is 96 MB"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    # A hostile or damaged file can make the restricted unpickler or the zip reader raise almost anything.
    except Exception as error:
        said = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"refusing to load {source}: it holds objects other than tensors and plain data, or it is truncated "
            f"(torch.load(weights_only=True) said: {said})"
        ) from error
    if not isinstance(state, Mapping) or not all(
        isinstance(name, str) and isinstance(value, Tensor) for name, value in state.items()
    ):
        raise CheckpointError(f"{source} is not a state dict (a mapping of parameter names to tensors)")
    fc = state.get("fc.weight")
    if not isinstance(fc, Tensor) or tuple(fc.shape) != (NUM_CLASSES, FEATURE_DIM):
        got = f"fc.weight of shape {shape_str(fc)}" if isinstance(fc, Tensor) else "no fc.weight"
        raise CheckpointError(
            f"{source} is not the FID Inception state dict: expected fc.weight of shape ({NUM_CLASSES}, "
            f"{FEATURE_DIM}), got {got}. torchvision's ImageNet Inception weights are a different network; "
            f"download {INCEPTION_WEIGHTS_URL}"
        )
    broken = [name for name, value in state.items() if value.is_floating_point() and not bool(value.isfinite().all())]
    if broken:
        raise CheckpointError(f"{source} holds NaN or infinite weights ({', '.join(broken[:3])})")
    return InceptionWeights(source, hashlib.sha256(data).hexdigest(), dict(state))


def inception_network(fidelity: ModuleType, weights: InceptionWeights) -> torch.nn.Module:
    """torch-fidelity's FID Inception holding ``weights``' tensors, built without letting it open a file."""
    # torch-fidelity 0.4 passes feature_extractor_weights_path to torch.load(weights_only=False). It gets an
    # in-memory file written here from the tensors already checked, never the user's path: nothing pickled into
    # that file can run, and a file swapped after rankplug read it changes nothing.
    buffer = io.BytesIO()
    torch.save(weights.state_dict, buffer)
    buffer.seek(0)
    try:
        network: torch.nn.Module = fidelity.FeatureExtractorInceptionV3(
            EXTRACTOR_NAME, ["2048", "logits_unbiased"], feature_extractor_weights_path=buffer
        )
    except RuntimeError as error:  # load_state_dict(strict=True): missing or unexpected keys, other shapes
        raise CheckpointError(
            f"{weights.path} is not the FID Inception state dict: {str(error).splitlines()[0]}"
        ) from error
    return network
