"""Check a dataset before training: counts, modality coverage and every problem found.

    python -m mmrec.validate                       # the embedded synthetic dataset
    python -m mmrec.validate data=ml100k encoder/image=none encoder/audio=none
    python -m mmrec.validate data=native data.root=/path/to/data decode=false

Each problem is one line (a bad media file with the reason, or an unusable item), then a summary.
Exit status: 0 when the dataset can be trained on (undecodable media are reported; training
treats them as missing), 1 on structural errors (missing columns, duplicate ids, unknown item
ids, bad timestamps) or on items with no usable modality while ``model.empty_items=error`` and
``model.item_id=false``, 2 when the dataset files cannot be found.
"""

from __future__ import annotations

import sys
from collections import Counter

import hydra
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from mmrec.build import encoder_configs, featurizer_factories, load_dataset
from mmrec.configs import CONFIG_PATH
from mmrec.data.features import Featurizer
from mmrec.data.schema import DataError, RecDataset


def presence(dataset: RecDataset, featurizers: dict[str, Featurizer]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Per modality, (I,) whether each item has a usable value; and every media problem."""
    present = {m: torch.zeros(dataset.num_items, dtype=torch.bool) for m in featurizers}
    problems: list[str] = []
    for index in tqdm(range(dataset.num_items), desc="decoding media", unit="item"):
        for m, featurizer in featurizers.items():
            present[m][index] = featurizer(index, problems).present
    return present, problems


def report(dataset: RecDataset, featurizers: dict[str, Featurizer], decode: bool = True) -> tuple[str, list[str], int]:
    """The report text, the problem lines, and the number of items with no usable modality."""
    inter = dataset.interactions
    per_user = inter.groupby("user_id").size()
    never = dataset.num_items - inter["item_id"].nunique()
    lines = [
        f"dataset {dataset.name} at {dataset.root}",
        f"  items         {dataset.num_items:>10,}  ({never:,} never interacted with)",
        f"  users         {dataset.num_users:>10,}  (interactions per user: min {per_user.min()}, median "
        f"{int(per_user.median())}, max {per_user.max()})",
        f"  interactions  {len(inter):>10,}  (timestamps {inter['timestamp'].min()} .. {inter['timestamp'].max()}; "
        f"{int((inter['label'] <= 0).sum()):,} with label <= 0)",
        "  modality coverage (usable items):" if decode else "  modality coverage: not decoded (decode=false)",
    ]
    if not decode or not featurizers:
        return "\n".join(lines), [], 0
    present, problems = presence(dataset, featurizers)
    for modality, mask in present.items():
        lines.append(f"    {modality:<8} {int(mask.sum()):>8,} {float(mask.float().mean()):6.1%}")
    empty = ~torch.stack(list(present.values())).any(0)
    problem_lines = [f"media: {p}" for p in dict.fromkeys(problems)]
    items = dataset.items["item_id"]
    problem_lines += [
        f"unusable item: {items.iloc[i]} (row {i + 2} of the items table) has none of {sorted(featurizers)}"
        for i in empty.nonzero().flatten().tolist()
    ]
    return "\n".join(lines), problem_lines, int(empty.sum())


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="validate")
def main(cfg: DictConfig) -> None:
    try:
        dataset = load_dataset(cfg.data)
    except DataError as err:
        print(f"STRUCTURAL ERRORS\n{err}", file=sys.stderr)
        sys.exit(1)
    except FileNotFoundError as err:
        print(f"NOT FOUND: {err}", file=sys.stderr)
        sys.exit(2)
    featurizers = {m: make(catalogue=dataset) for m, make in featurizer_factories(encoder_configs(cfg)).items()}
    text, problems, unusable = report(dataset, featurizers, decode=cfg.decode)
    print(text)
    for line in problems:
        print(f"  PROBLEM {line}")
    kinds = Counter(line.split(":")[0] for line in problems)
    print(f"summary: {kinds.get('media', 0)} media problem(s), {unusable} unusable item(s)")
    if unusable and cfg.model.empty_items == "error" and not cfg.model.item_id:
        print(
            f"FAIL: {unusable} item(s) have no usable modality; set model.item_id=true or "
            "model.empty_items=learned to train anyway",
            file=sys.stderr,
        )
        sys.exit(1)
    print("OK" if not problems else "OK: the media problems above make those modalities missing for their items")


if __name__ == "__main__":
    main()
