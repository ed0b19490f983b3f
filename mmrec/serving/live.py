"""The live catalogue: the exported bundle as an immutable base, plus every add and delete since.

Adds and deletes are records in one SQLite database in WAL mode (Python's standard library), shared
by every worker process of a host. SQLite was chosen over LMDB or LanceDB because it needs no
extra package, its transactions serialise writers across processes by its own file locking, and
a committed transaction survives a kill -9 of any process (``synchronous=FULL``). A write is
acknowledged only after its transaction commits, so an acknowledged write is never lost and an
unacknowledged one is never half there.

Each worker holds the catalogue in memory (arrays that grow by doubling, so an add costs O(1)
amortised) with its own ANN index, and applies the records it has not seen yet (``sync``, one
indexed query when nothing changed) before every request: an item added through any worker is
recommendable, searchable and deletable through all of them at their next request. Deleted items
stay in the index and are filtered from results until a background rebuild drops them, past
``compact_after`` deletions, without blocking reads.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from mmrec.serving.index import build_index, search

log = logging.getLogger(__name__)
SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('add', 'delete')),
    item_id TEXT NOT NULL,
    item TEXT,        -- the item's metadata, JSON
    tensors BLOB,     -- safetensors bytes: embedding, features.<m>, present.<m>
    source TEXT       -- the add's request fields, JSON: what a successor bundle re-encodes the item from
);
CREATE INDEX IF NOT EXISTS changes_item ON changes (item_id, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class Conflict(ValueError):
    """An add of an item id that exists, or a delete of one that does not."""


class HandedOver(RuntimeError):
    """A write to a store whose items are being (or have been) carried over to a successor bundle."""


HANDOVER_TIMEOUT_S = 600.0  # a pending hand-over older than this was abandoned (its process died): writes resume


class Growable:
    """An (N, ...) array that grows by doubling: appending is O(1) amortised."""

    def __init__(self, initial: np.ndarray):
        self.data, self.size = np.array(initial), len(initial)

    def append(self, row: np.ndarray) -> int:
        if self.size == len(self.data):
            grown = np.zeros((max(16, 2 * len(self.data)), *self.data.shape[1:]), dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size] = row
        self.size += 1
        return self.size - 1

    @property
    def view(self) -> torch.Tensor:
        return torch.from_numpy(self.data[: self.size])


class LiveCatalogue:
    """The bundle's catalogue plus the store's changes, in memory, with an ANN index over it."""

    def __init__(
        self, catalogue: dict, index, index_kind: str, store: str | Path, bundle_id: str, compact_after: int = 1000
    ):
        self.items: list[dict] = list(catalogue["items"])
        self.positions = {item["item_id"]: i for i, item in enumerate(self.items)}
        self.base_size = len(self.items)
        self.embeddings = Growable(catalogue["embeddings"].float().numpy())
        self.features = {m: Growable(f.float().numpy()) for m, f in catalogue["features"].items()}
        self.present = {m: Growable(p.numpy()) for m, p in catalogue["present"].items()}
        self.deleted = Growable(catalogue["deleted"].numpy())
        self.index, self.index_kind, self.compact_after = index, index_kind, compact_after
        self.index_rows = Growable(np.arange(index.ntotal, dtype=np.int64))  # index row -> catalogue position
        self.deleted_in_index, self.num_deleted = 0, int(self.deleted.view.sum())
        self.lock = threading.RLock()
        self.applied = 0
        self.rebuilding: threading.Thread | None = None
        store = Path(store)
        if str(store) != ":memory:":  # sqlite's private in-memory database: a read-only use
            store.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(store), timeout=30.0, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        if "source" not in {row[1] for row in self.db.execute("PRAGMA table_info(changes)").fetchall()}:
            self.db.execute("ALTER TABLE changes ADD COLUMN source TEXT")  # a store written by mmrec < 0.2
        self.bind(store, bundle_id)
        self.sync()

    def bind(self, store: Path, bundle_id: str) -> None:
        """A store belongs to one bundle: its records were encoded by that bundle's model."""
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('bundle', ?)", (bundle_id,))
        (bound,) = self.db.execute("SELECT value FROM meta WHERE key = 'bundle'").fetchall()[0]
        if bound != bundle_id:
            raise ValueError(
                f"{store}: the live store holds the adds and deletes of another bundle ({bound}, this one is "
                f"{bundle_id}): its items were encoded by that model. Re-add them through this one and point "
                "serve.store at a new file, or serve the bundle they belong to"
            )

    # -- reading ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.items) - self.num_deleted

    def exists(self, item_id: str) -> bool:
        position = self.positions.get(item_id)
        return position is not None and not bool(self.deleted.data[position])

    def top(self, query: np.ndarray, k: int, exclude: set[int]) -> list[tuple[int, float]]:
        """Top k (position, exact score) for a (D,) query, skipping ``exclude`` and deleted items; other
        workers' adds and deletes are applied first, so every read through the index sees them."""
        self.sync()
        with self.lock:
            fetch = k + len(exclude) + self.deleted_in_index  # deleted vectors stay in the index until a rebuild
            _, rows = search(self.index, query[None], fetch)
            positions = self.index_rows.data[rows[0][rows[0] >= 0]]
            deleted = self.deleted.data
            kept = [int(p) for p in positions if int(p) not in exclude and not deleted[p]][:k]
            scores = (self.embeddings.view[kept] @ torch.from_numpy(query)).tolist() if kept else []
        return sorted(zip(kept, scores), key=lambda t: -t[1])

    # -- applying the store's records --------------------------------------------------------------
    def sync(self) -> None:
        """Apply every record this process has not seen yet (cheap when there is none)."""
        # One connection per process, shared by its threads: every statement runs under the lock and is
        # read to the end, so no statement is open on the connection while another thread commits.
        with self.lock:
            (latest,) = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchall()[0]
            if latest <= self.applied:
                return
            rows = self.db.execute(
                "SELECT seq, op, item_id, item, tensors FROM changes WHERE seq > ? ORDER BY seq", (self.applied,)
            ).fetchall()
            for seq, op, item_id, item, tensors in rows:
                if op == "add":
                    self._apply_add(json.loads(item), load_tensors(tensors))
                else:
                    self._apply_delete(item_id)
                self.applied = seq
        self._maybe_compact()

    def _apply_add(self, item: dict, tensors: dict[str, torch.Tensor]) -> None:
        position = self.embeddings.append(tensors["embedding"].numpy())
        for m in self.features:
            self.features[m].append(tensors[f"features.{m}"].numpy())
            self.present[m].append(tensors[f"present.{m}"].numpy())
        self.deleted.append(np.bool_(False))
        self.items.append(item)
        self.positions[item["item_id"]] = position
        self.index.add(tensors["embedding"].numpy()[None])
        self.index_rows.append(np.int64(position))

    def _apply_delete(self, item_id: str) -> None:
        position = self.positions[item_id]
        if not self.deleted.data[position]:
            self.deleted.data[position] = True
            self.num_deleted += 1
            self.deleted_in_index += 1

    # -- writing ---------------------------------------------------------------------------------
    def _last_op(self, item_id: str) -> str | None:
        rows = self.db.execute(
            "SELECT op FROM changes WHERE item_id = ? ORDER BY seq DESC LIMIT 1", (item_id,)
        ).fetchall()
        return rows[0][0] if rows else None

    def _exists_in_store(self, item_id: str) -> bool:
        last = self._last_op(item_id)
        return (
            last == "add"
            if last is not None
            else item_id in self.positions and self.positions[item_id] < self.base_size
        )

    def add(self, item: dict, embedding: torch.Tensor, features: dict, present: dict, source: dict) -> None:
        """Record an add (durably, before returning), then apply it here. Conflict if the id exists.
        ``source``: the request's fields, from which a successor bundle's model re-encodes the item."""
        tensors = {"embedding": embedding.float().reshape(-1).contiguous()}
        for m in self.features:
            tensors[f"features.{m}"] = features[m].float().reshape(-1).contiguous()
            tensors[f"present.{m}"] = present[m].reshape(-1).contiguous()
        self._write("add", item["item_id"], json.dumps(item), save_tensors(tensors), json.dumps(source))

    def delete(self, item_id: str) -> None:
        self._write("delete", item_id, None, None, None)

    def _write(self, op: str, item_id: str, item: str | None, tensors: bytes | None, source: str | None) -> None:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")  # the store's own lock serialises writers of every process
            try:
                handover = self._handover()
                if handover is not None:
                    raise HandedOver(
                        f"the service is switching to bundle {handover['manifest_sha256'][:12]}: "
                        "writes resume on it in a few seconds; retry"
                    )
                exists = self._exists_in_store(item_id)
                if op == "add" and exists:
                    raise Conflict(f"item {item_id} exists already")
                if op == "delete" and not exists:
                    raise Conflict(f"unknown item id(s) ['{item_id}']")
                self.db.execute(
                    "INSERT INTO changes (op, item_id, item, tensors, source) VALUES (?, ?, ?, ?, ?)",
                    (op, item_id, item, tensors, source),
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        self.sync()

    # -- handing over to a successor bundle ----------------------------------------------------------
    def _handover(self) -> dict | None:
        """The successor this store's writes now belong to: a finished hand-over, or a pending one that
        is still fresh (None otherwise). Run inside a transaction, or under the lock."""
        successor = successor_of(self.db)
        if successor is None or successor["ready"] or time.time() - successor["since"] < HANDOVER_TIMEOUT_S:
            return successor
        return None

    def begin_handover(self, successor: dict) -> None:
        """Record ``successor`` (bundle, store, manifest_sha256) as pending: from this commit on, every
        worker refuses writes here, so the changes read next are all there will be."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                current = self._handover()
                if current is not None and current["manifest_sha256"] != successor["manifest_sha256"]:
                    raise HandedOver(
                        f"a switch to bundle {current['manifest_sha256'][:12]} is under way or done; "
                        "serve that bundle, or wait for the pending switch to finish or time out"
                    )
                value = json.dumps({**successor, "ready": False, "since": time.time()})
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('successor', ?)", (value,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def finish_handover(self) -> None:
        """Mark the pending successor ready: every worker switches to it at its next request."""
        with self.lock:
            successor = successor_of(self.db)
            self.db.execute(
                "UPDATE meta SET value = ? WHERE key = 'successor'", (json.dumps({**successor, "ready": True}),)
            )

    def final_states(self) -> dict[str, tuple[str, dict | None]]:
        """Item id -> (its last op, the add's request fields or None), over every record in the store."""
        with self.lock:
            rows = self.db.execute("SELECT op, item_id, source FROM changes ORDER BY seq").fetchall()
        return {item_id: (op, json.loads(source) if source else None) for op, item_id, source in rows}

    # -- compaction ------------------------------------------------------------------------------
    def _maybe_compact(self) -> None:
        if self.deleted_in_index >= self.compact_after and self.rebuilding is None:
            self.rebuilding = threading.Thread(target=self.compact, name="mmrec-index-rebuild", daemon=True)
            self.rebuilding.start()

    def compact(self) -> None:
        """Rebuild the index without deleted items, off the request path; reads go on meanwhile."""
        try:
            with self.lock:
                live = np.flatnonzero(~self.deleted.data[: self.deleted.size])
                vectors = self.embeddings.data[live].copy()
                snapshot = self.embeddings.size
            index = build_index(vectors, self.index_kind)
            with self.lock:
                rows = Growable(live.astype(np.int64))
                later = np.arange(snapshot, self.embeddings.size)  # added while the index was being built
                if len(later):
                    index.add(self.embeddings.data[later])
                    for position in later:
                        rows.append(np.int64(position))
                in_index = self.deleted.data[rows.data[: rows.size]]
                self.index, self.index_rows, self.deleted_in_index = index, rows, int(in_index.sum())
            log.info("index rebuilt: %d items, %d deleted ones dropped", index.ntotal, snapshot - len(live))
        finally:
            self.rebuilding = None


def successor_of(db: sqlite3.Connection) -> dict | None:
    """The successor recorded in a store (bundle, store, manifest_sha256, ready, since), or None."""
    rows = db.execute("SELECT value FROM meta WHERE key = 'successor'").fetchall()
    return json.loads(rows[0][0]) if rows else None
