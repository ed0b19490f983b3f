"""Compressed sparse rows (CSR) of user -> items, and the few operations mmrec needs on them.

A CSR pair is ``ptr`` (U+1,) int64 offsets and ``items`` (nnz,) int64: the items of row u are
``items[ptr[u]:ptr[u+1]]``. Targets, seen items and histories of evaluation users use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class CSR:
    """Rows of item indices. ``ptr`` (U+1,), ``items`` (nnz,)."""

    ptr: torch.Tensor
    items: torch.Tensor

    @classmethod
    def from_groups(cls, groups: list[np.ndarray]) -> CSR:
        lengths = np.array([len(g) for g in groups], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.concatenate(groups).astype(np.int64) if groups else np.zeros(0, dtype=np.int64)
        return cls(torch.from_numpy(ptr), torch.from_numpy(flat))

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def lengths(self) -> torch.Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    def row_of_entries(self) -> torch.Tensor:
        """(nnz,) the row each entry belongs to."""
        return torch.repeat_interleave(torch.arange(len(self), device=self.ptr.device), self.lengths())

    def to(self, device: torch.device | str) -> CSR:
        return CSR(self.ptr.to(device), self.items.to(device))

    def select(self, rows: torch.Tensor) -> CSR:
        """The sub-CSR of ``rows`` (R,), in that order."""
        rows = rows.to(self.ptr.device)
        starts, lengths = self.ptr[rows], self.ptr[rows + 1] - self.ptr[rows]
        ptr = torch.cat([self.ptr.new_zeros(1), lengths.cumsum(0)])
        offsets = torch.arange(int(ptr[-1]), device=ptr.device) - torch.repeat_interleave(ptr[:-1], lengths)
        return CSR(ptr, self.items[torch.repeat_interleave(starts, lengths) + offsets])

    def contains(self, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether ``items[i]`` is in row ``rows[i]`` (both (P,)), by binary search on sorted keys."""
        return PairSet.from_pairs(self.row_of_entries(), self.items).contains(rows, items)


@dataclass
class PairSet:
    """A set of (row, item) pairs as sorted int64 keys ``row * stride + item``; membership by binary search."""

    keys: torch.Tensor
    stride: int

    @classmethod
    def from_pairs(cls, rows: torch.Tensor, items: torch.Tensor, stride: int | None = None) -> PairSet:
        stride = stride or (int(items.max()) + 1 if len(items) else 1)
        return cls(torch.unique(rows.long() * stride + items.long()), stride)

    def contains(self, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Broadcasts like ``rows * items``; items at or beyond ``stride`` are never members."""
        keys = self.keys.to(rows.device)
        query = rows.long() * self.stride + items.long()
        if len(keys) == 0:
            return torch.zeros_like(query, dtype=torch.bool)
        pos = torch.searchsorted(keys, query.flatten()).clamp(max=len(keys) - 1)
        return ((keys[pos] == query.flatten()) & (items.long() < self.stride).expand_as(query).flatten()).view(
            query.shape
        )
