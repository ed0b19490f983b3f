"""The LightningDataModule: dataset preparation, seeded splits, training batches and evaluation sets.

Every part a researcher swaps is given built (by ``mmrec.build`` from the Hydra config): the
dataset loader, an optional preparation step (e.g. generating the synthetic data), the negative
sampler and one featurizer per modality (``mmrec.modalities``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from mmrec.data.batches import HISTORY_MODES, EvalSet, TrainCollator, TrainInteractions
from mmrec.data.csr import PairSet
from mmrec.data.features import Featurizer, catalogue_loader, modality_fingerprint
from mmrec.data.index import INDEX_FORMAT, IndexedSplit
from mmrec.data.resumable import EpochLoader, EpochSampler
from mmrec.data.schema import RecDataset
from mmrec.data.sequences import SequenceCollator, TrainSequences
from mmrec.data.shards import MediaEngine, check_codec, sharded
from mmrec.data.splits import PARTS, Split, make_split

log = logging.getLogger(__name__)
CAUSAL_SPLITS = ("loo", "temporal", "given")  # held-out items come after the training items in time
TEST_HISTORIES = ("train", "train_valid")
TRAIN_UNITS = ("interaction", "sequence")  # one sample per training interaction | per window of a sequence


class BuiltOnUse(Mapping):
    """A read-only mapping over ``keys`` whose values are made by ``make(key)`` when first read."""

    def __init__(self, keys: tuple[str, ...], make: Callable):
        self._keys, self._make, self._built = tuple(keys), make, {}

    def __getitem__(self, key: str):
        if key not in self._keys:
            raise KeyError(key)
        if key not in self._built:
            self._built[key] = self._make(key)
        return self._built[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class CatalogueStats:
    """What training needs to know of the data: counts, cold items and the known interactions."""

    num_items: int
    num_users: int
    item_train_counts: torch.Tensor  # (I,)
    cold_items: torch.Tensor  # (I,) bool
    train_pairs: PairSet  # (user, item) training interactions, for accidental-hit masking
    user_train_counts: torch.Tensor | None = None  # (U,) training interactions per user
    item_ids: Sequence[str] | None = None  # (I,) the dataset's item ids, for messages that name items


class RecDataModule(L.LightningDataModule):
    """Prepares a dataset, splits it and serves training batches and the catalogue for evaluation.

    ``featurizers[m](dataset)`` builds modality m's featurizer. ``live_modalities`` are those whose
    raw inputs are loaded into every training batch (encoders trained in the step); the others
    are read from the frozen-encoder cache by the model.
    """

    def __init__(
        self,
        dataset: Callable[[], RecDataset],
        sampler: Callable[..., Callable],
        prepare: Callable[[], object] | None = None,
        featurizers: Mapping[str, Callable[[RecDataset], Featurizer]] | None = None,
        live_modalities: tuple[str, ...] = (),
        split: Mapping | None = None,
        history_length: int = 20,
        history_mode: str = "auto",
        test_history: str = "train_valid",
        num_negatives: int = 4,
        batch_size: int = 256,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        processed_dir: str = ".cache/mmrec",
        allow_external_media: bool = False,
        media_shards: bool = False,
        media_codec: str = "raw",
        train_unit: str = "interaction",
        eval_users: int | None = None,
        keep_interactions: bool = True,
        media_engine: MediaEngine | None = None,
    ):
        """``eval_users``: rank a seeded sample of this many users per evaluation part instead of all
        (for catalogues too large to rank every user against every item each epoch; the numbers are
        estimates, not comparable with full ranking). ``keep_interactions=False`` releases the
        dataset's interactions table (``dataset.interactions`` becomes None) once the per-user index
        is on disk: training and evaluation read only the index. ``media_engine`` decodes the media
        shards (e.g. ``mmrec.data.ray_media.RayMedia``; None: this process's DataLoader workers)."""
        super().__init__()
        self.keep_interactions = keep_interactions
        check_codec(media_codec)  # at construction, not when the shards are first written
        if eval_users is not None and eval_users < 1:
            raise ValueError(f"data.eval_users must be a positive number of users or null (all), got {eval_users}")
        self.eval_users = eval_users
        featurizers = dict(featurizers or {})
        if not set(live_modalities) <= set(featurizers):
            raise ValueError(
                f"live_modalities {list(live_modalities)} must be a subset of the enabled modalities "
                f"{sorted(featurizers)}"
            )
        self.split_args = {
            "method": "random",
            "ratios": (0.8, 0.1, 0.1),
            "seed": 0,
            "cold_fraction": 0.1,
            **dict(split or {}),
        }
        if history_mode == "auto":
            history_mode = "before" if self.split_args["method"] in CAUSAL_SPLITS else "others"
        if history_mode not in HISTORY_MODES:
            raise ValueError(f"unknown data.history_mode '{history_mode}': expected auto or one of {HISTORY_MODES}")
        if train_unit not in TRAIN_UNITS:
            raise ValueError(f"unknown data.train_unit '{train_unit}': expected one of {TRAIN_UNITS}")
        if train_unit == "sequence" and history_mode != "before":
            raise ValueError(
                "data.train_unit=sequence trains each position on the next item, so its history is the items "
                f"before it: it needs data.history_mode=before (or auto with a loo/temporal split), got {history_mode}"
            )
        if test_history not in TEST_HISTORIES:
            raise ValueError(f"unknown data.test_history '{test_history}': expected one of {TEST_HISTORIES}")
        if not isinstance(history_length, int) or history_length < 0:
            raise ValueError(
                f"data.history_length must be a non-negative integer (0: no history), got {history_length!r}"
            )
        if not isinstance(num_negatives, int) or num_negatives < 0:
            raise ValueError(
                f"data.num_negatives must be a non-negative integer (0: none sampled), got {num_negatives!r}"
            )
        for name, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name} must be a positive integer, got {value!r}")
        self.load, self.make_sampler, self.prepare = dataset, sampler, prepare
        self.featurizer_factories, self.live_modalities = featurizers, tuple(sorted(live_modalities))
        self.history_length, self.history_mode, self.test_history = history_length, history_mode, test_history
        self.num_negatives, self.batch_size, self.eval_batch_size = num_negatives, batch_size, eval_batch_size
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self.processed_dir, self.allow_external_media = Path(processed_dir), allow_external_media
        self.media_shards, self.media_codec, self.train_unit = media_shards, media_codec, train_unit
        self.media_engine = media_engine
        self.dataset: RecDataset | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted(self.featurizer_factories))

    def prepare_data(self) -> None:
        """Run the preparation step (e.g. generate the synthetic dataset when absent)."""
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = self.load()
        self.dataset.allow_external_media = self.allow_external_media
        self.indexed = self._load_or_build_index()
        if not self.keep_interactions:
            rows = len(self.dataset.interactions)
            self.dataset.interactions = None
            log.info(
                "released the %d-row interactions table (data.keep_interactions=false): the index holds them", rows
            )
        self.featurizers = {m: make(catalogue=self.dataset) for m, make in sorted(self.featurizer_factories.items())}
        if self.media_shards:
            self.use_media_shards(self.live_modalities)
        counts = np.bincount(self.indexed.sequences["train"].values, minlength=self.num_items)
        self.item_train_counts = torch.from_numpy(counts)
        log.info(
            "dataset %s: %d users, %d items (%d cold), positive interactions train/valid/test = %d/%d/%d; history: %s",
            self.dataset.name,
            self.num_users,
            self.num_items,
            int(self.indexed.cold_items.sum()),
            *(len(self.indexed.sequences[p].values) for p in PARTS),
            self.history_mode,
        )

    def use_media_shards(self, modalities: tuple[str, ...]) -> None:
        """Read ``modalities`` (those that decode media files) from media shards, decoding them first if absent."""
        for m in modalities:
            if self.featurizers[m].media_files():  # text and tags are in memory already
                name = f"{self.dataset.name}-{m}-{self.fingerprint(m)}"
                self.featurizers[m] = sharded(
                    self.featurizers[m],
                    self.num_items,
                    self.processed_dir / "shards",
                    name,
                    self.num_workers,
                    m,
                    self.media_codec,
                    self.media_engine,
                )

    def _split_meta(self) -> tuple[dict, str]:
        """What identifies the split (the dataset's content and the split arguments), and its short key."""
        if getattr(self, "_split_key", None) is None:
            meta = {
                "dataset": self.dataset.name,
                "fingerprint": self.data_fingerprint,
                **self.split_args,
                "ratios": list(self.split_args["ratios"]),
            }
            self._split_key = meta, hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
            self.split_path = self.processed_dir / f"{self.dataset.name}-split-{self._split_key[1]}.parquet"
        return self._split_key

    @property
    def split(self) -> Split:
        """The split's three interaction tables (read from ``processed_dir``, or made): only needed to
        build the index, so a run whose index is on disk does not read them."""
        if getattr(self, "_split", None) is None:
            self._split = self._load_or_make_split()
        return self._split

    def _load_or_make_split(self) -> Split:
        """The split for these arguments, read from ``processed_dir`` when it was made before."""
        meta, _ = self._split_meta()
        path = self.split_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.is_file():
                try:
                    return Split.load(path)
                except Exception as err:  # a damaged cache file never breaks a run: rebuild it
                    log.warning("split cache %s cannot be read (%s): removing and rebuilding it", path, err)
                    os.unlink(path)
            split = make_split(self.dataset.interactions, **self.split_args)
            split.save(path, meta)
            log.info("saved %s split to %s", self.split_args["method"], path)
            return split

    def _load_or_build_index(self) -> IndexedSplit:
        """The split's per-user index, memory-mapped from ``processed_dir`` (built and saved when absent)."""
        _, key = self._split_meta()
        folder = self.processed_dir / f"{self.dataset.name}-index-{key}-v{INDEX_FORMAT}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if folder.is_dir():
                try:
                    return IndexedSplit.open(folder)
                except Exception as err:  # a damaged cache never breaks a run: rebuild it
                    log.warning("index cache %s cannot be read (%s): removing and rebuilding it", folder, err)
                    shutil.rmtree(folder)
            IndexedSplit.build(self.dataset, self.split).save(folder)
            self._split = None  # its tables are in the index now (read again if asked for)
            log.info("saved the per-user index to %s", folder)
            return IndexedSplit.open(folder)

    @property
    def num_items(self) -> int:
        return self.dataset.num_items

    @property
    def num_users(self) -> int:
        return self.indexed.num_users

    def fingerprint(self, modality: str) -> str:
        """Identifies modality ``modality``'s inputs (keys the frozen-embedding cache)."""
        return modality_fingerprint(self.data_fingerprint, self.featurizers[modality])

    @property
    def data_fingerprint(self) -> str:
        """The dataset's content hash, computed once a run (10^8 interactions take seconds to hash)."""
        if getattr(self, "_data_fingerprint", None) is None:
            self._data_fingerprint = self.dataset.fingerprint()
        return self._data_fingerprint

    def stats(self) -> CatalogueStats:
        train = self.indexed.sequences["train"]
        users = torch.from_numpy(train.row_of_entries().astype(np.int64))
        items = torch.from_numpy(np.array(train.values, dtype=np.int64))
        return CatalogueStats(
            self.num_items,
            self.num_users,
            self.item_train_counts.clone(),
            torch.from_numpy(self.indexed.cold_items.copy()),
            PairSet.from_pairs(users, items, stride=self.num_items),
            torch.from_numpy(train.lengths()),
            self.dataset.items["item_id"].array,  # compact (Arrow-backed) strings, not a list of 10^7 objects
        )

    def train_dataloader(self) -> DataLoader:
        """Batches that are a pure function of (seed, epoch); when a run resumes from a mid-epoch
        checkpoint, the batches that epoch already trained on are skipped (see mmrec.data.resumable)."""
        live = {m: self.featurizers[m] for m in self.live_modalities}
        if self.train_unit == "sequence":
            dataset, collate = (
                TrainSequences(self.indexed.sequences["train"], self.history_length),
                SequenceCollator(live),
            )
        else:
            pool = np.flatnonzero(~self.indexed.cold_items)
            sampler = self.make_sampler(pool=pool, counts=self.item_train_counts.numpy())
            dataset = TrainInteractions(
                self.indexed.sequences["train"],
                sampler,
                self.history_length,
                self.num_negatives,
                self.history_mode,
                self.seed,
            )
            collate = TrainCollator(live)
        order = EpochSampler(len(dataset), self.seed, self.batch_size, drop_last=False, resume=self._take_resume_point)
        return EpochLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=order,
            drop_last=len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            seed=self.seed,
        )

    def state_dict(self) -> dict:
        """Saved in every checkpoint: how far the current training epoch got (batches trained)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.training:
            return {}
        return {"epoch": trainer.current_epoch, "batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state: dict) -> None:
        self._resume_point = (state["epoch"], state["batches"]) if state else None

    def _take_resume_point(self) -> tuple[int, int] | None:
        point, self._resume_point = getattr(self, "_resume_point", None), None
        return point

    def item_dataloader(self, modalities: tuple[str, ...] | None = None, items: range | None = None) -> DataLoader:
        """The whole catalogue (or ``items``) in order, featurised for ``modalities`` (default: the live ones)."""
        modalities = self.live_modalities if modalities is None else tuple(modalities)
        featurizers = {m: self.featurizers[m] for m in modalities}
        return catalogue_loader(
            featurizers, self.num_items, self.eval_batch_size, self.num_workers, self.pin_memory, items
        )

    def val_dataloader(self) -> DataLoader:
        return self.item_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.item_dataloader()

    def eval_sets(self) -> Mapping[str, EvalSet]:
        """The 'valid' and 'test' evaluation sets, each built when first read (not before training starts)."""
        return BuiltOnUse(("valid", "test"), self.eval_set)

    def eval_set(self, part: str) -> EvalSet:
        """Users with targets in ``part`` ('valid' or 'test'), their history and seen items.

        Validation users' history is their training items; test users' history is their training
        items, or training and validation items merged by time (``test_history``).
        """
        s = self.indexed
        if part not in ("valid", "test"):
            raise ValueError(f"unknown evaluation part '{part}': expected 'valid' or 'test'")
        targets = s.sequences[part]
        seen_parts = ("train",) if part == "valid" else ("train", "valid")
        history_parts = ("train",) if part == "valid" or self.test_history == "train" else ("train", "valid")
        users = np.flatnonzero(targets.lengths()).tolist()
        if self.eval_users is not None and len(users) > self.eval_users:  # the same sample every epoch
            rng = np.random.default_rng([self.split_args["seed"], PARTS.index(part)])
            users = sorted(rng.choice(users, self.eval_users, replace=False).tolist())
        users = np.asarray(users, dtype=np.int64)
        history, mask = s.merged_rows(users, history_parts).last(self.history_length)
        return EvalSet(
            users=torch.from_numpy(users),
            history=torch.from_numpy(history),
            history_mask=torch.from_numpy(mask),
            targets=targets.take(users).unique_rows(self.num_items).to_csr(),
            seen=s.merged_rows(users, seen_parts).unique_rows(self.num_items).to_csr(),
        )
