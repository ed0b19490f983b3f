"""Ranking metrics, one small registered definition each.

A *user* metric maps one chunk of ranked users to per-user values and weights; the reported
number is sum(value * weight) / sum(weight) over all users (so it reduces by sum across
processes and never depends on how users were split among them). A *catalogue* metric maps
how often each item was recommended to one number. Select them with ``eval.metrics``; add one
with ``@user_metric("name")`` or ``@catalogue_metric("name")`` in any module you import.

Per user u with target set T_u (of the group) and top-K list L_u:
    recall@K = |L_u ∩ T_u| / |T_u|                          (RecBole's definition)
    ndcg@K   = DCG@K / ideal DCG@K, binary gains
    hit@K    = 1 if L_u ∩ T_u is not empty
    mrr@K    = 1 / rank of the first target in L_u (0 if none)
    gauc     = per-user AUC of targets against the user's non-target candidate items, averaged
               with weight |T_u| (RecBole's GAUC; ties count one half)
Catalogue (over all evaluated users): coverage@K (share of items recommended at least once),
popularity@K (mean training count of recommended items), gini@K (of recommendation counts),
tail_share@K (share of top-K slots given to the least popular half of the catalogue).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class RankedChunk:
    """One chunk of R ranked users, for one target group."""

    hits: torch.Tensor  # (R, k_max) float: 1 where the i-th recommendation is a target of the group
    n_targets: torch.Tensor  # (R,) float: targets of the group per user
    auc_pairs: torch.Tensor  # (R,) float: correctly ordered (target, non-target) pairs, ties 1/2
    n_negatives: torch.Tensor  # (R,) float: candidate items that are not targets
    n_auc_targets: torch.Tensor  # (R,) float: targets of the group that are candidates (not masked as seen)


UserMetric = Callable[[RankedChunk, int], tuple[torch.Tensor, torch.Tensor]]
CatalogueMetric = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class UserMetricDef:
    fn: UserMetric
    at_k: bool


USER_METRICS: dict[str, UserMetricDef] = {}
CATALOGUE_METRICS: dict[str, CatalogueMetric] = {}


def user_metric(name: str, at_k: bool = True):
    """Register ``fn(chunk, k) -> (values (R,), weights (R,))``; ``at_k=False`` metrics ignore k."""

    def register(fn: UserMetric) -> UserMetric:
        USER_METRICS[name] = UserMetricDef(fn, at_k)
        return fn

    return register


def catalogue_metric(name: str):
    """Register ``fn(rec_counts (I,), popularity_sum (), evaluated (), popularity (I,)) -> ()`` for one K."""

    def register(fn: CatalogueMetric) -> CatalogueMetric:
        CATALOGUE_METRICS[name] = fn
        return fn

    return register


def _has_targets(chunk: RankedChunk) -> torch.Tensor:
    return (chunk.n_targets > 0).double()


@user_metric("recall")
def recall(chunk: RankedChunk, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return chunk.hits[:, :k].sum(1) / chunk.n_targets.clamp(min=1), _has_targets(chunk)


@user_metric("ndcg")
def ndcg(chunk: RankedChunk, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    discounts = 1.0 / torch.log2(
        torch.arange(2, chunk.hits.shape[1] + 2, dtype=torch.float64, device=chunk.hits.device)
    )
    hits = chunk.hits[:, :k]
    cumulative = torch.cat([discounts.new_zeros(1), discounts.cumsum(0)])
    ideal = cumulative[chunk.n_targets.clamp(max=hits.shape[1]).long()]
    return (hits * discounts[: hits.shape[1]]).sum(1) / ideal.clamp(min=1e-12), _has_targets(chunk)


@user_metric("hit")
def hit(chunk: RankedChunk, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (chunk.hits[:, :k].sum(1) > 0).double(), _has_targets(chunk)


@user_metric("mrr")
def mrr(chunk: RankedChunk, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    hits = chunk.hits[:, :k]
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64, device=hits.device)
    first = torch.where(hits > 0, ranks, torch.full_like(hits, float("inf"))).min(1).values
    return 1.0 / first, _has_targets(chunk)


@user_metric("gauc", at_k=False)
def gauc(chunk: RankedChunk, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    valid = (chunk.n_auc_targets > 0) & (chunk.n_negatives > 0)
    auc = chunk.auc_pairs / (chunk.n_auc_targets * chunk.n_negatives).clamp(min=1)
    return auc, chunk.n_auc_targets * valid.double()


@catalogue_metric("coverage")
def coverage(
    rec_counts: torch.Tensor, popularity_sum: torch.Tensor, evaluated: torch.Tensor, popularity: torch.Tensor
) -> torch.Tensor:
    return (rec_counts > 0).double().mean()


@catalogue_metric("popularity")
def mean_popularity(
    rec_counts: torch.Tensor, popularity_sum: torch.Tensor, evaluated: torch.Tensor, popularity: torch.Tensor
) -> torch.Tensor:
    return popularity_sum / evaluated.clamp(min=1)


@catalogue_metric("gini")
def gini(
    rec_counts: torch.Tensor, popularity_sum: torch.Tensor, evaluated: torch.Tensor, popularity: torch.Tensor
) -> torch.Tensor:
    """Gini index of the recommendation counts: 0 when all items equally, towards 1 when concentrated."""
    x = rec_counts.double().sort().values
    n, total = len(x), x.sum()
    index = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    return ((2 * index - n - 1) * x).sum() / (n * total).clamp(min=1e-12)


def popularity_groups(counts: torch.Tensor, head: float = 0.2, tail: float = 0.5) -> dict[str, torch.Tensor]:
    """(I,) masks of the head (the ``head`` share of items with the most training interactions), the
    tail (the ``tail`` share with the fewest, never-seen items included) and the mid in between."""
    order = torch.argsort(counts.double(), descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    n = len(order)
    is_head, is_tail = rank < int(round(head * n)), rank >= n - int(round(tail * n))
    return {"head": is_head, "mid": ~is_head & ~is_tail, "tail": is_tail}


@catalogue_metric("tail_share")
def tail_share(
    rec_counts: torch.Tensor, popularity_sum: torch.Tensor, evaluated: torch.Tensor, popularity: torch.Tensor
) -> torch.Tensor:
    """Share of all top-K slots that go to tail items (the least popular half of the catalogue)."""
    tail = popularity_groups(popularity)["tail"]
    return rec_counts[tail].sum() / rec_counts.sum().clamp(min=1e-12)
