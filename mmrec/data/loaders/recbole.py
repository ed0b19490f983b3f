"""RecBole atomic files (``.inter``, ``.item``, ``.user``) with ``name:type`` headers.

MovieLens-100k ships inside the PyPI package ``recbole`` (``recbole/dataset_example/ml-100k``);
``locate_recbole_example`` finds it without importing recbole (whose import pulls heavy extras).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from mmrec.data.schema import RecDataset, read_table

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def read_atomic(path: Path) -> pd.DataFrame:
    """One atomic file as strings, columns renamed from ``name:type`` to ``name``."""
    if not path.is_file():
        raise FileNotFoundError(f"RecBole atomic file not found: {path}")
    table = read_table(path, sep="\t", quoting=3)
    names = []
    for header in table.columns:
        name, sep, kind = header.partition(":")
        if not sep or kind not in FIELD_TYPES:
            raise ValueError(f"{path}: header '{header}' is not 'name:type' with type in {FIELD_TYPES}")
        names.append(name)
    table.columns = names
    return table


def locate_recbole_example(name: str) -> Path:
    """The folder of a dataset shipped in the installed ``recbole`` wheel (e.g. 'ml-100k')."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"dataset '{name}' is looked for inside the 'recbole' package, which is not installed: "
            "run `pip install --no-deps recbole==1.2.1`, or set data.root to a folder holding "
            f"{name}.inter and {name}.item"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / name
    if not (folder / f"{name}.inter").is_file():
        raise FileNotFoundError(f"recbole is installed but {folder / (name + '.inter')} is missing")
    return folder


def load_recbole(
    root: str | Path | None,
    name: str,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str = "timestamp",
    title_field: str | None = None,
    text_fields: Mapping[str, str] | None = None,
    tag_fields: Sequence[str] = (),
) -> RecDataset:
    """Load ``{name}.inter`` (+ ``.item``) from ``root`` (default: the recbole wheel's example folder).

    The item title is ``title_field``; the description joins ``text_fields`` (field -> label) as
    'label: value'; the ``tags`` column joins the tokens of ``tag_fields`` (e.g. ml-100k's genre
    field ``class``) with '|', for the categorical-metadata modality.
    RecBole atomic files carry no media, so image and audio are missing for every item.
    """
    root = Path(root) if root else locate_recbole_example(name)
    text_fields = dict(text_fields or {})
    inter_path, item_path = root / f"{name}.inter", root / f"{name}.item"
    inter = read_atomic(inter_path)
    missing = [f for f in (user_field, item_field, time_field) if f not in inter.columns]
    if missing:
        raise ValueError(f"{inter_path}: missing field(s) {missing}; fields are {list(inter.columns)}")
    inter = pd.DataFrame(
        {
            "user_id": inter[user_field],
            "item_id": inter[item_field],
            "timestamp": inter[time_field],
        }
    )
    if item_path.is_file():
        item_table = read_atomic(item_path)
        wanted = [f for f in (title_field, *text_fields, *tag_fields) if f]
        absent = [f for f in [item_field, *wanted] if f not in item_table.columns]
        if absent:
            raise ValueError(f"{item_path}: missing field(s) {absent}; fields are {list(item_table.columns)}")
        items = pd.DataFrame({"item_id": item_table[item_field]})
        items["title"] = item_table[title_field] if title_field else ""
        parts = [
            item_table[f].where(item_table[f] == "", label + ": " + item_table[f]) for f, label in text_fields.items()
        ]
        items["description"] = (
            pd.concat(parts, axis=1).apply(lambda r: ". ".join(v for v in r if v), axis=1) if parts else ""
        )
        tokens = [item_table[f].str.split() for f in tag_fields]  # token_seq fields are space-separated
        items["tags"] = (
            pd.concat(tokens, axis=1).apply(lambda r: "|".join(t for seq in r for t in seq), axis=1) if tokens else ""
        )
    else:
        items = pd.DataFrame({"item_id": sorted(inter["item_id"].unique())})
    return RecDataset.from_frames(
        name, root, items, inter, items_name=str(item_path), interactions_name=str(inter_path)
    )
