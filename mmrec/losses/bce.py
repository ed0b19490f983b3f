"""Pointwise binary cross-entropy on positives and sampled negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmrec.models.two_tower import TwoTowerOutput


def pointwise_bce(
    pos_logits: torch.Tensor, neg_logits: torch.Tensor, neg_valid: torch.Tensor | None = None
) -> torch.Tensor:
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


def valid_negatives(out: TwoTowerOutput) -> torch.Tensor:
    """(B, K) True for sampled negatives that are neither the positive nor a known interaction."""
    valid = out.neg_ids != out.pos_ids.unsqueeze(1)
    if out.known is not None:
        valid = valid & ~out.known.contains(out.user_ids.unsqueeze(1), out.neg_ids)
    return valid


class PointwiseBCE:
    """The BCE term: the model's pointwise scorer on the positive and the sampled negatives."""

    needs_negatives = True

    def __call__(self, out: TwoTowerOutput) -> torch.Tensor:
        return pointwise_bce(out.pos_logits, out.neg_logits, valid_negatives(out))
