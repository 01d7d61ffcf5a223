"""PatchCore-like baseline: a coreset memory bank of patch features, nearest-neighbour distance.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022, Sec. 3:

1. locally aware patch features (Sec. 3.1): mid-level teacher features (ResNet's layer2 and
   layer3; here the stages of input stride 8 and 16 of our teacher,
   :meth:`glancing.teachers.Teacher.pyramid`), each averaged over a 3 x 3 neighbourhood
   (Eq. 2, aggregation size p = 3), the coarser one upsampled bilinearly to the finer grid and
   concatenated (40 + 112 = 152 channels for EfficientNet-Lite0);
2. a memory bank M of the patch features of all training images, reduced by greedy coreset
   subsampling (Sec. 3.2, Algorithm 1): repeatedly add the feature farthest from the chosen
   set, distances measured after a random linear projection to 128 dimensions
   (Johnson-Lindenstrauss) to make the selection cheaper;
3. the score of a test patch is its distance to the nearest neighbour in M (Eq. 6); the map is
   upsampled bilinearly to the image and smoothed with a Gaussian of sigma 4 px (at 256 px,
   scaled here); the image score is its maximum (the protocol of :mod:`glancing.metrics`;
   the paper's re-weighting of Eq. 7 is left out).

Only positions whose centre is in the image region (not letterbox padding) enter the bank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from glancing.baselines.padim import SIGMA_AT_256, smooth_maps
from glancing.teachers import Teacher

PATCHCORE_STRIDES = (8, 16)
PROJECTION_DIM = 128  # Sec. 3.2: random projection before the greedy selection
# The greedy selection costs (bank candidates) x (kept) distances: a cap keeps large training
# sets affordable on a CPU (Magnetic Tile: 177k candidates at 128 px).
MAX_BANK = 4096


def greedy_coreset(features: Tensor, count: int, generator: torch.Generator,
                   projection_dim: int = PROJECTION_DIM) -> Tensor:
    """Indices of ``count`` rows chosen by greedy k-center selection (PatchCore Algorithm 1).

    Args:
        features: ``(N, C)`` memory-bank candidates.
        count: how many to keep (``1 <= count <= N``).
        generator: draws the random projection and the first centre.
        projection_dim: dimension of the random Gaussian projection used for the distances
            (skipped when ``C`` is not larger).

    Returns:
        ``(count,)`` long indices into ``features``, in the order they were chosen.
    """
    n, channels = features.shape
    if not 1 <= count <= n:
        raise ValueError(f"count must be in [1, {n}], got {count}")
    x = features.float()
    if channels > projection_dim:
        projection = torch.randn(channels, projection_dim, generator=generator)
        x = x @ (projection / projection_dim**0.5).to(x.device)
    chosen = torch.empty(count, dtype=torch.long)
    chosen[0] = torch.randint(n, (1,), generator=generator)
    nearest = torch.cdist(x, x[chosen[:1]])[:, 0]  # distance to the chosen set
    for k in range(1, count):
        chosen[k] = torch.argmax(nearest)
        nearest = torch.minimum(nearest, torch.cdist(x, x[chosen[k:k + 1]])[:, 0])
    return chosen


def nearest_distance(queries: Tensor, bank: Tensor, chunk: int = 4096) -> Tensor:
    """Euclidean distance from each ``(Q, C)`` query to its nearest ``(M, C)`` bank row,
    ``torch.cdist`` in chunks of queries so that memory stays at ``chunk * M`` floats."""
    return torch.cat([torch.cdist(part, bank).min(dim=1).values for part in queries.split(chunk)])


class PatchCore:
    """Coreset memory bank of locally aggregated mid-level teacher features.

    Args:
        teacher: the frozen teacher.
        coreset_ratio: share of the training patch features kept (the paper: 1 % to 25 %; 10 %
            by default here, since our 128 px images give few patches per image).
        max_bank: the most features kept, whatever the ratio (:data:`MAX_BANK`).
        seed: the seed of the projection and the first coreset centre.
        batch_size: images per teacher pass.
    """

    name = "patchcore"

    def __init__(self, teacher: Teacher, coreset_ratio: float = 0.1, seed: int = 0,
                 batch_size: int = 8, max_bank: int = MAX_BANK) -> None:
        if not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        self.teacher = teacher
        self.coreset_ratio = coreset_ratio
        self.seed = seed
        self.batch_size = batch_size
        self.max_bank = max_bank
        self.bank: Tensor | None = None  # (M, C)

    def embed(self, images: Tensor) -> Tensor:
        """``(N, 3, S, S)`` -> ``(N, C, S/8, S/8)`` locally aggregated patch features (Eq. 2)."""
        out = []
        for batch in images.split(self.batch_size):
            maps = self.teacher.pyramid(batch, PATCHCORE_STRIDES)
            size = maps[PATCHCORE_STRIDES[0]].shape[-2:]
            parts = []
            for m in maps.values():
                m = F.avg_pool2d(m, 3, stride=1, padding=1, count_include_pad=False)
                if m.shape[-2:] != size:
                    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                parts.append(m)
            out.append(torch.cat(parts, dim=1).cpu())
        return torch.cat(out)

    def fit(self, images: Tensor, valid: Tensor | None = None, val_images: Tensor | None = None,
            val_valid: Tensor | None = None) -> PatchCore:
        """Build the memory bank from normal ``(N, 3, S, S)`` images; ``valid (N, 1, S, S)``
        keeps padding positions out of the bank. The validation images are unused."""
        features = self.embed(images)  # (N, C, h, w)
        x = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        if valid is not None:
            keep = F.interpolate(valid.float(), size=features.shape[-2:], mode="nearest") > 0.5
            x = x[keep.permute(0, 2, 3, 1).reshape(-1)]
        count = min(self.max_bank, max(1, round(self.coreset_ratio * len(x))))
        generator = torch.Generator().manual_seed(self.seed)
        self.bank = x[greedy_coreset(x, count, generator)] if count < len(x) else x
        return self

    def score_maps(self, images: Tensor, valid: Tensor | None = None) -> Tensor:
        """Nearest-neighbour distance maps of ``(N, 3, S, S)`` images -> ``(N, S, S)``."""
        if self.bank is None:
            raise RuntimeError("call fit() before score_maps()")
        size = tuple(images.shape[-2:])
        maps = []
        for batch in images.split(self.batch_size):
            features = self.embed(batch)  # (B, C, h, w)
            b, c, h, w = features.shape
            queries = features.permute(0, 2, 3, 1).reshape(-1, c)
            maps.append(nearest_distance(queries, self.bank).reshape(b, 1, h, w))
        fine = F.interpolate(torch.cat(maps), size=size, mode="bilinear", align_corners=False)
        return smooth_maps(fine[:, 0], SIGMA_AT_256 * size[0] / 256)
