"""Swapping in a newly exported bundle without stopping the service.

A switch has three steps, each a committed record in the current bundle's live store, so that every
worker of the host (and any worker that restarts) agrees on what is served:

1. ``begin``: the successor (its bundle, its store, its manifest SHA-256) is recorded as pending. From
   then on every worker refuses writes to the current store (503, retry), so the live items read
   next are all there will be. Reads go on from the current bundle throughout.
2. The live items are carried over: each add still standing is re-encoded by the successor's model
   from the request fields it was added with, and each delete of an item the successor holds is
   repeated there. An item that cannot be re-encoded (added before mmrec kept request fields, or its
   media gone) is refused with its reason, never silently dropped.
3. ``finish``: the successor is marked ready. Every worker loads it in the background at its next
   request, serving the current bundle until it is loaded, then answers from the successor.

A switch that dies before step 3 is abandoned after ``HANDOVER_TIMEOUT_S`` (writes resume on the
current bundle); running the same switch again resumes it (items carried already are skipped).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmrec.serving.live import successor_of
from mmrec.serving.recommender import Recommender, RequestError

log = logging.getLogger(__name__)
Loader = Callable[[str, str | None, str | None], Recommender]  # (bundle, store, manifest SHA-256) -> recommender


@dataclass
class Handover:
    """What a switch carried over, and what it refused (item id -> reason)."""

    bundle: str
    manifest_sha256: str
    carried: int = 0
    deleted: int = 0
    refused: dict[str, str] = field(default_factory=dict)


def default_store(bundle: str | Path) -> Path:
    return Path(bundle) / "live" / "store.sqlite"


def hand_over(current: Recommender, successor: Recommender, store: str | Path) -> Handover:
    """Carry ``current``'s live items over to ``successor`` (whose store is ``store``) and mark it
    ready; the three steps of the module docstring."""
    report = Handover(str(successor.bundle.root), successor.bundle.identity)
    target = {"bundle": report.bundle, "store": str(store), "manifest_sha256": report.manifest_sha256}
    current.live.begin_handover(target)
    for item_id, (op, source) in current.live.final_states().items():
        if op == "delete":
            if successor.live.exists(item_id):
                successor.delete_item(item_id)
                report.deleted += 1
        elif successor.live.exists(item_id):
            continue  # carried by an earlier run of this switch, or in the successor's own catalogue
        elif source is None:
            report.refused[item_id] = "added before mmrec kept the request fields of adds: add it again"
        else:
            try:
                successor.add_item(source)
                report.carried += 1
            except RequestError as err:
                report.refused[item_id] = str(err)
    current.live.finish_handover()
    log.info(
        "switched to bundle %s: %d items carried over, %d deletes repeated, %d refused",
        report.manifest_sha256[:12],
        report.carried,
        report.deleted,
        len(report.refused),
    )
    return report


def ready_successor(store: str | Path) -> dict | None:
    """The ready successor recorded in ``store``, read without loading anything (None if none)."""
    if not Path(store).is_file():
        return None
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30.0)
    try:
        successor = successor_of(db)
    except sqlite3.OperationalError:  # a store without its tables yet
        successor = None
    finally:
        db.close()
    return successor if successor and successor["ready"] else None


def latest(bundle: str, store: str | None) -> tuple[str, str | None, str | None]:
    """(bundle, store, manifest SHA-256 or None) at the end of the chain of finished switches that
    starts at ``bundle`` (a worker that restarts with the original settings serves the latest)."""
    expected, seen = None, set()
    while True:
        successor = ready_successor(store or default_store(bundle))
        if successor is None or successor["bundle"] in seen:
            return bundle, store, expected
        seen.add(bundle)
        bundle, store, expected = successor["bundle"], successor["store"], successor["manifest_sha256"]


class Serving:
    """The recommender a worker answers with now, swapped for its successor without a stop.
    ``load``: how this worker builds a recommender (default: ``current``'s media root, query
    modality and compaction threshold, mmrec's allowlist of config targets)."""

    def __init__(self, current: Recommender, load: Loader | None = None):
        self._current, self._load = current, load or same_settings(current)
        self._loading: threading.Thread | None = None
        self._lock = threading.Lock()
        self.load_error: str | None = None

    @property
    def current(self) -> Recommender:
        """The recommender to answer with; starts loading the successor when one is ready."""
        successor = successor_of_live(self._current)
        if successor is not None and successor["ready"] and successor["bundle"] != str(self._current.bundle.root):
            with self._lock:
                if self._loading is None and self.load_error is None:
                    self._loading = threading.Thread(
                        target=self._switch, args=(successor,), name="mmrec-bundle-switch", daemon=True
                    )
                    self._loading.start()
        return self._current

    def _switch(self, successor: dict) -> None:
        try:
            loaded = self._load(successor["bundle"], successor["store"], successor["manifest_sha256"])
        except Exception as err:  # keep serving the current bundle's reads; say why writes are refused
            self.load_error = f"{type(err).__name__}: {err}"
            log.exception("the successor bundle %s cannot be loaded in this worker", successor["bundle"])
            return
        finally:
            self._loading = None
        self.adopt(loaded)

    def adopt(self, successor: Recommender) -> None:
        with self._lock:
            self._current = successor
        log.info("now serving bundle %s", successor.bundle.identity[:12])

    def switch(self, bundle: str, store: str | None = None) -> Handover:
        """Load ``bundle``, carry the live items over to it and serve it (the admin route)."""
        if Path(bundle).resolve() == self._current.bundle.root.resolve():
            raise RequestError("that bundle is the one being served", 409)
        store = store or str(default_store(bundle))
        successor = self._load(bundle, store, None)
        report = hand_over(self._current, successor, store)
        self.adopt(successor)
        return report


def same_settings(current: Recommender) -> Loader:
    from mmrec.serving.bundle import Bundle

    def load(bundle: str, store: str | None, manifest_sha256: str | None) -> Recommender:
        return Recommender(
            Bundle.load(bundle, expect_manifest_sha256=manifest_sha256),
            current.media_root,
            current.query_modality,
            store,
            current.live.compact_after,
        )

    return load


def successor_of_live(recommender: Recommender) -> dict | None:
    with recommender.live.lock:
        return successor_of(recommender.live.db)
