"""Ragged: the flat CSR arrays of the per-user index."""

import numpy as np

from mmrec.data.csr import Ragged


def test_ragged_rows_entries_and_files(tmp_path):
    """Ragged: rows by offsets (empty ones included), the row and position of every flat entry, and a
    save/open round trip that memory-maps the arrays."""
    rows = [np.array([4, 5]), np.array([], dtype=np.int64), np.array([6]), np.array([7, 8, 9])]
    ragged = Ragged.from_rows(rows)
    assert [r.tolist() for r in ragged] == [r.tolist() for r in rows] and len(ragged) == 4
    assert [ragged.entry(i) for i in range(6)] == [(0, 0), (0, 1), (2, 0), (3, 0), (3, 1), (3, 2)]
    assert ragged.row_of_entries().tolist() == [0, 0, 2, 3, 3, 3]
    same = Ragged.from_sorted(np.array([0, 0, 2, 3, 3, 3]), ragged.values, 4)
    assert same.offsets.tolist() == ragged.offsets.tolist() == [0, 2, 2, 3, 6]
    ragged.save(tmp_path, "x")
    opened = Ragged.open(tmp_path, "x")
    assert isinstance(opened.values, np.memmap) and [r.tolist() for r in opened] == [r.tolist() for r in rows]
