"""The main job end to end on the tiny dataset: every experiment, caching, checkpoints, resume, DDP."""

import json
from pathlib import Path

import pytest
import torch

from mmrec.train import train

EXPERIMENTS = ["fusion_attn", "fusion_concat", "fusion_gated", "fusion_late", "fusion_mean", "text_only", "image_only", "audio_only", "id_only"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_one_batch_per_stage(train_config, experiment):
    cfg = train_config(f"+experiment={experiment}", "debug=fdr")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/recall@20"] <= 1.0
    assert metrics["train/loss"] > 0


def test_short_training_writes_results_checkpoints_and_resumes(train_config, tmp_path):
    cfg = train_config("+experiment=fusion_gated", "trainer.max_epochs=2", "encoder/text=minilm")
    metrics = train(cfg)
    run = Path(tmp_path / "run")
    written = json.loads((run / "metrics.json").read_text())
    assert written["test/recall@20"] == pytest.approx(metrics["test/recall@20"])
    assert {"test/ndcg@10", "test_warm/recall@20", "test/coverage@50", "test/gini@20", "test/auc", "valid/mrr@10"} <= set(written)
    assert (run / "config.yaml").read_text().count("fusion_gated") >= 1
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["mmrec_config"]["run_name"] == "fusion_gated"
    # every test user is counted once: the users with test targets
    assert written["test/users"] == _eval_users(cfg)
    # frozen encoders were cached and a second run reuses the files
    cache = sorted((tmp_path / "cache" / "embeddings").glob("*.pt"))
    assert {p.name.split("-")[1] for p in cache} == {"audio", "image", "text"}
    stamps = {p: p.stat().st_mtime_ns for p in cache}
    resumed = train_config("+experiment=fusion_gated", "trainer.max_epochs=3", "encoder/text=minilm", f"ckpt_path={last}")
    train(resumed)
    assert {p: p.stat().st_mtime_ns for p in cache} == stamps
    steps_per_epoch = ckpt["global_step"] // 2
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 3 * steps_per_epoch  # one more epoch, not three


def _eval_users(cfg):
    from mmrec.train import build

    dm, _ = build(cfg)
    return len(dm.eval_set("test"))


def test_cache_is_rebuilt_when_the_encoder_changes(train_config, tmp_path):
    def cached():
        return set((tmp_path / "cache" / "embeddings").glob("synthetic-image-*.pt"))

    train(train_config("+experiment=image_only", "debug=fdr"))
    assert len(cached()) == 1
    train(train_config("+experiment=image_only", "debug=fdr", "encoder.image.num_frames=2"))  # another config
    assert len(cached()) == 2
    train(train_config("+experiment=image_only", "debug=fdr", "seed=5"))  # random-init weights differ under another seed
    assert len(cached()) == 3
    train(train_config("+experiment=image_only", "debug=fdr"))  # the first again: reused
    assert len(cached()) == 3


def test_evaluate_reproduces_test_metrics(train_config, compose, tmp_path):
    from mmrec.evaluate import evaluate

    metrics = train(train_config("+experiment=text_only", "trainer.max_epochs=1"))
    best = next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    cfg = compose("evaluate", [f"ckpt_path={best}", "accelerator=cpu"], tmp_path / "eval")
    again = evaluate(cfg)
    for key in ("test/recall@20", "test/ndcg@10", "test_cold/recall@50", "test/auc"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6)
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_wandb_runs_offline_without_an_account(train_config, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    cfg = train_config("+experiment=fusion_mean", "logger=wandb", "trainer.max_epochs=1", "+trainer.limit_train_batches=2")
    train(cfg)
    offline_runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert (tmp_path / "run" / "csv").is_dir()


def test_two_process_cpu_ddp_training(train_config, tmp_path):
    cfg = train_config("+experiment=fusion_attn", "trainer=ddp_cpu", "trainer.max_epochs=1", "encoder/text=minilm")
    metrics = train(cfg)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test/users"] == _eval_users(cfg)  # no user dropped or duplicated across ranks
    assert 0 < metrics["test/recall@50"] <= 1


@pytest.mark.slow
def test_fusion_learns_the_synthetic_structure(tmp_path, compose):
    """On the default-size synthetic dataset, fusion ranks warm and cold items far above chance."""
    from mmrec.data.synthetic import generate

    generate(tmp_path / "data" / "synthetic")
    overrides = [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=none", "+experiment=fusion_concat", "trainer.max_epochs=6"]
    metrics = train(compose("train", overrides, tmp_path / "run"))
    chance = 20 / 2000  # recall@20 of a random ranking over the catalogue
    assert metrics["test_warm/recall@20"] > 10 * chance
    assert metrics["test_cold/recall@20"] > 10 * chance
