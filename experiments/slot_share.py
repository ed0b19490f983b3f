"""Where each run's top-K slots go, cold items against warm ones, and how often each kind is a hit.

    python experiments/slot_share.py --runs runs/ml100k_cold [--k 10] [--out slots.md]

Reads every run's ``test_topk.csv`` under ``--runs`` (written after test by the default
``callbacks.topk_lists``, whose ``hit`` and ``cold`` columns mark held-out test items and items
never seen in training) and prints, mean ± std over seeds per run name:

- ``cold_share``: the share of top-K slots that hold cold items;
- ``cold_hit_rate``: the share of those slots that hold one of the user's test items;
- ``warm_hit_rate``: the same over the slots that hold warm items.

A model that makes cold items rankable gives them slots that warm items had: whether that pays
depends on how often a cold slot is a hit against the warm slots it replaced, and on whether
the warm slots themselves still hit as often as they did without it.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from mmrec.io import write_text
from mmrec.report import load_runs, markdown, summarise

METRICS = ("cold_share", "cold_hit_rate", "warm_hit_rate")


def slot_rates(top: pd.DataFrame, k: int) -> dict[str, float]:
    """The METRICS of one run's top-K lists (``rank``, ``hit``, ``cold`` columns, ranks from 1)."""
    longest = int(top["rank"].max())
    if k > longest:
        raise ValueError(f"--k {k}: the lists hold the top {longest} only (callbacks.topk_lists.k)")
    top = top[top["rank"] <= k]
    cold, hit = top["cold"].to_numpy(bool), top["hit"].to_numpy(bool)
    return {
        "cold_share": float(cold.mean()),
        "cold_hit_rate": float(hit[cold].mean()) if cold.any() else math.nan,
        "warm_hit_rate": float(hit[~cold].mean()) if (~cold).any() else math.nan,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="the --out folder of run_ablation.py")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    runs = [run for run in load_runs(args.runs) if (run["dir"] / "test_topk.csv").is_file()]
    if not runs:
        raise SystemExit(f"no run with a test_topk.csv under {args.runs}: run experiments/run_ablation.py first")
    for run in runs:
        run["metrics"] = slot_rates(pd.read_csv(run["dir"] / "test_topk.csv"), args.k)
    text = markdown(summarise(runs, METRICS), METRICS)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
