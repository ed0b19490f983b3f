"""Item featurisation for batches: catalogue rows -> per-modality input dicts.

Modalities are always carried as three dicts keyed by modality name (see ``mmrec.modalities``):
    inputs[m]      the tensor the encoder takes, (M, ...)
    input_mask[m]  True on real elements,        (M, ...)
    present[m]     True when the item has m,     (M,)
A missing, empty or undecodable file marks that modality absent for the item and is reported
in ``problems`` (one "path: reason" string per bad file) for the consumer to count and log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset


@dataclass
class Feature:
    """One item's input for one modality."""

    value: torch.Tensor  # what the encoder takes, e.g. text (L,) ids, image (F, 3, H, W), audio (T,)
    mask: torch.Tensor  # True on real elements: text (L,), image (F,), audio (T,)
    present: bool  # False when the item has no usable value of this modality


class Featurizer(Protocol):
    """What the data layer needs of a modality's featurizer."""

    def __call__(self, index: int, problems: list[str]) -> Feature:
        """Row ``index`` of the catalogue; each bad media file appends "path: reason" to ``problems``."""

    def settings(self) -> dict:
        """Every setting that changes the featurizer's output (JSON-serialisable)."""

    def media_files(self) -> list[Path]:
        """Every media file the featurizer may read (their sizes and times key the cache)."""

    def encoder_kwargs(self) -> dict:
        """Data-dependent sizes passed to the modality's ``build_encoder`` (often empty)."""


@dataclass
class ItemBatch:
    """Model inputs for M items."""

    index: torch.Tensor  # (M,) catalogue index of each item
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    input_mask: dict[str, torch.Tensor] = field(default_factory=dict)
    present: dict[str, torch.Tensor] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def pin_memory(self) -> ItemBatch:
        """Called by the DataLoader with ``pin_memory=True``."""
        pin = {
            name: {m: t.pin_memory() for m, t in d.items()}
            for name, d in (("inputs", self.inputs), ("input_mask", self.input_mask), ("present", self.present))
        }
        return ItemBatch(self.index.pin_memory(), pin["inputs"], pin["input_mask"], pin["present"], self.problems)


def featurize_items(featurizers: Mapping[str, Featurizer], indices: list[int]) -> ItemBatch:
    """Featurise catalogue rows ``indices`` for every modality in ``featurizers`` and stack them.
    A featurizer with a ``length_bucket`` > 0 has its batch cut to the bucketed longest sequence."""
    batch = ItemBatch(index=torch.tensor(indices, dtype=torch.long))
    for modality in sorted(featurizers):
        features = [featurizers[modality](i, batch.problems) for i in indices]
        value, mask = torch.stack([f.value for f in features]), torch.stack([f.mask for f in features])
        bucket = getattr(featurizers[modality], "length_bucket", 0)
        batch.inputs[modality], batch.input_mask[modality] = (
            trim_padding(value, mask, bucket) if bucket else (value, mask)
        )
        batch.present[modality] = torch.tensor([f.present for f in features], dtype=torch.bool)
    return batch


def trim_padding(value: torch.Tensor, mask: torch.Tensor, bucket: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, L) sequences padded at the end -> (M, L'): L' the last real position of any row, rounded up
    to a multiple of ``bucket`` (at most L). Only columns that are padding in every row are dropped."""
    real = mask.any(dim=0).nonzero()
    longest = int(real.max()) + 1 if len(real) else 0
    keep = min(mask.shape[1], max(bucket, -(-longest // bucket) * bucket))
    return value[:, :keep], mask[:, :keep]


def modality_fingerprint(data_fingerprint: str, featurizer: Featurizer) -> str:
    """Identifies one modality's inputs: the catalogue's fingerprint, the featurizer's settings and the
    size and modification time of every media file it reads. Keys the frozen-embedding cache."""
    settings = json.dumps({"data": data_fingerprint, "settings": featurizer.settings()}, sort_keys=True, default=str)
    digest = hashlib.sha1(settings.encode())
    for path in featurizer.media_files():
        try:
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}:missing\n".encode())
    return digest.hexdigest()[:16]


def catalogue_loader(
    featurizers: Mapping[str, Featurizer],
    num_items: int,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    items: range | None = None,
):
    """The whole catalogue (or ``items``) in order as ItemBatches, featurised for ``featurizers``; never
    draws from the global RNG."""
    dataset = ItemMediaDataset(featurizers, num_items, None if items is None else list(items))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        generator=torch.Generator().manual_seed(0),
        num_workers=num_workers,
        collate_fn=dataset.collate,
        pin_memory=pin_memory,
    )


class ItemMediaDataset(Dataset):
    """Catalogue rows (all, or a list of indices) as a map-style dataset; batches through ``collate``."""

    def __init__(self, featurizers: Mapping[str, Featurizer], num_items: int, indices: list[int] | None = None):
        self.featurizers = dict(featurizers)
        self.indices = list(range(num_items)) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        return self.indices[i]

    def collate(self, indices: list[int]) -> ItemBatch:
        return featurize_items(self.featurizers, indices)
