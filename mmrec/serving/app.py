"""The HTTP service (FastAPI): recommend, search, similar items, add/delete items, health, metrics.

Every route is under ``/v1`` (and, outside the schema, unversioned for older clients). Reads are
open; writes (``POST/DELETE /v1/items*``) need ``Authorization: Bearer <serve.api_token>``,
compared in constant time and never logged. Privacy by design: the user's history comes with each
request and is neither stored nor logged (access logs carry the path and status only).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mmrec.serving.bundle import BundleError
from mmrec.serving.live import HandedOver
from mmrec.serving.recommender import Recommender, RequestError
from mmrec.serving.swap import Serving

log = logging.getLogger(__name__)
MAX_K = 1000
MAX_EXPLAIN_K = 50  # an explanation re-scores every modality and history item: its cost is bounded
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


class Item(BaseModel):
    item_id: str
    score: float
    title: str
    explanation: dict | None = Field(None, description="per modality and per history item: the score it adds")


class Items(BaseModel):
    items: list[Item]


class Deleted(BaseModel):
    deleted: str


class Health(BaseModel):
    status: str
    items: int = Field(description="items served now: the bundle's and the live store's, less the deleted")
    bundle: dict = Field(description="dataset, config hash, data fingerprint and manifest SHA-256 of the bundle")
    index: str
    modalities: list[str]
    item_fields: dict[str, str] = Field(description="the fields a new item may carry, and their kinds")
    query_modality: str | None


class SwitchRequest(BaseModel):
    bundle: str = Field(..., min_length=1, max_length=4096, description="the new bundle's folder on the server")
    store: str | None = Field(None, description="its live store (default: BUNDLE/live/store.sqlite)")


class Switched(BaseModel):
    bundle: str
    manifest_sha256: str
    carried: int = Field(description="live items re-encoded by the new bundle's model")
    deleted: int = Field(description="live deletes repeated on the new bundle")
    refused: dict[str, str] = Field(description="live items that could not be carried over, and why")


class NewItem(BaseModel):
    """A new item: its id and the fields the model's modalities read (``GET /health`` lists them:
    text columns, media paths relative to the service's media root, precomputed vectors)."""

    model_config = ConfigDict(extra="allow")
    item_id: str = Field(..., min_length=1, max_length=128)


