"""Local-Net pretraining losses: distillation, compactness, their sum, teacher statistics."""

from __future__ import annotations

import math

import pytest
import torch

from glancing.losses import (
    RunningDescriptorStats,
    compactness_loss,
    descriptor_stats,
    distillation_loss,
    local_loss,
    normalize_targets,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- teacher statistics -------------------------------------------------------------------------


def test_descriptor_stats_matches_numpy_style_definition():
    targets = torch.randn(200, 7, generator=_gen()) * torch.arange(1, 8) + 5
    targets[:, 3] = 2.0  # a dead dimension
    mean, std = descriptor_stats(targets)
    assert mean.shape == std.shape == (7,)
    torch.testing.assert_close(mean, targets.mean(0))
    expected = ((targets - targets.mean(0)) ** 2).mean(0).sqrt()
    torch.testing.assert_close(std[[0, 1, 2, 4, 5, 6]], expected[[0, 1, 2, 4, 5, 6]])
    assert std[3] == pytest.approx(1e-6)  # clamped, so normalising never divides by zero
    normed = normalize_targets(targets, mean, std)
    assert torch.isfinite(normed).all()
    torch.testing.assert_close(normed[:, 0].std(correction=0), torch.tensor(1.0))


def test_running_stats_equal_one_shot_stats():
    targets = torch.randn(300, 5, generator=_gen(1)) * 4 + 100
    running = RunningDescriptorStats()
    for chunk in (targets[:7], targets[7:7], targets[7:150], targets[150:]):
        running.update(chunk)
    assert running.count == 300
    for got, want in zip(running.compute(), descriptor_stats(targets), strict=True):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError):
        RunningDescriptorStats().compute()


# --- distillation -------------------------------------------------------------------------------


def test_distillation_loss_zero_at_normalised_target_and_correct_value():
    gen = _gen(2)
    target = torch.randn(16, 10, generator=gen) * 3 + 2
    mean, std = descriptor_stats(target)
    exact = (target - mean) / std
    zero = distillation_loss(exact, target, mean, std)
    assert zero.dim() == 0 and zero.item() == pytest.approx(0.0, abs=1e-12)
    # The raw (un-normalised) target is *not* the optimum.
    assert distillation_loss(target, target, mean, std) > 0.5

    decoded = torch.randn(16, 10, generator=gen)
    per_dim = distillation_loss(decoded, target, mean, std)
    summed = distillation_loss(decoded, target, mean, std, reduction="sum")
    manual = ((decoded - exact) ** 2).sum(1).mean()
    torch.testing.assert_close(summed, manual)
    torch.testing.assert_close(per_dim, manual / 10)
    # Predicting the mean of unit-variance targets costs ~1 per dimension whatever D is.
    assert distillation_loss(torch.zeros(16, 10), target, mean, std).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        distillation_loss(decoded, target, mean, std, reduction="max")
    with pytest.raises(ValueError):
        distillation_loss(decoded[:, :5], target, mean, std)


def test_distillation_gradient_reaches_decoded_only():
    target = torch.randn(8, 6, generator=_gen(3)).requires_grad_(True)
    mean, std = descriptor_stats(target.detach())
    decoded = torch.randn(8, 6, generator=_gen(4), requires_grad=True)
    distillation_loss(decoded, target, mean, std).backward()
    assert decoded.grad is not None and decoded.grad.abs().sum() > 0
    assert target.grad is None


# --- compactness --------------------------------------------------------------------------------


def _decorrelated(batch: int, k: int, seed: int = 5) -> torch.Tensor:
    """Columns with zero mean and orthogonal to each other (so correlation = identity)."""
    a = torch.randn(batch, k, generator=_gen(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(0))
    return q


def test_compactness_near_zero_for_decorrelated_features():
    z = _decorrelated(64, 16)
    scaled = z * torch.linspace(0.1, 50, 16, dtype=torch.float64) + 7.0  # scale/shift each dim
    assert compactness_loss(z).item() < 1e-10
    assert compactness_loss(scaled).item() < 1e-10
    assert compactness_loss(scaled, normalize=False).item() < 1e-8


def test_compactness_large_for_correlated_features():
    t = torch.randn(64, 1, generator=_gen(6), dtype=torch.float64)
    signs_and_scales = torch.tensor([1.0, -2.0, 3.0, 0.5, -0.1, 10.0], dtype=torch.float64)
    z = t * signs_and_scales + torch.arange(6, dtype=torch.float64)
    assert compactness_loss(z).item() == pytest.approx(1.0, abs=1e-6)
    assert compactness_loss(z, normalize=False).item() == pytest.approx(30.0, rel=1e-5)
    # Independent random features sit in between, near 1 / B.
    iid = compactness_loss(torch.randn(64, 32, generator=_gen(7), dtype=torch.float64))
    assert 0.3 / 64 < iid.item() < 3.0 / 64


def test_compactness_is_scale_free_and_has_gradients():
    z = torch.randn(32, 8, generator=_gen(8), requires_grad=True)
    loss = compactness_loss(z)
    torch.testing.assert_close(compactness_loss(z.detach() * 1000 - 3), loss.detach(),
                               rtol=1e-4, atol=1e-6)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # A constant dimension does not produce NaN (eps in the std).
    constant = torch.cat([torch.randn(32, 3, generator=_gen(9)), torch.ones(32, 1)], 1)
    assert math.isfinite(compactness_loss(constant.requires_grad_(True)).item())
    with pytest.raises(ValueError):
        compactness_loss(torch.randn(1, 8))


def test_compactness_descent_decorrelates():
    z = (torch.randn(64, 1, generator=_gen(10)) + 0.3 * torch.randn(64, 8, generator=_gen(11)))
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    start = compactness_loss(z).item()
    for _ in range(100):
        opt.zero_grad()
        compactness_loss(z).backward()
        opt.step()
    assert compactness_loss(z).item() < start / 10


# --- combined -----------------------------------------------------------------------------------


def test_local_loss_is_the_weighted_sum():
    gen = _gen(12)
    target = torch.randn(16, 20, generator=gen)
    mean, std = descriptor_stats(target)
    z = torch.randn(16, 12, generator=gen, requires_grad=True)
    decoded = torch.randn(16, 20, generator=gen, requires_grad=True)
    total, l_k, l_c = local_loss(decoded, target, mean, std, z, lambda_k=0.7, lambda_c=3.0,
                                 return_terms=True)
    torch.testing.assert_close(l_k, distillation_loss(decoded, target, mean, std))
    torch.testing.assert_close(l_c, compactness_loss(z))
    torch.testing.assert_close(total, 0.7 * l_k + 3.0 * l_c)
    default = local_loss(decoded, target, mean, std, z)
    assert default.dim() == 0 and torch.isfinite(default)
    torch.testing.assert_close(default, l_k + l_c)
    default.backward()
    assert z.grad.abs().sum() > 0 and decoded.grad.abs().sum() > 0
