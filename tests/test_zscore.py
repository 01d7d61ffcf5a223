"""The trivial per-pixel z-score baseline."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from glancing.baselines.zscore import (
    baseline_report,
    blur_images,
    evaluate_zscore,
    fit_zscore,
    zscore_map,
)
from glancing.data import embedded


def _noise_images(n: int, rng: np.random.Generator, shape=(32, 32)) -> np.ndarray:
    return np.clip(0.5 + 0.05 * rng.standard_normal((n, *shape)), 0, 1)


def test_planted_bright_blob_scores_high():
    rng = np.random.default_rng(0)
    mean, std = fit_zscore(_noise_images(200, rng))
    test = _noise_images(4, rng)
    masks = np.zeros(test.shape, dtype=bool)
    masks[:, 10:18, 12:20] = True
    test[masks] = 0.95  # nine standard deviations above the training mean
    scores = zscore_map(test, mean, std)
    assert scores.shape == test.shape
    assert scores[masks].min() > 6 > scores[~masks].max()
    assert roc_auc_score(masks.ravel(), scores.ravel()) > 0.99


def test_channels_take_the_maximum():
    rng = np.random.default_rng(1)
    train = np.stack([_noise_images(20, rng)] * 3, axis=1)  # (N, 3, H, W)
    mean, std = fit_zscore(train)
    assert mean.shape == std.shape == (3, 32, 32)
    test = train[:2].copy()
    test[0, 2, 5, 5] = 1.0  # only the blue channel changes
    scores = zscore_map(test, mean, std)
    assert scores.shape == (2, 32, 32)
    assert scores[0, 5, 5] == pytest.approx(np.abs(1.0 - mean[2, 5, 5]) / std[2, 5, 5])


def test_constant_training_pixels_do_not_divide_by_zero():
    mean, std = fit_zscore(np.full((5, 8, 8), 0.3))
    assert np.isfinite(zscore_map(np.full((1, 8, 8), 0.4), mean, std)).all()


def test_blur_is_spatial_only():
    images = np.zeros((2, 3, 16, 16))
    images[0, 1, 8, 8] = 1.0
    blurred = blur_images(images, 2.0)
    assert blurred.shape == images.shape
    assert blurred[1].max() == 0 and blurred[0, 0].max() == 0 and blurred[0, 2].max() == 0
    assert blurred[0, 1].sum() == pytest.approx(1.0, abs=1e-6)


def test_baseline_report_on_a_small_embedded_set(tmp_path):
    root = embedded.generate(tmp_path / "data", categories=("brick",), image_size=64,
                             n_train=8, n_test_good=2, n_test_defect=6)
    report = baseline_report(root, "brick")
    assert report["category"] == "brick"
    assert set(report["per_kind"]) == set(embedded.DEFECT_KINDS)
    for value in (report["pixel_auroc"], report["pixel_auroc_blur"]):
        assert 0.0 <= value <= 1.0


def test_evaluate_zscore_on_item_dicts():
    """Items as MVTecDataset yields them; the padding column must be left out of the scores."""
    rng = np.random.default_rng(2)

    def item(image, mask=None, label=0):
        valid = np.ones((1, 32, 32), dtype=bool)
        valid[..., -4:] = False  # letterbox padding
        mask = np.zeros((1, 32, 32)) if mask is None else mask
        return {"image": np.stack([image] * 3), "mask": mask, "valid": valid, "label": label}

    train = [item(x) for x in _noise_images(50, rng)]
    test = [item(x) for x in _noise_images(3, rng)]
    for x in _noise_images(3, rng):
        mask = np.zeros((1, 32, 32))
        mask[0, 4:12, 4:12] = 1
        x[4:12, 4:12] = 0.9
        test.append(item(x, mask, label=1))
    result = evaluate_zscore(train, test)
    assert set(result) == {"pixel_auroc", "au_pro", "image_auroc"}
    assert result["pixel_auroc"] > 0.99 and result["image_auroc"] == 1.0
    assert 0.0 <= evaluate_zscore(train, test, blur_sigma=2.0)["pixel_auroc"] <= 1.0
