"""The two towers: items from their content (plus an optional ID), users from their history."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

USER_POOLINGS = ("attn", "mean")
EMPTY_ITEM_POLICIES = ("error", "learned")


def unit(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """A tower's output: L2-normalised (scores are cosines times the softmax's 1 / temperature) or,
    with ``model.normalize=false``, as it is (SASRec's plain dot product; the norm can carry how
    likely an item is at all, which a cosine cannot)."""
    return F.normalize(x, dim=-1) if normalize else x


def id_table(rows: int, dim: int, std: float, sparse: bool) -> nn.Embedding:
    """An ID embedding table, N(0, std). ``sparse``: its gradient holds only the rows a batch touched,
    and the training module updates it with ``torch.optim.SparseAdam``, so a step costs those rows
    rather than the whole table (``model.sparse_ids``, for catalogues of millions of items)."""
    table = nn.Embedding(rows, dim, sparse=sparse)
    nn.init.normal_(table.weight, std=std)
    return table


@dataclass
class ItemTowerOutput:
    embedding: torch.Tensor  # (M, D), L2-normalised unless model.normalize=false
    modality_weights: torch.Tensor | None = None  # (M, n_modalities) from the fusion, if it has them


def modality_dropout(present: dict[str, torch.Tensor], p: float) -> dict[str, torch.Tensor]:
    """Drop each present modality with probability ``p``, never all of an item's modalities."""
    if p <= 0 or len(present) < 2:
        return present
    names = sorted(present)
    mask = torch.stack([present[m] for m in names], dim=1)  # (M, n)
    kept = mask & (torch.rand(mask.shape, device=mask.device) >= p)
    kept = torch.where(kept.any(dim=1, keepdim=True), kept, mask)
    return {m: kept[:, i] for i, m in enumerate(names)}


class ProjectionHead(nn.Module):
    """Maps one modality's encoder output to the shared width: LayerNorm, MLP."""

    def __init__(self, in_dim: int, dim: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ItemTower(nn.Module):
    """Content embedding (projections -> fusion) plus an optional item-ID embedding.

    The ID embedding is dropped per item with probability ``id_dropout`` in training, so the
    tower also learns to embed items from content alone (cold-start items have untrained IDs).
    Items with no modality present embed from their ID when ``item_id`` is set; otherwise
    ``empty_items`` decides: 'learned' gives them one shared learned vector (for single-modality
    ablations on catalogues where some items lack that modality); 'error' means training refuses
    such a catalogue before the first step (RecModule.check_empty_items), so none reaches here.
    """

    def __init__(
        self,
        projections: nn.ModuleDict,
        fusion: nn.Module | None,
        dim: int,
        num_items: int,
        item_id: bool = False,
        id_dropout: float = 0.5,
        modality_dropout: float = 0.0,
        empty_items: str = "error",
        trained_ids: torch.Tensor | None = None,
        id_init_std: float = 0.02,
        sparse_ids: bool = False,
        normalize: bool = True,
    ):
        """``trained_ids`` (num_items,) bool: items with training interactions. The others (cold
        items) never get their untrained ID vector: they embed from content alone."""
        super().__init__()
        if fusion is None and not item_id:
            raise ValueError(
                "the item tower has no content (no modality enabled) and model.item_id is false: it would "
                "have nothing to embed"
            )
        if empty_items not in EMPTY_ITEM_POLICIES:
            raise ValueError(f"unknown model.empty_items '{empty_items}': expected one of {EMPTY_ITEM_POLICIES}")
        self.projections, self.fusion, self.dim = projections, fusion, dim
        self.empty = nn.Parameter(torch.randn(dim) * 0.02) if empty_items == "learned" else None
        self.id_embedding = id_table(num_items, dim, id_init_std, sparse_ids) if item_id else None
        trained = torch.ones(num_items, dtype=torch.bool) if trained_ids is None else trained_ids.bool()
        self.register_buffer("trained_ids", trained.clone())
        self.id_dropout = id_dropout if fusion is not None else 0.0
        self.modality_dropout = modality_dropout
        self.normalize = normalize

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted(self.projections))

    def forward(
        self,
        features: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor],
        index: torch.Tensor,
        use_ids: bool = True,
    ) -> ItemTowerOutput:
        """features[m]: (M, D_m) encoder outputs; present[m]: (M,); index: (M,) catalogue ids.
        ``use_ids=False`` embeds from content alone (new items, text queries, explanations)."""
        out = torch.zeros(len(index), self.dim, device=index.device)
        weights = None
        if self.fusion is not None:
            if self.training:
                present = modality_dropout(present, self.modality_dropout)
            names = sorted(self.projections)
            has_content = torch.stack([present[m] for m in names], dim=1).any(dim=1)
            # Items with no modality pass through the fusion as if their first modality (zeros) were
            # present, and are zeroed after: selecting the others would be a host sync every step.
            present = {m: present[m] | (~has_content if i == 0 else False) for i, m in enumerate(names)}
            projected = {m: self.projections[m](features[m]) for m in names}
            fused = self.fusion(projected, present)
            content = has_content.unsqueeze(1)
            out = torch.where(content, fused.embedding.to(out.dtype), out)
            if self.empty is not None:
                out = out + (~content).to(out.dtype) * self.empty
            if fused.weights is not None:
                weights = torch.where(content, fused.weights, torch.zeros((), device=out.device))
        if self.id_embedding is not None and use_ids:
            keep = self.trained_ids[index].unsqueeze(1).to(out.dtype)  # (M, 1)
            if self.training and self.id_dropout > 0:
                keep = keep * (torch.rand(len(index), 1, device=index.device) >= self.id_dropout).to(out.dtype)
            out = out + self.id_embedding(index) * keep
        return ItemTowerOutput(unit(out, self.normalize), weights)


