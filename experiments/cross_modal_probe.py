"""Which of the embedded dataset's hidden tastes does each run's top-20 follow?

    python experiments/cross_modal_probe.py --runs runs/ablation_synthetic [--out probe.md]

Reads every ``<runs>/<experiment>/seed<k>/test_topk.csv`` (written after test by the default
``callbacks.topk_lists``) and the dataset's ``attributes.csv`` and ``user_preferences.npz``
(from the run's ``config.yaml``: ``data.root``). For each experiment, mean ± std over seeds of:

- ``sync``: share of top-20 slots whose item is in sync (keyframe pattern matching audio rhythm)
  exactly when the user likes in-sync items: the cross-modal taste, an XOR of a visual bit and an
  audio bit. 0.5 is chance; a fusion that adds per-modality embeddings cannot get above what
  the single-modality tastes imply by correlation.
- ``sync_cold``: the same, over the top-20 slots that hold cold items (never seen in training),
  where only content can know the item.
- ``topic``, ``visual``, ``audio``: share of slots whose item has the user's favourite value of
  that attribute (the single-modality tastes).

Reference rows: the hits (held-out test items found in the top-20: the tastes as the data shows
them) and the whole catalogue (the share by chance).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mmrec.data.synthetic import TOPICS
from mmrec.io import write_text

COLUMNS = ("sync", "sync_cold", "topic", "visual", "audio")


def user_tastes(root: Path, user_ids: np.ndarray) -> pd.DataFrame:
    """Per user id: whether they like in-sync items and their favourite topic / visual / audio value."""
    prefs = np.load(root / "user_preferences.npz")
    rows = np.array([int(u[1:]) for u in user_ids])  # the generator names users u00000, u00001, ...
    return pd.DataFrame(
        {
            "likes_sync": prefs["likes_sync"][rows],
            "topic": np.array(list(TOPICS))[prefs["topic"][rows].argmax(1)],
            "visual": prefs["visual"][rows].argmax(1),
            "audio": prefs["audio"][rows].argmax(1),
        },
        index=user_ids,
    )


def agreement(pairs: pd.DataFrame, attributes: pd.DataFrame, tastes: pd.DataFrame) -> dict[str, float]:
    """The COLUMNS shares over (user_id, item_id, cold) rows."""
    item = attributes.loc[pairs["item_id"]].reset_index(drop=True)
    taste = tastes.loc[pairs["user_id"]].reset_index(drop=True)
    sync = item["in_sync"].to_numpy() == taste["likes_sync"].to_numpy()
    cold = pairs["cold"].to_numpy(bool)
    return {
        "sync": sync.mean(),
        "sync_cold": sync[cold].mean() if cold.any() else float("nan"),
        **{a: (item[a].to_numpy() == taste[a].to_numpy()).mean() for a in ("topic", "visual", "audio")},
    }


def mean_std(rows: list[dict[str, float]]) -> list[str]:
    """Mean ± sample standard deviation over seeds (as mmrec.report; 0 for one seed), per column."""
    cells = []
    for c in COLUMNS:
        values = np.array([r[c] for r in rows], dtype=float)
        values = values[~np.isnan(values)]
        if not len(values):
            cells.append("")
            continue
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        cells.append(f"{values.mean():.3f} ± {std:.3f}")
    return cells


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="the --out folder of run_ablation.py")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    lists = sorted(args.runs.glob("*/seed*/test_topk.csv"))
    if not lists:
        raise SystemExit(f"no */seed*/test_topk.csv under {args.runs}: run experiments/run_ablation.py first")
    config = yaml.safe_load((lists[0].parent / "config.yaml").read_text())
    root = Path(config["data"]["root"])
    if not (root / "user_preferences.npz").is_file():
        raise SystemExit(f"{root} has no user_preferences.npz: the probe needs the embedded (synthetic) dataset")
    attributes = pd.read_csv(root / "attributes.csv").set_index("item_id")
    tastes = user_tastes(root, np.array(sorted(pd.read_csv(root / "interactions.csv", dtype=str)["user_id"].unique())))
    runs: dict[str, list[dict[str, float]]] = {}
    hits = []
    for path in lists:
        top = pd.read_csv(path, dtype={"user_id": str, "item_id": str})
        runs.setdefault(path.parent.parent.name, []).append(agreement(top, attributes, tastes))
        hits.append(agreement(top[top["hit"]], attributes, tastes))
    pairs = pd.MultiIndex.from_product([tastes.index, attributes.index], names=["user_id", "item_id"]).to_frame(
        index=False
    )
    chance = agreement(pairs.assign(cold=True), attributes, tastes)
    table = ["| run | seeds | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    table += [f"| {name} | {len(rows)} | " + " | ".join(mean_std(rows)) + " |" for name, rows in sorted(runs.items())]
    table.append("| *hits: held-out items found in the top-20* | | " + " | ".join(mean_std(hits)) + " |")
    table.append("| *catalogue (chance)* | | " + " | ".join(f"{chance[c]:.3f}" for c in COLUMNS) + " |")
    text = "\n".join(table)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
