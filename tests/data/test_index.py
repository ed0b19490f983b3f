"""The per-user index of a split."""

import numpy as np

from mmrec.data.csr import Ragged
from mmrec.data.index import IndexedSplit


def test_merged_rows_put_earlier_parts_first_on_equal_times():
    """IndexedSplit.merged_rows: each user's items of several parts in time order; on equal times
    the earlier part's item first, as the per-user ``merged`` does."""
    train, valid = Ragged.from_rows([np.array([1, 2]), np.array([4])]), Ragged.from_rows([np.array([3]), np.array([5])])
    times = {"train": Ragged(np.array([5, 7, 9]), train.offsets), "valid": Ragged(np.array([5, 1]), valid.offsets)}
    index = IndexedSplit(np.array(["a", "b"]), {"train": train, "valid": valid}, times, np.zeros(6, dtype=bool))
    merged = index.merged_rows(np.array([1, 0]), ("train", "valid"))
    assert [r.tolist() for r in merged] == [[5, 4], [1, 3, 2]]
    assert [index.merged(u, ("train", "valid")).tolist() for u in (1, 0)] == [[5, 4], [1, 3, 2]]
