"""The full-ranking evaluator against a brute-force, per-user reference; chunking and process-count invariance."""

import math

import numpy as np
import pytest
import torch

from mmrec.data.csr import CSR
from mmrec.evaluation.evaluator import FullRankingEvaluator
from mmrec.evaluation.metrics import USER_METRICS, user_metric
from mmrec.evaluation.table import format_metrics
from mmrec.training.module import metric_key


def brute_force(scores, targets, seen, groups, popularity, ks):
    """Sort each user's unseen items by score and count, one user, one group and one K at a time."""
    out, rec_counts, pop = {}, {k: np.zeros(scores.shape[1]) for k in ks}, {k: 0.0 for k in ks}
    for name, group in groups.items():
        sums = {(m, k): 0.0 for m in ("recall", "ndcg", "hit", "mrr") for k in ks}
        users, gauc_num, gauc_den = 0, 0.0, 0.0
        for u in range(len(scores)):
            t = {i for i in targets[u] if group[i]}
            candidates = [i for i in range(scores.shape[1]) if i not in seen[u]]
            order = sorted(candidates, key=lambda i: -scores[u, i])
            if name == "all":
                for k in ks:
                    rec_counts[k][order[:k]] += 1
                    pop[k] += popularity[order[:k]].mean()
            if not t:
                continue
            users += 1
            for k in ks:
                hits = [1.0 if i in t else 0.0 for i in order[:k]]
                sums["recall", k] += sum(hits) / len(t)
                dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
                sums["ndcg", k] += dcg / sum(1 / math.log2(r + 2) for r in range(min(len(t), k)))
                sums["hit", k] += float(any(hits))
                sums["mrr", k] += next((1 / (r + 1) for r, h in enumerate(hits) if h), 0.0)
            negatives = [j for j in candidates if j not in set(targets[u])]
            if negatives:
                pairs = sum(
                    1.0 if scores[u, i] > scores[u, j] else 0.5 if scores[u, i] == scores[u, j] else 0.0
                    for i in t
                    for j in negatives
                )
                gauc_num += pairs / len(negatives)  # = auc_u * |T_u|
                gauc_den += len(t)
        for (m, k), v in sums.items():
            out[f"{name}/{m}@{k}"] = v / users
        out[f"{name}/users"] = users
        out[f"{name}/gauc"] = gauc_num / gauc_den
    for k in ks:
        counts = np.sort(rec_counts[k])
        n = len(counts)
        out[f"coverage@{k}"] = float((counts > 0).mean())
        out[f"popularity@{k}"] = pop[k] / len(scores)
        out[f"gini@{k}"] = float(((2 * np.arange(1, n + 1) - n - 1) * counts).sum() / (n * counts.sum()))
    return out


def random_case(seed, n_users=13, n_items=30, dim=6, tie=False):
    rng = np.random.default_rng(seed)
    users = torch.randn(n_users, dim, generator=torch.Generator().manual_seed(seed))
    items = torch.randn(n_items, dim, generator=torch.Generator().manual_seed(seed + 100))
    if tie:
        items[3] = items[4]  # every user scores them equally
    seen = [set(rng.choice(n_items, rng.integers(0, 8), replace=False).tolist()) for _ in range(n_users)]
    targets = [
        sorted(set(rng.choice(n_items, rng.integers(1, 6), replace=False).tolist()) - seen[u])
        or [min(set(range(n_items)) - seen[u])]
        for u in range(n_users)
    ]
    cold = torch.from_numpy(rng.random(n_items) < 0.3)
    groups = {"all": torch.ones(n_items, dtype=torch.bool), "warm": ~cold, "cold": cold}
    popularity = torch.from_numpy(rng.integers(0, 50, n_items)).float()
    return users, items, targets, seen, groups, popularity


def csr(rows):
    return CSR.from_groups([np.array(sorted(r), dtype=np.int64) for r in rows])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("budget", [40, 1 << 20])  # 40: one user per chunk
