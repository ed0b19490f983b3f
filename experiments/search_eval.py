"""Text-to-video search on the embedded dataset: mmrec's /search path against a BM25 baseline.

    python experiments/search_eval.py --bundle BUNDLE --data data/synthetic \
        [--out experiments/results/search.md]

Queries are built from attributes.csv: for each of the 8 topics, three phrasings of its name
("cooking", "cooking videos", "videos about cooking") and one of two of its words ("recipe pasta");
an item is relevant when its hidden topic is the query's. The topic name itself never appears in
item text (titles and descriptions use the topic's words), so lexical matching can only work on the
word queries; both kinds are reported. precision@10 = relevant share of the top 10; ndcg@10 with
binary gains (every topic has far more than 10 relevant items, so the ideal ranking is ten relevant
items).
"""

from __future__ import annotations

import argparse
import platform
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rank_bm25 import BM25Okapi

from mmrec.data.synthetic import TOPICS
from mmrec.io import write_text
from mmrec.serving.bundle import Bundle
from mmrec.serving.recommender import Recommender

PHRASINGS = ("{t}", "{t} videos", "videos about {t}")
DISCOUNTS = 1 / np.log2(np.arange(2, 12))


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def scores(ranked_topics: list[str], topic: str) -> tuple[float, float]:
    rel = np.array([t == topic for t in ranked_topics[:10]], dtype=float)
    return rel.mean(), float((rel * DISCOUNTS[: len(rel)]).sum() / DISCOUNTS.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument(
        "--data", type=Path, required=True, help="the embedded dataset folder (items.csv, attributes.csv)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rec = Recommender(Bundle.load(args.bundle))
    items = pd.read_csv(args.data / "items.csv", keep_default_na=False)
    topic_of = pd.read_csv(args.data / "attributes.csv").set_index("item_id")["topic"].to_dict()
    bm25 = BM25Okapi([tokens(f"{t} {d}") for t, d in zip(items["title"], items["description"])])
    rows = {}
    start = time.perf_counter()
    for topic in sorted(set(topic_of.values())):
        queries = [("topic name", p.format(t=topic)) for p in PHRASINGS] + [
            ("topic words", " ".join(TOPICS[topic][:2]))
        ]
        for kind, query in queries:
            found = [topic_of[r.item_id] for r in rec.search(query, 10)]
            rows.setdefault(("mmrec /search", kind), []).append(scores(found, topic))
            order = np.argsort(-bm25.get_scores(tokens(query)), kind="stable")[:10]
            rows.setdefault(("BM25 (titles + descriptions)", kind), []).append(
                scores([topic_of[items["item_id"][i]] for i in order], topic)
            )
    seconds = time.perf_counter() - start
    lines = ["| method | queries | n | precision@10 | ndcg@10 |", "|---|---|---|---|---|"]
    for (name, kind), values in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        p, n = np.mean(values, axis=0)
        lines.append(f"| {name} | {kind} | {len(values)} | {p:.3f} | {n:.3f} |")
    chance = 1 / len(set(topic_of.values()))
    total = sum(len(v) for k, v in rows.items() if k[0] == "mmrec /search")
    text = "\n".join(lines) + f"\n\nchance precision: {chance:.3f}; {total} queries in {seconds:.1f} s\n"
    text += f"bundle: {args.bundle} ({rec.bundle.manifest['checkpoint']})\n"
    text += f"machine: {platform.machine()}, {platform.python_version()}\n"
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
