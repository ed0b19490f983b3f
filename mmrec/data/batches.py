"""Training batches and evaluation sets built from an indexed split.

A training batch holds B positive (user, item) interactions, each with the user's history and K
sampled negatives. All items the batch refers to are de-duplicated into one ItemBatch of M
items, so the item tower runs once per distinct item; ``pos``, ``neg`` and ``history`` index it.

History modes (``data.history_mode``):
    before  the items the user interacted with before the positive, in time (causal: for
            leave-one-out and temporal splits, where the held-out items are the next ones)
    others  the user's other training items, most recent last (for random splits, where the
            held-out items are not "next" and every other training item is evidence)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from mmrec.data.csr import CSR, Ragged, as_ragged
from mmrec.data.features import Featurizer, ItemBatch, featurize_items

HISTORY_MODES = ("before", "others")


@dataclass
class TrainBatch:
    user: torch.Tensor  # (B,) user index
    pos: torch.Tensor  # (B,) position of the positive item in ``items``
    neg: torch.Tensor  # (B, K) positions of sampled negatives in ``items``
    history: torch.Tensor  # (B, N) positions of history items in ``items`` (0 where padded)
    history_mask: torch.Tensor  # (B, N) True on real history entries
    items: ItemBatch  # the M distinct items, with inputs for the live (non-cached) modalities

    def pin_memory(self) -> TrainBatch:
        """Called by the DataLoader with ``data.pin_memory=true``."""
        return pinned(self)


def pinned(batch):
    """A copy of a training-batch dataclass with every field (tensors, the ItemBatch) page-locked, so
    that the copy to the GPU (Lightning moves batches with ``non_blocking=True``) overlaps compute."""
    return replace(batch, **{f.name: getattr(batch, f.name).pin_memory() for f in fields(batch)})


@dataclass
class EvalSet:
    """Users to rank for one split part: their history, the items to find and the items to mask."""

    users: torch.Tensor  # (U,)
    history: torch.Tensor  # (U, N) item indices, 0 where padded
    history_mask: torch.Tensor  # (U, N)
    targets: CSR  # items to find
    seen: CSR  # items already seen, masked out of the ranking

    def __len__(self) -> int:
        return len(self.users)

    def select(self, rows: torch.Tensor) -> EvalSet:
        return EvalSet(
            self.users[rows],
            self.history[rows],
            self.history_mask[rows],
            self.targets.select(rows),
            self.seen.select(rows),
        )


def last_items(items: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``length`` of ``items``, right-aligned in a (length,) array, with a (length,) mask."""
    out, mask = np.zeros(length, dtype=np.int64), np.zeros(length, dtype=bool)
    recent = items[max(0, len(items) - length) :]
    if len(recent):
        out[-len(recent) :], mask[-len(recent) :] = recent, True
    return out, mask


def history_of(sequence: np.ndarray, position: int, length: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The history for the interaction at ``position`` of a time-ordered ``sequence``."""
    if mode == "before":
        return last_items(sequence[:position], length)
    if mode == "others":
        return last_items(np.delete(sequence, position), length)
    raise ValueError(f"unknown data.history_mode '{mode}': expected one of {HISTORY_MODES}")


class TrainInteractions(Dataset):
    """One sample per positive training interaction: (user, item, history, mask, negatives).

    ``sequences[u]`` is user u's training items in time order; ``sampler(shape, generator)`` draws
    negatives. Index with ``(i, epoch)`` (as EpochSampler yields): the negatives then come from a
    generator seeded by (seed, epoch, i), so they do not depend on workers, processes or resuming.
    """

    def __init__(
        self,
        sequences: Ragged | list[np.ndarray],
        sampler: Callable,
        history_length: int,
        num_negatives: int,
        history_mode: str = "before",
        seed: int = 0,
    ):
        if history_mode not in HISTORY_MODES:
            raise ValueError(f"unknown data.history_mode '{history_mode}': expected one of {HISTORY_MODES}")
        self.sequences, self.sampler, self.seed = as_ragged(sequences), sampler, seed
        self.history_length, self.num_negatives, self.history_mode = history_length, num_negatives, history_mode

    def __len__(self) -> int:
        return len(self.sequences.values)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        user, position = self.sequences.entry(i)  # sample i is the i-th training interaction, users in order
        sequence = self.sequences[user]
        history, mask = history_of(sequence, position, self.history_length, self.history_mode)
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + int(i))
        negatives = self.sampler((self.num_negatives,), generator).numpy()
        return int(user), int(sequence[position]), history, mask, negatives


class TrainCollator:
    """Collates TrainInteractions samples; featurises the distinct items for the live modalities."""

    def __init__(self, featurizers: Mapping[str, Featurizer]):
        self.featurizers = dict(featurizers)

    def __call__(self, samples: list) -> TrainBatch:
        users, pos, history, mask, neg = zip(*samples)
        pos = torch.tensor(pos)
        history, mask, neg = (torch.from_numpy(np.stack(x)) for x in (history, mask, neg))
        referenced = torch.cat([pos, neg.flatten(), history[mask]])
        unique, inverse = torch.unique(referenced, return_inverse=True)
        b, k = neg.shape
        local_history = torch.zeros_like(history)
        local_history[mask] = inverse[b + b * k :]
        return TrainBatch(
            user=torch.tensor(users),
            pos=inverse[:b],
            neg=inverse[b : b + b * k].view(b, k),
            history=local_history,
            history_mask=mask,
            items=featurize_items(self.featurizers, unique.tolist()),
        )
