"""The LightningDataModule: dataset preparation, seeded splits, training batches and evaluation sets."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from mmrec.data.batches import EvalSet, TrainCollator, TrainInteractions, last_items, to_csr
from mmrec.data.features import ItemFeaturizer, ItemMediaDataset, MediaConfig, collate_items
from mmrec.data.loaders.microlens import load_microlens
from mmrec.data.loaders.recbole import load_recbole
from mmrec.data.schema import RecDataset, load_native
from mmrec.data.splits import Split, make_split
from mmrec.data.synthetic import generate

log = logging.getLogger(__name__)
SOURCES = ("synthetic", "native", "microlens", "recbole")


def load_dataset(source: str, root: str | None, options: Mapping | None = None) -> RecDataset:
    """Load a dataset of the given ``source`` layout; ``options`` go to that layout's loader."""
    options = dict(options or {})
    if source in ("synthetic", "native"):
        if not root:
            raise ValueError(f"data.root is required for source '{source}'")
        return load_native(root, **options)
    if source == "microlens":
        if not root:
            raise ValueError("data.root is required for source 'microlens' (the MicroLens-100k folder)")
        return load_microlens(root, **options)
    if source == "recbole":
        return load_recbole(root, **options)
    raise ValueError(f"unknown data.source '{source}': expected one of {SOURCES}")


@dataclass
class IndexedSplit:
    """A split with ids turned into catalogue/user indices and per-user time-ordered sequences."""

    num_users: int
    train_sequences: list[np.ndarray]
    valid_sequences: list[np.ndarray]
    test_sequences: list[np.ndarray]
    cold_items: np.ndarray  # (num_items,) bool: never seen in training

    @classmethod
    def build(cls, dataset: RecDataset, split: Split) -> IndexedSplit:
        item_index = pd.Series(np.arange(dataset.num_items), index=dataset.items["item_id"])
        users = sorted(set(dataset.interactions["user_id"]))
        user_index = pd.Series(np.arange(len(users)), index=users)

        def sequences(part: pd.DataFrame) -> list[np.ndarray]:
            part = part[part["label"] > 0].sort_values(["user_id", "timestamp"], kind="stable")
            out = [np.zeros(0, dtype=np.int64) for _ in users]
            u = user_index[part["user_id"]].to_numpy()
            items = item_index[part["item_id"]].to_numpy()
            for user, rows in pd.Series(np.arange(len(u))).groupby(u).indices.items():
                out[user] = items[rows]
            return out

        train = sequences(split.train)
        cold = np.ones(dataset.num_items, dtype=bool)
        for seq in train:
            cold[seq] = False
        return cls(len(users), train, sequences(split.valid), sequences(split.test), cold)


