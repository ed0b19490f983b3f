"""Fusion of per-modality item embeddings into one content embedding.

Every fusion takes ``embeddings[m]`` (B, D) and ``present[m]`` (B,) bool for the modalities it
was built with, and returns a FusionOutput with the (B, D) embedding and, where the method has
them, per-modality weights (B, M) in sorted-modality order (zero for absent modalities).
Absent modalities never influence the output; a row with no modality present is an error.

Each class is a Hydra ``_target_`` (``conf/fusion/*.yaml``) built with ``modalities`` and ``dim``
given by mmrec.build; a fusion of your own is one class with that signature plus one YAML.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmrec.models.adapt import masked_mean


@dataclass
class FusionOutput:
    embedding: torch.Tensor  # (B, D)
    weights: torch.Tensor | None = None  # (B, M) per-modality weights, if the method has them


def stack_modalities(
    modalities: tuple[str, ...], embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M, D) embeddings with absent entries zeroed, and the (B, M) presence mask."""
    missing = [m for m in modalities if m not in embeddings or m not in present]
    if missing:
        raise ValueError(f"fusion built for modalities {list(modalities)} got no input for {missing}")
    mask = torch.stack([present[m] for m in modalities], dim=1)
    x = torch.stack([embeddings[m] for m in modalities], dim=1) * mask.unsqueeze(-1)
    # The check reads a value on the host: on an accelerator that is a sync per step, so it runs on
    # the CPU only (the item tower never passes an empty row; its own test covers every device).
    if mask.device.type == "cpu" and not bool(mask.any(dim=1).all()):
        rows = (~mask.any(dim=1)).nonzero().flatten().tolist()[:5]
        raise ValueError(
            f"item row(s) {rows} have none of the modalities {list(modalities)} present; every fused item "
            "needs at least one"
        )
    return x, mask


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~mask, float("-inf")).softmax(dim=-1)


class MeanFusion(nn.Module):
    """Unweighted mean of the present modality embeddings."""

    def __init__(self, modalities: tuple[str, ...], dim: int):
        super().__init__()
        self.modalities = tuple(sorted(modalities))

    def forward(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        x, mask = stack_modalities(self.modalities, embeddings, present)
        weights = mask.float() / mask.sum(1, keepdim=True)
        return FusionOutput((weights.unsqueeze(-1) * x).sum(1), weights)


class LateFusion(nn.Module):
    """One score per modality, combined with learned weights.

    The user-item score is sum_m w_m <u, e_m / |e_m|>; since it is linear in the item side it
    equals <u, sum_m w_m e_m / |e_m|>, so late fusion fits the two-tower item embedding. The
    weights are a softmax of learned logits over the present modalities.
    """

    def __init__(self, modalities: tuple[str, ...], dim: int):
        super().__init__()
        self.modalities = tuple(sorted(modalities))
        self.logits = nn.Parameter(torch.zeros(len(self.modalities)))

    def forward(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        x, mask = stack_modalities(self.modalities, embeddings, present)
        weights = masked_softmax(self.logits.expand_as(mask), mask)
        return FusionOutput((weights.unsqueeze(-1) * F.normalize(x, dim=-1)).sum(1), weights)


class GatedFusion(nn.Module):
    """A softmax gate over the present modalities, conditioned on all of them; gates are returned."""

    def __init__(self, modalities: tuple[str, ...], dim: int):
        super().__init__()
        self.modalities = tuple(sorted(modalities))
        m = len(self.modalities)
        self.gate = nn.Sequential(nn.Linear(m * (dim + 1), dim), nn.GELU(), nn.Linear(dim, m))

    def forward(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        x, mask = stack_modalities(self.modalities, embeddings, present)
        context = torch.cat([x.flatten(1), mask.float()], dim=1)
        weights = masked_softmax(self.gate(context), mask)
        return FusionOutput((weights.unsqueeze(-1) * x).sum(1), weights)


class ConcatFusion(nn.Module):
    """An MLP over the concatenation; absent slots are zeroed and flagged by an indicator."""

    def __init__(self, modalities: tuple[str, ...], dim: int):
        super().__init__()
        self.modalities = tuple(sorted(modalities))
        m = len(self.modalities)
        self.mlp = nn.Sequential(nn.Linear(m * (dim + 1), 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        x, mask = stack_modalities(self.modalities, embeddings, present)
        return FusionOutput(self.mlp(torch.cat([x.flatten(1), mask.float()], dim=1)))


POOLINGS = ("cls", "mean")


class AttentionFusion(nn.Module):
    """The cross-modal fusion transformer: [CLS] + one token per modality (+ a learned type
    embedding); absent modalities are masked out of attention. The item is the [CLS] output
    (``pool='cls'``) or the mean of the present modalities' outputs (``pool='mean'``): every
    modality token has attended to the others, and through the residual stream the mean starts
    as the plain mean fusion, which the transformer then refines with cross-modal terms."""

    def __init__(
        self,
        modalities: tuple[str, ...],
        dim: int,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        pool: str = "mean",
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"fusion width {dim} is not divisible by fusion.heads={heads}")
        if pool not in POOLINGS:
            raise ValueError(f"unknown fusion.pool '{pool}': expected one of {POOLINGS}")
        self.pool = pool
        self.modalities = tuple(sorted(modalities))
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.type_embedding = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        x, mask = stack_modalities(self.modalities, embeddings, present)
        tokens = torch.cat([self.cls.expand(len(x), 1, -1), x + self.type_embedding], dim=1)  # (B, 1 + M, D)
        padding = torch.cat([mask.new_zeros(len(x), 1), ~mask], dim=1)  # True = ignored
        out = self.transformer(tokens, src_key_padding_mask=padding)
        if self.pool == "cls":
            return FusionOutput(self.norm(out[:, 0]))
        return FusionOutput(self.norm(masked_mean(out[:, 1:], mask)))
