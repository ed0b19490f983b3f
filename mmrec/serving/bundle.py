"""The export bundle: everything a trained model needs to serve, with no pickle and no training data.

manifest.json          versions, config hash, data fingerprint, metrics, sizes, file hashes
config.yaml            the resolved training config
encoders.json          each modality's encoder + featurizer config, rewritten to rebuild offline
model.safetensors      every weight: encoders (live or frozen), projections, fusion, towers,
                       temperature, scorer
catalogue.safetensors  item embeddings, each modality's encoder outputs and presence (for
                       explanations and re-fusion), the deleted mask; item metadata as JSON
users.json             training user ids (for the optional user-ID embedding)
index.faiss            the ANN index over the item embeddings (FAISS's own format)
text/                  the text encoder's config and tokenizer (for queries and new items)

python -m mmrec.export ckpt_path=runs/train/<run>/checkpoints/best-epoch007.ckpt out=bundle/ index=hnsw
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, load_model, save_file, save_model

from mmrec.build import DataSizes, build, build_model
from mmrec.checkpoint import read_checkpoint
from mmrec.configs import check_file_config
from mmrec.io import atomic_path, write_text
from mmrec.modalities import modality_of
from mmrec.serving.index import build_index, read_index, write_index
from mmrec.training.cache import encode_catalogue

log = logging.getLogger(__name__)
FORMAT = 2  # 2: every file hashed, a model card, the service's changes in live/
LIVE = "live"  # the service's adds and deletes (catalogue + index), beside the immutable export
LIVE_DIRS = (LIVE, "uploads")
BUNDLE_PREFIX = "bundle:"  # paths inside the bundle, resolved when it is loaded (the folder may move)
LIBRARIES = ("mmrec", "torch", "transformers", "open_clip_torch", "torchaudio", "faiss-cpu", "safetensors", "lightning")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def catalogue_features(module, dm) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every modality's encoder output (I, D_m) and presence (I,) over the catalogue: the cache for
    frozen modalities, one encoding pass (as the cache is built) for live ones."""
    module._ensure_cache()
    out = {m: tuple(t.cpu() for t in module.cached(m)) for m in module.frozen_modalities}
    for m in module.live_modalities:
        features, present, _ = encode_catalogue(
            module.model.encoders[m], m, dm.item_dataloader((m,)), dm.num_items, module.device
        )
        out[m] = (features, present)
    return out


def offline_encoder_configs(module, encoders: dict[str, dict], dm, out: Path) -> dict[str, dict]:
    """Encoder configs that rebuild each architecture without downloads (weights come from
    model.safetensors), and featurizer configs that work on new items without the training data:
    each modality rewrites its own (``Modality.offline_config``)."""
    return {
        m: modality_of(config, f"encoder.{m}").offline_config(
            json.loads(json.dumps(config)),
            module.model.encoders[m],
            dm.featurizers[m],
            out / m,
            f"{BUNDLE_PREFIX}{m}",
        )
        for m, config in encoders.items()
    }


def request_fields(encoders: dict[str, dict]) -> dict[str, str]:
    """Every item field a request adding an item may carry (name -> kind), from the bundle's modalities."""
    fields = {"item_id": "text", "title": "text"}
    for m, config in encoders.items():
        fields.update(modality_of(config, f"encoder.{m}").request_fields(config["featurizer"]))
    return fields


