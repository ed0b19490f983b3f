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


def test_no_sampled_negatives_when_only_the_in_batch_softmax_trains(train_config):
    dm, m = build(train_config("+experiment=text_only", "data.num_negatives=0", "loss.bce.weight=0"))
    batch = next(iter(dm.train_dataloader()))
    b = len(batch.user)
    assert batch.neg.shape == (b, 0)
    # the batch's items are the positives and histories only
    assert set(batch.items.index.tolist()) == set(
        batch.items.index[torch.cat([batch.pos, batch.history[batch.history_mask]])].tolist()
    )
    m._trainer = SimpleNamespace(estimated_stepping_batches=10)
    m.log = m.log_dict = lambda *a, **k: None
    loss = m.training_step(batch, 0)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()


def test_bce_without_negatives_is_refused(train_config):
    with pytest.raises(ValueError, match=r"data.num_negatives=0 but loss term\(s\) \['bce'\]"):
        build(train_config("+experiment=text_only", "data.num_negatives=0", "loss.bce.weight=0.5"))


def test_fused_adamw_is_chosen_by_device(train_config):
    def optimizer(*overrides):
        _, m = build(train_config("+experiment=text_only", *overrides))
        m._trainer = SimpleNamespace(estimated_stepping_batches=10)
        return m.configure_optimizers()["optimizer"]

    assert not optimizer().defaults["fused"]  # auto on CPU parameters: PyTorch's default update
    assert optimizer("optimizer.fused=true").defaults["fused"] is True  # asked for: used (CPU has a fused AdamW)
    sgd = optimizer("optimizer._target_=torch.optim.SGD", "~optimizer.fused", "~optimizer.weight_decay")
    assert isinstance(sgd, torch.optim.SGD)  # another optimiser without the key is built as configured


SEQUENCE = ["+experiment=id_only", "data.split.method=loo", "model/user_tower=sequential", "data.train_unit=sequence"]


def test_sequence_training_step_trains_every_position(train_config):
    dm, m = build(train_config(*SEQUENCE, "loss.bce.weight=0", "data.history_length=4"))
    batch = next(iter(dm.train_dataloader()))
    assert batch.targets.shape == batch.history.shape == (len(batch.user), 4)
    m.log = m.log_dict = lambda *a, **k: None
    loss = m.training_step(batch, 0)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert m.model.user_tower.position.grad.abs().sum() > 0


def test_sequence_training_refuses_what_it_cannot_train(train_config):
    with pytest.raises(ValueError, match=r"samples no negatives, but loss term\(s\) \['bce'\]"):
        build(train_config(*SEQUENCE))
    with pytest.raises(ValueError, match="needs model/user_tower=sequential"):
        build(train_config(*SEQUENCE[:2], "data.train_unit=sequence", "loss.bce.weight=0"))
    with pytest.raises(ValueError, match="needs data.history_mode=before"):
        build(train_config(*SEQUENCE, "loss.bce.weight=0", "data.history_mode=others"))


def test_whitening_is_fitted_to_the_frozen_catalogue_once(train_config):
    _, m = build(train_config("+experiment=text_only", "encoder.text.mode=frozen", "model.whiten=0.5"))
    m._ensure_cache()
    whitening = m.model.item_tower.projections["text"].whitening
    features, present = m.model.frozen.get("text")
    spread = torch.linalg.eigvalsh(torch.cov(whitening(features[present]).T.double()))
    assert bool(whitening.fitted) and spread.max() > 0.99
    assert torch.all(((spread - 1).abs() < 1e-2) | (spread.abs() < 1e-4))  # unit variance, or a dropped direction
    whitening.matrix.mul_(2.0)  # as a checkpoint's statistics: fitted, so never fitted again
    kept = whitening.matrix.clone()
    m._cached = False
    m._ensure_cache()
    assert torch.equal(whitening.matrix, kept)


def test_whitening_refuses_encoders_that_train(train_config):
    with pytest.raises(ValueError, match=r"model.whiten=0.5 whitens frozen .* \['text'\] train their encoders"):
        build(train_config("+experiment=text_only", "model.whiten=0.5"))
