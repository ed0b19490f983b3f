"""The whitened mixture-of-experts adaptor against a per-expert reference computation."""

import pytest
import torch

from mmrec.models.adaptors import WhitenedMoE


def test_each_item_is_the_gate_weighted_sum_of_its_whitened_experts():
    torch.manual_seed(0)
    moe = WhitenedMoE(in_dim=12, dim=5, dropout=0.0, experts=3).eval()
    with torch.no_grad():  # away from the zero init, so the gate and the centres matter
        moe.centre.normal_()
        moe.gate.normal_()
    x = torch.randn(4, 12)
    weights = (x @ moe.gate).softmax(-1)  # (4, 3)
    expected = sum(weights[:, k : k + 1] * ((x - moe.centre[k]) @ moe.maps[k]) for k in range(3))
    torch.testing.assert_close(moe(x), expected)
    assert torch.equal(moe(x), moe(x))  # no gate noise outside training


def test_training_adds_gate_noise_and_every_part_gets_a_gradient():
    torch.manual_seed(0)
    moe = WhitenedMoE(in_dim=6, dim=4, dropout=0.0, experts=2).train()
    x = torch.randn(8, 6)
    assert not torch.equal(moe(x), moe(x))  # noisy gating: two draws differ
    moe(x).pow(2).sum().backward()
    for name, p in moe.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="experts must be at least 1"):
        WhitenedMoE(6, 4, experts=0)
