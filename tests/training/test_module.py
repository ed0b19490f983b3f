"""Optimiser groups and schedule of the LightningModule, and the training-interaction lookup."""

from types import SimpleNamespace

import pytest
import torch

from mmrec.build import build
from mmrec.data.csr import PairSet
from mmrec.losses.contrastive import InBatchSoftmax
from mmrec.models.two_tower import TwoTowerOutput


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


def test_content_term_trains_the_content_only_path(train_config):
    """With only the content term, the step's loss is the in-batch softmax of the users against
    their positives embedded without IDs; it trains the projections, and item IDs only through
    the users' histories."""
    overrides = ["+experiment=text_only", "model.item_id=true", "model.id_dropout=0"]
    dm, m = build(train_config(*overrides, "loss.contrastive.weight=0", "loss.content.weight=1", "loss.bce.weight=0"))
    batch = next(iter(dm.train_dataloader()))
    m._trainer = SimpleNamespace(estimated_stepping_batches=10)
    logged = {}
    m.log = lambda name, value, **k: logged.__setitem__(name, value)
    m.log_dict = lambda values, **k: logged.update(values)
    m.eval()  # no dropout, so the loss can be recomputed by hand
    loss = m.training_step(batch, 0)
    assert float(logged["train/content"]) == pytest.approx(float(loss))

    features, present = m.item_features(batch.items)
    with_ids = m.model.embed_items(features, present, batch.items.index).embedding
    content = m.model.embed_items(features, present, batch.items.index, use_ids=False).embedding[batch.pos]
    assert not torch.allclose(content, with_ids[batch.pos], atol=1e-3)
    pos_ids = batch.items.index[batch.pos]
    out = TwoTowerOutput(
        users=m.model.embed_users(with_ids[batch.history], batch.history_mask, batch.user),
        pos_items=content,
        neg_items=content[:, None],
        user_ids=batch.user,
        pos_ids=pos_ids,
        neg_ids=batch.items.index[batch.neg],
        logit_scale=m.model.logit_scale,
        pos_logits=None,
        neg_logits=None,
        log_q=m.log_q[pos_ids],
        known=m.known_interactions,
    )
    assert float(loss) == pytest.approx(float(InBatchSoftmax()(out)), rel=1e-5)

    loss.backward()
    assert all(p.grad is not None and p.grad.any() for p in m.model.item_tower.projections.parameters())
    trained_ids = set(m.model.item_tower.id_embedding.weight.grad.any(dim=1).nonzero().flatten().tolist())
    assert trained_ids and trained_ids <= set(batch.items.index[batch.history[batch.history_mask]].tolist())
    assert set(pos_ids.tolist()) - trained_ids  # positives outside every history: their IDs got nothing


def test_content_term_needs_item_ids_and_content(train_config):
    with pytest.raises(ValueError, match=r"loss term\(s\) \['content'\] train items from their content alone"):
        build(train_config("+experiment=text_only", "loss.content.weight=0.5"))  # model.item_id=false
    with pytest.raises(ValueError, match=r"model.item_id=True and a content encoder|encoders: none"):
        build(train_config("+experiment=id_only", "encoder/text=none", "loss.content.weight=0.5"))


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
