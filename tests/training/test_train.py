"""The main job end to end on the tiny dataset: every experiment, caching, checkpoints, resume, DDP."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import EXPERIMENTS

from mmrec.train import build, train

pytestmark = pytest.mark.integration  # full train / export / serve runs: `pytest -m integration`


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_one_batch_per_stage(train_config, compose, tmp_path, experiment):
    from conftest import TINY_MODEL, node_config
    from formats import WRITERS

    data = node_config("data", f"+experiment={experiment}")
    if (
        data["prepare"] is None
    ):  # its own dataset, not the generated one: a tiny one in its layout where it needs a root
        base = [f"paths.cache_dir={tmp_path / 'cache'}", f"paths.runs_dir={tmp_path / 'runs'}", *TINY_MODEL]
        writer = WRITERS.get(data["dataset"]["_target_"])
        if writer is not None:
            base.append(f"data.root={writer(tmp_path / 'data')}")
        if "CatalogueSoftmax" in str(node_config("loss", f"+experiment={experiment}")):
            base.append("encoder.text.mode=frozen")  # the catalogue softmax embeds every item from frozen encoders

        def config(*extra: str, folder: str = "run"):
            return compose("train", [*base, f"+experiment={experiment}", "debug=fdr", *extra], tmp_path / folder)
    else:

        def config(*extra: str, folder: str = "run"):
            return train_config(f"+experiment={experiment}", "debug=fdr", *extra)

    cfg = config()
    if cfg.model.get("freeze") and not cfg.get("init_from"):  # a fine-tuning preset: start from its own shape
        start = tmp_path / "start.ckpt"
        _, module = build(config("model.freeze=[]", folder="start"))
        torch.save({"state_dict": module.state_dict()}, start)
        cfg = config(f"init_from={start}")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/recall@20"] <= 1.0
    assert metrics["train/loss"] > 0


def test_short_training_writes_results_checkpoints_and_resumes(train_config, tmp_path):
    cfg = train_config("+experiment=fusion_gated", "trainer.max_epochs=2", "encoder/text=minilm")
    metrics = train(cfg)
    run = Path(tmp_path / "run")
    written = json.loads((run / "metrics.json").read_text())
    assert written["test/recall@20"] == pytest.approx(metrics["test/recall@20"])
    assert {
        "test/ndcg@10",
        "test_warm/recall@20",
        "test/coverage@50",
        "test/gini@20",
        "test/auc",
        "valid/mrr@10",
        "test/gauc",
        "test/tail_share@20",
        "test_tail/recall@20",
        "test_users_q1/ndcg@10",
    } <= set(written)
    assert (run / "config.yaml").read_text().count("fusion_gated") >= 1
    # the top-20 lists behind the metrics: one list per test user, and their hits give hit@20
    top = pd.read_csv(run / "test_topk.csv")
    assert list(top.columns) == ["user_id", "rank", "item_id", "score", "hit", "cold"]
    assert top.groupby("user_id").size().eq(20).all() and top["user_id"].nunique() == written["test/users"]
    assert top.groupby("user_id")["hit"].any().mean() == pytest.approx(written["test/hit@20"], abs=1e-6)
    assert (top.groupby("user_id")["score"].diff().dropna() <= 0).all()
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["mmrec_config"]["run_name"] == "fusion_gated"
    # every test user is counted once: the users with test targets
    assert written["test/users"] == _eval_users(cfg)
    # frozen encoders were cached and a second run reuses the files
    cache = sorted((tmp_path / "cache" / "embeddings").glob("*.pt"))
    assert {p.name.split("-")[1] for p in cache} == {"audio", "image", "text"}
    stamps = {p: p.stat().st_mtime_ns for p in cache}
    resumed = train_config(
        "+experiment=fusion_gated", "trainer.max_epochs=3", "encoder/text=minilm", f"ckpt_path={last}"
    )
    train(resumed)
    assert {p: p.stat().st_mtime_ns for p in cache} == stamps
    steps_per_epoch = ckpt["global_step"] // 2
    assert (
        torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3 * steps_per_epoch
    )  # one more epoch, not three


def _eval_users(cfg):
    from mmrec.train import build

    dm, _ = build(cfg)
    return len(dm.eval_set("test"))


def test_cache_is_rebuilt_when_the_encoder_changes(train_config, tmp_path):
    def cached():
        return set((tmp_path / "cache" / "embeddings").glob("synthetic-image-*.pt"))

    train(train_config("+experiment=image_only", "debug=fdr"))
    assert len(cached()) == 1
    train(
        train_config("+experiment=image_only", "debug=fdr", "encoder.image.featurizer.num_frames=2")
    )  # another config
    assert len(cached()) == 2
    train(
        train_config("+experiment=image_only", "debug=fdr", "seed=5")
    )  # random-init weights differ under another seed
    assert len(cached()) == 3
    train(train_config("+experiment=image_only", "debug=fdr"))  # the first again: reused
    assert len(cached()) == 3


def test_evaluate_reproduces_test_metrics(train_config, compose, tmp_path):
    from mmrec.evaluate import evaluate

    metrics = train(train_config("+experiment=text_only", "trainer.max_epochs=1"))
    best = next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    cfg = compose("evaluate", [f"ckpt_path={best}", "accelerator=cpu"], tmp_path / "eval")
    again = evaluate(cfg)
    for key in ("test/recall@20", "test/ndcg@10", "test_cold/recall@50", "test/auc", "test/gauc"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6)
    assert (tmp_path / "eval" / "metrics.json").is_file()
    # the same checkpoint on two processes: every metric identical (users split, states summed)
    two = evaluate(
        compose(
            "evaluate", [f"ckpt_path={best}", "accelerator=cpu", "devices=2", "strategy=ddp_fork"], tmp_path / "eval2"
        )
    )
    test_keys = [k for k in metrics if k.startswith("test")]
    assert len(test_keys) > 40
    for key in test_keys:
        assert two[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_fine_tuning_from_a_checkpoint_with_a_part_frozen(train_config, compose, tmp_path):
    """init_from: a text-only model given item IDs, its user tower fixed; the fine-tuned checkpoint
    evaluates on its own once the starting checkpoint is gone."""
    from mmrec.checkpoint import read_checkpoint
    from mmrec.evaluate import evaluate

    train(train_config("+experiment=text_only", "trainer.max_epochs=1"))
    start = tmp_path / "start.ckpt"
    next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt")).rename(start)
    shutil.rmtree(tmp_path / "run")
    tuned = train(
        train_config("+experiment=text_only", f"init_from={start}", "model.item_id=true", "model.freeze=[user_tower]")
    )
    before = read_checkpoint(start)["state_dict"]
    best = next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    after = read_checkpoint(best)["state_dict"]
    user_side = [k for k in before if k.startswith("model.user_tower.")]
    assert user_side and all(torch.equal(after[k], before[k]) for k in user_side)
    projection = [k for k in before if k.startswith("model.item_tower.projections.")]
    assert projection and not all(torch.equal(after[k], before[k]) for k in projection)
    assert "model.item_tower.id_embedding.weight" in after and "model.item_tower.id_embedding.weight" not in before
    start.unlink()
    again = evaluate(compose("evaluate", [f"ckpt_path={best}", "accelerator=cpu"], tmp_path / "eval"))
    assert again["test/recall@20"] == pytest.approx(tuned["test/recall@20"], abs=1e-6)


def test_compiled_encoders_train_to_the_same_metrics(train_config, tmp_path):
    """model.compile=true goes through torch.compile (dynamo's eager backend here: no C++ build in the
    suite) and changes neither the numbers nor the checkpoint's keys."""
    import shutil

    from torch._dynamo.utils import counters

    eager = train(train_config("+experiment=text_only", "trainer.max_epochs=1"))
    shutil.rmtree(tmp_path / "run")
    counters.clear()
    compiled = train(
        train_config(
            "+experiment=text_only",
            "trainer.max_epochs=1",
            "model.compile=true",
            "+model.compile_options.backend=eager",
        )
    )
    assert counters["frames"]["ok"] > 0  # dynamo captured the encoder's forward
    for key in ("test/recall@20", "test/ndcg@10", "best/valid/ndcg@20"):
        assert compiled[key] == pytest.approx(eager[key], abs=1e-5), key
    best = next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    keys = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("model.encoders.text.") for k in keys) and not any("_orig_mod" in k for k in keys)


