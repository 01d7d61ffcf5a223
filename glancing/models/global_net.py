"""The Global-Net G of GLANCE (Wang et al., CVPR 2021, Sec. 3): ``Z_g = G(I, M0)``.

G sees the whole image ``I`` with the patch masked out by ``M0`` (0 on the hole and on invalid
letterbox padding, 1 elsewhere) and predicts, from the surroundings alone, the 128-d feature
``Z_g`` that the Local-Net computes from the patch's own pixels. It is a small encoder of
partial convolutions (:mod:`glancing.models.partial_conv`): every layer ignores the hole and
shrinks it, so that at the read-out depth the hole has been filled from its surroundings and
nothing of its content can leak in.

Architecture (``widths=(32, 64, 128)``, ``dilations=(1, 3, 6)``, LeakyReLU(0.2) after each
3x3/4x4 layer)::

    stage 1  PConv 3->32    4x4 stride 2                      total stride 2
             mask_pool 2x2                                    total stride 4
    stage 2  PConv 32->64   3x3                               total stride 4
             mask_pool 2x2                                    total stride 8
    stage 3  PConv 64->128  3x3 dilation 1, 3, 6 (three layers)  total stride 8
    head     PConv 128->128 1x1 (no activation)

Feature cell ``k`` is centred on input pixel coordinate ``8 k + 3.5`` (the 4x4 stride-2 stem and
the 2x2 pools keep the grid aligned like ``align_corners=False`` resizing) and sees a receptive
field of 178 x 178 pixels. The dilations 1, 3, 6 reach every cell offset from -10 to 10 (no
gridding) and shrink a hole by 10 cells = 80 pixels per side at stride 8. For the patch sizes
17, 33 and 65, even with the patch in an image corner (context on two sides only), the updated
mask is all ones on the cells around the read-out point already after the second (dilation 3)
layer of stage 3; the dilation-6 layer is margin and more context. ``Z_g`` is read after the
1x1 head, on the last layer's grid.

Cost: about 0.124 GMAC per 128 x 128 image (:meth:`GlobalNet.macs`). It is kept this low
because G runs once per patch position of the sliding-window score map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .partial_conv import PartialConv2d, mask_pool

__all__ = ["GlobalNet", "hole_mask"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hole_mask(
    valid: torch.Tensor, centers: torch.Tensor, patch_size: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Build ``M0``: the valid region minus a ``patch_size`` box at each centre.

    Args:
        valid: ``(B, 1, H, W)`` bool, True on the image, False on letterbox padding.
        centers: ``(B, 2)`` integer ``(y, x)`` pixel indices of the patch centres.
        patch_size: side ``p`` of the box. The box covers rows ``c - p//2 .. c - p//2 + p - 1``
            (``c - p//2 .. c + p//2`` for odd ``p``), clipped to the image; same for columns.

    Returns:
        ``(B, 1, H, W)`` mask, 1 = valid context, 0 = hole or padding.
    """
    if valid.dim() != 4 or valid.shape[1] != 1:
        raise ValueError(f"valid must have shape (B, 1, H, W), got {tuple(valid.shape)}")
    if tuple(centers.shape) != (valid.shape[0], 2):
        raise ValueError(f"centers must have shape (B, 2) = {(valid.shape[0], 2)}, "
                         f"got {tuple(centers.shape)}")
    _, _, height, width = valid.shape
    start = centers.to(valid.device).long() - patch_size // 2  # (B, 2)
    rows = torch.arange(height, device=valid.device)
    cols = torch.arange(width, device=valid.device)
    in_rows = (rows >= start[:, :1]) & (rows < start[:, :1] + patch_size)  # (B, H)
    in_cols = (cols >= start[:, 1:]) & (cols < start[:, 1:] + patch_size)  # (B, W)
    box = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (B, 1, H, W)
    return (valid.bool() & ~box).to(dtype)


