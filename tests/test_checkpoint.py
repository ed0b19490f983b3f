"""Checkpoints never execute code, and bad files are refused before any data or model is built."""

import os

import pytest
import torch

import mmrec.evaluate  # noqa: F401 (imported before the fixture patches what it imported)
import mmrec.train  # noqa: F401
from mmrec.checkpoint import CheckpointError, read_checkpoint, rng_states, set_rng_states


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
