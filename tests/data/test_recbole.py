import importlib.util

import pytest

from mmrec.data.loaders.recbole import load_recbole, read_atomic


def test_atomic_headers_and_text_fields(tmp_path):
    (tmp_path / "toy.inter").write_text("uid:token\tiid:token\tts:float\n1\ta\t10\n2\tb\t11\n")
    (tmp_path / "toy.item").write_text("iid:token\tname:token_seq\tgenre:token_seq\na\tAlpha\tX Y\nb\tBeta\t\n")
    ds = load_recbole(
        tmp_path,
        "toy",
        user_field="uid",
        item_field="iid",
        time_field="ts",
        title_field="name",
        text_fields={"genre": "genres"},
    )
    items = ds.items.set_index("item_id")
    assert items.loc["a", "title"] == "Alpha" and items.loc["a", "description"] == "genres: X Y"
    assert items.loc["b", "description"] == ""
    assert (items["image"] == "").all() and (items["audio"] == "").all()


def test_bad_header_is_reported(tmp_path):
    (tmp_path / "bad.inter").write_text("user_id\titem_id:token\n1\t2\n")
    with pytest.raises(ValueError, match="header 'user_id' is not 'name:type'"):
        read_atomic(tmp_path / "bad.inter")


@pytest.mark.skipif(
    importlib.util.find_spec("recbole") is None, reason="recbole not installed (pip install --no-deps recbole==1.2.1)"
)
def test_ml100k_from_the_recbole_wheel():
    ds = load_recbole(
        None, "ml-100k", title_field="movie_title", text_fields={"class": "genres", "release_year": "year"}
    )
    assert (ds.num_users, ds.num_items, len(ds.interactions)) == (943, 1682, 100_000)
    toy_story = ds.items.set_index("item_id").loc["1"]
    assert toy_story["title"] == "Toy Story"
    assert toy_story["description"] == "genres: Animation Children's Comedy. year: 1995"
