"""The two-tower recommender: encoders -> item tower, item embeddings of the history -> user tower."""

from __future__ import annotations

import torch
from torch import nn

from mmrec.models.towers import ItemTower, ItemTowerOutput, UserTower


class TwoTowerModel(nn.Module):
    """Holds built encoders (one ModalityEncoder per modality) and the two towers.

    Encoders are separate from the item tower so that frozen encoders can be run once over the
    catalogue and their outputs cached: ``item_tower`` takes encoder outputs either way.
    """

    def __init__(self, encoders: nn.ModuleDict, item_tower: ItemTower, user_tower: UserTower):
        super().__init__()
        self.encoders, self.item_tower, self.user_tower = encoders, item_tower, user_tower

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted(self.encoders))

    def encoder_dims(self) -> dict[str, int]:
        return {m: self.encoders[m].output_dim for m in self.modalities}

    def encode(self, inputs: dict[str, torch.Tensor], input_mask: dict[str, torch.Tensor], present: dict[str, torch.Tensor], modalities: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Run the encoders of ``modalities`` (default: those in ``inputs``): each (M, ...) -> (M, D_m)."""
        names = sorted(inputs) if modalities is None else sorted(modalities)
        return {m: self.encoders[m](inputs[m], input_mask[m], present[m]) for m in names}

    def embed_items(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor], index: torch.Tensor) -> ItemTowerOutput:
        return self.item_tower(features, present, index)

    def embed_users(self, history: torch.Tensor, history_mask: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        return self.user_tower(history, history_mask, user)
