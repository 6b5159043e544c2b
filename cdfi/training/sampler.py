"""The training sampler: a ``DistributedSampler`` that can start an epoch part-way, so that a resumed
run sees exactly the batches it had not seen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DistributedSampler

__all__ = ["ResumableSampler"]


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose epoch skips its first ``skip`` indices of this rank (set by the
    ``Trainer`` on resume). Works single-process (``num_replicas=1``); the order is a function of
    (seed, epoch) as in ``DistributedSampler``."""

    def __init__(
        self,
        dataset: Any,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)
