"""All-positions training for the sequential user tower (``data.train_unit=sequence``), as SASRec.

One sample is a window of a user's training sequence: ``length`` input items and, for each, the
item that follows it. The causal tower's output at every input position is trained on its next
item in one pass, where ``train_unit=interaction`` runs the tower once per target. Windows are cut
from the end of each sequence, ``length`` targets apart, so every training interaction after a
user's first is a target exactly once an epoch; inputs are right-aligned, as the tower reads them
at evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from mmrec.data.batches import last_items, pinned
from mmrec.data.csr import Ragged, as_ragged
from mmrec.data.features import Featurizer, ItemBatch, featurize_items


@dataclass
class SequenceBatch:
    user: torch.Tensor  # (B,) user index
    history: torch.Tensor  # (B, L) positions of the input items in ``items`` (0 where padded), right-aligned
    history_mask: torch.Tensor  # (B, L) True on real inputs; each has a target
    targets: torch.Tensor  # (B, L) positions in ``items`` of the item after each input (0 where padded)
    items: ItemBatch  # the distinct items of inputs and targets

    def pin_memory(self) -> SequenceBatch:
        """Called by the DataLoader with ``data.pin_memory=true``."""
        return pinned(self)


class TrainSequences(Dataset):
    """Windows of ``length`` (input, next item) pairs of each user's time-ordered ``sequences``."""

    def __init__(self, sequences: Ragged | list[np.ndarray], length: int):
        if length < 1:
            raise ValueError(f"data.train_unit=sequence needs data.history_length >= 1, got {length}")
        self.sequences, self.length = as_ragged(sequences), length
        # (user, end of the window's targets): ends len, len - length, ... > 1 for each user, in user order
        lengths = self.sequences.lengths()
        windows = np.maximum(0, (lengths - 2) // length + 1)
        users = np.repeat(np.arange(len(lengths)), windows)
        rank = np.arange(int(windows.sum())) - np.repeat(np.cumsum(windows) - windows, windows)
        self.index = np.stack([users, lengths[users] - rank * length], axis=1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        i = key[0] if isinstance(key, tuple) else key  # EpochSampler's (i, epoch): nothing here is random
        user, end = self.index[i]
        sequence = self.sequences[user]
        start = max(0, end - self.length - 1)
        inputs, mask = last_items(sequence[start : end - 1], self.length)
        targets, _ = last_items(sequence[start + 1 : end], self.length)
        return int(user), inputs, targets, mask


class SequenceCollator:
    """Collates TrainSequences samples; featurises the distinct items for the live modalities."""

    def __init__(self, featurizers: Mapping[str, Featurizer]):
        self.featurizers = dict(featurizers)

    def __call__(self, samples: list) -> SequenceBatch:
        users, inputs, targets, mask = zip(*samples)
        inputs, targets, mask = (torch.from_numpy(np.stack(x)) for x in (inputs, targets, mask))
        # Windows are right-aligned: cut the columns that are padding in every row, so catalogues of
        # short sequences do not pay for data.history_length (the tower takes any length up to it).
        longest = max(1, int(mask.sum(1).max()))
        inputs, targets, mask = inputs[:, -longest:], targets[:, -longest:], mask[:, -longest:]
        unique, inverse = torch.unique(torch.cat([inputs[mask], targets[mask]]), return_inverse=True)
        n = int(mask.sum())
        local_inputs, local_targets = torch.zeros_like(inputs), torch.zeros_like(targets)
        local_inputs[mask], local_targets[mask] = inverse[:n], inverse[n:]
        return SequenceBatch(
            user=torch.tensor(users),
            history=local_inputs,
            history_mask=mask,
            targets=local_targets,
            items=featurize_items(self.featurizers, unique.tolist()),
        )
