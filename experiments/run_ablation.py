"""Run a grid of experiments x seeds as separate `mmrec.train` processes, then tabulate them.

    python experiments/run_ablation.py --out runs/ablation_synthetic               # embedded data
    python experiments/run_ablation.py --preset ml100k --out runs/ml100k
    python experiments/run_ablation.py --preset ml100k_loo --out runs/ml100k_loo
    python experiments/run_ablation.py --preset ml100k_cold --out runs/ml100k_cold

Each run lands in OUT/<experiment>/seed<k>/ with its metrics.json; runs that already have one
are skipped, so an interrupted grid resumes where it stopped. The table (mean ± std over seeds)
is printed and written to OUT/results.md. Every run also logs to W&B (offline into its folder
when there is no login; `wandb sync OUT/*/seed*/wandb/offline-run-*` uploads them): the seeds
of one experiment form one W&B group, so W&B shows the same mean ± std. `--logger csv` skips W&B.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from mmrec.io import write_text
from mmrec.report import load_runs, markdown, summarise

CONF = Path(__file__).resolve().parent.parent / "conf"


def brings_own_data(experiment: str) -> bool:
    """Whether an experiment preset (or one it builds on) chooses its dataset."""
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    bases = [line.strip()[2:] for line in text.splitlines() if line.startswith("  - ") and "/" not in line]
    return "override /data" in text or any(brings_own_data(b) for b in bases if b != "_self_")


PRESETS = {
    "synthetic": {
        # every experiment on the default (synthetic) data; those that bring their own dataset are separate
        "experiments": sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not brings_own_data(p.stem)),
        "overrides": [],
        "metrics": ["test_warm/recall@20", "test_warm/ndcg@20", "test_cold/recall@20", "test_cold/ndcg@20"],
        "seeds": [0, 1, 2],
    },
    "ml100k": {
        # the ID preset (user + item IDs), and its variants: history-only users, with item text,
        # without logQ correction
        "experiments": ["ml100k_ids", "ml100k_ids+history", "ml100k_ids+text", "ml100k_ids+nologq"],
        "overrides": [],
        "metrics": ["test/recall@10", "test/ndcg@10", "test/hit@10", "test/mrr@10"],
        "seeds": [0, 1, 2],
    },
    "ml100k_cold": {
        # the same models when a tenth of the items is held out whole (never seen in training): what
        # item text is worth on a real catalogue when IDs cannot rank an item
        "experiments": [
            "ml100k_ids",
            "ml100k_ids+text",
            "ml100k_ids+text_iddrop",
            "ml100k_ids+text_noid",
            "ml100k_ids+genretext_iddrop",
        ],
        "overrides": ["data.split.method=cold_item"],
        "metrics": ["test/recall@10", "test/ndcg@10", "test_warm/recall@10", "test_cold/recall@10"],
        "seeds": [0, 1, 2],
    },
    # real data with real item content (pass data.root=DIR after --)
    "scientific": {
        "experiments": [
            "scientific_ids",
            "scientific_text",
            "scientific_text_ids",
            "scientific_text_moe",
            "scientific_text_ids_ft",
        ],
        "overrides": [],
        "metrics": ["test/recall@10", "test/ndcg@10", "test/recall@50", "test/ndcg@50"],
        "seeds": [0, 1, 2],
    },
    # the same data with a tenth of the items held out whole: cold items are ranked from their text alone
    "scientific_cold": {
        "experiments": [
            "scientific_ids",
            "scientific_text+moe",
            "scientific_text_ids+iddrop",
            "scientific_text_ids_ft+w128",
        ],
        # its rows were measured before the Scientific text presets whitened MiniLM's vectors, and
        # its text models at 128 wide with 4 heads (scientific_text's shape)
        "overrides": ["data.split.method=cold_item", "model.whiten=0"],
        "metrics": ["test/recall@10", "test_warm/recall@10", "test_cold/recall@10", "test_cold/ndcg@10"],
        "seeds": [0, 1, 2],
    },
    "lastfm": {
        "experiments": ["lastfm_ids", "lastfm_audio", "lastfm_text", "lastfm_audio_text", "lastfm_audio_text_ids"],
        "overrides": [],
        "metrics": ["test/recall@20", "test/ndcg@20", "test_tail/recall@20"],
        "seeds": [0, 1, 2],
    },
    "lastfm_cold": {
        "experiments": ["lastfm_ids", "lastfm_audio", "lastfm_text", "lastfm_audio_text", "lastfm_audio_text_ids"],
        "overrides": ["data.split.method=cold_item"],
        "metrics": ["test/recall@20", "test_warm/recall@20", "test_cold/recall@20", "test_cold/ndcg@20"],
        "seeds": [0, 1, 2],
    },
    # five seeds: about 190 cold movies, shared by validation and test, and a few popular ones carry
    # most of the cold recall, which varies from seed to seed by as much as its mean
    "ml100k_tmdb_cold": {
        "experiments": [
            "ml100k_tmdb_ids",
            "ml100k_tmdb_title",
            "ml100k_tmdb_title_year",
            "ml100k_tmdb_plot",
            "ml100k_tmdb_plot_ids",
            "ml100k_tmdb_meta",
            "ml100k_tmdb_title_meta",
            "ml100k_tmdb_plot_meta",
        ],
        "overrides": ["data.split.method=cold_item"],
        "metrics": ["test/recall@10", "test_warm/recall@10", "test_cold/recall@10", "test_cold/ndcg@10"],
        "seeds": [0, 1, 2, 3, 4],
    },
    "ml100k_tmdb": {
        "experiments": ["ml100k_tmdb_ids", "ml100k_tmdb_plot_ids", "ml100k_tmdb_ids+plot", "ml100k_tmdb_ids+meta"],
        "overrides": [],
        "metrics": ["test/recall@10", "test/ndcg@10", "test/hit@10", "test/mrr@10"],
        "seeds": [0, 1, 2],
    },
    "ml100k_loo": {
        "experiments": ["ml100k_sasrec", "ml100k_seq", "ml100k_sasrec+text"],
        "overrides": [],
        "metrics": ["test/hit@10", "test/ndcg@10", "test/mrr@10"],
        "seeds": [0, 1, 2],
    },
}
# one content modality: nothing to fuse, so the mean fusion (the modality's own projection); the
# attention fusion gave the same test metrics at 9x the time (957 s against 102 s for ml100k_ids)
TEXT = ["encoder/text=minilm", "fusion=mean"]
VARIANTS = {
    "+ids": ["model.item_id=true"],
    # users from the mean of their other training items, no user ID: serves new users, stores no user state
    # (valid NDCG@10 peaks at epoch 3 of 15 at LR 3e-3, so the schedule is 5 epochs; LR, weight decay
    # and temperature are those of the grid, before the Optuna search changed the preset's)
    "+history": [
        "model.user_id=false",
        "data.history_length=200",
        "trainer.max_epochs=5",
        "optimizer.lr=0.003",
        "optimizer.weight_decay=0.01",
        "model.temperature=0.1",
    ],
    "+text": TEXT,
    # the ID dropped for half the items in training, so the title alone learns to place an item
    "+text_iddrop": [*TEXT, "model.id_dropout=0.5"],
    # the genres written into the text too ("... genres: Animation Children's Comedy")
    "+genretext_iddrop": [*TEXT, "model.id_dropout=0.5", "+data.dataset.text_fields.class=genres"],
    "+text_noid": [*TEXT, "model.item_id=false"],  # items from their title alone
    "+nologq": ["loss.contrastive.logq_correction=false"],
    # UniSRec's adaptor for the frozen text vectors instead of the MLP projection
    "+moe": ["model/projection=moe"],
    # item IDs beside the text, dropped for a third of the items in training so the text alone learns
    # to place an item (a cold item has no trained ID)
    "+iddrop": ["model.id_dropout=0.3"],
    # the fusion transformer's item from its [CLS] output, not the modality mean
    "+cls": ["fusion.pool=cls"],
    # 128 wide with 4 heads: the shape of the Scientific text rows measured before scientific_text_moe
    "+w128": ["model.dim=128", "model.user_tower.heads=4"],
    # IDs kept for every movie (no ID dropout) with the plot text beside them: the warm-protocol row
    "+plot": [
        "encoder/text=minilm",
        "fusion=mean",
        "encoder.text.featurizer.columns=[title,description]",
        "encoder.text.featurizer.max_length=128",
    ],
    # the release year and genres (the categorical metadata modality) beside IDs kept for every movie
    "+meta": ["encoder/tags=default", "fusion=mean"],
}


# presets that fine-tune another run of the grid (init_from its best checkpoint, the same seed)
STARTS = {"scientific_text_ids_ft": "scientific_text_moe", "scientific_text_ids_ft+w128": "scientific_text+moe"}


def command(experiment: str, seed: int, out: Path, overrides: list[str], logger: str = "wandb") -> list[str]:
    """The training command of one run; ``out`` is the run's folder, ``<grid>/<experiment>/seed<k>``."""
    base, _, variant = experiment.partition("+")
    extra = VARIANTS.get("+" + variant, []) if variant else []
    if experiment in STARTS:
        extra = [*extra, f"init_from={out.parent.parent / STARTS[experiment] / f'seed{seed}'}"]
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
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time; each gets cores/jobs torch threads (minutes/run grows)"
    )
    parser.add_argument(
        "--table-only", action="store_true", help="tabulate the runs that finished; launch nothing (a stopped grid)"
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    experiments = args.experiments or preset["experiments"]
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else torch.get_num_threads()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if args.jobs > 1 else None
    pending = [
        (experiment, seed)
        for seed in args.seeds or preset["seeds"]
        for experiment in experiments
        if not (args.out / experiment / f"seed{seed}" / "metrics.json").is_file() and not args.table_only
    ]

    def launch(experiment: str, seed: int) -> str | None:
        run = args.out / experiment / f"seed{seed}"
        start = time.time()
        print(f"== {experiment} seed {seed}", flush=True)
        overrides = preset["overrides"] + args.overrides
        result = subprocess.run(
            command(experiment, seed, run, overrides, args.logger), capture_output=True, text=True, env=env
        )
        if result.returncode:
            return f"{experiment} seed {seed} failed:\n{result.stderr[-4000:]}"
        write_text(run / "timing.json", json.dumps({"seconds": time.time() - start, "jobs": args.jobs}))
        return None

    missing = [
        f"{e} seed {seed} needs {STARTS[e]} seed {seed}"
        for e, seed in pending
        if e in STARTS
        and STARTS[e] not in experiments
        and not (args.out / STARTS[e] / f"seed{seed}" / "metrics.json").is_file()
    ]
    if missing:
        sys.exit(f"{'; '.join(missing)}: it fine-tunes that run of the grid (add it to --experiments)")
    failures = []
    with ThreadPoolExecutor(args.jobs) as pool:  # fine-tunes after the runs they start from
        for wave in ([j for j in pending if j[0] not in STARTS], [j for j in pending if j[0] in STARTS]):
            failures += [f for f in pool.map(lambda job: launch(*job), wave) if f]
    if failures:
        sys.exit("\n\n".join(failures))
    jobs = f", {args.jobs} runs at a time" if args.jobs > 1 else ""
    machine = (
        f"{platform.machine()}, {threads} torch threads{jobs}, {platform.python_version()}, torch {torch.__version__}"
    )
    text = table(args.out, experiments, preset["metrics"])
    invocation = " ".join(sys.argv)
    write_text(args.out / "results.md", f"{text}\n\nmachine: {machine}\ncommand: python {invocation}\n")
    print(text)


if __name__ == "__main__":
    main()
