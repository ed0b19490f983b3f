"""The HTTP service (FastAPI): recommend, search, similar items, add/delete items, health, metrics.

Privacy by design: the user's history comes with each request and is neither stored nor logged
(access logs carry the path and status only); the service holds the catalogue and the model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field

from mmrec.io import atomic_path
from mmrec.serving.recommender import Recommender, RequestError

log = logging.getLogger(__name__)
MAX_K = 1000


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
    item_id: str = Field(..., min_length=1, max_length=256)
    title: str = ""
    description: str = ""
    tags: str = ""
    image: list[str] = Field(default_factory=list, description="paths relative to the service's media root")
    video: str = ""
    audio: str = ""


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
        return recommender.add_item(item.model_dump()).as_dict()

    @app.post("/items/upload", status_code=201)
    async def upload_item(
        item_id: str = Form(..., min_length=1, max_length=256),
        title: str = Form(""),
        description: str = Form(""),
        tags: str = Form(""),
        image: Annotated[UploadFile | None, File()] = None,
        video: Annotated[UploadFile | None, File()] = None,
        audio: Annotated[UploadFile | None, File()] = None,
    ) -> dict:
        """A new item with its media files uploaded; they are kept under the media root, in uploads/<item_id>/."""
        safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in item_id)
        folder = Path("uploads") / safe_id
        fields = {"item_id": item_id, "title": title, "description": description, "tags": tags}
        for name, upload in (("image", image), ("video", video), ("audio", audio)):
            if upload is None:
                continue
            data = await upload.read(max_upload_bytes + 1)
            if len(data) > max_upload_bytes:
                raise HTTPException(413, f"{name} upload is over the limit of {max_upload_bytes:,} bytes")
            suffix = Path(upload.filename or name).suffix.lower()[:8]
            target = recommender.media_root / folder / f"{name}{suffix}"
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
            fields[name] = [str(folder / target.name)] if name == "image" else str(folder / target.name)
        return recommender.add_item(fields).as_dict()

    @app.delete("/items/{item_id}")
    def delete_item(item_id: str) -> dict:
        recommender.delete_item(item_id)
        return {"deleted": item_id}

    return app