def stored_fields(fields: dict[str, str]) -> list[str]:
    """The item fields kept in the catalogue's metadata (and returned with results): the text ones."""
    return [f for f, kind in fields.items() if kind == "text"]


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
    dm, module = build(cfg)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    out.mkdir(parents=True, exist_ok=True)
    features = catalogue_features(module, dm)
    with torch.no_grad():
        index_all = torch.arange(dm.num_items)
        embeddings = module.model.embed_items(
            {m: f for m, (f, _) in features.items()}, {m: p for m, (_, p) in features.items()}, index_all
        ).embedding
    from mmrec.build import encoder_configs

    encoders = offline_encoder_configs(module, encoder_configs(cfg), dm, out)
    items = dm.dataset.items
    catalogue = {
        "items": items.reindex(columns=stored_fields(request_fields(encoders)), fill_value="")
        .astype(str)
        .to_dict("records"),
        "embeddings": embeddings,
        "features": {m: f for m, (f, _) in features.items()},
        "present": {m: p for m, (_, p) in features.items()},
        "deleted": torch.zeros(dm.num_items, dtype=torch.bool),
    }
    save_catalogue(out, catalogue)
    with atomic_path(out / "model.safetensors") as tmp:
        save_model(module.model, str(tmp))
    with atomic_path(out / "index.faiss") as tmp:
        write_index(build_index(embeddings.numpy(), index), str(tmp))
    write_text(out / "users.json", json.dumps(dm.indexed.user_ids.tolist()))
    write_text(out / "encoders.json", json.dumps(encoders, indent=2))
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    metrics_file = ckpt_path.resolve().parent.parent / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    sizes = {"num_items": dm.num_items, "num_users": dm.num_users, "history_length": dm.history_length}
    sizes["encoder_kwargs"] = {m: f.encoder_kwargs() for m, f in dm.featurizers.items()}
    write_text(out / "README.md", model_card(cfg, dm, metrics, sorted(features)))
    manifest = {
        "format": FORMAT,
        "versions": {lib: _version(lib) for lib in LIBRARIES} | {"python": platform.python_version()},
        "checkpoint": str(ckpt_path.resolve()),
        "config_hash": hashlib.sha256(
            json.dumps(OmegaConf.to_container(cfg), sort_keys=True, default=str).encode()
        ).hexdigest()[:16],
        "data_fingerprint": dm.dataset.fingerprint(),
        "dataset": dm.dataset.name,
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("test", "best"))},
        "index": index,
        "dim": int(embeddings.shape[1]),
        "modalities": sorted(features),
        "sizes": sizes,
        "sha256": {name: _sha256(out / name) for name in bundle_files(out)},
    }
    write_text(out / "manifest.json", json.dumps(manifest, indent=2))  # last: its presence marks a complete bundle
    log.info("exported %d items (%s index) to %s", dm.num_items, index, out)
    return out


def model_card(cfg, dm, metrics: dict, modalities: list[str]) -> str:
    """The bundle's README.md: what the model is, what it was trained and measured on, its limits."""
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if k.startswith("test") and "@" in k)
    return f"""# mmrec model card

- **Model**: two-tower recommender; item tower over {", ".join(modalities) or "item IDs"} fused by
  `{OmegaConf.select(cfg, "fusion._target_", default="none")}`, user tower
  `{OmegaConf.select(cfg, "model.user_tower._target_")}`, width {cfg.model.dim}, item IDs {cfg.model.item_id}.
- **Data**: `{dm.dataset.name}` ({dm.num_items:,} items, {dm.num_users:,} users), split
  `{OmegaConf.select(cfg, "data.split.method")}`, data fingerprint `{dm.dataset.fingerprint()}`.
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


def save_catalogue(out: Path, catalogue: dict) -> None:
    tensors = {"embeddings": catalogue["embeddings"].float().contiguous(), "deleted": catalogue["deleted"].contiguous()}
    for m, f in catalogue["features"].items():
        tensors[f"features.{m}"] = f.float().contiguous()
        tensors[f"present.{m}"] = catalogue["present"][m].contiguous()
    with atomic_path(out / "catalogue.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"items": json.dumps(catalogue["items"])})


def load_catalogue(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            items = json.loads(handle.metadata()["items"])
        tensors = load_file(str(path))
    except Exception as err:  # safetensors' and json's errors name no file
        raise BundleError(f"{path}: cannot be read as an mmrec catalogue ({type(err).__name__}: {err})") from err
    features = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("features.")}
    present = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("present.")}
    return {
        "items": items,
        "embeddings": tensors["embeddings"],
        "features": features,
        "present": present,
        "deleted": tensors["deleted"],
    }


def bundle_files(root: Path) -> list[str]:
    """Every file of the immutable bundle (relative paths), without the manifest itself and the
    service's own state (``live/``, ``uploads/``)."""
    skipped = ("manifest.json",)
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and str(p.relative_to(root)) not in skipped and p.relative_to(root).parts[0] not in LIVE_DIRS
    )


class BundleError(ValueError):
    """A bundle file that is missing, damaged or altered: the message names the file and the check."""


def verify_files(root: Path, manifest: dict) -> None:
    """Every file the manifest lists has its SHA-256; every file in a bundle folder is listed."""
    listed = manifest.get("sha256") or {}
    for name, digest in listed.items():
        path = root / name
        if not path.is_file():
            raise BundleError(f"{path}: missing (the manifest lists it)")
        if _sha256(path) != digest:
            raise BundleError(f"{path}: its SHA-256 differs from the manifest's (a damaged or altered bundle)")
    unlisted = [name for name in bundle_files(root) if name not in listed]
    if unlisted:
        raise BundleError(f"{root / unlisted[0]}: not listed in the manifest (a file added to the bundle is refused)")


