"""Training the one-pass Global-Net (:class:`~glancing.models.blind_spot.BlindSpotNet`).

The objectives are GLANCE's (Sec. 3.2-3.3), as in :func:`glancing.train.train_global_net`:
``l = l_IAD + lambda_t l_DAD`` with the Local-Net frozen, l_IAD the mean squared distance
between ``Z_l`` and ``Z_g`` and l_DAD the binary cross-entropy of the DAD head on
``(Z_l, Z_g)`` (consistent) against ``(Z_s, Z_g)`` with ``Z_s`` the feature of the same patch
with a stain pasted in. The one difference is where the cost goes: the blind-spot network gives
``Z_g`` at many positions per pass, so each step draws ``positions`` patches per image.
"""

from __future__ import annotations

from pathlib import Path

import torch

from glancing.data.stains import paste_random_stain
from glancing.models.blind_spot import BlindSpotNet
from glancing.models.heads import DADHead
from glancing.models.local_net import LocalNet, crop_patches, sample_centers
from glancing.train import StageResult, freeze, joint_loss, run_stage

__all__ = ["train_blind_spot"]


def train_blind_spot(
    path: Path,
    net: BlindSpotNet,
    dad_head: DADHead,
    local_net: LocalNet,
    images: torch.Tensor,
    valid: torch.Tensor,
    *,
    iterations: int,
    batch_size: int,
    positions: int,
    lr_global: float,
    lr_head: float,
    lambda_t: float,
    generator: torch.Generator,
    checkpoint_every: int,
    progress: bool = True,
) -> StageResult:
    """Joint training of the blind-spot net and its DAD head on normal images.

    Args:
        path: the final checkpoint (resumable, see :func:`glancing.train.run_stage`).
        images: ``(N, 3, S, S)`` normal training images; ``valid``: ``(N, 1, S, S)`` bool.
        batch_size: images per step; ``positions``: patches per image per step.
        Others: as :func:`glancing.train.train_global_net`.
    """
    freeze(local_net)
    device = next(net.parameters()).device
    p = local_net.patch_size
    if net.patch_size != p:
        raise ValueError(f"the blind spot ({net.patch_size}) must match the Local-Net's "
                         f"patch ({p})")
    optimizer = torch.optim.Adam([
        {"params": net.parameters(), "lr": lr_global},
        {"params": dad_head.parameters(), "lr": lr_head},
    ])

    def step(_: int) -> dict[str, float]:
        idx = torch.randint(len(images), (batch_size,), generator=generator)
        image, region = images[idx].to(device), valid[idx].to(device)
        index = torch.arange(batch_size).repeat_interleave(positions)
        centers = sample_centers(region.cpu()[index], p, generator, whole_box_valid=True)
        index, centers = index.to(device), centers.to(device)
        with torch.no_grad():
            patch = crop_patches(image, centers, p, index)
            stained, _ = paste_random_stain(patch, generator)
            z_local = local_net(patch)
            z_stained = local_net(stained)
        z_global = net(image, region, centers, index)
        loss, terms = joint_loss(z_local, z_stained, z_global, dad_head, lambda_t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return terms

    return run_stage("blind_spot", path, iterations, {"blind_spot": net, "dad_head": dad_head},
                     {"adam": optimizer}, generator, step, checkpoint_every, progress)