class GlobalNet(nn.Module):
    """Global-Net ``G``: ``Z_g = G(I, M0)`` (GLANCE Sec. 3), built from partial convolutions.

    Args:
        out_dim: channels of the feature map, the size of ``Z_g`` (128, that of ``Z_l``).
        widths: channels of the three stages.
        dilations: dilations of the three 3x3 layers of the last stage.
        negative_slope: of the LeakyReLU after every layer but the 1x1 head.
    """

    stride = 8  # total stride of the feature map

    def __init__(
        self,
        out_dim: int = 128,
        widths: tuple[int, int, int] = (32, 64, 128),
        dilations: tuple[int, ...] = (1, 3, 6),
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        c1, c2, c3 = widths
        last_stage = [PartialConv2d(c2, c3, 3, padding=dilations[0], dilation=dilations[0])]
        last_stage += [PartialConv2d(c3, c3, 3, padding=d, dilation=d) for d in dilations[1:]]
        # A mask_pool (stride 2) runs before every stage but the first.
        self.stages = nn.ModuleList([
            nn.ModuleList([PartialConv2d(3, c1, 4, stride=2, padding=1)]),  # pixel k*2+0.5
            nn.ModuleList([PartialConv2d(c1, c2, 3, padding=1)]),
            nn.ModuleList(last_stage),
        ])
        self.head = PartialConv2d(c3, out_dim, 1)
        self.act = nn.LeakyReLU(negative_slope)  # f(0) = 0 keeps the hole at exactly 0
        # Non-persistent: constants, not weights; they follow .to() but stay out of state_dict.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense features of the context.

        Args:
            image: ``(B, 3, S, S)`` in [0, 1] (normalised inside with the ImageNet mean/std).
            mask: ``M0``, ``(B, 1, S, S)``, 1 = valid context, 0 = hole or padding.

        Returns:
            features ``(B, out_dim, S//8, S//8)`` (exactly 0 where the mask is 0) and the
            updated mask ``(B, 1, S//8, S//8)``.
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must have shape (B, 3, S, S), got {tuple(image.shape)}")
        # The first partial conv multiplies by the mask, so hole pixels never enter.
        x = (image - self.mean) / self.std
        mask = mask.to(x.dtype)
        for i, stage in enumerate(self.stages):
            if i:
                x, mask = mask_pool(x, mask)
            for conv in stage:
                x, mask = conv(x, mask)
                x = self.act(x)
        return self.head(x, mask)

    def propagate_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The mask ``forward`` returns, without computing features (Eq. 2 of Liu et al. and
        the pooling rule only): ``(B, 1, H, W)`` -> ``(B, 1, H//8, W//8)``. Cheap."""
        for i, stage in enumerate(self.stages):
            if i:
                mask = F.max_pool2d(mask, 2)  # the rule of mask_pool
            for conv in stage:
                mask = conv.update_mask(mask)
        return self.head.update_mask(mask)

    def feature_coords(self, centers: torch.Tensor) -> torch.Tensor:
        """Input pixel coordinates ``(B, 2)`` ``(y, x)`` -> continuous feature-map coordinates.

        Cell ``k`` covers pixels ``8k .. 8k+7`` and is centred on ``8k + 3.5``, hence
        ``u = (y + 0.5) / 8 - 0.5``.
        """
        return (centers.float() + 0.5) / self.stride - 0.5

    def read_out(self, features: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Sample ``features`` ``(B, C, h, w)`` at pixels ``centers`` ``(B, 2)`` ``(y, x)``.

        Returns ``(B, C)``.

        Bilinear, via :func:`torch.nn.functional.grid_sample` with ``align_corners=False``,
        which maps the normalised coordinate ``g`` to the feature coordinate
        ``((g + 1) * w - 1) / 2``; solving for ``u`` of :meth:`feature_coords` gives
        ``g = (2u + 1) / w - 1``. Points outside the outermost cell centres are clamped to the
        border cells. Reading the mask returned by :meth:`forward` gives 1 where every cell
        that contributes is valid.
        """
        b, _, h, w = features.shape
        u = self.feature_coords(centers).to(features)
        size = torch.tensor([h, w], dtype=features.dtype, device=features.device)
        grid = ((2 * u + 1) / size - 1).flip(-1).view(b, 1, 1, 2)  # grid_sample wants (x, y)
        out = F.grid_sample(features, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out.view(b, -1)

    def readout_filled(self, mask: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: are all 2x2 cells that the bilinear read-out at ``centers`` touches
        valid in ``mask`` ``(B, 1, h, w)`` (the output mask of :meth:`forward`)?"""
        _, _, h, w = mask.shape
        top, left = self.feature_coords(centers).floor().long().to(mask.device).unbind(-1)
        batch = torch.arange(mask.shape[0], device=mask.device)
        filled = torch.ones(mask.shape[0], dtype=torch.bool, device=mask.device)
        for dy in (0, 1):
            for dx in (0, 1):  # grid_sample's border clamping, on the tap indices
                y, x = (top + dy).clamp(0, h - 1), (left + dx).clamp(0, w - 1)
                filled &= mask[batch, 0, y, x] > 0
        return filled

    def predict(
        self, image: torch.Tensor, mask: torch.Tensor, centers: torch.Tensor
    ) -> torch.Tensor:
        """``Z_g = G(I, M0)`` read at the hole centres: ``(B, 3, S, S)``, ``(B, 1, S, S)``,
        ``(B, 2)`` ``(y, x)`` -> ``(B, out_dim)``."""
        features, _ = self(image, mask)
        return self.read_out(features, centers)

    def macs(self, size: int = 128) -> int:
        """Multiply-accumulates of one forward pass on one ``size x size`` image: the sum over
        conv layers of ``k_h k_w C_in/groups C_out H' W'`` (the 1-channel mask convolutions,
        pooling and activations are not counted)."""
        total = 0

        def count(module, _inputs, output):
            nonlocal total
            out = output[0] if isinstance(output, tuple) else output
            kh, kw = module.kernel_size
            total += kh * kw * (module.in_channels // module.groups) * out[0].numel()

        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        handles = [m.register_forward_hook(count) for m in convs]
        try:
            param = next(self.parameters())
            with torch.no_grad():
                self(torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype),
                     torch.ones(1, 1, size, size, device=param.device, dtype=param.dtype))
        finally:
            for handle in handles:
                handle.remove()
        return total
