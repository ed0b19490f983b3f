"""The features modality: precomputed per-item vectors (audio embeddings such as VGGish or Whisper,
image or text features extracted elsewhere) through a learned projection into the fusion.

The vectors come from a file under the data root, one row per item:
    .npy          (N, D) float rows in catalogue order, read with allow_pickle=False
    .safetensors  one (N, D) float tensor (or the one named by ``key``) in catalogue order
    .parquet      an ``item_id`` column and a list column ``key`` (default: the other column);
                  items absent from the table have no vector
or, for an item added to a running service, from the request's field ``column``. A row of NaN (or
an item without a row) marks the modality missing for that item, counted and logged. Several named
feature sets are several modalities (``encoder/vggish``, ``encoder/whisper``), each its own key
under ``encoder``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmrec.data.schema import Catalogue, DataError
from mmrec.modalities import Feature, Modality
from mmrec.models.adapt import ModalityEncoder

log = logging.getLogger(__name__)
SUFFIXES = (".npy", ".safetensors", ".parquet")


def read_matrix(path: Path, key: str | None) -> np.ndarray:
    """(N, D) float rows from a .npy or .safetensors file; errors name the file and what was expected."""
    if path.suffix == ".npy":
        try:
            matrix = np.load(path, allow_pickle=False)
        except ValueError as err:  # object arrays need pickle, which is refused
            raise DataError(f"{path}: refused, it holds Python objects (a pickle); expected a float matrix") from err
    else:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        if key is None and len(tensors) != 1:
            raise DataError(f"{path}: holds tensors {sorted(tensors)}: name one with featurizer.key")
        if key is not None and key not in tensors:
            raise DataError(f"{path}: no tensor '{key}' (has {sorted(tensors)})")
        matrix = tensors[key] if key is not None else next(iter(tensors.values()))
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise DataError(f"{path}: expected a 2-D float matrix (items x dim), got shape {matrix.shape} {matrix.dtype}")
    return matrix


def read_parquet_vectors(path: Path, key: str | None, item_ids: pd.Series, dim: int | None) -> np.ndarray:
    """(N, D) rows for ``item_ids`` from a Parquet table of item_id + a list column; NaN where absent."""
    table = pd.read_parquet(path)
    if "item_id" not in table.columns:
        raise DataError(f"{path}: no 'item_id' column (columns: {list(table.columns)})")
    others = [c for c in table.columns if c != "item_id"]
    column = key or (others[0] if len(others) == 1 else None)
    if column not in table.columns:
        raise DataError(f"{path}: name the vector column with featurizer.key (columns: {others})")
    vectors = np.stack([np.asarray(v, dtype=np.float32) for v in table[column]]) if len(table) else None
    width = vectors.shape[1] if vectors is not None else dim
    rows = pd.Series(np.arange(len(table)), index=table["item_id"].astype(str))
    out = np.full((len(item_ids), width or 0), np.nan, dtype=np.float32)
    found = item_ids.isin(rows.index).to_numpy()
    out[found] = vectors[rows[item_ids[found]].to_numpy()]
    return out


class FeaturesFeaturizer:
    """Each item's precomputed vector as a (D,) float32 input (mask (1,)); see the module docstring."""

    def __init__(
        self,
        catalogue: Catalogue,
        column: str,
        path: str | None = None,
        key: str | None = None,
        dim: int | None = None,
    ):
        """``column``: the request field (and items-table column) that may carry a vector; ``path``: the
        file under the data root; ``dim``: the expected width, checked against the file."""
        self.column, self.path, self.key = column, path, key
        items = catalogue.items
        if column in items.columns and items[column].map(lambda v: isinstance(v, (list, np.ndarray))).any():
            matrix = np.stack([vector_or_nan(v, dim, column) for v in items[column]])
            self.source = f"items.{column}"
        elif path:
            file = catalogue.media_path(path)
            if file.suffix not in SUFFIXES or not file.is_file():
                raise FileNotFoundError(f"encoder.{column}.featurizer.path: {file} is not a {'/'.join(SUFFIXES)} file")
            if file.suffix == ".parquet":
                matrix = read_parquet_vectors(file, key, items["item_id"], dim)
            else:
                matrix = read_matrix(file, key)
                if len(matrix) != len(items):
                    raise DataError(
                        f"{file}: {len(matrix)} rows, but the catalogue has {len(items)} items (row i must be item i)"
                    )
            self.source = str(file)
        else:  # a request without this field: the item simply lacks the modality
            matrix = np.full((len(items), dim or 0), np.nan, dtype=np.float32)
            self.source = "none"
        if dim is not None and matrix.shape[1] != dim:
            raise ValueError(
                f"encoder.{column}: featurizer.dim={dim}, but {self.source} holds {matrix.shape[1]}-d vectors"
            )
        self.vectors = torch.from_numpy(np.nan_to_num(matrix.astype(np.float32, copy=False), nan=0.0))
        self.present = torch.from_numpy(~np.isnan(matrix).any(axis=1))
        missing = int((~self.present).sum())
        if missing and self.source != "none":
            log.warning(
                "%s: %d of %d items have no vector (NaN or absent row); %s is missing for them",
                self.source,
                missing,
                len(items),
                column,
            )

    def __call__(self, index: int, problems: list[str]) -> Feature:
        present = bool(self.present[index])
        return Feature(self.vectors[index], torch.tensor([present]), present)

    def settings(self) -> dict:
        return {"column": self.column, "path": self.path, "key": self.key, "dim": self.dim}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def media_files(self) -> list[Path]:
        """The vectors file: its size and time key the frozen-encoder cache."""
        return [Path(self.source)] if self.source not in ("none", f"items.{self.column}") else []

    def encoder_kwargs(self) -> dict:
        return {"dim": self.dim}


