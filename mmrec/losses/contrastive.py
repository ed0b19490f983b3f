"""In-batch sampled softmax between users and their positive items."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmrec.losses.distributed import gather_no_grad, gather_with_grad, local_labels


def in_batch_softmax(
    users: torch.Tensor,
    items: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor,
    log_q: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each user row against all item columns.

    users (B, D), items (C, D), labels (B,) column of each row's positive; logit_scale: scalar
    (the logits are ``exp(logit_scale) * u.i``). ``log_q`` (C,): log sampling probability of
    each column's item, subtracted from the logits (logQ correction, Yi et al. 2019), so that
    popular items, which are in-batch negatives more often, are not over-penalised.
    ``exclude`` (B, C) True: columns removed from a row's softmax (accidental hits); a row's
    own positive is never removed.
    """
    logits = logit_scale.exp() * users @ items.T  # (B, C)
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    if exclude is not None:
        own = F.one_hot(labels, logits.shape[1]).bool()
        logits = logits.masked_fill(exclude & ~own, float("-inf"))
    return F.cross_entropy(logits, labels)


class ContrastiveLoss(nn.Module):
    """In-batch softmax with a learnable CLIP-style temperature and negatives from every rank.

    ``forward`` gathers item embeddings (with gradients), item ids and log-probabilities from
    all ranks. With ``local_loss`` (open_clip's name) each rank scores only its own users
    against every gathered item, O(B x W*B); otherwise users are gathered too and every rank
    computes the whole (W*B x W*B) loss. Both give the single-process gradient once DDP averages.
    Accidental hits are masked: the same item as a row's positive elsewhere in the global
    batch, and any column for which ``interacted(user, item)`` is True.
    """

    def __init__(self, temperature: float = 0.07, max_logit_scale: float = 100.0, learn_temperature: bool = True, local_loss: bool = True):
        super().__init__()
        self.local_loss = local_loss
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_temperature)
        self.max_log = math.log(max_logit_scale)

    def forward(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        user_ids: torch.Tensor,
        item_ids: torch.Tensor,
        log_q: torch.Tensor | None = None,
        interacted=None,
    ) -> torch.Tensor:
        """users, items: (B, D) local rows; user_ids, item_ids: (B,); log_q: (B,) for the local items;
        ``interacted(user_ids (B,1), item_ids (1,C)) -> (B, C) bool`` marks known interactions."""
        all_items = gather_with_grad(items)
        all_ids = gather_no_grad(item_ids)
        all_log_q = gather_no_grad(log_q) if log_q is not None else None
        if self.local_loss:
            row_ids, labels = item_ids, local_labels(len(users), users.device)
        else:
            users, user_ids, row_ids = gather_with_grad(users), gather_no_grad(user_ids), all_ids
            labels = torch.arange(len(users), device=users.device)
        exclude = row_ids.unsqueeze(1) == all_ids.unsqueeze(0)
        if interacted is not None:
            exclude = exclude | interacted(user_ids.unsqueeze(1), all_ids.unsqueeze(0))
        scale = self.logit_scale.clamp(max=self.max_log)
        return in_batch_softmax(users, all_items, labels, scale, all_log_q, exclude)
