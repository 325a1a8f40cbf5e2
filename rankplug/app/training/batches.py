"""Endless batches of real images for the trainer: a sampler that draws with replacement, and a fetcher that reads
a batch in one indexing call when the data set is held in memory."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


class InfiniteSampler(Sampler[int]):
    """Indices drawn uniformly with replacement, forever, from a ``torch.Generator`` seeded with ``seed``."""

    def __init__(self, count: int, seed: int) -> None:
        self.count, self.seed = count, seed

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            yield from torch.randint(self.count, (4096,), generator=generator).tolist()


class RealBatches:
    """Batches ``(x, y)`` of a dataset on the run's device; :meth:`restart` begins a stream seeded from the RNG."""

    def __init__(self, dataset: Dataset[Any], batch_size: int, workers: int, device: torch.device) -> None:
        self.dataset, self.batch_size, self.workers, self.device = dataset, batch_size, workers, device
        self._stream: Iterator[Any] | None = None

    def restart(self, rank: int = 0) -> None:
        seed = int(torch.randint(2**62, ())) + rank  # from the (checkpointed) global RNG
        sampler = InfiniteSampler(len(self.dataset), seed)  # type: ignore[arg-type]
        fetch = batch_fetcher(self.dataset)
        if fetch is not None and self.workers == 0:  # data in memory: index whole batches, no per-item collate
            indices = iter(sampler)
            self._stream = (fetch(torch.tensor([next(indices) for _ in range(self.batch_size)])) for _ in iter(int, 1))
            return
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.workers,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        self._stream = iter(loader)

    def next(self) -> tuple[Tensor, Tensor]:
        if self._stream is None:
            self.restart()
        assert self._stream is not None
        x, y = next(self._stream)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def take(self, images: int) -> list[Tensor]:
        """At least ``images`` real images in batches (for the markers), from the current stream."""
        batches, count = [], 0
        while count < images:
            batches.append(self.next()[0])
            count += batches[-1].shape[0]
        return batches

    def epoch(self) -> _Epoch:
        """A re-iterable pass over about one epoch of batches, drawn as they are used (memory flat in the data)."""
        return _Epoch(self, math.ceil(len(self.dataset) / self.batch_size))  # type: ignore[arg-type]


class _Epoch:
    """``batches`` real batches from a :class:`RealBatches` stream each time it is iterated (the VAE's epochs)."""

    def __init__(self, reals: RealBatches, batches: int) -> None:
        self.reals, self.batches = reals, batches

    def __iter__(self) -> Iterator[Tensor]:
        return (self.reals.next()[0] for _ in range(self.batches))


def batch_fetcher(dataset: Dataset[Any]) -> Callable[[Tensor], tuple[Tensor, Tensor]] | None:
    """The dataset's ``batch(indices)`` (in-memory data, :mod:`rankplug.app.data`), through a ``Subset`` too."""
    if callable(getattr(dataset, "batch", None)):
        return dataset.batch  # type: ignore[attr-defined,no-any-return]
    inner = getattr(dataset, "dataset", None)
    if isinstance(dataset, torch.utils.data.Subset) and callable(getattr(inner, "batch", None)):
        positions = torch.as_tensor(dataset.indices)
        return lambda indices: inner.batch(positions[indices])  # type: ignore[union-attr]
    return None


__all__ = ["InfiniteSampler", "RealBatches", "batch_fetcher"]
