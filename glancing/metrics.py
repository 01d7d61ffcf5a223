"""The MVTec AD evaluation protocol: pixel AUROC, AU-PRO and image AUROC.

All metrics take anomaly maps of shape ``(N, H, W)`` where a higher score means "more
anomalous", and an optional boolean ``valid`` mask of the same shape: pixels outside it (for
example the letterbox padding around a resized image) are never scored.

- **Pixel AUROC** treats every pixel of the test set as one sample and computes the area under
  the ROC curve against the ground-truth masks. It is the probability that a random anomalous
  pixel scores higher than a random normal pixel (ties count one half), so large defects
  dominate it.
- **AU-PRO** (Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021) weights every
  connected defect region equally: for each threshold the per-region overlap (share of the
  region's pixels above the threshold) is averaged over all regions of all images, and plotted
  against the false positive rate on normal pixels. The area under this curve up to a false
  positive rate of ``fpr_limit`` (0.3 by default), divided by ``fpr_limit``, lies in [0, 1].
- **Image AUROC** scores each image by the maximum of its map and computes the ROC AUC against
  the image labels (1 = defective); it measures detection, not localization.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

__all__ = [
    "area_under_curve",
    "au_pro",
    "evaluate",
    "image_auroc",
    "image_scores",
    "pixel_auroc",
    "pro_curve",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _to_numpy(x, name: str) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor or nested sequence) as a numpy array."""
    if x is None:
        raise ValueError(f"{name} is None")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_maps(maps) -> np.ndarray:
    maps = _to_numpy(maps, "maps")
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got shape {maps.shape}")
    if maps.shape[0] == 0:
        raise ValueError("maps is empty: no images to evaluate")
    if maps.dtype == bool or not np.issubdtype(maps.dtype, np.number):
        raise ValueError(f"maps must hold numeric scores, got dtype {maps.dtype}")
    maps = maps.astype(np.float64, copy=False)
    if not np.all(np.isfinite(maps)):
        raise ValueError("maps contains NaN or infinite scores")
    return maps


def _check_binary(x, name: str, shape: tuple[int, ...]) -> np.ndarray:
    x = _to_numpy(x, name)
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (like maps), got shape {x.shape}")
    if x.dtype != bool:
        if not np.all((x == 0) | (x == 1)):
            raise ValueError(
                f"{name} must be binary (bool or 0/1); threshold it first (e.g. {name} > 0)"
            )
        x = x.astype(bool)
    return x


def _check_valid(valid, shape: tuple[int, ...]) -> np.ndarray:
    if valid is None:
        return np.ones(shape, dtype=bool)
    return _check_binary(valid, "valid", shape)


def _check_labels(labels, n: int) -> np.ndarray:
    labels = _to_numpy(labels, "labels")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one per map), got shape {labels.shape}")
    return _check_binary(labels, "labels", (n,))


def pixel_auroc(maps, masks, valid=None) -> float:
    """Area under the ROC curve over all (valid) pixels of a test set.

    Args:
        maps: ``(N, H, W)`` float anomaly scores, higher = more anomalous.
        masks: ``(N, H, W)`` binary ground truth (1 = anomalous pixel).
        valid: optional ``(N, H, W)`` bool; only pixels where it is True are scored.

    Returns:
        The pixel-level ROC AUC in [0, 1] (ties count one half).

    Raises:
        ValueError: on bad shapes or values, or when the valid pixels are all anomalous or all
            normal (the AUROC is then undefined).
    """
    maps = _check_maps(maps)
    masks = _check_binary(masks, "masks", maps.shape)
    valid = _check_valid(valid, maps.shape)
    y = masks[valid]
    if not y.any():
        raise ValueError("pixel AUROC is undefined: there are no anomalous pixels (masks all 0)")
    if y.all():
        raise ValueError("pixel AUROC is undefined: there are no normal pixels (masks all 1)")
    return float(roc_auc_score(y, maps[valid]))


