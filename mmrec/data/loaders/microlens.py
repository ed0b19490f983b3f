"""MicroLens-100k (https://github.com/westlake-repl/MicroLens) in its public layout.

root/MicroLens-100k_pairs.csv      user,item,timestamp   (timestamp in milliseconds)
root/MicroLens-100k_title_en.csv   item_id,title         (split at the first comma only; BOM allowed)
root/MicroLens-100k_covers/{item}.jpg
root/MicroLens-100k_videos/{item}.mp4   (optional)
root/MicroLens-100k_audio/{item}.wav    (optional; otherwise the video's audio track is used)
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from mmrec.data.schema import RecDataset, check_text_file, read_table

log = logging.getLogger(__name__)
PAIRS = "MicroLens-100k_pairs.csv"
TITLES = "MicroLens-100k_title_en.csv"
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a")


def read_titles(path: Path) -> pd.DataFrame:
    """``item_id,title`` lines split at the first comma only (titles contain commas)."""
    if not path.is_file():
        raise FileNotFoundError(f"MicroLens titles file not found: {path} (expected lines 'item_id,title')")
    check_text_file(path)
    rows = []
    with open(path, encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            item, sep, title = line.partition(",")
            if not sep:
                raise ValueError(f"{path}: line {line_no} has no comma; expected 'item_id,title'")
            if line_no == 1 and not item.strip().isdigit():
                continue  # a header line
            rows.append((item.strip(), title.strip().strip('"')))
    return pd.DataFrame(rows, columns=["item_id", "title"])


def _media_column(root: Path, folder: str, ids: pd.Series, suffixes: tuple[str, ...]) -> pd.Series:
    """Relative path of each item's file in ``folder`` when it exists, else ''."""
    base = root / folder
    if not base.is_dir():
        return pd.Series([""] * len(ids))
    present = {p.stem: p.name for p in base.iterdir() if p.suffix.lower() in suffixes}
    return ids.map(lambda i: f"{folder}/{present[i]}" if i in present else "")


def load_microlens(
    root: str | Path,
    pairs: str = PAIRS,
    titles: str = TITLES,
    covers_dir: str = "MicroLens-100k_covers",
    videos_dir: str = "MicroLens-100k_videos",
    audio_dir: str = "MicroLens-100k_audio",
    name: str = "microlens-100k",
) -> RecDataset:
    """Load MicroLens-100k from ``root``; items without a title, cover, video or audio keep that column empty."""
    root = Path(root)
    pairs_path = root / pairs
    if not pairs_path.is_file():
        raise FileNotFoundError(f"MicroLens pairs file not found: {pairs_path} (expected columns user,item,timestamp)")
    inter = read_table(pairs_path, sep=",")
    missing = {"user", "item", "timestamp"} - set(inter.columns)
    if missing:
        raise ValueError(
            f"{pairs_path}: missing column(s) {sorted(missing)}; expected user,item,timestamp (got "
            f"{list(inter.columns)})"
        )
    inter = pd.DataFrame(
        {
            "user_id": inter["user"],
            "item_id": inter["item"],
            "timestamp": pd.to_numeric(inter["timestamp"], errors="coerce")
            / 1000,  # ms -> s; bad values are named later
        }
    )
    title_table = read_titles(root / titles)
    ids = pd.Series(sorted(set(title_table["item_id"]) | set(inter["item_id"]), key=lambda s: (len(s), s)))
    items = pd.DataFrame({"item_id": ids})
    items = items.merge(title_table.drop_duplicates("item_id"), on="item_id", how="left").fillna({"title": ""})
    items["description"] = ""
    items["image"] = _media_column(root, covers_dir, items["item_id"], (".jpg", ".jpeg", ".png"))
    items["video"] = _media_column(root, videos_dir, items["item_id"], (".mp4",))
    items["audio"] = _media_column(root, audio_dir, items["item_id"], AUDIO_SUFFIXES)
    for column in ("title", "image", "video", "audio"):
        log.info("microlens: %d of %d items have %s", int((items[column] != "").sum()), len(items), column)
    return RecDataset.from_frames(
        name, root, items, inter, items_name=str(root / titles), interactions_name=str(pairs_path)
    )
