"""Run a grid of experiments x seeds as separate `mmrec.train` processes, then tabulate them.

    python experiments/run_ablation.py --out runs/ablation_synthetic               # embedded data
    python experiments/run_ablation.py --preset ml100k --out runs/ml100k

Each run lands in OUT/<experiment>/seed<k>/ with its metrics.json; runs that already have one
are skipped, so an interrupted grid resumes where it stopped. The table (mean ± std over seeds)
is printed and written to OUT/results.md. Every run also logs to W&B (offline into its folder
when there is no login; `wandb sync OUT/*/seed*/wandb/offline-run-*` uploads them): the seeds
of one experiment form one W&B group, so W&B shows the same mean ± std. `--logger csv` skips W&B.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmrec.report import load_runs, markdown, summarise

CONF = Path(__file__).resolve().parent.parent / "conf"
PRESETS = {
    "synthetic": {
        # every experiment on the default (synthetic) data; those that bring their own dataset are separate
        "experiments": sorted(
            p.stem for p in (CONF / "experiment").glob("*.yaml") if "override /data" not in p.read_text()
        ),
        "overrides": [],
        "metrics": ["test_warm/recall@20", "test_warm/ndcg@20", "test_cold/recall@20", "test_cold/ndcg@20"],
        "seeds": [0, 1, 2],
    },
    "ml100k": {
        # text + item IDs is text_only with the ID embedding switched on
        "experiments": ["id_only", "text_only", "text_only+ids"],
        "overrides": ["data=ml100k", "eval.monitor=valid/ndcg@10"],
        "metrics": ["test/recall@10", "test/ndcg@10", "test/hit@10", "test/mrr@10"],
        "seeds": [0],
    },
}
VARIANTS = {"+ids": ["model.item_id=true"]}


def command(experiment: str, seed: int, out: Path, overrides: list[str], logger: str = "wandb") -> list[str]:
    base, _, variant = experiment.partition("+")
    extra = VARIANTS.get("+" + variant, []) if variant else []
    # group=auto: one W&B group per condition (these overrides without the seed)
    return [
        sys.executable,
        "-m",
        "mmrec.train",
        f"+experiment={base}",
        f"seed={seed}",
        f"logger={logger}",
        f"run_name={experiment}",
        f"hydra.run.dir={out}",
        *overrides,
        *extra,
    ]


def table(out: Path, experiments: list[str], metrics: list[str]) -> str:
    """mmrec.report's mean ± std table over seeds, in grid order, plus the wall time per run."""
    rows = {row["name"]: row for row in summarise(load_runs(out), tuple(metrics))}
    minutes = {}
    for experiment in experiments:
        timings = [
            json.loads(p.read_text())["seconds"] / 60 for p in sorted((out / experiment).glob("seed*/timing.json"))
        ]
        if timings:
            minutes[experiment] = f"{np.mean(timings):.1f}"
    return markdown([rows[e] for e in experiments if e in rows], tuple(metrics), {"minutes/run": minutes})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="synthetic")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--experiments", nargs="+", default=None)
    parser.add_argument("--logger", default="wandb", help="wandb (offline without a login), csv, tensorboard or none")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    experiments = args.experiments or preset["experiments"]
    for seed in args.seeds or preset["seeds"]:
        for experiment in experiments:
            run = args.out / experiment / f"seed{seed}"
            if (run / "metrics.json").is_file():
                continue
            start = time.time()
            print(f"== {experiment} seed {seed}", flush=True)
            result = subprocess.run(
                command(experiment, seed, run, preset["overrides"] + args.overrides, args.logger),
                capture_output=True,
                text=True,
            )
            if result.returncode:
                sys.exit(f"{experiment} seed {seed} failed:\n{result.stderr[-4000:]}")
            (run / "timing.json").write_text(json.dumps({"seconds": time.time() - start}))
    threads = torch.get_num_threads()
    machine = f"{platform.machine()}, {threads} torch threads, {platform.python_version()}, torch {torch.__version__}"
    text = table(args.out, experiments, preset["metrics"])
    invocation = " ".join(sys.argv)
    (args.out / "results.md").write_text(f"{text}\n\nmachine: {machine}\ncommand: python {invocation}\n")
    print(text)


if __name__ == "__main__":
    main()
