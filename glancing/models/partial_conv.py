"""Partial convolution (Liu et al., "Image Inpainting for Irregular Holes Using Partial
Convolutions", ECCV 2018), in the spirit of NVIDIA's ``models/partialconv2d.py``.

A partial convolution sees an image ``X`` and a binary mask ``M`` (1 = valid, 0 = hole). Each
output is computed from the valid pixels of its window only, re-weighted for how many there were
(Liu et al. 2018, Eq. 1), and the mask is updated so that an output is valid as soon as its window
held one valid pixel (Eq. 2)::

    x' = W^T (X ⊙ M) · sum(1) / sum(M) + b    if sum(M) > 0,   else 0          (Eq. 1)
    m' = 1                                     if sum(M) > 0,   else 0          (Eq. 2)

``sum(1)`` is the window size. The mask has a single channel shared by all input channels, so
``sum(1)`` is the kernel area ``kernel_h * kernel_w`` and ``sum(M)`` counts the valid pixels of
the window; the ratio is 1 where the window is fully valid, so there the layer is a plain
convolution. Stacking partial convolutions shrinks the hole from its border inwards until it is
filled from its surroundings.

Zero padding counts as invalid (the mask is padded with 0, as in the paper), so at the image
border the ratio is above 1 even for an all-ones mask: for a 3x3 kernel with padding 1 it is
9/6 = 1.5 along the edges and 9/4 = 2.25 at the corners. The output there is re-weighted as if
the missing pixels had the mean value of the visible ones, instead of being pulled towards 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PartialConv2d", "mask_pool"]


class PartialConv2d(nn.Conv2d):
    """A :class:`torch.nn.Conv2d` that ignores masked-out pixels (Liu et al. 2018, Eq. 1-2).

    Takes the same arguments as :class:`~torch.nn.Conv2d` (only ``padding_mode="zeros"``), plus
    ``eps``, the smallest window sum ``sum(M)`` divided by. ``state_dict`` holds exactly the keys
    of the plain convolution (``weight``, ``bias``).
    """

    def __init__(self, *args, eps: float = 1e-6, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            # The mask is zero-padded (padding is invalid); other modes would disagree with it.
            raise ValueError(f"PartialConv2d supports padding_mode='zeros' only, "
                             f"got {self.padding_mode!r}")
        # 1e-6, not 1e-8: 1e-8 underflows to 0 in half precision.
        self.eps = eps
        kernel_h, kernel_w = self.kernel_size
        self.window_size = float(kernel_h * kernel_w)  # sum(1), single-channel mask convention
        # Non-persistent: moves with .to()/.half() but stays out of state_dict.
        self.register_buffer("mask_kernel", torch.ones(1, 1, kernel_h, kernel_w),
                             persistent=False)

    def window_sum(self, mask: torch.Tensor) -> torch.Tensor:
        """``sum(M)`` over every window: ``(B, 1, H, W)`` mask -> ``(B, 1, H', W')`` counts."""
        kernel = self.mask_kernel.to(mask.dtype)
        return F.conv2d(mask, kernel, None, self.stride, self.padding, self.dilation)

    def update_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 2 alone: ``(B, 1, H, W)`` mask -> ``(B, 1, H', W')``, 1 iff the window held a
        valid pixel. Cheap; used to trace how a hole is filled without computing features."""
        with torch.no_grad():
            return (self.window_sum(mask) > 0).to(mask.dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply Eq. 1-2.

        Args:
            x: features ``(B, C, H, W)``.
            mask: ``(B, 1, H, W)``, 1 = valid, 0 = hole; one mask per sample.

        Returns:
            ``(B, C', H', W')`` features, exactly 0 where no input pixel was valid, and the
            updated mask ``(B, 1, H', W')`` in the dtype of ``x``.
        """
        _check_mask(x, mask)
        mask = mask.to(x.dtype)
        # The ratio is recomputed on every call, never cached: a cached ratio goes stale as soon
        # as the mask or the batch size changes (partialconv PR 14).
        with torch.no_grad():
            valid_count = self.window_sum(mask)  # sum(M)
            new_mask = (valid_count > 0).to(x.dtype)  # Eq. 2
            # sum(1)/sum(M). The clamps keep a window with a tiny (soft) sum(M) from blowing up:
            # at most the ratio of a single valid pixel, and finite in half precision.
            ratio = self.window_size / valid_count.clamp(min=self.eps)
            ratio = ratio.clamp(max=self.window_size) * new_mask
        out = F.conv2d(x * mask, self.weight, None, self.stride, self.padding, self.dilation,
                       self.groups)
        out = out * ratio
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)  # the bias is not re-weighted
        return out * new_mask, new_mask  # "else 0": holes stay exactly 0, bias included


def _check_mask(x: torch.Tensor, mask: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    b, _, h, w = x.shape
    if tuple(mask.shape) != (b, 1, h, w):
        raise ValueError(f"mask must have shape (B, 1, H, W) = {(b, 1, h, w)}, "
                         f"got {tuple(mask.shape)}")


def mask_pool(
    features: torch.Tensor, mask: torch.Tensor, kernel_size: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool features ``(B, C, H, W)`` and mask ``(B, 1, H, W)`` between partial-conv stages.

    The features are max-pooled normally and the mask becomes the max-pooled binary mask: a
    pooled cell is valid if any of its input cells was. Plain max pooling of the features is
    safe because after a partial convolution (and an activation with ``f(0) = 0``) the features
    at invalid positions are exactly 0 whatever the hole contains, so nothing of the hole leaks
    through; a pooled cell mixing valid and invalid cells sees that constant 0 as one candidate.
    Stride = ``kernel_size``; odd sizes are floored like :func:`torch.nn.functional.max_pool2d`.
    """
    return F.max_pool2d(features, kernel_size), F.max_pool2d(mask, kernel_size)
