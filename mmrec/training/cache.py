"""Frozen encoders run once per item: their outputs are cached on disk and reused across runs.

The key hashes the encoder's config, its weights and the modality's data fingerprint (catalogue,
featurizer settings, and the size and modification time of every media file read), so the cache
is rebuilt when any of them changes and shared by runs where none did. The weights matter for
random-init presets: the same config under another seed is another feature extractor. The media
problems met while encoding are stored with the features, so a run that reads the cache reports
them too. Encoding runs under its own RNG state (``torch.random.fork_rng``), so building the
cache and reading it leave training in the same random state.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from filelock import FileLock
from tqdm import tqdm

from mmrec.data.features import ItemBatch
from mmrec.distributed import rank_and_world
from mmrec.io import atomic_path
from mmrec.models.adapt import ModalityEncoder

log = logging.getLogger(__name__)


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of every tensor in ``module``'s state dict (names and bytes)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(modality: str, encoder_config: Mapping, data_fingerprint: str, weights: str) -> str:
    payload = json.dumps(
        {"modality": modality, "encoder": encoder_config, "data": data_fingerprint, "weights": weights},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


class ProblemReport:
    """Counts bad media files and logs each file once, in the process that consumes batches."""

    def __init__(self):
        self.seen: dict[str, None] = {}

    def add(self, problems: Iterable[str]) -> None:
        for problem in problems:
            if problem not in self.seen:
                self.seen[problem] = None
                log.warning("skipped media (modality marked missing for this item): %s", problem)

    @property
    def count(self) -> int:
        return len(self.seen)

    @property
    def problems(self) -> list[str]:
        return list(self.seen)


@torch.no_grad()
def encode_catalogue(
    encoder: ModalityEncoder, modality: str, batches: Iterable[ItemBatch], num_items: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Run ``encoder`` over every item: (N, D) float32 outputs, (N,) presence, and the media problems."""
    was_training = encoder.training
    encoder.eval()
    features = torch.zeros(num_items, encoder.output_dim)
    present = torch.zeros(num_items, dtype=torch.bool)
    problems: list[str] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for batch in tqdm(batches, desc=f"encoding {modality}", unit="batch", leave=False):
            problems.extend(batch.problems)
            mask = batch.present[modality]
            out = encoder(batch.inputs[modality].to(device), batch.input_mask[modality].to(device), mask.to(device))
            features[batch.index], present[batch.index] = out.float().cpu(), mask
    encoder.train(was_training)
    return features, present, problems


def read_cache(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]] | None:
    """The cached (features, present, problems) at ``path``, or None when absent. A file that cannot
    be read (truncated, damaged, of another format) is logged and removed, to be rebuilt."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        result = stored["features"], stored["present"], list(stored.get("problems", []))
    except Exception as err:  # any unreadable cache is rebuilt, never fatal
        log.warning("embedding cache %s cannot be read (%s): removing and rebuilding it", path, err)
        path.unlink(missing_ok=True)
        return None
    log.info("loaded cached embeddings %s", path)
    return result


def write_cache(path: Path, features: torch.Tensor, present: torch.Tensor, problems: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"features": features, "present": present, "problems": problems}, tmp)
    log.info("cached %d item embeddings (%d present) to %s", len(features), int(present.sum()), path)


def load_or_encode(
    path: Path, compute: Callable[[], tuple[torch.Tensor, torch.Tensor, list[str]]]
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The cached (features, present, problems) at ``path``, computing and saving them first if absent.
    A file lock makes concurrent runs compute it once; the others then read the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        cached = read_cache(path)
        if cached is not None:
            return cached
        features, present, problems = compute()
        write_cache(path, features, present, problems)
        return features, present, problems


def sum_across_ranks(
    features: torch.Tensor, present: torch.Tensor, problems: list[str], device: torch.device, rows: int = 1 << 18
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every rank's slice in one table: each rank holds its rows and zeros elsewhere, so a sum is exact.
    Reduced ``rows`` at a time on ``device`` (NCCL reduces GPU tensors), the problems gathered as lists."""
    for start in range(0, len(features), rows):
        part = torch.cat([features[start : start + rows], present[start : start + rows, None].float()], dim=1)
        part = part.to(device)
        dist.all_reduce(part)
        features[start : start + rows], present[start : start + rows] = part[:, :-1].cpu(), part[:, -1].cpu() > 0
    gathered: list[list[str]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, problems)
    return features, present, [p for rank_problems in gathered for p in rank_problems]


