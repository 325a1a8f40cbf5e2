"""What a :class:`rankplug.StageManager` checkpoint holds besides weights, and how a load is checked, applied and
undone: one :class:`rankplug.CheckpointError` for a state that does not fit, and nothing changed then.

- :func:`check_state` checks a whole state against a :class:`LoadTarget` (the manager's live networks, encoder,
  registered objects and bank) and changes nothing.
- :func:`backup`, :func:`load_networks` and :func:`restore` apply the networks and registered objects of a checked
  state, and undo them when applying fails anyway.
- :func:`rng_state` / :func:`set_rng_state` are the random states a checkpoint carries; :func:`bank_entry`,
  :func:`gather_bank` and :func:`load_bank` the previous-stage bank's entry, one set of tensors per rank.
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rankplug.errors import CheckpointError
from rankplug.stages.bank import PreviousStageBank
from rankplug.stages.frozen import FrozenStage, freeze
from rankplug.stages.markers import rank, world_size

FORMAT_VERSION = 1


class Stateful(Protocol):
    """Anything with ``state_dict()`` / ``load_state_dict()``: optimizers, ``GradScaler``, EMA helpers."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state_dict: Any) -> Any: ...


@dataclass(frozen=True)
class LoadTarget:
    """What a checkpoint is loaded into: a manager's parts that a load checks and changes."""

    live: dict[str, nn.Module]  #: the live networks by name, unwrapped (``generator``, ``discriminator``, ...)
    encoder: nn.Module | None
    registered: dict[str, Stateful]
    bank: PreviousStageBank | None
    latent_shape: tuple[int, ...] | None
    device: torch.device  #: the generator's, where bank fills run


# ---------------------------------------------------------------------------------------------- random states
def rng_state() -> dict[str, Any]:
    """The torch, CUDA (when initialised), Python and NumPy random states, as a checkpoint holds them."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:  # numpy is optional
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(np.array(keys)), int(pos), int(has_gauss), float(cached)]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Put back the random states of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            return
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


# ------------------------------------------------------------------------------------- checkpoint validation
# What load_state_dict checks before it changes anything, so that a checkpoint that does not fit raises one
# CheckpointError and leaves the manager as it was.
_STATE_KEYS = frozenset(
    {"format", "stage", "markers", "live", "encoder", "previous", "registered", "rng", "history", "plateau"}
)
# Keys a checkpoint may lack: "bank" is written only by a manager with a PreviousStageBank.
_OPTIONAL_STATE_KEYS = frozenset({"bank"})
_BANK_KEYS = ("stage", "draws", "fills", "size", "keep", "refresh_every", "ranks")
_BANK_TENSORS = ("z", "images", "scores")
_RECORD_SERIES = ("gap", "real", "fake", "prev_fake")
# A bank's draws and fills are counters: beyond int64 they can only be an edit.
_MAX_COUNT = 2**63 - 1
_RNG_KEYS = frozenset({"torch", "python", "cuda", "numpy"})
# Optimizers whose per-parameter state tensors have the parameter's shape, or are scalars (step counts).
_ELEMENTWISE_OPTIMIZERS = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adadelta,
    torch.optim.Rprop,
    torch.optim.ASGD,
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if _is_real(value) or value is None else type(value).__name__


def _check_keys(where: str, found: Any, expected: Iterable[str]) -> None:
    if not isinstance(found, Mapping):
        raise CheckpointError(f"checkpoint {where} must be a dict; got {_kind(found)}")
    expected = set(expected)
    missing, unexpected = sorted(expected - set(found), key=str), sorted(set(found) - expected, key=str)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {where} has keys {sorted(found, key=str)}; expected {sorted(expected)} (missing "
            f"{missing}, unexpected {unexpected})"
        )


def _check_weights(where: str, found: Any, module: nn.Module) -> None:
    """``found`` must be a state dict of ``module``'s keys, each tensor of the same shape and dtype."""
    expected = module.state_dict()
    _check_keys(where, found, expected)
    for key, reference in expected.items():
        value = found[key]
        if not isinstance(reference, Tensor):  # extra state (get_extra_state): the module checks it
            continue
        if not isinstance(value, Tensor):
            raise CheckpointError(f"checkpoint {where}[{key!r}] must be a tensor; got {_kind(value)}")
        if value.shape != reference.shape or value.dtype != reference.dtype:
            raise CheckpointError(
                f"checkpoint {where}[{key!r}] has shape {tuple(value.shape)} and dtype {value.dtype}; this "
                f"manager's module has shape {tuple(reference.shape)} and dtype {reference.dtype}"
            )


