"""A one-pass Global-Net (beyond the paper): ``Z_g`` for every window from one forward pass.

GLANCE's Global-Net sees the image with the window's p x p box cut out, so a score map costs
one pass per window. Here the hole is built into the architecture instead: a *blind-spot*
network whose receptive field at every output position excludes the p x p box around it, so
one pass yields ``Z_g`` for all positions at once. The idea comes from self-supervised
denoising (Laine, Karras, Lehtinen and Aila, "High-Quality Self-Supervised Deep Image
Denoising", NeurIPS 2019), whose four rotated half-plane branches exclude one pixel; here they
are shifted further so that they exclude a whole box.

**Directional branches.** One trunk of *causal* convolutions (:class:`CausalConv2d`, padded
only above, so that output row ``y`` sees input rows ``<= y``) and 2 x 2 poolings sees the
image in four orientations (as is, flipped upside down, transposed, transposed and flipped).
In its own frame each view reads only rows above the box: for a query at ``(y, x)`` with
``h = p // 2``,

- a *ring* term: the full-resolution features of row ``y - h - 1``, columns
  ``x - h - 1 .. x + h + 1`` (the row just above the box), mapped by a linear layer;
- a *middle* term: the stride-4 cell ``floor((y - h - 4) / 4)``;
- a *coarse* term: the stride-8 cell ``floor((y - h - 8) / 8)`` (large context).

At stride ``s`` cell ``i`` depends on rows ``<= s i + s - 1`` only (a causal convolution keeps
this, a 2 x 2 pooling maps it to the next stride), so every term sees rows ``<= y - h - 1``.
Back in the image frame the four views see the half-planes above, below, left and right of the
box, whose union is everything but the box. Two linear layers (1 x 1 convolutions at the query
positions) combine the four views into ``Z_g``.

**Letterboxing.** The network gets the valid-region mask as a fourth input channel, and the
image is zero outside it, so padding says "no image here" as the Global-Net's mask does.

The blind spot is exact (tested: the gradient of ``Z_g`` with respect to the input is zero
inside the box and non-zero just outside it). Training uses the same IAD and DAD objectives as
the Global-Net (:mod:`glancing.train_blind_spot`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glancing.fast_map import local_features_at
from glancing.models.global_net import IMAGENET_MEAN, IMAGENET_STD
from glancing.models.heads import iad_score
from glancing.score_map import window_centers

__all__ = ["BlindSpotNet", "CausalConv2d", "OnePassGlance"]


class CausalConv2d(nn.Conv2d):
    """A ``k x k`` convolution whose output row ``y`` sees input rows ``y - (k-1) d .. y``.

    Zero padding of ``(k - 1) d`` rows above and ``(k - 1) d / 2`` columns on each side, none
    below; the output has the input's size. ``k`` must be odd."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        reach = (kernel_size - 1) * dilation
        self.causal_padding = (reach // 2, reach // 2, reach, 0)  # left, right, top, bottom

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.causal_padding))


