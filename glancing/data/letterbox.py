"""Bring an image of any aspect ratio to the square network input without distorting it.

Most benchmarks (MVTec AD) are square, but the Magnetic Tile photographs are not: 398 of them are
more than twice as tall as wide. Stretching them to a square would squash cracks and blowholes into
shapes never seen in training. We *letterbox* instead: scale the image so that its long side fits
the input side, keeping the aspect ratio, centre it, and pad the rest. A ``valid`` mask marks the
image region; padding is never scored and never counted by the metrics, and the Global-Net's
partial convolutions treat it as a hole. For a square image letterboxing is a plain resize.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF


class Box(NamedTuple):
    """Where the image sits inside the square input: top, left, height, width (pixels)."""

    top: int
    left: int
    height: int
    width: int


def letterbox_box(height: int, width: int, size: int) -> Box:
    """The region an ``height x width`` image occupies after letterboxing to ``size x size``."""
    scale = size / max(height, width)
    new_h = min(size, max(1, round(height * scale)))
    new_w = min(size, max(1, round(width * scale)))
    return Box((size - new_h) // 2, (size - new_w) // 2, new_h, new_w)


def letterbox(
    image: torch.Tensor, size: int, *, nearest: bool = False
) -> tuple[torch.Tensor, torch.Tensor, Box]:
    """Letterbox one image (or mask) into a ``size x size`` canvas.

    Args:
        image: ``(C, H, W)`` tensor, any dtype.
        size: side of the square output.
        nearest: resize with nearest neighbour (for masks, so they stay binary);
            otherwise bilinear with antialiasing.

    Returns:
        ``(C, size, size)`` image padded with zeros, ``(1, size, size)`` bool valid-region mask,
        and the :class:`Box` of the image inside the canvas.
    """
    _, height, width = image.shape
    box = letterbox_box(height, width, size)
    mode = InterpolationMode.NEAREST if nearest else InterpolationMode.BILINEAR
    resized = TF.resize(image, [box.height, box.width], interpolation=mode, antialias=not nearest)
    canvas = image.new_zeros((image.shape[0], size, size))
    canvas[:, box.top : box.top + box.height, box.left : box.left + box.width] = resized
    valid = torch.zeros((1, size, size), dtype=torch.bool)
    valid[:, box.top : box.top + box.height, box.left : box.left + box.width] = True
    return canvas, valid, box


def unletterbox(score_map: torch.Tensor, box: Box, height: int, width: int) -> torch.Tensor:
    """Cut the image region out of a ``(..., S, S)`` map and resize it to ``height x width``.

    Used to show a score map over the original photograph; bilinear, as for score maps.
    """
    crop = score_map[..., box.top : box.top + box.height, box.left : box.left + box.width]
    flat = crop.reshape(-1, 1, box.height, box.width).float()
    out = torch.nn.functional.interpolate(flat, size=(height, width), mode="bilinear",
                                          align_corners=False)
    return out.reshape(*score_map.shape[:-2], height, width)