def _check_markers(markers: Any, stage: int) -> None:
    if markers is None:
        return
    if not (_is_list(markers) and len(markers) == 2 and all(_is_real(m) and math.isfinite(m) for m in markers)):
        raise CheckpointError(f"checkpoint markers must be None or two finite floats (m_high, m_low); got {markers!r}")
    if stage == 1:
        raise CheckpointError("checkpoint holds markers at stage 1, which has no previous stage to compute them")


def _check_plateau(plateau: Any) -> None:
    reference, count = plateau if _is_list(plateau) and len(plateau) == 2 else (None, -1)
    reference_ok = reference is None or (_is_real(reference) and math.isfinite(reference))
    if not (reference_ok and _is_int(count) and count >= 0):
        raise CheckpointError(
            f"checkpoint plateau must be [reference, count] with reference None or a finite float and count an "
            f"int >= 0; got {plateau!r}"
        )


def _check_history(history: Any, stage: int) -> None:
    """One record per stage, in order; each with the score series of :meth:`StageManager.record` (extra keys ok)."""
    if not (_is_list(history) and len(history) == stage):
        length = len(history) if _is_list(history) else _kind(history)
        raise CheckpointError(f"checkpoint history must be a list of one record per stage ({stage}); got {length}")
    for index, entry in enumerate(history):
        where = f"history[{index}]"
        if not isinstance(entry, Mapping):
            raise CheckpointError(f"checkpoint {where} must be a dict; got {_kind(entry)}")
        if not (_is_int(entry.get("stage")) and entry["stage"] == index + 1):
            raise CheckpointError(f"checkpoint {where}['stage'] must be {index + 1}; got {entry.get('stage')!r}")
        if "markers" not in entry or not (entry["markers"] is None or isinstance(entry["markers"], Mapping)):
            raise CheckpointError(f"checkpoint {where}['markers'] must be None or a dict; got {entry.get('markers')!r}")
        for key in _RECORD_SERIES:
            series = entry.get(key)
            if not (isinstance(series, list) and all(_is_real(value) for value in series)):
                raise CheckpointError(f"checkpoint {where}[{key!r}] must be a list of floats; got {_kind(series)}")
        if not len(entry["gap"]) == len(entry["real"]) == len(entry["fake"]):
            raise CheckpointError(f"checkpoint {where} has gap, real and fake series of different lengths")


