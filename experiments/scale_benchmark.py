"""How start-up, training steps and evaluation grow with the catalogue: synthetic native data, no media.

    python experiments/scale_benchmark.py --items 100000 1000000 --out runs/scale

For each size N: N items (a short title and a tag), N/10 users and 5 interactions per item (Parquet,
power-law item popularity, generated in seconds), then one `mmrec.train` run of the ID-only model
(`+experiment=id_only data=native`) in a fresh process, for ``--steps`` training steps and one
full validation pass (every validation user ranked against every item, seen items masked). It
reports, per size: start-up (process start to the first training step: load, split, per-user index,
model), seconds per step and samples/s (steps 3 on), the validation pass, and the process's peak
resident memory. Prints a markdown table and writes it to OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from mmrec.io import write_text

ROW_GROUP = 1 << 20
TAGS = np.array(["jazz", "rock", "news", "sport", "comedy", "drama", "kids", "tech"])


def generate(root: Path, num_items: int, per_item: int = 5, seed: int = 0) -> None:
    """items.parquet and interactions.parquet in the native layout (ids as strings, times in seconds),
    ``per_item`` interactions per item. The id strings are made and written a row group at a time, so
    10^8 interactions take a few GB."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    item_ids = pc.binary_join_element_wise("i", pa.array(np.arange(num_items)).cast(pa.string()), "")
    items = pa.table(
        {
            "item_id": item_ids,
            "title": pc.binary_join_element_wise("video ", pa.array(np.arange(num_items)).cast(pa.string()), ""),
            "tags": pa.array(TAGS[rng.integers(0, len(TAGS), num_items)]),
        }
    )
    pq.write_table(items, root / "items.parquet")
    num_users, num_inter = max(10, num_items // 10), per_item * num_items
    users = rng.integers(0, num_users, num_inter)
    popular = np.minimum((rng.pareto(1.2, num_inter) * num_items / 50).astype(np.int64), num_items - 1)
    stamps = rng.integers(1_600_000_000, 1_700_000_000, num_inter)
    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.int64())])
    with pq.ParquetWriter(root / "interactions.parquet", schema) as writer:
        for start in range(0, num_inter, ROW_GROUP):
            rows = slice(start, start + ROW_GROUP)
            user_ids = pc.binary_join_element_wise("u", pa.array(users[rows]).cast(pa.string()), "")
            writer.write_table(pa.table([user_ids, item_ids.take(popular[rows]), stamps[rows]], schema=schema))


def compose_native(root: Path, overrides: list[str]):
    """The training config for the native data generated in ``root`` (Parquet, no DataLoader workers, no
    logger, the cache inside ``root``), as `python -m mmrec.train` would see it, running in ROOT/run."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    native = [
        "data=native",
        f"data.root={root}",
        "data.dataset.items=items.parquet",
        "data.dataset.interactions=interactions.parquet",
        "data.num_workers=0",
        "logger=none",
        f"paths.cache_dir={root / 'cache'}",
    ]
    with initialize_config_module(config_module="mmrec.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*native, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir, cfg.hydra.job.num = str(root / "run"), 0
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def measure(root: Path, steps: int, batch_size: int, extra: list[str], validate: bool = True) -> dict:
    """One training run in this process; its phases' wall times and peak memory (``validate``: with
    one full validation pass after the steps)."""
    import lightning as L

    from mmrec.build import build

    start = time.perf_counter()
    cfg = compose_native(root, ["+experiment=id_only", f"data.batch_size={batch_size}", *extra])
    L.seed_everything(0)
    marks: dict[str, float] = {}
    step_ends: list[float] = []

    class Phases(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            marks.setdefault("first_step", time.perf_counter())
            marks.setdefault("startup_peak_gb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            step_ends.append(time.perf_counter())

        def on_validation_epoch_start(self, trainer, module):
            marks["valid_start"] = time.perf_counter()

        def on_fit_end(self, trainer, module):  # after the module's own epoch-end ranking
            marks["valid_end"] = time.perf_counter()

    dm, module = build(cfg)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        val_check_interval=steps,
        limit_val_batches=None if validate else 0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Phases()],
    )
    trainer.fit(module, datamodule=dm)
    per_step = np.diff(step_ends[2:]) if len(step_ends) > 3 else np.array([float("nan")])
    return {
        "items": dm.num_items,
        "users": dm.num_users,
        "interactions": sum(len(dm.indexed.sequences[p].values) for p in ("train", "valid", "test")),
        "startup_s": marks["first_step"] - start,
        "step_s": float(np.median(per_step)),
        "samples_per_s": batch_size / float(np.median(per_step)),
        "valid_s": marks["valid_end"] - marks["valid_start"] if "valid_start" in marks else float("nan"),
        "startup_peak_gb": marks["startup_peak_gb"],  # before the first step: data, index, model
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,  # KiB on Linux
    }


def table(rows: list[dict]) -> str:
    head = "| items | users | interactions | start-up s | s/step | samples/s | validation s | peak GB |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        valid = "-" if np.isnan(r["valid_s"]) else f"{r['valid_s']:.1f}"
        lines.append(
            f"| {r['items']:,} | {r['users']:,} | {r['interactions']:,} | {r['startup_s']:.1f} | {r['step_s']:.3f} "
            f"| {r['samples_per_s']:,.0f} | {valid} | {r['peak_gb']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--per-item", type=int, default=5, help="interactions per item (users: items / 10)")
    parser.add_argument("--no-validation", action="store_true", help="training steps only (no validation pass)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process: one size
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.steps, args.batch_size, args.overrides, not args.no_validation)))
        return
    rows = []
    for n in args.items:
        root = args.out / (f"items{n}" if args.per_item == 5 else f"items{n}x{args.per_item}")
        if not (root / "interactions.parquet").is_file():
            t = time.perf_counter()
            generate(root, n, args.per_item)
            print(f"generated {n:,} items in {time.perf_counter() - t:.1f} s", flush=True)
        child = [sys.executable, __file__, "--out", str(args.out), "--measure", str(root), "--steps", str(args.steps)]
        child += ["--batch-size", str(args.batch_size), *(["--no-validation"] if args.no_validation else [])]
        child += args.overrides
        result = subprocess.run(child, capture_output=True, text=True)
        if result.returncode:
            sys.exit(f"{n:,} items failed:\n{result.stderr[-4000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(table(rows[-1:]), flush=True)
    threads = torch.get_num_threads()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {threads} torch threads, torch {torch.__version__}"
    text = f"{table(rows)}\n\nmachine: {machine}\ncommand: python {' '.join(sys.argv)}\n"
    write_text(args.out / "results.md", text)
    print(text)


if __name__ == "__main__":
    main()
