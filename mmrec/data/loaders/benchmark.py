"""Published benchmark layouts whose split comes with the data (``data.split.method=given``).

RecBole benchmark files, as UniSRec (KDD 2022) and VQ-Rec release their Amazon datasets:
    {name}.train.inter   user_id:token  item_id_list:token_seq  item_id:token   (prefix-augmented)
    {name}.valid.inter   the same: history = the training sequence, target = the validation item
    {name}.test.inter    history = training + validation items, target = the test item
    {name}.item2index    ORIGINAL_ID <tab> INDEX      (the indices the .inter files use)
    {name}.user2index    ORIGINAL_ID <tab> INDEX      (optional)
    {name}.text          item_id:token <tab> text:token_seq   (keyed by the original item id)
Each user's sequence is rebuilt from the files (the shortest training history, then every training
target in order, then the validation and test targets) and checked against the given validation
and test histories, so the split used is exactly the released one.

MMRec toolbox layout (Zhou et al., the MMRec multimodal recommendation toolbox):
    {name}.inter    userID <tab> itemID <tab> rating <tab> x_label    (x_label 0/1/2 = train/valid/test)
    per-item feature matrices as .npy rows (row i = item i), read by the ``features`` modality
    optional item text: a table keyed by the original item id (``text_file``), joined through a
    row-for-row copy of the .inter file that holds the original ids (``original_ids``)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.data.schema import DataError, RecDataset, check_text_file, read_table

log = logging.getLogger(__name__)
PARTS = ("train", "valid", "test")


def read_index_map(path: Path) -> dict[str, str]:
    """``ORIGINAL<tab>INDEX`` lines -> {index: original id}; a malformed line is a DataError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected lines 'ORIGINAL_ID<tab>INDEX')")
    check_text_file(path)
    out = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 2 or not parts[1].strip().isdigit():
                raise DataError(f"{path}: line {line_no} is not 'ORIGINAL_ID<tab>INDEX': {line.strip()[:80]!r}")
            out[parts[1].strip()] = parts[0].strip()
    return out


def read_sequences(path: Path) -> pd.DataFrame:
    """A ``.inter`` of (user, history, target) rows; ``history`` as lists of index strings, ``line`` the file line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found (the RecBole benchmark layout has .train/.valid/.test)")
    table = read_table(path, sep="\t", quoting=3)
    names = {c.partition(":")[0]: c for c in table.columns}
    missing = [f for f in ("user_id", "item_id_list", "item_id") if f not in names]
    if missing:
        raise DataError(f"{path}: missing field(s) {missing}; the header has {list(table.columns)}")
    return pd.DataFrame(
        {
            "user": table[names["user_id"]].str.strip(),
            "history": table[names["item_id_list"]].str.split(),
            "target": table[names["item_id"]].str.strip(),
            "line": np.arange(2, len(table) + 2),
        }
    )


def rebuild_sequences(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame, files: dict) -> pd.DataFrame:
    """Interactions (user, item, timestamp = position, split) with every user's sequence rebuilt.

    RecBole writes a user's prefix-augmented training rows longest first, so in reverse file order
    they run forward in time. The result is checked against the given validation history (the
    training sequence's end) and test history (the same plus the validation item)."""
    valid_rows, test_rows = valid.set_index("user"), test.set_index("user")
    rows = []
    for user, part in train.groupby("user", sort=False):
        part = part.iloc[::-1]
        sequence = list(part["history"].iloc[0]) + part["target"].tolist()
        for name, given, extra in (("valid", valid_rows, []), ("test", test_rows, None)):
            if user not in given.index:
                raise DataError(f"{files[name]}: user {user} has training rows but no row here")
            row = given.loc[user]
            expected = sequence + ([] if extra is not None else [valid_rows.loc[user, "target"]])
            history = list(row["history"])
            if expected[-len(history) :] != history:
                raise DataError(
                    f"{files[name]}: line {row['line']}: the history of user {user} is not the end of the sequence "
                    f"rebuilt from {files['train']} (the split files do not belong together)"
                )
        sequence += [valid_rows.loc[user, "target"], test_rows.loc[user, "target"]]
        split = [0] * (len(sequence) - 2) + [1, 2]
        rows.extend(zip([user] * len(sequence), sequence, range(len(sequence)), split))
    missing = sorted(set(test["user"]) - set(train["user"]))
    if missing:
        raise DataError(f"{files['test']}: user(s) {missing[:5]} have no training rows in {files['train']}")
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])


def read_item_text(path: Path) -> dict[str, str]:
    """``item_id:token<tab>text:token_seq`` -> {original id: text}."""
    table = read_table(path, sep="\t", quoting=3)
    if len(table.columns) < 2:
        raise DataError(f"{path}: expected two tab-separated columns (item id, text), got {list(table.columns)}")
    return dict(zip(table.iloc[:, 0].str.strip(), table.iloc[:, 1].str.strip()))