class RecDataModule(L.LightningDataModule):
    """Prepares a dataset, splits it and serves training batches and item/user evaluation data.

    ``modalities`` are the modalities the model encodes; ``live_modalities`` the subset whose
    raw media are loaded into every training batch (encoders trained in the step). Frozen
    modalities are read from an embedding cache by the model instead.
    """

    def __init__(
        self,
        source: str,
        root: str | None,
        options: Mapping | None = None,
        split: Mapping | None = None,
        media: Mapping | None = None,
        modalities: tuple[str, ...] = (),
        live_modalities: tuple[str, ...] = (),
        history_length: int = 20,
        num_negatives: int = 4,
        batch_size: int = 256,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        processed_dir: str = ".cache/mmrec",
        synthetic: Mapping | None = None,
    ):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"unknown data.source '{source}': expected one of {SOURCES}")
        if not set(live_modalities) <= set(modalities):
            raise ValueError(f"live_modalities {list(live_modalities)} must be a subset of modalities {list(modalities)}")
        self.source, self.root, self.options = source, root, dict(options or {})
        self.split_args = {"method": "random", "ratios": (0.8, 0.1, 0.1), "seed": 0, "cold_fraction": 0.1, **dict(split or {})}
        self.media = MediaConfig(**dict(media or {}))
        self.modalities, self.live_modalities = tuple(sorted(modalities)), tuple(sorted(live_modalities))
        self.history_length, self.num_negatives = history_length, num_negatives
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.processed_dir = Path(processed_dir)
        self.synthetic = dict(synthetic or {})
        self.dataset: RecDataset | None = None

    def prepare_data(self) -> None:
        """Generate the synthetic dataset when it is absent (once, under a file lock)."""
        if self.source != "synthetic":
            return
        root = Path(self.root)
        root.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root) + ".lock"):
            if not (root / "items.csv").is_file():
                log.info("synthetic dataset not found at %s: generating it", root)
                generate(root, **self.synthetic)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = load_dataset(self.source, self.root, self.options)
        self.split = self._load_or_make_split()
        self.indexed = IndexedSplit.build(self.dataset, self.split)
        self.featurizer = ItemFeaturizer(self.dataset, self.media, self.modalities) if self.modalities else None
        counts = np.bincount(np.concatenate(self.indexed.train_sequences), minlength=self.num_items)
        self.item_train_counts = torch.from_numpy(counts)
        log.info(
            "dataset %s: %d users, %d items (%d cold), interactions train/valid/test = %d/%d/%d",
            self.dataset.name, self.num_users, self.num_items, int(self.indexed.cold_items.sum()),
            len(self.split.train), len(self.split.valid), len(self.split.test),
        )

    def _load_or_make_split(self) -> Split:
        """The split for these arguments, read from ``processed_dir`` when it was made before."""
        meta = {"dataset": self.dataset.name, "fingerprint": self.dataset.fingerprint(), **self.split_args, "ratios": list(self.split_args["ratios"])}
        key = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
        path = self.processed_dir / f"{self.dataset.name}-split-{key}.parquet"
        self.split_path = path
        with FileLock(str(path) + ".lock"):
            if path.is_file():
                return Split.load(path)
            split = make_split(self.dataset.interactions, **self.split_args)
            split.save(path, meta)
            log.info("saved %s split to %s", self.split_args["method"], path)
            return split

    @property
    def num_items(self) -> int:
        return self.dataset.num_items

    @property
    def num_users(self) -> int:
        return self.indexed.num_users

    def fingerprint(self) -> str:
        """Identifies the catalogue and its media settings; keys the frozen-embedding cache."""
        payload = json.dumps({"data": self.dataset.fingerprint(), "media": repr(self.media)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    def train_pairs(self) -> torch.Tensor:
        """Sorted keys ``user * num_items + item`` of every training interaction, for hit masking."""
        keys = [u * self.num_items + seq.astype(np.int64) for u, seq in enumerate(self.indexed.train_sequences)]
        return torch.from_numpy(np.unique(np.concatenate(keys)))

    def train_dataloader(self) -> DataLoader:
        pool = np.flatnonzero(~self.indexed.cold_items)
        dataset = TrainInteractions(self.indexed.train_sequences, pool, self.history_length, self.num_negatives)
        live = ItemFeaturizer(self.dataset, self.media, self.live_modalities) if self.live_modalities else None
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=True, drop_last=len(dataset) > self.batch_size,
            num_workers=self.num_workers, collate_fn=TrainCollator(live), persistent_workers=self.num_workers > 0,
        )

    def item_dataloader(self, modalities: tuple[str, ...] | None = None) -> DataLoader:
        """The whole catalogue in order, featurised for ``modalities`` (default: the live ones)."""
        modalities = self.live_modalities if modalities is None else tuple(modalities)
        featurizer = ItemFeaturizer(self.dataset, self.media, modalities)
        return DataLoader(
            ItemMediaDataset(featurizer), batch_size=self.eval_batch_size, shuffle=False,
            num_workers=self.num_workers, collate_fn=collate_items,
        )

    def val_dataloader(self) -> DataLoader:
        return self.item_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.item_dataloader()

    def eval_set(self, part: str) -> EvalSet:
        """Users with targets in ``part`` ('valid' or 'test'), their history and seen items."""
        s = self.indexed
        if part == "valid":
            targets, seen = s.valid_sequences, s.train_sequences
        elif part == "test":
            targets = s.test_sequences
            seen = [np.concatenate([t, v]) for t, v in zip(s.train_sequences, s.valid_sequences)]
        else:
            raise ValueError(f"unknown evaluation part '{part}': expected 'valid' or 'test'")
        users = [u for u in range(s.num_users) if len(targets[u])]
        hist = [last_items(seen[u], len(seen[u]), self.history_length) for u in users]
        target_ptr, target_items = to_csr([np.unique(targets[u]) for u in users])
        exclude_ptr, exclude_items = to_csr([np.unique(seen[u]) for u in users])
        return EvalSet(
            users=torch.tensor(users, dtype=torch.long),
            history=torch.from_numpy(np.stack([h for h, _ in hist])) if hist else torch.zeros(0, self.history_length, dtype=torch.long),
            history_mask=torch.from_numpy(np.stack([m for _, m in hist])) if hist else torch.zeros(0, self.history_length, dtype=torch.bool),
            target_ptr=target_ptr, target_items=target_items, exclude_ptr=exclude_ptr, exclude_items=exclude_items,
        )
