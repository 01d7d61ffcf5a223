"""Shared fixtures: a tiny seeded MVTec-layout tree, and the real image sets when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_mvtec_tree(root: Path, category: str = "widget", size=(40, 48), seed: int = 0,
                     n_train: int = 6, n_good: int = 2, defects=("scratch",), n_defect: int = 2,
                     grayscale: bool = False) -> Path:
    """Write a small MVTec-layout tree of random images; defect masks are rectangles.

    ``size`` is (height, width). Returns the root (the folder holding the category).
    """
    rng = np.random.default_rng(seed)
    height, width = size
    shape = (height, width) if grayscale else (height, width, 3)

    def image(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)

    cat = root / category
    for i in range(n_train):
        image(cat / "train" / "good" / f"{i:03d}.png")
    for i in range(n_good):
        image(cat / "test" / "good" / f"{i:03d}.png")
    for defect in defects:
        for i in range(n_defect):
            image(cat / "test" / defect / f"{i:03d}.png")
            mask = np.zeros((height, width), np.uint8)
            mask[height // 4 : height // 2, width // 4 : width // 2] = 255
            mask_path = cat / "ground_truth" / defect / f"{i:03d}_mask.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mask_path)
    return root


@pytest.fixture
def tiny_tree(tmp_path: Path) -> Path:
    return write_mvtec_tree(tmp_path / "data")


def _real_root() -> Path | None:
    root = os.environ.get("GLANCING_DATA_ROOT")
    return Path(root) if root and Path(root).is_dir() else None


def real_dataset(relative: str) -> Path:
    """A real image set under the data root, or skip the test saying what is missing."""
    root = _real_root()
    if root is None:
        pytest.skip("GLANCING_DATA_ROOT is not set (make test sets it to ../shared/data "
                    "when that folder exists)")
    path = root / relative
    if not path.is_dir():
        pytest.skip(f"{relative} is not under the data root {root}")
    return path