def _check_bank(found: Any, stage: int, target: LoadTarget) -> None:
    """A bank entry (or ``None``) that fits ``target.bank``, the manager's :class:`~rankplug.stages.PreviousStageBank`:
    same size and contents, the checkpoint's stage, counts in range, and per rank ``z`` ``(K, *latent_shape)``,
    ``images`` ``(K, ...)`` and ``scores`` ``(K,)`` tensors exactly where the bank keeps them, each of a dtype a fill
    on the generator's device makes (:func:`_bank_dtypes`). The images' shape is checked against the previous
    generator when it is rebuilt (:func:`load_networks`)."""
    if found is None:
        return
    bank, latent_shape = target.bank, target.latent_shape
    if bank is None:
        raise CheckpointError(
            "checkpoint holds a previous-stage bank but this manager has none (pass StageManager(..., bank=...))"
        )
    _check_keys("bank", found, _BANK_KEYS)
    for key in ("size", "keep"):
        if found[key] != getattr(bank, key):
            raise CheckpointError(
                f"checkpoint bank has {key} {found[key]!r}; this manager's bank has {getattr(bank, key)!r}"
            )
    if not (_is_int(found["stage"]) and found["stage"] == stage and stage >= 2):
        raise CheckpointError(
            f"checkpoint bank is for stage {found['stage']!r}; expected the checkpoint's stage {stage} >= 2"
        )
    for key in ("draws", "fills"):
        if not (_is_int(found[key]) and found[key] >= 0):
            raise CheckpointError(f"checkpoint bank[{key!r}] must be an int >= 0; got {_kind(found[key])}")
        if found[key] > _MAX_COUNT:
            raise CheckpointError(f"checkpoint bank[{key!r}] must be an int in [0, {_MAX_COUNT}]; got {found[key]}")
    refresh = found["refresh_every"]
    if not (refresh is None or (_is_int(refresh) and refresh >= 1)):
        raise CheckpointError(f"checkpoint bank['refresh_every'] must be None or an int >= 1; got {_kind(refresh)}")
    ranks = found["ranks"]
    if not (_is_list(ranks) and ranks):
        raise CheckpointError(
            f"checkpoint bank['ranks'] must be a non-empty list (one entry per rank); got {_kind(ranks)}"
        )
    size = bank.size
    expected = {
        "z": (size, *latent_shape) if latent_shape is not None else None,
        "images": None,
        "scores": (size,),
    }
    kept = {"z": True, "images": bank.keeps_images, "scores": bank.keeps_scores}
    dtypes = _bank_dtypes(target.device)
    for index, entry in enumerate(ranks):
        _check_keys(f"bank['ranks'][{index}]", entry, _BANK_TENSORS)
        for name in _BANK_TENSORS:
            where, value = f"bank['ranks'][{index}][{name!r}]", entry[name]
            if not kept[name]:
                if value is not None:
                    raise CheckpointError(f"checkpoint {where} must be None (the bank keeps {bank.keep!r})")
                continue
            if not (isinstance(value, Tensor) and value.is_floating_point() and value.dim() >= 1):
                raise CheckpointError(f"checkpoint {where} must be a floating-point tensor; got {_kind(value)}")
            if value.dtype not in dtypes:
                raise CheckpointError(
                    f"checkpoint {where} has dtype {value.dtype}; expected one of {', '.join(map(str, dtypes))} "
                    f"(what a fill on {target.device.type} keeps, with or without autocast)"
                )
            shape = expected[name]
            if value.shape[0] != size or (shape is not None and tuple(value.shape) != shape):
                want = shape if shape is not None else f"({size}, ...)"
                raise CheckpointError(f"checkpoint {where} has shape {tuple(value.shape)}; expected {want}")


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, Mapping) or not {"torch", "python"} <= set(rng) <= _RNG_KEYS:
        found = sorted(rng, key=str) if isinstance(rng, Mapping) else _kind(rng)
        raise CheckpointError(
            f"checkpoint rng must be a dict with 'torch', 'python' (and 'cuda', 'numpy'); got {found}"
        )
    reference = torch.get_rng_state()
    state = rng["torch"]
    if not (isinstance(state, Tensor) and state.dtype == reference.dtype and state.shape == reference.shape):
        raise CheckpointError(f"checkpoint rng['torch'] must be a uint8 tensor of shape {tuple(reference.shape)}")
    python = rng["python"]
    if not (_is_list(python) and len(python) == 3 and _is_list(python[1]) and all(map(_is_int, python[1]))):
        raise CheckpointError("checkpoint rng['python'] must be random.getstate()'s (version, internal, gauss)")
    cuda = rng.get("cuda", [])
    if not (_is_list(cuda) and all(isinstance(s, Tensor) and s.dtype == torch.uint8 for s in cuda)):
        raise CheckpointError("checkpoint rng['cuda'] must be a list of uint8 tensors")
    numpy = rng.get("numpy", [None, torch.zeros(0), 0, 0, 0.0])
    if not (_is_list(numpy) and len(numpy) == 5 and isinstance(numpy[1], Tensor)):
        raise CheckpointError("checkpoint rng['numpy'] must be numpy.random.get_state() with the keys as a tensor")


