"""Modalities as plugins: each module here owns one modality from raw columns to an embedding.

A modality module holds
  * a featurizer class, built from the dataset (``Featurizer(dataset, **options)``), that turns
    catalogue row ``index`` into a ``Feature`` (the encoder's input tensor, its element mask and
    whether the item has the modality at all) and states which media files and settings it
    depends on (they key the frozen-encoder cache) and the data-dependent sizes the encoder
    needs (``encoder_kwargs``, e.g. a vocabulary size);
  * a ``build_encoder(**options)`` function returning a ``ModalityEncoder``.
Both are named in the modality's YAML (``conf/encoder/<modality>/*.yaml``): the encoder as the
node's ``_target_`` and the featurizer under ``featurizer._target_``. A fourth modality is one
module plus its YAML and a ``encoder/<name>: none`` line in ``conf/train.yaml``; nothing else in
mmrec names modalities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch


@dataclass
class Feature:
    """One item's input for one modality."""

    value: torch.Tensor  # what the encoder takes, e.g. text (L,) ids, image (F, 3, H, W), audio (T,)
    mask: torch.Tensor  # True on real elements: text (L,), image (F,), audio (T,)
    present: bool  # False when the item has no usable value of this modality


class Featurizer(Protocol):
    """What the data layer needs of a modality's featurizer."""

    def __call__(self, index: int, problems: list[str]) -> Feature:
        """Row ``index`` of the catalogue; each bad media file appends "path: reason" to ``problems``."""

    def settings(self) -> dict:
        """Every setting that changes the featurizer's output (JSON-serialisable)."""

    def media_files(self) -> list[Path]:
        """Every media file the featurizer may read (their sizes and times key the cache)."""

    def encoder_kwargs(self) -> dict:
        """Data-dependent sizes passed to the modality's ``build_encoder`` (often empty)."""
