"""Projection heads that adapt a frozen encoder's vectors to the item space.

``ProjectionHead`` (in ``towers.py``) is a LayerNorm and a two-layer MLP. ``WhitenedMoE`` follows
UniSRec (Hou et al., KDD 2022, section 3.1.2): frozen text vectors are anisotropic (they crowd a
narrow cone), so each of K experts first whitens them with a learned centre and a linear map
(parametric whitening, no normalisation statistics), and a gate mixes the experts per item; in
training the gate's logits get learned, input-dependent Gaussian noise, so every expert trains.

``Whitened`` puts a fixed whitening in front of either head (``model.whiten``), fitted once over the
catalogue's frozen vectors (as WhitenRec, Zhang et al. 2024, whitens pre-trained text embeddings
before a sequential recommender): the learned maps then start from isotropic inputs rather than
having to undo the cone themselves.
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


class Whitening(nn.Module):
    """``(x - mean) @ matrix`` with ``matrix = U diag(s^-power) U^T`` from the eigendecomposition of the
    covariance of the vectors it was fitted on: power 0.5 is ZCA whitening (unit variance in every
    direction), smaller powers whiten part way. Directions the fitted vectors do not vary along
    (eigenvalue under 1e-5 of the largest) are dropped rather than scaled up without bound, so a new
    item's component there cannot swamp the rest. The statistics are buffers: checkpoints and bundles
    carry them, and a served new item is whitened with the catalogue's own."""

    def __init__(self, in_dim: int, power: float = 0.5):
        super().__init__()
        if not 0 < power <= 0.5:
            raise ValueError(f"model.whiten must be in (0, 0.5] (0.5: full ZCA whitening), got {power}")
        self.power = power
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("matrix", torch.eye(in_dim))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Fit to (N, in_dim) vectors, in float64 on the CPU (the same on every DDP rank)."""
        if len(x) < 2:
            raise ValueError(f"whitening needs at least 2 item vectors to fit, got {len(x)}")
        x = x.detach().double().cpu()
        mean = x.mean(0)
        centred = x - mean
        values, vectors = torch.linalg.eigh(centred.T @ centred / (len(x) - 1))
        kept = values > values.max() * 1e-5
        scale = torch.where(kept, values.clamp(min=1e-300) ** -self.power, torch.zeros_like(values))
        self.mean.copy_(mean.float())
        self.matrix.copy_(((vectors * scale) @ vectors.T).float())
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.matrix


class Whitened(nn.Module):
    """A projection head behind a ``Whitening`` of its input."""

    def __init__(self, head: nn.Module, in_dim: int, power: float):
        super().__init__()
        self.whitening, self.head = Whitening(in_dim, power), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.whitening(x))
