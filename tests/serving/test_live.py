"""The live catalogue's store: shared by workers, durable across kill -9, compacted without changing results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmrec.serving.index import build_index
from mmrec.serving.live import Conflict, Growable, LiveCatalogue

DIM = 8


def base_catalogue(n: int = 20) -> dict:
    embeddings = F.normalize(torch.randn(n, DIM, generator=torch.Generator().manual_seed(0)), dim=-1)
    return {
        "items": [{"item_id": f"b{i}", "title": f"base {i}"} for i in range(n)],
        "embeddings": embeddings,
        "features": {"text": torch.zeros(n, 4)},
        "present": {"text": torch.ones(n, dtype=torch.bool)},
        "deleted": torch.zeros(n, dtype=torch.bool),
    }


def worker(store, compact_after: int = 1000, kind: str = "flat") -> LiveCatalogue:
    """What one serving process holds: the bundle's catalogue, its own index, the shared store."""
    cat = base_catalogue()
    return LiveCatalogue(cat, build_index(cat["embeddings"].numpy(), kind), kind, store, "bundle-1", compact_after)


def add(live: LiveCatalogue, item_id: str, seed: int) -> torch.Tensor:
    vector = F.normalize(torch.randn(DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)
    item = {"item_id": item_id, "title": item_id}
    live.add(item, vector, {"text": torch.ones(4)}, {"text": torch.tensor(True)}, source=item)
    return vector


def test_two_workers_see_each_others_adds_and_deletes(tmp_path):
    store = tmp_path / "store.sqlite"
    a, b = worker(store), worker(store)
    vector = add(a, "new-a", 1)
    add(b, "new-b", 2)
    b.sync()
    assert b.exists("new-a") and a.exists("new-b") is False  # a has not synced yet
    a.sync()
    assert a.exists("new-b") and a.size == b.size == 22
    assert b.top(vector.numpy(), 1, set())[0][0] == b.positions["new-a"]  # searchable in the other worker
    with pytest.raises(Conflict, match="item new-a exists already"):
        add(b, "new-a", 3)  # refused inside the store's transaction, whichever worker took the first
    b.delete("b3")
    a.sync()
    assert not a.exists("b3") and a.size == 21
    with pytest.raises(Conflict, match="unknown item id"):
        a.delete("b3")
    add(a, "b3", 4)  # a deleted id may be added again
    b.sync()
    assert b.exists("b3") and b.size == 22
    with pytest.raises(ValueError, match="holds the adds and deletes of another bundle"):
        LiveCatalogue(base_catalogue(), build_index(base_catalogue()["embeddings"].numpy()), "flat", store, "bundle-2")


def test_adds_grow_in_amortised_constant_time():
    rows = Growable(np.zeros((1, 2), dtype=np.float32))
    capacities = set()
    for i in range(1000):
        rows.append(np.full(2, i, dtype=np.float32))
        capacities.add(len(rows.data))
    assert rows.size == 1001 and len(capacities) <= 8 and rows.view[-1].tolist() == [999.0, 999.0]


def test_compaction_drops_deleted_items_and_keeps_results(tmp_path):
    live = worker(tmp_path / "store.sqlite", compact_after=6, kind="hnsw")
    for i in range(6):
        add(live, f"n{i}", 10 + i)
    for i in range(0, 12, 2):
        live.delete(f"b{i}")
    if live.rebuilding is not None:
        live.rebuilding.join(timeout=30)
    assert live.index.ntotal == 26 - 6 and live.deleted_in_index == 0
    fresh = worker(tmp_path / "store.sqlite", compact_after=10_000)  # a new process: its index from the store
    query = F.normalize(torch.randn(DIM, generator=torch.Generator().manual_seed(99)), dim=-1).numpy()
    alive = [p for p in range(len(live.items)) if not live.deleted.data[p]]
    exact = sorted(alive, key=lambda p: -float(live.embeddings.view[p] @ torch.from_numpy(query)))[:5]
    assert [p for p, _ in live.top(query, 5, set())] == exact == [p for p, _ in fresh.top(query, 5, set())]


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_live import add, worker
    live = worker({store!r})
    for i in range(10_000):
        add(live, f"w{{i}}", i)
        print(f"w{{i}}", flush=True)  # acknowledged: the add has committed
    """
)


def test_a_writer_killed_mid_burst_loses_no_acknowledged_add(tmp_path):
    store = tmp_path / "store.sqlite"
    code = WRITER.format(tests=os.path.dirname(__file__), store=str(store))
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    acknowledged = [writer.stdout.readline().strip() for _ in range(40)]
    writer.send_signal(signal.SIGKILL)
    acknowledged += [line.strip() for line in writer.stdout]  # what it printed before it died
    writer.wait(timeout=30)
    live = worker(store)
    assert all(live.exists(i) for i in acknowledged) and len(acknowledged) >= 40
    added = [i for i in live.positions if i.startswith("w")]
    assert len(added) in (len(acknowledged), len(acknowledged) + 1)  # at most the one in flight, whole
    assert live.index.ntotal == len(live.items) == 20 + len(added)


def test_a_search_in_one_worker_sees_the_other_workers_add_without_another_request(tmp_path):
    store = tmp_path / "store.sqlite"
    a, b = worker(store), worker(store)
    vector = add(a, "only-in-a", 5)
    top = b.top(vector.numpy(), 1, set())  # b has served nothing since the add
    assert top[0][0] == b.positions["only-in-a"]


def test_a_hand_over_refuses_writes_everywhere_until_abandoned(tmp_path, monkeypatch):
    import json
    import time

    import mmrec.serving.live as live_module
    from mmrec.serving.live import HandedOver

    store = tmp_path / "store.sqlite"
    one, two = worker(store), worker(store)
    add(one, "n1", 1)
    one.delete("b3")
    successor = {"bundle": "next", "store": "next.sqlite", "manifest_sha256": "f" * 64}
    one.begin_handover(successor)
    with pytest.raises(HandedOver, match="retry"):
        add(two, "n2", 2)  # another worker's write: refused, not lost
    with pytest.raises(HandedOver):
        two.begin_handover({**successor, "manifest_sha256": "e" * 64})  # a second, different switch
    assert one.final_states() == {"n1": ("add", {"item_id": "n1", "title": "n1"}), "b3": ("delete", None)}
    monkeypatch.setattr(live_module, "HANDOVER_TIMEOUT_S", 0.0)  # the switching process died: abandoned
    time.sleep(0.01)
    add(two, "n2", 2)
    one.begin_handover(successor)
    one.finish_handover()
    monkeypatch.setattr(live_module, "HANDOVER_TIMEOUT_S", 600.0)
    with pytest.raises(HandedOver):
        add(two, "n3", 3)  # a finished switch: the store's writes belong to the successor for good
    (value,) = one.db.execute("SELECT value FROM meta WHERE key = 'successor'").fetchone()
    assert json.loads(value)["ready"] is True


def test_a_store_written_before_request_fields_were_kept_opens_and_takes_adds(tmp_path):
    import sqlite3

    store = tmp_path / "store.sqlite"
    db = sqlite3.connect(store)
    db.executescript(
        "CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, item_id TEXT NOT NULL, "
        "item TEXT, tensors BLOB); CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
        "INSERT INTO changes (op, item_id) VALUES ('delete', 'b1');"
    )
    db.commit()
    db.close()
    live = worker(store)
    assert not live.exists("b1")  # its old record applies
    add(live, "n1", 1)
    assert live.final_states()["n1"][1] == {"item_id": "n1", "title": "n1"}
