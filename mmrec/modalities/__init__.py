"""Modalities as plugins: each module here owns one modality, from item rows to an embedding.

A modality module defines ``MODALITY``, a ``Modality`` that holds everything about it:
  * its featurizer class, built from item rows (``Featurizer(catalogue, **options)``, a
    ``Catalogue`` of one or a million rows), that turns row ``index`` into a ``Feature`` (the
    encoder's input tensor, its element mask and whether the item has the modality at all) and
    states which media files and settings it depends on (they key the frozen-encoder cache) and
    the data-dependent sizes its encoder needs (``encoder_kwargs``, e.g. a vocabulary size);
  * ``build_encoder(**options)``, returning a ``ModalityEncoder``;
  * how its config is rewritten for an export bundle (``offline_config``) and for random-init
    benchmarks (``random_init``), example inputs for the benchmark (``example_inputs``), the item
    fields a serving request may carry (``request_fields``), and whether it embeds search queries.
The YAML of a modality (``conf/encoder/<name>/*.yaml``) names the encoder as the node's
``_target_`` and the featurizer under ``featurizer._target_``; ``modality_of(config)`` finds the
``MODALITY`` of the encoder's module. Nothing outside this package dispatches on a modality's
name or a ``_target_`` string, so a new modality (mmrec's or a user's own package) is one module
plus its YAML and an ``encoder/<name>: none`` line in ``conf/train.yaml``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import torch

from mmrec.data.features import Feature, Featurizer  # noqa: F401  (a modality module's building blocks)

# Kinds of item field a serving request may carry, and the JSON each takes.
FIELD_KINDS = {
    "text": "a string",
    "path": "a media path (string)",
    "paths": "a list of media paths",
    "vector": "a list of numbers",
}


class Modality:
    """One modality's parts and policies; the defaults fit a modality that needs no rewriting.

    ``reads_media``: its featurizer decodes media files (media shards and the data benchmark
    apply); ``embeds_queries``: a free-text search query can be embedded through it."""

    reads_media = False
    embeds_queries = False

    def request_fields(self, featurizer_config: Mapping) -> dict[str, str]:
        """The item fields (name -> kind in FIELD_KINDS) a request adding an item may carry for it."""
        return {}

    def offline_config(self, config: dict, encoder, featurizer, folder: Path, bundle_path: str) -> dict:
        """``config`` rewritten to rebuild this encoder and featurizer with no download and no training
        data: weights come from the bundle; files it needs may be written into ``folder``, which the
        rewritten config names as ``bundle_path``."""
        return config

    def with_mode(self, config: dict, mode: str) -> dict:
        """``config`` with its encoder in training ``mode`` (frozen / full / lora), and whatever else
        that mode needs (benchmarks switch every encoder between frozen and full)."""
        return {**config, "mode": mode}

    def random_init(self, config: dict) -> dict:
        """``config`` rewritten to build the architecture alone, with nothing downloaded (benchmarks)."""
        return config

    def example_inputs(self, featurizer_config: Mapping, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, mask) of the featurizer's output shapes for ``batch`` items, every element real."""
        raise NotImplementedError(f"{type(self).__name__} gives no example inputs")

    def example_encoder_kwargs(self, featurizer_config: Mapping) -> dict:
        """The data-dependent encoder sizes (``Featurizer.encoder_kwargs``) of ``example_inputs``."""
        return {}

    def query_inputs(self, featurizer, queries: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, ...) encoder inputs and mask for search queries (only where ``embeds_queries``)."""
        raise ValueError(f"{type(self).__name__} cannot embed a search query")


def modality_of(config: Mapping, where: str = "encoder") -> Modality:
    """The ``MODALITY`` of the module that defines ``config``'s encoder ``_target_``."""
    target = str(config.get("_target_") or "")
    module_name = target.rpartition(".")[0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{where}._target_={target!r}: its module {module_name!r} cannot be imported ({err})") from err
    modality = getattr(module, "MODALITY", None)
    if not isinstance(modality, Modality):
        raise ValueError(
            f"{where}._target_={target!r}: the module {module_name} defines no MODALITY (a modality module "
            "defines MODALITY = a mmrec.modalities.Modality holding its featurizer, encoder and policies)"
        )
    return modality
