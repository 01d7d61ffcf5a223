"""The trivial per-pixel z-score baseline.

Each pixel of a test image is compared with the same pixel across the training images: the score
is ``|x - mean| / std``, the maximum over channels. It finds defects that are brighter or darker
than what that pixel usually shows, and nothing else, so it measures how much of a dataset can be
solved by intensity alone. A variant blurs every image first (Gaussian, sigma 2 px), which turns
it into a local-mean detector that catches soft stains better.

:func:`baseline_report` scores a dataset in the MVTec AD layout straight from its PNG files;
:func:`evaluate_zscore` scores loaded datasets (the ``glancing data baseline`` command).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from glancing.errors import GlancingError

MIN_STD = 1e-3  # a pixel that never varies in training must not turn every change into infinity


def _as_nchw(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) -> (N, C, H, W) float64."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        return images
    raise ValueError(f"expected (N, H, W) or (N, C, H, W) images, got shape {images.shape}")


def fit_zscore(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and standard deviation of the training images.

    Args:
        train: (N, H, W) or (N, C, H, W) float images.

    Returns:
        ``(mean, std)``, each (C, H, W) (C = 1 for grayscale input); std is at least
        :data:`MIN_STD`.
    """
    train = _as_nchw(train)
    return train.mean(axis=0), np.maximum(train.std(axis=0), MIN_STD)


def zscore_map(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Absolute z-score of every pixel, maximum over channels.

    Args:
        images: (N, H, W) or (N, C, H, W) float images, the layout used in :func:`fit_zscore`.
        mean, std: (C, H, W) from :func:`fit_zscore`.

    Returns:
        (N, H, W) anomaly scores, higher is more anomalous.
    """
    return (np.abs(_as_nchw(images) - mean) / std).max(axis=1)


def blur_images(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the spatial axes only; (N, H, W) or (N, C, H, W) in, same shape out."""
    images = np.asarray(images, dtype=np.float64)
    spatial_only = (0,) * (images.ndim - 2) + (sigma, sigma)
    return ndimage.gaussian_filter(images, spatial_only)


def _as_numpy(value) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (torch stays an optional dependency here)."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def evaluate_zscore(train, test, blur_sigma: float = 0.0) -> dict[str, float]:
    """Fit the baseline on one dataset and score another with the MVTec AD metrics.

    Args:
        train, test: sequences of item dicts as :class:`glancing.data.MVTecDataset` yields them:
            ``image`` (C, S, S) float, and for ``test`` also ``mask`` (1, S, S), ``valid``
            (1, S, S) bool and ``label`` int.
        blur_sigma: Gaussian blur (pixels) applied to every image first; 0 for none.

    Returns:
        ``{"pixel_auroc", "au_pro", "image_auroc"}`` from :func:`glancing.metrics.evaluate`, with
        letterbox padding (``valid`` False) left out.
    """
    from glancing.metrics import evaluate

    def prepared(item) -> np.ndarray:  # (1, C, S, S)
        image = _as_numpy(item["image"]).astype(np.float64)[None]
        return blur_images(image, blur_sigma) if blur_sigma > 0 else image

    # Running sums instead of one stacked array: a real training set need not fit in memory.
    total = total_sq = None
    for index in range(len(train)):
        image = prepared(train[index])[0]
        total = image if total is None else total + image
        total_sq = image**2 if total_sq is None else total_sq + image**2
    if total is None:
        raise GlancingError("the z-score baseline needs at least one training image")
    mean = total / len(train)
    std = np.maximum(np.sqrt(np.maximum(total_sq / len(train) - mean**2, 0.0)), MIN_STD)
    maps, masks, valid, labels = [], [], [], []
    for index in range(len(test)):
        item = test[index]
        maps.append(zscore_map(prepared(item), mean, std)[0])
        masks.append(_as_numpy(item["mask"])[0] > 0.5)
        valid.append(_as_numpy(item["valid"])[0].astype(bool))
        labels.append(int(item["label"]))
    return evaluate(np.stack(maps), np.stack(masks), np.array(labels), valid=np.stack(valid))


def _load_image(path: Path) -> np.ndarray:
    """A PNG as float in [0, 1]: (H, W) for grayscale, (3, H, W) for colour."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("L" if image.mode in ("L", "I;16", "1") else "RGB"))
    array = array.astype(np.float64) / 255.0
    return array if array.ndim == 2 else array.transpose(2, 0, 1)


def _load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    if not path.is_file():  # MVTec has no mask file for good images
        return np.zeros(shape, dtype=bool)
    with Image.open(path) as mask:
        return np.asarray(mask.convert("L")) > 127


def load_category(root: Path, category: str):
    """Load a category in the MVTec AD layout.

    Returns ``(train (N, ...), test (M, ...), masks (M, H, W) bool, kinds list[str] of M)``.
    """
    folder = Path(root) / category
    train_paths = sorted((folder / "train" / "good").glob("*.png"))
    if not train_paths:
        raise GlancingError(f"no training images in {folder / 'train' / 'good'}; "
                            "check the dataset root and category name")
    train = np.stack([_load_image(p) for p in train_paths])
    test, masks, kinds = [], [], []
    for kind_folder in sorted(p for p in (folder / "test").iterdir() if p.is_dir()):
        for path in sorted(kind_folder.glob("*.png")):
            image = _load_image(path)
            test.append(image)
            mask_path = folder / "ground_truth" / kind_folder.name / f"{path.stem}_mask.png"
            masks.append(_load_mask(mask_path, image.shape[-2:]))
            kinds.append(kind_folder.name)
    return train, np.stack(test), np.stack(masks), kinds


def _pixel_auroc(scores: np.ndarray, masks: np.ndarray) -> float:
    return float(roc_auc_score(masks.ravel(), scores.ravel()))


def baseline_report(root: Path, category: str, blur_sigma: float = 2.0) -> dict:
    """Pixel AUROC of the plain and the blurred z-score baseline on one category.

    Returns ``{'category', 'pixel_auroc', 'pixel_auroc_blur', 'per_kind': {kind: {'plain',
    'blur'}}}``; a per-kind AUROC is computed over that kind's images plus the good ones.
    """
    train, test, masks, kinds = load_category(root, category)
    plain = zscore_map(test, *fit_zscore(train))
    blurred = zscore_map(blur_images(test, blur_sigma), *fit_zscore(blur_images(train, blur_sigma)))
    kinds_array = np.array(kinds)
    per_kind = {}
    for kind in sorted(set(kinds) - {"good"}):
        chosen = (kinds_array == kind) | (kinds_array == "good")
        per_kind[kind] = {
            "plain": _pixel_auroc(plain[chosen], masks[chosen]),
            "blur": _pixel_auroc(blurred[chosen], masks[chosen]),
        }
    return {
        "category": category,
        "pixel_auroc": _pixel_auroc(plain, masks),
        "pixel_auroc_blur": _pixel_auroc(blurred, masks),
        "per_kind": per_kind,
    }
