"""Negative samplers for training batches: ``sampler(shape) -> item indices``.

A sampler is built by the datamodule as ``Sampler(pool, counts, **options)``: ``pool`` (P,) the
items it may draw (training items, so cold items stay unseen), ``counts`` (I,) every item's
training count. ``sampler(shape, generator)`` draws with the given generator, which the dataset
seeds per (seed, epoch, sample), so batches are the same with any number of workers and after a
resume. A sampler of your own is one class: ``data.sampler._target_=my_pkg.MySampler``.
"""

from __future__ import annotations

import numpy as np
import torch


class UniformNegatives:
    """Every pool item equally likely."""

    def __init__(self, pool: np.ndarray, counts: np.ndarray):
        if len(pool) == 0:
            raise ValueError("no training items to draw negatives from")
        self.pool = torch.from_numpy(np.asarray(pool, dtype=np.int64))

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.pool[torch.randint(len(self.pool), shape, generator=generator)]


class PopularityNegatives:
    """Pool items drawn proportionally to ``count ** alpha`` (word2vec's 0.75 by default)."""

    def __init__(self, pool: np.ndarray, counts: np.ndarray, alpha: float = 0.75):
        if len(pool) == 0:
            raise ValueError("no training items to draw negatives from")
        self.pool = torch.from_numpy(np.asarray(pool, dtype=np.int64))
        self.weights = torch.from_numpy(np.asarray(counts, dtype=np.float64)[pool].clip(min=1) ** alpha)

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        n = int(np.prod(shape))
        return self.pool[torch.multinomial(self.weights, n, replacement=True, generator=generator)].view(shape)
