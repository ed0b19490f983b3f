"""Every ranking metric against a brute-force, per-user reference on small random cases."""

import math

import numpy as np
import pytest
import torch

from mmrec.data.batches import to_csr
from mmrec.evaluation import ranking
from mmrec.evaluation.ranking import gini, rank_and_score
from mmrec.evaluation.table import format_metrics


def brute_force(scores, targets, seen, groups, popularity, ks):
    """Sort each user's unseen items by score and count, one user and one K at a time."""
    out, rec_counts, pop = {}, {k: np.zeros(scores.shape[1]) for k in ks}, {k: 0.0 for k in ks}
    for name, group in groups.items():
        sums = {(m, k): 0.0 for m in ("recall", "ndcg", "hit", "mrr") for k in ks}
        users = 0
        for u in range(len(scores)):
            t = {i for i in targets[u] if group[i]}
            order = [i for i in np.argsort(-scores[u], kind="stable") if i not in seen[u]]
            if name == "all":
                for k in ks:
                    rec_counts[k][order[:k]] += 1
                    pop[k] += popularity[order[:k]].mean()
            if not t:
                continue
            users += 1
            for k in ks:
                top = order[:k]
                hits = [1.0 if i in t else 0.0 for i in top]
                sums["recall", k] += sum(hits) / len(t)
                dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
                idcg = sum(1 / math.log2(r + 2) for r in range(min(len(t), k)))
                sums["ndcg", k] += dcg / idcg
                sums["hit", k] += float(any(hits))
                sums["mrr", k] += next((1 / (r + 1) for r, h in enumerate(hits) if h), 0.0)
        prefix = "test" if name == "all" else f"test_{name}"
        for (m, k), v in sums.items():
            if users:
                out[f"{prefix}/{m}@{k}"] = v / users
    n = len(scores)
    for k in ks:
        out[f"test/coverage@{k}"] = float((rec_counts[k] > 0).mean())
        out[f"test/popularity@{k}"] = pop[k] / n
        out[f"test/gini@{k}"] = gini(torch.tensor(rec_counts[k]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_brute_force(seed, monkeypatch):
    monkeypatch.setattr(ranking, "ELEMENT_BUDGET", 40)  # force several user chunks
    rng = np.random.default_rng(seed)
    n_users, n_items, ks = 13, 30, (1, 5, 10)
    users = torch.randn(n_users, 6, generator=torch.Generator().manual_seed(seed))
    items = torch.randn(n_items, 6, generator=torch.Generator().manual_seed(seed + 100))
    scores = (users @ items.T).numpy()
    seen = [set(rng.choice(n_items, rng.integers(0, 8), replace=False).tolist()) for _ in range(n_users)]
    targets = [sorted(set(rng.choice(n_items, rng.integers(1, 6), replace=False).tolist()) - seen[u]) or [next(i for i in range(n_items) if i not in seen[u])] for u in range(n_users)]
    cold = torch.from_numpy(rng.random(n_items) < 0.3)
    groups = {"all": torch.ones(n_items, dtype=torch.bool), "warm": ~cold, "cold": cold}
    popularity = torch.from_numpy(rng.integers(0, 50, n_items)).float()
    t_ptr, t_items = to_csr([np.array(t) for t in targets])
    e_ptr, e_items = to_csr([np.array(sorted(s), dtype=np.int64) for s in seen])
    got = rank_and_score(users, items, t_ptr, t_items, e_ptr, e_items, groups, popularity, ks).metrics("test")
    expected = brute_force(scores, targets, seen, {k: v.numpy() for k, v in groups.items()}, popularity.double().numpy(), ks)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert got["test/users"] == n_users


def test_perfect_and_worst_rankings():
    items = torch.eye(4)
    users = torch.eye(4)[[0, 1]]
    t_ptr, t_items = to_csr([np.array([0]), np.array([3])])
    e_ptr, e_items = to_csr([np.array([], dtype=np.int64), np.array([1], dtype=np.int64)])
    groups = {"all": torch.ones(4, dtype=torch.bool)}
    m = rank_and_score(users, items, t_ptr, t_items, e_ptr, e_items, groups, torch.ones(4), (1, 3)).metrics("test")
    assert m["test/recall@1"] == 0.5 and m["test/ndcg@1"] == 0.5 and m["test/mrr@3"] == pytest.approx((1 + 1 / 2) / 2)


def test_candidates_restrict_the_ranking():
    items = torch.tensor([[1.0], [0.5], [0.1]])
    users = torch.tensor([[1.0]])
    t_ptr, t_items = to_csr([np.array([2])])
    e_ptr, e_items = to_csr([np.array([], dtype=np.int64)])
    groups = {"all": torch.ones(3, dtype=torch.bool)}
    full = rank_and_score(users, items, t_ptr, t_items, e_ptr, e_items, groups, torch.ones(3), (1,)).metrics("t")
    only = rank_and_score(users, items, t_ptr, t_items, e_ptr, e_items, groups, torch.ones(3), (1,), torch.tensor([False, False, True])).metrics("t")
    assert full["t/hit@1"] == 0.0 and only["t/hit@1"] == 1.0


def test_gini_extremes():
    assert gini(torch.tensor([5.0, 5.0, 5.0])) == pytest.approx(0.0)
    assert gini(torch.tensor([0.0, 0.0, 0.0, 12.0])) == pytest.approx(0.75)


def test_table_lists_groups_and_ks():
    metrics = {f"test{g}/{m}@{k}": 0.1 for g in ("", "_cold") for m in ("recall", "ndcg", "hit", "mrr") for k in (10, 20)}
    metrics.update({"test/users": 5, "test_cold/users": 2, "test/coverage@10": 0.5, "test/coverage@20": 0.7})
    table = format_metrics(metrics, "test", "run")
    assert "cold-start recall" in table and "@20" in table and "coverage" in table and "warm" not in table
