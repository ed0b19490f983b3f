"""What the media shards' keyframe codecs cost: bytes a frame, decode time a read, pixel error.

    python experiments/media_codec.py --root DIR --out runs/media_codec
    python experiments/media_codec.py --root DIR --out runs/media_engines --engines --items 1682

Loads a dataset with ``--loader`` (any loader taking ``root``; default ml-100k + TMDB), featurises its first ``--items``
items' keyframes with ImageFeaturizer for ``--model`` (its input size; no weights are needed), writes
media shards raw, JPEG and PNG (``data.media_codec``), and reads every item back from each.
With ``--engines`` it instead writes the JPEG shards on each media engine (this process alone, two
DataLoader workers, two Ray Data actors in local mode: ``catalogue=ray``), timing each and checking
that every engine writes the same bytes. Prints a markdown table and writes it to OUT/results.md.
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

from mmrec.data.ray_media import RayMedia
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


def engines(featurizer: ImageFeaturizer, num_items: int, folder: Path, workers: int) -> str:
    """JPEG shards written by each engine: seconds, items/s, speed-up over one process, same bytes."""
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    ray_engine = RayMedia(actors=workers)
    runs = {
        "this process": (0, None),
        f"{workers} DataLoader workers": (workers, None),
        f"{workers} Ray actors": (0, ray_engine),
    }
    for path in featurizer.media_files():  # every engine reads the files from the page cache, not the first alone
        path.read_bytes()
    start = time.perf_counter()
    sharded(featurizer, workers, folder, "startup", 0, "image", "jpeg", ray_engine)
    startup = time.perf_counter() - start  # actors started, one item each: Ray's fixed cost
    lines = [
        "| engine | seconds | items/s | speed-up | items/s after start-up | same bytes |",
        "|---|---|---|---|---|---|",
    ]
    first, reference = None, None
    for k, (name, (num_workers, engine)) in enumerate(runs.items()):
        start = time.perf_counter()
        reader = sharded(featurizer, num_items, folder, f"engine{k}", num_workers, "image", "jpeg", engine)
        seconds = time.perf_counter() - start
        data = (reader.folder / "frames.bin").read_bytes() + (reader.folder / "offsets.npy").read_bytes()
        first, reference = first or seconds, reference or data
        steady = num_items / (seconds - startup) if engine is not None else num_items / seconds
        lines.append(
            f"| {name} | {seconds:.1f} | {num_items / seconds:.0f} | {first / seconds:.2f}x | {steady:.0f} "
            f"| {data == reference} |"
        )
    ray.shutdown()
    return "\n".join(lines) + f"\n\nRay's fixed cost ({workers} actors started, one item each): {startup:.1f} s"


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
    parser.add_argument("--engines", action="store_true", help="time the media engines instead of the codecs")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers and Ray actors for --engines")
    args = parser.parse_args()
    module, _, function = args.loader.rpartition(".")
    dataset = getattr(importlib.import_module(module), function)(root=args.root)
    featurizer = ImageFeaturizer(dataset, args.model, num_frames=args.frames)
    num_items = min(args.items, dataset.num_items)
    size = tuple(featurizer(0, []).value.shape[-2:])
    if args.engines:
        result = engines(featurizer, num_items, args.out / "shards", args.workers)
    else:
        result = table(measure(featurizer, num_items, args.out / "shards"), size)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    text = f"{result}\n\n{num_items} items of {dataset.name} at {size[0]}x{size[1]}; machine: {machine}\n"
    text += f"command: python {' '.join(sys.argv)}\n"
    write_text(args.out / "results.md", text)
    print(text)


if __name__ == "__main__":
    main()
