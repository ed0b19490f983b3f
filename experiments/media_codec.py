"""What the media shards' keyframe codecs cost: bytes a frame, decode time a read, pixel error.

    python experiments/media_codec.py --root DIR --out runs/media_codec

Loads a dataset with ``--loader`` (any loader taking ``root``; default ml-100k + TMDB), featurises its first ``--items``
items' keyframes with ImageFeaturizer for ``--model`` (its input size; no weights are needed), writes
media shards raw, JPEG and PNG (``data.media_codec``), and reads every item back from each.
Prints a markdown table and writes it to OUT/results.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmrec.data.shards import CODECS, sharded
from mmrec.io import write_text
from mmrec.modalities.image import ImageFeaturizer


def measure(featurizer: ImageFeaturizer, num_items: int, folder: Path) -> list[dict]:
    rows, reference = [], None
    for codec in CODECS:
        start = time.perf_counter()
        reader = sharded(featurizer, num_items, folder, "images", codec=codec)
        written = time.perf_counter() - start
        start = time.perf_counter()
        values = [reader(i, []).value for i in range(num_items)]
        read = (time.perf_counter() - start) / num_items
        stored = sum(f.stat().st_size for f in reader.folder.iterdir() if f.name in ("value.npy", "frames.bin"))
        frames = num_items * featurizer(0, []).value.shape[0]
        reference = reference or values
        error = np.mean([(v.float() - r.float()).abs().mean().item() for v, r in zip(values, reference)])
        rows.append({"codec": codec, "bytes": stored / frames, "write": written, "read": read, "error": error})
    return rows


def table(rows: list[dict], size: tuple[int, int]) -> str:
    raw = rows[0]["bytes"]
    lines = [
        f"| codec | bytes / {size[0]}x{size[1]} frame | vs raw | write s | read ms / item | mean abs pixel error |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['codec']} | {r['bytes']:,.0f} | {r['bytes'] / raw:.3f} | {r['write']:.1f} | {r['read'] * 1e3:.2f} "
            f"| {r['error']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--loader",
        default="mmrec.data.loaders.movielens_tmdb.load_movielens_tmdb",
        help="module.function of a dataset loader taking root (default: ml-100k with TMDB posters)",
    )
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model whose input size the frames take")
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    module, _, function = args.loader.rpartition(".")
    dataset = getattr(importlib.import_module(module), function)(root=args.root)
    featurizer = ImageFeaturizer(dataset, args.model, num_frames=args.frames)
    num_items = min(args.items, dataset.num_items)
    size = tuple(featurizer(0, []).value.shape[-2:])
    rows = measure(featurizer, num_items, args.out / "shards")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    text = f"{table(rows, size)}\n\n{num_items} items of {dataset.name}; machine: {machine}\n"
    text += f"command: python {' '.join(sys.argv)}\n"
    write_text(args.out / "results.md", text)
    print(text)


if __name__ == "__main__":
    main()
