import pandas as pd
import pytest

from mmrec.data.schema import DataError, RecDataset, load_native, read_table


def write(root, items, interactions):
    pd.DataFrame(items).to_csv(root / "items.csv", index=False)
    pd.DataFrame(interactions).to_csv(root / "interactions.csv", index=False)


def test_native_loader_normalises_types_and_defaults_label(tmp_path):
    write(tmp_path, {"item_id": [1, 2], "title": ["a", None]}, {"user_id": ["u", "u"], "item_id": [1, 2], "timestamp": [5, 6]})
    ds = load_native(tmp_path)
    assert list(ds.items.columns) == ["item_id", "title", "description", "image", "video", "audio"]
    assert ds.items["item_id"].tolist() == ["1", "2"]
    assert ds.items["title"].tolist() == ["a", ""]
    assert ds.interactions["label"].tolist() == [1.0, 1.0]
    assert ds.interactions["timestamp"].dtype == "int64"


def test_parquet_tables_load_like_csv(tmp_path):
    pd.DataFrame({"item_id": ["a"], "title": ["t"]}).to_parquet(tmp_path / "items.parquet")
    pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1], "label": [0.0]}).to_parquet(tmp_path / "inter.parquet")
    ds = load_native(tmp_path, items="items.parquet", interactions="inter.parquet")
    assert ds.num_items == 1 and ds.interactions["label"].tolist() == [0.0]


def test_structural_errors_name_file_column_and_rows(tmp_path):
    write(
        tmp_path,
        {"item_id": ["a", "b", "a"]},
        {"user_id": ["u", "u", "v"], "item_id": ["a", "zz", "b"], "timestamp": ["1", "x", "3"]},
    )
    with pytest.raises(DataError) as err:
        load_native(tmp_path)
    text = str(err.value)
    assert "items.csv: duplicate item_id ['a'] in row(s) 3" in text
    assert "interactions.csv: column 'item_id' has unknown item id(s) ['zz'] in row(s) 2" in text
    assert "column 'timestamp' is not a number in row(s) 2" in text


def test_missing_required_column_is_named(tmp_path):
    write(tmp_path, {"item_id": ["a"]}, {"user": ["u"], "item_id": ["a"], "timestamp": [1]})
    with pytest.raises(DataError, match=r"missing required column\(s\) \['user_id'\]"):
        load_native(tmp_path)


def test_missing_table_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="items.csv"):
        load_native(tmp_path)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="expected .csv, .tsv or .parquet"):
        read_table(tmp_path / "x.json")


def test_fingerprint_changes_with_content(tmp_path):
    items = pd.DataFrame({"item_id": ["a", "b"]})
    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1]})
    a = RecDataset.from_frames("d", tmp_path, items, inter)
    b = RecDataset.from_frames("d", tmp_path, items.assign(title=["x", ""]), inter)
    assert a.fingerprint() == RecDataset.from_frames("d", tmp_path, items, inter).fingerprint()
    assert a.fingerprint() != b.fingerprint()
