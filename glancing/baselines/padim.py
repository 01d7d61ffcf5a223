"""PaDiM-like baseline: one Gaussian per feature-map position, Mahalanobis distance as the score.

Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization", ICPR Workshops 2021 (arXiv:2011.08785), Sec. 3:

1. embed every position of an image with the teacher's intermediate features of three stages,
   the coarser ones upsampled to the finest and concatenated (Sec. 3.1); here the stages of input
   stride 4, 8 and 16 of our teacher (:meth:`glancing.teachers.Teacher.pyramid`; for
   EfficientNet-Lite0 24 + 40 + 112 = 176 channels, for ResNet-18 64 + 128 + 256 = 448);
2. keep a random subset of ``d`` channels (Sec. 4.3 shows random selection works as well as
   PCA; 100 of 448 for ResNet-18);
3. fit a Gaussian N(mu_ij, Sigma_ij) per position (i, j) on the training images, with
   Sigma_ij = sample covariance + eps I, eps = 0.01 (Eq. 1);
4. score a test position by the Mahalanobis distance M(x_ij) = sqrt((x - mu)^T Sigma^-1 (x - mu))
   (Eq. 2), upsample the map to the image size (bilinear) and smooth it with a Gaussian of
   sigma 4 px at 256 px (scaled with the image size here).

Same teacher, image size and images as GLANCE: the letterboxed network input, padding included
(every image shares the same box, so a position's Gaussian sees the same content type).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from glancing.teachers import Teacher

PADIM_STRIDES = (4, 8, 16)
COVARIANCE_EPS = 0.01  # PaDiM Eq. (1)
SIGMA_AT_256 = 4.0  # PaDiM's Gaussian smoothing of the upsampled map


def smooth_maps(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of ``(N, H, W)`` maps (kernel cut at 4 sigma, reflect padding)."""
    if sigma <= 0:
        return maps
    radius = max(1, round(4 * sigma))
    return gaussian_blur(maps[:, None], [2 * radius + 1] * 2, [sigma, sigma])[:, 0]


class PaDiM:
    """A Gaussian per position of the teacher's stride-4 feature map.

    Args:
        teacher: the frozen teacher (:func:`glancing.teachers.build_teacher`).
        channels: ``d``, the number of randomly kept embedding channels (at most the total).
        seed: the random channel subset's seed.
        batch_size: images per teacher pass.
    """

    name = "padim"

    def __init__(self, teacher: Teacher, channels: int = 100, seed: int = 0,
                 batch_size: int = 8) -> None:
        self.teacher = teacher
        self.channels = channels
        self.seed = seed
        self.batch_size = batch_size
        self.index: Tensor | None = None  # (d,) kept channels
        self.mean: Tensor | None = None  # (h*w, d)
        self.precision: Tensor | None = None  # (h*w, d, d), inverse covariances

    def embed(self, images: Tensor) -> Tensor:
        """``(N, 3, S, S)`` -> ``(N, d, S/4, S/4)`` embeddings (all channels until fitted)."""
        out = []
        for batch in images.split(self.batch_size):
            maps = self.teacher.pyramid(batch, PADIM_STRIDES)
            size = maps[PADIM_STRIDES[0]].shape[-2:]
            stacked = torch.cat([F.interpolate(m, size=size, mode="nearest") if m.shape[-2:] != size
                                 else m for m in maps.values()], dim=1)
            out.append(stacked if self.index is None else stacked[:, self.index])
        return torch.cat(out).cpu()

    def fit(self, images: Tensor, valid: Tensor | None = None, val_images: Tensor | None = None,
            val_valid: Tensor | None = None) -> PaDiM:
        """Fit the Gaussians on normal training images ``(N, 3, S, S)``. ``valid`` and the
        validation images are unused (every position has its own Gaussian, padding included;
        nothing is calibrated).

        The sums of x and x x^T are accumulated batch by batch in float64, so a large training
        set (Magnetic Tile: 693 images) never holds all its embeddings at once.
        """
        self.index = None
        total = self.embed(images[:1]).shape[1]
        generator = torch.Generator().manual_seed(self.seed)
        self.index = torch.randperm(total, generator=generator)[: min(self.channels, total)]
        count, first, second = 0, None, None
        for batch in images.split(self.batch_size):
            features = self.embed(batch)  # (B, d, h, w)
            self.grid = tuple(features.shape[-2:])
            x = features.flatten(2).permute(2, 0, 1).double()  # (h*w, B, d)
            first = x.sum(1) if first is None else first + x.sum(1)
            outer = x.transpose(1, 2) @ x
            second = outer if second is None else second + outer
            count += len(batch)
        mean = first / count  # (h*w, d)
        covariance = (second - count * mean[:, :, None] * mean[:, None, :]) / max(count - 1, 1)
        covariance += COVARIANCE_EPS * torch.eye(len(self.index), dtype=covariance.dtype)
        self.mean = mean.float()
        self.precision = torch.linalg.inv(covariance).float()
        return self

    def score_maps(self, images: Tensor, valid: Tensor | None = None) -> Tensor:
        """Mahalanobis maps of ``(N, 3, S, S)`` images -> ``(N, S, S)``, higher = more anomalous.

        ``valid`` is accepted for the common interface; the metrics leave padding out.
        """
        if self.precision is None:
            raise RuntimeError("call fit() before score_maps()")
        size = tuple(images.shape[-2:])
        maps = []
        for batch in images.split(self.batch_size):
            x = self.embed(batch).flatten(2).permute(2, 0, 1)  # (h*w, B, d)
            delta = x - self.mean[:, None]
            squared = torch.einsum("pbd,pde,pbe->bp", delta, self.precision, delta)
            maps.append(squared.clamp_min(0).sqrt().reshape(len(batch), 1, *self.grid))
        coarse = torch.cat(maps)
        fine = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[:, 0]
        return smooth_maps(fine, SIGMA_AT_256 * size[0] / 256)
