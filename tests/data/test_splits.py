import numpy as np
import pandas as pd
import pytest

from mmrec.data.splits import Split, make_split, recbole_counts


@pytest.fixture
def interactions():
    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        n = int(rng.integers(3, 25))
        items = rng.choice(200, n, replace=False)
        for t, i in enumerate(items):
            rows.append((f"u{u}", f"i{i}", 1000 * u + t))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(label=1.0)


def keys(frame):
    return set(zip(frame["user_id"], frame["item_id"], frame["timestamp"]))


def test_recbole_rounding():
    assert recbole_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert recbole_counts(5, (0.8, 0.1, 0.1)) == [3, 1, 1]  # 0.5 rounds up to one each for valid/test
    assert recbole_counts(2, (0.8, 0.1, 0.1)) == [1, 0, 1]
    assert recbole_counts(1, (0.8, 0.1, 0.1)) == [1, 0, 0]


@pytest.mark.parametrize("method", ["random", "loo", "temporal", "cold_item"])
def test_parts_partition_the_data_and_are_deterministic(interactions, method):
    split = make_split(interactions, method, seed=3)
    parts = [keys(p) for p in (split.train, split.valid, split.test)]
    assert sum(len(p) for p in parts) == len(interactions)
    assert set().union(*parts) == keys(interactions)
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    again = make_split(interactions, method, seed=3)
    assert all(
        a.equals(b) for a, b in zip((split.train, split.valid, split.test), (again.train, again.valid, again.test))
    )


def test_random_split_sizes_per_user(interactions):
    split = make_split(interactions, "random", seed=0)
    for user, group in interactions.groupby("user_id"):
        expected = recbole_counts(len(group), (0.8, 0.1, 0.1))
        got = [int((p["user_id"] == user).sum()) for p in (split.train, split.valid, split.test)]
        assert got == expected
    assert not make_split(interactions, "random", seed=1).train.equals(split.train)


def test_leave_one_out_takes_the_latest(interactions):
    split = make_split(interactions, "loo")
    last = interactions.sort_values("timestamp").groupby("user_id").tail(1)
    assert keys(split.test) == keys(last)
    assert len(split.valid) == interactions["user_id"].nunique()
    merged = split.train.merge(split.valid, on="user_id", suffixes=("_t", "_v"))
    assert (merged["timestamp_t"] < merged["timestamp_v"]).all()


def test_temporal_split_is_a_global_cut(interactions):
    split = make_split(interactions, "temporal")
    assert split.train["timestamp"].max() <= split.valid["timestamp"].min()
    assert split.valid["timestamp"].max() <= split.test["timestamp"].min()


def test_cold_item_split_keeps_cold_items_out_of_training(interactions):
    split = make_split(interactions, "cold_item", cold_fraction=0.2, seed=0)
    cold = split.cold_items
    assert len(cold) >= 0.15 * interactions["item_id"].nunique()
    assert not (set(split.train["item_id"]) & cold)
    valid_cold = set(split.valid["item_id"]) & cold
    test_cold = set(split.test["item_id"]) & cold
    assert valid_cold and test_cold and not (valid_cold & test_cold)


def test_save_and_load_round_trip(interactions, tmp_path):
    split = make_split(interactions, "random")
    split.save(tmp_path / "s.parquet", {"method": "random"})
    loaded = Split.load(tmp_path / "s.parquet")
    assert keys(loaded.test) == keys(split.test) and (tmp_path / "s.json").is_file()


def test_bad_arguments():
    frame = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [1]})
    with pytest.raises(ValueError, match="unknown split method 'time'"):
        make_split(frame, "time")
    with pytest.raises(ValueError, match="summing to 1"):
        make_split(frame, "random", ratios=(0.5, 0.1, 0.1))
