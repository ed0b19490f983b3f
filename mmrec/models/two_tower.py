"""The two-tower recommender: encoders -> item tower, item embeddings of the history -> user tower.

The model owns every trained parameter, the contrastive temperature and the pointwise scorer
included, so a saved model is complete; losses are functions of its outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mmrec.data.csr import PairSet
from mmrec.models.adapt import ModalityEncoder
from mmrec.models.towers import ItemTower, ItemTowerOutput


class PointwiseScorer(nn.Module):
    """Turns the towers' similarity (a cosine unless ``model.normalize=false``) into a calibrated
    logit: ``scale * u.i + bias`` (both learned)."""

    def __init__(self, init_scale: float = 10.0, init_bias: float = -5.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(init_scale))
        self.bias = nn.Parameter(torch.tensor(init_bias))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users (B, D) with items (B, D) or (B, K, D) -> logits (B,) or (B, K)."""
        if items.dim() == 3:
            return self.scale * torch.einsum("bd,bkd->bk", users, items) + self.bias
        return self.scale * (users * items).sum(-1) + self.bias


class FeatureTable(nn.Module):
    """The frozen encoders' outputs over the whole catalogue, per modality: (I, D_m) features and (I,)
    presence, held as non-persistent buffers (they move with the model, and checkpoints and bundles
    keep weights only: the table is rebuilt from the frozen encoders or their disk cache)."""

    def set(self, modality: str, features: torch.Tensor, present: torch.Tensor) -> None:
        self.register_buffer(f"{modality}_features", features, persistent=False)
        self.register_buffer(f"{modality}_present", present, persistent=False)

    def get(self, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"{modality}_features"), getattr(self, f"{modality}_present")

    def gather(self, modalities: tuple[str, ...], index: torch.Tensor | None = None):
        """(features, present) dicts of ``modalities`` for catalogue rows ``index`` (None: every row)."""
        features, present = {}, {}
        for m in modalities:
            f, p = self.get(m)
            features[m], present[m] = (f, p) if index is None else (f[index], p[index])
        return features, present


class TwoTowerModel(nn.Module):
    """Built encoders (one ModalityEncoder per modality), the two towers, the temperature and the scorer.

    Encoders are separate from the item tower so that frozen encoders can be run once over the
    catalogue and their outputs cached: ``item_tower`` takes encoder outputs either way.
    ``logit_scale`` is log(1 / temperature), CLIP-style; ``clamp_()`` keeps it in
    [0, log(max_logit_scale)] and is called after every optimiser step.
    """

    def __init__(
        self,
        encoders: dict[str, ModalityEncoder],
        item_tower: ItemTower,
        user_tower: nn.Module,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        max_logit_scale: float = 100.0,
    ):
        super().__init__()
        if not 0 < temperature:
            raise ValueError(f"model.temperature must be > 0, got {temperature}")
        self.encoders, self.item_tower, self.user_tower = nn.ModuleDict(encoders), item_tower, user_tower
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_temperature)
        self.max_log_scale = math.log(max_logit_scale)
        self.scorer = PointwiseScorer()
        self.frozen = FeatureTable()  # the frozen encoders' outputs, filled by the trainer (never saved)
        self.clamp_()

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted(self.encoders))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp the temperature parameter itself (not a copy), as open_clip does after each step."""
        self.logit_scale.clamp_(0.0, self.max_log_scale)

    def encode(
        self,
        inputs: dict[str, torch.Tensor],
        input_mask: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor],
        modalities: tuple[str, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the encoders of ``modalities`` (default: those in ``inputs``): each (M, ...) -> (M, D_m)."""
        names = sorted(inputs) if modalities is None else sorted(modalities)
        return {m: self.encoders[m](inputs[m], input_mask[m], present[m]) for m in names}

    def embed_items(
        self,
        features: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor],
        index: torch.Tensor,
        use_ids: bool = True,
    ) -> ItemTowerOutput:
        return self.item_tower(features, present, index, use_ids)

    def embed_users(self, history: torch.Tensor, history_mask: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """history (B, N, D) item embeddings, history_mask (B, N), user (B,) -> (B, D)."""
        return self.user_tower(history, history_mask, user)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The pointwise (BCE) logit of users (B, D) with items (B, D) or (B, K, D)."""
        return self.scorer(users, items)


@dataclass
class TwoTowerOutput:
    """Everything a loss term may use from one training step (local rows; terms gather as needed)."""

    users: torch.Tensor  # (B, D) user embeddings (L2-normalised unless model.normalize=false)
    pos_items: torch.Tensor  # (B, D) their positive items
    neg_items: torch.Tensor  # (B, K, D) sampled negatives
    user_ids: torch.Tensor  # (B,)
    pos_ids: torch.Tensor  # (B,) catalogue index of each positive
    neg_ids: torch.Tensor  # (B, K)
    logit_scale: torch.Tensor  # () log(1 / temperature), the model's parameter
    pos_logits: torch.Tensor  # (B,) pointwise scorer on the positives
    neg_logits: torch.Tensor  # (B, K) pointwise scorer on the negatives
    log_q: torch.Tensor  # (B,) log sampling probability of each positive (for logQ correction)
    known: PairSet | None = None  # (user, item) training interactions: never treated as negatives
    valid: torch.Tensor | None = None  # (B,) rows that exist (padded positions of sequence training are not)
    catalogue: torch.Tensor | None = None  # (I, D) every item's embedding, for terms that rank the whole catalogue
