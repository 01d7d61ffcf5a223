"""Score maps the paper's way: slide the patch, score each window, average the windows per pixel.

GLANCE (Sec. 3.4) cuts the test image into overlapping patches and gives every patch a score.
The paper leaves the details open; this project fixes them:

1. windows of side p on a grid of stride s, with the last row and column of windows aligned to
   the image border so that every pixel is covered (:func:`window_starts`);
2. each pixel's score is the mean of the scores of all windows that cover it, at the network's
   input resolution (:func:`assemble`);
3. for the metrics, the map is resized bilinearly to the mask's resolution (:func:`resize_map`).

For a letterboxed image only the image region (its :class:`~glancing.data.letterbox.Box`) is
tiled, so no window is centred on padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_starts(length: int, patch_size: int, stride: int, offset: int = 0) -> list[int]:
    """Start indices of windows of ``patch_size`` along an axis of ``length`` pixels.

    A regular grid of ``stride``, plus one last window flush with the far border when the grid
    does not reach it. ``offset`` shifts every start (the letterbox box's top or left).
    """
    if length < patch_size:
        raise ValueError(f"an axis of {length} px cannot hold a window of {patch_size} px")
    starts = list(range(0, length - patch_size + 1, stride))
    if starts[-1] != length - patch_size:
        starts.append(length - patch_size)
    return [offset + s for s in starts]


def window_centers(box, patch_size: int, stride: int) -> torch.Tensor:
    """``(N, 2)`` long tensor of window centres ``(y, x)`` tiling ``box`` (top, left, h, w)."""
    top, left, height, width = (int(v) for v in box)
    ys = window_starts(height, patch_size, stride, top)
    xs = window_starts(width, patch_size, stride, left)
    grid = torch.tensor([(y, x) for y in ys for x in xs], dtype=torch.long)
    return grid + patch_size // 2


def assemble(scores: torch.Tensor, centers: torch.Tensor, patch_size: int,
             size: tuple[int, int]) -> torch.Tensor:
    """Average window scores into a pixel map.

    Args:
        scores: ``(N,)`` one score per window.
        centers: ``(N, 2)`` window centres ``(y, x)``.
        patch_size: p, the window side.
        size: ``(H, W)`` of the map.

    Returns:
        ``(H, W)`` map: each pixel the mean score of the windows covering it; 0 where none does.
    """
    total = scores.new_zeros(size)
    count = scores.new_zeros(size)
    half = patch_size // 2
    for (y, x), score in zip(centers.tolist(), scores, strict=True):
        total[y - half : y - half + patch_size, x - half : x - half + patch_size] += score
        count[y - half : y - half + patch_size, x - half : x - half + patch_size] += 1
    return torch.where(count > 0, total / count.clamp(min=1), total)


def assemble_fast(scores: torch.Tensor, centers: torch.Tensor, patch_size: int,
                  size: tuple[int, int]) -> torch.Tensor:
    """:func:`assemble` without the Python loop; the same map up to float rounding.

    Each window's score is placed at its top-left pixel, and a p x p box sum (separable:
    a column of ones, then a row of ones, as two 1-D convolutions) spreads it over the window;
    the same box sum of ones counts the windows covering each pixel.

    Args and returns: as :func:`assemble` (``centers`` must be distinct windows).
    """
    height, width = size
    half = patch_size // 2
    top_left = centers.to(scores.device).long() - half
    impulses = scores.new_zeros(2, height + patch_size - 1, width + patch_size - 1)
    # Padded by p - 1 on the top and left, so that a "valid" box sum ends at each pixel.
    rows, cols = top_left[:, 0] + patch_size - 1, top_left[:, 1] + patch_size - 1
    impulses[0].index_put_((rows, cols), scores, accumulate=True)
    impulses[1].index_put_((rows, cols), torch.ones_like(scores), accumulate=True)
    ones = scores.new_ones(1, 1, patch_size, 1)
    summed = F.conv2d(impulses[:, None], ones)  # (2, 1, H, W + p - 1)
    summed = F.conv2d(summed, ones.transpose(2, 3))[:, 0]  # (2, H, W)
    total, count = summed[0], summed[1].round()
    return torch.where(count > 0, total / count.clamp(min=1), total.new_zeros(()))


def resize_map(score_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(..., H, W)`` maps to ``size`` (the mask's resolution)."""
    if tuple(score_map.shape[-2:]) == tuple(size):
        return score_map
    flat = score_map.reshape(-1, 1, *score_map.shape[-2:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*score_map.shape[:-2], *size)
