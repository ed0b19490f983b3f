import pytest
import torch
from torch import nn

from mmrec.models.adapt import ModalityEncoder
from mmrec.models.fusion import GatedFusion, MeanFusion
from mmrec.models.towers import ItemTower, ProjectionHead, UserTower, modality_dropout


def item_tower(item_id=False, num_items=20, **kw):
    torch.manual_seed(0)
    proj = nn.ModuleDict({"image": ProjectionHead(8, 16), "text": ProjectionHead(12, 16)})
    return ItemTower(proj, GatedFusion(("image", "text"), 16), 16, num_items=num_items, item_id=item_id, **kw)


def features(m=5):
    return {"image": torch.randn(m, 8), "text": torch.randn(m, 12)}, {
        "image": torch.tensor([1, 1, 0, 1, 0]).bool(),
        "text": torch.tensor([1, 0, 1, 1, 0]).bool(),
    }


def test_item_tower_normalised_and_contentless_items_embed_from_ids():
    tower = item_tower(item_id=True).eval()
    feats, present = features()
    out = tower(feats, present, torch.arange(10, 15))
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(out.embedding[4], nn.functional.normalize(tower.id_embedding.weight[14], dim=0))
    assert out.modality_weights.shape == (5, 2) and torch.all(out.modality_weights[4] == 0)
    # without IDs or a learned vector such an item is refused before training (RecModule.check_empty_items);
    # if one still arrives (a file broke mid-run) it embeds as zeros instead of stopping the epoch
    assert torch.all(item_tower().eval()(feats, present, torch.arange(10, 15)).embedding[4] == 0)


def test_cold_items_never_use_their_untrained_id_vector():
    trained = torch.ones(20, dtype=torch.bool)
    trained[12] = False  # item 12 has no training interaction
    tower = item_tower(item_id=True, trained_ids=trained).eval()
    feats, present = features()
    out = tower(feats, present, torch.arange(10, 15)).embedding
    content_only = item_tower(item_id=False).eval()(feats, present, torch.arange(10, 15)).embedding
    torch.testing.assert_close(out[2], content_only[2])  # item 12: content alone
    assert not torch.allclose(out[0], content_only[0])  # item 10: content + its ID


def test_id_dropout_only_in_training():
    tower = item_tower(item_id=True, id_dropout=1.0)
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
    tower = UserTower(16, history_length=4, num_users=3, pooling=pooling, user_id=True, heads=2).eval()
    hist = torch.randn(3, 4, 16)
    mask = torch.tensor([[False, False, True, True], [True, True, True, True], [False, False, False, False]])
    out = tower(hist, mask, torch.arange(3))
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    changed = hist.clone()
    changed[~mask] = 50.0
    torch.testing.assert_close(tower(changed, mask, torch.arange(3)), out)
    changed[1, 0] += torch.randn(
        16
    )  # a real history item changes the user (a constant shift would vanish in LayerNorm)
    assert not torch.allclose(tower(changed, mask, torch.arange(3))[1], out[1])


def test_tower_without_content_needs_ids():
    tower = ItemTower(nn.ModuleDict(), None, 16, num_items=10, item_id=True)
    assert tower.fusion is None and tower.id_embedding.weight.shape == (10, 16)
    with pytest.raises(ValueError, match="no content .* and model.item_id is false"):
        ItemTower(nn.ModuleDict(), None, 16, num_items=10)


def test_learned_empty_item_vector():
    torch.manual_seed(0)
    proj = nn.ModuleDict({"image": ProjectionHead(8, 16)})
    tower = ItemTower(proj, MeanFusion(("image",), 16), 16, num_items=3, empty_items="learned").eval()
    present = {"image": torch.tensor([True, False, False])}
    out = tower({"image": torch.randn(3, 8)}, present, torch.arange(3)).embedding
    torch.testing.assert_close(out[1], out[2])
    torch.testing.assert_close(out[1], nn.functional.normalize(tower.empty, dim=0))
    with pytest.raises(ValueError, match="unknown model.empty_items 'zero'"):
        ItemTower(proj, MeanFusion(("image",), 16), 16, num_items=3, empty_items="zero")


def test_sequential_tower_is_causal_and_ignores_padding():
    from mmrec.models.towers import SequentialUserTower

    torch.manual_seed(0)
    tower = SequentialUserTower(16, history_length=5, num_users=3, layers=2, heads=2).eval()
    hist = torch.randn(2, 5, 16)
    mask = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    out = tower(hist, mask, torch.arange(2))
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    changed = hist.clone()
    changed[0, :2] = 99.0  # padded positions
    torch.testing.assert_close(tower(changed, mask, torch.arange(2)), out)
    empty = tower(hist, torch.zeros(2, 5, dtype=torch.bool), torch.arange(2))
    assert torch.isfinite(empty).all()  # no history: the start token alone
    changed = hist.clone()
    changed[1, 1] += torch.randn(16)  # an earlier real item still reaches the last position
    assert not torch.allclose(tower(changed, mask, torch.arange(2))[1], out[1])


