"""Export a trained checkpoint to a serving bundle (layout: ``mmrec.serving.bundle``).

The bundle is made from the checkpoint's own config and weights: the dataset's items are
featurised, every encoder runs over the catalogue (frozen ones are read from the embedding cache
when training left it), and the model's item tower fuses them. No datamodule, split or
LightningModule is built.

python -m mmrec.export ckpt_path=runs/train/<run>/checkpoints/best-epoch007.ckpt out=bundle/ index=hnsw
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_model

from mmrec.build import (
    DataSizes,
    build_model,
    encoder_configs,
    featurizer_factories,
    load_dataset,
    trained_modalities,
)
from mmrec.checkpoint import read_checkpoint
from mmrec.configs import check_file_config
from mmrec.data.features import catalogue_loader, modality_fingerprint
from mmrec.io import atomic_path, write_text
from mmrec.modalities import modality_of
from mmrec.serving.bundle import (
    BUNDLE_PREFIX,
    FORMAT,
    bundle_files,
    request_fields,
    save_catalogue,
    sha256_of,
    stored_fields,
)
from mmrec.serving.index import build_index, write_index
from mmrec.training.cache import FrozenFeatures, encode_catalogue

log = logging.getLogger(__name__)
LIBRARIES = ("mmrec", "torch", "transformers", "open_clip_torch", "torchaudio", "faiss-cpu", "safetensors", "lightning")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def model_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The TwoTowerModel's state dict inside a Lightning checkpoint of RecModule."""
    return {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}


