"""Recall@K of each index type (compressed or approximate) against exact search, with a bundle's
item embeddings as both the catalogue and the queries (each item's nearest neighbours).

    python experiments/index_recall.py --bundle BUNDLE [--k 10] [--out experiments/results/index_recall.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mmrec.io import write_text
from mmrec.serving.bundle import load_catalogue
from mmrec.serving.index import INDEX_TYPES, build_index, recall_against_exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    vectors = load_catalogue(args.bundle / "catalogue.safetensors")["embeddings"].numpy()
    lines = [f"| index | recall@{args.k} vs exact | bytes per vector | build s |", "|---|---|---|---|"]
    for kind in INDEX_TYPES:
        start = time.perf_counter()
        index = build_index(vectors, kind)
        seconds = time.perf_counter() - start
        size = {
            "flat": 4 * vectors.shape[1],
            "flat_fp16": 2 * vectors.shape[1],
            "hnsw": 4 * vectors.shape[1] + 4 * 2 * 32,  # the vector + its level-0 links (2M int32 ids)
        }.get(kind)
        if kind == "ivfpq":
            size = index.pq.code_size
        recall = recall_against_exact(index, vectors, vectors, args.k)
        lines.append(f"| {kind} | {recall:.4f} | {size} | {seconds:.2f} |")
    text = "\n".join(lines) + f"\n\n{len(vectors):,} items of {vectors.shape[1]} dims from {args.bundle}\n"
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
