"""Pointwise binary cross-entropy on positives and sampled negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pointwise_bce(pos_logits: torch.Tensor, neg_logits: torch.Tensor, neg_valid: torch.Tensor | None = None) -> torch.Tensor:
    """BCE with label 1 for ``pos_logits`` (B,) and 0 for ``neg_logits`` (B, K); negatives where
    ``neg_valid`` (B, K) is False (the user did interact with them) are left out."""
    pos = F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits), reduction="sum")
    neg_terms = F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits), reduction="none")
    if neg_valid is not None:
        neg_terms = neg_terms * neg_valid.to(neg_terms.dtype)
        count = len(pos_logits) + neg_valid.sum()
    else:
        count = pos_logits.numel() + neg_logits.numel()
    return (pos + neg_terms.sum()) / count


class PointwiseScorer(nn.Module):
    """Turns cosine similarity into a calibrated logit: ``scale * u.i + bias`` (both learned)."""

    def __init__(self, init_scale: float = 10.0, init_bias: float = -5.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(init_scale))
        self.bias = nn.Parameter(torch.tensor(init_bias))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users (B, D) with items (B, D) or (B, K, D) -> logits (B,) or (B, K)."""
        if items.dim() == 3:
            return self.scale * torch.einsum("bd,bkd->bk", users, items) + self.bias
        return self.scale * (users * items).sum(-1) + self.bias
