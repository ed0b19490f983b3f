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

README.md              the model card: data, metrics, intended use, limits
live/                  the service's adds and deletes (an SQLite store), beside the immutable export

Written by ``mmrec.serving.export``; every file but the manifest and live/ is hashed in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, load_model, save_file

from mmrec.build import DataSizes, build_model
from mmrec.configs import check_file_config
from mmrec.io import atomic_path
from mmrec.modalities import modality_of
from mmrec.serving.index import build_index, read_index

log = logging.getLogger(__name__)
FORMAT = 2  # 2: every file hashed, a model card
LIVE_DIRS = ("live", "uploads")  # the service's own state beside the immutable export: never verified
BUNDLE_PREFIX = "bundle:"  # paths inside the bundle, resolved when it is loaded (the folder may move)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def request_fields(encoders: dict[str, dict]) -> dict[str, str]:
    """Every item field a request adding an item may carry (name -> kind), from the bundle's modalities."""
    fields = {"item_id": "text", "title": "text"}
    for m, config in encoders.items():
        fields.update(modality_of(config, f"encoder.{m}").request_fields(config["featurizer"]))
    return fields


def stored_fields(fields: dict[str, str]) -> list[str]:
    """The item fields kept in the catalogue's metadata (and returned with results): the text ones."""
    return [f for f, kind in fields.items() if kind == "text"]


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
        if sha256_of(path) != digest:
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
        anything is built. The service's adds and deletes live in a store beside it (``mmrec.serving.live``)."""
        root = Path(root)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{root}: not an mmrec bundle (no manifest.json; write one with python -m mmrec.export)"
            )
        if expect_manifest_sha256 and sha256_of(manifest_path) != expect_manifest_sha256.lower():
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
        catalogue = load_catalogue(root / "catalogue.safetensors")
        index = load_or_rebuild_index(root / "index.faiss", catalogue["embeddings"], manifest["index"])
        users = read_json(root / "users.json")
        return cls(root, manifest, model, encoders, catalogue, users, index)

    @cached_property
    def identity(self) -> str:
        """The SHA-256 of the manifest, which hashes every file: what a live store is bound to
        (read once: the bundle is immutable, and /health reports it on every call)."""
        return sha256_of(self.root / "manifest.json")


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
