"""A stage's networks as a ``.safetensors`` file that anyone can read, and reading it back.

``rankplug train`` writes ``models-stage<i>.safetensors`` at the end of each stage: the generator, the critic, the
encoder (RankGAN with ``encoder``) and the EMA generator (with ``ema``), their tensors named ``generator.<key>``,
``discriminator.<key>``, ``encoder.<key>`` and ``ema_generator.<key>``. The file's metadata holds what rebuilding the
networks needs (the run's settings as JSON, the number of image channels and of classes), the stage and its
generator steps, and a SHA-256 of the tensors that rankplug checks on every read. ``safetensors`` alone opens it::

    from safetensors.torch import load_file
    tensors = load_file("run/models-stage3.safetensors")

The manager's own state (optimisers, random-number generators, the bank) stays in ``stage_manager.pt``, which only
rankplug reads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rankplug.errors import CheckpointError
from rankplug.stages.checkpoint import atomic_write

WEIGHTS_NAME = "models-stage{stage}.safetensors"
WEIGHTS_FORMAT = "rankplug.weights/1"
#: The networks a stage file may hold, in the order they are written.
NETWORKS = ("generator", "discriminator", "encoder", "ema_generator")


def _digest(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_stage_weights(path: str | os.PathLike[str], networks: Mapping[str, nn.Module | None], **facts: Any) -> Path:
    """Write ``networks`` (names from :data:`NETWORKS`; ``None`` is left out) and ``facts`` (JSON values) to ``path``
    as ``.safetensors``, atomically (a temporary file renamed into place)."""
    from safetensors.torch import save

    unknown = sorted(set(networks) - set(NETWORKS))
    if unknown:
        raise ValueError(f"networks must be named from {NETWORKS}; got {unknown}")
    tensors = {
        f"{name}.{key}": value.detach().to("cpu", copy=True).contiguous()
        for name in NETWORKS
        if networks.get(name) is not None
        for key, value in networks[name].state_dict().items()  # type: ignore[union-attr]
    }
    metadata = {"format": WEIGHTS_FORMAT, "sha256": _digest(tensors)}
    metadata.update({key: json.dumps(value) for key, value in facts.items()})
    return atomic_write(path, save(tensors, metadata=metadata))


def read_stage_weights(
    path: str | os.PathLike[str], *, device: str = "cpu"
) -> tuple[dict[str, Any], dict[str, dict[str, Tensor]]]:
    """The facts and the per-network state dicts of a file :func:`save_stage_weights` wrote.

    Raises :class:`~rankplug.errors.CheckpointError` naming the file when it is not a rankplug stage file, is
    truncated, or its tensors do not match the SHA-256 it carries.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    source = Path(path)
    try:
        data = source.read_bytes()
        tensors = load(data)
        header_length = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_length]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{source} is not a readable .safetensors file: {error}") from error
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{source} is not a rankplug stage file (format {WEIGHTS_FORMAT!r})")
    if metadata.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{source}: its tensors do not match the SHA-256 it carries (changed or damaged)")
    try:
        facts = {key: json.loads(value) for key, value in metadata.items() if key not in ("format", "sha256")}
    except ValueError as error:
        raise CheckpointError(f"{source}: malformed metadata: {error}") from error
    states: dict[str, dict[str, Tensor]] = {}
    for full_name, tensor in tensors.items():
        network, _, key = full_name.partition(".")
        if network not in NETWORKS or not key:
            raise CheckpointError(f"{source}: unexpected tensor {full_name!r}")
        states.setdefault(network, {})[key] = tensor.to(device)
    return facts, states


__all__ = ["NETWORKS", "WEIGHTS_FORMAT", "WEIGHTS_NAME", "read_stage_weights", "save_stage_weights"]
