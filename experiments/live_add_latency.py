"""Add and delete latency of the live catalogue against its size (mmrec.serving.live): O(1) or not.

    python experiments/live_add_latency.py --sizes 2000 1000000 --adds 300 --index flat

For each catalogue size: a base catalogue of random unit vectors (no model: this measures the
store and the index, not the encoders), then ``--adds`` adds (a durable SQLite commit, an append to
the in-memory arrays and the index) and as many deletes, timed one by one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmrec.serving.index import build_index
from mmrec.serving.live import LiveCatalogue


def measure(size: int, adds: int, kind: str, dim: int, folder: Path) -> dict:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(size, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalogue = {
        "items": [{"item_id": f"b{i}", "title": ""} for i in range(size)],
        "embeddings": torch.from_numpy(vectors),
        "features": {"text": torch.zeros(size, 8)},
        "present": {"text": torch.ones(size, dtype=torch.bool)},
        "deleted": torch.zeros(size, dtype=torch.bool),
    }
    start = time.perf_counter()
    live = LiveCatalogue(catalogue, build_index(vectors, kind), kind, folder / f"store-{size}.sqlite", "b", 10**9)
    setup = time.perf_counter() - start
    add_ms, delete_ms = [], []
    for i in range(adds):
        vector = torch.from_numpy(rng.normal(size=dim).astype(np.float32))
        t = time.perf_counter()
        item = {"item_id": f"n{i}", "title": ""}
        live.add(item, vector, {"text": torch.zeros(8)}, {"text": torch.tensor(True)}, source=item)
        add_ms.append((time.perf_counter() - t) * 1000)
    for i in range(adds):
        t = time.perf_counter()
        live.delete(f"b{i}")
        delete_ms.append((time.perf_counter() - t) * 1000)
    return {"size": size, "setup_s": setup, "add": np.array(add_ms), "delete": np.array(delete_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 1_000_000])
    parser.add_argument("--adds", type=int, default=300)
    parser.add_argument("--index", default="flat")
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    print("| items | index | adds | add p50 ms | add p99 ms | delete p50 ms | delete p99 ms | start-up s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            r = measure(size, args.adds, args.index, args.dim, Path(folder))
            a, d = r["add"], r["delete"]
            print(
                f"| {size:,} | {args.index} | {args.adds} | {np.percentile(a, 50):.2f} | {np.percentile(a, 99):.2f} "
                f"| {np.percentile(d, 50):.2f} | {np.percentile(d, 99):.2f} | {r['setup_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