def image_scores(maps, valid=None) -> np.ndarray:
    """Image-level anomaly scores: the maximum of each map over its valid pixels.

    Args:
        maps: ``(N, H, W)`` float anomaly scores.
        valid: optional ``(N, H, W)`` bool; only pixels where it is True count.

    Returns:
        ``(N,)`` float64 scores.
    """
    maps = _check_maps(maps)
    valid = _check_valid(valid, maps.shape)
    empty = ~valid.reshape(len(valid), -1).any(axis=1)
    if empty.any():
        raise ValueError(f"valid has no True pixel in image(s) {np.flatnonzero(empty).tolist()}")
    return np.where(valid, maps, -np.inf).reshape(len(maps), -1).max(axis=1)


def image_auroc(maps, labels, valid=None) -> float:
    """ROC AUC of image-level detection, an image's score being the max of its map.

    Args:
        maps: ``(N, H, W)`` float anomaly scores.
        labels: ``(N,)`` image labels in {0, 1} (1 = defective).
        valid: optional ``(N, H, W)`` bool; the max is taken over valid pixels only.

    Returns:
        The image-level ROC AUC in [0, 1].

    Raises:
        ValueError: on bad shapes or values, or when all labels are equal (AUROC undefined).
    """
    scores = image_scores(maps, valid)
    labels = _check_labels(labels, len(scores))
    if labels.all() or not labels.any():
        raise ValueError(
            "image AUROC is undefined: labels hold only one class "
            f"(all {int(labels[0])}); it needs both normal (0) and defective (1) images"
        )
    return float(roc_auc_score(labels, scores))