def _check_optimizer(where: str, optimizer: torch.optim.Optimizer, found: Any) -> None:
    """Groups and parameters as in ``optimizer``; elementwise state tensors of their parameter's shape."""
    _check_keys(where, found, ("state", "param_groups"))
    groups = found["param_groups"]
    if not (_is_list(groups) and len(groups) == len(optimizer.param_groups)):
        count = len(groups) if _is_list(groups) else _kind(groups)
        raise CheckpointError(
            f"checkpoint {where}['param_groups'] has {count} groups; the optimizer has {len(optimizer.param_groups)}"
        )
    params: dict[Any, Tensor] = {}
    for index, (live, group) in enumerate(zip(optimizer.param_groups, groups)):
        ids = group.get("params") if isinstance(group, Mapping) else None
        if not (isinstance(ids, (list, tuple)) and len(ids) == len(live["params"])):
            raise CheckpointError(f"checkpoint {where} param group {index} does not match the optimizer's")
        params.update(zip(ids, live["params"]))
    if not isinstance(found["state"], Mapping):
        raise CheckpointError(f"checkpoint {where}['state'] must be a dict; got {_kind(found['state'])}")
    for key, entry in found["state"].items():
        if key not in params or not isinstance(entry, Mapping):
            raise CheckpointError(f"checkpoint {where}['state'][{key!r}] belongs to no parameter of the optimizer")
        if not isinstance(optimizer, _ELEMENTWISE_OPTIMIZERS):
            continue
        for name, value in entry.items():
            if isinstance(value, Tensor) and value.ndim and value.shape != params[key].shape:
                raise CheckpointError(
                    f"checkpoint {where}['state'][{key!r}][{name!r}] has shape {tuple(value.shape)}; its "
                    f"parameter has {tuple(params[key].shape)}"
                )


def check_state(state: Any, target: LoadTarget) -> None:
    """Raise :class:`~rankplug.CheckpointError` unless ``state`` (a ``StageManager.state_dict()``) fits ``target``.

    Checks its keys and their types, every tensor's shape and dtype against the live modules (frozen copies have
    their structure) and the encoder, the registered optimizers, the history, plateau, markers, RNG and bank.
    Changes nothing.
    """
    if not isinstance(state, Mapping) or state.get("format") != FORMAT_VERSION:
        found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(f"not a StageManager checkpoint of format {FORMAT_VERSION} (got format {found!r})")
    _check_keys("(top level)", state, _STATE_KEYS | (_OPTIONAL_STATE_KEYS & set(state)))
    stage = state["stage"]
    if not (_is_int(stage) and stage >= 1):
        raise CheckpointError(f"checkpoint stage must be an int >= 1; got {_kind(stage)}")
    _check_markers(state["markers"], stage)
    _check_plateau(state["plateau"])
    _check_history(state["history"], stage)
    _check_rng(state["rng"])
    _check_networks(state, target)
    _check_bank(state.get("bank"), stage, target)
    _check_keys("registered", state["registered"], target.registered)
    for name, obj in target.registered.items():
        if isinstance(obj, torch.optim.Optimizer):
            _check_optimizer(f"registered[{name!r}]", obj, state["registered"][name])