@pytest.mark.parametrize("tie", [False, True])
def test_metrics_equal_brute_force(seed, budget, tie):
    users, items, targets, seen, groups, popularity = random_case(seed, tie=tie)
    ks = (1, 5, 10)
    evaluator = FullRankingEvaluator(groups, popularity, ks=ks, element_budget=budget)
    evaluator.update(users, items, csr(targets), csr(seen), torch.arange(len(users)))
    got = {k: float(v) for k, v in evaluator.compute().items()}
    expected = brute_force(
        (users @ items.T).numpy(),
        targets,
        seen,
        {k: v.numpy() for k, v in groups.items()},
        popularity.double().numpy(),
        ks,
    )
    for key, value in expected.items():
        if tie and "@" in key and key.split("@")[0] in ("coverage", "popularity", "gini"):
            continue  # which of two exactly tied items enters a top-K list is arbitrary
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert 0.0 <= got["auc"] <= 1.0


def test_item_chunks_with_running_top_k_merge():
    """A catalogue larger than one item chunk: the running top-K merge gives the one-chunk result."""
    users, items, targets, seen, groups, popularity = random_case(5, n_users=9, n_items=3000)
    whole = FullRankingEvaluator(groups, popularity, element_budget=1 << 24)
    chunked = FullRankingEvaluator(groups, popularity, element_budget=1024 * 256)  # item chunks of 1024: three
    for ev in (whole, chunked):
        ev.update(users, items, csr(targets), csr(seen), torch.arange(len(users)))
    a, b = whole.compute(), chunked.compute()
    assert a.keys() == b.keys()
    for key in a:
        assert float(b[key]) == pytest.approx(float(a[key]), abs=1e-9), key


def test_same_numbers_whatever_the_number_of_processes():
    """Users split over two evaluators (as over two ranks) with their states summed / concatenated,
    as torchmetrics' sync does, give the one-process numbers, the pooled AUC included."""
    users, items, targets, seen, groups, popularity = random_case(7, n_users=40)
    one = FullRankingEvaluator(groups, popularity)
    one.update(users, items, csr(targets), csr(seen), torch.arange(40))
    parts = [FullRankingEvaluator(groups, popularity) for _ in range(2)]
    for rank, ev in enumerate(parts):
        mine = torch.arange(rank, 40, 2)
        ev.update(users[mine], items, csr([targets[i] for i in mine]), csr([seen[i] for i in mine]), mine)
    merged = FullRankingEvaluator(groups, popularity)
    merged.update(
        users[:1], items, csr(targets[:1]), csr(seen[:1]), torch.arange(1)
    )  # marks it updated; states replaced below
    for name in ("sums", "weights", "users", "rec_counts", "popularity_sum", "evaluated"):
        setattr(merged, name, getattr(parts[0], name) + getattr(parts[1], name))
    merged.auc_scores = [torch.cat(parts[1].auc_scores + parts[0].auc_scores)]  # any order
    merged.auc_labels = [torch.cat(parts[1].auc_labels + parts[0].auc_labels)]
    a, b = one.compute(), merged.compute()
    for key in a:
        assert float(b[key]) == pytest.approx(float(a[key]), abs=1e-12), key


