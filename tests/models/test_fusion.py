"""Every fusion: shapes, any subset of modalities, absence invariance, order invariance."""

import itertools
from pathlib import Path

import pytest
import torch
from conftest import CONF, node_config

from mmrec.build import make

FUSIONS = sorted(p.stem for p in (Path(CONF) / "fusion").glob("*.yaml"))


def build_fusion(name, modalities, dim, layers=1, heads=2):
    """A fusion from its shipped YAML, as mmrec.build makes it (attn: shallower and 2 heads here)."""
    overrides = [f"fusion={name}"] + ([f"fusion.layers={layers}", f"fusion.heads={heads}"] if name == "attn" else [])
    return make(node_config("fusion", *overrides), "fusion", modalities=tuple(modalities), dim=dim)


MODS = ("audio", "image", "text")
D = 16


def inputs(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = {m: torch.randn(b, D, generator=g) for m in MODS}
    subsets = [s for r in (1, 2, 3) for s in itertools.combinations(MODS, r)]  # every non-empty subset
    present = {m: torch.tensor([m in subsets[i % len(subsets)] for i in range(b)]) for m in MODS}
    return emb, present


@pytest.mark.parametrize("name", FUSIONS)
def test_shapes_and_weights(name):
    torch.manual_seed(0)
    fusion = build_fusion(name, MODS, D, layers=1, heads=2).eval()
    emb, present = inputs(b=7)
    out = fusion(emb, present)
    assert out.embedding.shape == (7, D) and torch.isfinite(out.embedding).all()
    if out.weights is not None:
        mask = torch.stack([present[m] for m in MODS], 1)
        assert out.weights.shape == (7, 3)
        torch.testing.assert_close(out.weights.sum(1), torch.ones(7))
        assert torch.all(out.weights[~mask] == 0)
    assert (name in ("gated", "late", "mean")) == (out.weights is not None)


@pytest.mark.parametrize("name", FUSIONS)
def test_absent_modality_values_do_not_matter(name):
    torch.manual_seed(0)
    fusion = build_fusion(name, MODS, D, layers=1, heads=2).eval()
    emb, present = inputs(b=7)
    out = fusion(emb, present).embedding
    noisy = {m: torch.where(present[m].unsqueeze(1), emb[m], torch.randn_like(emb[m]) * 100) for m in MODS}
    torch.testing.assert_close(fusion(noisy, present).embedding, out)


@pytest.mark.parametrize("name", FUSIONS)
def test_dict_order_does_not_matter_and_grads_flow(name):
    torch.manual_seed(0)
    fusion = build_fusion(name, ("text", "audio", "image"), D, layers=1, heads=2).eval()
    emb, present = inputs()
    reordered_emb = {m: emb[m] for m in reversed(MODS)}
    reordered_present = {m: present[m] for m in ("image", "text", "audio")}
    torch.testing.assert_close(fusion(reordered_emb, reordered_present).embedding, fusion(emb, present).embedding)
    x = {m: e.clone().requires_grad_() for m, e in emb.items()}
    direction = torch.randn(D, generator=torch.Generator().manual_seed(123))
    (fusion(x, present).embedding * direction).sum().backward()  # a plain sum is constant under LayerNorm
    for m in MODS:
        grad = x[m].grad.abs().sum(1)
        assert torch.all(grad[~present[m]] == 0) and torch.all(grad[present[m]] > 0)


def test_single_present_modality_under_mean_and_late_is_that_modality():
    emb, _ = inputs(b=2)
    present = {
        "audio": torch.tensor([False, False]),
        "image": torch.tensor([True, False]),
        "text": torch.tensor([False, True]),
    }
    mean = build_fusion("mean", MODS, D)(emb, present).embedding
    torch.testing.assert_close(mean, torch.stack([emb["image"][0], emb["text"][1]]))
    late = build_fusion("late", MODS, D)(emb, present).embedding
    torch.testing.assert_close(late.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("name", FUSIONS)
def test_item_with_no_modality_is_an_error(name):
    emb, present = inputs(b=3)
    present = {m: torch.tensor([True, False, True]) for m in MODS}
    with pytest.raises(ValueError, match=r"item row\(s\) \[1\] have none of the modalities"):
        build_fusion(name, MODS, D, layers=1, heads=2)(emb, present)


class MaxFusion(torch.nn.Module):
    """A user's own fusion, defined outside mmrec: the element-wise max over present modalities."""

    def __init__(self, modalities, dim, floor: float = -1e4):
        super().__init__()
        self.modalities, self.floor = tuple(sorted(modalities)), floor

    def forward(self, embeddings, present):
        from mmrec.models.fusion import FusionOutput

        x = torch.stack([embeddings[m].masked_fill(~present[m].unsqueeze(1), self.floor) for m in self.modalities], 1)
        return FusionOutput(x.max(1).values)


def test_a_users_own_fusion_plugs_in_by_target():
    # the shipped option with no options of its own, then the target: fusion=mean fusion._target_=...
    fusion = make(
        node_config("fusion", "fusion=mean", "fusion._target_=test_fusion.MaxFusion", "+fusion.floor=-100.0"),
        "fusion",
        modalities=MODS,
        dim=D,
    )
    assert isinstance(fusion, MaxFusion) and fusion.floor == -100.0
    emb, present = inputs()
    out = fusion(emb, present).embedding
    assert out.shape == (6, D) and torch.equal(out[0], emb["audio"][0])  # row 0 has audio only


def test_unknown_fusion_and_bad_heads():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="Could not find 'fusion/sum'"):
        build_fusion("sum", MODS, D)
    with pytest.raises(ValueError, match="not divisible by fusion.heads=3"):
        build_fusion("attn", MODS, D, heads=3)
    with pytest.raises(ValueError, match="unknown fusion.pool 'max'"):
        make(node_config("fusion", "fusion=attn", "fusion.pool=max"), "fusion", modalities=MODS, dim=D)


def test_attention_pools_cls_or_modality_mean():
    """pool=mean averages the present modalities' output tokens; pool=cls reads the [CLS] token."""
    emb, present = inputs()
    fusion = build_fusion("attn", MODS, D).eval()
    outputs = []
    fusion.transformer.register_forward_hook(lambda _m, _args, out: outputs.append(out))
    mean = fusion(emb, present).embedding
    fusion.pool = "cls"
    cls = fusion(emb, present).embedding
    out, mask = outputs[0], torch.stack([present[m] for m in MODS], dim=1)
    expected = torch.stack([out[i, 1:][mask[i]].mean(0) for i in range(len(out))])
    torch.testing.assert_close(mean, fusion.norm(expected))
    torch.testing.assert_close(cls, fusion.norm(outputs[1][:, 0]))


def xor_accuracy(name: str, steps: int = 150) -> float:
    """Train a fusion plus a fixed user vector to score items by the XOR of an image bit and an
    audio bit (the embedded dataset's cross-modal taste); the share of items ranked on the right side."""
    torch.manual_seed(0)
    fusion = build_fusion(name, ("audio", "image"), D, layers=1, heads=2).eval()  # no dropout: a clean probe
    user = torch.nn.Parameter(torch.randn(D))
    codes = torch.randn(2, 2, D)  # codes[modality][bit]
    bits = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]).repeat(16, 1)
    emb = {"image": codes[0][bits[:, 0]], "audio": codes[1][bits[:, 1]]}
    emb = {m: e + 0.1 * torch.randn_like(e) for m, e in emb.items()}
    present = {m: torch.ones(len(bits), dtype=torch.bool) for m in emb}
    target = (bits[:, 0] ^ bits[:, 1]).float()
    optimiser = torch.optim.Adam([*fusion.parameters(), user], lr=1e-2)
    for _ in range(steps):
        score = fusion(emb, present).embedding @ user
        loss = torch.nn.functional.binary_cross_entropy_with_logits(score, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        score = fusion(emb, present).embedding @ user
    return float(((score > score.median()) == target.bool()).float().mean())


def test_only_non_additive_fusions_learn_a_cross_modal_xor():
    """mean and late add per-modality terms, so their score is additive and cannot separate an XOR;
    attn and concat combine the modalities non-linearly and do."""
    for name in ("attn", "concat"):
        assert xor_accuracy(name) == 1.0, name
    for name in ("mean", "late"):
        assert xor_accuracy(name) <= 0.75, name