class BlindSpotNet(nn.Module):
    """``Z_g`` at any set of positions from one pass, never looking inside the p x p box.

    Args:
        patch_size: p (odd), the side of the box each output ignores.
        out_dim: size of ``Z_g`` (that of the Local-Net's ``Z_l``).
        widths: channels of the trunk at strides 1, 2, 4 and 8.
        ring_dim: size of the ring term after its linear map.
        hidden: width of the layer that combines the four views.
        negative_slope: of the LeakyReLUs.
    """

    def __init__(self, patch_size: int = 33, out_dim: int = 128,
                 widths: tuple[int, int, int, int] = (16, 32, 64, 96), ring_dim: int = 64,
                 hidden: int = 256, negative_slope: float = 0.2) -> None:
        super().__init__()
        if patch_size % 2 != 1 or patch_size < 1:
            raise ValueError(f"patch_size must be odd, got {patch_size}")
        self.patch_size = int(patch_size)
        self.out_dim = int(out_dim)
        c1, c2, c3, c4 = widths
        self.fine = CausalConv2d(4, c1)  # stride 1
        self.stride2 = CausalConv2d(c1, c2)
        self.stride4 = CausalConv2d(c2, c3)
        self.stride8 = nn.ModuleList([CausalConv2d(c3, c4), CausalConv2d(c4, c4, dilation=2),
                                      CausalConv2d(c4, c4, dilation=4)])
        self.ring = nn.Linear(c1 * (self.patch_size + 2), ring_dim)
        view_dim = ring_dim + c3 + c4
        self.combine = nn.Sequential(nn.Linear(4 * view_dim, hidden),
                                     nn.LeakyReLU(negative_slope),
                                     nn.Linear(hidden, out_dim))
        self.act = nn.LeakyReLU(negative_slope)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    # -- the trunk, in a view's own frame -------------------------------------------------------

    def trunk(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, 4, H, W)`` -> fine ``(B, c1, H, W)``, middle ``(B, c3, H/4, W/4)`` and coarse
        ``(B, c4, H/8, W/8)`` maps (sizes floored), each causal from above (module doc)."""
        fine = self.act(self.fine(x))
        x = self.act(self.stride2(F.max_pool2d(fine, 2)))
        middle = self.act(self.stride4(F.max_pool2d(x, 2)))
        x = F.max_pool2d(middle, 2)
        for conv in self.stride8:
            x = self.act(conv(x))
        return fine, middle, x

    def read_view(self, maps: tuple[Tensor, Tensor, Tensor], rows: Tensor, cols: Tensor,
                  batch_index: Tensor) -> Tensor:
        """The view's terms at queries ``(rows, cols)`` ``(N,)`` of its own frame: every term
        reads rows ``<= row - p//2 - 1`` only. Returns ``(N, ring_dim + c3 + c4)``."""
        fine, middle, coarse = maps
        half = self.patch_size // 2
        # Ring: row y - h - 1, columns x - h - 1 .. x + h + 1 (zero outside the image).
        # Padded by h + 1 above and on both sides, row y - h - 1 is padded row y, and column
        # x - h - 1 + k is padded column x + k.
        padded = F.pad(fine, (half + 1, half + 1, half + 1, 0))
        ring_cols = cols[:, None] + torch.arange(self.patch_size + 2, device=rows.device)
        ring = padded[batch_index[:, None], :, rows[:, None], ring_cols]  # (N, p + 2, c1)
        ring = self.ring(ring.transpose(1, 2).flatten(1))
        terms = [ring]
        for grid, step in ((middle, 4), (coarse, 8)):
            cell = torch.div(rows - half - step, step, rounding_mode="floor")  # may be < 0
            col = torch.div(cols, step, rounding_mode="floor").clamp(max=grid.shape[-1] - 1)
            inside = (cell >= 0).to(grid.dtype)[:, None]
            terms.append(grid[batch_index, :, cell.clamp(min=0), col] * inside)
        return torch.cat(terms, dim=1)

    # -- the four views --------------------------------------------------------------------------

    def forward(self, image: Tensor, valid: Tensor, centers: Tensor,
                batch_index: Tensor | None = None) -> Tensor:
        """``Z_g`` at the given centres, one trunk pass per view.

        Args:
            image: ``(B, 3, H, W)`` in [0, 1].
            valid: ``(B, 1, H, W)`` bool (letterbox padding is False).
            centers: ``(N, 2)`` long ``(y, x)`` pixel positions.
            batch_index: ``(N,)`` image of each centre (default: ``centers[n]`` in image n).

        Returns:
            ``(N, out_dim)``.
        """
        if image.dim() != 4 or image.shape[1] != 3 or valid.shape != (image.shape[0], 1,
                                                                        *image.shape[2:]):
            raise ValueError(f"expected image (B, 3, H, W) and valid (B, 1, H, W), got "
                             f"{tuple(image.shape)} and {tuple(valid.shape)}")
        centers = centers.to(image.device).long()
        if batch_index is None:
            batch_index = torch.arange(len(centers), device=image.device)
        batch_index = batch_index.to(image.device).long()
        height, width = image.shape[-2:]
        keep = valid.to(image.dtype)
        x = torch.cat([(image - self.mean) / self.std * keep, keep], dim=1)
        y, xx = centers.unbind(1)
        views = [  # (input in the view's frame, query rows, query columns)
            (x, y, xx),  # above the box
            (x.flip(-2), height - 1 - y, xx),  # below
            (x.transpose(-1, -2), xx, y),  # left
            (x.transpose(-1, -2).flip(-2), width - 1 - xx, y),  # right
        ]
        batch = image.shape[0]
        if height == width:  # one trunk pass for the four views
            maps = self.trunk(torch.cat([v[0] for v in views]))
            per_view = [tuple(m[k * batch:(k + 1) * batch] for m in maps) for k in range(4)]
        else:
            per_view = [self.trunk(v[0]) for v in views]
        terms = [self.read_view(m, rows, cols, batch_index)
                 for m, (_, rows, cols) in zip(per_view, views, strict=True)]
        return self.combine(torch.cat(terms, dim=1))

    def macs(self, size: int = 128, positions: int | None = None) -> int:
        """Multiply-accumulates of one pass on one ``size x size`` image that reads ``Z_g``
        at ``positions`` points (default: one per pixel of a stride-4 grid)."""
        if positions is None:
            positions = (size // 4) ** 2
        total = 0

        def count(module, _inputs, output):
            nonlocal total
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                total += kh * kw * module.in_channels // module.groups * output.numel()
            else:
                total += module.in_features * output.shape[-1] * output.shape[0]

        layers = [m for m in self.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        handles = [m.register_forward_hook(count) for m in layers]
        param = next(self.parameters())
        half = self.patch_size // 2
        lin = torch.linspace(half, size - 1 - half, max(1, round(positions ** 0.5)))
        grid = torch.stack(torch.meshgrid(lin, lin, indexing="ij"), -1).reshape(-1, 2).long()
        try:
            with torch.no_grad():
                self(torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype),
                     torch.ones(1, 1, size, size, dtype=torch.bool, device=param.device),
                     grid, torch.zeros(len(grid), dtype=torch.long))
        finally:
            for handle in handles:
                handle.remove()
        return total


class OnePassGlance(nn.Module):
    """GLANCE with the blind-spot net in place of the Global-Net: scores every window from one
    pass. Same Local-Net, the same two heads (IAD distance, a DAD head trained with it) and the
    same validation-quantile normaliser as :class:`~glancing.models.glance.Glance`."""

    def __init__(self, local_net, blind_net: BlindSpotNet, dad_head, normalizer) -> None:
        super().__init__()
        if local_net.patch_size != blind_net.patch_size:
            raise ValueError(f"the blind spot ({blind_net.patch_size}) must match the "
                             f"Local-Net's patch ({local_net.patch_size})")
        self.local_net = local_net
        self.blind_net = blind_net
        self.dad_head = dad_head
        self.normalizer = normalizer

    @property
    def patch_size(self) -> int:
        return self.local_net.patch_size

    @torch.no_grad()
    def window_scores(self, image: Tensor, valid: Tensor, box, stride: int) -> dict[str, Tensor]:
        """Raw IAD and DAD scores of every window, as ``Glance.window_scores`` returns them:
        ``(3, S, S)``, ``(1, S, S)`` -> ``{"centers": (N, 2), "iad": (N,), "dad": (N,)}``."""
        centers = window_centers(box, self.patch_size, stride).to(image.device)
        z_local = local_features_at(self.local_net, image, centers)
        z_global = self.blind_net(image[None], valid[None], centers,
                                  torch.zeros(len(centers), dtype=torch.long))
        return {"centers": centers, "iad": iad_score(z_local, z_global),
                "dad": self.dad_head.score(z_local, z_global)}
