"""The offline ablation dashboard: compare the runs under a folder.

    python -m mmrec.report runs/ [--metrics test/recall@20 test_cold/recall@20] [--out DIR]

Reads every ``metrics.json`` (with the ``config.yaml`` beside it) below DIR, groups runs by run
name (seeds of one experiment are pooled: mean and standard deviation), and writes
``report.md`` (a markdown table) and ``report.png`` (a bar chart with std error bars).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from mmrec.io import atomic_path, write_text

DEFAULT_METRICS = ("test/recall@20", "test/ndcg@20", "test_cold/recall@20", "test_cold/ndcg@20")


def load_runs(root: Path) -> list[dict]:
    """One dict per run folder: name, seed, metrics, config."""
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        config_path = path.with_name("config.yaml")
        config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
        runs.append(
            {
                "dir": path.parent,
                "name": config.get("run_name", path.parent.name),
                "seed": config.get("seed"),
                "metrics": json.loads(path.read_text()),
                "config": config,
            }
        )
    return runs


def summarise(runs: list[dict], metrics: tuple[str, ...]) -> list[dict]:
    """Per run name: number of runs and (mean, std) of each metric over them (std 0 for one run)."""
    by_name: dict[str, list[dict]] = {}
    for run in runs:
        by_name.setdefault(run["name"], []).append(run)
    rows = []
    for name, group in by_name.items():
        row = {"name": name, "runs": len(group), "seeds": sorted(r["seed"] for r in group if r["seed"] is not None)}
        for metric in metrics:
            values = np.array([r["metrics"][metric] for r in group if metric in r["metrics"]], dtype=float)
            row[metric] = (
                (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
                if len(values)
                else (math.nan, math.nan)
            )
        rows.append(row)
    return rows


def markdown(rows: list[dict], metrics: tuple[str, ...], extra: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """One line per summarised run; ``extra[column][run name]`` adds ready-made cells (e.g. timings)."""
    extra = extra or {}
    header = "| run | runs | " + " | ".join([*metrics, *extra]) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + len(extra) + 2)]
    for row in rows:
        cells = [f"{row[m][0]:.4f} ± {row[m][1]:.4f}" if not math.isnan(row[m][0]) else "–" for m in metrics]
        cells += [column.get(row["name"], "–") for column in extra.values()]
        lines.append(f"| {row['name']} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(rows: list[dict], metrics: tuple[str, ...], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) * len(metrics) / 2), 4.5))
    width = 0.8 / len(metrics)
    x = np.arange(len(rows))
    for i, metric in enumerate(metrics):
        means = [row[metric][0] for row in rows]
        stds = [row[metric][1] for row in rows]
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=stds, capsize=3, label=metric)
    ax.set_xticks(x, [row["name"] for row in rows], rotation=30, ha="right")
    ax.set_ylabel("metric value (mean ± std over runs)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder holding run folders (searched recursively for metrics.json)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--out", type=Path, default=None, help="where report.md and report.png go (default: ROOT)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    runs = load_runs(args.root)
    if not runs:
        parser.error(f"no metrics.json found below {args.root}: point it at a folder of mmrec.train runs")
    metrics = tuple(args.metrics)
    known = set().union(*(r["metrics"] for r in runs))
    unknown = [m for m in metrics if m not in known]
    if unknown:
        parser.error(f"metric(s) {unknown} appear in no run; examples of known metrics: {sorted(known)[:8]}")
    rows = summarise(runs, metrics)
    out = args.out or args.root
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, metrics)
    write_text(out / "report.md", f"# mmrec report: {len(runs)} runs under {args.root}\n\n{table}\n")
    bar_chart(rows, metrics, out / "report.png")
    print(table)
    print(f"\nwrote {out / 'report.md'} and {out / 'report.png'}")


if __name__ == "__main__":
    main()
