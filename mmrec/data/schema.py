"""The native dataset: one items table and one interactions table, media paths relative to a root.

Items table columns (``item_id`` required, every other column optional and may be empty):
    item_id, title, description,
    image  -- one or more keyframe/cover image paths, separated by ``|``
    video  -- one video file (keyframes and, when ``audio`` is empty, the audio track come from it)
    audio  -- one audio file
    any other column is kept as a string (e.g. ``tags`` for the categorical modality)
Interactions table columns: user_id, item_id, timestamp (integer seconds), optional label (1 = positive),
optional split (train/valid/test or 0/1/2: a split given with the data, used by ``data.split.method=given``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ITEM_TEXT_COLUMNS = ("title", "description")
ITEM_MEDIA_COLUMNS = ("image", "video", "audio")
ITEM_COLUMNS = ("item_id", *ITEM_TEXT_COLUMNS, *ITEM_MEDIA_COLUMNS)
REQUIRED_INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
ID_COLUMNS = ("user_id", "item_id")
SPLIT_NAMES = ("train", "valid", "test")  # values of the optional ``split`` column, or their codes 0/1/2
IMAGE_SEPARATOR = "|"
log = logging.getLogger(__name__)
MAX_LISTED_ROWS = 5


class DataError(ValueError):
    """A structural problem in a dataset: the message names the file, column and lines (or rows)."""


def check_text_file(path: Path) -> None:
    """A DataError naming the file and line when it is empty or not UTF-8 (pandas would give a raw
    decoder traceback, or silently replace bytes)."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty (expected a header line with column names, then one line per row)")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "save the file as UTF-8"
        ) from err


def read_table(path: Path, sep: str | None = None, **options) -> pd.DataFrame:
    """Read a CSV/TSV (every column as a string) or Parquet table; ids stay strings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table not found: {path} (expected a .csv, .tsv or .parquet file)")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for name in ID_COLUMNS:
            # string ids become categoricals: each distinct id held once, a row costs a 4-byte code. One
            # dictionary over the whole column (pq.read_table's read_dictionary gives one per page, which
            # pandas then unifies: minutes at 10^8 rows against seconds here)
            if name in table.column_names and (
                pa.types.is_string(kind := table.schema.field(name).type) or pa.types.is_large_string(kind)
            ):
                column = pc.dictionary_encode(table.column(name).combine_chunks())
                table = table.set_column(table.schema.get_field_index(name), name, column)
        frame = table.to_pandas()
        del table
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed pages (1 GB at 10^8 rows)
        return frame
    if path.suffix in (".csv", ".tsv", ".inter", ".item", ".user") or sep:
        check_text_file(path)
        sep = sep or ("\t" if path.suffix == ".tsv" else ",")
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig", **options)
    raise ValueError(f"unsupported table format for {path}: expected .csv, .tsv or .parquet")


def _rows(mask: pd.Series, name: str) -> str:
    """Name the first offending rows: file lines for text tables (the header is line 1), else 1-based rows."""
    text = not str(name).endswith(".parquet")
    offset, word = (2, "line") if text else (1, "row")
    rows = [str(i + offset) for i in mask[mask].index[:MAX_LISTED_ROWS]]
    more = int(mask.sum()) - len(rows)
    return f"{word}(s) " + ", ".join(rows) + (f" (+{more} more)" if more > 0 else "")


def timestamps_in_seconds(column: pd.Series, name: str) -> tuple[pd.Series, list[str], list[str]]:
    """Integer seconds from numbers or datetimes: (seconds, errors, notes). Non-numbers, inf, nan and
    values beyond int64 are errors naming the lines; fractions of a second are truncated, with a note."""
    errors, notes = [], []
    if pd.api.types.is_datetime64_any_dtype(column):
        stamps = pd.to_datetime(column, utc=True)
        bad = stamps.isna()
        epoch = pd.Timestamp(0, tz="UTC")
        seconds = ((stamps - epoch) // pd.Timedelta(seconds=1)).where(~bad, 0)  # whatever the datetime unit
        if bad.any():
            errors.append(f"{name}: column 'timestamp' has missing datetimes in {_rows(bad, name)}")
        notes.append(f"{name}: column 'timestamp' holds datetimes; converted to integer seconds since 1970 (UTC)")
        return seconds.astype("int64"), errors, notes
    plain_numbers = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_extension_array_dtype(column)
    limit = 2**62  # any real time in seconds, with room; 1e30 or a millisecond/nanosecond mix-up is refused
    if plain_numbers and pd.api.types.is_integer_dtype(column) and not (column.abs() >= limit).any():
        return column.astype("int64"), errors, notes  # integer seconds already (10^8 rows: no copy, no text)
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    if plain_numbers:  # every value is a number; nan and inf are refused below
        not_number = pd.Series(False, index=column.index)
    else:
        not_number = values.isna() & column.astype(str).str.strip().str.lower().ne("nan")
    if not_number.any():
        errors.append(f"{name}: column 'timestamp' is not a number in {_rows(not_number, name)}")
    bad = ~not_number & ~(np.isfinite(values) & (values.abs() < limit))
    if bad.any():
        errors.append(
            f"{name}: column 'timestamp' must be finite integer seconds, got nan/inf/out-of-range values "
            f"in {_rows(bad, name)}"
        )
    ok = np.isfinite(values) & (values.abs() < limit)
    fractional = ok & (values != np.trunc(values))
    if fractional.any():
        notes.append(
            f"{name}: column 'timestamp' has fractions of a second in {_rows(fractional, name)} "
            f"({int(fractional.sum())} values); they are truncated to integer seconds"
        )
    return np.trunc(values.where(ok, 0)).astype("int64"), errors, notes


def id_column(column: pd.Series) -> pd.Series:
    """A user/item id column as a categorical of strings with sorted categories: a row costs a 4-byte
    code and each distinct id is held once, so 10^8 interactions do not become 10^8 Python strings."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype("category")
    names = column.cat.categories.astype(str)
    if names.has_duplicates:  # e.g. 1 and "1" in one column: both are the id "1"
        column = column.astype(str).astype("category")
    elif not column.cat.categories.equals(names) or column.cat.categories.dtype != names.dtype:
        column = column.cat.rename_categories(names)
    return column.cat.reorder_categories(column.cat.categories.sort_values())


