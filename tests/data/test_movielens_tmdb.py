"""ml-100k with TMDB/IMDb content on small generated files: the text parts, metadata tags and posters
are joined on the movie id, repeats are counted, and malformed files are refused by name."""

from __future__ import annotations

import json
import logging

import pytest

from mmrec.data.loaders.movielens_tmdb import load_movielens_tmdb
from mmrec.data.schema import DataError

TMDB_HEADER = "movie_id,title,year,Action,Comedy,Drama,overview,vote_count"


def write_dataset(root, tmdb_rows=None):
    """Three movies (ml-100k's atomic files in ``root/inter``) and their TMDB/IMDb content in ``root``."""
    inter = root / "inter"
    inter.mkdir(parents=True, exist_ok=True)
    (inter / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t1\t4\t100\n1\t2\t3\t101\n2\t3\t5\t102\n2\t1\t2\t103\n"
    )
    (inter / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\n1\tToy Story\n2\tGoldenEye\n3\tFour Rooms\n"
    )
    rows = tmdb_rows or [
        "1,Toy Story,1995.0,0,1,0,Toys come alive.,10878",
        "1,Toy Story,1995.0,0,1,0,A repeated row.,1",
        "2,GoldenEye,1995.0,1,0,0,Bond unmasks a syndicate.,2037",
        "3,Four Rooms,,0,1,1,,1251",
    ]
    (root / "items_tmdb.csv").write_text("\n".join([TMDB_HEADER, *rows]) + "\n")
    (root / "tmdb_records.csv").write_text('movie_id,tagline\n1,"The toys are back."\n3,Twelve outrageous guests.\n')
    imdb = [{"movie_id": 1, "description": "A cowboy doll is threatened."}, {"movie_id": 3, "description": None}]
    (root / "imdb_details.json").write_text(json.dumps(imdb))
    (root / "posters").mkdir(exist_ok=True)
    (root / "posters" / "2.jpg").write_bytes(b"\xff\xd8\xff")
    return root


def load(root, **kwargs):
    return load_movielens_tmdb(root, interactions_root=root / "inter", **kwargs).items.set_index("item_id")


def test_text_tags_and_posters_are_joined_on_the_movie_id(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        items = load(write_dataset(tmp_path))
    assert "1 repeated movie_id rows; the first row of each movie is used" in caplog.text
    assert items.loc["1", "description"] == "Toys come alive. The toys are back. A cowboy doll is threatened."
    assert items.loc["2", "description"] == "Bond unmasks a syndicate."
    assert items.loc["3", "description"] == "Twelve outrageous guests."
    assert items["title"].tolist() == ["Toy Story", "GoldenEye", "Four Rooms"]
    # the year first, then the genres; a movie with no year has only its genres
    assert items["tags"].tolist() == ["year:1995|Comedy", "year:1995|Action", "Comedy|Drama"]
    assert items["image"].tolist() == ["", "posters/2.jpg", ""]
    # TMDB's vote counts are popularity, not content: no column carries them
    assert not any("10878" in str(v) for v in items.to_numpy().ravel())


def test_the_description_takes_the_parts_asked_for_in_their_order(tmp_path):
    items = load(write_dataset(tmp_path), text=("plot", "overview"))
    assert items.loc["1", "description"] == "A cowboy doll is threatened. Toys come alive."
    assert items.loc["3", "description"] == ""
    items = load(tmp_path, text=("year", "tagline"))
    assert items.loc["1", "description"] == "Released in 1995. The toys are back."
    assert items.loc["2", "description"] == "Released in 1995."
    assert items.loc["3", "description"] == "Twelve outrageous guests."  # no year, no sentence


def test_the_optional_files_may_be_absent(tmp_path):
    root = write_dataset(tmp_path)
    for name in ("tmdb_records.csv", "imdb_details.json"):
        (root / name).unlink()
    (root / "posters" / "2.jpg").unlink()
    items = load(root)
    assert items.loc["1", "description"] == "Toys come alive." and (items["image"] == "").all()


def test_malformed_inputs_are_named(tmp_path):
    root = write_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"data.dataset.text: unknown part\(s\) \['synopsis'\]"):
        load(root, text=("overview", "synopsis"))

    (root / "imdb_details.json").write_text('[{"movie_id": 1,')
    with pytest.raises(DataError, match=r"imdb_details.json: not valid JSON"):
        load(root)
    (root / "imdb_details.json").write_text('{"movie_id": 1}')
    with pytest.raises(DataError, match=r"imdb_details.json: expected a list of IMDb records, got dict"):
        load(root)

    write_dataset(tmp_path, tmdb_rows=["1,Toy Story,1995.0,0,1,0,Toys.,1", "2,GoldenEye,nineteen,1,0,0,Bond.,1"])
    with pytest.raises(DataError, match=r"items_tmdb.csv: 'year' is not a number for movie\(s\) \{'2': 'nineteen'\}"):
        load(root)

    (root / "items_tmdb.csv").write_text("id,title\n1,Toy Story\n")
    with pytest.raises(DataError, match=r"items_tmdb.csv: no 'movie_id' column"):
        load(root)
