"""Checkpoints never execute code, and bad files are refused before any data or model is built."""

import os

import pytest
import torch

import mmrec.evaluate  # noqa: F401 (imported before the fixture patches what it imported)
import mmrec.train  # noqa: F401
from mmrec.checkpoint import CheckpointError, read_checkpoint, rng_states, set_rng_states
from tests.conftest import scientific_id_model


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.fixture
def no_build(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data and model were built for a checkpoint that should have been refused")

    monkeypatch.setattr("mmrec.train.build", refuse)
    monkeypatch.setattr("mmrec.evaluate.build", refuse)


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch, compose, no_build):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "mmrec_config": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil.ckpt: refused, it holds objects other than tensors"):
        read_checkpoint(path)
    from mmrec.evaluate import evaluate

    with pytest.raises(CheckpointError, match="evil.ckpt"):
        evaluate(compose("evaluate", [f"ckpt_path={path}"], tmp_path / "eval"))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "content, message",
    [(b"", "not a checkpoint"), (b"hello, world", "not a checkpoint"), ("truncated", "truncated")],
)
def test_truncated_or_foreign_files_are_refused_before_building(tmp_path, train_config, content, message, no_build):
    path = tmp_path / "bad.ckpt"
    if content == "truncated":
        torch.save({"state_dict": {"w": torch.randn(1000)}}, tmp_path / "good.ckpt")
        data = (tmp_path / "good.ckpt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    from mmrec.train import train

    with pytest.raises(CheckpointError, match=message):
        train(train_config(f"ckpt_path={path}"))


def test_a_plain_tensor_file_is_not_a_checkpoint(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "t.ckpt")
    with pytest.raises(CheckpointError, match="expected a dict with 'state_dict'"):
        read_checkpoint(tmp_path / "t.ckpt")


def test_rng_states_round_trip_under_weights_only(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.save({"state_dict": {}, "rng": rng_states()}, tmp_path / "r.ckpt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_states(read_checkpoint(tmp_path / "r.ckpt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_init_from_starts_a_new_run_from_a_checkpoint_and_freeze_fixes_parts(tmp_path):
    from mmrec.build import start_from

    _, trained = scientific_id_model(tmp_path)
    path = tmp_path / "text_only.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, path)
    cfg, model = scientific_id_model(
        tmp_path, f"init_from={path}", "model.user_id=true", "model.freeze=[user_tower.transformer]"
    )
    start_from(model, cfg)
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, msg=name)
    assert "user_tower.id_embedding.weight" not in trained.state_dict()  # new here: keeps its init
    fixed = {n for n, p in model.named_parameters() if not p.requires_grad} - {"logit_scale"}  # a fixed temperature
    assert fixed == {n for n, _ in model.named_parameters() if n.startswith("user_tower.transformer.")} and fixed
    assert model.item_tower.id_embedding.weight.requires_grad and model.user_tower.id_embedding.weight.requires_grad

    cfg, narrower = scientific_id_model(tmp_path, f"init_from={path}", "model.dim=64")
    with pytest.raises(CheckpointError) as error:
        start_from(narrower, cfg)
    wrong = sum(1 for name, value in trained.state_dict().items() if value.shape != narrower.state_dict()[name].shape)
    assert (
        f"{wrong} parameter(s) of another shape: item_tower.id_embedding.weight (30, 256) (this model: (30, 64));"
        in str(error.value)
    )
    assert str(error.value).count("this model:") == 3 and f"and {wrong - 3} more;" in str(error.value)
    cfg, model = scientific_id_model(tmp_path, "model.freeze=[user_tower.nope]")
    with pytest.raises(
        ValueError, match=r"model.freeze: 'user_tower.nope' names no parameter.*'user_tower.transformer'"
    ):
        start_from(model, cfg)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    path.rename(run / "checkpoints" / "best-epoch003.ckpt")
    cfg, model = scientific_id_model(tmp_path, f"init_from={run}")  # a run folder: its best checkpoint
    start_from(model, cfg)
    torch.testing.assert_close(model.state_dict()["user_tower.start"], trained.state_dict()["user_tower.start"])
    (run / "checkpoints" / "best-epoch005.ckpt").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=r"one checkpoints/best-\*.ckpt, found \['best-epoch003.ckpt', 'best-epoch005"
    ):
        start_from(model, cfg)
    torch.save({"state_dict": {"model.other.weight": torch.zeros(2)}}, path)
    cfg, model = scientific_id_model(tmp_path, f"init_from={path}")
    with pytest.raises(CheckpointError, match="no parameter of this model is in the checkpoint"):
        start_from(model, cfg)


def test_freezing_without_a_starting_checkpoint_is_refused(compose, tmp_path, no_build):
    from mmrec.build import check_config

    cfg = compose("train", ["+experiment=scientific_text_ids_ft"], tmp_path)
    assert list(cfg.model.freeze) == ["user_tower"] and cfg.model.id_init_std == 0.0
    with pytest.raises(ValueError, match=r"model.freeze=\['user_tower'\] without init_from .* give init_from="):
        check_config(cfg)
    check_config(compose("train", ["+experiment=scientific_text_ids_ft", "init_from=run"], tmp_path))
    check_config(compose("train", ["+experiment=text_only", "model.freeze=[encoders.text]"], tmp_path))
    check_config(compose("train", ["+experiment=text_only", "model.freeze=[encoders]"], tmp_path))
    with pytest.raises(FileNotFoundError, match="init_from=nowhere.ckpt: no such checkpoint file or run folder"):
        mmrec.train.train(compose("train", ["+experiment=scientific_text_ids_ft", "init_from=nowhere.ckpt"], tmp_path))
