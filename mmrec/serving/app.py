"""The HTTP service (FastAPI): recommend, search, similar items, add/delete items, health, metrics.

Privacy by design: the user's history comes with each request and is neither stored nor logged
(access logs carry the path and status only); the service holds the catalogue and the model.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mmrec.serving.recommender import Recommender, RequestError

log = logging.getLogger(__name__)
MAX_K = 1000
# New item ids: letters, digits and . _ : - , starting with a letter or digit, at most 128 characters
# (so an id is always one safe folder name: no '/', no '..', no empty id).
ITEM_ID_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def check_item_id(item_id: str) -> str:
    if not ITEM_ID_RULE.fullmatch(item_id):
        raise RequestError(
            f"item_id {item_id[:40]!r} is not allowed: use 1-128 letters, digits and . _ : - , starting with a "
            "letter or digit",
            422,
        )
    return item_id


class RecommendRequest(BaseModel):
    history: list[str] = Field(default_factory=list, max_length=10_000, description="item ids, oldest first")
    user_id: str | None = Field(None, description="optional: only used when the model has user-ID embeddings")
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = True
    explain: bool = False


class SearchRequest(BaseModel):
    query: str = Field(..., min_length=1, max_length=2000)
    k: int = Field(10, ge=1, le=MAX_K)


class NewItem(BaseModel):
    """A new item: its id and the fields the model's modalities read (``GET /health`` lists them:
    text columns, media paths relative to the service's media root, precomputed vectors)."""

    model_config = ConfigDict(extra="allow")
    item_id: str = Field(..., min_length=1, max_length=128)


def create_app(recommender: Recommender, max_upload_bytes: int = 50 * 1024 * 1024) -> FastAPI:
    app = FastAPI(title="mmrec", description="Multimodal content-based recommendations")
    registry = CollectorRegistry()
    requests = Counter(
        "mmrec_requests_total", "Requests by endpoint and status", ["endpoint", "status"], registry=registry
    )
    latency = Histogram(
        "mmrec_request_seconds",
        "Request latency by endpoint",
        ["endpoint"],
        registry=registry,
        buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    )

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # never crash: an unexpected error is a 500 with no request content logged
            log.exception("internal error on %s", request.url.path)
            response = JSONResponse({"detail": "internal error"}, status_code=500)
        route = request.scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        requests.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError):
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.get("/health")
    def health() -> dict:
        manifest = recommender.bundle.manifest
        return {
            "status": "ok",
            "items": recommender.size,
            "index": manifest["index"],
            "modalities": manifest["modalities"],
            "item_fields": recommender.fields,
            "query_modality": recommender.query_modality,
        }

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/recommend")
    def recommend(body: RecommendRequest) -> dict:
        items = recommender.recommend(body.history, body.k, body.exclude_seen, body.user_id, body.explain)
        return {"items": [i.as_dict() for i in items]}

    @app.post("/search")
    def search(body: SearchRequest) -> dict:
        return {"items": [i.as_dict() for i in recommender.search(body.query, body.k)]}

    @app.get("/items/{item_id}/similar")
    def similar(item_id: str, k: int = 10) -> dict:
        if not 1 <= k <= MAX_K:
            raise HTTPException(422, f"k must be between 1 and {MAX_K}, got {k}")
        return {"items": [i.as_dict() for i in recommender.similar(item_id, k)]}

    @app.post("/items", status_code=201)
    def add_item(item: NewItem) -> dict:
        check_item_id(item.item_id)
        return recommender.add_item(item.model_dump()).as_dict()

    @app.post("/items/upload", status_code=201)
    async def upload_item(request: Request) -> dict:
        """A new item as a multipart form: its fields, and a media file for each media field (image,
        video, audio, as the model reads them). Files are staged in a temporary folder under the
        media root and moved to ``uploads/<item_id>/`` only once the item is accepted; nothing of a
        refused request stays on disk."""
        form = await request.form()
        item_id = check_item_id(str(form.get("item_id") or ""))
        fields, files = {"item_id": item_id}, {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[name] = value
            elif name != "item_id":
                fields[name] = value
        bad = sorted(n for n in files if recommender.fields.get(n) not in ("path", "paths"))
        if bad:
            raise RequestError(
                f"file field(s) {bad} are not media fields of this model ({sorted(recommender.fields)})", 422
            )
        recommender.media_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=recommender.media_root))
        try:
            for name, upload in files.items():
                data = await upload.read(max_upload_bytes + 1)
                if len(data) > max_upload_bytes:
                    raise HTTPException(413, f"{name} upload is over the limit of {max_upload_bytes:,} bytes")
                target = staging / f"{name}{Path(upload.filename or name).suffix.lower()[:8]}"
                target.write_bytes(data)
                relative = str(target.relative_to(recommender.media_root))
                fields[name] = [relative] if recommender.fields[name] == "paths" else relative
            result = await run_in_threadpool(recommender.add_item, fields)
            final = recommender.media_root / "uploads" / item_id
            if final.exists():
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(final)
            return result.as_dict()
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @app.delete("/items/{item_id}")
    def delete_item(item_id: str) -> dict:
        recommender.delete_item(item_id)
        return {"deleted": item_id}

    return app
