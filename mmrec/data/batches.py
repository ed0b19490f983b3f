"""Training batches and evaluation sets built from an indexed split.

A training batch holds B positive (user, item) interactions, each with the user's last N
earlier items as history and K sampled negatives. All items the batch refers to are
de-duplicated into one ItemBatch of M items, so the item tower runs once per distinct item;
``pos``, ``neg`` and ``history`` index into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from mmrec.data.features import ItemBatch, ItemFeaturizer, collate_items


@dataclass
class TrainBatch:
    user: torch.Tensor  # (B,) user index
    pos: torch.Tensor  # (B,) position of the positive item in ``items``
    neg: torch.Tensor  # (B, K) positions of sampled negatives in ``items``
    history: torch.Tensor  # (B, N) positions of history items in ``items`` (0 where padded)
    history_mask: torch.Tensor  # (B, N) True on real history entries
    items: ItemBatch  # the M distinct items, with inputs for the live (non-cached) modalities


@dataclass
class EvalSet:
    """Users to rank for one split part, in CSR form (``*_ptr`` are (U+1,) offsets)."""

    users: torch.Tensor  # (U,)
    history: torch.Tensor  # (U, N) item indices, 0 where padded
    history_mask: torch.Tensor  # (U, N)
    target_ptr: torch.Tensor
    target_items: torch.Tensor  # items to find
    exclude_ptr: torch.Tensor
    exclude_items: torch.Tensor  # items already seen, masked out of the ranking

    def __len__(self) -> int:
        return len(self.users)


def last_items(sequence: np.ndarray, end: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The (up to) ``length`` items before position ``end``, right-aligned, with a mask. (N,), (N,)."""
    items = np.zeros(length, dtype=np.int64)
    mask = np.zeros(length, dtype=bool)
    recent = sequence[max(0, end - length) : end]
    if len(recent):
        items[-len(recent) :], mask[-len(recent) :] = recent, True
    return items, mask


def to_csr(groups: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.array([len(g) for g in groups], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(ptr), torch.from_numpy(flat.astype(np.int64))


class TrainInteractions(Dataset):
    """One sample per positive training interaction: (user, item, history, negatives).

    ``sequences[u]`` is user u's training items in time order. Negatives are drawn uniformly
    from ``negative_pool`` (items seen in training, so cold items stay unseen) with torch's
    generator, which the DataLoader seeds per worker and epoch (reproducible under
    ``seed_everything(workers=True)``).
    """

    def __init__(self, sequences: list[np.ndarray], negative_pool: np.ndarray, history_length: int, num_negatives: int):
        self.sequences, self.pool = sequences, torch.from_numpy(negative_pool)
        self.history_length, self.num_negatives = history_length, num_negatives
        pairs = [(u, p) for u, seq in enumerate(sequences) for p in range(len(seq))]
        self.index = np.array(pairs, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
        user, position = self.index[i]
        sequence = self.sequences[user]
        history, mask = last_items(sequence, position, self.history_length)
        negatives = self.pool[torch.randint(len(self.pool), (self.num_negatives,))].numpy()
        return int(user), int(sequence[position]), history, mask, negatives


class TrainCollator:
    """Collates TrainInteractions samples; featurises the distinct items when modalities are live."""

    def __init__(self, featurizer: ItemFeaturizer | None):
        self.featurizer = featurizer

    def __call__(self, samples: list) -> TrainBatch:
        users, pos, history, mask, neg = zip(*samples)
        pos = torch.tensor(pos)
        history, mask, neg = (torch.from_numpy(np.stack(x)) for x in (history, mask, neg))
        referenced = torch.cat([pos, neg.flatten(), history[mask]])
        unique, inverse = torch.unique(referenced, return_inverse=True)
        b, k = neg.shape
        local_history = torch.zeros_like(history)
        local_history[mask] = inverse[b + b * k :]
        if self.featurizer is not None:
            items = collate_items([self.featurizer(int(i)) for i in unique])
        else:
            items = ItemBatch(index=unique)
        return TrainBatch(
            user=torch.tensor(users),
            pos=inverse[:b],
            neg=inverse[b : b + b * k].view(b, k),
            history=local_history,
            history_mask=mask,
            items=items,
        )
