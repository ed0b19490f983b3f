"""Full-ranking evaluation: every user is ranked against the whole catalogue, seen items masked.

Accuracy (per user, then averaged over users that have a target in the group):
    recall@K = hits in top K / |targets|        (RecBole's definition)
    ndcg@K   = DCG@K / ideal DCG@K, binary gains, ideal over min(|targets|, K) hits
    hit@K    = 1 if any target is in the top K
    mrr@K    = 1 / rank of the first target in the top K (0 if none)
Beyond accuracy (over all evaluated users):
    coverage@K   = distinct recommended items / catalogue size
    popularity@K = mean training count of recommended items
    gini@K       = Gini index of how often each catalogue item is recommended

Groups split the targets: 'all', 'warm' (items seen in training) and 'cold' (never seen).
Results are sums and counts (``RankingSums``) so that ranks can all-reduce them before dividing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

ACCURACY = ("recall", "ndcg", "hit", "mrr")
ELEMENT_BUDGET = 1 << 24  # users x items scores held at once; bounds memory for large catalogues


@dataclass
class RankingSums:
    """Sums of per-user metrics and user counts per group, plus per-item recommendation counts."""

    ks: tuple[int, ...]
    groups: tuple[str, ...]
    sums: torch.Tensor  # (G, len(ACCURACY), len(ks))
    users: torch.Tensor  # (G,)
    rec_counts: torch.Tensor  # (len(ks), I) how often each item is in a top-K list
    popularity_sum: torch.Tensor  # (len(ks),) sum over users of mean popularity of their top K
    evaluated: torch.Tensor  # () users ranked at all
    extra: dict = field(default_factory=dict)

    def tensors(self) -> list[torch.Tensor]:
        return [self.sums, self.users, self.rec_counts, self.popularity_sum, self.evaluated]

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat ``{prefix}[_{group}]/{metric}@{k}`` values; the 'all' group has no suffix."""
        out = {}
        for g, group in enumerate(self.groups):
            name = prefix if group == "all" else f"{prefix}_{group}"
            n = float(self.users[g])
            if n == 0:
                continue
            for a, metric in enumerate(ACCURACY):
                for j, k in enumerate(self.ks):
                    out[f"{name}/{metric}@{k}"] = float(self.sums[g, a, j]) / n
            out[f"{name}/users"] = n
        evaluated = float(self.evaluated)
        if evaluated:
            for j, k in enumerate(self.ks):
                counts = self.rec_counts[j].double()
                out[f"{prefix}/coverage@{k}"] = float((counts > 0).double().mean())
                out[f"{prefix}/popularity@{k}"] = float(self.popularity_sum[j]) / evaluated
                out[f"{prefix}/gini@{k}"] = gini(counts)
        return out


def gini(counts: torch.Tensor) -> float:
    """Gini index of non-negative counts: 0 when all equal, towards 1 when concentrated."""
    x = counts.double().sort().values
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    index = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    return float(((2 * index - n - 1) * x).sum() / (n * total))


def csr_to_dense(ptr: torch.Tensor, items: torch.Tensor, rows: slice, num_items: int) -> torch.Tensor:
    """Rows ``rows`` of a CSR user->items structure as a (R, I) bool matrix."""
    start, stop = int(ptr[rows.start]), int(ptr[rows.stop])
    lengths = (ptr[rows.start + 1 : rows.stop + 1] - ptr[rows.start : rows.stop]).long()
    row_of = torch.repeat_interleave(torch.arange(len(lengths), device=items.device), lengths.to(items.device))
    dense = torch.zeros(len(lengths), num_items, dtype=torch.bool, device=items.device)
    dense[row_of, items[start:stop]] = True
    return dense


def rank_and_score(
    users: torch.Tensor,
    items: torch.Tensor,
    target_ptr: torch.Tensor,
    target_items: torch.Tensor,
    exclude_ptr: torch.Tensor,
    exclude_items: torch.Tensor,
    groups: dict[str, torch.Tensor],
    popularity: torch.Tensor,
    ks: tuple[int, ...] = (10, 20, 50),
    candidates: torch.Tensor | None = None,
) -> RankingSums:
    """Rank ``users`` (U, D) against ``items`` (I, D) by dot product and sum the metrics.

    ``groups[name]`` is an (I,) bool mask of the items whose targets count for that group;
    ``popularity`` (I,) is each item's training count. CSR pointers are (U+1,).
    ``candidates`` (I,) bool, if given, restricts the ranking to those items.
    """
    num_items, device = len(items), items.device
    ks = tuple(sorted(ks))
    k_max = min(max(ks), num_items)
    names = tuple(groups)
    sums = torch.zeros(len(names), len(ACCURACY), len(ks), dtype=torch.float64, device=device)
    counts = torch.zeros(len(names), dtype=torch.float64, device=device)
    rec_counts = torch.zeros(len(ks), num_items, dtype=torch.float64, device=device)
    pop_sum = torch.zeros(len(ks), dtype=torch.float64, device=device)
    discounts = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64, device=device))  # (k_max,)
    cum_discounts = torch.cat([discounts.new_zeros(1), discounts.cumsum(0)])
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64, device=device)
    chunk = max(1, ELEMENT_BUDGET // max(num_items, 1))
    group_masks = torch.stack([groups[g].to(device) for g in names])  # (G, I)
    for start in range(0, len(users), chunk):
        rows = slice(start, min(start + chunk, len(users)))
        scores = users[rows].float() @ items.float().T  # (R, I)
        scores = scores.masked_fill(csr_to_dense(exclude_ptr, exclude_items, rows, num_items), float("-inf"))
        if candidates is not None:
            scores = scores.masked_fill(~candidates.to(device), float("-inf"))
        top = scores.topk(k_max, dim=1).indices  # (R, k_max)
        targets = csr_to_dense(target_ptr, target_items, rows, num_items)  # (R, I)
        for j, k in enumerate(ks):
            kk = min(k, k_max)
            rec_counts[j] += torch.bincount(top[:, :kk].flatten(), minlength=num_items).double()
            pop_sum[j] += popularity[top[:, :kk]].double().mean(dim=1).sum()
        for g in range(len(names)):
            group_targets = targets & group_masks[g]  # (R, I)
            n_targets = group_targets.sum(1).double()  # (R,)
            has = n_targets > 0
            if not has.any():
                continue
            hits = group_targets.gather(1, top).double()[has]  # (R', k_max)
            n_t = n_targets[has]
            counts[g] += has.sum()
            first = torch.where(hits.any(1), hits.argmax(1), torch.full_like(n_t, k_max, dtype=torch.long))
            for j, k in enumerate(ks):
                kk = min(k, k_max)
                h = hits[:, :kk]
                ideal = cum_discounts[n_t.clamp(max=kk).long()]
                sums[g, 0, j] += (h.sum(1) / n_t).sum()
                sums[g, 1, j] += ((h * discounts[:kk]).sum(1) / ideal).sum()
                sums[g, 2, j] += (h.sum(1) > 0).double().sum()
                sums[g, 3, j] += torch.where(first < kk, 1.0 / ranks[first.clamp(max=k_max - 1)], torch.zeros_like(n_t)).sum()
    evaluated = torch.tensor(float(len(users)), dtype=torch.float64, device=device)
    return RankingSums(ks, names, sums, counts, rec_counts, pop_sum, evaluated)