def catalogue_features(cfg, model, featurizers, encoders, dataset) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every modality's encoder output (I, D_m) and presence (I,): frozen encoders through the
    embedding cache (read when training left it), trained ones in one encoding pass."""
    n, batch = dataset.num_items, cfg.data.eval_batch_size
    trained = trained_modalities(encoders)
    frozen = {m: c for m, c in encoders.items() if m not in trained}
    cache = FrozenFeatures(
        lambda ms, items=None: catalogue_loader({m: featurizers[m] for m in ms}, n, batch, items=items),
        {m: modality_fingerprint(dataset.fingerprint(), featurizers[m]) for m in frozen},
        frozen,
        Path(cfg.paths.cache_dir) / "embeddings",
        dataset.name,
    )
    device = torch.device("cpu")
    out = {m: (f, p) for m, (f, p, _) in cache.load({m: model.encoders[m] for m in frozen}, n, device).items()}
    for m in trained:
        loader = catalogue_loader({m: featurizers[m]}, n, batch)
        features, present, _ = encode_catalogue(model.encoders[m], m, loader, n, device)
        out[m] = (features, present)
    return out


def export_bundle(
    ckpt_path: str | Path,
    out: str | Path,
    index: str = "flat",
    overrides: dict | None = None,
    trust_config: bool = False,
    allowed_targets: tuple[str, ...] = (),
) -> Path:
    """Write the bundle of the checkpoint at ``ckpt_path`` to the folder ``out``. The checkpoint's
    config is checked against mmrec's allowlist of targets first (``mmrec.configs``)."""
    ckpt_path, out = Path(ckpt_path), Path(out)
    checkpoint = read_checkpoint(ckpt_path)
    if "mmrec_config" not in checkpoint:
        raise ValueError(f"{ckpt_path} holds no mmrec_config: it was not written by mmrec.train")
    check_file_config(checkpoint["mmrec_config"], str(ckpt_path), trust_config, allowed_targets)
    cfg = OmegaConf.merge(OmegaConf.create(checkpoint["mmrec_config"]), OmegaConf.create(overrides or {}))
    encoders = encoder_configs(cfg)
    dataset = load_dataset(cfg.data)
    featurizers = {m: make(catalogue=dataset) for m, make in featurizer_factories(encoders).items()}
    users = sorted(dataset.interactions["user_id"].unique())  # the training run's user indices
    sizes = DataSizes(
        dataset.num_items, len(users), cfg.data.history_length, {m: f.encoder_kwargs() for m, f in featurizers.items()}
    )
    model = build_model(cfg, encoders, sizes)
    model.load_state_dict(model_weights(checkpoint))
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    features = catalogue_features(cfg, model, featurizers, encoders, dataset)
    with torch.no_grad():
        embeddings = model.embed_items(
            {m: f for m, (f, _) in features.items()},
            {m: p for m, (_, p) in features.items()},
            torch.arange(dataset.num_items),
        ).embedding
    offline = {
        m: modality_of(c, f"encoder.{m}").offline_config(
            json.loads(json.dumps(c)), model.encoders[m], featurizers[m], out / m, f"{BUNDLE_PREFIX}{m}"
        )
        for m, c in encoders.items()
    }
    fields = stored_fields(request_fields(offline))
    catalogue = {
        "items": dataset.items.reindex(columns=fields, fill_value="").astype(str).to_dict("records"),
        "embeddings": embeddings,
        "features": {m: f for m, (f, _) in features.items()},
        "present": {m: p for m, (_, p) in features.items()},
        "deleted": torch.zeros(dataset.num_items, dtype=torch.bool),
    }
    save_catalogue(out, catalogue)
    with atomic_path(out / "model.safetensors") as tmp:
        save_model(model, str(tmp))
    with atomic_path(out / "index.faiss") as tmp:
        write_index(build_index(embeddings.numpy(), index), str(tmp))
    write_text(out / "users.json", json.dumps(users))
    write_text(out / "encoders.json", json.dumps(offline, indent=2))
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    metrics_file = ckpt_path.resolve().parent.parent / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    write_text(out / "README.md", model_card(cfg, dataset, len(users), metrics, sorted(features)))
    sizes_json = {"num_items": sizes.num_items, "num_users": sizes.num_users, "history_length": sizes.history_length}
    manifest = {
        "format": FORMAT,
        "versions": {lib: _version(lib) for lib in LIBRARIES} | {"python": platform.python_version()},
        "checkpoint": str(ckpt_path.resolve()),
        "config_hash": hashlib.sha256(
            json.dumps(OmegaConf.to_container(cfg), sort_keys=True, default=str).encode()
        ).hexdigest()[:16],
        "data_fingerprint": dataset.fingerprint(),
        "dataset": dataset.name,
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("test", "best"))},
        "index": index,
        "dim": int(embeddings.shape[1]),
        "modalities": sorted(features),
        "sizes": {**sizes_json, "encoder_kwargs": sizes.encoder_kwargs},
        "sha256": {name: sha256_of(out / name) for name in bundle_files(out)},
    }
    write_text(out / "manifest.json", json.dumps(manifest, indent=2))  # last: its presence marks a complete bundle
    log.info("exported %d items (%s index) to %s", dataset.num_items, index, out)
    return out


def model_card(cfg, dataset, num_users: int, metrics: dict, modalities: list[str]) -> str:
    """The bundle's README.md: what the model is, what it was trained and measured on, its limits."""
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if k.startswith("test") and "@" in k)
    return f"""# mmrec model card

- **Model**: two-tower recommender; item tower over {", ".join(modalities) or "item IDs"} fused by
  `{OmegaConf.select(cfg, "fusion._target_", default="none")}`, user tower
  `{OmegaConf.select(cfg, "model.user_tower._target_")}`, width {cfg.model.dim}, item IDs {cfg.model.item_id}.
- **Data**: `{dataset.name}` ({dataset.num_items:,} items, {num_users:,} users), split
  `{OmegaConf.select(cfg, "data.split.method")}`, data fingerprint `{dataset.fingerprint()}`.
- **Evaluation**: full ranking over every item; seen items masked:
  {OmegaConf.select(cfg, "eval.mask_seen", default=True)}.

| test metric | value |
|---|---|
{rows or "| (none recorded) | |"}

**Intended use**: ranking this catalogue's items (and items added through the service, embedded from
their content) for a user given their recent history; the service keeps no user data.

**Limits**: quality was measured only on the data above, offline; new items are embedded from content
alone (no ID), so they rank as the content-only model does; encoders inherit the biases of their
pretraining data; popularity and exposure effects are not corrected.
"""
