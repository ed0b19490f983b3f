"""Readable metric tables for the terminal and for markdown reports."""

from __future__ import annotations

GROUP_LABELS = {"": "all", "_warm": "warm", "_cold": "cold-start"}
ACCURACY = ("recall", "ndcg", "hit", "mrr")


def format_metrics(metrics: dict[str, float], part: str = "test", title: str = "") -> str:
    """A fixed-width table: one row per (group, metric), one column per K, then beyond-accuracy."""
    ks = sorted({int(k.split("@")[1]) for k in metrics if k.startswith(f"{part}/recall@")})
    if not ks:
        return f"{title}: no {part} metrics"
    lines = [f"== {title} — {part} ==" if title else f"== {part} =="]
    lines.append(f"{'group':<11}{'metric':<11}" + "".join(f"{'@' + str(k):>9}" for k in ks) + f"{'users':>9}")
    for suffix, label in GROUP_LABELS.items():
        prefix = f"{part}{suffix}"
        if f"{prefix}/recall@{ks[0]}" not in metrics:
            continue
        for metric in ACCURACY:
            values = "".join(f"{metrics.get(f'{prefix}/{metric}@{k}', float('nan')):>9.4f}" for k in ks)
            users = metrics.get(f"{prefix}/users", float("nan")) if metric == ACCURACY[0] else None
            lines.append(f"{label:<11}{metric:<11}{values}" + (f"{users:>9.0f}" if users is not None else ""))
    fairness = [("_head", "head items"), ("_mid", "mid items"), ("_tail", "tail items")] + [
        (f"_users_q{q}", f"users q{q}") for q in range(1, 6)
    ]
    for suffix, label in fairness:
        for metric in ("recall", "ndcg"):
            if f"{part}{suffix}/{metric}@{ks[0]}" in metrics:
                values = "".join(f"{metrics.get(f'{part}{suffix}/{metric}@{k}', float('nan')):>9.4f}" for k in ks)
                lines.append(f"{label:<11}{metric:<11}{values}")
    for metric in ("coverage", "popularity", "gini", "tail_share"):
        if f"{part}/{metric}@{ks[0]}" in metrics:
            lines.append(
                f"{'catalogue':<11}{metric:<11}" + "".join(f"{metrics[f'{part}/{metric}@{k}']:>9.4f}" for k in ks)
            )
    for suffix, label in GROUP_LABELS.items():
        if f"{part}{suffix}/gauc" in metrics:
            lines.append(f"{label:<11}{'gauc':<11}{metrics[f'{part}{suffix}/gauc']:>9.4f}")
    if f"{part}/auc" in metrics:
        lines.append(f"{'pointwise':<11}{'auc':<11}{metrics[f'{part}/auc']:>9.4f}")
    return "\n".join(lines)