def load_recbole_benchmark(root: str | Path, name: str, text: bool = True) -> RecDataset:
    """A dataset in the RecBole benchmark layout (module docstring), with its given split.

    Items are the indices of ``{name}.item2index`` in order; ``item_id`` is the original id and
    ``title`` the item's text from ``{name}.text`` (empty, counted and logged, where an item has none)."""
    root = Path(root)
    files = {part: root / f"{name}.{part}.inter" for part in PARTS}
    parts = {part: read_sequences(path) for part, path in files.items()}
    index_path = root / f"{name}.item2index"
    originals = read_index_map(index_path)
    for part, table in parts.items():
        used = pd.concat([table["target"], table["history"].explode().dropna()])
        unknown = sorted(set(used) - set(originals), key=lambda v: int(v) if v.isdigit() else -1)
        if unknown:
            line = int(
                table.loc[
                    table["target"].isin(unknown) | table["history"].map(set(unknown).intersection).astype(bool), "line"
                ].iloc[0]
            )
            raise DataError(
                f"{files[part]}: line {line}: item index(es) {unknown[:5]} are not in {index_path} "
                f"({len(unknown)} unknown in all)"
            )
    interactions = rebuild_sequences(parts["train"], parts["valid"], parts["test"], files)
    order = sorted(originals, key=int)
    items = pd.DataFrame({"item_id": [originals[i] for i in order]})
    interactions["item_id"] = interactions["item_id"].map(originals)
    if text:
        texts = read_item_text(root / f"{name}.text")
        items["title"] = items["item_id"].map(texts).fillna("")
        lacking = int((items["title"] == "").sum())
        if lacking:
            log.warning(
                "%s: %d of %d items have no text row; their text modality is missing",
                root / f"{name}.text",
                lacking,
                len(items),
            )
    return RecDataset.from_frames(name, root, items, interactions, str(index_path), str(files["train"]))


def load_mmrec(
    root: str | Path,
    name: str,
    inter_file: str | None = None,
    text_file: str | None = None,
    original_ids: str | None = None,
    text_key: str | None = None,
    text_column: str = "text",
) -> RecDataset:
    """A dataset in the MMRec toolbox layout (module docstring), with its given ``x_label`` split.

    Items are 0..N-1 (N = the largest itemID + 1, the rows of its feature matrices). ``text_file``
    (keyed by ``text_key``, default its first column) gives item text through ``original_ids``, a
    copy of the .inter file with the original item ids row for row."""
    root = Path(root)
    inter_path = root / (inter_file or f"{name}.inter")
    table = read_table(inter_path, sep="\t")
    missing = [c for c in ("userID", "itemID", "x_label") if c not in table.columns]
    if missing:
        raise DataError(f"{inter_path}: missing column(s) {missing}; the header has {list(table.columns)}")
    bad = ~table["itemID"].str.strip().str.isdigit()
    if bad.any():
        raise DataError(f"{inter_path}: line {int(np.flatnonzero(bad)[0]) + 2}: itemID is not a row index (0, 1, ...)")
    item_index = table["itemID"].astype(int)
    items = pd.DataFrame({"item_id": [str(i) for i in range(int(item_index.max()) + 1)]})
    interactions = pd.DataFrame(
        {
            "user_id": table["userID"],
            "item_id": item_index.astype(str),
            "timestamp": np.arange(len(table)),  # the layout has no times: the file order stands in for them
            "split": table["x_label"],
        }
    )
    if text_file:
        if not original_ids:
            raise ValueError("data.dataset.text_file needs data.dataset.original_ids (the .inter with original ids)")
        original = read_table(root / original_ids, sep="\t")
        if len(original) != len(table):
            raise DataError(
                f"{root / original_ids}: {len(original)} rows, but {inter_path} has {len(table)}: "
                "it must be the same file with the original item ids"
            )
        to_original = dict(zip(item_index, original["itemID"].str.strip()))
        texts = read_table(root / text_file, sep="\t", quoting=3)
        key = text_key or texts.columns[0]
        if key not in texts.columns or text_column not in texts.columns:
            raise DataError(f"{root / text_file}: needs columns '{key}' and '{text_column}', has {list(texts.columns)}")
        by_original = dict(zip(texts[key].str.strip(), texts[text_column].str.strip()))
        items["title"] = [by_original.get(to_original.get(i, ""), "") for i in range(len(items))]
        lacking = int((items["title"] == "").sum())
        if lacking:
            log.warning(
                "%s: %d of %d items have no text; their text modality is missing", root / text_file, lacking, len(items)
            )
    return RecDataset.from_frames(name, root, items, interactions, str(inter_path), str(inter_path))
