"""Training the one-pass Global-Net (:class:`~glancing.models.blind_spot.BlindSpotNet`).

The objectives are GLANCE's (Sec. 3.2-3.3), as in :func:`glancing.train.train_global_net`:
``l = l_IAD + lambda_t l_DAD`` with the Local-Net frozen, l_IAD the mean squared distance
between ``Z_l`` and ``Z_g`` and l_DAD the binary cross-entropy of the DAD head on
``(Z_l, Z_g)`` (consistent) against ``(Z_s, Z_g)`` with ``Z_s`` the feature of the same patch
with a stain pasted in. The one difference is where the cost goes: the blind-spot network gives
``Z_g`` at many positions per pass, so each step draws ``positions`` patches per image.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from glancing.data.stains import paste_random_stain
from glancing.models.blind_spot import BlindSpotNet, OnePassGlance
from glancing.models.heads import DADHead
from glancing.models.local_net import LocalNet, crop_patches, sample_centers
from glancing.scoring import ScoreNormalizer
from glancing.train import StageResult, freeze, joint_loss, run_stage

__all__ = ["POSITIONS_PER_IMAGE", "train_blind_spot", "train_one_pass"]

# Patches drawn from each image per step when the one-pass net replaces the Global-Net in a run:
# batch_size // POSITIONS_PER_IMAGE images x POSITIONS_PER_IMAGE positions = batch_size patches,
# as many as the Global-Net sees per step.
POSITIONS_PER_IMAGE = 8


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


def train_one_pass(local_net: LocalNet, train: dict, val: dict, prof, path: Path, device,
                   *, seed: int, progress: bool = True) -> tuple[OnePassGlance, dict]:
    """GLANCE with the one-pass net in place of the Global-Net, trained on one category.

    The budget is the Global-Net's in :func:`glancing.pipeline.run_category`: ``joint_iters``
    steps of ``batch_size`` patches (here ``batch_size // POSITIONS_PER_IMAGE`` images x
    :data:`POSITIONS_PER_IMAGE` positions), the profile's learning rates and ``lambda_t``. The
    score normaliser is then fitted on the validation windows, as the pipeline fits GLANCE's.

    Args:
        local_net: the category's trained (fine-tuned) Local-Net; it stays frozen.
        train, val: stacked splits (:func:`glancing.pipeline.load_split`): ``image``
            ``(N, 3, S, S)``, ``valid`` ``(N, 1, S, S)``, ``box`` ``(N, 4)``.
        prof: the run's :class:`~glancing.config.Profile`.
        path: the training checkpoint (resumable).

    Returns:
        the calibrated model (eval mode, frozen) and ``{"train": s, "calibrate": s}`` seconds.
    """
    p = local_net.patch_size
    images_per_step = max(1, prof.batch_size // POSITIONS_PER_IMAGE)
    torch.manual_seed(seed)
    net = BlindSpotNet(p, local_net.out_dim).to(device)
    head = DADHead(local_net.out_dim).to(device)
    trained = train_blind_spot(
        path, net, head, local_net, train["image"], train["valid"],
        iterations=prof.joint_iters, batch_size=images_per_step, positions=POSITIONS_PER_IMAGE,
        lr_global=prof.lr_global, lr_head=prof.lr_head, lambda_t=prof.lambda_t,
        generator=torch.Generator().manual_seed(seed), checkpoint_every=prof.checkpoint_every,
        progress=progress)
    model = OnePassGlance(local_net, freeze(net), freeze(head),
                          ScoreNormalizer(prof.lambda_s)).to(device).eval()
    started = time.perf_counter()
    scores = [model.window_scores(image.to(device), valid.to(device), box.tolist(), prof.stride)
              for image, valid, box in zip(val["image"], val["valid"], val["box"], strict=True)]
    model.normalizer.fit(torch.cat([s["iad"] for s in scores]).cpu(),
                         torch.cat([s["dad"] for s in scores]).cpu())
    return model, {"train": trained.seconds, "calibrate": time.perf_counter() - started}
