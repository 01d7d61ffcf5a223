"""The exact score map, fast: the same networks and the same map as the per-patch reference.

The reference (:meth:`glancing.models.glance.Glance.window_scores`, the paper's procedure) runs
the whole Global-Net once per window: ``Z_g = G(I, M0)`` with the window's p x p box cut out of
``M0``. Almost all of that work repeats the hole-free pass. This module computes the same
numbers while doing only the part that the hole changes and the read-out needs:

1. **One hole-free pass** ``G(I, valid)`` keeps the input of every layer.
2. **Dependency cones.** A layer's output at a cell depends only on its input inside the
   layer's footprint, and partial convolutions (Liu et al. 2018, Eq. 1-2) renormalise by the
   mask *in that footprint* too. So a hole changes features and mask only inside its *forward
   cone*: the box grown by the footprints of the layers so far. And ``Z_g`` is read bilinearly
   from a 2 x 2 block of the last map, so only that block's *backward cone* (its receptive
   field, layer by layer) is ever needed. Per layer and per hole we compute the rectangle
   ``forward cone ∩ backward cone`` only; everywhere else the hole-free activations are right
   (outside the forward cone) or never used (outside the backward cone).
3. **Vectorised over holes.** The rectangles of one chunk of holes get one common size (the
   largest), are shifted to lie inside the map, and are cut from the hole-free input with the
   previous layer's rectangle pasted in (:func:`_gather`), so each layer is one batched
   convolution over the chunk. ``chunk_size`` bounds the memory.

Dense Local-Net features (:meth:`glancing.models.local_net.LocalNet.dense_all`), batched heads
and :func:`glancing.score_map.assemble_fast` complete the map. :func:`fast_window_scores` returns
what ``Glance.window_scores`` returns, equal within float rounding (tested with trained weights,
odd image sizes, letterboxing, strides 3 and 4, chunk sizes 1 and 7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from glancing.errors import GlancingError
from glancing.models.global_net import GlobalNet
from glancing.models.heads import iad_score
from glancing.models.partial_conv import PartialConv2d
from glancing.score_map import assemble_fast, window_centers
from glancing.scoring import head_maps

__all__ = ["fast_global_features", "fast_score_maps", "fast_window_scores", "local_features_at"]


@dataclass(frozen=True)
class _Layer:
    """One step of the Global-Net seen as a sliding window: a partial conv or a mask pool."""

    conv: PartialConv2d | None  # None: the 2 x 2 max pooling of features and mask
    kernel: int
    stride: int
    padding: int
    dilation: int
    activation: bool

    @property
    def span(self) -> int:
        """Input rows one output row reads: ``dilation * (kernel - 1) + 1``."""
        return self.dilation * (self.kernel - 1) + 1

    def forward_cone(self, start: Tensor, end: Tensor, n_out: int) -> tuple[Tensor, Tensor]:
        """Output cells ``[start', end')`` whose footprint meets input cells ``[start, end)``.

        Output ``k`` reads inputs ``s k - P .. s k - P + span - 1``."""
        first = torch.div(start + self.padding - self.span + 1 + self.stride - 1, self.stride,
                          rounding_mode="floor")
        last = torch.div(end - 1 + self.padding, self.stride, rounding_mode="floor")
        return first.clamp(0, n_out), (last + 1).clamp(0, n_out)

    def backward_cone(self, start: Tensor, end: Tensor, n_in: int) -> tuple[Tensor, Tensor]:
        """Input cells that output cells ``[start, end)`` read (the receptive field)."""
        first = self.stride * start - self.padding
        last = self.stride * (end - 1) - self.padding + self.span
        return first.clamp(0, n_in), last.clamp(0, n_in)

    def __call__(self, x: Tensor, mask: Tensor, slope: float) -> tuple[Tensor, Tensor]:
        """Apply the layer to an already padded crop ``(B, C, h, w)``, mask ``(B, 1, h, w)``."""
        if self.conv is None:
            return F.max_pool2d(x, 2), F.max_pool2d(mask, 2)  # mask_pool's rule
        x, mask = _partial_conv_unpadded(self.conv, x, mask)
        return (F.leaky_relu(x, slope) if self.activation else x), mask


def _partial_conv_unpadded(conv: PartialConv2d, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """:meth:`PartialConv2d.forward` on input that already carries its zero padding.

    The same Eq. 1-2 in the same order of operations, with ``padding=0``: the crops are cut
    from maps padded once with zero features and a zero mask, as the layer pads them."""
    with torch.no_grad():
        valid_count = F.conv2d(mask, conv.mask_kernel.to(mask.dtype), None, conv.stride, 0,
                               conv.dilation)
        new_mask = (valid_count > 0).to(x.dtype)
        ratio = conv.window_size / valid_count.clamp(min=conv.eps)
        ratio = ratio.clamp(max=conv.window_size) * new_mask
    out = F.conv2d(x * mask, conv.weight, None, conv.stride, 0, conv.dilation, conv.groups)
    out = out * ratio
    if conv.bias is not None:
        out = out + conv.bias.view(1, -1, 1, 1)
    return out * new_mask, new_mask


def _layers(net: GlobalNet) -> list[_Layer]:
    """The Global-Net's layers in order (see :meth:`GlobalNet.forward`)."""
    layers = []
    for i, stage in enumerate(net.stages):
        if i:
            layers.append(_Layer(None, 2, 2, 0, 1, False))
        for conv in stage:
            layers.append(_Layer(conv, conv.kernel_size[0], conv.stride[0], conv.padding[0],
                                 conv.dilation[0], True))
    head = net.head
    layers.append(_Layer(head, head.kernel_size[0], head.stride[0], head.padding[0],
                         head.dilation[0], False))
    for layer in layers:
        conv = layer.conv
        if conv is not None and (conv.kernel_size[0] != conv.kernel_size[1]
                                 or conv.stride[0] != conv.stride[1]
                                 or conv.padding[0] != conv.padding[1]
                                 or conv.dilation[0] != conv.dilation[1]):
            raise GlancingError("fast_map handles square kernels, strides, paddings and "
                                "dilations only; use Glance.window_scores for this Global-Net")
    return layers


