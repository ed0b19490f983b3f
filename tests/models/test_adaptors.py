"""The whitened mixture-of-experts adaptor against a per-expert reference computation, and the
catalogue whitening in front of a head."""

import pytest
import torch

from mmrec.models.adaptors import WhitenedMoE, Whitening


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


def correlated(n: int, dim: int, rank: int) -> torch.Tensor:
    """(n, dim) vectors off-centre and crowded into ``rank`` directions of very different spread."""
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(dim, dim)).Q[:, :rank]
    return 3.0 + (torch.randn(n, rank) * torch.logspace(0, -2, rank)) @ basis.T


def test_zca_whitening_gives_the_fitted_vectors_unit_covariance():
    x = correlated(500, 8, 8)
    whitening = Whitening(8, power=0.5)
    whitening.fit(x)
    y = whitening(x).double()
    torch.testing.assert_close(y.mean(0), torch.zeros(8, dtype=torch.double), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(y.T), torch.eye(8, dtype=torch.double), atol=1e-3, rtol=0)
    assert bool(whitening.fitted) and torch.allclose(whitening.matrix, whitening.matrix.T)  # ZCA: symmetric


def test_part_way_whitening_and_directions_the_catalogue_never_varies_along():
    x = correlated(500, 8, 5)  # three directions with no variance at all
    half, full = Whitening(8, power=0.25), Whitening(8, power=0.5)
    half.fit(x), full.fit(x)
    spread = torch.linalg.eigvalsh(torch.cov(x.T.double()))[-5:]  # the five real variances
    torch.testing.assert_close(
        torch.linalg.eigvalsh(torch.cov(half(x).T.double()))[-5:], spread.sqrt(), rtol=1e-3, atol=1e-6
    )
    assert torch.linalg.matrix_rank(full.matrix.double(), rtol=1e-4) == 5
    null = torch.linalg.svd(x - x.mean(0)).Vh[-1]  # a direction no fitted vector moves along
    torch.testing.assert_close(full(full.mean + 10.0 * null), torch.zeros(8), atol=1e-3, rtol=0)


def test_whitening_refuses_a_bad_power_and_too_few_vectors():
    with pytest.raises(ValueError, match=r"model.whiten must be in \(0, 0.5\]"):
        Whitening(4, power=0.7)
    with pytest.raises(ValueError, match="at least 2 item vectors"):
        Whitening(4).fit(torch.ones(1, 4))
