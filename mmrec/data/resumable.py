"""A training loader whose every epoch is a pure function of (seed, epoch), so a run resumed from a
mid-epoch checkpoint sees exactly the batches, in the same order with the same negatives, that the
uninterrupted run saw.

* ``EpochSampler`` is torch's DistributedSampler (shuffled by ``seed + epoch``, one shard per rank)
  that yields ``(index, epoch)`` pairs, so samples can seed their own randomness, and can skip the
  batches a resumed epoch already trained on.
* ``EpochLoader`` reseeds its own generator every epoch, so the DataLoader never draws from the
  global torch RNG (that draw would shift the model's dropout stream on resume).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler

from mmrec.distributed import rank_and_world

CHUNK = 1 << 16  # indices turned into Python ints at a time


class EpochSampler(DistributedSampler):
    """Shuffled indices of this rank's shard for the current epoch, as ``(index, epoch)`` pairs."""

    def __init__(
        self,
        size: int,
        seed: int,
        batch_size: int,
        drop_last: bool = False,
        resume: Callable[[], tuple[int, int] | None] | None = None,
    ):
        """``resume()``, asked once at the first iteration, gives (epoch, batches already trained) of a
        resumed run (None otherwise): those batches of that epoch are skipped."""
        rank, world = rank_and_world()

        class _Sized:
            def __len__(self) -> int:
                return size

        super().__init__(_Sized(), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        self.batch_size, self.resume = batch_size, resume

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # DistributedSampler's order (permutation by seed + epoch, padded or cut to total_size, every
        # world-th from rank), kept in a tensor and handed out a chunk at a time: its own __iter__
        # makes a Python list of every index (10^8 samples: minutes and gigabytes before a step)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        indices = torch.randperm(len(self.dataset), generator=generator)
        if self.drop_last:
            indices = indices[: self.total_size]
        elif self.total_size > len(indices):
            indices = torch.cat([indices] * math.ceil(self.total_size / len(indices)))[: self.total_size]
        indices = indices[self.rank : self.total_size : self.num_replicas]
        point, self.resume = (self.resume() if self.resume else None), None
        if point is not None and point[0] == self.epoch:
            indices = indices[point[1] * self.batch_size :]
        return self._pairs(indices, self.epoch)

    @staticmethod
    def _pairs(indices: torch.Tensor, epoch: int) -> Iterator[tuple[int, int]]:
        for start in range(0, len(indices), CHUNK):
            yield from ((i, epoch) for i in indices[start : start + CHUNK].tolist())


class EpochLoader(DataLoader):
    """A DataLoader over an EpochSampler whose generator (worker seeds) is reseeded from (seed, epoch)."""

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, generator=torch.Generator(), **kwargs)
        self.seed = seed

    def __iter__(self):
        self.generator.manual_seed(self.seed * 1_000_003 + self.sampler.epoch)
        return super().__iter__()