def wandb_records(run_dir: Path):
    """The records of an offline W&B run file (a LevelDB-style log of protobuf Records, 32 KiB blocks)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    raw = next(run_dir.glob("run-*.wandb")).read_bytes()
    pos, block, pending = 7, 32768, b""  # a 7-byte file header, then 7-byte record headers
    while pos + 7 <= len(raw):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + data)
            pending = b""
            yield record
        elif kind in (2, 3):  # FIRST, MIDDLE
            pending += data


def test_wandb_offline_run_holds_group_best_value_and_tables(train_config, compose, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    cfg = train_config(
        "+experiment=fusion_mean", "logger=wandb", "trainer.max_epochs=2", "+trainer.limit_train_batches=2", "seed=3"
    )
    metrics = train(cfg)
    offline_runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert (tmp_path / "run" / "csv").is_dir()
    records = list(wandb_records(offline_runs[0]))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.job_type == "train" and run.display_name == "fusion_mean-seed3"
    assert "experiment=fusion_mean" in run.run_group and "seed=3" not in run.run_group.split(
        ","
    )  # seeds are runs of one group
    assert any(
        r.metric.glob_name == "valid/*" and r.metric.summary.max
        for r in records
        if r.WhichOneof("record_type") == "metric"
    )
    summary = {
        u.key or "/".join(u.nested_key): u.value_json
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for u in r.summary.update
    }
    assert float(summary["best/valid/ndcg@20"]) == pytest.approx(metrics["best/valid/ndcg@20"])
    assert float(summary["test/recall@20"]) == pytest.approx(metrics["test/recall@20"])
    config = next(r.config for r in records if r.WhichOneof("record_type") == "config")
    keys = {u.key for u in config.update}
    assert {"fusion._target_", "params/model/trainable", "params/encoder.text/total"} <= keys
    tables = list(offline_runs[0].glob("files/media/table/test/recommendations_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert (
        table["columns"] == ["user", "history", "rank", "item", "title", "keyframe", "audio", "hit"]
        and len(table["data"]) == 8 * 10
    )
    assert any(row[5] is not None for row in table["data"])  # keyframes logged as images
    assert list(offline_runs[0].glob("files/media/table/test/item_embeddings_*.table.json"))
    # re-evaluating the checkpoint logs an eval run into the same group
    from mmrec.evaluate import evaluate

    best = next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    evaluate(compose("evaluate", [f"ckpt_path={best}", "accelerator=cpu", "wandb=true"], tmp_path / "eval"))
    (eval_run,) = list((tmp_path / "eval" / "wandb").glob("offline-run-*"))
    eval_meta = next(r.run for r in wandb_records(eval_run) if r.WhichOneof("record_type") == "run")
    assert eval_meta.job_type == "eval" and eval_meta.run_group == run.run_group


def test_wandb_login_is_resolved_by_wandb_for_self_hosted_servers(tmp_path):
    """Checked in a fresh process each time: wandb keeps session credentials in-process, so other
    tests' runs must not decide the answer."""
    import os
    import subprocess
    import sys

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
        "HOME": str(tmp_path),
        "NETRC": str(tmp_path / ".netrc"),
        "WANDB_BASE_URL": "http://wandb.example.internal:8080",
    }

    def logged_in() -> bool:
        code = "from mmrec.runs import wandb_logged_in; print(wandb_logged_in())"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1] == "True"

    assert not logged_in()
    (tmp_path / ".netrc").write_text(
        "machine wandb.example.internal:8080\n  login user\n  password local-" + "0" * 40 + "\n"
    )
    (tmp_path / ".netrc").chmod(0o600)
    assert logged_in()