class UserTower(nn.Module):
    """Pools the item-tower embeddings of a user's last N items (attention or mean), plus an
    optional user-ID embedding. A learned 'start' token is always attended to, so users with
    an empty history still embed."""

    def __init__(
        self,
        dim: int,
        history_length: int,
        num_users: int,
        pooling: str = "attn",
        user_id: bool = False,
        heads: int = 4,
        dropout: float = 0.1,
        id_init_std: float = 0.02,
        sparse_ids: bool = False,
        normalize: bool = True,
    ):
        super().__init__()
        if pooling not in USER_POOLINGS:
            raise ValueError(f"unknown model.user_pooling '{pooling}': expected one of {USER_POOLINGS}")
        if dim % heads:
            raise ValueError(f"model.dim={dim} is not divisible by the user tower's heads={heads}")
        if history_length == 0 and not user_id:
            raise ValueError(
                "data.history_length=0 leaves the user tower nothing to embed users from: "
                "set model.user_id=true (a user-ID embedding, MF-style) or a positive history length"
            )
        self.pooling, self.normalize = pooling, normalize
        self.start = nn.Parameter(torch.randn(dim) * 0.02)
        self.position = nn.Parameter(torch.zeros(history_length, dim))
        self.query = nn.Parameter(torch.randn(dim) * 0.02)
        self.attention = (
            nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) if pooling == "attn" else None
        )
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.id_embedding = id_table(num_users, dim, id_init_std, sparse_ids) if user_id else None

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """history: (B, N, D) item embeddings; history_mask: (B, N); user: (B,) -> (B, D)."""
        b = len(history)
        tokens = torch.cat([self.start.expand(b, 1, -1), history + self.position[-history.shape[1] :]], dim=1)
        mask = torch.cat([history_mask.new_ones(b, 1), history_mask], dim=1)  # (B, 1 + N)
        if self.attention is None:
            pooled = (tokens * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        else:
            pooled, _ = self.attention(
                self.query.expand(b, 1, -1), tokens, tokens, key_padding_mask=~mask, need_weights=False
            )
            pooled = pooled.squeeze(1)
        out = self.out(pooled)
        if self.id_embedding is not None:  # user -1: no stored user (a new user, or a service request without one)
            known = (user >= 0).unsqueeze(1).to(out.dtype)
            out = out + self.id_embedding(user.clamp(min=0)) * known
        return unit(out, self.normalize)


class SequentialUserTower(nn.Module):
    """SASRec-style user tower: a causal transformer over the history (position embeddings,
    a start token every position can attend to); the output at the most recent position is the
    user. Trained with the in-batch softmax on the next item when ``data.history_mode=before``."""

    def __init__(
        self,
        dim: int,
        history_length: int,
        num_users: int,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        user_id: bool = False,
        id_init_std: float = 0.02,
        sparse_ids: bool = False,
        normalize: bool = True,
        input_dropout: float = 0.0,
        ffn: int | None = None,
    ):
        """``input_dropout``: dropout on the history's item embeddings (plus positions) before the
        first layer, as SASRec drops its input embeddings; 0 leaves them whole. ``ffn``: the width of
        each layer's feed-forward block (None: 4 x dim; SASRec as UniSRec trains it: 256 at dim 300)."""
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.dim={dim} is not divisible by the sequential tower's heads={heads}")
        self.start = nn.Parameter(torch.randn(dim) * 0.02)
        self.position = nn.Parameter(torch.randn(history_length + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, ffn or 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.LayerNorm(dim)
        self.normalize = normalize
        self.input_dropout = nn.Dropout(input_dropout)
        self.id_embedding = id_table(num_users, dim, id_init_std, sparse_ids) if user_id else None

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """history: (B, N, D) right-aligned item embeddings; history_mask: (B, N); user: (B,) -> (B, D)."""
        return self.forward_all(history, history_mask, user)[:, -1]

    def forward_all(self, history: torch.Tensor, history_mask: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """The user after each history position, (B, N, D): position j has seen items
        0..j only (causal), so all N next-item targets train in one pass (data.train_unit=sequence)."""
        b, n, _ = history.shape
        tokens = torch.cat([self.start.expand(b, 1, -1), history], dim=1) + self.position[-(n + 1) :]  # (B, 1 + N, D)
        tokens = self.input_dropout(tokens)
        padding = torch.cat([history_mask.new_zeros(b, 1), ~history_mask], dim=1)  # True = ignored
        causal = torch.triu(torch.ones(n + 1, n + 1, dtype=torch.bool, device=history.device), diagonal=1)
        out = self.out(self.transformer(tokens, mask=causal, src_key_padding_mask=padding)[:, 1:])  # (B, N, D)
        if self.id_embedding is not None:
            known = (user >= 0).to(out.dtype).view(b, 1, 1)
            out = out + self.id_embedding(user.clamp(min=0)).unsqueeze(1) * known
        return unit(out, self.normalize)
