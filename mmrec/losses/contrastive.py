"""Softmax between users and their positive items: against the batch's positives (in-batch) or
against every item of the catalogue."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmrec.distributed import gather_no_grad, gather_with_grad, local_labels, rank_and_world
from mmrec.models.two_tower import TwoTowerOutput


def in_batch_softmax(
    users: torch.Tensor,
    items: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor,
    log_q: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
    row_weight: torch.Tensor | None = None,
    total_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each user row against all item columns.

    users (B, D), items (C, D), labels (B,) column of each row's positive; logit_scale: scalar
    (the logits are ``exp(logit_scale) * u.i``). ``log_q`` (C,): log sampling probability of
    each column's item, subtracted from the logits (logQ correction, Yi et al. 2019), so that
    popular items, which are in-batch negatives more often, are not over-penalised.
    ``exclude`` (B, C) True: columns removed from a row's softmax (accidental hits); a row's
    own positive is never removed. ``row_weight`` (B,): each row's weight (0 for padded rows), the
    sum divided by ``total_weight`` (default: the weights' sum).
    """
    logits = logit_scale.exp() * users @ items.T  # (B, C)
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    if exclude is not None:
        own = F.one_hot(labels, logits.shape[1]).bool()
        logits = logits.masked_fill(exclude & ~own, float("-inf"))
    if row_weight is None:
        return F.cross_entropy(logits, labels)
    total = row_weight.sum() if total_weight is None else total_weight
    return (F.cross_entropy(logits, labels, reduction="none") * row_weight).sum() / total.clamp(min=1e-12)


class InBatchSoftmax:
    """In-batch softmax over the positives of the global batch, with the model's temperature.

    Item embeddings (with gradients), item ids and log-probabilities are gathered from all ranks.
    With ``local_loss`` (open_clip's name) each rank scores only its own users against every
    gathered item, O(B x W*B); otherwise users are gathered too and every rank computes the
    whole (W*B x W*B) loss. Both give the single-process gradient once DDP averages.
    Accidental hits are masked: the same item as a row's positive elsewhere in the global batch,
    and any known training interaction of the row's user.
    """

    def __init__(self, logq_correction: bool = True, local_loss: bool = True):
        self.logq_correction, self.local_loss = logq_correction, local_loss

    def __call__(self, out: TwoTowerOutput) -> torch.Tensor:
        users, user_ids = out.users, out.user_ids
        all_items = gather_with_grad(out.pos_items)
        all_ids = gather_no_grad(out.pos_ids)
        all_log_q = gather_no_grad(out.log_q) if self.logq_correction else None
        if self.local_loss:
            row_ids, labels = out.pos_ids, local_labels(len(users), users.device)
        else:
            users, user_ids, row_ids = gather_with_grad(users), gather_no_grad(user_ids), all_ids
            labels = torch.arange(len(users), device=users.device)
        exclude = row_ids.unsqueeze(1) == all_ids.unsqueeze(0)
        if out.known is not None:
            exclude = exclude | out.known.contains(user_ids.unsqueeze(1), all_ids.unsqueeze(0))
        if out.valid is None:
            return in_batch_softmax(users, all_items, labels, out.logit_scale, all_log_q, exclude)
        # padded rows weigh 0 and their columns are no one's negatives; dividing the local sum by
        # the global valid count / world keeps the DDP average equal to the single-process mean
        all_valid = gather_no_grad(out.valid)
        rows = out.valid if self.local_loss else all_valid
        _, world = rank_and_world()
        total = all_valid.sum() / world if self.local_loss else all_valid.sum()
        weight = rows.to(users.dtype)
        exclude = exclude | ~all_valid.unsqueeze(0)
        return in_batch_softmax(users, all_items, labels, out.logit_scale, all_log_q, exclude, weight, total)


class CatalogueSoftmax:
    """Cross-entropy of each user row over every item of the catalogue, as SASRec and UniSRec train.

    Every item is a negative, not only the batch's positives, and no correction is needed: nothing
    is sampled. The catalogue's embeddings (``out.catalogue``, (I, D)) are computed every step,
    which is cheap when items embed from cached frozen-encoder outputs and ID tables (mmrec refuses
    it with trained encoders). Rows are weighted like InBatchSoftmax's, so the DDP average equals
    the single-process mean; each rank holds the whole catalogue, so nothing is gathered but the
    count of valid rows.
    """

    needs_catalogue = True

    def __call__(self, out: TwoTowerOutput) -> torch.Tensor:
        labels = out.pos_ids
        if out.valid is None:
            return in_batch_softmax(out.users, out.catalogue, labels, out.logit_scale)
        _, world = rank_and_world()
        total = gather_no_grad(out.valid).sum() / world
        # padded positions weigh 0: leave them out before the (rows x catalogue) logits rather than
        # after, since short histories make most positions of a sequence batch padding
        rows = out.valid.nonzero().squeeze(1)
        users, labels = out.users[rows], labels[rows]
        weight = users.new_ones(len(rows))
        return in_batch_softmax(users, out.catalogue, labels, out.logit_scale, None, None, weight, total)