def _gather(base: Tensor, origin: tuple[Tensor, Tensor], size: tuple[int, int],
            pasted: Tensor | None = None, pasted_origin: tuple[Tensor, Tensor] | None = None
            ) -> Tensor:
    """Per-hole crops of a shared map, with each hole's own rectangle pasted over it.

    Args:
        base: ``(1, C, H, W)`` map shared by all holes (hole-free activations, padded).
        origin: ``(B,)`` rows and ``(B,)`` columns of each crop's top-left cell in ``base``.
        size: ``(h, w)`` of the crops.
        pasted: ``(B, C, h', w')`` per-hole values that replace ``base`` where they lie.
        pasted_origin: their top-left cells in ``base`` coordinates, ``(B,)`` each.

    Returns:
        ``(B, C, h, w)``.
    """
    rows = origin[0][:, None] + torch.arange(size[0], device=base.device)  # (B, h)
    cols = origin[1][:, None] + torch.arange(size[1], device=base.device)  # (B, w)
    batch, (channels, base_w) = rows.shape[0], (base.shape[1], base.shape[3])
    # One flat index per crop pixel: reads exactly the cells needed, nothing of the rest.
    flat = (rows[:, :, None] * base_w + cols[:, None, :]).flatten(1)  # (B, h w)
    crop = base[0].flatten(1).index_select(1, flat.flatten())  # (C, B h w)
    crop = crop.view(channels, batch, *size).transpose(0, 1)
    if pasted is None:
        return crop
    ph, pw = pasted.shape[-2:]
    rel_rows, rel_cols = rows - pasted_origin[0][:, None], cols - pasted_origin[1][:, None]
    inside = (((rel_rows >= 0) & (rel_rows < ph))[:, None, :, None]
              & ((rel_cols >= 0) & (rel_cols < pw))[:, None, None, :])
    flat = (rel_rows.clamp(0, ph - 1)[:, :, None] * pw
            + rel_cols.clamp(0, pw - 1)[:, None, :]).flatten(1)  # (B, h w)
    moved = pasted.flatten(2).gather(2, flat[:, None, :].expand(-1, channels, -1))
    moved = moved.reshape(batch, channels, *size)
    return torch.where(inside, moved, crop)


