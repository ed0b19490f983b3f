"""Compressed sparse rows (CSR) of user -> items, and the few operations mmrec needs on them.

A CSR pair is ``ptr`` (U+1,) int64 offsets and ``items`` (nnz,) int64: the items of row u are
``items[ptr[u]:ptr[u+1]]``. Targets, seen items and histories of evaluation users use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Ragged:
    """Rows of different lengths in two flat numpy arrays: row r is ``values[offsets[r]:offsets[r+1]]``.

    The per-user sequences of a split: 10^8 interactions are two arrays, not 10^6 small ones, and they
    can be memory-mapped from disk (``open``), so DDP ranks and DataLoader workers on one node share
    one copy through the page cache and each reads only the rows it touches.
    """

    values: np.ndarray
    offsets: np.ndarray  # (R+1,) int64, non-decreasing, offsets[0] == 0, offsets[-1] == len(values)

    @classmethod
    def from_rows(cls, rows: list[np.ndarray]) -> Ragged:
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        values = np.concatenate([np.asarray(r) for r in rows]) if rows else np.zeros(0, dtype=np.int64)
        return cls(values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    @classmethod
    def from_sorted(cls, rows: np.ndarray, values: np.ndarray, num_rows: int) -> Ragged:
        """From ``values`` ordered by their non-decreasing row indices ``rows``."""
        return cls(values, np.searchsorted(rows, np.arange(num_rows + 1)).astype(np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> np.ndarray:
        return self.values[self.offsets[row] : self.offsets[row + 1]]

    def __iter__(self):
        return (self[r] for r in range(len(self)))

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row_of_entries(self) -> np.ndarray:
        """(len(values),) the row each value belongs to."""
        return np.repeat(np.arange(len(self)), self.lengths())

    def entry(self, flat: int) -> tuple[int, int]:
        """(row, position in the row) of the ``flat``-th value."""
        row = int(np.searchsorted(self.offsets, flat, side="right")) - 1
        return row, int(flat - self.offsets[row])

    def take(self, rows: np.ndarray) -> Ragged:
        """The rows ``rows``, in that order, as a new Ragged (in memory)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(self.offsets[rows])
        lengths = np.asarray(self.offsets[rows + 1]) - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        index = np.arange(offsets[-1]) + np.repeat(starts - offsets[:-1], lengths)
        return Ragged(np.asarray(self.values[index]), offsets)

    def unique_rows(self, width: int) -> Ragged:
        """Each row's distinct values, sorted (values in [0, width))."""
        keys = np.unique(self.row_of_entries() * width + self.values)
        return Ragged.from_sorted(keys // width, keys % width, len(self))

    def last(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's last ``n`` values right-aligned in an (R, n) array (0 where padded), and the mask."""
        rows = self.row_of_entries()
        from_end = np.asarray(self.offsets[1:])[rows] - np.arange(len(self.values))  # 1 for a row's last value
        keep = from_end <= n
        out, mask = np.zeros((len(self), n), dtype=np.int64), np.zeros((len(self), n), dtype=bool)
        out[rows[keep], n - from_end[keep]] = self.values[keep]
        mask[rows[keep], n - from_end[keep]] = True
        return out, mask

    def to_csr(self) -> CSR:
        return CSR(
            torch.from_numpy(np.array(self.offsets, dtype=np.int64)),
            torch.from_numpy(np.array(self.values, dtype=np.int64)),
        )

    def save(self, folder: Path, name: str) -> None:
        """``name.values.npy`` and ``name.offsets.npy`` in ``folder``."""
        for part in ("values", "offsets"):
            np.save(folder / f"{name}.{part}.npy", getattr(self, part), allow_pickle=False)

    @classmethod
    def open(cls, folder: Path, name: str) -> Ragged:
        """The Ragged ``save`` wrote, memory-mapped read-only."""
        return cls(
            *(np.load(folder / f"{name}.{p}.npy", mmap_mode="r", allow_pickle=False) for p in ("values", "offsets"))
        )


def as_ragged(rows) -> Ragged:
    """``rows`` as a Ragged (a list of arrays is copied into one)."""
    return rows if isinstance(rows, Ragged) else Ragged.from_rows(list(rows))
