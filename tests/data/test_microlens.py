"""MicroLens-100k loader on a fixture written in the public layout."""

import numpy as np
from PIL import Image

from mmrec.data.loaders.microlens import load_microlens, read_titles


def make_microlens(root):
    (root / "MicroLens-100k_covers").mkdir(parents=True)
    (root / "MicroLens-100k_pairs.csv").write_text(
        "user,item,timestamp\n1,10,1600000000123\n1,11,1600000001999\n2,10,1600000002000\n"
    )
    # UTF-8 BOM, a header line, commas inside a title
    (root / "MicroLens-100k_title_en.csv").write_bytes(
        "\ufeffitem_id,title\n10,Cats, dogs, and more\n11,Plain title\n12,Never watched\n".encode()
    )
    for item in (10, 12):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "MicroLens-100k_covers" / f"{item}.jpg")


def test_microlens_layout(tmp_path):
    make_microlens(tmp_path)
    ds = load_microlens(tmp_path)
    items = ds.items.set_index("item_id")
    assert ds.num_items == 3 and ds.num_users == 2 and len(ds.interactions) == 3
    assert items.loc["10", "title"] == "Cats, dogs, and more"
    assert items.loc["10", "image"] == "MicroLens-100k_covers/10.jpg"
    assert items.loc["11", "image"] == ""
    assert items.loc["12", "image"] == "MicroLens-100k_covers/12.jpg"
    assert ds.interactions["timestamp"].tolist() == [1600000000, 1600000001, 1600000002]  # ms -> s


def test_titles_without_header(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("5,a, b\n6,c\n")
    assert read_titles(path).values.tolist() == [["5", "a, b"], ["6", "c"]]


def test_missing_pairs_file_is_named(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="MicroLens-100k_pairs.csv"):
        load_microlens(tmp_path)
