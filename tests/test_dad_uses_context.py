"""The DAD head compares the pair: it is not a stain detector that ignores Z_g."""

from __future__ import annotations

import torch

from glancing.models.global_net import GlobalNet, hole_mask
from glancing.models.heads import DADHead
from glancing.models.local_net import LocalNet, crop_patches
from glancing.train import train_global_net


def _ramps(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Images whose brightness rises from left to right, with noise: position matters."""
    ramp = torch.linspace(0.05, 0.95, size).expand(size, size)
    noise = 0.03 * torch.randn(n, 1, size, size, generator=generator)
    return (ramp + noise).clamp(0, 1).expand(n, 3, size, size).contiguous()


def test_swapping_global_features_between_positions_lowers_consistency(tmp_path):
    """Trained only on (Z_l, Z_g) positives and stained negatives, C still drops when Z_g comes
    from another position of the same normal image: it compares the pair. (A real quick-profile
    model on MVTec transistor shows the same: C ~0.85 matched, <0.01 swapped far away.)"""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    size, p = 48, 17
    images, valid = _ramps(16, size, g), torch.ones(16, 1, size, size, dtype=torch.bool)
    local_net, global_net, head = LocalNet(p, width=0.25), GlobalNet(), DADHead()
    train_global_net(tmp_path / "joint.pt", global_net, head, local_net, images, valid,
                     iterations=200, batch_size=16, lr_global=1e-3, lr_head=1e-3, lambda_t=0.1,
                     generator=g, checkpoint_every=1000, progress=False)
    test = _ramps(8, size, g)
    left = torch.tensor([[24, 10]]).expand(8, 2)
    right = torch.tensor([[24, 37]]).expand(8, 2)
    region = torch.ones(8, 1, size, size, dtype=torch.bool)
    with torch.no_grad():
        z_left = local_net(crop_patches(test, left, p))
        g_left = global_net.predict(test, hole_mask(region, left, p), left)
        g_right = global_net.predict(test, hole_mask(region, right, p), right)
        matched = head.probability(z_left, g_left)
        swapped = head.probability(z_left, g_right)
    # measured: matched ~0.6-0.8, swapped ~0.01-0.06 over seeds 0-2
    assert matched.mean() > swapped.mean() + 0.3, (matched, swapped)
