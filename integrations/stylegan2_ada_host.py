"""What :class:`rankplug.integrations.stylegan2_ada.RankGANLoss` takes from its host and from ``torch.distributed``.

The host is NVlabs/stylegan2-ada-pytorch (or anything with its interfaces): its ``torch_utils.training_stats``
and ``misc.ddp_sync``, its network snapshots (``network-snapshot-*.pkl``, read with ``legacy.load_network_pkl``)
and its data sets (``training.dataset.ImageFolderDataset``). Nothing from the host is imported at import time:
each helper imports what it needs when it runs (the host repository is on ``sys.path`` then), and falls back to
an equivalent where one exists. Under ``torch.distributed`` the statistics the loss gathers (marker sample
sizes) cover every rank.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

import torch
from torch import Tensor, nn

#: What ``previous`` may be: a snapshot pickle's path, the snapshot's dict (``{"G": ..., "D": ...}``) or ``(G, D)``.
PreviousStage = Union[str, "os.PathLike[str]", Mapping[str, nn.Module], Sequence[nn.Module], None]

#: A data set as ``marker_dataset`` names it: a folder or zip path, or the host's ``training_set_kwargs``.
DatasetSpec = Union[str, "os.PathLike[str]", Mapping[str, Any]]

#: The host's ``misc.ddp_sync(module, sync)``: a context manager; ``module`` is any network the loss runs.
DDPSync = Callable[[Any, bool], contextlib.AbstractContextManager[None]]


# ------------------------------------------------------------------------------------------------ host hooks
def host_report() -> Callable[[str, Any], Any]:
    """The host's ``training_stats.report``, or a no-op when the host's ``torch_utils`` is not importable."""
    try:
        from torch_utils import training_stats
    except ImportError:
        return lambda name, value: value
    return training_stats.report


@contextlib.contextmanager
def _fallback_ddp_sync(module: object, sync: bool) -> Iterator[None]:
    # Without the host's helper: the same contract, no gradient all-reduce for a DDP module unless ``sync``.
    if isinstance(module, nn.parallel.DistributedDataParallel) and not sync:
        with module.no_sync():
            yield
    else:
        yield


def host_ddp_sync() -> DDPSync:
    """The host's ``misc.ddp_sync``, or an equivalent when the host's ``torch_utils`` is not importable.

    Example:
        >>> with host_ddp_sync()(torch.nn.Linear(2, 2), False):  # a plain module: nothing to hold back
        ...     pass
    """
    try:
        from torch_utils import misc
    except ImportError:
        return _fallback_ddp_sync
    return misc.ddp_sync


# ---------------------------------------------------------------------------------------- previous snapshot
def load_snapshot(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a host network snapshot (``network-snapshot-*.pkl``): a dict with ``G``, ``D``, ``G_ema``, ``augment_pipe``.

    Uses the host's ``legacy.load_network_pkl`` when importable (it also converts old TensorFlow pickles), plain
    :mod:`pickle` otherwise. Either way the host's modules must be importable. **A pickle runs code when it is
    loaded: only load snapshots you trust.**

    Example:
        >>> import pickle, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "snapshot.pkl"
        >>> _ = path.write_bytes(pickle.dumps({"G": torch.nn.Linear(2, 2), "D": torch.nn.Linear(2, 1)}))
        >>> sorted(load_snapshot(path))
        ['D', 'G']
    """
    with open(path, "rb") as file:
        try:
            import legacy  # the host's loader, importable when the host repository is on sys.path
        except ImportError:
            data = pickle.load(file)
        else:
            data = legacy.load_network_pkl(file)
    if not isinstance(data, Mapping):
        raise TypeError(f"{os.fspath(path)!r} holds a {type(data).__name__}; expected a snapshot dict with 'G' and 'D'")
    return dict(data)


