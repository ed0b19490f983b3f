"""Seeded, deterministic train/valid/test splits of an interactions table.

random     per user, shuffled, 0.8/0.1/0.1 by default (RecBole's RS protocol and rounding)
loo        leave-one-out by time: per user the last interaction is test, the one before valid
temporal   one global time cut: the earliest 80% train, then valid, then test
cold_item  a fraction of items is held out whole: their interactions go only to valid
           (half of those items) or test (the other half); the rest is split like ``random``
given      the split that comes with the data (the interactions' ``split`` column), used exactly:
           published benchmark files (UniSRec/RecBole, MMRec) are compared on their own split
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.io import atomic_path, write_text

SPLIT_METHODS = ("random", "loo", "temporal", "cold_item", "given")
PARTS = ("train", "valid", "test")


@dataclass
class Split:
    """Three interaction tables and the items that appear in valid/test but never in train."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    @property
    def cold_items(self) -> frozenset[str]:
        seen = set(self.train["item_id"])
        return frozenset(set(self.valid["item_id"]) | set(self.test["item_id"])) - seen

    def save(self, path: Path, meta: dict) -> None:
        """Write the split as one Parquet file with a ``split`` column, plus ``meta`` as JSON beside it."""
        parts = (self.train, self.valid, self.test)
        table = pd.concat(parts, ignore_index=True)
        codes = np.repeat(np.arange(len(PARTS), dtype=np.int8), [len(p) for p in parts])
        table["split"] = pd.Categorical.from_codes(codes, categories=list(PARTS))  # 1 byte a row, not a string
        with atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
        write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> Split:
        table = pd.read_parquet(path)
        parts = [table[table["split"] == name].drop(columns="split").reset_index(drop=True) for name in PARTS]
        return cls(*parts)


def recbole_counts(total: int, ratios: tuple[float, ...]) -> list[int]:
    """Part sizes for one user, with RecBole's rounding (``Dataset._calcu_split_ids``)."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def _check_ratios(ratios: tuple[float, ...]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(
            f"split ratios must be three non-negative numbers summing to 1 (train, valid, test), got {list(ratios)}"
        )
    return tuple(float(r) for r in ratios)


def _random_by_user(inter: pd.DataFrame, ratios: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """A part label (0 train, 1 valid, 2 test) per row, split per user after a seeded shuffle."""
    labels = np.zeros(len(inter), dtype=np.int8)
    for _, rows in sorted(inter.groupby("user_id", sort=False).indices.items()):
        rows = rng.permutation(rows)
        n_train, n_valid, _ = recbole_counts(len(rows), ratios)
        labels[rows[n_train : n_train + n_valid]] = 1
        labels[rows[n_train + n_valid :]] = 2
    return labels


def _leave_one_out(inter: pd.DataFrame) -> np.ndarray:
    labels = np.zeros(len(inter), dtype=np.int8)
    order = inter.sort_values(["user_id", "timestamp"], kind="stable")
    for _, rows in order.groupby("user_id", sort=False).indices.items():
        rows = order.index.to_numpy()[rows]
        if len(rows) >= 2:
            labels[rows[-1]] = 2
        if len(rows) >= 3:
            labels[rows[-2]] = 1
    return labels


def _temporal(inter: pd.DataFrame, ratios: tuple[float, float, float]) -> np.ndarray:
    order = np.argsort(inter["timestamp"].to_numpy(), kind="stable")
    n_train, n_valid, _ = recbole_counts(len(inter), ratios)
    labels = np.zeros(len(inter), dtype=np.int8)
    labels[order[n_train : n_train + n_valid]] = 1
    labels[order[n_train + n_valid :]] = 2
    return labels


def _cold_item(
    inter: pd.DataFrame, ratios: tuple[float, float, float], cold_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    if not 0 < cold_fraction < 1:
        raise ValueError(f"split.cold_fraction must be in (0, 1), got {cold_fraction}")
    items = np.array(sorted(inter["item_id"].unique()))
    cold = rng.permutation(items)[: max(2, int(round(cold_fraction * len(items))))]
    valid_cold, test_cold = set(cold[: len(cold) // 2]), set(cold[len(cold) // 2 :])
    is_valid_cold = inter["item_id"].isin(valid_cold).to_numpy()
    is_test_cold = inter["item_id"].isin(test_cold).to_numpy()
    warm = ~(is_valid_cold | is_test_cold)
    labels = np.zeros(len(inter), dtype=np.int8)
    labels[warm] = _random_by_user(inter[warm].reset_index(drop=True), ratios, rng)
    labels[is_valid_cold], labels[is_test_cold] = 1, 2
    return labels


def make_split(
    interactions: pd.DataFrame,
    method: str = "random",
    ratios: tuple[float, ...] = (0.8, 0.1, 0.1),
    seed: int = 0,
    cold_fraction: float = 0.1,
) -> Split:
    """Split ``interactions`` (user_id, item_id, timestamp, ...) by ``method``; same inputs, same split."""
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method '{method}': expected one of {SPLIT_METHODS}")
    ratios = _check_ratios(tuple(ratios))
    inter = interactions.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    if method == "given":
        if "split" not in inter.columns:
            raise ValueError(
                "data.split.method=given needs a 'split' column in the interactions (train/valid/test), which "
                "this dataset's loader does not provide: use random, loo, temporal or cold_item"
            )
        labels = inter["split"].to_numpy()
    elif method == "random":
        labels = _random_by_user(inter, ratios, rng)
    elif method == "loo":
        labels = _leave_one_out(inter)
    elif method == "temporal":
        labels = _temporal(inter, ratios)
    else:
        labels = _cold_item(inter, ratios, cold_fraction, rng)
    inter = inter.drop(columns="split", errors="ignore")
    return Split(*(inter[labels == k].reset_index(drop=True) for k in range(3)))