def vector_or_nan(value, dim: int | None, column: str) -> np.ndarray:
    """A request's vector as float32, or a NaN row where the item has none."""
    if isinstance(value, (list, np.ndarray)):
        vector = np.asarray(value, dtype=np.float32)
        if vector.ndim != 1 or (dim is not None and len(vector) != dim):
            raise ValueError(f"{column}: expected a list of {dim or 'D'} numbers, got shape {vector.shape}")
        return vector
    return np.full(dim or 0, np.nan, dtype=np.float32)


class VectorBackbone(nn.Module):
    """(B, D) vectors + (B, 1) mask -> (B, D): the vectors as they are (the projection head learns)."""

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return vectors.float()


def build_encoder(dim: int, mode: str = "frozen") -> ModalityEncoder:
    """The features encoder; ``dim`` comes from the featurizer. It has no weights (the projection head
    learns): ``frozen`` reads the vectors once into the cache, ``full`` passes them in every batch."""
    if mode not in ("frozen", "full"):
        raise ValueError(f"encoder mode '{mode}' for precomputed features: expected frozen or full (nothing to adapt)")
    return ModalityEncoder(VectorBackbone(), dim, mode)


class FeaturesModality(Modality):
    """Precomputed vectors: an exported model takes a new item's vector in the request."""

    def request_fields(self, featurizer_config: Mapping) -> dict[str, str]:
        return {featurizer_config["column"]: "vector"}

    def offline_config(self, config: dict, encoder, featurizer, folder: Path, bundle_path: str) -> dict:
        config["featurizer"].update(path=None, dim=featurizer.dim)  # catalogue vectors are in the bundle
        return config

    def example_inputs(self, featurizer_config: Mapping, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        dim = self.example_encoder_kwargs(featurizer_config)["dim"]
        return torch.randn(batch, dim), torch.ones(batch, 1, dtype=torch.bool)

    def example_encoder_kwargs(self, featurizer_config: Mapping) -> dict:
        return {"dim": featurizer_config.get("dim") or 128}


MODALITY = FeaturesModality()
