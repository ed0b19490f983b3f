"""Optimiser groups and schedule of the LightningModule, and the training-interaction lookup."""

from types import SimpleNamespace

import pytest
import torch

from mmrec.build import build
from mmrec.data.csr import PairSet


@pytest.fixture
def module(train_config):
    _, m = build(
        train_config(
            "+experiment=fusion_attn",
            "model.item_id=true",
            "optimizer.lr=0.01",
            "optimizer.weight_decay=0.1",
            "model.warmup_ratio=0.1",
        )
    )
    m._trainer = SimpleNamespace(estimated_stepping_batches=100)
    return m


def test_parameter_groups(module):
    config = module.configure_optimizers()
    optimizer = config["optimizer"]
    names = {id(p): n for n, p in module.named_parameters()}
    seen = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            seen.add(name)
            is_encoder = name.startswith("model.encoders.")
            assert group["initial_lr"] == pytest.approx(0.001 if is_encoder else 0.01), name
            if p.ndim < 2 or "norm" in name or "embedding" in name:
                assert group["weight_decay"] == 0.0, name
            else:
                assert group["weight_decay"] == 0.1, name
    assert seen == {n for n, p in module.named_parameters() if p.requires_grad}


def test_warmup_then_cosine(module):
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    factors = []
    for _ in range(100):
        factors.append(scheduler.get_last_lr()[-1] / scheduler.base_lrs[-1])
        scheduler.optimizer.step()
        scheduler.step()
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5, abs=0.02) and factors[99] < 0.01
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_interacted_lookup():
    known = PairSet.from_pairs(torch.tensor([0, 1, 4]), torch.tensor([3, 0, 9]), stride=10)  # (0,3) (1,0) (4,9)
    got = known.contains(torch.tensor([[0], [1], [4]]), torch.tensor([[3, 0, 9]]))
    assert got.tolist() == [[True, False, False], [False, True, False], [False, False, True]]
    assert not known.contains(torch.tensor([0]), torch.tensor([13])).any()  # beyond the stride: never a member
