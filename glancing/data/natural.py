"""Varied natural photographs for distilling the Local-Net, with no download.

Uninformed Students and GLANCE distil the Local-Net on patches of varied natural images, not on
the target category: distilling on the target alone was reported to keep the student from
converging (denguir/student-teacher-anomaly-detection, issue 18). The photographs bundled with
scikit-image serve here. The texture photographs (brick, gravel, grass) are left out on purpose:
the embedded dataset is cut from them, test images included.
"""

from __future__ import annotations

import numpy as np
import skimage.data
import torch

# Bundled in scikit-image's wheel (no pooch download needed).
NATURAL_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "camera", "coins", "moon", "retina", "cell", "stereo_motorcycle", "clock", "page", "text",
)


def natural_images(names=NATURAL_PHOTOS, max_side: int = 512) -> list[torch.Tensor]:
    """The bundled photographs as ``(3, H, W)`` float tensors in ``[0, 1]``.

    Grayscale photographs are repeated to three channels; large ones are downscaled so that their
    long side is at most ``max_side`` (the retina photo is 1411 px).
    """
    images = []
    for name in names:
        array = getattr(skimage.data, name)()
        if isinstance(array, tuple):  # stereo pairs: keep the left view
            array = array[0]
        image = torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0
        image = image[None].repeat(3, 1, 1) if image.ndim == 2 else image.permute(2, 0, 1)[:3]
        scale = max_side / max(image.shape[1:])
        if scale < 1:
            image = torch.nn.functional.interpolate(image[None], scale_factor=scale,
                                                    mode="bilinear", antialias=True)[0]
        images.append(image.clamp(0, 1))
    return images


def random_patches(images: list[torch.Tensor], count: int, patch_size: int,
                   generator: torch.Generator, scales=(0.5, 1.0, 2.0)) -> torch.Tensor:
    """``count`` random ``(3, p, p)`` patches from ``images``, at random scales.

    A patch at scale s covers ``s * p`` source pixels resized to ``p``, so the Local-Net sees
    structures of several sizes. Returns ``(count, 3, p, p)``.
    """
    patches = torch.empty(count, 3, patch_size, patch_size)
    for i in range(count):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        scale = scales[int(torch.randint(len(scales), (1,), generator=generator))]
        side = min(int(round(patch_size * scale)), *image.shape[1:])
        top = int(torch.randint(image.shape[1] - side + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[2] - side + 1, (1,), generator=generator))
        crop = image[:, top : top + side, left : left + side]
        if side != patch_size:
            crop = torch.nn.functional.interpolate(crop[None], size=(patch_size, patch_size),
                                                   mode="bilinear", antialias=True)[0]
        patches[i] = crop
    return patches.clamp(0, 1)
