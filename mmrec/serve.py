"""Serve a bundle over HTTP: python -m mmrec.serve bundle=DIR [host=... port=... workers=...]

Endpoints under /v1: POST /recommend, POST /search, GET /items/{id}/similar, POST /items,
POST /items/upload, DELETE /items/{id} (writes need a bearer token), GET /live, /ready, /health,
/metrics (Prometheus, all workers), and POST /admin/bundle to serve a newly exported bundle without
a stop (mmrec.serving.swap). Every worker serves every item: adds and deletes go through one SQLite
store shared by the workers of a host (mmrec.serving.live). See docs/serving.md.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import hydra
import torch
import uvicorn
from omegaconf import DictConfig, OmegaConf

from mmrec.configs import CONFIG_PATH

SETTINGS = "MMREC_SERVE_SETTINGS"  # the serve config, as JSON, for every worker process
TOKEN = "MMREC_API_TOKEN"  # the write token; an environment variable, so never in a config file or a log


def api_token(cfg: DictConfig) -> str | None:
    """``serve.api_token``, else the file ``serve.api_token_file``, else $MMREC_API_TOKEN."""
    if cfg.api_token:
        return str(cfg.api_token)
    if cfg.api_token_file:
        path = Path(cfg.api_token_file)
        if not path.is_file():
            raise FileNotFoundError(f"serve.api_token_file={path}: no such file")
        return path.read_text().strip() or None
    return os.environ.get(TOKEN) or None


def build_app(settings: dict, token: str | None):
    """Load and verify the bundle (the latest one a switch put in its place), open the live store,
    and build the app (in each worker)."""
    from mmrec.serving.app import create_app
    from mmrec.serving.bundle import Bundle
    from mmrec.serving.recommender import Recommender
    from mmrec.serving.swap import Serving, latest

    torch.set_num_threads(settings["torch_threads"])
    # new items' media stay where they were uploaded, whichever bundle serves them
    media_root = settings["media_root"] or str(Path(settings["bundle"]) / "uploads")

    def load(bundle: str, store: str | None, manifest_sha256: str | None) -> Recommender:
        return Recommender(
            Bundle.load(
                bundle,
                expect_manifest_sha256=manifest_sha256,
                trust_config=settings["trust_config"],
                allowed_targets=tuple(settings["allowed_targets"]),
            ),
            media_root,
            settings["query_modality"],
            store,
            settings["compact_after"],
        )

    bundle, store, switched_sha256 = latest(settings["bundle"], settings["store"])
    recommender = load(bundle, store, switched_sha256 or settings["expect_manifest_sha256"])
    max_bytes = int(settings["max_upload_mb"] * 1024 * 1024)
    return create_app(Serving(recommender, load), max_bytes, token, settings["allow_anonymous_writes"])


def app_from_env():
    """The app factory uvicorn calls in every worker."""
    return build_app(json.loads(os.environ[SETTINGS]), os.environ.get(TOKEN) or None)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="serve")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    settings = OmegaConf.to_container(cfg, resolve=True)
    for key in ("api_token", "api_token_file"):
        settings.pop(key)
    token = api_token(cfg)
    build_app(settings, token)  # fail here, once, with the reason, rather than in every worker
    os.environ[SETTINGS] = json.dumps(settings)
    if token:
        os.environ[TOKEN] = token
    if cfg.workers > 1:  # every worker writes its metrics to files that /metrics merges
        metrics_dir = Path(tempfile.gettempdir()) / f"mmrec-metrics-{cfg.port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(
        "mmrec.serve:app_from_env",
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        access_log=cfg.access_log,
        timeout_worker_healthcheck=cfg.worker_start_timeout,
    )


if __name__ == "__main__":
    main()