def _check_networks(state: Mapping[str, Any], target: LoadTarget) -> None:
    live = target.live
    _check_keys("live", state["live"], live)
    for name, module in live.items():
        _check_weights(f"live[{name!r}]", state["live"][name], module)
    if (state["encoder"] is None) != (target.encoder is None):
        has = "has" if target.encoder is not None else "has no"
        raise CheckpointError(f"checkpoint encoder is {_kind(state['encoder'])} but this manager {has} encoder")
    if target.encoder is not None:
        _check_weights("encoder", state["encoder"], target.encoder)
    previous, stage = state["previous"], state["stage"]
    if previous is None:
        if stage != 1:
            raise CheckpointError(f"checkpoint is at stage {stage} but holds no previous stage")
        return
    _check_keys("previous", previous, ("stage", "weights"))
    if previous["stage"] != stage - 1 or not _is_int(previous["stage"]):
        raise CheckpointError(f"checkpoint previous stage is {previous['stage']!r}; expected {stage - 1}")
    _check_keys("previous['weights']", previous["weights"], live)
    for name, module in live.items():
        _check_weights(f"previous['weights'][{name!r}]", previous["weights"][name], module)


def _bank_dtypes(device: torch.device) -> tuple[torch.dtype, ...]:
    """The dtypes a bank filled by a generator on ``device`` holds: float32 (or the default dtype), or autocast's
    (bfloat16 on the CPU; float16 or bfloat16 on an accelerator)."""
    autocast = (torch.bfloat16,) if device.type == "cpu" else (torch.float16, torch.bfloat16)
    return tuple(dict.fromkeys((torch.float32, torch.get_default_dtype(), *autocast)))


def _check_bank_images(found: Mapping[str, Any] | None, generator: nn.Module) -> None:
    """Every rank's bank images must have the shape of the frozen ``generator``'s output on the bank's latents.

    One latent row goes through ``generator`` (a frozen copy: no graph, no statistics change), with the random
    states put back afterwards.
    """
    if found is None or all(entry["images"] is None for entry in found["ranks"]):
        return
    reference = next(generator.parameters(), torch.zeros(()))  # latents made under autocast may be float16
    device = reference.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            made = tuple(generator(found["ranks"][0]["z"][:1].to(device, reference.dtype)).shape[1:])
        except Exception as error:
            raise CheckpointError(
                f"checkpoint bank['ranks'][0]['z'] does not fit the previous generator: {error}"
            ) from error
    expected = (found["size"], *made)
    for index, entry in enumerate(found["ranks"]):
        if tuple(entry["images"].shape) != expected:
            raise CheckpointError(
                f"checkpoint bank['ranks'][{index}]['images'] has shape {tuple(entry['images'].shape)}; expected "
                f"{expected}, the previous generator's output on the bank's latents"
            )


# ------------------------------------------------------------------------------------------- applying, undoing
def backup(target: LoadTarget) -> dict[str, Any]:
    """What :func:`restore` needs to undo a failed load: copies of every state a load changes in ``target``."""
    return {
        "live": {name: _cpu_copy(module.state_dict()) for name, module in target.live.items()},
        "encoder": None if target.encoder is None else _cpu_copy(target.encoder.state_dict()),
        "registered": {name: copy.deepcopy(obj.state_dict()) for name, obj in target.registered.items()},
        "rng": rng_state(),
        "bank": None if target.bank is None else target.bank.snapshot(),
    }


def restore(target: LoadTarget, saved: Mapping[str, Any]) -> list[str]:
    """Undo a failed load from :func:`backup`; returns the registered objects that refused their state."""
    for name, module in target.live.items():
        module.load_state_dict(saved["live"][name])
    if target.encoder is not None:
        target.encoder.load_state_dict(saved["encoder"])
    unrestored = []
    for name, obj in target.registered.items():
        try:
            obj.load_state_dict(saved["registered"][name])
        except Exception:
            unrestored.append(name)
    if target.bank is not None:
        target.bank.restore(saved["bank"])
    set_rng_state(saved["rng"])
    return unrestored


