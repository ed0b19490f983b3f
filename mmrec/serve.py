"""Serve a bundle over HTTP: python -m mmrec.serve bundle=DIR [host=... port=... workers=...]

Endpoints: POST /recommend, POST /search, GET /items/{id}/similar, POST /items, POST /items/upload,
DELETE /items/{id}, GET /health, GET /metrics (Prometheus). See README "Serving".
"""

from __future__ import annotations

import logging
import os

import hydra
import torch
import uvicorn
from omegaconf import DictConfig

from mmrec.configs import CONFIG_PATH
from mmrec.serving.app import create_app
from mmrec.serving.bundle import Bundle
from mmrec.serving.recommender import Recommender


def bundle_options(env) -> dict:
    """Bundle.load's verification and trust options, as the serve config (env: for every worker) gives them."""
    allowed = env.get("MMREC_ALLOWED_TARGETS", "")
    return {
        "expect_manifest_sha256": env.get("MMREC_EXPECT_MANIFEST_SHA256") or None,
        "trust_config": env.get("MMREC_TRUST_CONFIG") == "true",
        "allowed_targets": tuple(a for a in allowed.split(",") if a),
    }


def app_from_env():
    """The app factory uvicorn calls in every worker (settings travel in environment variables)."""
    torch.set_num_threads(int(os.environ.get("MMREC_TORCH_THREADS", "1")))
    bundle = Bundle.load(os.environ["MMREC_BUNDLE"], **bundle_options(os.environ))
    recommender = Recommender(
        bundle, os.environ.get("MMREC_MEDIA_ROOT") or None, os.environ.get("MMREC_QUERY_MODALITY") or None
    )
    return create_app(recommender, int(float(os.environ.get("MMREC_MAX_UPLOAD_MB", "50")) * 1024 * 1024))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="serve")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    os.environ.update(
        MMREC_BUNDLE=str(cfg.bundle),
        MMREC_MEDIA_ROOT=str(cfg.media_root or ""),
        MMREC_MAX_UPLOAD_MB=str(cfg.max_upload_mb),
        MMREC_TORCH_THREADS=str(cfg.torch_threads),
        MMREC_QUERY_MODALITY=str(cfg.query_modality or ""),
        MMREC_EXPECT_MANIFEST_SHA256=str(cfg.expect_manifest_sha256 or ""),
        MMREC_TRUST_CONFIG=str(bool(cfg.trust_config)).lower(),
        MMREC_ALLOWED_TARGETS=",".join(cfg.allowed_targets),
    )
    bundle = Bundle.load(cfg.bundle, **bundle_options(os.environ))  # fail here, with the reason
    Recommender(bundle, cfg.media_root or None, cfg.query_modality)
    uvicorn.run(
        "mmrec.serve:app_from_env",
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        access_log=cfg.access_log,
    )


if __name__ == "__main__":
    main()
