"""The per-user index of a split: each part's items and times in user order, as flat CSR arrays.

Built once from the split with columnar code (a sort by user and time, no per-user Python), saved
as .npy files and memory-mapped by later runs, DDP ranks and DataLoader workers.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.data.csr import Ragged
from mmrec.data.schema import RecDataset
from mmrec.data.splits import PARTS, Split

INDEX_FORMAT = 1  # the on-disk layout of IndexedSplit.save: a change here rebuilds every saved index


@dataclass
class IndexedSplit:
    """A split with ids turned into catalogue/user indices and per-user time-ordered sequences.

    Each part is two Ragged arrays (items, times) sharing offsets: 10^8 interactions are a few flat
    arrays. ``save`` writes them as .npy files and ``open`` memory-maps them, so a later run (and every
    DDP rank and DataLoader worker of this one) reads the index from disk without making the split."""

    user_ids: np.ndarray  # (U,) the dataset's user ids, sorted: user index u is user_ids[u]
    sequences: dict[str, Ragged]  # part -> per-user item indices in time order
    times: dict[str, Ragged]  # part -> per-user timestamps, aligned with ``sequences``
    cold_items: np.ndarray  # (num_items,) bool: never seen in training

    @classmethod
    def build(cls, dataset: RecDataset, split: Split) -> IndexedSplit:
        item_ids = pd.Index(dataset.items["item_id"])
        users = np.sort(np.asarray(dataset.interactions["user_id"].unique(), dtype=str))
        user_ids = pd.Index(users)
        sequences, times = {}, {}
        for name, part in (("train", split.train), ("valid", split.valid), ("test", split.test)):
            part = part[part["label"] > 0]
            # each user's rows in time order, as index arrays into one sorted array (columnar, no per-row Python)
            u = user_ids.get_indexer(part["user_id"])
            order = np.lexsort((part["timestamp"].to_numpy(), u))  # by user, then time; stable
            u = u[order]
            items = item_ids.get_indexer(part["item_id"])[order].astype(np.int64)
            stamps = part["timestamp"].to_numpy()[order].astype(np.int64)
            sequences[name] = Ragged.from_sorted(u, items, len(users))
            times[name] = Ragged(stamps, sequences[name].offsets)
        cold = np.ones(dataset.num_items, dtype=bool)
        cold[sequences["train"].values] = False
        return cls(users, sequences, times, cold)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def merged(self, user: int, parts: tuple[str, ...]) -> np.ndarray:
        """User ``user``'s items of ``parts`` merged in time order (stable: earlier parts first on ties)."""
        items = np.concatenate([self.sequences[p][user] for p in parts])
        stamps = np.concatenate([self.times[p][user] for p in parts])
        return items[np.argsort(stamps, kind="stable")]

    def merged_rows(self, users: np.ndarray, parts: tuple[str, ...]) -> Ragged:
        """``merged`` for every user of ``users`` at once: row i is user users[i]'s items of ``parts``
        in time order (stable: earlier parts first on ties), with no per-user Python."""
        taken = [self.sequences[p].take(users) for p in parts]
        if len(taken) == 1:
            return taken[0]
        rows = np.concatenate([t.row_of_entries() for t in taken])
        stamps = np.concatenate([self.times[p].take(users).values for p in parts])
        order = np.lexsort((stamps, rows))  # stable: within a row and time, earlier parts stay first
        return Ragged.from_sorted(rows[order], np.concatenate([t.values for t in taken])[order], len(users))

    def save(self, folder: Path) -> None:
        """The index as .npy files in ``folder``, written beside it and renamed into place."""
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "user_ids.npy", self.user_ids, allow_pickle=False)
        np.save(tmp / "cold_items.npy", self.cold_items, allow_pickle=False)
        for part in PARTS:
            self.sequences[part].save(tmp, f"{part}.items")
            np.save(tmp / f"{part}.times.npy", self.times[part].values, allow_pickle=False)
        os.replace(tmp, folder)

    @classmethod
    def open(cls, folder: Path) -> IndexedSplit:
        """The index saved in ``folder``, memory-mapped (read-only)."""
        load = functools.partial(np.load, mmap_mode="r", allow_pickle=False)
        sequences = {part: Ragged.open(folder, f"{part}.items") for part in PARTS}
        times = {part: Ragged(load(folder / f"{part}.times.npy"), sequences[part].offsets) for part in PARTS}
        return cls(load(folder / "user_ids.npy"), sequences, times, load(folder / "cold_items.npy"))