def previous_networks(previous: PreviousStage, generator_key: str) -> tuple[nn.Module, nn.Module]:
    """``(G_{i-1}, D_{i-1})`` from ``previous`` (see :data:`PreviousStage`); ``generator_key`` is ``"G"`` or ``"G_ema"``.

    Example:
        >>> G, D = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
        >>> previous_networks({"G": G, "G_ema": G, "D": D}, "G_ema") == (G, D)
        True
    """
    source = load_snapshot(previous) if isinstance(previous, (str, os.PathLike)) else previous
    if isinstance(source, Mapping):
        missing = [key for key in (generator_key, "D") if key not in source]
        if missing:
            raise ValueError(f"the previous snapshot has no {missing}; it holds {sorted(source)}")
        generator, discriminator = source[generator_key], source["D"]
    elif isinstance(source, Sequence) and not isinstance(source, str) and len(source) == 2:
        generator, discriminator = source
    else:
        raise TypeError(
            "previous must be None, a snapshot path, a snapshot dict with 'G' and 'D', or a (G, D) pair; "
            f"got {type(previous).__name__}"
        )
    for name, module in (("previous generator", generator), ("previous discriminator", discriminator)):
        if not isinstance(module, nn.Module):
            raise TypeError(f"the {name} must be a torch.nn.Module; got {type(module).__name__}")
    return generator, discriminator


# ---------------------------------------------------------------------------------------------- data sets
def describe_dataset(spec: DatasetSpec) -> str:
    """``spec`` as an error message shows it: the path, or the options dict."""
    return repr(os.fspath(spec)) if isinstance(spec, (str, os.PathLike)) else repr(dict(spec))


def open_host_dataset(spec: DatasetSpec, *, use_labels: bool = False) -> Any:
    """The host's data set from a path (``training.dataset.ImageFolderDataset``) or its ``training_set_kwargs``.

    ``spec`` is JSON-friendly: a folder or zip path, or a dict with an optional ``class_name`` (default
    ``"training.dataset.ImageFolderDataset"``) and that class's keywords, e.g. the ``training_set_kwargs`` that
    ``train.py`` writes to ``training_options.json``. The host's ``training`` package must be importable.

    Shape:
        - Output ``dataset[i]``: ``(image, label)``, ``image`` ``uint8`` ``(C, R, R)``, ``label`` ``(c_dim,)``.

    Example:
        >>> import sys, types
        >>> host = types.ModuleType("my_datasets")
        >>> host.Pairs = lambda path, **options: [(path, options)]
        >>> sys.modules["my_datasets"] = host
        >>> open_host_dataset({"class_name": "my_datasets.Pairs", "path": "data.zip", "xflip": False})
        [('data.zip', {'xflip': False})]
        >>> del sys.modules["my_datasets"]
    """
    if isinstance(spec, (str, os.PathLike)):
        kwargs: dict[str, Any] = {"path": os.fspath(spec), "use_labels": use_labels}
    elif isinstance(spec, Mapping):
        kwargs = dict(spec)
    else:
        raise TypeError(f"marker_dataset must be a path or a dict of data set options; got {type(spec).__name__}")
    class_name = kwargs.pop("class_name", "training.dataset.ImageFolderDataset")
    module_name, _, attribute = str(class_name).rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ImportError(
            f"marker_dataset needs the host's {class_name!r} (is the stylegan2-ada-pytorch checkout on sys.path?): "
            f"{error}"
        ) from error
    return factory(**kwargs)


def dataset_labels(spec: DatasetSpec, count: int, c_dim: int, device: torch.device) -> Tensor:
    """``count`` labels drawn the host's way: the label of a random image of the data set, on the global RNG.

    Shape:
        - Output: ``(count, c_dim)``, float32, on ``device``.
    """
    dataset = open_host_dataset(spec, use_labels=True)
    rows = torch.randint(len(dataset), (count,)).tolist()
    get_label = getattr(dataset, "get_label", None)
    labels = [get_label(i) if get_label is not None else dataset[i][1] for i in rows]
    c = torch.stack([torch.as_tensor(label, dtype=torch.float32).reshape(-1) for label in labels]).to(device)
    if c.shape[1] != c_dim:
        raise ValueError(f"marker_dataset has labels of {c.shape[1]} values; the host's gen_c has {c_dim}")
    return c