@dataclass
class Bundle:
    """A loaded bundle: the model (eval mode), the catalogue, the index and the configs."""

    root: Path
    manifest: dict
    model: torch.nn.Module
    encoders: dict[str, dict]
    catalogue: dict
    users: list[str]
    index: object

    @classmethod
    def load(
        cls,
        root: str | Path,
        verify: bool = True,
        expect_manifest_sha256: str | None = None,
        trust_config: bool = False,
        allowed_targets: tuple[str, ...] = (),
    ) -> Bundle:
        """Load and verify a bundle: the manifest's hash when the operator gives one, every file's
        SHA-256, then the configs against mmrec's allowlist of targets (``mmrec.configs``), before
        anything is built. The service's own adds and deletes are read from ``live/`` when present."""
        root = Path(root)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{root}: not an mmrec bundle (no manifest.json; write one with python -m mmrec.export)"
            )
        if expect_manifest_sha256 and _sha256(manifest_path) != expect_manifest_sha256.lower():
            raise BundleError(f"{manifest_path}: its SHA-256 is not the expected one (serve.expect_manifest_sha256)")
        manifest = read_json(manifest_path)
        if manifest.get("format") != FORMAT:
            raise ValueError(
                f"{manifest_path}: bundle format {manifest.get('format')}, this mmrec reads format {FORMAT}"
            )
        if verify:
            verify_files(root, manifest)
        try:
            cfg = OmegaConf.load(root / "config.yaml")
        except Exception as err:  # a YAML or OmegaConf error names no file
            raise BundleError(f"{root / 'config.yaml'}: cannot be read as YAML ({err})") from err
        raw_encoders = read_json(root / "encoders.json")
        check_file_config(OmegaConf.to_container(cfg), str(root / "config.yaml"), trust_config, allowed_targets)
        check_file_config(raw_encoders, str(root / "encoders.json"), trust_config, allowed_targets)
        encoders = resolve_bundle_paths(raw_encoders, root)
        sizes = DataSizes(**manifest["sizes"])
        model = build_model(cfg, encoders, sizes)
        missing, unexpected = load_model(model, str(root / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{root / 'model.safetensors'}: weights do not match the architecture "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        model.eval()
        state = root / LIVE if (root / LIVE / "catalogue.safetensors").is_file() else root
        catalogue = load_catalogue(state / "catalogue.safetensors")
        index = load_or_rebuild_index(state / "index.faiss", catalogue["embeddings"], manifest["index"])
        users = read_json(root / "users.json")
        return cls(root, manifest, model, encoders, catalogue, users, index)

    def save_catalogue(self) -> None:
        """Persist the current catalogue and index into ``live/`` (each written to a temporary file and
        renamed); the exported files stay as they were, so the bundle still verifies."""
        save_catalogue(self.root / LIVE, self.catalogue)
        with atomic_path(self.root / LIVE / "index.faiss") as tmp:
            write_index(self.index, str(tmp))


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BundleError(f"{path}: cannot be read as JSON ({err})") from err


def load_or_rebuild_index(path: Path, embeddings: torch.Tensor, kind: str):
    """The FAISS index at ``path``; rebuilt from the (verified) catalogue with a warning when it cannot
    be read or does not hold one vector per item (a crash between two writes: the catalogue wins)."""
    try:
        index = read_index(str(path))
        if index.ntotal == len(embeddings):
            return index
        reason = f"it holds {index.ntotal} vectors for {len(embeddings)} items"
    except RuntimeError as err:  # faiss's error for a damaged file
        reason = f"it cannot be read ({str(err).splitlines()[0]})"
    log.warning("%s: %s; rebuilding it from the catalogue", path, reason)
    return build_index(embeddings.numpy(), kind)


def resolve_bundle_paths(value, root: Path):
    """Replace 'bundle:NAME' strings with paths inside ``root``."""
    if isinstance(value, dict):
        return {k: resolve_bundle_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_bundle_paths(v, root) for v in value]
    if isinstance(value, str) and value.startswith(BUNDLE_PREFIX):
        return str(root / value[len(BUNDLE_PREFIX) :])
    return value
