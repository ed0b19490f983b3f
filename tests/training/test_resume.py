"""Reproducibility: a run killed mid-epoch and resumed ends with the uninterrupted run's metrics;
building the frozen-encoder cache and reading it give the same run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_DATA, TINY_MODEL

from mmrec.train import train

pytestmark = pytest.mark.integration  # full train / export / serve runs: `pytest -m integration`

HERE = Path(__file__).resolve().parent


def run_train(tmp_path: Path, data_dir: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    overrides = [
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / name}",
        *TINY_DATA,
        *TINY_MODEL,
        "+experiment=fusion_attn",
        "trainer.max_epochs=3",
        "model.item_id=true",
        "callbacks.last_checkpoint_steps.every_n_train_steps=3",
        "callbacks.early_stopping.patience=10",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "mmrec.train", *overrides], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.parametrize(
    "tables",
    [(), ("model.sparse_ids=true", "model.user_id=true")],  # dense AdamW; sparse ID tables with their SparseAdam
    ids=["dense_ids", "sparse_ids"],
)
def test_killed_mid_epoch_and_resumed_equals_uninterrupted(tmp_path, data_dir, tables):
    whole = run_train(tmp_path, data_dir, "whole", *tables)
    assert whole.returncode == 0, whole.stderr[-3000:]
    steps_per_epoch = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=True)["global_step"] // 3
    assert steps_per_epoch % 3 != 0  # so the step-6 checkpoint falls inside an epoch

    killed = run_train(
        tmp_path, data_dir, "killed", *tables, "+callbacks.killer._target_=killer.KillAt", "+callbacks.killer.step=7"
    )
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL: no clean shutdown, no final checkpoint
    last = tmp_path / "killed/checkpoints/last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 6 and 6 % steps_per_epoch != 0  # the last save before the kill, mid-epoch
    assert not list(last.parent.glob(".*.tmp"))  # no torn temporary file left

    # the killed run's stored config names the test's own callback: resuming from it is an opt-in
    resumed = run_train(tmp_path, data_dir, "resumed", *tables, f"ckpt_path={last}", "allowed_targets=[killer.]")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((tmp_path / "whole/metrics.json").read_text())
    got = json.loads((tmp_path / "resumed/metrics.json").read_text())
    test_keys = [k for k in expected if k.startswith("test")]
    assert len(test_keys) > 40
    for key in test_keys:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    # the weights too (the resumed run saves into the killed run's folder): every optimiser state came back
    ends = [torch.load(tmp_path / run / "checkpoints/last.ckpt", weights_only=True) for run in ("whole", "killed")]
    assert ends[0]["global_step"] == ends[1]["global_step"]
    for name, weight in ends[0]["state_dict"].items():
        torch.testing.assert_close(ends[1]["state_dict"][name], weight, atol=1e-6, rtol=0, msg=name)


def test_building_and_reading_the_cache_give_the_same_run(train_config):
    """Encoding the catalogue must not consume the training RNG: the step-0 loss and every metric agree."""
    first = train(train_config("+experiment=fusion_mean", "encoder/text=minilm", "trainer.max_epochs=1"))  # builds
    second = train(train_config("+experiment=fusion_mean", "encoder/text=minilm", "trainer.max_epochs=1"))  # reads
    timings = ("train/epoch_time_s", "train/samples_per_s")
    for key in [k for k in first if k.startswith(("test", "train")) and k not in timings]:
        assert second[key] == pytest.approx(first[key], abs=1e-7), key
