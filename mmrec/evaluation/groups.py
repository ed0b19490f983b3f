"""What an evaluation reports on: the item and user groups, and one typed result per evaluated part."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmrec.data.batches import EvalSet
from mmrec.evaluation.metrics import popularity_groups


@dataclass
class EvalResult:
    """One evaluated part as the callbacks read it: the embedded catalogue and the ranked users."""

    part: str  # 'valid' or 'test'
    items: torch.Tensor  # (I, D) the catalogue's embeddings
    users: torch.Tensor  # (U, D) the embedded users this process ranked
    eval_set: EvalSet  # those users' history, targets and seen items


def item_groups(cold_items: torch.Tensor, item_train_counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """(I,) masks of the items whose targets count: all, warm, cold, and head / mid / tail by popularity."""
    groups = {"all": torch.ones_like(cold_items), "warm": ~cold_items, "cold": cold_items}
    groups.update(popularity_groups(item_train_counts))
    return groups


def activity_quintiles(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """(U,) masks of users by training interactions: users_q1 (least active fifth) .. users_q5 (most)."""
    if counts is None or len(counts) == 0:
        return {}
    order = torch.argsort(counts.double(), stable=True)
    quintile = torch.empty_like(order)
    quintile[order] = torch.arange(len(order)) * 5 // len(order)
    return {f"users_q{q + 1}": quintile == q for q in range(5)}
