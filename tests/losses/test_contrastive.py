"""In-batch softmax against a straightforward reference; logQ and accidental-hit masking."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmrec.data.csr import PairSet
from mmrec.losses.bce import PointwiseBCE, pointwise_bce
from mmrec.losses.contrastive import InBatchSoftmax, in_batch_softmax
from mmrec.losses.objective import Objective
from mmrec.models.two_tower import PointwiseScorer, TwoTowerModel, TwoTowerOutput


def outputs(users, pos, neg=None, user_ids=None, pos_ids=None, neg_ids=None, logit_scale=0.0, known=None, log_q=None):
    b = len(users)
    neg = neg if neg is not None else pos.unsqueeze(1)
    scorer = PointwiseScorer()
    return TwoTowerOutput(
        users,
        pos,
        neg,
        user_ids if user_ids is not None else torch.arange(b),
        pos_ids if pos_ids is not None else torch.arange(b),
        neg_ids if neg_ids is not None else torch.full((b, neg.shape[1]), 10_000),
        torch.tensor(float(logit_scale)),
        scorer(users, pos),
        scorer(users, neg),
        log_q if log_q is not None else torch.zeros(b),
        known,
    )


def reference(users, items, labels, scale, log_q=None, exclude=None):
    """Row by row: -log softmax over the allowed columns, at the label."""
    total = 0.0
    for b in range(len(users)):
        logits = []
        for c in range(len(items)):
            if exclude is not None and exclude[b, c] and c != labels[b]:
                continue
            z = math.exp(scale) * float(users[b] @ items[c]) - (float(log_q[c]) if log_q is not None else 0.0)
            logits.append((c, z))
        zmax = max(z for _, z in logits)
        log_norm = zmax + math.log(sum(math.exp(z - zmax) for _, z in logits))
        total += log_norm - dict(logits)[int(labels[b])]
    return total / len(users)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    users = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    items = F.normalize(torch.randn(9, 8, generator=g), dim=1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    return users, items, labels


def test_matches_reference(batch):
    users, items, labels = batch
    scale = torch.tensor(math.log(1 / 0.1))
    got = in_batch_softmax(users, items, labels, scale)
    assert got.item() == pytest.approx(reference(users, items, labels, scale.item()), rel=1e-5)


def test_logq_correction_is_subtracting_log_frequency(batch):
    users, items, labels = batch
    scale = torch.tensor(2.0)
    log_q = torch.log(torch.tensor([0.3, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]))
    got = in_batch_softmax(users, items, labels, scale, log_q=log_q)
    assert got.item() == pytest.approx(reference(users, items, labels, 2.0, log_q=log_q), rel=1e-5)
    assert got.item() != pytest.approx(in_batch_softmax(users, items, labels, scale).item(), rel=1e-3)
    # a uniform q shifts every logit equally: no change
    uniform = torch.full((9,), math.log(1 / 9))
    assert in_batch_softmax(users, items, labels, scale, log_q=uniform).item() == pytest.approx(
        in_batch_softmax(users, items, labels, scale).item(), rel=1e-6
    )


def test_accidental_hits_are_removed_but_never_the_positive(batch):
    users, items, labels = batch
    exclude = torch.zeros(6, 9, dtype=torch.bool)
    exclude[0, 3] = exclude[2, 7] = exclude[4, 4] = True  # (4, 4) is row 4's own positive: kept
    got = in_batch_softmax(users, items, labels, torch.tensor(1.0), exclude=exclude)
    assert got.item() == pytest.approx(reference(users, items, labels, 1.0, exclude=exclude), rel=1e-5)
    assert got.item() < in_batch_softmax(users, items, labels, torch.tensor(1.0)).item()


def test_module_masks_duplicates_and_interactions():
    g = torch.Generator().manual_seed(1)
    users = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    items = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    item_ids = torch.tensor([7, 7, 3, 9])  # rows 0 and 1 share a positive item
    user_ids = torch.tensor([0, 1, 2, 3])
    known = PairSet.from_pairs(torch.tensor([2]), torch.tensor([9]), stride=100)  # user 2 interacted with item 9
    got = InBatchSoftmax()(
        outputs(users, items, user_ids=user_ids, pos_ids=item_ids, logit_scale=math.log(2.0), known=known)
    )
    exclude = torch.zeros(4, 4, dtype=torch.bool)
    exclude[0, 1] = exclude[1, 0] = True
    exclude[2, 3] = True
    assert got.item() == pytest.approx(
        reference(users, items, torch.arange(4), math.log(2.0), exclude=exclude), rel=1e-5
    )


def test_temperature_lives_on_the_model_and_is_clamped_in_place():
    from torch import nn

    from mmrec.models.towers import ItemTower, UserTower

    def model(**kw):
        return TwoTowerModel(
            {}, ItemTower(nn.ModuleDict(), None, 8, 5, item_id=True), UserTower(8, 3, 4, heads=2), **kw
        )

    m = model(temperature=0.001, max_logit_scale=50.0)
    assert m.logit_scale.item() == pytest.approx(math.log(50.0))  # clamped at construction
    with torch.no_grad():
        m.logit_scale.fill_(10.0)  # as an optimiser step past the cap would
    m.clamp_()
    assert m.logit_scale.item() == pytest.approx(math.log(50.0))  # the parameter itself, so it can come back down
    assert "logit_scale" in m.state_dict() and "scorer.scale" in m.state_dict()  # a saved model is complete
    assert m.logit_scale.requires_grad and not model(learn_temperature=False).logit_scale.requires_grad


def test_loss_falls_when_positives_align():
    torch.manual_seed(0)
    users = F.normalize(torch.randn(16, 32), dim=1)
    aligned = users.clone()
    random_items = F.normalize(torch.randn(16, 32), dim=1)
    objective = Objective({"contrastive": InBatchSoftmax(), "bce": PointwiseBCE()}, {"contrastive": 1.0, "bce": 0.5})
    neg = F.normalize(torch.randn(16, 4, 32), dim=1)
    good = objective(outputs(users, aligned, neg, logit_scale=math.log(1 / 0.07)))
    bad = objective(outputs(users, random_items, neg, logit_scale=math.log(1 / 0.07)))
    assert good["contrastive"] < bad["contrastive"] and good["bce"] < bad["bce"] and good["loss"] < bad["loss"]
    assert good["loss"].item() == pytest.approx(good["contrastive"].item() + 0.5 * good["bce"].item(), rel=1e-5)


def test_a_new_loss_term_is_one_function():
    def alignment(out):
        return (1 - (out.users * out.pos_items).sum(-1)).mean()

    users = F.normalize(torch.randn(4, 8), dim=1)
    objective = Objective(
        {"contrastive": InBatchSoftmax(), "alignment": alignment}, {"contrastive": 1.0, "alignment": 2.0}
    )
    got = objective(outputs(users, users.clone()))
    assert set(got) == {"loss", "contrastive", "alignment"} and got["alignment"].item() == pytest.approx(0.0, abs=1e-6)


def test_bce_leaves_out_invalid_negatives():
    pos, neg = torch.tensor([2.0, -1.0]), torch.tensor([[0.5, 3.0], [-2.0, 1.0]])
    valid = torch.tensor([[True, False], [True, True]])
    expected = (F.softplus(-pos).sum() + F.softplus(neg[valid]).sum()) / 5
    assert pointwise_bce(pos, neg, valid).item() == pytest.approx(expected.item(), rel=1e-6)
    scorer = PointwiseScorer(init_scale=2.0, init_bias=-1.0)
    u, i = torch.ones(1, 3) / 3**0.5, torch.ones(1, 2, 3) / 3**0.5
    torch.testing.assert_close(scorer(u, i), torch.tensor([[1.0, 1.0]]))


def test_bad_weights():
    with pytest.raises(ValueError, match="not all 0"):
        Objective({"bce": PointwiseBCE()}, {"bce": 0})
    with pytest.raises(ValueError, match="must name the same terms"):
        Objective({"bce": PointwiseBCE()}, {"bc": 1.0})


def test_padded_rows_change_nothing():
    """Sequence training pads windows: a padded row weighs nothing and its column is no one's negative."""
    g = torch.Generator().manual_seed(3)
    users = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    items = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    valid = torch.tensor([True, False, True, True, False, True])
    real = outputs(users[valid], items[valid], pos_ids=torch.arange(6)[valid], logit_scale=2.0)
    padded = outputs(users, items, pos_ids=torch.arange(6), logit_scale=2.0)
    padded.valid = valid
    loss = InBatchSoftmax(logq_correction=False)
    torch.testing.assert_close(loss(padded), loss(real))


def test_catalogue_softmax_is_cross_entropy_over_every_item():
    from mmrec.losses.contrastive import CatalogueSoftmax
    from mmrec.models.two_tower import TwoTowerOutput

    torch.manual_seed(0)
    users, catalogue = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(30, 8), dim=-1)
    pos_ids, scale = torch.tensor([3, 0, 29, 3, 7]), torch.tensor(2.0)
    valid = torch.tensor([True, True, False, True, True])
    empty = torch.zeros(5, 0, 8)
    out = TwoTowerOutput(
        users, catalogue[pos_ids], empty, torch.arange(5), pos_ids, torch.zeros(5, 0, dtype=torch.long),
        scale, torch.zeros(5), torch.zeros(5, 0), torch.zeros(5), valid=valid, catalogue=catalogue,
    )  # fmt: skip
    logits = scale.exp() * users @ catalogue.T
    expected = F.cross_entropy(logits[valid], pos_ids[valid])
    assert torch.allclose(CatalogueSoftmax()(out), expected)
    out.valid = None
    assert torch.allclose(CatalogueSoftmax()(out), F.cross_entropy(logits, pos_ids))
