"""Builds a TwoTowerModel from flat configuration values (what a Hydra config holds)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from mmrec.models.encoders.audio import build_audio_encoder
from mmrec.models.encoders.image import build_image_encoder
from mmrec.models.encoders.text import build_text_encoder
from mmrec.models.fusion import build_fusion
from mmrec.models.towers import ItemTower, ProjectionHead, UserTower
from mmrec.models.two_tower import TwoTowerModel

ENCODER_BUILDERS = {"text": build_text_encoder, "image": build_image_encoder, "audio": build_audio_encoder}
# Keys of an encoder config that describe data preprocessing, not the model.
MEDIA_KEYS = ("kind", "max_text_length", "image_size", "num_frames", "sample_rate", "audio_seconds")


def enabled_encoders(encoders: Mapping[str, Mapping | None]) -> dict[str, dict]:
    """The encoder configs that are switched on (a config with ``kind: none`` drops the modality)."""
    out = {}
    for modality, config in sorted(encoders.items()):
        if modality not in ENCODER_BUILDERS:
            raise ValueError(f"unknown modality '{modality}' under encoder: expected one of {sorted(ENCODER_BUILDERS)}")
        if config and config.get("kind", "none") != "none":
            out[modality] = dict(config)
    return out


def build_encoder(modality: str, config: Mapping) -> nn.Module:
    """One ModalityEncoder from its config (media keys are dropped: they configure the data)."""
    kwargs = {k: v for k, v in config.items() if k not in MEDIA_KEYS}
    try:
        return ENCODER_BUILDERS[modality](**kwargs)
    except TypeError as err:
        raise ValueError(f"encoder.{modality}: bad option(s) {sorted(kwargs)} ({err})") from err


def build_model(
    encoders: Mapping[str, Mapping | None],
    num_items: int,
    num_users: int,
    fusion: str = "attn",
    dim: int = 128,
    fusion_layers: int = 2,
    fusion_heads: int = 4,
    dropout: float = 0.1,
    modality_dropout: float = 0.1,
    item_id: bool = False,
    id_dropout: float = 0.5,
    user_id: bool = False,
    user_pooling: str = "attn",
    history_length: int = 20,
    empty_items: str = "error",
) -> TwoTowerModel:
    """Encoders -> per-modality projections -> fusion -> item tower; history pooling -> user tower.

    With no encoder enabled the item tower is a pure ID embedding (``item_id`` must be true).
    """
    configs = enabled_encoders(encoders)
    built = nn.ModuleDict({m: build_encoder(m, c) for m, c in configs.items()})
    projections = nn.ModuleDict({m: ProjectionHead(built[m].output_dim, dim, dropout) for m in built})
    fusion_module = build_fusion(fusion, tuple(built), dim, fusion_layers, fusion_heads, dropout) if built else None
    if fusion_module is None and not item_id:
        raise ValueError("no encoder is enabled and model.item_id is false: the item tower would have nothing to embed")
    item_tower = ItemTower(projections, fusion_module, dim, num_items if item_id else None, id_dropout if built else 0.0, modality_dropout, empty_items)
    user_tower = UserTower(dim, history_length, user_pooling, num_users if user_id else None, fusion_heads, dropout)
    return TwoTowerModel(built, item_tower, user_tower)