def pro_curve(maps, masks, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """The exact per-region-overlap (PRO) curve over all thresholds.

    Follows the protocol of the official MVTec AD evaluation code (Bergmann et al., "The MVTec
    Anomaly Detection Dataset: A Comprehensive Real-World Dataset for Unsupervised Anomaly
    Detection", IJCV 2021). Ground-truth regions are the 8-connected components of each
    image's mask (restricted to valid pixels). Every distinct score ``t`` is a threshold; at
    ``t`` a pixel is called anomalous when its score is ``>= t``, and

    - PRO = mean over all regions of all images of (region pixels called anomalous / region
      size),
    - FPR = share of all normal valid pixels (of every image, defective ones included) called
      anomalous.

    The curve is computed in one pass: scores are sorted once (descending), each anomalous pixel
    weighs ``1 / region size / number of regions`` and each normal pixel
    ``1 / number of normal pixels``, the cumulative sums give PRO and FPR, and only the last
    index of each run of tied scores is kept (ties are one threshold step).

    Args:
        maps: ``(N, H, W)`` float anomaly scores, higher = more anomalous.
        masks: ``(N, H, W)`` binary ground truth (1 = anomalous pixel).
        valid: optional ``(N, H, W)`` bool; only pixels where it is True are scored.

    Returns:
        ``(fpr, pro)``, two float64 arrays of equal length ``K + 1`` for ``K`` distinct scores,
        starting at the point ``(0, 0)`` and ending at ``(1, 1)``; ``fpr`` is non-decreasing
        and ``pro`` too (thresholds in descending order).

    Raises:
        ValueError: on bad shapes or values, or when there are no anomalous or no normal valid
            pixels.
    """
    maps = _check_maps(maps)
    masks = _check_binary(masks, "masks", maps.shape)
    valid = _check_valid(valid, maps.shape)
    positive = masks & valid

    # Label the 8-connected regions of each image, with ids unique across the test set.
    regions = np.zeros(maps.shape, dtype=np.int64)
    n_regions = 0
    for i in range(len(maps)):
        if positive[i].any():
            lab, n = ndimage.label(positive[i], structure=_EIGHT_CONNECTED)
            regions[i] = np.where(lab > 0, lab + n_regions, 0)
            n_regions += n
    if n_regions == 0:
        raise ValueError("PRO is undefined: there are no anomalous pixels (masks all 0)")

    scores = maps[valid]
    region_of = regions[valid]
    is_normal = region_of == 0
    n_normal = int(is_normal.sum())
    if n_normal == 0:
        raise ValueError("PRO is undefined: there are no normal pixels (masks all 1)")

    sizes = np.bincount(region_of, minlength=n_regions + 1).astype(np.float64)
    pro_weight = np.where(is_normal, 0.0, 1.0 / (sizes[region_of] * n_regions))

    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    fpr = np.cumsum(is_normal[order], dtype=np.int64) / n_normal  # exact 1 at the end
    pro = np.minimum(np.cumsum(pro_weight[order]), 1.0)
    # Snap the ends of the PRO axis to exact values: 0 before the first anomalous pixel, 1 once
    # all of them are in (the float cumulative sum is off by rounding there).
    found = np.cumsum(~is_normal[order], dtype=np.int64)
    pro[found == 0] = 0.0
    pro[found == len(found) - n_normal] = 1.0
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    fpr = np.concatenate(([0.0], fpr[last_of_tie]))
    pro = np.concatenate(([0.0], pro[last_of_tie]))
    return fpr, pro


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def area_under_curve(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Normalized area under a PRO curve for ``fpr`` in ``[0, fpr_limit]``.

    The curve is cut at exactly ``fpr_limit`` (PRO interpolated linearly there), integrated with
    the trapezoid rule and divided by ``fpr_limit`` (not by the last FPR reached), so the result
    lies in [0, 1].

    Args:
        fpr: ``(K,)`` non-decreasing false positive rates, starting at 0 and ending at 1.
        pro: ``(K,)`` PRO values in [0, 1] at those rates.
        fpr_limit: upper integration limit in (0, 1].
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr = np.asarray(fpr, dtype=np.float64)
    pro = np.asarray(pro, dtype=np.float64)
    inside = int(np.searchsorted(fpr, fpr_limit, side="right"))  # points with fpr <= limit
    x, y = fpr[:inside], pro[:inside]
    if inside < len(fpr):  # the next point lies past the limit: interpolate at the limit
        x0, x1, y0, y1 = fpr[inside - 1], fpr[inside], pro[inside - 1], pro[inside]
        y_limit = y0 + (fpr_limit - x0) * (y1 - y0) / (x1 - x0)
        x, y = np.append(x, fpr_limit), np.append(y, y_limit)
    return _trapezoid(x, y) / fpr_limit


def au_pro(maps, masks, fpr_limit: float = 0.3, valid=None) -> float:
    """Area under the PRO curve up to ``fpr_limit``, normalized to [0, 1].

    Implements the MVTec AD protocol (Bergmann et al., IJCV 2021): see :func:`pro_curve` for
    the curve and :func:`area_under_curve` for the integration.

    Args:
        maps: ``(N, H, W)`` float anomaly scores, higher = more anomalous.
        masks: ``(N, H, W)`` binary ground truth (1 = anomalous pixel).
        fpr_limit: upper integration limit on the false positive rate, in (0, 1].
        valid: optional ``(N, H, W)`` bool; only pixels where it is True are scored.

    Returns:
        AU-PRO in [0, 1]: 1 for a perfect map, 0 when every normal pixel outscores every
        anomalous one.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro = pro_curve(maps, masks, valid=valid)
    return area_under_curve(fpr, pro, fpr_limit)


def evaluate(maps, masks, labels, valid=None, fpr_limit: float = 0.3) -> dict[str, float]:
    """All three MVTec AD metrics for one test set.

    Args:
        maps: ``(N, H, W)`` float anomaly scores, higher = more anomalous.
        masks: ``(N, H, W)`` binary ground truth (1 = anomalous pixel).
        labels: ``(N,)`` image labels in {0, 1} (1 = defective).
        valid: optional ``(N, H, W)`` bool; only pixels where it is True are scored.
        fpr_limit: AU-PRO integration limit.

    Returns:
        ``{"pixel_auroc": float, "au_pro": float, "image_auroc": float}``.
    """
    maps = _check_maps(maps)
    return {
        "pixel_auroc": pixel_auroc(maps, masks, valid=valid),
        "au_pro": au_pro(maps, masks, fpr_limit=fpr_limit, valid=valid),
        "image_auroc": image_auroc(maps, labels, valid=valid),
    }
