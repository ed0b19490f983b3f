import pytest
import torch
from torch import nn

from mmrec.models.builder import build_model
from mmrec.models.fusion import build_fusion
from mmrec.models.towers import ItemTower, ProjectionHead, UserTower, modality_dropout


def item_tower(num_items=None, **kw):
    torch.manual_seed(0)
    proj = nn.ModuleDict({"image": ProjectionHead(8, 16), "text": ProjectionHead(12, 16)})
    return ItemTower(proj, build_fusion("gated", ("image", "text"), 16), 16, num_items=num_items, **kw)


def features(m=5):
    return {"image": torch.randn(m, 8), "text": torch.randn(m, 12)}, {"image": torch.tensor([1, 1, 0, 1, 0]).bool(), "text": torch.tensor([1, 0, 1, 1, 0]).bool()}


def test_item_tower_normalised_and_contentless_items_need_ids():
    tower = item_tower().eval()
    feats, present = features()
    with pytest.raises(ValueError, match=r"item\(s\) \[14\] have no modality present and item-ID embeddings are off: set model.item_id=true"):
        tower(feats, present, torch.arange(10, 15))
    tower = item_tower(num_items=20).eval()
    out = tower(feats, present, torch.arange(10, 15))
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(out.embedding[4], nn.functional.normalize(tower.id_embedding.weight[14], dim=0))
    assert out.modality_weights.shape == (5, 2) and torch.all(out.modality_weights[4] == 0)


def test_id_dropout_only_in_training():
    tower = item_tower(num_items=20, id_dropout=1.0)
    feats, present = features()
    present = {m: torch.ones(5, dtype=torch.bool) for m in present}
    tower.eval()
    with_ids = tower(feats, present, torch.arange(5)).embedding
    tower.id_embedding.weight.data.zero_()
    without_ids = tower(feats, present, torch.arange(5)).embedding
    assert not torch.allclose(with_ids, without_ids)
    tower.train()
    for module in tower.modules():  # keep dropout layers off to compare the ID path alone
        if isinstance(module, nn.Dropout):
            module.eval()
    torch.manual_seed(0)
    dropped = tower(feats, present, torch.arange(5)).embedding
    torch.testing.assert_close(dropped, without_ids)


def test_modality_dropout_never_removes_everything():
    torch.manual_seed(0)
    present = {m: torch.rand(1000) < 0.7 for m in ("a", "b", "c")}
    present["a"] |= ~(present["b"] | present["c"])
    out = modality_dropout(present, 0.5)
    stacked_in = torch.stack([present[m] for m in "abc"], 1)
    stacked = torch.stack([out[m] for m in "abc"], 1)
    assert stacked.any(1).all() and not (stacked & ~stacked_in).any()
    assert stacked.sum() < 0.9 * stacked_in.sum()  # some modalities really were dropped


@pytest.mark.parametrize("pooling", ["attn", "mean"])
def test_user_tower_padding_and_empty_history(pooling):
    torch.manual_seed(0)
    tower = UserTower(16, history_length=4, pooling=pooling, num_users=3, heads=2).eval()
    hist = torch.randn(3, 4, 16)
    mask = torch.tensor([[False, False, True, True], [True, True, True, True], [False, False, False, False]])
    out = tower(hist, mask, torch.arange(3))
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    changed = hist.clone()
    changed[~mask] = 50.0
    torch.testing.assert_close(tower(changed, mask, torch.arange(3)), out)
    changed[1, 0] += torch.randn(16)  # a real history item changes the user (a constant shift would vanish in LayerNorm)
    assert not torch.allclose(tower(changed, mask, torch.arange(3))[1], out[1])


def test_builder_wires_id_only_and_rejects_empty():
    model = build_model({"text": {"kind": "none"}}, num_items=10, num_users=4, item_id=True, dim=16, fusion_heads=2, history_length=3)
    assert model.modalities == () and model.item_tower.fusion is None
    with pytest.raises(ValueError, match="no encoder is enabled and model.item_id is false"):
        build_model({"text": {"kind": "none"}}, num_items=10, num_users=4)
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        build_model({"video": {"kind": "x"}}, num_items=10, num_users=4)


def test_learned_empty_item_vector():
    torch.manual_seed(0)
    proj = nn.ModuleDict({"image": ProjectionHead(8, 16)})
    tower = ItemTower(proj, build_fusion("mean", ("image",), 16), 16, empty_items="learned").eval()
    present = {"image": torch.tensor([True, False, False])}
    out = tower({"image": torch.randn(3, 8)}, present, torch.arange(3)).embedding
    torch.testing.assert_close(out[1], out[2])
    torch.testing.assert_close(out[1], nn.functional.normalize(tower.empty, dim=0))
    with pytest.raises(ValueError, match="unknown model.empty_items 'zero'"):
        ItemTower(proj, build_fusion("mean", ("image",), 16), 16, empty_items="zero")