class _AttentionPool(nn.Module):
    """A pooled encoder whose fully masked rows would come out NaN (PyTorch attention does that)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attention(x[:, :1], x, x, key_padding_mask=~mask, need_weights=False)[0][:, 0]


def test_modality_encoder_zeroes_absent_rows_without_nan_gradients():
    torch.manual_seed(0)
    encoder = ModalityEncoder(_AttentionPool(), 8, mode="full")
    x = torch.randn(4, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    present = torch.tensor([True, False, True, False])
    out = encoder(x, mask, present)
    assert torch.equal(out[~present], torch.zeros(2, 8))
    alone = encoder.encoder(x[present], mask[present])
    torch.testing.assert_close(out[present], alone)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_user_tower_without_history_is_a_user_id_embedding():
    """data.history_length=0: MF-style users from their ID alone; without an ID it is refused."""
    tower = UserTower(dim=8, history_length=0, num_users=5, user_id=True, heads=2).eval()  # no dropout
    users = torch.tensor([0, 1, 0])
    out = tower(torch.zeros(3, 0, 8), torch.zeros(3, 0, dtype=torch.bool), users)
    assert out.shape == (3, 8) and torch.allclose(out[0], out[2]) and not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="model.user_id=true"):
        UserTower(dim=8, history_length=0, num_users=5, user_id=False, heads=2)


def test_sequential_tower_every_position_sees_only_its_past():
    from mmrec.models.towers import SequentialUserTower

    torch.manual_seed(0)
    tower = SequentialUserTower(16, history_length=5, num_users=3, layers=2, heads=2, user_id=True).eval()
    hist = torch.randn(2, 5, 16)
    mask = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    users = torch.tensor([0, 2])
    every = tower.forward_all(hist, mask, users)
    assert every.shape == (2, 5, 16)
    torch.testing.assert_close(every[:, -1], tower(hist, mask, users))  # the last position is the user
    changed = hist.clone()
    changed[:, 3:] += 5.0  # later items leave earlier positions unchanged
    again = tower.forward_all(changed, mask, users)
    torch.testing.assert_close(again[:, :3], every[:, :3])
    assert not torch.allclose(again[:, 3:], every[:, 3:])


def test_towers_without_normalisation_score_by_the_plain_dot_product():
    """model.normalize=false (SASRec's scoring): the same directions as the normalised towers, norms kept."""
    from mmrec.models.towers import SequentialUserTower

    feats, present = features()
    index = torch.arange(10, 15)
    plain = item_tower(item_id=True, normalize=False).eval()(feats, present, index).embedding
    unit = item_tower(item_id=True).eval()(feats, present, index).embedding
    torch.testing.assert_close(nn.functional.normalize(plain, dim=1), unit)
    assert not torch.allclose(plain.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(plain[4], item_tower(item_id=True).id_embedding.weight[14])  # its ID vector as it is
    hist, mask, users = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool), torch.arange(2)
    for tower in (
        lambda normalize: SequentialUserTower(16, 5, 3, layers=1, heads=2, normalize=normalize),
        lambda normalize: UserTower(16, 5, 3, heads=2, normalize=normalize),
    ):
        torch.manual_seed(0)
        plain_user = tower(False).eval()(hist, mask, users)
        torch.manual_seed(0)
        unit_user = tower(True).eval()(hist, mask, users)
        torch.testing.assert_close(nn.functional.normalize(plain_user, dim=1), unit_user)
        assert not torch.allclose(plain_user.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("normalize", [True, False])
def test_model_normalize_reaches_both_towers(normalize: bool, tmp_path):
    from tests.conftest import scientific_id_model

    cfg, model = scientific_id_model(tmp_path, f"model.normalize={normalize}")
    assert model.item_tower.normalize is normalize and model.user_tower.normalize is normalize
    users = model.embed_users(torch.randn(2, 3, cfg.model.dim), torch.ones(2, 3, dtype=torch.bool), torch.arange(2))
    assert torch.allclose(users.norm(dim=1), torch.ones(2)) is normalize


def test_sequential_input_dropout_drops_the_history_embeddings_in_training_only():
    from mmrec.models.towers import SequentialUserTower

    hist, mask, users = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool), torch.arange(2)
    torch.manual_seed(0)
    plain = SequentialUserTower(16, 5, 3, layers=1, heads=2, dropout=0.0)
    torch.manual_seed(0)
    dropped = SequentialUserTower(16, 5, 3, layers=1, heads=2, dropout=0.0, input_dropout=0.5)
    torch.testing.assert_close(dropped.eval()(hist, mask, users), plain.eval()(hist, mask, users))
    plain.train(), dropped.train()
    torch.testing.assert_close(plain(hist, mask, users), plain.eval()(hist, mask, users))  # no other dropout
    assert not torch.allclose(dropped.train()(hist, mask, users), plain(hist, mask, users))


@pytest.mark.parametrize("ffn, width", [("null", 4 * 64), ("96", 96)])
def test_sequential_ffn_width_comes_from_config(tmp_path, ffn, width):
    from tests.conftest import scientific_id_model

    _, model = scientific_id_model(tmp_path, f"model.user_tower.ffn={ffn}", "model.dim=64")
    layers = model.user_tower.transformer.layers
    assert [layer.linear1.out_features for layer in layers] == [width] * len(layers)
    assert [layer.linear2.in_features for layer in layers] == [width] * len(layers)
