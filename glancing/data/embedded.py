"""The embedded default dataset: texture images with synthetic defects, built offline from a seed.

Nothing is downloaded. The raw material is the three CC0 texture photographs that scikit-image
ships (``brick``, ``gravel``, ``grass``, 512x512 grayscale) plus one procedurally drawn regular
structure (``mesh``, a woven wire grid) so that distortion defects such as a bent grid exist.

The result is written in the MVTec AD folder layout, so the MVTec loader reads it unchanged::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<kind>/000.png
    <root>/<category>/ground_truth/<kind>/000_mask.png      (uint8, 0 or 255)
    <root>/manifest.json  <root>/README.md                   (seed, sources, licence, params)

Train and test images of a photograph come from disjoint parts of it: train crops lie in rows
``[0, 288)`` and test crops in rows ``[288, 512)`` (the exact source box of every image is in the
manifest). A crop is a square of side 200-224 source pixels, resized to ``image_size``, and
flipped (and, for the isotropic gravel and grass, turned by a multiple of 90 degrees) at random.
Mesh images are drawn afresh per image with a jittered period, angle, perspective, wire
thickness and brightness, illumination and noise.

Every defect mask is derived from the pixels the defect changed (an alpha above a threshold, a
displacement above half a pixel), and the defective image equals the clean one outside its mask.
Defects are meant to be honest: they stay within the grey levels of the host texture so that no
colour or brightness threshold finds them (:mod:`glancing.baselines.zscore` measures that).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from glancing.config import cache_dir
from glancing.errors import GlancingError

FORMAT_VERSION = 1
CATEGORIES: tuple[str, ...] = ("brick", "gravel", "grass", "mesh")
DEFECT_KINDS: tuple[str, ...] = ("scratch", "hole", "stain", "contamination", "cut", "warp")
PHOTO_CATEGORIES: tuple[str, ...] = ("brick", "gravel", "grass")

# Rows of the 512x512 source photograph that train and test crops are taken from (disjoint).
TRAIN_ROWS = (0, 288)
TEST_ROWS = (288, 512)
CROP_SIDE_RANGE = (200, 224)  # side of a crop in source pixels, before resizing

# Defect extent as a fraction of the image side (the diameter of a blob, the length of a scratch).
EXTENT_RANGE = (0.06, 0.2)
ALPHA_THRESHOLD = 0.1  # an alpha below this is dropped, so the mask is exactly what changed
WARP_THRESHOLD_PX = 0.5  # a displacement below this is dropped, for the same reason

SOURCE_NOTES = {
    "brick": "skimage.data.brick(): CC0Textures Bricks25, CC0 1.0",
    "gravel": "skimage.data.gravel(): CC0Textures Gravel04, CC0 1.0",
    "grass": "skimage.data.grass(): DeviantArt linolafett Grass-01, CC0 1.0",
    "mesh": "procedural woven wire mesh drawn by glancing.data.embedded, CC0 1.0",
}


class Defect(NamedTuple):
    """A defective image, its exact mask and the parameters that made it."""

    image: np.ndarray  # (H, W) float in [0, 1]
    mask: np.ndarray  # (H, W) bool, True where the defect changed the image
    params: dict


# --------------------------------------------------------------------------- randomness


def image_rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    """The generator for one image, derived from the seed so any image can be rebuilt alone."""
    # crc32 rather than hash(): Python salts string hashes per process.
    key = (zlib.crc32(category.encode()), zlib.crc32(split.encode()), index)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


# --------------------------------------------------------------------------- clean images


@functools.cache
def source_photo(category: str) -> np.ndarray:
    """The 512x512 source photograph of a photo category as float in [0, 1]."""
    import skimage.data  # deferred: importing skimage.data is slow and only needed here

    loaders: dict[str, Callable[[], np.ndarray]] = {
        "brick": skimage.data.brick,
        "gravel": skimage.data.gravel,
        "grass": skimage.data.grass,
    }
    photo = loaders[category]().astype(np.float64) / 255.0
    photo.setflags(write=False)  # cached and shared: nobody may change it
    return photo


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a float [0, 1] image (h, w) to (size, size) with bicubic, antialiased PIL."""
    resized = Image.fromarray(image.astype(np.float32)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    return np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)


