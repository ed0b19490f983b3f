"""Latency and throughput of the real HTTP service (uvicorn on 127.0.0.1, one worker), driven by a
bounded async client at fixed concurrency for a fixed number of requests.

    python experiments/serve_benchmark.py --bundle BUNDLE [--requests 2000 --concurrency 1 8 --million]

Measures POST /recommend (a random 10-item history), POST /search (two topic words) and POST /items
(a new text-only item, embedded, indexed and persisted) on the bundle; with --million also
/recommend and /search on a copy whose catalogue is 1,000,000 random normalised vectors, once with
an HNSW index and once with exact flat search. Prints a markdown table (req/s, p50/p95/p99 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from serving_process import TOKEN, free_port, start_server

from mmrec.data.synthetic import TOPICS
from mmrec.io import write_text
from mmrec.serving.bundle import bundle_files, load_catalogue, save_catalogue, sha256_of
from mmrec.serving.index import build_index, write_index


async def drive(port: int, make_request, n: int, concurrency: int) -> dict:
    """``n`` requests at ``concurrency`` in flight; per-request latency and overall req/s."""
    latencies, failures = [], 0
    queue = iter(range(n))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=auth) as client:

        async def worker():
            nonlocal failures
            for i in queue:
                method, path, body = make_request(i)
                start = time.perf_counter()
                response = await client.request(method, path, json=body)
                latencies.append(time.perf_counter() - start)
                failures += response.status_code >= 400

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "req/s": n / wall,
        "p50": np.percentile(ms, 50),
        "p95": np.percentile(ms, 95),
        "p99": np.percentile(ms, 99),
        "failures": failures,
    }


def million_bundle(source: Path, out: Path, kind: str, n: int = 1_000_000) -> Path:
    """A copy of ``source`` whose catalogue is ``n`` random normalised vectors (no per-modality features)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("catalogue.safetensors", "index.faiss"))
    dim = json.loads((source / "manifest.json").read_text())["dim"]
    vectors = torch.nn.functional.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(0)), dim=1)
    items = [{"item_id": f"m{i:07d}", "title": f"item {i}", "description": "", "tags": ""} for i in range(n)]
    save_catalogue(
        out,
        {
            "items": items,
            "embeddings": vectors,
            "features": {},
            "present": {},
            "deleted": torch.zeros(n, dtype=torch.bool),
        },
    )
    start = time.perf_counter()
    write_index(build_index(vectors.numpy(), kind), str(out / "index.faiss"))
    print(f"built the 1M-item {kind} index in {time.perf_counter() - start:.0f} s", flush=True)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["index"] = kind  # a bundle this script made itself: its files hashed anew
    manifest["sha256"] = {name: sha256_of(out / name) for name in bundle_files(out)}
    write_text(out / "manifest.json", json.dumps(manifest))
    return out


def shifted(make, offset: int):
    return lambda i: make(i + offset)


def run(bundle: Path, label: str, n: int, levels: list[int], adds: bool) -> list[str]:
    ids = [item["item_id"] for item in load_catalogue(bundle / "catalogue.safetensors")["items"]]
    rng = np.random.default_rng(0)
    words = [w for ws in TOPICS.values() for w in ws]
    # every payload is made before timing: the client's own work must not be measured
    histories = [[ids[j] for j in rng.integers(0, len(ids), 10)] for _ in range(n + 100)]
    queries = [" ".join(rng.choice(words, 2)) for _ in range(n + 100)]
    titles = [f"{rng.choice(words)} {rng.choice(words)} video" for _ in range(1000)]
    port = free_port()
    proc = start_server(bundle, port)
    rows = []
    try:
        cases = {
            "POST /recommend": lambda i: ("POST", "/recommend", {"history": histories[i % len(histories)], "k": 10}),
            "POST /search": lambda i: ("POST", "/search", {"query": queries[i % len(queries)], "k": 10}),
        }
        if adds:
            cases["POST /items (add)"] = lambda i: (
                "POST",
                "/items",
                {"item_id": f"bench-{i}", "title": titles[i % 1000]},
            )
        for name, make in cases.items():
            for level, concurrency in enumerate(levels):
                count = n if "add" not in name else min(n, 200)
                if "add" in name:  # new ids each round, the warm-up's too
                    make_round = shifted(make, 10_000 * (level + 1))
                    asyncio.run(drive(port, shifted(make, 100_000 * (level + 1)), 20, concurrency))
                else:
                    make_round = make
                    asyncio.run(drive(port, make, min(50, count), concurrency))  # warm-up
                r = asyncio.run(drive(port, make_round, count, concurrency))
                timing = f"{r['req/s']:.0f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f}"
                rows.append(f"| {label} | {name} | {concurrency} | {count} | {timing} | {r['failures']} |")
                print(rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8], help="requests in flight (each level is a run)"
    )
    parser.add_argument("--million", action="store_true", help="also a 1M-item catalogue (HNSW and flat)")
    parser.add_argument("--million-only", action="store_true", help="only the 1M-item catalogue")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="mmrec-bench-"))
    shutil.copytree(args.bundle, work / "bundle")  # adds are persisted: never into the caller's bundle
    size = len(load_catalogue(work / "bundle" / "catalogue.safetensors")["items"])
    header = [
        "| catalogue | endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    if not args.million_only:
        label = f"{size:,} items, {json.loads((args.bundle / 'manifest.json').read_text())['index']}"
        rows += run(work / "bundle", label, args.requests, args.concurrency, True)
    if args.million or args.million_only:
        for kind in ("hnsw", "flat"):
            big = million_bundle(args.bundle, work / f"million-{kind}", kind)
            rows += run(big, f"1,000,000 random items, {kind}", args.requests, args.concurrency, False)
            shutil.rmtree(big)
    shutil.rmtree(work)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"
    )
    text = (
        "\n".join(header + rows)
        + f"\n\nconcurrency {args.concurrency}, one uvicorn worker, client on the same machine; {machine}\n"
    )
    text += "command: python " + " ".join(sys.argv) + "\n"
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