def structural_errors(
    items: pd.DataFrame, interactions: pd.DataFrame, items_name: str, interactions_name: str
) -> list[str]:
    """Every structural error of a raw items/interactions pair, each naming file, column and rows."""
    errors = []
    if "item_id" not in items.columns:
        errors.append(f"{items_name}: missing required column 'item_id' (columns are {list(items.columns)})")
    missing = [c for c in REQUIRED_INTERACTION_COLUMNS if c not in interactions.columns]
    if missing:
        errors.append(
            f"{interactions_name}: missing required column(s) {missing} (columns are {list(interactions.columns)})"
        )
    if errors:
        return errors
    if len(interactions) == 0:
        errors.append(f"{interactions_name}: no interactions (the table has a header but no rows)")
    if len(items) == 0:
        errors.append(f"{items_name}: no items (the table has a header but no rows)")
    item_ids = items["item_id"].astype(str).reset_index(drop=True)
    empty = item_ids.str.strip() == ""
    if empty.any():
        errors.append(f"{items_name}: column 'item_id' is empty in {_rows(empty, items_name)}")
    dup = item_ids.duplicated(keep="first") & ~empty
    if dup.any():
        dups = sorted(set(item_ids[dup]))[:MAX_LISTED_ROWS]
        errors.append(f"{items_name}: duplicate item_id {dups} in {_rows(dup, items_name)}")
    inter = interactions.reset_index(drop=True)
    for column in ID_COLUMNS:
        absent = inter[column].isna()
        if absent.any():
            errors.append(f"{interactions_name}: column '{column}' is missing in {_rows(absent, interactions_name)}")
    ids = id_column(inter["item_id"])
    known = pd.Index(item_ids.drop_duplicates()).get_indexer(ids.cat.categories) >= 0  # per distinct id, not per row
    strangers = ids.cat.categories[~known]
    if len(strangers):
        unknown = ids.isin(strangers)
        errors.append(
            f"{interactions_name}: column 'item_id' has unknown item id(s) {sorted(strangers)[:MAX_LISTED_ROWS]} "
            f"in {_rows(unknown, interactions_name)}"
        )
    errors.extend(timestamps_in_seconds(inter["timestamp"], interactions_name)[1])
    if "label" in inter.columns:
        label = pd.to_numeric(inter["label"], errors="coerce")
        bad_label = ~np.isfinite(label.astype("float64"))
        if bad_label.any():
            errors.append(
                f"{interactions_name}: column 'label' is not a finite number in {_rows(bad_label, interactions_name)}"
            )
    if "split" in inter.columns:
        errors.extend(split_codes(inter["split"], interactions_name)[1])
    return errors


def split_codes(column: pd.Series, name: str) -> tuple[np.ndarray, list[str]]:
    """The ``split`` column as int8 codes 0/1/2 (train/valid/test), and errors naming the bad lines."""
    text = column.astype(str).str.strip().str.lower()
    codes = text.map({**{n: i for i, n in enumerate(SPLIT_NAMES)}, **{str(i): i for i in range(3)}})
    bad = codes.isna()
    errors = []
    if bad.any():
        errors.append(
            f"{name}: column 'split' must be one of {list(SPLIT_NAMES)} or 0/1/2, got "
            f"{sorted(set(text[bad]))[:MAX_LISTED_ROWS]} in {_rows(bad, name)}"
        )
    return codes.fillna(0).astype("int8").to_numpy(), errors


