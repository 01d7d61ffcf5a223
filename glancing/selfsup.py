"""A Local-Net trained with no teacher: SimSiam on patches of the training images.

The ImageNet teacher is the one part of GLANCE that needs outside data. This ablation replaces
its distillation (on natural images) and fine-tuning (on the category) by self-supervised
learning on the category's own training images only, with the same number of iterations and the
same batch size, and then trains the Global-Net and DAD head as usual.

The objective is SimSiam (Chen and He, "Exploring Simple Siamese Representation Learning",
CVPR 2021, Algorithm 1): two augmented views x1, x2 of a patch go through the encoder
f = projector(L(.)) and a predictor h; with z = f(x) and q = h(z),

    loss = D(q1, stopgrad(z2)) / 2 + D(q2, stopgrad(z1)) / 2,   D(q, z) = -cos(q, z),

and the stop-gradient is what keeps it from collapsing without negative pairs. Only L is kept;
its 128-d output plays the role of the distilled descriptor. Views (:func:`two_views`): the same
training patch shifted by up to p // 4 pixels, with its own brightness and contrast jitter and a
little pixel noise; no flips or rotations, since the orientation of a texture can be what makes
it normal.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glancing.models.local_net import LocalNet, crop_patches, sample_centers
from glancing.train import StageResult, run_stage

BRIGHTNESS = 0.1  # additive, uniform in [-b, b]
CONTRAST = 0.2  # multiplicative around the patch mean, uniform in [1 - c, 1 + c]
NOISE = 0.02  # std of added Gaussian pixel noise


class SimSiamHead(nn.Module):
    """SimSiam's projector (3 layers, BN) and predictor (bottleneck 2 layers) on L's output.

    Args:
        dim: the Local-Net descriptor length (128); projections have the same length.
        hidden: projector width. The predictor's bottleneck is ``dim // 4`` (SimSiam: 512 of 2048).
    """

    def __init__(self, dim: int = 128, hidden: int = 256) -> None:
        super().__init__()
        self.projector = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, dim, bias=False), nn.BatchNorm1d(dim, affine=False),
        )
        bottleneck = max(1, dim // 4)
        self.predictor = nn.Sequential(
            nn.Linear(dim, bottleneck, bias=False), nn.BatchNorm1d(bottleneck),
            nn.ReLU(inplace=True), nn.Linear(bottleneck, dim),
        )

    def forward(self, descriptors: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, dim)`` L outputs -> projections z and predictions q, both ``(B, dim)``."""
        z = self.projector(descriptors)
        return z, self.predictor(z)


def simsiam_loss(q1: Tensor, z1: Tensor, q2: Tensor, z2: Tensor) -> Tensor:
    """Symmetrised negative cosine with stop-gradient on the targets (SimSiam Eq. 1-2), in
    [-1, 1]; -1 when each prediction points exactly at the other view's projection."""
    return -(F.cosine_similarity(q1, z2.detach(), dim=1).mean()
             + F.cosine_similarity(q2, z1.detach(), dim=1).mean()) / 2


def _jitter(patches: Tensor, generator: torch.Generator) -> Tensor:
    """Per-patch brightness and contrast jitter plus pixel noise, clamped to [0, 1]."""
    n = len(patches)
    shape = (n, 1, 1, 1)
    brightness = (torch.rand(shape, generator=generator) * 2 - 1) * BRIGHTNESS
    contrast = 1 + (torch.rand(shape, generator=generator) * 2 - 1) * CONTRAST
    mean = patches.mean(dim=(1, 2, 3), keepdim=True)
    noise = torch.randn(patches.shape, generator=generator) * NOISE
    return ((patches - mean) * contrast + mean + brightness + noise).clamp(0, 1)


def two_views(images: Tensor, valid: Tensor, patch_size: int,
              generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two augmented views of one random patch per image.

    Args:
        images: ``(B, 3, S, S)`` in [0, 1].  valid: ``(B, 1, S, S)`` bool image region.
        patch_size: p.  generator: all randomness.

    Returns:
        two ``(B, 3, p, p)`` batches: the patch around a random valid centre, each view
        shifted by up to ``p // 4`` pixels (kept inside the image) and jittered independently.
    """
    centers = sample_centers(valid, patch_size, generator, whole_box_valid=True)
    half, shift = patch_size // 2, max(1, patch_size // 4)
    size = torch.tensor(images.shape[-2:])
    views = []
    for _ in range(2):
        moved = centers + torch.randint(-shift, shift + 1, centers.shape, generator=generator)
        moved = torch.minimum(moved.clamp_min(half), size - 1 - half)
        views.append(_jitter(crop_patches(images, moved, patch_size), generator))
    return views[0], views[1]


def train_selfsup(
    path: Path,
    local_net: LocalNet,
    images: Tensor,
    valid: Tensor,
    *,
    iterations: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    checkpoint_every: int,
    progress: bool = True,
) -> StageResult:
    """Train ``local_net`` with SimSiam on patches of ``images (N, 3, S, S)`` (``valid
    (N, 1, S, S)``); resumable like every stage (:func:`glancing.train.run_stage`).

    Each step draws ``batch_size`` images (with replacement), one patch each, two views of it.
    Adam with ``lr`` for L and the head (SimSiam used SGD with a cosine schedule; Adam matches
    the distillation it replaces).
    """
    device = next(local_net.parameters()).device
    head = SimSiamHead(local_net.out_dim).to(device)
    optimizer = torch.optim.Adam(list(local_net.parameters()) + list(head.parameters()), lr=lr)
    p = local_net.patch_size

    def step(_: int) -> dict[str, float]:
        idx = torch.randint(len(images), (batch_size,), generator=generator)
        view1, view2 = two_views(images[idx], valid[idx], p, generator)
        z1, q1 = head(local_net(view1.to(device)))
        z2, q2 = head(local_net(view2.to(device)))
        loss = simsiam_loss(q1, z1, q2, z2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # the output std (per dimension, over the batch) shows a collapse: it goes to 0
        std = F.normalize(z1.detach(), dim=1).std(dim=0).mean()
        return {"loss": loss.item(), "z_std": std.item()}

    return run_stage("selfsup", path, iterations, {"local_net": local_net, "head": head},
                     {"adam": optimizer}, generator, step, checkpoint_every, progress)
