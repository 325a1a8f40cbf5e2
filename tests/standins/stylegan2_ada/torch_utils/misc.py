"""Stand-in for upstream ``torch_utils.misc``: the DDP gradient-sync switch and the infinite sampler."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sized

import numpy as np
import torch


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Run the body with DDP gradient all-reduce switched off unless ``sync``; plain modules are left alone."""
    if isinstance(module, torch.nn.parallel.DistributedDataParallel) and not sync:
        with module.no_sync():
            yield
    else:
        yield


class InfiniteSampler(torch.utils.data.Sampler):
    """Indices of ``dataset`` for one rank, forever, reshuffled within a sliding window (upstream's sampler).

    Like upstream's, ``__init__`` passes ``dataset`` on to ``torch.utils.data.Sampler.__init__``. torch releases
    whose ``Sampler`` takes no argument there raise ``TypeError: object.__init__() takes exactly one argument``;
    the stand-in keeps that call so the launcher's compatibility fix is exercised.
    """

    def __init__(
        self,
        dataset: Sized,
        rank: int = 0,
        num_replicas: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        window_size: float = 0.5,
    ) -> None:
        if len(dataset) == 0 or num_replicas < 1 or not 0 <= rank < num_replicas or not 0 <= window_size <= 1:
            raise ValueError("InfiniteSampler: empty dataset or bad rank / num_replicas / window_size")
        super().__init__(dataset)  # type: ignore[call-arg]  # upstream's call, kept on purpose (see above)
        self.dataset, self.rank, self.num_replicas = dataset, rank, num_replicas
        self.shuffle, self.seed, self.window_size = shuffle, seed, window_size

    def __iter__(self) -> Iterator[int]:
        count = len(self.dataset)
        rng = np.random.RandomState(self.seed)
        order = rng.permutation(count) if self.shuffle else np.arange(count)
        window = round(count * self.window_size) if self.shuffle else 0
        step = 0
        while True:
            position = step % count
            if step % self.num_replicas == self.rank:
                yield int(order[position])
            if window >= 2:
                other = (position - rng.randint(window)) % count
                order[position], order[other] = order[other], order[position]
            step += 1
