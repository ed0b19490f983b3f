"""The RecBole benchmark (UniSRec) and MMRec layouts on small generated files: the given split is
used exactly, and malformed files are refused by file and line."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from formats import write_recbole_benchmark as write_benchmark_files

from mmrec.data.csr import CSR
from mmrec.data.loaders.benchmark import load_mmrec, load_recbole_benchmark
from mmrec.data.schema import DataError
from mmrec.data.splits import make_split
from mmrec.evaluation.evaluator import FullRankingEvaluator

SEQUENCES = {"0": [0, 1, 2, 3, 4], "1": [2, 3, 1, 5]}  # item indices in time order
ASINS = ["A0", "A1", "A2", "A3", "A4", "A5"]


def write_recbole_benchmark(root, sequences=SEQUENCES, name="Toy", max_len=50, texts=None):
    return write_benchmark_files(root, sequences, ASINS, name, max_len, texts)


def test_sequences_and_the_given_split_are_rebuilt_exactly(tmp_path):
    ds = load_recbole_benchmark(write_recbole_benchmark(tmp_path), "Toy")
    assert ds.items["item_id"].tolist() == ASINS and ds.items.loc[3, "title"] == "text of A3"
    split = make_split(ds.interactions, method="given")
    user0 = lambda part: part[part.user_id == "0"].sort_values("timestamp")["item_id"].tolist()  # noqa: E731
    assert user0(split.train) == ["A0", "A1", "A2"] and user0(split.valid) == ["A3"] and user0(split.test) == ["A4"]
    assert len(split.train) == 3 + 2 and len(split.valid) == len(split.test) == 2


def test_histories_cut_at_the_maximum_length_still_rebuild(tmp_path):
    long = {"0": list(range(6)) * 2}
    ds = load_recbole_benchmark(write_recbole_benchmark(tmp_path, long, max_len=4), "Toy")
    assert ds.interactions["item_id"].tolist() == [ASINS[i] for i in long["0"]]


def test_malformed_benchmark_files_are_named(tmp_path, caplog):
    write_recbole_benchmark(tmp_path)
    (tmp_path / "Toy.valid.inter").unlink()
    with pytest.raises(FileNotFoundError, match=r"Toy.valid.inter: split file not found"):
        load_recbole_benchmark(tmp_path, "Toy")

    write_recbole_benchmark(tmp_path, {"0": [0, 9, 2, 3, 4]})
    with pytest.raises(
        DataError, match=r"Toy.train.inter: line 2: item index\(es\) \['9'\] are not in .*Toy.item2index"
    ):
        load_recbole_benchmark(tmp_path, "Toy")

    write_recbole_benchmark(tmp_path)
    test = tmp_path / "Toy.test.inter"
    test.write_text(test.read_text().replace("0\t0 1 2 3\t4", "0\t0 2 1 3\t4"))
    with pytest.raises(
        DataError, match=r"Toy.test.inter: line 2: the history of user 0 is not the end of the sequence"
    ):
        load_recbole_benchmark(tmp_path, "Toy")

    write_recbole_benchmark(tmp_path)
    (tmp_path / "Toy.item2index").write_text("A0 0\n")
    with pytest.raises(DataError, match=r"Toy.item2index: line 1 is not 'ORIGINAL_ID<tab>INDEX'"):
        load_recbole_benchmark(tmp_path, "Toy")

    write_recbole_benchmark(tmp_path, texts={a: "t" for a in ASINS[:4]})
    with caplog.at_level(logging.WARNING):
        ds = load_recbole_benchmark(tmp_path, "Toy")
    assert (ds.items["title"] == "").sum() == 2 and "2 of 6 items have no text row" in caplog.text


def write_mmrec(root):
    (root / "toy.inter").write_text("userID\titemID\trating\tx_label\n0\t0\t1\t0\n0\t2\t1\t1\n1\t1\t1\t0\n1\t2\t1\t2\n")
    (root / "toy_og.inter").write_text(
        "userID\titemID\trating\tx_label\n9\t10\t1\t0\n9\t30\t1\t1\n8\t20\t1\t0\n8\t30\t1\t2\n"
    )
    (root / "text.tsv").write_text("artistID\ttext\n10\trock\n20\tjazz\n30\tpop\n")
    return root


def test_mmrec_layout_split_and_text_through_original_ids(tmp_path):
    ds = load_mmrec(write_mmrec(tmp_path), "toy", text_file="text.tsv", original_ids="toy_og.inter")
    assert ds.items["title"].tolist() == ["rock", "jazz", "pop"]
    split = make_split(ds.interactions, method="given")
    assert (len(split.train), len(split.valid), len(split.test)) == (2, 1, 1)
    assert split.test.iloc[0][["user_id", "item_id"]].tolist() == ["1", "2"]


def test_mmrec_layout_errors(tmp_path):
    write_mmrec(tmp_path)
    (tmp_path / "toy_og.inter").write_text("userID\titemID\trating\tx_label\n9\t10\t1\t0\n")
    with pytest.raises(DataError, match=r"toy_og.inter: 1 rows, but .*toy.inter has 4"):
        load_mmrec(tmp_path, "toy", text_file="text.tsv", original_ids="toy_og.inter")
    (tmp_path / "toy.inter").write_text("userID\titemID\trating\tx_label\n0\t0\t1\t0\n0\t1\t1\t7\n")
    with pytest.raises(DataError, match=r"column 'split' must be one of \['train', 'valid', 'test'\] or 0/1/2"):
        load_mmrec(tmp_path, "toy")


def test_given_split_needs_a_split_column():
    import pandas as pd

    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [0], "label": [1.0]})
    with pytest.raises(ValueError, match="data.split.method=given needs a 'split' column"):
        make_split(inter, method="given")


def test_mask_seen_switch():
    """History items ranked (RecBole's sequential protocol) or masked (mmrec's default)."""
    users = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])  # item 0 is seen and scores highest
    targets, seen = CSR.from_groups([np.array([1])]), CSR.from_groups([np.array([0])])
    metrics = {}
    for mask in (True, False):
        evaluator = FullRankingEvaluator(
            {"all": torch.ones(3, dtype=torch.bool)}, torch.ones(3), ("mrr",), (10,), mask_seen=mask
        )
        evaluator.update(users, items, targets, seen, torch.tensor([0]))
        metrics[mask] = float(evaluator.compute()["all/mrr@10"])
    assert metrics == {True: 1.0, False: 0.5}
