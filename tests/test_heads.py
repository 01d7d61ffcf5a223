"""IAD and DAD heads, and the combination of their scores."""

from __future__ import annotations

import torch

from glancing.models.heads import DADHead, iad_score
from glancing.scoring import ScoreNormalizer


def test_iad_score_is_the_mean_squared_difference():
    z_l = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    z_g = torch.tensor([[1.0, 0.0], [3.0, 1.0]])
    assert torch.equal(iad_score(z_l, z_g), torch.tensor([2.0, 5.0]))


def test_dad_head_shapes_and_range():
    head = DADHead(dim=16)
    z = torch.randn(5, 16)
    assert head(z, z).shape == (5,)
    p = head.probability(z, torch.randn(5, 16))
    assert ((0 <= p) & (p <= 1)).all()
    assert torch.allclose(head.score(z, z), 1 - head.probability(z, z))


def test_dad_head_overfits_consistent_vs_stained_pairs():
    """Tiny overfit: the comparator learns which local feature matches the global one."""
    torch.manual_seed(0)
    head = DADHead(dim=8, hidden=32)
    z_g = torch.randn(64, 8)
    z_pos = z_g + 0.05 * torch.randn(64, 8)
    z_neg = torch.randn(64, 8)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    bce = torch.nn.BCEWithLogitsLoss()
    for _ in range(200):
        logits = torch.cat([head(z_pos, z_g), head(z_neg, z_g)])
        labels = torch.cat([torch.ones(64), torch.zeros(64)])
        loss = bce(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert head.probability(z_pos, z_g).min() > head.probability(z_neg, z_g).max()


def test_normalizer_puts_validation_quantiles_at_0_and_1_and_survives_state_dict():
    val_iad = torch.linspace(0, 100, 1001)
    val_dad = torch.linspace(0, 0.01, 1001)
    norm = ScoreNormalizer(lambda_s=0.5).fit(val_iad, val_dad)
    assert torch.allclose(norm.normalize("iad", torch.tensor([50.0, 99.0])),
                          torch.tensor([0.0, 1.0]), atol=1e-5)
    assert torch.allclose(norm.normalize("dad", torch.tensor([0.005, 0.0099])),
                          torch.tensor([0.0, 1.0]), atol=1e-4)
    loaded = ScoreNormalizer()
    loaded.load_state_dict(norm.state_dict())
    s = loaded.combine(torch.tensor([99.0]), torch.tensor([0.005]), lambda_s=0.5)
    assert torch.allclose(s, torch.tensor([0.5]), atol=1e-4)


def test_a_head_constant_on_validation_normalises_to_zero_not_nan():
    # a saturated DAD comparator (every window 1.0) once gave 0 / 0 in the float32 buffers
    val_iad, val_dad = torch.linspace(0, 100, 1001), torch.ones(1001)
    norm = ScoreNormalizer(lambda_s=0.8).fit(val_iad, val_dad)
    dad = norm.normalize("dad", torch.ones(5))
    assert torch.isfinite(dad).all() and (dad == 0).all()
    combined = norm.combine(torch.tensor([99.0]), torch.tensor([1.0]))
    assert torch.allclose(combined, torch.tensor([0.8]), atol=1e-4)
