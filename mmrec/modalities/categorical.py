"""The categorical-metadata modality: genres, tags, language, duration bucket, ... as a multi-hot
set of tokens per item (a ``|``-separated column, e.g. ``Comedy|Drama`` or ``lang:en|dur:short``),
encoded by a learned embedding bag (mean of the item's tag embeddings)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mmrec.data.schema import Catalogue
from mmrec.modalities import Feature, Modality
from mmrec.models.adapt import ModalityEncoder, apply_training_mode, masked_mean

SEPARATOR = "|"
PADDING = 0  # vocabulary index 0 pads; tags start at 1


class CategoricalFeaturizer:
    """Maps each item's tags to vocabulary indices (the vocabulary is every tag in the catalogue,
    sorted); at most ``max_tags`` per item, in the order they are listed."""

    def __init__(
        self, catalogue: Catalogue, column: str = "tags", max_tags: int = 8, vocabulary: list[str] | None = None
    ):
        """``vocabulary``: a fixed one (a trained model's, for new items); tags outside it are ignored."""
        if column not in catalogue.items.columns:
            raise ValueError(
                f"encoder.tags.featurizer.column: '{column}' is not a column of the items table of '{catalogue.name}' "
                f"(columns: {list(catalogue.items.columns)}); add it, or drop the modality with encoder/tags=none"
            )
        if max_tags < 1:
            raise ValueError(f"encoder.tags.featurizer.max_tags must be >= 1, got {max_tags}")
        self.column, self.max_tags = column, max_tags
        cells = [[t.strip() for t in str(cell).split(SEPARATOR) if t.strip()] for cell in catalogue.items[column]]
        self.vocabulary = list(vocabulary) if vocabulary is not None else sorted({t for tags in cells for t in tags})
        index = {t: i + 1 for i, t in enumerate(self.vocabulary)}
        self.ids = torch.full((len(cells), max_tags), PADDING, dtype=torch.long)
        for row, tags in enumerate(cells):
            kept = [t for t in dict.fromkeys(tags) if t in index][:max_tags]
            self.ids[row, : len(kept)] = torch.tensor([index[t] for t in kept], dtype=torch.long)

    def __call__(self, index: int, problems: list[str]) -> Feature:
        ids = self.ids[index]
        mask = ids != PADDING
        return Feature(ids, mask, bool(mask.any()))

    def settings(self) -> dict:
        return {"column": self.column, "max_tags": self.max_tags, "vocabulary": self.vocabulary}

    def media_files(self) -> list[Path]:
        return []

    def encoder_kwargs(self) -> dict:
        return {"num_tags": len(self.vocabulary) + 1}


class TagBag(nn.Module):
    """(B, T) tag ids + (B, T) mask -> (B, D): the mean of the item's tag embeddings."""

    def __init__(self, num_tags: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(num_tags, dim, padding_idx=PADDING)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.embedding(ids), mask)


def build_encoder(num_tags: int, dim: int = 32, mode: str = "full") -> ModalityEncoder:
    """The tag encoder; ``num_tags`` (vocabulary + padding) comes from the featurizer."""
    if mode == "lora":
        raise ValueError("encoder.tags.mode=lora: a tag embedding has no linear layers to adapt; use full or frozen")
    bag = apply_training_mode(TagBag(num_tags, dim), mode, [])
    return ModalityEncoder(bag, dim, mode)


class CategoricalModality(Modality):
    """Tags as a learned embedding bag; the trained vocabulary travels with an export."""

    def request_fields(self, featurizer_config: Mapping) -> dict[str, str]:
        return {featurizer_config.get("column", "tags"): "text"}

    def offline_config(self, config: dict, encoder, featurizer, folder: Path, bundle_path: str) -> dict:
        config["featurizer"]["vocabulary"] = featurizer.vocabulary
        return config

    def example_inputs(self, featurizer_config: Mapping, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        tags = featurizer_config.get("max_tags", 8)
        return torch.randint(1, 64, (batch, tags)), torch.ones(batch, tags, dtype=torch.bool)

    def example_encoder_kwargs(self, featurizer_config: Mapping) -> dict:
        return {"num_tags": 64}


MODALITY = CategoricalModality()