def photo_crop(category: str, split: str, rng: np.random.Generator, image_size: int):
    """A random crop of the split's region of a photograph.

    Returns ``(image (image_size, image_size) float, info)`` where ``info['source_box']`` is
    ``[row0, col0, row1, col1]`` in source pixels (end exclusive).
    """
    photo = source_photo(category)
    row_lo, row_hi = TRAIN_ROWS if split == "train" else TEST_ROWS
    side = int(rng.integers(CROP_SIDE_RANGE[0], CROP_SIDE_RANGE[1] + 1))
    row0 = int(rng.integers(row_lo, row_hi - side + 1))
    col0 = int(rng.integers(0, photo.shape[1] - side + 1))
    crop = photo[row0 : row0 + side, col0 : col0 + side]
    flip_h, flip_v = bool(rng.integers(2)), bool(rng.integers(2))
    # Brick has a direction (vertical courses in perspective), so it is never turned.
    turns = int(rng.integers(4)) if category in ("gravel", "grass") else 0
    if flip_h:
        crop = crop[:, ::-1]
    if flip_v:
        crop = crop[::-1, :]
    crop = np.rot90(crop, turns)
    info = {
        "source_box": [row0, col0, row0 + side, col0 + side],
        "flip_h": flip_h,
        "flip_v": flip_v,
        "rot90": turns,
    }
    return _resize(np.ascontiguousarray(crop), image_size), info


def _wire_coverage(coord: np.ndarray, period: float, widths: np.ndarray):
    """Coverage and index of the nearest wire for wires at multiples of ``period``.

    ``coord`` (H, W) is the position across the wires; returns ``(shade, index)`` where shade
    is a rounded (cylinder-like) profile in [0, 1] that is 0 off the wire.
    """
    t = coord / period
    index = np.round(t).astype(np.int64)
    distance = np.abs(t - index) * period
    half = widths[index % len(widths)] / 2.0
    # Antialiased edge times a cylinder profile: wires look round and lit from the front.
    edge = np.clip(half + 0.5 - distance, 0.0, 1.0)
    profile = np.sqrt(np.clip(1.0 - (distance / (half + 0.5)) ** 2, 0.0, 1.0))
    return edge * (0.55 + 0.45 * profile), index


def render_mesh(rng: np.random.Generator, image_size: int):
    """A woven wire mesh with natural jitter. Returns ``(image (S, S) float, info)``."""
    size = image_size
    period = size * rng.uniform(0.06, 0.07)
    aspect = rng.uniform(0.96, 1.04)
    angle = np.deg2rad(rng.uniform(-4.0, 4.0))
    tilt = rng.uniform(-0.12, 0.12, size=2) / size  # mild perspective
    phase = rng.uniform(0.0, period, size=2)
    n_table = 97  # per-wire jitter table, indexed by wire number
    width_base = period * rng.uniform(0.24, 0.3)
    widths_u = width_base * (1 + 0.12 * rng.standard_normal(n_table))
    widths_v = width_base * (1 + 0.12 * rng.standard_normal(n_table))
    bright_u = rng.uniform(0.62, 0.7) + 0.04 * rng.standard_normal(n_table)
    bright_v = rng.uniform(0.62, 0.7) + 0.04 * rng.standard_normal(n_table)

    y, x = np.mgrid[0:size, 0:size].astype(np.float64) - (size - 1) / 2.0
    w = 1.0 + tilt[0] * x + tilt[1] * y
    u = (np.cos(angle) * x - np.sin(angle) * y) / w + phase[0]
    v = (np.sin(angle) * x + np.cos(angle) * y) / w * aspect + phase[1]
    cover_u, index_u = _wire_coverage(u, period, widths_u)
    cover_v, index_v = _wire_coverage(v, period, widths_v)
    value_u = bright_u[index_u % n_table]
    value_v = bright_v[index_v % n_table]

    background = rng.uniform(0.22, 0.3) + _smooth_noise(rng, size, scale=size / 3, amplitude=0.04)
    # Weave: at each crossing one wire lies on top, alternating like a checkerboard; the wire
    # underneath is a little darker (in shadow).
    vertical_on_top = (index_u + index_v) % 2 == 0
    image = background
    bottom_cover = np.where(vertical_on_top, cover_v, cover_u)
    bottom_value = np.where(vertical_on_top, value_v, value_u) * 0.85
    top_cover = np.where(vertical_on_top, cover_u, cover_v)
    top_value = np.where(vertical_on_top, value_u, value_v)
    image = image + bottom_cover * (bottom_value - image)
    image = image + top_cover * (top_value - image)
    image = image + rng.uniform(0.015, 0.03) * rng.standard_normal((size, size))
    image = ndimage.gaussian_filter(image, 0.5)  # the camera's blur
    info = {
        "period_px": round(float(period), 3),
        "angle_deg": round(float(np.rad2deg(angle)), 3),
        "perspective": [round(float(t) * size, 4) for t in tilt],
    }
    return np.clip(image, 0.0, 1.0), info