@torch.no_grad()
def fast_global_features(global_net: GlobalNet, image: Tensor, valid: Tensor, centers: Tensor,
                         patch_size: int, chunk_size: int = 64,
                         stats: dict | None = None) -> Tensor:
    """``Z_g`` of every hole, equal to ``global_net.predict`` with :func:`hole_mask` per centre.

    Args:
        global_net: the trained Global-Net (eval mode).
        image: ``(3, H, W)`` in [0, 1].
        valid: ``(1, H, W)`` bool, True on the image, False on letterbox padding.
        centers: ``(N, 2)`` long ``(y, x)`` hole centres; the box is rows
            ``y - p//2 .. y - p//2 + p - 1`` (clipped), as in :func:`hole_mask`.
        patch_size: p.
        chunk_size: holes per batched step (memory grows linearly with it).
        stats: if given, ``stats["macs"]`` is increased by the multiply-accumulates done
            (feature convolutions only, counted like :meth:`GlobalNet.macs`).

    Returns:
        ``(N, out_dim)``.
    """
    if image.dim() != 3 or image.shape[0] != 3 or tuple(valid.shape) != (1, *image.shape[1:]):
        raise GlancingError(f"fast_global_features wants image (3, H, W) and valid (1, H, W), "
                            f"got {tuple(image.shape)} and {tuple(valid.shape)}")
    if chunk_size < 1:
        raise GlancingError(f"chunk_size must be >= 1, got {chunk_size}; pass the number of "
                            "holes to score per step (64 suits a CPU)")
    layers = _layers(global_net)
    slope = global_net.act.negative_slope
    device = image.device
    x = ((image[None] - global_net.mean) / global_net.std)
    mask = valid[None].to(x.dtype)

    # 1. The hole-free pass; keep every layer's input, padded as the layer pads it.
    inputs, sizes = [], [tuple(image.shape[-2:])]
    for layer in layers:
        pad = (layer.padding,) * 4
        inputs.append((F.pad(x, pad), F.pad(mask, pad)))
        x, mask = layer(*inputs[-1], slope)
        sizes.append(tuple(x.shape[-2:]))
    if stats is not None:
        stats["macs"] = stats.get("macs", 0) + _macs(layers, sizes[1:], [1] * len(layers))

    # 2. Cones, per hole and axis: the box's forward cone, the read-out's backward cone.
    centers = centers.to(device).long()
    half = patch_size // 2
    box = [((c - half).clamp(0, n), (c - half + patch_size).clamp(0, n))
           for c, n in zip(centers.unbind(1), sizes[0], strict=True)]
    forward = []
    for i, layer in enumerate(layers):
        box = [layer.forward_cone(a, b, n) for (a, b), n in zip(box, sizes[i + 1], strict=True)]
        forward.append(box)
    u = global_net.feature_coords(centers).to(x.dtype)  # (N, 2) continuous cell coordinates
    last = torch.tensor(sizes[-1], device=device)
    u = torch.minimum(u.clamp(min=0), (last - 1).to(u.dtype))  # grid_sample's border rule
    taps = u.floor().long()
    weights = u - taps
    need = [(taps[:, k], torch.minimum(taps[:, k] + 2, last[k])) for k in range(2)]
    all_regions = [None] * len(layers)  # per layer: rows (start, end), columns (start, end)
    for i in reversed(range(len(layers))):
        all_regions[i] = [(torch.maximum(fa, na), torch.minimum(fb, nb))
                          for (fa, fb), (na, nb) in zip(forward[i], need, strict=True)]
        need = [layers[i].backward_cone(a, b, n) for (a, b), n in zip(need, sizes[i],
                                                                       strict=True)]

    out = []
    for start in range(0, len(centers), chunk_size):
        part = slice(start, start + chunk_size)
        chunk, tap, weight = centers[part], taps[part], weights[part]
        regions = [[(a[part], b[part]) for a, b in region] for region in all_regions]

        # 3. Layer by layer, only inside each hole's rectangle (one common size per chunk).
        pasted = pasted_origin = None
        counts = []
        for i, layer in enumerate(layers):
            n_out = sizes[i + 1]
            size = tuple(max(1, int((b - a).max())) for a, b in regions[i])
            origin = tuple(torch.minimum(a, torch.full_like(a, n - s))
                           for (a, _), n, s in zip(regions[i], n_out, size, strict=True))
            in_origin = tuple(layer.stride * o for o in origin)  # in padded input coords
            in_size = tuple(layer.stride * (s - 1) + layer.span for s in size)
            base_x, base_mask = inputs[i]
            if i == 0:
                crop_x = _gather(base_x, in_origin, in_size)
                # M0 = valid minus the box (hole_mask): clear the box inside each crop.
                in_box = [(first[:, None] + torch.arange(n, device=device) - layer.padding
                           - (c[:, None] - half))
                          for first, n, c in zip(in_origin, in_size, chunk.unbind(1),
                                                 strict=True)]
                in_box = [(d >= 0) & (d < patch_size) for d in in_box]  # (B, h), (B, w)
                box_mask = in_box[0][:, None, :, None] & in_box[1][:, None, None, :]
                crop_mask = _gather(base_mask, in_origin, in_size) * ~box_mask
            else:
                shifted = tuple(o + layer.padding for o in pasted_origin)
                crop_x = _gather(base_x, in_origin, in_size, pasted[0], shifted)
                crop_mask = _gather(base_mask, in_origin, in_size, pasted[1], shifted)
            pasted = layer(crop_x, crop_mask, slope)
            pasted_origin = origin
            counts.append(size[0] * size[1])

        # 4. Read Z_g bilinearly from the 2 x 2 taps, as GlobalNet.read_out does.
        features = pasted[0]
        rows = tap[:, 0] - pasted_origin[0]
        cols = tap[:, 1] - pasted_origin[1]
        rows1 = torch.minimum(tap[:, 0] + 1, last[0] - 1) - pasted_origin[0]
        cols1 = torch.minimum(tap[:, 1] + 1, last[1] - 1) - pasted_origin[1]
        batch = torch.arange(len(chunk), device=device)
        wy, wx = weight[:, :1], weight[:, 1:]
        z = ((1 - wy) * (1 - wx) * features[batch, :, rows, cols]
             + (1 - wy) * wx * features[batch, :, rows, cols1]
             + wy * (1 - wx) * features[batch, :, rows1, cols]
             + wy * wx * features[batch, :, rows1, cols1])
        out.append(z)
        if stats is not None:
            stats["macs"] += len(chunk) * _macs(layers, None, counts)
    return torch.cat(out)