def test_hand_computed_case_and_a_registered_metric():
    @user_metric("first_is_hit")
    def first_is_hit(chunk, k):
        return chunk.hits[:, 0], (chunk.n_targets > 0).double()

    groups = {"all": torch.ones(4, dtype=torch.bool)}
    try:
        items, users = torch.eye(4), torch.eye(4)[[0, 1]]
        ev = FullRankingEvaluator(groups, torch.ones(4), metrics=("recall", "gauc", "first_is_hit"), ks=(1, 3))
        # user 0: target 0 scores 1, the rest 0: perfect. user 1 (item 1 seen): target 3 ties with items 0 and 2 at 0
        ev.update(users, items, csr([[0], [3]]), csr([[], [1]]), torch.arange(2))
        m = {k: float(v) for k, v in ev.compute().items()}
        assert m["all/recall@3"] == 1.0
        assert m["all/first_is_hit@1"] == m["all/recall@1"]
        assert m["all/gauc"] == pytest.approx((1.0 + 0.5) / 2)  # user 1's target ties with both negatives
    finally:
        USER_METRICS.pop("first_is_hit")
    with pytest.raises(ValueError, match="eval.metrics: unknown"):
        FullRankingEvaluator(groups, torch.ones(4), metrics=("recal",))


def test_metric_keys_and_table():
    assert metric_key("test", "all/recall@20") == "test/recall@20"
    assert metric_key("test", "cold/ndcg@10") == "test_cold/ndcg@10"
    assert metric_key("valid", "coverage@20") == "valid/coverage@20"
    table = format_metrics(
        {"test/recall@10": 0.5, "test/ndcg@10": 0.25, "test/users": 3, "test_cold/recall@10": 0.1, "test/gauc": 0.7},
        "test",
        "run",
    )
    assert "cold-start" in table and "0.5000" in table and "gauc" in table


def test_user_groups_equal_evaluating_those_users_alone_and_tail_share():
    from mmrec.evaluation.metrics import popularity_groups

    users, items, targets, seen, groups, popularity = random_case(3, n_users=20)
    mask = torch.zeros(20, dtype=torch.bool)
    mask[::3] = True
    grouped = FullRankingEvaluator(groups, popularity, user_groups={"some": mask})
    grouped.update(users, items, csr(targets), csr(seen), torch.arange(20))
    alone = FullRankingEvaluator(groups, popularity)
    chosen = torch.arange(20)[mask]
    alone.update(users[chosen], items, csr([targets[i] for i in chosen]), csr([seen[i] for i in chosen]), chosen)
    a, b = grouped.compute(), alone.compute()
    for metric in ("recall@10", "ndcg@20", "mrr@50", "gauc"):
        assert float(a[f"some/{metric}"]) == pytest.approx(float(b[f"all/{metric}"]), abs=1e-9), metric
    tail = popularity_groups(popularity)["tail"]
    assert int(tail.sum()) == 15 and popularity[tail].max() <= popularity[~tail].min()
    slots = grouped.rec_counts[0]
    assert float(a["tail_share@10"]) == pytest.approx(float(slots[tail].sum() / slots.sum()))


def test_gauc_ignores_targets_that_are_not_candidates():
    """A target that is also a seen item (a repeated interaction) or outside a limited candidate set
    takes no part in GAUC: the value equals the brute force over candidate targets and items."""
    users, items, targets, seen, groups, popularity = random_case(11, n_users=12, n_items=40)
    targets = [sorted(set(t) | ({sorted(s)[0]} if s else set())) for t, s in zip(targets, seen)]  # repeats
    candidates = torch.ones(40, dtype=torch.bool)
    candidates[35:] = False
    ev = FullRankingEvaluator(groups, popularity, metrics=("gauc",), ks=(10,))
    ev.update(users, items, csr(targets), csr(seen), torch.arange(12), candidates)
    got = float(ev.compute()["all/gauc"])
    scores = (users @ items.T).numpy()
    num, den = 0.0, 0.0
    for u in range(12):
        pool = [i for i in range(35) if i not in seen[u]]
        pos = [i for i in targets[u] if i in pool]
        neg = [j for j in pool if j not in set(targets[u])]
        if pos and neg:
            num += sum(
                1.0 if scores[u, i] > scores[u, j] else 0.5 if scores[u, i] == scores[u, j] else 0.0
                for i in pos
                for j in neg
            ) / len(neg)
            den += len(pos)
    assert 0.0 <= got <= 1.0 and got == pytest.approx(num / den, abs=1e-9)
