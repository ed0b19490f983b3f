"""Projection heads that adapt a frozen encoder's vectors to the item space.

``ProjectionHead`` (in ``towers.py``) is a LayerNorm and a two-layer MLP. ``WhitenedMoE`` follows
UniSRec (Hou et al., KDD 2022, section 3.1.2): frozen text vectors are anisotropic (they crowd a
narrow cone), so each of K experts first whitens them with a learned centre and a linear map
(parametric whitening, no normalisation statistics), and a gate mixes the experts per item; in
training the gate's logits get learned, input-dependent Gaussian noise, so every expert trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WhitenedMoE(nn.Module):
    """(N, in_dim) -> (N, dim): a gated mixture of ``experts`` parametric-whitening maps."""

    def __init__(self, in_dim: int, dim: int, dropout: float = 0.2, experts: int = 8, noisy_gating: bool = True):
        super().__init__()
        if experts < 1:
            raise ValueError(f"model.projection.experts must be at least 1, got {experts}")
        self.centre = nn.Parameter(torch.zeros(experts, in_dim))  # each expert's learned centre
        self.maps = nn.Parameter(torch.randn(experts, in_dim, dim) * 0.02)  # each expert's whitening map
        self.gate = nn.Parameter(torch.zeros(in_dim, experts))
        self.gate_noise = nn.Parameter(torch.zeros(in_dim, experts))
        self.dropout, self.noisy_gating = nn.Dropout(dropout), noisy_gating

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.gate  # (N, K)
        if self.training and self.noisy_gating:
            logits = logits + torch.randn_like(logits) * (F.softplus(x @ self.gate_noise) + 1e-2)
        weights = logits.softmax(-1)  # (N, K)
        centred = self.dropout(x).unsqueeze(1) - self.centre  # (N, K, in_dim)
        experts = torch.einsum("nki,kid->nkd", centred, self.maps)  # (N, K, dim)
        return (weights.unsqueeze(-1) * experts).sum(1)  # (N, dim)
