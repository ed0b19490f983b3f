"""Check a dataset before training: counts, modality coverage and every problem found.

    python -m mmrec.data.validate                       # the embedded synthetic dataset
    python -m mmrec.data.validate data=ml100k
    python -m mmrec.data.validate data=native data.root=/path/to/data decode=false

Exit status: 0 when the dataset can be trained on (undecodable media are reported; training
skips them), 1 on structural errors (missing columns, duplicate ids, unknown item ids,
non-numeric timestamps), 2 when the dataset files cannot be found.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from mmrec.data.datamodule import load_dataset
from mmrec.data.features import ItemFeaturizer, MediaConfig, item_text
from mmrec.data.schema import DataError, RecDataset

CONFIG_DIR = str(Path(__file__).resolve().parent.parent.parent / "conf")


def coverage(dataset: RecDataset, decode: bool) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Per modality: (items that declare it, items whose media decode); and every media problem."""
    items = dataset.items
    declared = {
        "text": int(sum(bool(item_text(t, d)) for t, d in zip(items["title"], items["description"]))),
        "image": int(((items["image"] != "") | (items["video"] != "")).sum()),
        "audio": int(((items["audio"] != "") | (items["video"] != "")).sum()),
    }
    if not decode:
        return {m: (n, -1) for m, n in declared.items()}, []
    featurizer = ItemFeaturizer(dataset, MediaConfig(), ("audio", "image"))
    decoded, problems = Counter(), []
    for index in tqdm(range(dataset.num_items), desc="decoding media", unit="item"):
        sample = featurizer(index)
        decoded.update(m for m in ("audio", "image") if sample[m][2])
        problems.extend(sample["problems"])
    return {"text": (declared["text"], declared["text"]), **{m: (declared[m], decoded[m]) for m in ("image", "audio")}}, problems


def report(dataset: RecDataset, decode: bool = True) -> tuple[str, int]:
    """The validation report as text, and the number of media problems in it."""
    inter = dataset.interactions
    per_user = inter.groupby("user_id").size()
    never = dataset.num_items - inter["item_id"].nunique()
    lines = [
        f"dataset {dataset.name} at {dataset.root}",
        f"  items         {dataset.num_items:>10,}  ({never:,} never interacted with)",
        f"  users         {dataset.num_users:>10,}  (interactions per user: min {per_user.min()}, median {int(per_user.median())}, max {per_user.max()})",
        f"  interactions  {len(inter):>10,}  (timestamps {inter['timestamp'].min()} .. {inter['timestamp'].max()}; "
        f"{int((inter['label'] <= 0).sum()):,} with label <= 0)",
        "  modality coverage (declared / decodable):",
    ]
    cover, problems = coverage(dataset, decode)
    for modality, (declared, ok) in cover.items():
        share = f"{declared / max(dataset.num_items, 1):6.1%}"
        decoded = f"{ok:>8,}" if ok >= 0 else "   (not decoded)"
        lines.append(f"    {modality:<6} {declared:>8,} {share}  / {decoded}")
    lines.append(f"  media problems: {len(problems)}")
    lines.extend(f"    {p}" for p in problems)
    return "\n".join(lines), len(problems)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="validate")
def main(cfg: DictConfig) -> None:
    data = cfg.data
    try:
        dataset = load_dataset(data.source, data.root, OmegaConf.to_container(data.options, resolve=True))
    except DataError as err:
        print(f"STRUCTURAL ERRORS\n{err}", file=sys.stderr)
        sys.exit(1)
    except FileNotFoundError as err:
        hint = " (generate it with `python -m mmrec.data.synthetic --out DIR`)" if data.source == "synthetic" else ""
        print(f"NOT FOUND: {err}{hint}", file=sys.stderr)
        sys.exit(2)
    text, problems = report(dataset, decode=cfg.decode)
    print(text)
    print("OK" if not problems else f"OK with {problems} undecodable media file(s): those modalities will be missing for their items")


if __name__ == "__main__":
    main()