def render_clean(category: str, split: str, rng: np.random.Generator, image_size: int):
    """A defect-free image of ``category`` for ``split`` ('train' or 'test').

    Returns ``(image (image_size, image_size) float in [0, 1], info dict for the manifest)``.
    """
    if split not in ("train", "test"):
        raise GlancingError(f"unknown split {split!r}; use 'train' or 'test'")
    if category == "mesh":
        return render_mesh(rng, image_size)
    if category in PHOTO_CATEGORIES:
        return photo_crop(category, split, rng, image_size)
    raise GlancingError(f"unknown embedded category {category!r}; choose from {CATEGORIES}")


# --------------------------------------------------------------------------- shape helpers


def _smooth_noise(rng: np.random.Generator, size: int, scale: float, amplitude: float):
    """Gaussian-filtered white noise (size, size) with standard deviation ``amplitude``."""
    # A wide filter is slow, so large scales are drawn on a coarser grid and enlarged.
    factor = max(int(scale // 4), 1)
    coarse_size = -(-size // factor)
    noise = ndimage.gaussian_filter(rng.standard_normal((coarse_size, coarse_size)),
                                    scale / factor, mode="wrap")
    if factor > 1:
        noise = ndimage.zoom(noise, factor, order=3, mode="grid-wrap")[:size, :size]
    noise -= noise.mean()  # at a large scale the mean dominates; it must not become the signal
    return noise * (amplitude / max(noise.std(), 1e-12))


def _pick_center(rng: np.random.Generator, size: int, extent_px: float) -> np.ndarray:
    """A defect center (row, col) that keeps a defect of diameter ``extent_px`` inside."""
    margin = min(extent_px / 2 + 2, size / 2)
    return rng.uniform(margin, size - margin, size=2)


def _blob(rng: np.random.Generator, size: int, center: np.ndarray, extent_px: float):
    """An irregular binary blob (size, size) of about ``extent_px`` diameter around center.

    A few overlapping anisotropic Gaussians plus low-frequency noise, cut at the level that gives
    the area of a disc of that diameter.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    radius = extent_px / 2
    field = np.zeros((size, size))
    for _ in range(int(rng.integers(3, 7))):
        offset = rng.uniform(-0.5, 0.5, size=2) * radius
        sigma = radius * rng.uniform(0.3, 0.6, size=2)
        theta = rng.uniform(0, np.pi)
        dy, dx = y - center[0] - offset[0], x - center[1] - offset[1]
        a = np.cos(theta) * dx + np.sin(theta) * dy
        b = -np.sin(theta) * dx + np.cos(theta) * dy
        field += rng.uniform(0.5, 1.0) * np.exp(-0.5 * ((a / sigma[0]) ** 2 + (b / sigma[1]) ** 2))
    field += _smooth_noise(rng, size, scale=max(radius / 3, 1.0), amplitude=0.08)
    # Only near the center: far away the noise alone could pass the level and leave islands.
    field[np.hypot(y - center[0], x - center[1]) > 1.3 * radius + 1] = -np.inf
    area = max(np.pi * radius**2, 4.0)
    level = np.sort(field, axis=None)[-int(area)]
    return field >= level


def _soften(binary: np.ndarray, softness_px: float) -> np.ndarray:
    """Blur a binary shape into an alpha in [0, 1]."""
    alpha = binary.astype(np.float64)
    return ndimage.gaussian_filter(alpha, softness_px) if softness_px > 0 else alpha


def _cut_alpha(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop alpha below the threshold, so the mask is exactly the set of pixels that change."""
    mask = alpha > ALPHA_THRESHOLD
    return np.where(mask, alpha, 0.0), mask


def _texture_stats(image: np.ndarray) -> tuple[float, float]:
    return float(image.mean()), float(max(image.std(), 1e-3))


def _local_mean(image: np.ndarray, scale_px: float) -> np.ndarray:
    """The image blurred at ``scale_px``: the tone a defect is relative to.

    Tones are set relative to the local mean, not the global one: in a two-tone texture such as
    brick, the global mean is the colour of neither brick nor mortar, and a stain 'darker than
    the mean' could be invisible on a brick.
    """
    return ndimage.gaussian_filter(image, max(scale_px, 1.0), mode="reflect")


def _shifted(image: np.ndarray, rng: np.random.Generator, min_shift: float) -> np.ndarray:
    """The image rolled by a random offset of at least ``min_shift`` pixels in each direction."""
    size = image.shape[0]
    shift = rng.uniform(min_shift, max(size - min_shift, min_shift + 1), size=2).astype(int)
    return np.roll(image, tuple(shift), axis=(0, 1))


def _rounded(values: dict) -> dict:
    """Manifest-friendly copy: numpy scalars and arrays to rounded Python numbers and lists."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (np.ndarray, list, tuple)):
            out[key] = [round(float(v), 3) for v in np.ravel(value)]
        elif isinstance(value, (float, np.floating)):
            out[key] = round(float(value), 4)
        elif isinstance(value, (np.integer, np.bool_)):
            out[key] = value.item()
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- defects


def _scratch(clean, rng, extent_px, foreign):
    """A thin curved line, a little brighter or darker than the texture around it."""
    size = clean.shape[0]
    _, std = _texture_stats(clean)
    center = _pick_center(rng, size, extent_px)
    direction = rng.standard_normal(2)
    direction /= np.linalg.norm(direction)
    normal = np.array([-direction[1], direction[0]])
    bend = rng.uniform(-0.3, 0.3)
    ends = (center - direction * extent_px / 2, center + direction * extent_px / 2)
    control = center + normal * bend * extent_px
    t = np.linspace(0, 1, int(4 * extent_px) + 8)[:, None]
    curve = (1 - t) ** 2 * ends[0] + 2 * (1 - t) * t * control + t**2 * ends[1]
    line = np.zeros_like(clean, dtype=bool)
    rows, cols = np.clip(np.round(curve).astype(int), 0, size - 1).T
    line[rows, cols] = True
    width = max(rng.uniform(1.5, 3.0) * size / 256, 0.8)
    distance = ndimage.distance_transform_edt(~line)
    alpha, mask = _cut_alpha(np.clip(width / 2 + 0.5 - distance, 0.0, 1.0))
    sign = float(rng.choice([-1.0, 1.0]))
    contrast = rng.uniform(1.0, 2.0)  # in standard deviations of the texture
    tone = np.clip(_local_mean(clean, 2 * width) + sign * contrast * std, 0.0, 1.0)
    strength = rng.uniform(0.7, 1.0)
    image = clean + alpha * strength * (tone - clean)
    params = {"center": center, "length_px": extent_px, "bend": bend, "width_px": width,
              "contrast_std": sign * contrast, "strength": strength}
    return image, mask, params


def _hole(clean, rng, extent_px, foreign):
    """A dark-ish pit: the texture inside keeps its detail but loses contrast and sinks."""
    size = clean.shape[0]
    _, std = _texture_stats(clean)
    center = _pick_center(rng, size, extent_px)
    softness = rng.uniform(0.5, 1.5) * size / 256
    alpha, mask = _cut_alpha(_soften(_blob(rng, size, center, extent_px), softness))
    depth = rng.uniform(1.0, 1.6)  # in standard deviations of the texture
    contrast = rng.uniform(0.35, 0.6)
    local = _local_mean(clean, extent_px / 2)
    inside = local + contrast * (clean - local) - depth * std
    image = clean + alpha * (inside - clean)
    params = {"center": center, "extent_px": extent_px, "softness_px": softness,
              "depth_std": depth, "contrast": contrast}
    return image, mask, params


def _stain(clean, rng, extent_px, foreign):
    """A soft-edged blob that darkens or lightens the texture moderately."""
    size = clean.shape[0]
    _, std = _texture_stats(clean)
    center = _pick_center(rng, size, extent_px)
    softness = rng.uniform(1.0, 3.0) * size / 256
    alpha, mask = _cut_alpha(_soften(_blob(rng, size, center, extent_px), softness))
    # A stain shifts the tone and soaks in a little (less contrast), keeping the texture.
    shift = float(rng.choice([-1.0, 1.0])) * rng.uniform(0.8, 1.5) * std
    contrast = rng.uniform(0.7, 1.0)
    local = _local_mean(clean, extent_px / 2)
    stained = local + contrast * (clean - local) + shift
    image = clean + alpha * (stained - clean)
    params = {"center": center, "extent_px": extent_px, "softness_px": softness,
              "shift_std": shift / std, "contrast": contrast}
    return image, mask, params


def _contamination(clean, rng, extent_px, foreign):
    """A patch of a foreign texture, matched to the host's mean and standard deviation."""
    size = clean.shape[0]
    mean, std = _texture_stats(clean)
    center = _pick_center(rng, size, extent_px)
    softness = rng.uniform(0.5, 1.2) * size / 256
    alpha, mask = _cut_alpha(_soften(_blob(rng, size, center, extent_px), softness))
    foreign_mean, foreign_std = _texture_stats(foreign)
    matched = np.clip(mean + (foreign - foreign_mean) * (std / foreign_std), 0.0, 1.0)
    image = clean + alpha * (matched - clean)
    params = {"center": center, "extent_px": extent_px, "softness_px": softness}
    return image, mask, params


def _polygon(rng, size, center, extent_px) -> np.ndarray:
    """A random star-shaped polygon (size, size) bool of about ``extent_px`` diameter."""
    from skimage.draw import polygon

    n_vertices = int(rng.integers(4, 8))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_vertices))
    radii = extent_px / 2 * rng.uniform(0.75, 1.1, n_vertices)
    rows = center[0] + radii * np.sin(angles)
    cols = center[1] + radii * np.cos(angles)
    shape = np.zeros((size, size), dtype=bool)
    rr, cc = polygon(rows, cols, shape=shape.shape)
    shape[rr, cc] = True
    return shape


def _cut(clean, rng, extent_px, foreign):
    """A missing piece with a sharp edge, filled with a blurred copy or a flat tone."""
    size = clean.shape[0]
    mean, std = _texture_stats(clean)
    extent_px = max(extent_px, 0.1 * size)  # a smaller cut of a smooth region shows nothing
    center = _pick_center(rng, size, extent_px)
    shape = _polygon(rng, size, center, extent_px)
    if not shape.any():  # a tiny polygon can miss every pixel center
        shape[tuple(np.clip(np.round(center).astype(int), 0, size - 1))] = True
    alpha, mask = _cut_alpha(_soften(shape, 0.5 * size / 256))
    fill_kind = str(rng.choice(["blurred_copy", "flat"]))
    if fill_kind == "blurred_copy":
        blur = rng.uniform(1.5, 3.0) * size / 256
        fill = ndimage.gaussian_filter(_shifted(clean, rng, extent_px), blur)
    else:
        blur = 1.0 * size / 256
        grain = ndimage.gaussian_filter(rng.standard_normal(clean.shape), blur)
        grain *= 0.25 * std / max(grain.std(), 1e-12)
        fill = mean + float(rng.choice([-1.0, 1.0])) * rng.uniform(0.3, 0.8) * std + grain
    # The torn edge of the missing piece casts a thin shadow just inside the outline.
    rim_width = max(int(round(size / 256)), 1)
    rim = shape & ~ndimage.binary_erosion(shape, iterations=rim_width)
    rim_darkness = rng.uniform(0.5, 1.2)
    fill = fill - rim * rim_darkness * std
    image = clean + alpha * (np.clip(fill, 0.0, 1.0) - clean)
    params = {"center": center, "extent_px": extent_px, "fill": fill_kind, "blur_px": blur,
              "rim_darkness_std": rim_darkness}
    return image, mask, params


def _warp_displacement(size, center, radius, strain, mode, direction):
    """A smooth local displacement field (2, size, size), zero beyond ``radius``.

    ``strain`` is the largest gradient of the displacement; below 1 the warp never folds.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = y - center[0], x - center[1]
    r = np.hypot(dy, dx)
    s = np.minimum(r / radius, 1.0)
    # Raised cosine: smooth, compact support, so the warp ends exactly at the radius.
    bump = 0.5 * (1 + np.cos(np.pi * s))
    if mode == "push":  # slope of the bump is at most pi / (2 radius)
        amplitude = strain * radius * 2 / np.pi
        return amplitude * bump * direction[:, None, None]
    # Swirl and bulge vanish at the center and the rim; their slope is at most pi / radius.
    amplitude = strain * radius / np.pi * direction[0]
    profile = amplitude * bump * np.sin(np.pi * s)
    unit_y, unit_x = dy / np.maximum(r, 1e-9), dx / np.maximum(r, 1e-9)
    if mode == "swirl":
        return profile * np.stack([unit_x, -unit_y])
    return profile * np.stack([unit_y, unit_x])  # bulge (or pinch, by the sign)


def _busiest_center(clean, rng, extent_px, candidates: int = 12) -> np.ndarray:
    """Of a few random centers, the one with the most structure around it.

    A warp of a flat area (the inside of a brick) changes nothing one could see.
    """
    size = clean.shape[0]
    energy = ndimage.gaussian_filter(
        ndimage.sobel(clean, 0) ** 2 + ndimage.sobel(clean, 1) ** 2, extent_px / 4
    )
    centers = [_pick_center(rng, size, extent_px) for _ in range(candidates)]
    scores = [energy[int(c[0]), int(c[1])] for c in centers]
    return centers[int(np.argmax(scores))]


def _warp(clean, rng, extent_px, foreign):
    """A local geometric warp (push, swirl or bulge): the 'bent grid' kind of defect."""
    size = clean.shape[0]
    # A warp moves pixels by a fraction of its radius: a small one moves nothing visibly.
    extent_px = max(extent_px, 0.14 * size) * 1.2
    center = _busiest_center(clean, rng, extent_px)
    radius = extent_px / 2
    strain = rng.uniform(0.5, 0.85)
    mode = str(rng.choice(["push", "swirl", "bulge"]))
    if mode == "push":
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.sin(angle), np.cos(angle)])
    else:
        direction = np.array([rng.choice([-1.0, 1.0])])
    displacement = _warp_displacement(size, center, radius, strain, mode, direction)
    mask = np.hypot(displacement[0], displacement[1]) > WARP_THRESHOLD_PX
    displacement = np.where(mask, displacement, 0.0)
    grid = np.mgrid[0:size, 0:size].astype(np.float64)
    # Cubic splines: linear interpolation would blur the warped area, a cue no real bend has.
    warped = ndimage.map_coordinates(clean, grid + displacement, order=3, mode="reflect")
    image = np.where(mask, warped, clean)
    params = {"center": center, "radius_px": radius, "strain": strain, "mode": mode,
              "max_shift_px": float(np.abs(displacement).max())}
    return image, mask, params


_DEFECT_MAKERS = {
    "scratch": _scratch,
    "hole": _hole,
    "stain": _stain,
    "contamination": _contamination,
    "cut": _cut,
    "warp": _warp,
}


def make_defect(
    clean: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    foreign: np.ndarray | None = None,
    extent: float | None = None,
) -> Defect:
    """Plant one defect of ``kind`` in a clean image.

    Args:
        clean: (H, W) float image in [0, 1], square.
        kind: one of :data:`DEFECT_KINDS`.
        rng: the source of randomness (same state, same defect).
        foreign: (H, W) float image of another texture, used by ``contamination`` only; a mesh
            is drawn when it is missing.
        extent: defect size as a fraction of the side; random in :data:`EXTENT_RANGE` if None.

    Returns:
        A :class:`Defect`: the image, its mask (True exactly where pixels changed, plus the
        pixels of the defect region whose value happened to stay the same) and its parameters.
    """
    if kind not in _DEFECT_MAKERS:
        raise GlancingError(f"unknown defect kind {kind!r}; choose from {DEFECT_KINDS}")
    size = clean.shape[0]
    fraction = rng.uniform(*EXTENT_RANGE) if extent is None else extent
    extent_px = max(fraction * size, 3.0)
    if kind == "contamination" and foreign is None:
        foreign, _ = render_mesh(rng, size)
    image, mask, params = _DEFECT_MAKERS[kind](clean, rng, extent_px, foreign)
    # Outside the mask the image must be the clean one to the bit; inside, in range.
    image = np.where(mask, np.clip(image, 0.0, 1.0), clean)
    return Defect(image, mask, {"kind": kind, **_rounded(params)})


# --------------------------------------------------------------------------- writing


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def _foreign_texture(seed: int, category: str, index: int, image_size: int):
    """A test-region image of another category, for contamination of ``category``.

    Returns ``(image (image_size, image_size) float, name of the other category)``.
    """
    rng = image_rng(seed, category, "foreign", index)
    others = [c for c in CATEGORIES if c != category]
    other = str(rng.choice(others))
    image, _ = render_clean(other, "test", rng, image_size)
    return image, other


def _generate_category(
    folder: Path, seed: int, category: str, image_size: int, n_train: int, n_test_good: int,
    n_test_defect: int,
) -> dict:
    """Write one category's images into ``folder``; return its manifest entry."""
    images: dict[str, dict] = {}
    for index in range(n_train):
        image, info = render_clean(category, "train", image_rng(seed, category, "train", index),
                                   image_size)
        name = f"train/good/{index:03d}.png"
        _save_png(folder / name, _to_uint8(image))
        images[name] = info
    for index in range(n_test_good):
        image, info = render_clean(category, "test", image_rng(seed, category, "test", index),
                                   image_size)
        name = f"test/good/{index:03d}.png"
        _save_png(folder / name, _to_uint8(image))
        images[name] = info
    counts = dict.fromkeys(DEFECT_KINDS, 0)
    for index in range(n_test_defect):
        kind = DEFECT_KINDS[index % len(DEFECT_KINDS)]  # even spread of the kinds
        rng = image_rng(seed, category, "test", n_test_good + index)
        clean, info = render_clean(category, "test", rng, image_size)
        foreign, foreign_name = None, None
        if kind == "contamination":
            foreign, foreign_name = _foreign_texture(seed, category, index, image_size)
        defect = make_defect(clean, kind, rng, foreign=foreign)
        number = counts[kind]
        counts[kind] += 1
        name = f"test/{kind}/{number:03d}.png"
        _save_png(folder / name, _to_uint8(defect.image))
        _save_png(folder / f"ground_truth/{kind}/{number:03d}_mask.png",
                  defect.mask.astype(np.uint8) * 255)
        params = dict(defect.params, mask_pixels=int(defect.mask.sum()))
        if foreign_name:
            params["foreign"] = foreign_name
        images[name] = {**info, "defect": params}
    entry = {"source": SOURCE_NOTES[category], "images": images}
    if category in PHOTO_CATEGORIES:
        entry["train_region"] = [TRAIN_ROWS[0], 0, TRAIN_ROWS[1], 512]
        entry["test_region"] = [TEST_ROWS[0], 0, TEST_ROWS[1], 512]
    return entry


README_TEXT = """# glancing embedded dataset (format v{version}, seed {seed})

Generated offline by `glancing.data.embedded.generate`; delete this folder to rebuild it.
Layout: MVTec AD (`<category>/train/good`, `<category>/test/<kind>`,
`<category>/ground_truth/<kind>/NNN_mask.png`, masks 0/255).

Sources, all CC0 1.0 (public domain dedication):
{sources}

Photo categories: train crops come from source rows {train_rows[0]}-{train_rows[1]}, test crops
from rows {test_rows[0]}-{test_rows[1]} (disjoint); every image's source box, flips and turns,
and every defect's kind and parameters are in `manifest.json`.
Defect kinds: {kinds}. The images are released under CC0 1.0 as well.
"""


def _write_metadata(folder: Path, seed: int, image_size: int, entries: dict) -> None:
    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "image_size": image_size,
        "licence": "CC0 1.0; sources are the CC0 textures bundled in scikit-image",
        "defect_kinds": list(DEFECT_KINDS),
        "categories": entries,
    }
    sources = "\n".join(f"- {c}: {SOURCE_NOTES[c]}" for c in entries)
    readme = README_TEXT.format(version=FORMAT_VERSION, seed=seed, sources=sources,
                                train_rows=TRAIN_ROWS, test_rows=TEST_ROWS,
                                kinds=", ".join(DEFECT_KINDS))
    (folder / "README.md").write_text(readme)
    # Written last: its presence marks a complete dataset.
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def generate(
    root: Path,
    seed: int = 0,
    categories: tuple[str, ...] = CATEGORIES,
    image_size: int = 256,
    n_train: int = 100,
    n_test_good: int = 20,
    n_test_defect: int = 42,
) -> Path:
    """Write the embedded dataset to ``root`` atomically and return ``root``.

    Everything is written into a hidden sibling folder which is renamed to ``root`` at the end,
    so an interrupted run leaves no half-written dataset. When another process finished first
    (``root`` appeared meanwhile), this run's copy is discarded and the other one is kept.
    """
    root = Path(root)
    categories = tuple(categories)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise GlancingError(f"unknown embedded categories {unknown}; choose from {CATEGORIES}")
    if root.exists():
        raise GlancingError(f"{root} already exists; delete it to regenerate the embedded dataset")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        entries = {
            category: _generate_category(staging / category, seed, category, image_size,
                                         n_train, n_test_good, n_test_defect)
            for category in categories
        }
        _write_metadata(staging, seed, image_size, entries)
        try:
            os.rename(staging, root)  # atomic; fails if a concurrent run got there first
        except OSError:
            if not (root / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a no-op after a successful rename
    return root


def default_root(seed: int = 0) -> Path:
    """Where :func:`ensure_embedded` keeps the dataset for ``seed``."""
    return cache_dir() / "embedded" / f"v{FORMAT_VERSION}-seed{seed}"


def ensure_embedded(seed: int = 0, root: Path | None = None) -> Path:
    """Return the embedded dataset's root, generating it (all categories) when missing."""
    root = Path(root) if root is not None else default_root(seed)
    if (root / "manifest.json").is_file():
        return root
    if root.exists():
        raise GlancingError(
            f"{root} exists but holds no complete embedded dataset (no manifest.json); "
            "delete it and it will be regenerated"
        )
    return generate(root, seed=seed)
