"""Random stains: the negatives of GLANCE's DAD head.

GLANCE teaches its distance head what "different" looks like by pasting a small random stain into
a normal patch and using the Local-Net feature of the stained patch as a negative. A stain here
is an irregular blob (a few overlapping random ellipses plus low-frequency noise, cut at the
level that gives a random coverage of 5-40% of the patch, then blurred by a random softness)
filled with a random colour at a random opacity, blended as ``x' = (1 - a) x + a c``.

Everything is pure torch and batched. All random numbers are drawn from the given generator on
the generator's own device, then moved to the patches' device, so a CPU generator gives the same
stains for CPU and CUDA patches and a seeded generator always gives the same stains.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_COVERAGE = 0.05
MAX_COVERAGE = 0.40
MAX_SOFTNESS = 0.08  # largest blur sigma, as a fraction of the patch side
NOISE_GRID = 6  # the irregularity noise is drawn on this coarse grid and upsampled


def _uniform(shape, low, high, generator: torch.Generator, device) -> torch.Tensor:
    """Uniform numbers in [low, high), drawn on the generator's device, returned on ``device``."""
    draw = torch.rand(shape, generator=generator, device=generator.device)
    return (low + (high - low) * draw).to(device)


def _normal(shape, generator: torch.Generator, device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _ellipse_field(batch: int, size: int, generator, device) -> torch.Tensor:
    """Sum of a few random anisotropic Gaussians near the patch center: (B, size, size)."""
    n_ellipses = 4
    axis = torch.linspace(-1.0, 1.0, size, device=device)
    y, x = torch.meshgrid(axis, axis, indexing="ij")  # (size, size) each
    centers = _uniform((batch, n_ellipses, 2, 1, 1), -0.35, 0.35, generator, device)
    sigmas = _uniform((batch, n_ellipses, 2, 1, 1), 0.12, 0.4, generator, device)
    angles = _uniform((batch, n_ellipses, 1, 1), 0.0, math.pi, generator, device)
    weights = _uniform((batch, n_ellipses, 1, 1), 0.4, 1.0, generator, device)
    dy, dx = y - centers[:, :, 0], x - centers[:, :, 1]  # (B, n, size, size)
    along = torch.cos(angles) * dx + torch.sin(angles) * dy
    across = -torch.sin(angles) * dx + torch.cos(angles) * dy
    exponent = (along / sigmas[:, :, 0]) ** 2 + (across / sigmas[:, :, 1]) ** 2
    return (weights * torch.exp(-0.5 * exponent)).sum(dim=1)


def _coarse_noise(batch: int, size: int, amplitude: float, generator, device) -> torch.Tensor:
    """Smooth random field (B, size, size): coarse noise upsampled bicubically."""
    coarse = _normal((batch, 1, NOISE_GRID, NOISE_GRID), generator, device)
    fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return amplitude * fine[:, 0]


def _threshold_to_coverage(field: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Binary blobs (B, H, W) holding the top ``coverage`` (B,) fraction of each field."""
    flat = field.flatten(1)
    n_pixels = flat.shape[1]
    ordered = flat.sort(dim=1, descending=True).values
    kept = (coverage * n_pixels).round().long().clamp(1, n_pixels)
    level = ordered.gather(1, (kept - 1)[:, None])  # the kept-th largest value
    return (flat >= level).reshape(field.shape).to(field.dtype)


def _gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur each of (B, H, W) with its own sigma (B,) in pixels; zero padding outside."""
    batch, height, width = images.shape
    radius = max(int(math.ceil(3 * float(sigmas.max()))), 1)
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-0.5 * (offsets / sigmas[:, None].clamp_min(1e-3)) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (B, k)
    # Separable blur as two grouped convolutions: one group per image, each with its kernel.
    stacked = images[None]  # (1, B, H, W)
    stacked = F.conv2d(stacked, kernels[:, None, :, None], padding=(radius, 0), groups=batch)
    stacked = F.conv2d(stacked, kernels[:, None, None, :], padding=(0, radius), groups=batch)
    return stacked[0]


def random_stain_alphas(
    batch: int,
    size: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    min_coverage: float = MIN_COVERAGE,
    max_coverage: float = MAX_COVERAGE,
    max_softness: float = MAX_SOFTNESS,
) -> torch.Tensor:
    """A batch of irregular stain shapes.

    Returns:
        (B, size, size) float tensor in [0, 1] on ``device`` (the generator's by default). Each
        blob covers a random fraction in [min_coverage, max_coverage] of the patch (the blur
        keeps the sum of the alpha, so ``alpha.mean()`` stays close to it) and has a random
        softness (blur sigma) of up to ``max_softness * size`` pixels.
    """
    device = torch.device(device) if device is not None else generator.device
    field = _ellipse_field(batch, size, generator, device)
    field = field + _coarse_noise(batch, size, 0.15, generator, device)  # ragged edges
    coverage = _uniform((batch,), min_coverage, max_coverage, generator, device)
    blob = _threshold_to_coverage(field, coverage)
    softness = _uniform((batch,), 0.3, max(max_softness * size, 0.31), generator, device)
    return _gaussian_blur(blob, softness).clamp(0.0, 1.0)


def random_stain_alpha(
    size: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    min_coverage: float = MIN_COVERAGE,
    max_coverage: float = MAX_COVERAGE,
    max_softness: float = MAX_SOFTNESS,
) -> torch.Tensor:
    """One irregular stain shape: (size, size) float in [0, 1]; see :func:`random_stain_alphas`."""
    return random_stain_alphas(1, size, generator, device, min_coverage, max_coverage,
                               max_softness)[0]


def _random_colours(batch: int, generator, device) -> torch.Tensor:
    """Stain colours (B, 3) in [0, 1]: a random lightness with a random, mostly muted tint."""
    lightness = _uniform((batch, 1), 0.0, 1.0, generator, device)
    tint_strength = _uniform((batch, 1), 0.0, 0.6, generator, device) ** 2  # mostly muted
    tint = _uniform((batch, 3), -1.0, 1.0, generator, device)
    return (lightness + tint_strength * tint).clamp(0.0, 1.0)


def paste_random_stain(
    patches: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste one random stain into every patch.

    Args:
        patches: (B, 3, p, p) float in [0, 1], on any device.
        generator: the source of randomness (a CPU generator works for CUDA patches too).

    Returns:
        ``(stained (B, 3, p, p), alpha (B, 1, p, p))``, both on the patches' device and dtype;
        ``stained = (1 - alpha) * patches + alpha * colour`` with a random colour per patch and
        alpha = shape x opacity x a mild blotchy variation inside the stain.
    """
    batch, _, size, _ = patches.shape
    device, dtype = patches.device, patches.dtype
    shape = random_stain_alphas(batch, size, generator, device=device).to(dtype)
    opacity = _uniform((batch, 1, 1), 0.35, 1.0, generator, device).to(dtype)
    # Real stains are uneven: let the opacity vary smoothly by up to a third inside the blob.
    blotches = _coarse_noise(batch, size, 1.0, generator, device).to(dtype)
    unevenness = 1.0 - 0.33 * torch.sigmoid(2.0 * blotches)
    alpha = (shape * opacity * unevenness).clamp(0.0, 1.0)[:, None]  # (B, 1, p, p)
    colour = _random_colours(batch, generator, device).to(dtype)[:, :, None, None]
    stained = (1.0 - alpha) * patches + alpha * colour
    return stained, alpha
