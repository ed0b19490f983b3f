"""The native dataset: one items table and one interactions table, media paths relative to a root.

Items table columns (``item_id`` required, every other column optional and may be empty):
    item_id, title, description,
    image  -- one or more keyframe/cover image paths, separated by ``|``
    video  -- one video file (keyframes and, when ``audio`` is empty, the audio track come from it)
    audio  -- one audio file
Interactions table columns: user_id, item_id, timestamp (integer seconds), optional label (1 = positive).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ITEM_TEXT_COLUMNS = ("title", "description")
ITEM_MEDIA_COLUMNS = ("image", "video", "audio")
ITEM_COLUMNS = ("item_id", *ITEM_TEXT_COLUMNS, *ITEM_MEDIA_COLUMNS)
REQUIRED_INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
IMAGE_SEPARATOR = "|"
MAX_LISTED_ROWS = 5


class DataError(ValueError):
    """A structural problem in a dataset: the message names the file, column and rows."""


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet table with every column as it is stored; ids stay strings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table not found: {path} (expected a .csv or .parquet file)")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".tsv"):
        sep = "\t" if path.suffix == ".tsv" else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    raise ValueError(f"unsupported table format for {path}: expected .csv, .tsv or .parquet")


def _rows(mask: pd.Series) -> str:
    """Name the first offending rows as 1-based data rows (the header is row 0)."""
    rows = [str(i + 1) for i in mask[mask].index[:MAX_LISTED_ROWS]]
    more = int(mask.sum()) - len(rows)
    return ", ".join(rows) + (f" (+{more} more)" if more > 0 else "")


def structural_errors(items: pd.DataFrame, interactions: pd.DataFrame, items_name: str, interactions_name: str) -> list[str]:
    """Every structural error of a raw items/interactions pair, each naming file, column and rows."""
    errors = []
    if "item_id" not in items.columns:
        errors.append(f"{items_name}: missing required column 'item_id' (columns are {list(items.columns)})")
    missing = [c for c in REQUIRED_INTERACTION_COLUMNS if c not in interactions.columns]
    if missing:
        errors.append(f"{interactions_name}: missing required column(s) {missing} (columns are {list(interactions.columns)})")
    if errors:
        return errors
    item_ids = items["item_id"].astype(str).reset_index(drop=True)
    empty = item_ids.str.strip() == ""
    if empty.any():
        errors.append(f"{items_name}: column 'item_id' is empty in row(s) {_rows(empty)}")
    dup = item_ids.duplicated(keep="first") & ~empty
    if dup.any():
        errors.append(f"{items_name}: duplicate item_id {sorted(set(item_ids[dup]))[:MAX_LISTED_ROWS]} in row(s) {_rows(dup)}")
    inter = interactions.reset_index(drop=True)
    unknown = ~inter["item_id"].astype(str).isin(set(item_ids))
    if unknown.any():
        ids = sorted(set(inter.loc[unknown, "item_id"].astype(str)))[:MAX_LISTED_ROWS]
        errors.append(f"{interactions_name}: column 'item_id' has unknown item id(s) {ids} in row(s) {_rows(unknown)}")
    ts = pd.to_numeric(inter["timestamp"], errors="coerce")
    bad_ts = ts.isna()
    if bad_ts.any():
        errors.append(f"{interactions_name}: column 'timestamp' is not a number in row(s) {_rows(bad_ts)}")
    if "label" in inter.columns:
        bad_label = pd.to_numeric(inter["label"], errors="coerce").isna()
        if bad_label.any():
            errors.append(f"{interactions_name}: column 'label' is not a number in row(s) {_rows(bad_label)}")
    return errors


@dataclass
class RecDataset:
    """A loaded dataset in the native layout, with normalised dtypes.

    ``items``: one row per item, columns ITEM_COLUMNS (strings, '' when absent).
    ``interactions``: user_id (str), item_id (str), timestamp (int64), label (float32).
    """

    name: str
    root: Path
    items: pd.DataFrame
    interactions: pd.DataFrame

    @classmethod
    def from_frames(
        cls,
        name: str,
        root: Path,
        items: pd.DataFrame,
        interactions: pd.DataFrame,
        items_name: str = "items",
        interactions_name: str = "interactions",
    ) -> RecDataset:
        """Validate the structure (raising DataError that names every problem) and normalise dtypes."""
        errors = structural_errors(items, interactions, items_name, interactions_name)
        if errors:
            raise DataError(f"dataset '{name}' has {len(errors)} structural error(s):\n  " + "\n  ".join(errors))
        items = items.copy()
        for column in ITEM_COLUMNS:
            items[column] = items[column].fillna("").astype(str) if column in items.columns else ""
        items = items[list(ITEM_COLUMNS)].reset_index(drop=True)
        inter = pd.DataFrame(
            {
                "user_id": interactions["user_id"].astype(str).to_numpy(),
                "item_id": interactions["item_id"].astype(str).to_numpy(),
                "timestamp": pd.to_numeric(interactions["timestamp"]).astype("int64").to_numpy(),
                "label": (
                    pd.to_numeric(interactions["label"]).astype("float32").to_numpy()
                    if "label" in interactions.columns
                    else 1.0
                ),
            }
        )
        return cls(name=name, root=Path(root), items=items, interactions=inter)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return self.interactions["user_id"].nunique()

    def fingerprint(self) -> str:
        """A short content hash of both tables: changes whenever an id, text, path or interaction does."""
        digest = hashlib.sha1(self.name.encode())
        for frame in (self.items, self.interactions):
            digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()[:16]

    def media_path(self, relative: str) -> Path:
        """An item's media path, resolved against the dataset root."""
        return self.root / relative


def load_native(root: str | Path, items: str = "items.csv", interactions: str = "interactions.csv", name: str | None = None) -> RecDataset:
    """Load a dataset in the native layout from ``root``; see the module docstring for the columns."""
    root = Path(root)
    items_path, inter_path = root / items, root / interactions
    return RecDataset.from_frames(
        name=name or root.name,
        root=root,
        items=read_table(items_path),
        interactions=read_table(inter_path),
        items_name=str(items_path),
        interactions_name=str(inter_path),
    )
