"""The recommender behind the service: recommend from a history, search by text, similar items,
explanations, and new items embedded and indexed at once (cold start). Keeps no user data: the
history comes with every request and is not stored or logged."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmrec.build import featurizer_factories
from mmrec.data.features import featurize_items
from mmrec.data.schema import Catalogue
from mmrec.modalities import FIELD_KINDS, modality_of
from mmrec.serving.batching import QueryBatcher
from mmrec.serving.bundle import Bundle, request_fields, stored_fields
from mmrec.serving.live import Conflict, HandedOver, LiveCatalogue

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request that cannot be served as asked (the service answers 4xx with this message)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Scored:
    item_id: str
    score: float
    title: str
    explanation: dict | None = None

    def as_dict(self) -> dict:
        out = {"item_id": self.item_id, "score": round(self.score, 6), "title": self.title}
        if self.explanation is not None:
            out["explanation"] = self.explanation
        return out


class Recommender:
    """Serves one bundle. ``media_root`` is where the media of new items are read from (paths in
    requests are relative to it and must stay inside it). ``query_modality``: the modality search
    queries are embedded through (None: the one modality that can, if there is exactly one)."""

    def __init__(
        self,
        bundle: Bundle,
        media_root: str | Path | None = None,
        query_modality: str | None = None,
        store: str | Path | None = None,
        compact_after: int = 1000,
    ):
        """``store``: the SQLite file of the live adds and deletes, shared by every worker (default
        BUNDLE/live/store.sqlite); ``compact_after``: deleted items that trigger an index rebuild."""
        self.bundle, self.model = bundle, bundle.model
        self.media_root = Path(media_root) if media_root else bundle.root / "uploads"
        store = Path(store) if store else bundle.root / "live" / "store.sqlite"
        self.live = LiveCatalogue(
            bundle.catalogue, bundle.index, bundle.manifest["index"], store, bundle.identity, compact_after
        )
        self.user_positions = {u: i for i, u in enumerate(bundle.users)}
        self.num_id_items = bundle.manifest["sizes"]["num_items"]  # rows of the item-ID table
        self.history_length = bundle.manifest["sizes"]["history_length"]
        self.featurizers = featurizer_factories(bundle.encoders)
        self.modalities = {m: modality_of(c, f"encoder.{m}") for m, c in bundle.encoders.items()}
        self.fields = request_fields(bundle.encoders)
        self.query_modality = choose_query_modality(self.modalities, query_modality)
        self._query_featurizer = None
        self.queries = QueryBatcher(self.embed_queries)

    # -- lookups ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        self.live.sync()
        return self.live.size

    @property
    def items(self) -> list[dict]:
        return self.live.items

    @property
    def positions(self) -> dict[str, int]:
        """Item id -> catalogue position (deleted items keep theirs)."""
        return self.live.positions

    def _known(self, item_ids: list[str]) -> list[int]:
        self.live.sync()  # another worker's adds and deletes first
        unknown = [i for i in item_ids if not self.live.exists(i)]
        if unknown:
            raise RequestError(
                f"unknown item id(s) {unknown[:10]}" + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""),
                404,
            )
        return [self.live.positions[i] for i in item_ids]

    def _top(self, query: np.ndarray, k: int, exclude: set[int]) -> list[tuple[int, float]]:
        return self.live.top(query, k, exclude)

    def _scored(self, results: list[tuple[int, float]]) -> list[Scored]:
        items = self.live.items
        return [Scored(items[p]["item_id"], s, items[p].get("title", "")) for p, s in results]

    # -- users -----------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_user(self, history: list[int], user_id: str | None = None) -> torch.Tensor:
        """(D,) the user from their history (oldest first; the last ``history_length`` count)."""
        recent = history[max(0, len(history) - self.history_length) :]  # history_length=0: none
        n = self.history_length
        items = torch.zeros(1, n, dtype=torch.long)
        mask = torch.zeros(1, n, dtype=torch.bool)
        if recent:
            items[0, -len(recent) :], mask[0, -len(recent) :] = torch.tensor(recent), True
        emb = self.live.embeddings.view[items]  # (1, N, D)
        user = torch.tensor([self.user_positions.get(user_id, -1) if user_id is not None else -1])
        return self.model.embed_users(emb, mask, user)[0]

    def recommend(
        self,
        history: list[str],
        k: int = 10,
        exclude_seen: bool = True,
        user_id: str | None = None,
        explain: bool = False,
    ) -> list[Scored]:
        positions = self._known(history)
        user = self.embed_user(positions, user_id)
        results = self._scored(self._top(user.numpy(), k, set(positions) if exclude_seen else set()))
        if explain:
            for r in results:
                r.explanation = self.explain(user, positions, self.live.positions[r.item_id], user_id)
        return results

    # -- explanations ----------------------------------------------------------------------------
    @torch.no_grad()
    def explain(self, user: torch.Tensor, history: list[int], position: int, user_id: str | None = None) -> dict:
        """Why ``position`` scored as it did: per modality, the score minus the score with that modality
        masked out (exact: the fusion takes missing modalities); per history item, the score minus the
        score without that item in the history (the five largest)."""
        live = self.live
        score = float(user @ live.embeddings.view[position])
        modalities = {}
        present = {m: bool(p.data[position]) for m, p in live.present.items()}
        for m in [m for m, p in present.items() if p]:
            masked = self._item_embedding(position, drop=m)
            modalities[m] = round(score - float(user @ masked), 6) if masked is not None else None
        if (
            self.model.item_tower.id_embedding is not None
            and position < self.num_id_items
            and bool(self.model.item_tower.trained_ids[position])
        ):
            modalities["item_id"] = round(score - float(user @ self._item_embedding(position, use_ids=False)), 6)
        contributions = []
        recent = history[max(0, len(history) - self.history_length) :]  # history_length=0: none
        for j, h in enumerate(recent):
            without = self.embed_user(recent[:j] + recent[j + 1 :], user_id)
            contributions.append(
                (live.items[h]["item_id"], round(score - float(without @ live.embeddings.view[position]), 6))
            )
        contributions.sort(key=lambda t: -t[1])
        return {
            "score": round(score, 6),
            "modalities": modalities,
            "history": [{"item_id": i, "contribution": c} for i, c in contributions[:5]],
        }

    def _item_embedding(self, position: int, drop: str | None = None, use_ids: bool = True) -> torch.Tensor | None:
        """The item's embedding recomputed from its stored encoder outputs, optionally without ``drop``."""
        features = {m: f.view[position : position + 1] for m, f in self.live.features.items()}
        present = {m: p.view[position : position + 1].clone() for m, p in self.live.present.items()}
        if drop is not None:
            present[drop][:] = False
            if (
                not any(bool(p.any()) for p in present.values())
                and self.model.item_tower.id_embedding is None
                and self.model.item_tower.empty is None
            ):
                return None  # nothing left to embed it from
        index = torch.tensor([min(position, self.num_id_items - 1)])
        ids = use_ids and position < self.num_id_items
        return self.model.embed_items(features, present, index, use_ids=ids).embedding[0]

    # -- search and similar items ----------------------------------------------------------------
    @torch.no_grad()
    def embed_queries(self, queries: list[str]) -> torch.Tensor:
        """(Q, D) text queries through the query modality's encoder and the item tower, only it present."""
        m = self.query_modality
        if self._query_featurizer is None:
            self._query_featurizer = self.featurizers[m](catalogue=self.new_items([{"item_id": "query"}]))
        ids, mask = self.modalities[m].query_inputs(self._query_featurizer, queries)
        q = len(queries)
        features = {m: self.model.encoders[m](ids, mask, torch.ones(q, dtype=torch.bool))}
        present = {m: torch.ones(q, dtype=torch.bool)}
        for other, encoder in self.model.encoders.items():
            if other != m:
                features[other], present[other] = torch.zeros(q, encoder.output_dim), torch.zeros(q, dtype=torch.bool)
        return self.model.embed_items(features, present, torch.zeros(q, dtype=torch.long), use_ids=False).embedding

    def search(self, query: str, k: int = 10) -> list[Scored]:
        """The items nearest a text query. Concurrent searches share one pass through the encoder."""
        if self.query_modality is None:
            raise RequestError("this model has no modality that embeds text queries: search is not available", 400)
        if not query.strip():
            raise RequestError("empty query", 400)
        return self._scored(self._top(self.queries.embed(query).numpy(), k, set()))

    def similar(self, item_id: str, k: int = 10) -> list[Scored]:
        (position,) = self._known([item_id])
        vector = self.live.embeddings.view[position].numpy()
        return self._scored(self._top(vector, k, {position}))

    # -- catalogue changes -----------------------------------------------------------------------
    def item_row(self, item: dict) -> dict:
        """The fields of a new item, checked against what the bundle's modalities read."""
        unknown = sorted(set(item) - set(self.fields))
        if unknown:
            raise RequestError(f"unknown item field(s) {unknown}: this model reads {sorted(self.fields)}", 422)
        row = {}
        for name, value in item.items():
            kind = self.fields[name]
            ok = {
                "text": isinstance(value, str),
                "path": isinstance(value, str),
                "paths": isinstance(value, list) and all(isinstance(v, str) for v in value),
                "vector": isinstance(value, list)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value),
            }[kind]
            if not ok:
                raise RequestError(f"item field '{name}' must be {FIELD_KINDS[kind]}", 422)
            for path in [value] if kind == "path" else value if kind == "paths" else []:
                if "\0" in path or path.startswith(("/", "\\")) or ".." in Path(path).parts:
                    raise RequestError(
                        f"item field '{name}': media paths are relative to the media root, without '..'", 422
                    )
            row[name] = "|".join(value) if kind == "paths" else value
        return row

    def new_items(self, rows: list[dict]) -> Catalogue:
        """A catalogue of new items' rows, media paths under ``media_root``."""
        return Catalogue.from_rows("request", self.media_root, rows)

    @torch.no_grad()
    def add_item(self, item: dict, source: dict | None = None) -> Scored:
        """Encode a new item with the bundle's encoders, fuse it and record it in the live store: once
        this returns, the add is durable and every worker serves the item. Media paths are relative to
        ``media_root``; a file that cannot be decoded is refused (422). ``source``: the fields stored to
        re-encode the item from when a new bundle takes over (default ``item``; an upload gives the
        paths its files are moved to)."""
        item_id = str(item.get("item_id", "")).strip()
        if not item_id:
            raise RequestError("item_id is required", 422)
        self.live.sync()
        if self.live.exists(item_id):  # checked again inside the store's transaction
            raise RequestError(f"item {item_id} exists already", 409)
        row = self.item_row(item)
        catalogue = self.new_items([row])
        try:
            featurizers = {m: make(catalogue=catalogue) for m, make in self.featurizers.items()}
        except ValueError as err:  # e.g. a vector of the wrong length
            raise RequestError(str(err), 422) from err
        batch = featurize_items(featurizers, [0])
        if batch.problems:
            raise RequestError("media cannot be used: " + "; ".join(self.without_root(p) for p in batch.problems), 422)
        if not any(bool(p.any()) for p in batch.present.values()):
            raise RequestError(f"item {item_id} has none of the modalities {sorted(featurizers)}", 422)
        features = self.model.encode(batch.inputs, batch.input_mask, batch.present)
        embedding = self.model.embed_items(
            features, batch.present, torch.zeros(1, dtype=torch.long), use_ids=False
        ).embedding
        stored = {f: str(row.get(f, "")) for f in stored_fields(self.fields)}
        try:
            self.live.add(
                stored,
                embedding[0],
                {m: f[0] for m, f in features.items()},
                {m: p[0] for m, p in batch.present.items()},
                source=source or item,
            )
        except Conflict as err:
            raise RequestError(str(err), 409) from err
        except HandedOver as err:
            raise RequestError(str(err), 503) from err
        return Scored(item_id, 1.0, stored.get("title", ""))

    def delete_item(self, item_id: str) -> None:
        self._known([item_id])
        try:
            self.live.delete(item_id)
        except Conflict as err:  # deleted meanwhile by another worker
            raise RequestError(str(err), 404) from err
        except HandedOver as err:
            raise RequestError(str(err), 503) from err

    def without_root(self, problem: str) -> str:
        """A media problem without the server's paths: relative to the media root."""
        return problem.replace(str(self.media_root.resolve()) + "/", "").replace(str(self.media_root) + "/", "")


def choose_query_modality(modalities: dict, chosen: str | None) -> str | None:
    """``chosen`` (checked), or the one modality that embeds queries; several need ``serve.query_modality``."""
    able = sorted(m for m, modality in modalities.items() if modality.embeds_queries)
    if chosen is not None:
        if chosen not in able:
            raise ValueError(
                f"serve.query_modality={chosen!r}: expected one of the modalities that embed queries {able}"
            )
        return chosen
    if len(able) > 1:
        raise ValueError(f"modalities {able} can all embed search queries: choose one with serve.query_modality=NAME")
    return able[0] if able else None