def dataset_marker_batches(
    spec: DatasetSpec, count: int, batch_size: int, c_dim: int, device: torch.device
) -> Iterator[tuple[Tensor, Tensor]]:
    """This rank's share of ``min(count, len(data set))`` real images, as ``([-1, 1] images, labels)`` batches.

    Every rank draws the same seeded choice of images and takes every ``world``-th of them, so the ranks
    together cover the choice once and a statistic gathered over them is the same on every rank.

    Shape:
        - Output: batches ``(B, C, R, R)`` float32 and ``(B, c_dim)``, ``B <= batch_size``, on ``device``.
    """
    dataset = open_host_dataset(spec, use_labels=c_dim > 0)
    chosen_count = min(count, len(dataset))
    if chosen_count == 0:
        raise ValueError(f"marker_dataset {describe_dataset(spec)} holds no images")
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:chosen_count]
    rank, world = rank_and_world()
    share = torch.utils.data.Subset(dataset, chosen[rank::world].tolist())
    for img, c in torch.utils.data.DataLoader(share, batch_size=batch_size):
        # The host's own conversion of uint8 images (training_loop): [0, 255] -> [-1, 1].
        img = img.to(device).to(torch.float32) / 127.5 - 1
        c = c.to(device).to(torch.float32).reshape(img.shape[0], -1)[:, :c_dim]
        yield img, c


def marker_data_batches(
    marker_data: Iterable[Any] | None, limit: int, real_img: Tensor, real_c: Tensor, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """Up to ``limit`` ``(images, labels)`` batches of ``marker_data`` (images, or ``(img, c)`` pairs, in ``[-1, 1]``).

    Without ``marker_data``: the call's own ``(real_img, real_c)``. Images without labels get empty ones (``c_dim``
    of ``real_c``, which must then be 0 for the host's unconditional data).

    Example:
        >>> batches = marker_data_batches([torch.zeros(2, 3, 4, 4)] * 5, 3, None, torch.zeros(2, 0), "cpu")
        >>> len(batches), batches[0][1].shape
        (3, torch.Size([2, 0]))
    """
    if marker_data is None:
        return [(real_img, real_c)]
    batches = []
    for batch in marker_data:
        img, c = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        img = img.to(device, torch.float32)
        if c is None:
            c = real_c[:1].new_zeros(img.shape[0], real_c.shape[1])  # unconditional data: empty labels
        batches.append((img, c.to(device)))
        if len(batches) == limit:
            break
    if not batches:
        raise ValueError("marker_data is empty; expected at least one batch of real images")
    return batches


# ---------------------------------------------------------------------------------------- torch.distributed
def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` under an initialised ``torch.distributed``, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def cat_scores(scores: list[Tensor], device: torch.device) -> Tensor:
    """The scores of a rank in one tensor; empty when it scored nothing (it still joins every gather)."""
    # A rank may get no image when the data set is smaller than the number of ranks.
    return torch.cat(scores) if scores else torch.zeros(0, device=device)


def global_count(scores: Tensor) -> int:
    """How many scores all ranks hold together (a collective under ``torch.distributed``: call on every rank).

    Example:
        >>> global_count(torch.zeros(5))  # one process
        5
    """
    count = torch.tensor([scores.numel()], device=scores.device)
    if rank_and_world()[1] > 1:
        torch.distributed.all_reduce(count)
    return int(count.item())


__all__ = [
    "DDPSync",
    "DatasetSpec",
    "PreviousStage",
    "cat_scores",
    "dataset_labels",
    "dataset_marker_batches",
    "describe_dataset",
    "global_count",
    "host_ddp_sync",
    "host_report",
    "load_snapshot",
    "marker_data_batches",
    "open_host_dataset",
    "previous_networks",
    "rank_and_world",
]