def load_networks(state: Mapping[str, Any], target: LoadTarget) -> FrozenStage | None:
    """Load a checked state's weights and registered objects into ``target``; returns the rebuilt previous stage.

    The frozen copies are built (and the bank's images checked against them) before anything is changed.
    """
    previous = None
    if state["previous"] is not None:
        frozen = {name: freeze(module) for name, module in target.live.items()}
        for name, module in frozen.items():
            module.load_state_dict(state["previous"]["weights"][name])
        previous = FrozenStage(stage=state["previous"]["stage"], **frozen)
        _check_bank_images(state.get("bank"), previous.generator)
    for name, obj in target.registered.items():
        try:
            obj.load_state_dict(state["registered"][name])
        except Exception as error:
            raise CheckpointError(f"registered object {name!r} refused its state: {error}") from error
    for name, module in target.live.items():
        module.load_state_dict(state["live"][name])
    if target.encoder is not None:
        target.encoder.load_state_dict(state["encoder"])
    return previous


# ----------------------------------------------------------------------------------------------------- the bank
def bank_entry(bank: PreviousStageBank | None, ranks: list[dict[str, Tensor | None]]) -> dict[str, Any] | None:
    """The bank's checkpoint entry: settings, progress and one set of tensors per rank (``None`` if empty)."""
    if bank is None or not bank.filled:
        return None
    return {"stage": bank.stage, "draws": bank.draws, "fills": bank.fills, **bank.settings(), "ranks": ranks}


def gather_bank(bank: PreviousStageBank, device: torch.device) -> list[dict[str, Tensor | None]] | None:
    """Every rank's bank tensors, on every rank (a collective through ``device``), or ``None`` unless every rank's
    bank is filled."""
    filled = torch.tensor([int(bank.filled)], device=device)
    dist.all_reduce(filled, op=dist.ReduceOp.MIN)
    if not int(filled.item()):
        return None
    ranks: list[dict[str, Tensor | None]] = [{} for _ in range(world_size())]
    for name, tensor in bank.tensors().items():
        if tensor is None:
            for entry in ranks:
                entry[name] = None
            continue
        local = tensor.to(device)
        parts = [torch.empty_like(local) for _ in range(world_size())]
        dist.all_gather(parts, local.contiguous())
        for entry, part in zip(ranks, parts):
            entry[name] = part.to(tensor.device)
    return ranks


def load_bank(bank: PreviousStageBank | None, found: Mapping[str, Any] | None) -> None:
    """This rank's bank from a checked checkpoint entry; emptied (refilled at the next draw) when the entry is
    ``None`` or was written by another number of ranks."""
    if bank is None:
        return
    if found is None:
        bank.clear()
        return
    ranks = found["ranks"]
    if len(ranks) != world_size():
        warnings.warn(
            f"the checkpoint's bank was written by {len(ranks)} rank(s) and this run has {world_size()}; the bank is "
            "emptied and refilled at the next draw",
            RuntimeWarning,
            stacklevel=3,
        )
        bank.clear()
        return
    bank.load(found["stage"], dict(ranks[rank()]), found["draws"], found["fills"])


def _cpu_copy(state: Mapping[str, Any]) -> OrderedDict[str, Any]:
    """A copy of a module's state dict on the CPU (so a backup costs no accelerator memory), metadata kept."""
    out = OrderedDict(
        (key, value.detach().to("cpu", copy=True) if isinstance(value, Tensor) else copy.deepcopy(value))
        for key, value in state.items()
    )
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        out._metadata = copy.deepcopy(metadata)  # type: ignore[attr-defined]  # versioned loading reads it
    return out


__all__ = [
    "FORMAT_VERSION",
    "LoadTarget",
    "Stateful",
    "backup",
    "bank_entry",
    "check_state",
    "gather_bank",
    "load_bank",
    "load_networks",
    "restore",
    "rng_state",
    "set_rng_state",
]