def normalise_items(items: pd.DataFrame) -> pd.DataFrame:
    """Columns ITEM_COLUMNS first (strings, '' when absent), then the others; a cell holding a vector
    (list or array, e.g. precomputed features in a request) is kept as it is, any other as a string."""
    items = items.copy()
    extra = [c for c in items.columns if c not in ITEM_COLUMNS]
    for column in ITEM_COLUMNS:
        items[column] = items[column].fillna("").astype(str) if column in items.columns else ""
    for column in extra:
        if items[column].dtype == object and items[column].map(lambda v: isinstance(v, (list, np.ndarray))).any():
            items[column] = items[column].map(
                lambda v: v if isinstance(v, (list, np.ndarray)) else "" if v is None or v != v else str(v)
            )
        else:
            items[column] = items[column].fillna("").astype(str)
    return items[[*ITEM_COLUMNS, *extra]].reset_index(drop=True)


@dataclass
class Catalogue:
    """Item rows and the root their media paths are relative to: what a featurizer is built from.
    A dataset's whole catalogue, or the one row of an item added to a running service."""

    name: str
    root: Path
    items: pd.DataFrame
    allow_external_media: bool = False

    @classmethod
    def from_rows(cls, name: str, root: str | Path, rows: list[dict]) -> Catalogue:
        """A catalogue of ``rows`` (dicts of item fields), normalised as a dataset's items table."""
        return cls(name, Path(root), normalise_items(pd.DataFrame(rows)))

    @property
    def num_items(self) -> int:
        return len(self.items)

    def media_path(self, relative: str, check: bool = True) -> Path:
        """An item's media path resolved against the root.

        With ``check``, a path that leaves the root (``..``, an absolute path, or a symlink whose
        target is outside) raises MediaError unless ``allow_external_media`` is set; such a file is
        never opened.
        """
        from mmrec.data.media import MediaError

        path = Path(relative)
        full = path if path.is_absolute() else self.root / path
        if not check or self.allow_external_media:
            return full
        if path.is_absolute():
            raise MediaError(
                full,
                "absolute media path refused (paths must be relative to the dataset root; "
                "data.allow_external_media=true allows them)",
            )
        root = self.root.resolve()
        if not full.resolve().is_relative_to(root):
            raise MediaError(
                full,
                f"media path resolves outside the dataset root {root} (refused; "
                "data.allow_external_media=true allows it)",
            )
        return full


@dataclass
class RecDataset(Catalogue):
    """A loaded dataset in the native layout, with normalised dtypes.

    ``items``: one row per item, columns ITEM_COLUMNS (strings, '' when absent).
    ``interactions``: user_id and item_id (categoricals of strings), timestamp (int64), label (float32), and
    ``split`` (int8 0/1/2) when the data comes with its split.
    """

    interactions: pd.DataFrame = None

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
        if all(c in interactions.columns for c in ID_COLUMNS):  # once, before the checks that read them
            interactions = interactions.assign(**{c: id_column(interactions[c]) for c in ID_COLUMNS})
        errors = structural_errors(items, interactions, items_name, interactions_name)
        if errors:
            raise DataError(f"dataset '{name}' has {len(errors)} structural error(s):\n  " + "\n  ".join(errors))
        items = normalise_items(items)
        seconds, _, notes = timestamps_in_seconds(interactions["timestamp"].reset_index(drop=True), interactions_name)
        for note in notes:
            log.warning("%s", note)
        inter = pd.DataFrame(
            {
                "user_id": interactions["user_id"].array,
                "item_id": interactions["item_id"].array,
                "timestamp": seconds.to_numpy(),
                "label": (
                    pd.to_numeric(interactions["label"]).astype("float32").to_numpy()
                    if "label" in interactions.columns
                    else 1.0
                ),
            }
        )
        if "split" in interactions.columns:
            inter["split"] = split_codes(interactions["split"].reset_index(drop=True), interactions_name)[0]
        return cls(name=name, root=Path(root), items=items, interactions=inter)

    @property
    def num_users(self) -> int:
        return self.interactions["user_id"].nunique()

    def fingerprint(self) -> str:
        """A short content hash of both tables: changes whenever an id, text, path or interaction does."""
        digest = hashlib.sha1(self.name.encode())
        for frame in (self.items, self.interactions):
            digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()[:16]


def load_native(
    root: str | Path, items: str = "items.csv", interactions: str = "interactions.csv", name: str | None = None
) -> RecDataset:
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