def test_two_process_cpu_ddp_training(train_config, tmp_path):
    cfg = train_config("+experiment=fusion_attn", "trainer=ddp_cpu", "trainer.max_epochs=1", "encoder/text=minilm")
    metrics = train(cfg)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test/users"] == _eval_users(cfg)  # no user dropped or duplicated across ranks
    assert 0 < metrics["test/recall@50"] <= 1
    # each rank encoded half the catalogue with the frozen encoders: the gathered cache is one process's
    sliced = {p.name: torch.load(p, weights_only=True) for p in (tmp_path / "cache").rglob("*-text-*.pt")}
    assert len(sliced) == 1
    shutil.rmtree(tmp_path / "cache")
    single = train_config("+experiment=fusion_attn", "trainer.max_epochs=1", "encoder/text=minilm")
    build(single)[1].on_fit_start()  # one process encodes the whole catalogue into the cache
    ((name, one),) = sliced.items()
    whole = torch.load(next((tmp_path / "cache").rglob(name)), weights_only=True)
    torch.testing.assert_close(one["features"], whole["features"], atol=1e-5, rtol=1e-5)
    assert torch.equal(one["present"], whole["present"]) and int(whole["present"].sum()) > 0


@pytest.mark.slow
def test_fusion_learns_the_synthetic_structure(tmp_path, compose):
    """On the default-size synthetic dataset, fusion ranks warm and cold items far above chance."""
    from mmrec.data.synthetic import generate

    generate(tmp_path / "data" / "synthetic")
    overrides = [
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "logger=none",
        "+experiment=fusion_concat",
        "trainer.max_epochs=6",
    ]
    metrics = train(compose("train", overrides, tmp_path / "run"))
    chance = 20 / 2000  # recall@20 of a random ranking over the catalogue
    assert metrics["test_warm/recall@20"] > 10 * chance
    assert metrics["test_cold/recall@20"] > 10 * chance
