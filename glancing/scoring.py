"""The combined score s = lambda_s s_IAD + (1 - lambda_s) s_DAD (GLANCE Sec. 3.4).

s_IAD is a squared distance with no fixed scale; s_DAD is a probability in [0, 1]. Added raw,
whichever is numerically larger would dominate, so lambda_s would mean little. We bring both to a
common scale first, using the *validation* split (normal training images held out from training;
never the test set): each head's scores on the validation windows give a median q50 and a 99th
percentile q99, and

    s_head' = (s_head - q50) / (q99 - q50),

so that on normal patches both heads sit near 0 and reach 1 at their 99th percentile. This is the
quantile normalisation EfficientAD uses to combine its two maps (Batzner et al., WACV 2024),
applied here per head. The statistics are buffers: a saved model scores the same after loading.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

HEADS = ("iad", "dad")


SPREAD_FLOOR = 1e-6  # relative; float32 resolves 1.2e-7, so q99 - q50 stays above 0


class ScoreNormalizer(nn.Module):
    """Per-head validation quantiles, and the combination of the two heads."""

    def __init__(self, lambda_s: float = 0.8) -> None:
        super().__init__()
        self.lambda_s = lambda_s
        for head in HEADS:
            self.register_buffer(f"{head}_q50", torch.tensor(0.0))
            self.register_buffer(f"{head}_q99", torch.tensor(1.0))

    @torch.no_grad()
    def fit(self, iad_val: torch.Tensor, dad_val: torch.Tensor) -> ScoreNormalizer:
        """Set the quantiles from the validation windows' scores (any shape)."""
        for head, values in zip(HEADS, (iad_val, dad_val), strict=True):
            values = values.flatten().double()
            q50, q99 = torch.quantile(values, torch.tensor([0.5, 0.99], dtype=values.dtype))
            # a head that is constant on the validation windows (a saturated DAD comparator,
            # say) has no spread to divide by: give it one the float32 buffers can hold, so that
            # it normalises to 0 where it is constant instead of to NaN
            spread = max(float(q99 - q50), SPREAD_FLOOR * max(abs(float(q50)), 1.0))
            getattr(self, f"{head}_q50").fill_(float(q50))
            getattr(self, f"{head}_q99").fill_(float(q50) + spread)
        return self

    def normalize(self, head: str, scores: torch.Tensor) -> torch.Tensor:
        q50, q99 = getattr(self, f"{head}_q50"), getattr(self, f"{head}_q99")
        return (scores - q50) / (q99 - q50)

    def combine(self, s_iad: torch.Tensor, s_dad: torch.Tensor,
                lambda_s: float | None = None) -> torch.Tensor:
        """s = lambda_s s_IAD' + (1 - lambda_s) s_DAD', on normalised heads."""
        lam = self.lambda_s if lambda_s is None else lambda_s
        return lam * self.normalize("iad", s_iad) + (1 - lam) * self.normalize("dad", s_dad)


def head_maps(normalizer: ScoreNormalizer, scores: dict[str, torch.Tensor], patch_size: int,
              size: tuple[int, int], lambda_s: float | None, assemble: Callable
              ) -> dict[str, torch.Tensor]:
    """Normalised ``(H, W)`` maps ``{"iad", "dad", "combined"}`` from one image's window scores.

    Each head's window scores (``scores["iad"]``, ``scores["dad"]``, windows at
    ``scores["centers"]``) are normalised, then averaged per pixel by ``assemble``
    (:func:`glancing.score_map.assemble`, or its vectorised twin ``assemble_fast``); the
    combined map is lambda_s * IAD + (1 - lambda_s) * DAD, equal to combining per window since
    the per-pixel mean is linear.
    """
    maps = {head: assemble(normalizer.normalize(head, scores[head]), scores["centers"],
                           patch_size, size) for head in HEADS}
    lam = normalizer.lambda_s if lambda_s is None else lambda_s
    maps["combined"] = lam * maps["iad"] + (1 - lam) * maps["dad"]
    return maps
