"""GLANCE as one module: the trained networks and the per-patch scorer (the reference).

For every window of the sliding grid (:mod:`glancing.score_map`) the scorer crops the patch for
the Local-Net (Z_l = L(p)), hides it from the Global-Net (Z_g = G(I, M0), read at the hole's
centre), and scores the pair with both heads. This is the paper's procedure: one Global-Net pass
per window, batched over windows. Faster versions must reproduce its maps.
"""

from __future__ import annotations

import torch
from torch import nn

from glancing.models.global_net import GlobalNet, hole_mask
from glancing.models.heads import DADHead, iad_score
from glancing.models.local_net import LocalNet, crop_patches
from glancing.score_map import assemble, window_centers
from glancing.scoring import ScoreNormalizer, head_maps


class Glance(nn.Module):
    """L, G, the DAD head and the score normaliser, ready to score images."""

    def __init__(self, local_net: LocalNet, global_net: GlobalNet, dad_head: DADHead,
                 normalizer: ScoreNormalizer | None = None) -> None:
        super().__init__()
        self.local_net = local_net
        self.global_net = global_net
        self.dad_head = dad_head
        self.normalizer = normalizer or ScoreNormalizer()

    @property
    def patch_size(self) -> int:
        return self.local_net.patch_size

    @torch.no_grad()
    def window_scores(self, image: torch.Tensor, valid: torch.Tensor, box, stride: int,
                      batch_size: int = 64) -> dict[str, torch.Tensor]:
        """Raw head scores of every window of one image.

        Args:
            image: ``(3, S, S)`` in [0, 1].  valid: ``(1, S, S)`` bool.
            box: the image region (top, left, height, width) to tile.
            stride: the window grid's step.  batch_size: windows per Global-Net pass.

        Returns:
            ``{"centers": (N, 2), "iad": (N,), "dad": (N,)}`` (raw, not normalised).
        """
        device = image.device
        p = self.patch_size
        centers = window_centers(box, p, stride).to(device)
        s_iad, s_dad = [], []
        for chunk in centers.split(batch_size):
            n = len(chunk)
            images = image[None].expand(n, -1, -1, -1)
            z_local = self.local_net(crop_patches(images, chunk, p))
            mask = hole_mask(valid[None].expand(n, -1, -1, -1), chunk, p)
            z_global = self.global_net.predict(images, mask, chunk)
            s_iad.append(iad_score(z_local, z_global))
            s_dad.append(self.dad_head.score(z_local, z_global))
        return {"centers": centers, "iad": torch.cat(s_iad), "dad": torch.cat(s_dad)}

    @torch.no_grad()
    def score_maps(self, image: torch.Tensor, valid: torch.Tensor, box, stride: int,
                   batch_size: int = 64, lambda_s: float | None = None) -> dict[str, torch.Tensor]:
        """Normalised ``(S, S)`` maps ``{"iad", "dad", "combined"}`` of one image.

        Each head's window scores are normalised with the validation quantiles, then averaged
        per pixel over the windows covering it; the combined map is
        lambda_s * IAD + (1 - lambda_s) * DAD (equal to combining per window, since the per-pixel
        mean is linear). Pixels outside ``box`` are 0.
        """
        scores = self.window_scores(image, valid, box, stride, batch_size)
        return self.maps_from_scores(scores, tuple(image.shape[-2:]), lambda_s)

    def maps_from_scores(self, scores: dict[str, torch.Tensor], size: tuple[int, int],
                         lambda_s: float | None = None) -> dict[str, torch.Tensor]:
        """Assemble :meth:`window_scores` output into normalised ``(H, W)`` maps."""
        return head_maps(self.normalizer, scores, self.patch_size, size, lambda_s, assemble)
