"""MovieLens-100k with TMDB and IMDb item content, joined on ml-100k's item id (``movie_id``).

root/items_tmdb.csv      movie_id, title, year, genre flags, TMDB ``overview`` (plot), ...; a movie
                         may have several rows (the first is used, the repeats counted and logged)
root/tmdb_records.csv    full TMDB records: ``tagline`` (optional file)
root/imdb_details.json   a list of IMDb records: ``movie_id``, ``description`` (one-line plot) (optional)
root/posters/<id>.jpg    one poster per movie (optional)
The interactions are ml-100k's own (``{name}.inter``), from ``interactions_root`` or the copy inside
the ``recbole`` wheel. Items: ``title`` (the ml-100k title), ``description`` (the TMDB overview,
tagline and IMDb plot joined), ``image`` (the poster), ``tags`` (the release year as ``year:1995``,
then the genres). TMDB's vote counts and averages are outside popularity signals and are left out of
the content.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from mmrec.data.loaders.recbole import load_recbole
from mmrec.data.schema import DataError, RecDataset, read_table

log = logging.getLogger(__name__)
TEXT_PARTS = ("year", "overview", "tagline", "plot")
GENRES = (
    "Action Adventure Animation Children Comedy Crime Documentary Drama Fantasy FilmNoir Horror Musical Mystery "
    "Romance SciFi Thriller War Western"
).split()


def first_rows(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """One row per ``movie_id`` (the first); repeats are counted and logged."""
    if "movie_id" not in table.columns:
        raise DataError(f"{path}: no 'movie_id' column (columns: {list(table.columns)[:12]})")
    repeated = int(table["movie_id"].duplicated().sum())
    if repeated:
        log.warning("%s: %d repeated movie_id rows; the first row of each movie is used", path, repeated)
    return table.drop_duplicates("movie_id").set_index("movie_id")


def release_years(flags: pd.DataFrame, path: Path) -> pd.Series:
    """Each movie's release year (float, NaN where there is none); a year that is there but not a
    number is refused."""
    raw = flags["year"] if "year" in flags.columns else pd.Series("", index=flags.index)
    years = pd.to_numeric(raw, errors="coerce")
    unreadable = raw.notna() & (raw.astype(str).str.strip() != "") & years.isna()
    if unreadable.any():
        shown = {str(k): raw[k] for k in flags.index[unreadable][:5]}
        raise DataError(f"{path}: 'year' is not a number for movie(s) {shown} (expected e.g. 1995 or 1995.0)")
    return years


def metadata_tags(flags: pd.DataFrame, years: pd.Series) -> list[str]:
    """Each movie's categorical metadata, ``|``-joined: its release year (first, so a tag limit never
    cuts it), then its genre flags."""
    genres = [g for g in GENRES if g in flags.columns]
    flagged = flags[genres].astype(str).apply(lambda c: c.str.strip().isin(("1", "1.0")))
    return [
        "|".join(([f"year:{int(year)}"] if pd.notna(year) else []) + [g for g in genres if row[g]])
        for year, (_, row) in zip(years, flagged.iterrows())
    ]


def read_imdb_plots(path: Path) -> dict[str, str]:
    try:
        records = json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of IMDb records, got {type(records).__name__}")
    return {str(r.get("movie_id", "")).strip(): str(r.get("description") or "").strip() for r in records}


def load_movielens_tmdb(
    root: str | Path,
    interactions_root: str | Path | None = None,
    name: str = "ml-100k",
    text: tuple = ("overview", "tagline", "plot"),
) -> RecDataset:
    """ml-100k's interactions with TMDB/IMDb text and posters (module docstring). ``text`` chooses the
    description's parts, in order: any of year ("Released in 1995."), overview (TMDB), tagline
    (TMDB), plot (IMDb)."""
    root = Path(root)
    unknown = sorted(set(text) - set(TEXT_PARTS))
    if unknown:
        raise ValueError(f"data.dataset.text: unknown part(s) {unknown}; expected any of {', '.join(TEXT_PARTS)}")
    base = load_recbole(interactions_root, name, title_field="movie_title")
    items = base.items[["item_id", "title"]].copy()
    tmdb_path = root / "items_tmdb.csv"
    tmdb = first_rows(read_table(tmdb_path), tmdb_path)
    flags = tmdb.reindex(items["item_id"])
    years = release_years(flags, tmdb_path)
    parts = {"year": [f"Released in {int(y)}." if pd.notna(y) else "" for y in years]}
    parts["overview"] = items["item_id"].map(tmdb["overview"]).fillna("")
    records_path = root / "tmdb_records.csv"
    parts["tagline"] = (
        items["item_id"].map(first_rows(read_table(records_path), records_path)["tagline"]).fillna("")
        if records_path.is_file()
        else ""
    )
    plots_path = root / "imdb_details.json"
    parts["plot"] = items["item_id"].map(read_imdb_plots(plots_path)).fillna("") if plots_path.is_file() else ""
    items["description"] = [
        " ".join(p for p in row if p) for row in zip(*(pd.Series(parts[t], index=items.index) for t in text))
    ]
    items["tags"] = metadata_tags(flags, years)
    posters = {p.stem for p in (root / "posters").glob("*.jpg")} if (root / "posters").is_dir() else set()
    items["image"] = [f"posters/{i}.jpg" if i in posters else "" for i in items["item_id"]]
    lacking = int((items["description"] == "").sum())
    log.info(
        "%s: %d of %d movies have a description (%s), %d a poster",
        root,
        len(items) - lacking,
        len(items),
        ", ".join(text),
        len(posters),
    )
    return RecDataset.from_frames(name + "-tmdb", root, items, base.interactions, str(tmdb_path))