def _macs(layers: list[_Layer], sizes, counts: list[int]) -> int:
    """Multiply-accumulates of the feature convolutions over ``counts`` output cells each
    (or over the whole maps of ``sizes``)."""
    total = 0
    for i, layer in enumerate(layers):
        if layer.conv is None:
            continue
        cells = counts[i] if sizes is None else sizes[i][0] * sizes[i][1] * counts[i]
        conv = layer.conv
        total += cells * layer.kernel ** 2 * conv.in_channels // conv.groups * conv.out_channels
    return total


@torch.no_grad()
def local_features_at(local_net, image: Tensor, centers: Tensor) -> Tensor:
    """``Z_l`` of the windows centred on ``centers`` ``(N, 2)``, from dense passes:
    ``(3, H, W)`` -> ``(N, out_dim)``, equal to ``local_net`` on each cropped window.

    :meth:`LocalNet.dense` gives exactly the windows whose top-left corner is on its grid of
    step ``stride`` (4 for p = 33). The windows are grouped by their corner's phase (modulo
    that step) and each group gets one dense pass over the bounding box of its windows: a
    regular window grid is one large pass, and the row and column flush with the far border
    are thin strips. When the windows use every phase (a stride that is not a multiple of the
    Local-Net's), one pass of :meth:`LocalNet.dense_all` (Bailer et al. 2017) is cheaper.
    """
    p, step = local_net.patch_size, local_net.stride
    top_left = centers.to(image.device).long() - p // 2
    phase = top_left % step
    key = phase[:, 0] * step + phase[:, 1]
    groups = key.unique().tolist()
    if len(groups) == step * step:
        dense = local_net.dense_all(image[None])[0]
        return dense[:, top_left[:, 0], top_left[:, 1]].T
    out = image.new_empty(len(centers), local_net.out_dim)
    for group in groups:
        pick = (key == group).nonzero().flatten()
        corners = top_left[pick]
        (y0, x0), (y1, x1) = corners.min(0).values.tolist(), corners.max(0).values.tolist()
        dense = local_net.dense(image[None, :, y0 : y1 + p, x0 : x1 + p])[0]
        index = torch.div(corners - corners.new_tensor([y0, x0]), step, rounding_mode="floor")
        out[pick] = dense[:, index[:, 0], index[:, 1]].T
    return out


@torch.no_grad()
def fast_window_scores(model, image: Tensor, valid: Tensor, box, stride: int,
                       chunk_size: int = 64, stats: dict | None = None) -> dict[str, Tensor]:
    """What :meth:`Glance.window_scores` returns (raw IAD and DAD per window), fast.

    ``model`` is a :class:`~glancing.models.glance.Glance`; the other arguments are those of
    ``window_scores`` (``chunk_size`` in place of ``batch_size``)."""
    p = model.patch_size
    centers = window_centers(box, p, stride).to(image.device)
    z_local = local_features_at(model.local_net, image, centers)
    z_global = fast_global_features(model.global_net, image, valid, centers, p, chunk_size,
                                    stats)
    return {"centers": centers, "iad": iad_score(z_local, z_global),
            "dad": model.dad_head.score(z_local, z_global)}


@torch.no_grad()
def fast_score_maps(model, image: Tensor, valid: Tensor, box, stride: int,
                    chunk_size: int = 64, lambda_s: float | None = None) -> dict[str, Tensor]:
    """What :meth:`Glance.score_maps` returns, fast: ``{"iad", "dad", "combined"}``, each
    ``(H, W)``."""
    scores = fast_window_scores(model, image, valid, box, stride, chunk_size)
    return maps_from_scores_fast(model, scores, tuple(image.shape[-2:]), lambda_s)


def maps_from_scores_fast(model, scores: dict[str, Tensor], size: tuple[int, int],
                          lambda_s: float | None = None) -> dict[str, Tensor]:
    """:meth:`Glance.maps_from_scores` with the vectorised :func:`assemble_fast`."""
    return head_maps(model.normalizer, scores, model.patch_size, size, lambda_s, assemble_fast)
