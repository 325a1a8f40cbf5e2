"""What a :class:`rankplug.StageManager` checkpoint holds besides weights, and how it is checked before loading:
the random states, and validators that raise one :class:`rankplug.CheckpointError` for a checkpoint that does
not fit, so that ``load_state_dict`` changes nothing then.
"""

from __future__ import annotations

import copy
import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rankplug.errors import CheckpointError


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: Mapping[str, Any]) -> None:
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


def _check_bank(found: Any, stage: int, bank: Any, latent_shape: tuple[int, ...] | None) -> None:
    """A bank entry (or ``None``) that fits ``bank``, this manager's :class:`~rankplug.stages.PreviousStageBank`:
    same size and contents, the checkpoint's stage, and per rank ``z`` ``(K, *latent_shape)``, ``images``
    ``(K, ...)`` and ``scores`` ``(K,)`` floating-point tensors exactly where the bank keeps them."""
    if found is None:
        return
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
