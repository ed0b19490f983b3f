"""Full-ranking evaluation as a torchmetrics Metric: every user against the whole catalogue.

``update`` ranks a set of users (each process its own users) against every item, with the items
the user has seen masked, in chunks over users *and* items with a running top-K merge, so memory
is bounded by ``element_budget`` scores whatever the catalogue size. Every state is a sum (or,
for the pooled AUC, a concatenation whose order does not matter), so ``compute`` gives the same
numbers on any number of processes.

Item groups (``groups``: name -> (I,) bool) restrict which targets count, e.g. all / warm (seen in
training) / cold (never seen) items. Keys of ``compute()``: ``{group}/{metric}@{k}``,
``{group}/gauc``, ``{group}/users``, ``{metric}@{k}`` for catalogue metrics, and ``auc``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc

from mmrec.data.csr import CSR, PairSet
from mmrec.evaluation.metrics import CATALOGUE_METRICS, USER_METRICS, RankedChunk

DEFAULT_METRICS = ("recall", "ndcg", "hit", "mrr", "gauc", "coverage", "popularity", "gini", "tail_share", "auc")
AUC_NEGATIVE_TRIES = 8


class FullRankingEvaluator(Metric):
    full_state_update = False

    def __init__(
        self,
        groups: Mapping[str, torch.Tensor],
        popularity: torch.Tensor,
        metrics: Sequence[str] = DEFAULT_METRICS,
        ks: Sequence[int] = (10, 20, 50),
        element_budget: int = 1 << 24,
        user_groups: Mapping[str, torch.Tensor] | None = None,
        mask_seen: bool = True,
    ):
        """``groups``: name -> (I,) bool item mask (which targets count); ``user_groups``: name -> (U,)
        bool mask over global user ids (which users count; all targets); ``popularity`` (I,).
        ``mask_seen=False`` ranks the items a user has seen too, as RecBole evaluates sequential models
        (and UniSRec and VQ-Rec report): a table compared with theirs must use the same."""
        super().__init__()
        self.mask_seen = mask_seen
        unknown = [m for m in metrics if m not in USER_METRICS and m not in CATALOGUE_METRICS and m != "auc"]
        if unknown:
            raise ValueError(
                f"eval.metrics: unknown {unknown}; registered: {sorted([*USER_METRICS, *CATALOGUE_METRICS, 'auc'])}"
            )
        if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f"eval.ks must be positive integers, got {list(ks)}")
        self.user_names = [m for m in metrics if m in USER_METRICS]
        self.catalogue_names = [m for m in metrics if m in CATALOGUE_METRICS]
        self.pooled_auc = "auc" in metrics
        user_groups = dict(user_groups or {})
        self.ks, self.element_budget = tuple(sorted(set(ks))), element_budget
        self.group_names = (*groups, *user_groups)
        num_items = len(popularity)
        everything = torch.ones(num_items, dtype=torch.bool)
        item_masks = [groups[g].bool() for g in groups] + [everything for _ in user_groups]
        self.register_buffer("group_masks", torch.stack(item_masks), persistent=False)  # (G, I)
        self.user_group_of = {len(groups) + j: g for j, g in enumerate(user_groups)}  # group row -> user group
        for name, mask in user_groups.items():
            self.register_buffer(f"user_group_{name}", mask.bool(), persistent=False)
        self.register_buffer("popularity", popularity.double(), persistent=False)
        g, a, k = len(self.group_names), len(self.user_names), len(self.ks)
        self.add_state("sums", torch.zeros(g, a, k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weights", torch.zeros(g, a, k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("users", torch.zeros(g, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rec_counts", torch.zeros(k, num_items, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("popularity_sum", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("evaluated", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("auc_scores", [], dist_reduce_fx="cat")
        self.add_state("auc_labels", [], dist_reduce_fx="cat")

    @property
    def num_items(self) -> int:
        return self.group_masks.shape[1]

    def update(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        targets: CSR,
        seen: CSR,
        user_ids: torch.Tensor,
        candidates: torch.Tensor | None = None,
    ) -> None:
        """Rank ``users`` (U, D) against ``items`` (I, D) by dot product. ``targets``/``seen``: CSR of
        U rows; ``user_ids`` (U,) global user indices (they seed the pooled AUC's negatives);
        ``candidates`` (I,) bool, if given, restricts the ranking to those items."""
        num_items = len(items)
        k_max = min(max(self.ks), num_items)
        item_chunk = min(num_items, max(1024, self.element_budget // 256))
        user_chunk = max(1, self.element_budget // item_chunk)
        items = items.float()
        if not self.mask_seen:
            seen = CSR(torch.zeros(len(users) + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        targets, seen = targets.to(items.device), seen.to(items.device)
        for start in range(0, len(users), user_chunk):
            stop = min(start + user_chunk, len(users))
            rows = torch.arange(start, stop, device=items.device)
            chunk_users = user_ids[start:stop].to(items.device)
            self._rank_chunk(
                users[start:stop].float(),
                items,
                targets.select(rows),
                seen.select(rows),
                candidates,
                k_max,
                item_chunk,
                chunk_users,
            )
            if self.pooled_auc:
                self._auc_pairs(
                    users[start:stop].float(), items, targets.select(rows), seen.select(rows), user_ids[start:stop]
                )
        self.evaluated += len(users)

    def _scores(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        seen: PairSet,
        candidates: torch.Tensor | None,
        item_chunk: int,
    ):
        """Yield (c0, c1, scores (R, C)) over item chunks, seen items and non-candidates at -inf. The
        seen pairs are written into each chunk's scores: no (R, C) mask is ever built."""
        seen_rows, seen_items = seen.keys // seen.stride, seen.keys % seen.stride
        for c0 in range(0, len(items), item_chunk):
            c1 = min(c0 + item_chunk, len(items))
            scores = users @ items[c0:c1].T  # (R, C)
            inside = (seen_items >= c0) & (seen_items < c1)
            scores[seen_rows[inside], seen_items[inside] - c0] = float("-inf")
            if candidates is not None:
                scores[:, ~candidates[c0:c1].to(items.device)] = float("-inf")
            yield c0, c1, scores

    def _rank_chunk(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        targets: CSR,
        seen: CSR,
        candidates: torch.Tensor | None,
        k_max: int,
        item_chunk: int,
        user_ids: torch.Tensor,
    ) -> None:
        r, device = len(users), items.device
        target_row, target_item = targets.row_of_entries(), targets.items  # (P,), (P,)
        seen_pairs = PairSet.from_pairs(seen.row_of_entries(), seen.items, stride=self.num_items)  # unique
        is_candidate = (
            torch.ones(len(items), dtype=torch.bool, device=device) if candidates is None else candidates.to(device)
        )
        # candidates of each user: the candidate items less the seen ones among them
        seen_rows, seen_items = seen_pairs.keys // seen_pairs.stride, seen_pairs.keys % seen_pairs.stride
        seen_candidates = torch.zeros(r, dtype=torch.float64, device=device).index_add_(
            0, seen_rows, is_candidate[seen_items].double()
        )
        n_candidates = is_candidate.sum().double() - seen_candidates  # (R,)
        # a target that is seen, or not a candidate, is not ranked
        target_live = ~seen_pairs.contains(target_row, target_item) & is_candidate[target_item]
        target_score = torch.zeros(len(target_row), device=device)
        top_scores = torch.full((r, k_max), float("-inf"), device=device)
        top_items = torch.zeros(r, k_max, dtype=torch.long, device=device)
        for c0, c1, scores in self._scores(users, items, seen_pairs, candidates, item_chunk):
            inside = (target_item >= c0) & (target_item < c1)
            target_score[inside] = scores[
                target_row[inside], target_item[inside] - c0
            ]  # the same kernel's values, so ties are exact
            chunk_top = scores.topk(min(k_max, c1 - c0), dim=1)
            merged_scores = torch.cat([top_scores, chunk_top.values], dim=1)
            merged_items = torch.cat([top_items, chunk_top.indices + c0], dim=1)
            best = merged_scores.topk(k_max, dim=1)
            top_scores, top_items = best.values, merged_items.gather(1, best.indices)
        greater = torch.zeros(len(target_row), dtype=torch.float64, device=device)
        equal = torch.zeros_like(greater)
        if "gauc" in self.user_names:  # a second pass: each target against every candidate
            for _, _, scores in self._scores(users, items, seen_pairs, candidates, item_chunk):
                for p0 in range(0, len(target_row), r):  # (r, C) comparisons at a time
                    p = slice(p0, p0 + r)
                    row_scores = scores[target_row[p]]
                    greater[p] += (row_scores > target_score[p].unsqueeze(1)).sum(1)
                    equal[p] += (row_scores == target_score[p].unsqueeze(1)).sum(1)
        top_valid = torch.isfinite(top_scores)  # fewer than k_max candidates: the rest are no items
        known = PairSet.from_pairs(target_row, target_item, stride=self.num_items)
        is_target = known.contains(torch.arange(r, device=device).unsqueeze(1), top_items) & top_valid  # (R, k_max)
        self._count_catalogue(top_items, top_valid)
        # targets ranked above / tied with each target, to leave only non-target items in its AUC pairs;
        # a target that is not a candidate (masked as seen, or outside a limited candidate set) takes no part
        live_score = target_score.masked_fill(~target_live, float("nan"))
        padded, _ = _pad_rows(targets, live_score)
        same_user = padded[target_row]  # (P, T_max), nan where padded or not a candidate
        target_greater = (same_user > target_score.unsqueeze(1)).sum(1).double()
        target_equal = (same_user == target_score.unsqueeze(1)).sum(1).double()
        live_targets = torch.zeros(r, dtype=torch.float64, device=device).index_add_(
            0, target_row, target_live.double()
        )
        n_neg = n_candidates - live_targets
        nontarget_greater, nontarget_equal = greater - target_greater, equal - target_equal
        pair_credit = (n_neg[target_row] - nontarget_greater - nontarget_equal) + 0.5 * nontarget_equal  # (P,)
        pair_credit = pair_credit * target_live
        for g in range(len(self.group_names)):
            in_group = self.group_masks[g][target_item]  # (P,)
            if g in self.user_group_of:  # a user group: only its users' targets count
                in_group = in_group & getattr(self, f"user_group_{self.user_group_of[g]}")[user_ids][target_row]
            n_targets = torch.zeros(r, dtype=torch.float64, device=device).index_add_(0, target_row, in_group.double())
            auc_pairs = torch.zeros(r, dtype=torch.float64, device=device).index_add_(
                0, target_row, pair_credit * in_group
            )
            hits = (is_target & self.group_masks[g][top_items]).double()
            auc_targets = torch.zeros(r, dtype=torch.float64, device=device).index_add_(
                0, target_row, (in_group & target_live).double()
            )
            chunk = RankedChunk(hits, n_targets, auc_pairs, n_neg, auc_targets)
            self.users[g] += (n_targets > 0).sum()
            for a, name in enumerate(self.user_names):
                definition = USER_METRICS[name]
                for j, k in enumerate(self.ks if definition.at_k else self.ks[:1]):
                    values, weights = definition.fn(chunk, min(k, k_max))
                    self.sums[g, a, j] += (values.nan_to_num(0.0) * weights).sum()
                    self.weights[g, a, j] += weights.sum()

    def _count_catalogue(self, top_items: torch.Tensor, top_valid: torch.Tensor) -> None:
        for j, k in enumerate(self.ks):
            chosen, valid = top_items[:, :k], top_valid[:, :k]
            self.rec_counts[j] += torch.bincount(chosen[valid], minlength=self.num_items).double()
            per_user = (self.popularity[chosen] * valid).sum(1) / valid.sum(1).clamp(min=1)
            self.popularity_sum[j] += per_user.sum()

    def _auc_pairs(
        self, users: torch.Tensor, items: torch.Tensor, targets: CSR, seen: CSR, user_ids: torch.Tensor
    ) -> None:
        """Each (user, target) against one unseen non-target item chosen by a hash of the pair, so the
        pairs, and the pooled AUC, are the same however users are split among processes."""
        row, item = targets.row_of_entries(), targets.items
        uid = user_ids.to(items.device)[row].long()
        negative = torch.full_like(item, -1)
        excluded = [PairSet.from_pairs(c.row_of_entries(), c.items, stride=self.num_items) for c in (targets, seen)]
        for attempt in range(AUC_NEGATIVE_TRIES):
            guess = (uid * 2654435761 + item * 40503 + attempt * 1000003 + 12345) % self.num_items
            ok = (negative < 0) & ~excluded[0].contains(row, guess) & ~excluded[1].contains(row, guess)
            negative = torch.where(ok, guess, negative)
        found = negative >= 0
        pos = (users[row] * items[item]).sum(-1)
        neg = (users[row[found]] * items[negative[found]]).sum(-1)
        self.auc_scores.append(torch.cat([pos, neg]).float())
        self.auc_labels.append(torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).long())

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for g, group in enumerate(self.group_names):
            if self.users[g] == 0:
                continue
            out[f"{group}/users"] = self.users[g]
            for a, name in enumerate(self.user_names):
                at_k = USER_METRICS[name].at_k
                for j, k in enumerate(self.ks if at_k else self.ks[:1]):
                    key = f"{group}/{name}@{k}" if at_k else f"{group}/{name}"
                    out[key] = self.sums[g, a, j] / self.weights[g, a, j].clamp(min=1e-12)
        for name in self.catalogue_names:
            for j, k in enumerate(self.ks):
                out[f"{name}@{k}"] = CATALOGUE_METRICS[name](
                    self.rec_counts[j], self.popularity_sum[j], self.evaluated, self.popularity
                )
        if self.pooled_auc:
            scores, labels = _cat(self.auc_scores), _cat(self.auc_labels)
            if len(labels) and 0 < int(labels.sum()) < len(labels):
                out["auc"] = binary_auroc(scores, labels, thresholds=None)
        return out


def _cat(state) -> torch.Tensor:
    if isinstance(state, torch.Tensor):
        return state
    return torch.cat(state) if state else torch.zeros(0)


def _pad_rows(csr: CSR, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR-aligned ``values`` (P,) as a (R, T_max) matrix padded with nan, and the row lengths (R,)."""
    lengths = csr.lengths()
    width = int(lengths.max()) if len(lengths) else 0
    out = torch.full((len(csr), max(width, 1)), float("nan"), dtype=values.dtype, device=values.device)
    rows = csr.row_of_entries()
    cols = torch.arange(len(rows), device=values.device) - csr.ptr[rows]
    out[rows, cols] = values
    return out, lengths