# (encoder, modality, num_items) -> (features (N, D), present (N,), problems): a whole-catalogue pass
# on another engine (mmrec.training.ray_catalogue.RayCatalogue) instead of this process's loader
CatalogueEngine = Callable[[ModalityEncoder, str, int], tuple[torch.Tensor, torch.Tensor, list[str]]]


class FrozenFeatures:
    """The cached outputs of the frozen encoders, computed (or read) once on the module's device.

    ``loader(modalities, items=None)`` yields ItemBatches over the whole catalogue (or ``items``, a
    range); ``fingerprints[m]`` and ``configs[m]`` identify modality m's data and encoder config;
    ``prefix`` names the files. With an ``engine``, the catalogue is encoded there instead (by rank 0
    under several processes, the others reading its file).
    """

    def __init__(
        self,
        loader: Callable[[tuple[str, ...]], Iterable[ItemBatch]],
        fingerprints: Mapping[str, str],
        configs: Mapping[str, Mapping],
        cache_dir: str | Path,
        prefix: str,
        engine: CatalogueEngine | None = None,
    ):
        self.loader, self.fingerprints, self.configs = (
            loader,
            dict(fingerprints),
            {m: dict(c) for m, c in configs.items()},
        )
        self.cache_dir, self.prefix, self.engine = Path(cache_dir), prefix, engine

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted(self.configs))

    def load(
        self, encoders: Mapping[str, ModalityEncoder], num_items: int, device: torch.device
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]]:
        """Each frozen modality's (features, present, problems): read from the cache, or encoded. Under
        several processes each rank encodes its own slice of the catalogue and the slices are summed
        across ranks (zeros elsewhere, so the sum is exact); rank 0 writes the cache file."""
        rank, world = rank_and_world()
        out = {}
        for m in self.modalities:
            key = cache_key(m, self.configs[m], self.fingerprints[m], weights_digest(encoders[m]))
            path = self.cache_dir / f"{self.prefix}-{m}-{key}.pt"
            if world == 1 or self.engine is not None:
                out[m] = self.load_or_encode_whole(path, encoders[m], m, num_items, device)
                continue
            cached = [read_cache(path) if rank == 0 else None]
            dist.broadcast_object_list(cached, src=0)  # every rank takes the same branch
            if cached[0] is not None:
                out[m] = cached[0] if rank == 0 else read_cache(path)
                continue
            mine = range(rank * num_items // world, (rank + 1) * num_items // world)
            features, present, problems = encode_catalogue(encoders[m], m, self.loader((m,), mine), num_items, device)
            out[m] = sum_across_ranks(features, present, problems, device)
            if rank == 0:
                with FileLock(str(path) + ".lock"):
                    write_cache(path, *out[m])
        return out

    def load_or_encode_whole(
        self, path: Path, encoder: ModalityEncoder, modality: str, num_items: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """The whole catalogue by one process (on the engine, when there is one); under several processes
        rank 0 computes it while the others wait at a barrier, then read the file."""
        rank, world = rank_and_world()
        if rank == 0:
            result = load_or_encode(
                path,
                lambda: (
                    self.engine(encoder, modality, num_items)
                    if self.engine is not None
                    else encode_catalogue(encoder, modality, self.loader((modality,)), num_items, device)
                ),
            )
        if world > 1:
            dist.barrier()
        return result if rank == 0 else read_cache(path)

    def presence(self, modalities: tuple[str, ...], num_items: int) -> tuple[dict[str, torch.Tensor], list[str]]:
        """(I,) presence of each of ``modalities`` over the catalogue (one featurizer pass), and the media problems."""
        present = {m: torch.zeros(num_items, dtype=torch.bool) for m in modalities}
        problems: list[str] = []
        for batch in tqdm(self.loader(modalities), desc=f"checking {', '.join(modalities)}", unit="batch", leave=False):
            problems.extend(batch.problems)
            for m in modalities:
                present[m][batch.index] = batch.present[m]
        return present, problems