def create_app(
    recommender: Recommender | Serving,
    max_upload_bytes: int = 50 * 1024 * 1024,
    api_token: str | None = None,
    allow_anonymous_writes: bool = False,
) -> FastAPI:
    """The app over ``recommender`` (or a ``Serving``, whose recommender can be swapped for a new
    bundle's). Writes need ``api_token``; without one the app refuses to be built unless
    ``allow_anonymous_writes`` (a service that must take writes from anyone)."""
    if not api_token and not allow_anonymous_writes:
        raise ValueError(
            "serve: writes (POST/DELETE /v1/items) need a token: set serve.api_token (or MMREC_API_TOKEN, or "
            "serve.api_token_file), or serve.allow_anonymous_writes=true to take writes from anyone"
        )
    serving = recommender if isinstance(recommender, Serving) else Serving(recommender)
    app = FastAPI(title="mmrec", description="Multimodal content-based recommendations", version="1")
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

    def authorised(request: Request) -> None:
        if not api_token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, "this route needs Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode(), api_token.encode()):
            raise HTTPException(403, "the token is not valid for this service")

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

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        """422 naming each bad field, without echoing the request's values."""
        fields = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in err.errors()]
        return JSONResponse({"detail": fields}, status_code=422)

    router = APIRouter()

    @router.get("/live")
    def live() -> dict:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @router.get("/ready")
    def ready() -> JSONResponse:
        """Readiness: the bundle is loaded and the live store answers."""
        try:
            serving.current.live.sync()
        except Exception as err:  # the store is locked or gone: not ready, say why without paths
            return JSONResponse({"status": "not ready", "reason": type(err).__name__}, status_code=503)
        return JSONResponse({"status": "ready"})

    @router.get("/health", response_model=Health)
    def health() -> dict:
        recommender = serving.current
        manifest = recommender.bundle.manifest
        return {
            "status": "ok",
            "items": recommender.size,
            "bundle": {
                "dataset": manifest.get("dataset"),
                "config_hash": manifest.get("config_hash"),
                "data_fingerprint": manifest.get("data_fingerprint"),
                "manifest_sha256": recommender.bundle.identity,
            },
            "index": manifest["index"],
            "modalities": manifest["modalities"],
            "item_fields": recommender.fields,
            "query_modality": recommender.query_modality,
        }

    @router.get("/metrics")
    def metrics() -> PlainTextResponse:
        """Prometheus metrics; of every worker when served with several (multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return PlainTextResponse(generate_latest(merged).decode(), media_type=CONTENT_TYPE_LATEST)
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @router.post("/recommend", response_model=Items, response_model_exclude_none=True)
    def recommend(body: RecommendRequest) -> dict:
        if body.explain and body.k > MAX_EXPLAIN_K:
            raise RequestError(f"k={body.k} with explain=true: at most {MAX_EXPLAIN_K} explained items a request", 422)
        items = serving.current.recommend(body.history, body.k, body.exclude_seen, body.user_id, body.explain)
        return {"items": [i.as_dict() for i in items]}

    @router.post("/search", response_model=Items, response_model_exclude_none=True)
    def search(body: SearchRequest) -> dict:
        return {"items": [i.as_dict() for i in serving.current.search(body.query, body.k)]}

    @router.get("/items/{item_id}/similar", response_model=Items, response_model_exclude_none=True)
    def similar(item_id: str, k: int = 10) -> dict:
        if not 1 <= k <= MAX_K:
            raise HTTPException(422, f"k must be between 1 and {MAX_K}, got {k}")
        return {"items": [i.as_dict() for i in serving.current.similar(item_id, k)]}

    @router.post("/items", status_code=201, response_model=Item, response_model_exclude_none=True)
    def add_item(item: NewItem, _: None = Depends(authorised)) -> dict:
        check_item_id(item.item_id)
        return serving.current.add_item(item.model_dump()).as_dict()

    @router.post("/items/upload", status_code=201, response_model=Item, response_model_exclude_none=True)
    async def upload_item(request: Request, _: None = Depends(authorised)) -> dict:
        """A new item as a multipart form: its fields, and a media file for each media field (image,
        video, audio, as the model reads them). Files are staged in a temporary folder under the
        media root and moved to ``uploads/<item_id>/`` only once the item is accepted; nothing of a
        refused request stays on disk. The encoding runs off the event loop."""
        recommender = serving.current
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
            final = recommender.media_root / "uploads" / item_id
            source = dict(fields)  # where the files will be: what a new bundle re-encodes the item from
            for name, upload in files.items():
                data = await upload.read(max_upload_bytes + 1)
                if len(data) > max_upload_bytes:
                    raise HTTPException(413, f"{name} upload is over the limit of {max_upload_bytes:,} bytes")
                target = staging / f"{name}{Path(upload.filename or name).suffix.lower()[:8]}"
                target.write_bytes(data)
                for out, folder in ((fields, staging), (source, final)):
                    relative = str((folder / target.name).relative_to(recommender.media_root))
                    out[name] = [relative] if recommender.fields[name] == "paths" else relative
            result = await run_in_threadpool(recommender.add_item, fields, source)
            if final.exists():
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(final)
            return result.as_dict()
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @router.delete("/items/{item_id}", response_model=Deleted)
    def delete_item(item_id: str, _: None = Depends(authorised)) -> dict:
        serving.current.delete_item(item_id)
        return {"deleted": item_id}

    @router.post("/admin/bundle", response_model=Switched)
    def switch_bundle(body: SwitchRequest, _: None = Depends(authorised)) -> dict:
        """Serve a newly exported bundle without a stop: the live items are re-encoded by its model
        (writes answer 503 meanwhile), then every worker switches at its next request."""
        try:
            report = serving.switch(body.bundle, body.store)
        except RequestError:
            raise
        except HandedOver as err:
            raise RequestError(str(err), 409) from err
        except (OSError, BundleError, ValueError) as err:  # the admin's own path, not the server's
            raise RequestError(f"bundle cannot be served: {str(err).replace(body.bundle, '<bundle>')}", 422) from err
        return report.__dict__

    app.include_router(router, prefix="/v1")
    app.include_router(router, include_in_schema=False)  # the unversioned paths of earlier clients
    return app
