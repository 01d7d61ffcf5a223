"""The Local-Net L of GLANCE: a light CNN that maps one p x p patch to a 128-d descriptor.

GLANCE (Wang et al., CVPR 2021, Sec. 3.1) describes a patch with a small network whose receptive
field is exactly the patch, taken from Uninformed Students (Bergmann et al., CVPR 2020, Sec. 3.1
and its supplementary material), and pretrains it by distilling a frozen ImageNet teacher
(see :mod:`glancing.teachers` and :func:`glancing.losses.local_loss`): a linear
:class:`Decoder` D maps the 128-d descriptor ``L(p)`` to the teacher's dimension.

Architectures (:data:`ARCHITECTURES`). Uninformed Students' published 33 and 65 networks drop a
row and column at a pooling floor, so a 33 x 33 input does not use all its pixels. Here the
kernel sizes are chosen so that the receptive field is *exactly* p, a p x p input maps to
exactly 1 x 1, and every max-pooling sees an even-sized input (no pixel is dropped):

======  ===============================================================  ======================
p       layers (kernel(channels); no padding)                            spatial size
======  ===============================================================  ======================
17      conv6(128) conv5(256) conv5(256) conv4(128)                       17-12-8-4-1
33      conv6(128) pool2 conv5(256) pool2 conv2(256) conv4(128)           33-28-14-10-5-4-1
65      conv6(128) pool2 conv7(128) pool2 conv5(256) pool2 conv4(256)     65-60-30-24-12-8-4-1-1
        conv1(128)
======  ===============================================================  ======================

``pool2`` is a 2 x 2 max-pooling with stride 2. Every convolution but the last is followed by a
LeakyReLU of slope 5e-3, as in Uninformed Students. The last layer outputs ``out_dim`` (128)
channels. Inputs are RGB in [0, 1] and are normalised with the ImageNet mean and std inside the
network (buffers), so callers never normalise.

The same network slides over a whole image with :meth:`LocalNet.dense` (valid convolutions), giving
the descriptors of all p x p windows on a grid whose step is :attr:`LocalNet.stride`
(``2 ** number of poolings``: 1, 4, 8). A later step makes this dense at stride 1 with the
"fast dense feature extraction" of Bailer et al. (2017); the layers are therefore kept as a flat
:class:`torch.nn.Sequential` (:attr:`LocalNet.features`), and :meth:`LocalNet.receptive_field`
is computed from those layers rather than stored.

Patch sampling helpers: :func:`crop_patches` cuts p x p boxes around given centres and
:func:`sample_centers` draws random centres whose box lies in the image and whose centre is on a
valid (non-letterbox) pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ARCHITECTURES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LEAKY_SLOPE",
    "PATCH_SIZES",
    "Decoder",
    "LocalNet",
    "crop_patches",
    "sample_centers",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LEAKY_SLOPE = 5e-3  # Uninformed Students' LeakyReLU slope

# Layer specs per patch size: ("conv", kernel, out_channels) or ("pool", 2). ``None`` as the
# channel count of the last conv means ``out_dim``.
ARCHITECTURES: dict[int, tuple[tuple, ...]] = {
    17: (("conv", 6, 128), ("conv", 5, 256), ("conv", 5, 256), ("conv", 4, None)),
    33: (
        ("conv", 6, 128), ("pool", 2),
        ("conv", 5, 256), ("pool", 2),
        ("conv", 2, 256), ("conv", 4, None),
    ),
    65: (
        ("conv", 6, 128), ("pool", 2),
        ("conv", 7, 128), ("pool", 2),
        ("conv", 5, 256), ("pool", 2),
        ("conv", 4, 256), ("conv", 1, None),
    ),
}
PATCH_SIZES = tuple(ARCHITECTURES)


def _layer_geometry(layer: nn.Module) -> tuple[int, int, int] | None:
    """(kernel, stride, dilation) of a square conv or pooling layer; None for pointwise ones."""
    if isinstance(layer, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        def first(v):
            return v[0] if isinstance(v, tuple) else v

        dilation = first(getattr(layer, "dilation", 1))
        return first(layer.kernel_size), first(layer.stride), dilation
    return None


class LocalNet(nn.Module):
    """Local-Net L: a p x p RGB patch -> a descriptor of ``out_dim`` numbers (GLANCE Sec. 3.1).

    Args:
        patch_size: p, one of 17, 33, 65; the receptive field of the network.
        out_dim: descriptor length (128 in GLANCE and Uninformed Students).
        width: multiplier of the hidden channel counts (1.0 = the architecture above). Values
            below 1 give a thinner, faster net for CPU smoke tests; the geometry (receptive
            field, stride) does not change.

    Attributes:
        patch_size: p.
        out_dim: descriptor length.
        stride: step, in input pixels, between neighbouring outputs of :meth:`dense`
            (``2 ** number of poolings``: 1 for p=17, 4 for p=33, 8 for p=65).
        features: the layers, an :class:`torch.nn.Sequential` of ``Conv2d`` (no padding),
            ``LeakyReLU`` and ``MaxPool2d``; the last module is the final ``Conv2d``.
        mean, std: ``(1, 3, 1, 1)`` ImageNet normalisation buffers.
    """

    def __init__(self, patch_size: int = 33, out_dim: int = 128, width: float = 1.0) -> None:
        super().__init__()
        if patch_size not in ARCHITECTURES:
            raise ValueError(f"patch_size must be one of {PATCH_SIZES}, got {patch_size}")
        if out_dim < 1 or width <= 0:
            raise ValueError(f"out_dim must be >= 1 and width > 0, got {out_dim}, {width}")
        self.patch_size = int(patch_size)
        self.out_dim = int(out_dim)
        self.width = float(width)

        layers: list[nn.Module] = []
        in_ch = 3
        spec = ARCHITECTURES[patch_size]
        n_pools = 0
        for i, item in enumerate(spec):
            if item[0] == "pool":
                layers.append(nn.MaxPool2d(item[1], stride=item[1]))
                n_pools += 1
                continue
            _, kernel, channels = item
            last = i == len(spec) - 1
            out_ch = self.out_dim if last else max(1, round(channels * self.width))
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=kernel, padding=0))
            if not last:
                layers.append(nn.LeakyReLU(LEAKY_SLOPE))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.stride = 2**n_pools
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def receptive_field(self) -> int:
        """Side of the input window that one output sees, computed from :attr:`features`.

        With ``j`` the product of the strides of the layers before, each layer of kernel ``k``
        and dilation ``d`` widens the field by ``(k - 1) * d * j`` (starting from 1 pixel).
        """
        field, jump = 1, 1
        for layer in self.features:
            geometry = _layer_geometry(layer)
            if geometry is None:
                continue
            kernel, stride, dilation = geometry
            field += (kernel - 1) * dilation * jump
            jump *= stride
        return field

    def normalize(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1], C in {1, 3} -> (B, 3, H, W) ImageNet-normalised."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected a (B, 3, H, W) or (B, 1, H, W) batch, got "
                             f"{tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        mean = self.mean.to(images.dtype)
        std = self.std.to(images.dtype)
        return (images - mean) / std

    def forward(self, patches: Tensor) -> Tensor:
        """Descriptors of a batch of patches.

        Args:
            patches: ``(B, 3, p, p)`` (or ``(B, 1, p, p)`` grey) values in [0, 1].

        Returns:
            ``(B, out_dim)`` descriptors ``L(p)``.
        """
        p = self.patch_size
        if patches.dim() != 4 or tuple(patches.shape[-2:]) != (p, p):
            raise ValueError(f"expected (B, 3, {p}, {p}) patches, got {tuple(patches.shape)}")
        out = self.features(self.normalize(patches))
        return out.flatten(1)

    def dense(self, images: Tensor) -> Tensor:
        """Descriptors of all p x p windows of whole images on a grid of step :attr:`stride`.

        The network runs fully convolutionally (valid convolutions, no padding). Output
        ``(i, j)`` is exactly ``forward`` of the window whose top-left pixel is
        ``(i * stride, j * stride)``, i.e. rows ``i*stride .. i*stride + p - 1``; its centre is
        ``(i * stride + p // 2, j * stride + p // 2)``.

        Args:
            images: ``(B, 3, H, W)`` (or grey ``(B, 1, H, W)``) values in [0, 1], H, W >= p.

        Returns:
            ``(B, out_dim, h, w)`` with ``h = (H - p) // stride + 1`` and
            ``w = (W - p) // stride + 1``. Rows/columns beyond the last full window are unused.
        """
        p = self.patch_size
        if images.dim() != 4 or images.shape[-2] < p or images.shape[-1] < p:
            raise ValueError(f"expected (B, 3, H, W) images with H, W >= {p}, got "
                             f"{tuple(images.shape)}")
        return self.features(self.normalize(images))

    def dense_all(self, images: Tensor) -> Tensor:
        """Descriptors of *every* p x p window (stride 1) in one pass, exactly :meth:`forward`.

        Fast dense feature extraction (Bailer, Habtegebrial, Varanasi and Stricker, "Fast
        Feature Extraction with CNNs with Pooling Layers", BMVC 2017): a 2 x 2 pooling with
        stride 2 keeps one of the four phases of its input grid; running the pooling at all four
        offsets ``(dy, dx)`` in {0, 1}^2 and stacking the results on the batch axis keeps every
        phase, so the layers after it see every window. After ``n`` poolings the batch holds
        ``4 ** n`` shifted copies; output ``i`` of the copy with offsets ``(dy_1, .., dy_n)``
        belongs to the window starting at row ``dy_1 + 2 dy_2 + .. + 2**(n-1) dy_n +
        2**n i`` (valid convolutions keep the index of a window's first row), and unwarping
        interleaves the copies back into one map. Every multiply-accumulate is one the
        per-patch network needs; none is repeated between overlapping windows.

        Args:
            images: ``(B, 3, H, W)`` (or grey ``(B, 1, H, W)``) values in [0, 1], H, W >= p.

        Returns:
            ``(B, out_dim, H - p + 1, W - p + 1)``; entry ``(y, x)`` is ``forward`` of the
            window whose top-left pixel is ``(y, x)`` (centre ``(y + p//2, x + p//2)``).
        """
        p, step = self.patch_size, self.stride
        if images.dim() != 4 or images.shape[-2] < p or images.shape[-1] < p:
            raise ValueError(f"expected (B, 3, H, W) images with H, W >= {p}, got "
                             f"{tuple(images.shape)}")
        batch, _, height, width = images.shape
        out_h, out_w = height - p + 1, width - p + 1
        # Pad the far sides so that every shifted copy has whole pooling windows and the same
        # size; the padding only reaches windows past the image, which are cut off at the end.
        pad_h = (-out_h) % step + step - 1
        pad_w = (-out_w) % step + step - 1
        x = F.pad(self.normalize(images), (0, pad_w, 0, pad_h))
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                h, w = (x.shape[-2] - 1) // 2 * 2, (x.shape[-1] - 1) // 2 * 2
                # (4 * N, C, h/2, w/2): offsets ordered (dy, dx) = (0,0), (0,1), (1,0), (1,1)
                x = torch.cat([layer(x[..., dy : dy + h, dx : dx + w])
                               for dy in (0, 1) for dx in (0, 1)])
            else:
                x = layer(x)
        # Unwarp. The batch index is ((dy_n, dx_n), ..., (dy_1, dx_1), b) from slowest to
        # fastest, since each pooling stacked its copies in front of the previous ones.
        n_pools = step.bit_length() - 1
        h, w = x.shape[-2:]
        x = x.view(*([2, 2] * n_pools), batch, self.out_dim, h, w)
        # Axes: dy_n, dx_n, ..., dy_1, dx_1, b, c, i, j -> b, c, i, dy_n..dy_1, j, dx_n..dx_1,
        # so that the row index reads i * 2**n + dy_n * 2**(n-1) + .. + dy_1.
        dys = [2 * k for k in range(n_pools)]
        dxs = [2 * k + 1 for k in range(n_pools)]
        base = 2 * n_pools
        x = x.permute(base, base + 1, base + 2, *dys, base + 3, *dxs)
        x = x.reshape(batch, self.out_dim, h * step, w * step)
        return x[..., :out_h, :out_w]

    def extra_repr(self) -> str:
        return (f"patch_size={self.patch_size}, out_dim={self.out_dim}, stride={self.stride}, "
                f"width={self.width}")


class Decoder(nn.Module):
    """D in the distillation loss: a linear map from the descriptor to the teacher's space.

    GLANCE Sec. 3.1 / Uninformed Students Sec. 3.1: ``l_k = || D(L(p)) - R(p) ||^2``, where the
    teacher descriptor R(p) is normalised (see :func:`glancing.losses.distillation_loss`).
    Only used for pretraining; discarded afterwards.

    Args:
        teacher_dim: length of the teacher descriptor (512 for ResNet-18, 1280 for
            EfficientNet-Lite0).
        in_dim: length of the Local-Net descriptor (128).
    """

    def __init__(self, teacher_dim: int, in_dim: int = 128) -> None:
        super().__init__()
        self.teacher_dim = int(teacher_dim)
        self.in_dim = int(in_dim)
        self.linear = nn.Linear(self.in_dim, self.teacher_dim)

    def forward(self, z: Tensor) -> Tensor:
        """``(B, in_dim)`` descriptors -> ``(B, teacher_dim)`` predicted normalised teacher."""
        return self.linear(z)


def crop_patches(
    images: Tensor, centers: Tensor, patch_size: int, batch_index: Tensor | None = None
) -> Tensor:
    """Cut the p x p box centred on each centre: rows ``cy - p//2 .. cy + p//2`` (p odd).

    Args:
        images: ``(B, C, H, W)``.
        centers: ``(N, 2)`` integer ``(y, x)`` centres. Without ``batch_index``, N must equal B
            and centre ``n`` is taken in image ``n``.
        patch_size: p (odd).
        batch_index: optional ``(N,)`` integer image index of each centre, to take several
            patches from one image.

    Returns:
        ``(N, C, p, p)`` patches (a copy, differentiable with respect to ``images``).

    Raises:
        ValueError: a box that does not lie entirely inside the image.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    if patch_size % 2 != 1 or patch_size < 1:
        raise ValueError(f"patch_size must be odd, got {patch_size}")
    centers = torch.as_tensor(centers, device=images.device).long()
    if centers.dim() != 2 or centers.shape[1] != 2:
        raise ValueError(f"centers must be (N, 2), got {tuple(centers.shape)}")
    n = centers.shape[0]
    if batch_index is None:
        if n != images.shape[0]:
            raise ValueError(f"{n} centres for {images.shape[0]} images: pass batch_index")
        batch_index = torch.arange(n, device=images.device)
    else:
        batch_index = torch.as_tensor(batch_index, device=images.device).long().reshape(-1)
        if batch_index.shape[0] != n:
            raise ValueError(f"batch_index has {batch_index.shape[0]} entries for {n} centres")
    _, channels, height, width = images.shape
    half = patch_size // 2
    cy, cx = centers[:, 0], centers[:, 1]
    if n and (cy.min() < half or cx.min() < half or cy.max() > height - 1 - half
              or cx.max() > width - 1 - half):
        raise ValueError(f"a {patch_size} x {patch_size} box leaves the {height} x {width} image")
    offsets = torch.arange(patch_size, device=images.device) - half
    rows = (cy[:, None] + offsets)[:, None, :, None]  # (N, 1, p, 1)
    cols = (cx[:, None] + offsets)[:, None, None, :]  # (N, 1, 1, p)
    chans = torch.arange(channels, device=images.device)[None, :, None, None]  # (1, C, 1, 1)
    return images[batch_index[:, None, None, None], chans, rows, cols]


def sample_centers(
    valid: Tensor,
    patch_size: int,
    generator: torch.Generator | None = None,
    whole_box_valid: bool = False,
) -> Tensor:
    """One random patch centre per image, uniform over the allowed pixels.

    A centre ``(y, x)`` is allowed when the p x p box around it lies inside the image
    (``p//2 <= y <= H - 1 - p//2``, same for x) and the centre pixel is valid (letterbox padding
    is marked invalid). With ``whole_box_valid`` every pixel of the box must be valid.

    Args:
        valid: ``(B, 1, H, W)`` (or ``(B, H, W)``) bool mask of the image region.
        patch_size: p (odd).
        generator: the random generator (on ``valid``'s device) for reproducible draws.
        whole_box_valid: require the whole box, not only its centre, to be valid.

    Returns:
        ``(B, 2)`` long ``(y, x)`` centres, usable with :func:`crop_patches`.

    Raises:
        ValueError: an image with no allowed centre (image smaller than p, or no valid pixel).
    """
    if valid.dim() == 4:
        if valid.shape[1] != 1:
            raise ValueError(f"valid must be (B, 1, H, W), got {tuple(valid.shape)}")
        valid = valid[:, 0]
    if valid.dim() != 3:
        raise ValueError(f"valid must be (B, 1, H, W), got {tuple(valid.shape)}")
    if patch_size % 2 != 1 or patch_size < 1:
        raise ValueError(f"patch_size must be odd, got {patch_size}")
    batch, height, width = valid.shape
    half = patch_size // 2
    allowed = valid.bool().clone()
    if whole_box_valid:
        # A box is all valid when the max of "invalid" over the box is 0: a stride-1 max pool,
        # done separably (rows, then columns), p times cheaper than the p x p pool.
        invalid = (~allowed).float()[:, None]
        invalid = F.max_pool2d(invalid, (patch_size, 1), stride=1, padding=(half, 0))
        invalid = F.max_pool2d(invalid, (1, patch_size), stride=1, padding=(0, half))
        allowed = invalid[:, 0] == 0
    inside = torch.zeros_like(allowed)
    inside[:, half : height - half, half : width - half] = True
    allowed &= inside
    counts = allowed.flatten(1).sum(1)
    if bool((counts == 0).any()):
        bad = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"no valid centre for a {patch_size} x {patch_size} box in images {bad}")
    flat = torch.multinomial(allowed.flatten(1).float(), 1, generator=generator)[:, 0]
    return torch.stack((flat // width, flat % width), dim=1)
