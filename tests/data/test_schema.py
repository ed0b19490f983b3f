import pandas as pd
import pytest

from mmrec.data.schema import DataError, RecDataset, load_native, read_table


def write(root, items, interactions):
    pd.DataFrame(items).to_csv(root / "items.csv", index=False)
    pd.DataFrame(interactions).to_csv(root / "interactions.csv", index=False)


def test_native_loader_normalises_types_and_defaults_label(tmp_path):
    write(
        tmp_path,
        {"item_id": [1, 2], "title": ["a", None]},
        {"user_id": ["u", "u"], "item_id": [1, 2], "timestamp": [5, 6]},
    )
    ds = load_native(tmp_path)
    assert list(ds.items.columns) == ["item_id", "title", "description", "image", "video", "audio"]
    assert ds.items["item_id"].tolist() == ["1", "2"]
    assert ds.items["title"].tolist() == ["a", ""]
    assert ds.interactions["label"].tolist() == [1.0, 1.0]
    assert ds.interactions["timestamp"].dtype == "int64"


def test_parquet_tables_load_like_csv(tmp_path):
    pd.DataFrame({"item_id": ["a"], "title": ["t"]}).to_parquet(tmp_path / "items.parquet")
    pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1], "label": [0.0]}).to_parquet(
        tmp_path / "inter.parquet"
    )
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
    assert "items.csv: duplicate item_id ['a'] in line(s) 4" in text  # the header is line 1
    assert "interactions.csv: column 'item_id' has unknown item id(s) ['zz'] in line(s) 3" in text
    assert "column 'timestamp' is not a number in line(s) 3" in text


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


def write_raw(root, items: bytes, interactions: bytes):
    (root / "items.csv").write_bytes(items)
    (root / "interactions.csv").write_bytes(interactions)


ITEMS = b"item_id,title\na,x\nb,y\n"


@pytest.mark.parametrize(
    "items, interactions, message",
    [
        (b"", b"user_id,item_id,timestamp\nu,a,1\n", r"items.csv: the file is empty \(expected a header line"),
        (
            ITEMS,
            b"user_id,item_id,timestamp\n",
            r"interactions.csv: no interactions \(the table has a header but no rows\)",
        ),
        (
            ITEMS,
            b"user_id,item_id,timestamp\nu,a,1\nu,b\xff\xfe,2\n",
            r"interactions.csv: line 3 is not valid UTF-8 \(byte 0xff",
        ),
        (
            ITEMS,
            b"user_id,item_id,timestamp\nu,a,inf\nu,b,nan\nv,a,1e30\nv,b,5\n",
            r"nan/inf/out-of-range values in line\(s\) 2, 3, 4",
        ),
    ],
)
def test_bad_tables_name_file_column_and_line(tmp_path, items, interactions, message):
    write_raw(tmp_path, items, interactions)
    with pytest.raises(DataError, match=message):
        load_native(tmp_path)


def test_float_timestamps_are_truncated_with_a_warning(tmp_path, caplog):
    write_raw(tmp_path, ITEMS, b"user_id,item_id,timestamp\nu,a,1.9\nu,b,2\n")
    ds = load_native(tmp_path)
    assert ds.interactions["timestamp"].tolist() == [1, 2]
    assert "fractions of a second in line(s) 2 (1 values); they are truncated" in caplog.text


def test_datetime_parquet_timestamps_become_seconds(tmp_path):
    pd.DataFrame({"item_id": ["a"]}).to_parquet(tmp_path / "items.parquet")
    stamps = pd.to_datetime(["2025-01-01 00:00:10", "2025-01-01 00:01:00"])
    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "a"], "timestamp": stamps}).to_parquet(
        tmp_path / "inter.parquet"
    )
    ds = load_native(tmp_path, items="items.parquet", interactions="inter.parquet")
    assert ds.interactions["timestamp"].tolist() == [1735689610, 1735689660]
    bad = pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1e30]})
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(
        DataError, match=r"bad.parquet: column 'timestamp' .* in row\(s\) 1"
    ):  # no lines in Parquet: rows
        load_native(tmp_path, items="items.parquet", interactions="bad.parquet")


def test_parquet_ids_are_categoricals_with_the_same_ids_and_fingerprint(tmp_path):
    """Ids are held as categoricals of strings (a 4-byte code a row), whatever their type in the file;
    the fingerprint is the one of the same table with plain string ids, so caches keyed by it stay valid."""
    import numpy as np

    pd.DataFrame({"item_id": [10, 2, 33]}).to_parquet(tmp_path / "items.parquet")
    inter = pd.DataFrame({"user_id": ["v", "u", "v"], "item_id": [33, 2, 10], "timestamp": np.array([3, 1, 2])})
    inter.to_parquet(tmp_path / "inter.parquet")
    ds = load_native(tmp_path, items="items.parquet", interactions="inter.parquet")
    for column, expected in (("user_id", ["v", "u", "v"]), ("item_id", ["33", "2", "10"])):
        assert isinstance(ds.interactions[column].dtype, pd.CategoricalDtype)
        assert ds.interactions[column].astype(str).tolist() == expected
        assert list(ds.interactions[column].cat.categories) == sorted(set(expected))
    plain = ds.interactions.assign(**{c: ds.interactions[c].astype(object) for c in ("user_id", "item_id")})
    assert ds.fingerprint() == RecDataset(ds.name, ds.root, ds.items, interactions=plain).fingerprint()


def test_mixed_and_missing_ids(tmp_path):
    """1 and "1" in one column are one id; a missing id is an error naming its row."""
    items = pd.DataFrame({"item_id": ["1", "2"]})
    mixed = pd.DataFrame({"user_id": ["u", "u"], "item_id": pd.Series([1, "1"], dtype=object), "timestamp": [1, 2]})
    ds = RecDataset.from_frames("d", tmp_path, items, mixed)
    assert ds.interactions["item_id"].astype(str).tolist() == ["1", "1"]
    missing = pd.DataFrame({"user_id": ["u", None], "item_id": ["1", "2"], "timestamp": [1, 2]})
    with pytest.raises(DataError, match=r"inter.parquet: column 'user_id' is missing in row\(s\) 2"):
        RecDataset.from_frames("d", tmp_path, items, missing, interactions_name="inter.parquet")
