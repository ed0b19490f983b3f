"""Frozen encoders run once per item: their outputs are cached on disk and reused across runs.

The key hashes the encoder's config, its weights and the data fingerprint (catalogue contents
and media settings), so the cache is rebuilt when any of them changes and shared by runs where
none did. The weights matter for random-init presets: the same config under another seed is
another feature extractor.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from filelock import FileLock
from tqdm import tqdm

from mmrec.data.features import ItemBatch
from mmrec.models.encoders.adapt import ModalityEncoder

log = logging.getLogger(__name__)


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of every tensor in ``module``'s state dict (names and bytes)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(modality: str, encoder_config: Mapping, data_fingerprint: str, weights: str) -> str:
    payload = json.dumps({"modality": modality, "encoder": encoder_config, "data": data_fingerprint, "weights": weights}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


class ProblemReport:
    """Counts bad media files and logs each file once, in the process that consumes batches."""

    def __init__(self):
        self.seen: set[str] = set()

    def add(self, problems: Iterable[str]) -> None:
        for problem in problems:
            if problem not in self.seen:
                self.seen.add(problem)
                log.warning("skipped media (modality marked missing for this item): %s", problem)

    @property
    def count(self) -> int:
        return len(self.seen)


@torch.no_grad()
def encode_catalogue(encoder: ModalityEncoder, modality: str, batches: Iterable[ItemBatch], num_items: int, device: torch.device, problems: ProblemReport) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``encoder`` over every item: (N, D) float32 outputs and (N,) presence."""
    was_training = encoder.training
    encoder.eval()
    features = torch.zeros(num_items, encoder.output_dim)
    present = torch.zeros(num_items, dtype=torch.bool)
    for batch in tqdm(batches, desc=f"encoding {modality}", unit="batch", leave=False):
        problems.add(batch.problems)
        mask = batch.present[modality]
        out = encoder(batch.inputs[modality].to(device), batch.input_mask[modality].to(device), mask.to(device))
        features[batch.index], present[batch.index] = out.float().cpu(), mask
    encoder.train(was_training)
    return features, present


def load_or_encode(path: Path, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached (features, present) at ``path``, computing and saving them first if absent.

    A file lock makes concurrent ranks or runs compute it once; the others then read the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            log.info("loaded cached embeddings %s", path)
            return stored["features"], stored["present"]
        features, present = compute()
        torch.save({"features": features, "present": present}, path)
        log.info("cached %d item embeddings (%d present) to %s", len(features), int(present.sum()), path)
        return features, present
