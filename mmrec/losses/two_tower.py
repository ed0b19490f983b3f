"""The training objective: w_contrastive * in-batch softmax + w_bce * pointwise BCE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmrec.losses.bce import PointwiseScorer, pointwise_bce
from mmrec.losses.contrastive import ContrastiveLoss


@dataclass
class LossOutput:
    total: torch.Tensor
    contrastive: torch.Tensor
    bce: torch.Tensor


class TwoTowerLoss(nn.Module):
    """Owns the temperature and the BCE scorer; returns every term for logging."""

    def __init__(self, w_contrastive: float = 1.0, w_bce: float = 0.5, temperature: float = 0.07, learn_temperature: bool = True, max_logit_scale: float = 100.0, logq_correction: bool = True, local_loss: bool = True):
        super().__init__()
        if w_contrastive < 0 or w_bce < 0 or w_contrastive + w_bce == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got w_contrastive={w_contrastive}, w_bce={w_bce}")
        self.w_contrastive, self.w_bce, self.logq_correction = w_contrastive, w_bce, logq_correction
        self.contrastive = ContrastiveLoss(temperature, max_logit_scale, learn_temperature, local_loss)
        self.scorer = PointwiseScorer()

    def forward(
        self,
        users: torch.Tensor,
        pos_items: torch.Tensor,
        neg_items: torch.Tensor,
        user_ids: torch.Tensor,
        pos_ids: torch.Tensor,
        neg_valid: torch.Tensor,
        log_q: torch.Tensor | None = None,
        interacted=None,
    ) -> LossOutput:
        """users (B, D), pos_items (B, D), neg_items (B, K, D), ids (B,), neg_valid (B, K), log_q (B,)."""
        contrastive = self.contrastive(users, pos_items, user_ids, pos_ids, log_q if self.logq_correction else None, interacted)
        bce = pointwise_bce(self.scorer(users, pos_items), self.scorer(users, neg_items), neg_valid)
        return LossOutput(self.w_contrastive * contrastive + self.w_bce * bce, contrastive.detach(), bce.detach())
