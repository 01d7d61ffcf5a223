"""A loader for the MVTec AD folder layout, for any root and category.

Layout (Bergmann et al., CVPR 2019)::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/*.png
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png

The embedded default dataset, the Magnetic Tile set and MVTec AD itself all use it, so one class
reads them all. Every file is checked when the dataset is built (header reads only, so this is
fast): a broken tree fails at once with one line naming the file and the fix, not in the middle
of training.

Images come out as float RGB in ``[0, 1]`` (grayscale is repeated to three channels), letterboxed
to the configured side (see :mod:`glancing.data.letterbox`); masks with nearest neighbour. The
ImageNet normalisation belongs to the networks, not to the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets import VisionDataset
from torchvision.transforms.v2.functional import pil_to_tensor

from glancing.data.letterbox import letterbox, letterbox_box
from glancing.errors import GlancingError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
GOOD = "good"


@dataclass(frozen=True)
class Record:
    """One image of the tree: where it is, what it is, and its size on disk."""

    path: Path
    label: int  # 0 normal, 1 anomalous
    defect: str  # "good" or the defect folder's name
    mask_path: Path | None
    height: int
    width: int


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header; a clear error when the file is not an image."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError) as err:
        raise GlancingError(
            f"cannot read image {path} ({type(err).__name__}); replace or delete the file"
        ) from None
    return height, width


def validation_split(paths: list[Path], fraction: float, seed: int) -> tuple[list, list]:
    """Split sorted train/good paths into (train, val), fixed by ``seed``.

    The validation images are normal images the networks never train on; every choice that must
    not see the test set (score normalisation, lambda_s, thresholds) is made on them. At least one
    image goes to each side whenever there are two or more.
    """
    if fraction <= 0 or len(paths) < 2:
        return list(paths), []
    n_val = min(len(paths) - 1, max(1, math.ceil(fraction * len(paths))))
    order = np.random.default_rng(seed).permutation(len(paths))
    val_idx = set(order[:n_val].tolist())
    train = [p for i, p in enumerate(paths) if i not in val_idx]
    val = [p for i, p in enumerate(paths) if i in val_idx]
    return train, val


def read_image(path: str | Path, mode: str = "RGB") -> torch.Tensor:
    """``(C, H, W)`` uint8 tensor of an image file converted to PIL ``mode`` ("RGB" or "L")."""
    try:
        with Image.open(path) as img:
            return pil_to_tensor(img.convert(mode))
    except (UnidentifiedImageError, OSError) as err:
        raise GlancingError(f"cannot decode image {path} ({err}); replace the file") from None


class MVTecDataset(VisionDataset):
    """One category of an MVTec-layout tree, as a torchvision dataset.

    Args:
        root: the folder that holds the category folders.
        category: the category folder's name, e.g. ``"transistor"``.
        split: ``"train"`` (train/good without the validation images), ``"val"`` (the held-out
            train/good images) or ``"test"`` (test/good and every defect folder).
        image_size: side S of the square network input.
        min_side: the smallest side an image may have *after* letterboxing (the patch size p);
            a smaller image cannot hold one patch and is rejected.
        val_fraction: share of train/good held out as the validation split.
        seed: fixes which images are held out.
        transform: optional callable applied to the item dict.

    Each item is a dict:

    - ``image``: ``(3, S, S)`` float in ``[0, 1]``
    - ``mask``: ``(1, S, S)`` float, 1 on defect pixels
    - ``valid``: ``(1, S, S)`` bool, False on letterbox padding
    - ``label``: int, 0 normal / 1 anomalous;  ``defect``: str;  ``path``: str
    - ``box``: ``(4,)`` long, top/left/height/width of the image inside the canvas
    """

    def __init__(
        self,
        root: str | Path,
        category: str,
        split: str = "train",
        image_size: int = 256,
        min_side: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        transform=None,
    ) -> None:
        super().__init__(str(root), transform=transform)
        if split not in SPLITS:
            raise GlancingError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        self.category = category
        self.split = split
        self.image_size = image_size
        self.min_side = min_side
        self.folder = Path(root) / category
        if not self.folder.is_dir():
            raise GlancingError(
                f"category {category!r} not found: {self.folder} is not a folder; "
                f"available: {', '.join(list_categories(root)) or 'none'}"
            )
        self.records = self._scan(val_fraction, seed)

    # -- scanning and checking the tree ------------------------------------------------------

    def _scan(self, val_fraction: float, seed: int) -> list[Record]:
        train_dir = self.folder / "train" / GOOD
        train_files = _image_files(train_dir) if train_dir.is_dir() else []
        if not train_files:
            raise GlancingError(
                f"no training images in {train_dir}: put defect-free images "
                f"({', '.join(IMAGE_SUFFIXES)}) there"
            )
        if self.split in ("train", "val"):
            train, val = validation_split(train_files, val_fraction, seed)
            chosen = train if self.split == "train" else val
            return [self._record(p, GOOD) for p in chosen]
        test_dir = self.folder / "test"
        if not test_dir.is_dir():
            raise GlancingError(f"no test folder {test_dir}: the MVTec layout needs test/good "
                                "and test/<defect> folders")
        records = []
        for defect_dir in sorted(d for d in test_dir.iterdir() if d.is_dir()):
            records += [self._record(p, defect_dir.name) for p in _image_files(defect_dir)]
        if not records:
            raise GlancingError(f"no test images under {test_dir}")
        return records

    def _record(self, path: Path, defect: str) -> Record:
        height, width = _image_size(path)
        self._check_fits(path, height, width)
        if defect == GOOD:
            return Record(path, 0, GOOD, None, height, width)
        mask_path = self.folder / "ground_truth" / defect / f"{path.stem}_mask.png"
        if not mask_path.is_file():
            raise GlancingError(
                f"defect image {path} has no mask: expected {mask_path} "
                "(add it, or move the image out of the test set)"
            )
        mask_hw = _image_size(mask_path)
        if mask_hw != (height, width):
            raise GlancingError(
                f"mask {mask_path} is {mask_hw[1]}x{mask_hw[0]} but its image {path} is "
                f"{width}x{height}; masks must have the image's size"
            )
        return Record(path, 1, defect, mask_path, height, width)

    def _check_fits(self, path: Path, height: int, width: int) -> None:
        if self.min_side is None:
            return
        box = letterbox_box(height, width, self.image_size)
        if min(box.height, box.width) < self.min_side:
            raise GlancingError(
                f"image {path} ({width}x{height}) is {box.width}x{box.height} at input size "
                f"{self.image_size}, smaller than the patch ({self.min_side}); use a larger "
                "image size or a smaller patch, or remove the image"
            )

    # -- the torch Dataset protocol ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = read_image(record.path, "RGB").float() / 255.0
        image, valid, box = letterbox(image, self.image_size)
        if record.mask_path is None:
            mask = torch.zeros((1, self.image_size, self.image_size))
        else:
            raw = (read_image(record.mask_path, "L") > 127).to(torch.uint8)
            mask, _, _ = letterbox(raw, self.image_size, nearest=True)
            mask = mask.float()
        item = {
            "image": image,
            "mask": mask,
            "valid": valid,
            "label": record.label,
            "defect": record.defect,
            "path": str(record.path),
            "box": torch.tensor(box, dtype=torch.long),
        }
        return self.transform(item) if self.transform is not None else item

    # -- conveniences ------------------------------------------------------------------------

    @property
    def defect_types(self) -> list[str]:
        return sorted({r.defect for r in self.records})

    def extra_repr(self) -> str:
        counts = {d: sum(r.defect == d for r in self.records) for d in self.defect_types}
        return (f"Category: {self.category}\nSplit: {self.split}\n"
                f"Image size: {self.image_size}\nCounts: {counts}")


def list_categories(root: str | Path) -> list[str]:
    """Names of the category folders under ``root`` (those with a ``train`` or ``test`` folder)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and ((d / "train").is_dir() or (d / "test").is_dir()))
