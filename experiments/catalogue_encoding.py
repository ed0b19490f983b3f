"""Frozen MiniLM over a text catalogue: in this process (1 and 2 threads) against Ray Data encoder actors.

    python experiments/catalogue_encoding.py --items 100000 --out runs/catalogue

Generates N items in the native layout whose titles are 6 to 24 random words (no media), builds the
text-only model (`+experiment=text_only data=native`, frozen all-MiniLM-L6-v2, 48 tokens), and
times the whole-catalogue pass three ways: today's in-process loader with 1 torch thread, with 2,
and `catalogue=ray` (local Ray cluster, one single-threaded encoder actor per core). Reports items/s,
the speed-up over one thread, and the largest difference between the Ray and in-process embeddings.
Ray's start-up (cluster and actors) is timed apart from the pass.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from scale_benchmark import compose_native, generate

from mmrec.io import write_text

WORDS = (
    "live acoustic session remix official video episode podcast interview trailer review guide lesson "
    "jazz rock piano guitar drums orchestra choir news sport football tennis cooking travel science "
    "history space ocean city night summer winter morning story comedy drama kids family retro"
).split()


def write_titles(root: Path, seed: int = 0) -> None:
    """Replaces the generated titles with 6-24 random words, so the tokenizer and encoder see real lengths."""
    items = pq.read_table(root / "items.parquet")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, 25, items.num_rows)
    words = np.array(WORDS)[rng.integers(0, len(WORDS), int(lengths.sum()))]
    titles = [" ".join(chunk) for chunk in np.split(words, np.cumsum(lengths)[:-1])]
    pq.write_table(
        items.set_column(items.schema.get_field_index("title"), "title", pa.array(titles)), root / "items.parquet"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import ray

    from mmrec.build import build
    from mmrec.training.cache import encode_catalogue
    from mmrec.training.ray_catalogue import RayCatalogue

    root = args.out / f"data-{args.items}"
    if not (root / "items.parquet").is_file():
        generate(root, args.items)
        write_titles(root)
    dm, module = build(compose_native(root, ["+experiment=text_only", "data.eval_batch_size=256"]))
    encoder, n = module.model.encoders["text"], dm.num_items
    rows, reference = [], None
    for threads in (1, 2):
        torch.set_num_threads(threads)
        start = time.perf_counter()
        features, _, _ = encode_catalogue(encoder, "text", dm.item_dataloader(("text",)), n, torch.device("cpu"))
        seconds = time.perf_counter() - start
        reference = features if reference is None else reference
        rows.append((f"in-process, {threads} thread(s)", seconds, float((features - reference).abs().max())))
    start = time.perf_counter()
    ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False)
    engine = RayCatalogue(dm.featurizers, actors=args.actors, cpus_per_actor=1, batch_size=256)
    engine.connect()
    ray_start = time.perf_counter() - start
    start = time.perf_counter()
    features, _, _ = engine(encoder, "text", n)
    seconds = time.perf_counter() - start
    rows.append((f"Ray Data, {args.actors} actors x 1 thread", seconds, float((features - reference).abs().max())))
    ray.shutdown()

    one = rows[0][1]
    lines = [
        f"{n:,} items, frozen all-MiniLM-L6-v2 (48 tokens), batch 256; {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__}, Ray {ray.__version__}. "
        f"Ray start-up (local cluster) {ray_start:.1f} s, not included below.",
        "",
        "| pass | seconds | items/s | vs 1 thread | max abs diff vs 1 thread |",
        "|---|---|---|---|---|",
        *(f"| {name} | {s:.1f} | {n / s:,.0f} | {one / s:.2f}x | {d:.1e} |" for name, s, d in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text(args.out / "results.md", text)


if __name__ == "__main__":
    main()
