"""Tests of the MVTec AD metrics against hand-computed values and a slow direct reference."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from glancing.metrics import (
    area_under_curve,
    au_pro,
    evaluate,
    image_auroc,
    image_scores,
    pixel_auroc,
    pro_curve,
)


def _masks_and_labels(seed=0, n=4, h=12, w=12):
    """A few images, the first one normal, the others with one or two rectangular defects."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(1, n):
        for _ in range(1 + i % 2):
            y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
            masks[i, y:y + rng.integers(1, 4), x:x + rng.integers(1, 4)] = 1
    labels = masks.reshape(n, -1).max(axis=1)
    return masks, labels


# ---------------------------------------------------------------- perfect and inverted maps


def test_perfect_map_scores_one():
    masks, labels = _masks_and_labels()
    maps = masks.astype(np.float32)
    assert pixel_auroc(maps, masks) == 1.0
    assert au_pro(maps, masks) == 1.0
    assert image_auroc(maps, labels) == 1.0
    assert evaluate(maps, masks, labels) == {"pixel_auroc": 1.0, "au_pro": 1.0, "image_auroc": 1.0}


def test_inverted_map_scores_zero():
    masks, labels = _masks_and_labels()
    maps = 1.0 - masks
    assert pixel_auroc(maps, masks) == 0.0
    assert au_pro(maps, masks) == 0.0
    # 1 - mask has max 1 in every image (all have normal pixels), so invert at image level:
    # normal images score 1 everywhere, defective images 0.
    inverted_images = np.broadcast_to(1.0 - labels[:, None, None], maps.shape)
    assert image_auroc(inverted_images, labels) == 0.0


# ---------------------------------------------------------------- hand-computed pixel AUROC


def test_pixel_auroc_by_hand():
    maps = np.array([[[0.8, 0.8, 0.1], [0.3, 0.5, 0.2]]])
    masks = np.array([[[1, 0, 0], [1, 0, 0]]])
    # positives 0.8, 0.3; negatives 0.8, 0.1, 0.5, 0.2 (8 pairs).
    # 0.8 beats 0.1, 0.5, 0.2 and ties 0.8: 3.5; 0.3 beats 0.1, 0.2: 2.  (3.5 + 2) / 8
    assert pixel_auroc(maps, masks) == pytest.approx(5.5 / 8)


# ---------------------------------------------------------------- hand-computed PRO curve

# Two regions: A = {(0,0), (0,1)} (size 2) and B = {(1,3)} (size 1, not touching A);
# five normal pixels. Sorted scores: 0.9 A | 0.7 N | 0.5 A, 0.5 B (tie) | 0.4, 0.3, 0.2, 0.1 N.
HAND_MAPS = np.array([[[0.9, 0.5, 0.7, 0.1], [0.2, 0.3, 0.4, 0.5]]])
HAND_MASKS = np.array([[[1, 1, 0, 0], [0, 0, 0, 1]]])


def test_pro_curve_by_hand():
    fpr, pro = pro_curve(HAND_MAPS, HAND_MASKS)
    # t=0.9: A half found, B not -> PRO (0.5 + 0) / 2 = 0.25; t=0.7: one normal of five;
    # t=0.5 (tie, one step): both regions complete; then one normal pixel per step.
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.2, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(pro, [0.0, 0.25, 0.25, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_au_pro_by_hand():
    # [0, 0.2] at PRO 0.25 -> 0.05; [0.2, 0.3] at PRO 1 -> 0.1; (0.05 + 0.1) / 0.3 = 0.5.
    # (dividing by the last FPR below the limit, 0.2, would give 0.25 without the [0.2, 0.3]
    # piece, or 0.75 with it.)
    assert au_pro(HAND_MAPS, HAND_MASKS) == pytest.approx(0.5)
    assert au_pro(HAND_MAPS, HAND_MASKS, fpr_limit=0.1) == pytest.approx(0.25)
    # full curve: 0.2 * 0.25 + 0.8 * 1 = 0.85
    assert au_pro(HAND_MAPS, HAND_MASKS, fpr_limit=1.0) == pytest.approx(0.85)


# ---------------------------------------------------------------- regions and connectivity


def test_pro_is_mean_over_regions_not_pixel_weighted():
    masks = np.zeros((1, 8, 8), dtype=np.uint8)
    masks[0, :4, :4] = 1  # big region: 16 pixels, detected
    masks[0, 7, 7] = 1  # small region: 1 pixel, missed
    maps = np.where(masks == 1, 0.0, 0.5)
    maps[0, :4, :4] = 1.0
    fpr, pro = pro_curve(maps, masks)
    # at the first threshold: the big region fully found, the small one not: (1 + 0) / 2.
    # (pixel-weighted it would be 16/17.)
    assert fpr[1] == 0.0 and pro[1] == pytest.approx(0.5)
    # then all normals (0.5) come in at once: the curve goes (0,0.5) -> (1,0.5) -> (1,1)
    np.testing.assert_allclose(fpr, [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(pro, [0.0, 0.5, 0.5, 1.0])
    assert au_pro(maps, masks) == pytest.approx(0.5)


def test_two_images_regions_averaged_across_test_set():
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, 0, 0] = 1  # image 0: one region, found
    masks[1, :2, :2] = 1  # image 1: one region, half found
    maps = np.zeros((2, 4, 4))
    maps[0, 0, 0] = 1.0
    maps[1, 0, :2] = 1.0
    fpr, pro = pro_curve(maps, masks)
    assert fpr[1] == 0.0 and pro[1] == pytest.approx((1.0 + 0.5) / 2)


def test_diagonal_neighbours_are_one_region():
    # one 2-pixel diagonal region + one isolated pixel. 8-connected: 2 regions (sizes 2, 1);
    # 4-connected it would be 3 regions of size 1. Detect the isolated pixel only.
    masks = np.zeros((1, 5, 5), dtype=np.uint8)
    masks[0, 0, 0] = masks[0, 1, 1] = 1
    masks[0, 4, 4] = 1
    maps = np.zeros((1, 5, 5))
    maps[0, 4, 4] = 1.0
    _, pro = pro_curve(maps, masks)
    assert pro[1] == pytest.approx(0.5)  # 4-connected would give 1/3


# ---------------------------------------------------------------- integration limit


@pytest.mark.parametrize("n", [4, 7, 10, 20])
def test_linear_curve_integrates_to_known_value(n):
    # one region of n pixels and n normal pixels; pair k (one of each) shares score -k, so the
    # curve is the diagonal PRO = FPR: area over [0, 0.3] is 0.3^2 / 2, normalized 0.15.
    # For n = 4 and 7 the limit 0.3 falls between curve points (interpolation needed).
    maps = np.repeat(-np.arange(n, dtype=float), 2)[None, None, :]
    masks = np.tile([1, 0], n)[None, None, :]
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, pro)
    assert au_pro(maps, masks, fpr_limit=0.3) == pytest.approx(0.15)
    assert au_pro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5)


def test_interpolation_at_limit_on_sloped_segment():
    # curve (0,0) -> (0.5,1) -> (1,1): at 0.3 PRO is 0.6; area 0.3 * 0.6 / 2 = 0.09; / 0.3 = 0.3
    maps = np.array([[[0.9, 0.9, 0.9, 0.1]]])
    masks = np.array([[[1, 1, 0, 0]]])
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(pro, [0.0, 1.0, 1.0])
    assert au_pro(maps, masks) == pytest.approx(0.3)


def test_area_under_curve_divides_by_limit_not_last_fpr():
    # The last point at or below the limit is (0.1, 1); the next is (1, 1). Dividing by the last
    # FPR reached (0.1) instead of the limit would give 3 here; the right answer is 1.
    fpr = np.array([0.0, 0.0, 0.1, 1.0])
    pro = np.array([0.0, 1.0, 1.0, 1.0])
    assert area_under_curve(fpr, pro, 0.3) == pytest.approx(1.0)


def test_au_pro_adversarial_last_fpr_below_limit():
    # all anomalies first, then 1 of 10 normals, then the other 9 tied: the curve jumps from
    # FPR 0.1 straight to 1, far past the limit 0.3.
    maps = np.array([[[1.0, 1.0, 0.8] + [0.2] * 9]])
    masks = np.array([[[1, 1] + [0] * 10]])
    fpr, _ = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.1, 1.0])
    assert au_pro(maps, masks) == pytest.approx(1.0)
    assert au_pro(maps, masks) <= 1.0


@pytest.mark.parametrize("seed", range(40))
def test_au_pro_never_above_one_random(seed):
    rng = np.random.default_rng(seed)
    masks, _ = _masks_and_labels(seed, n=3, h=10, w=10)
    maps = rng.random(masks.shape)
    if seed % 2:  # quantized scores: many ties
        maps = np.round(maps * rng.integers(2, 6)) + 2.0 * masks * rng.random()
    limit = float(rng.uniform(0.01, 1.0))
    value = au_pro(maps, masks, fpr_limit=limit)
    assert 0.0 <= value <= 1.0 + 1e-12


# ---------------------------------------------------------------- valid mask


def test_valid_mask_excludes_padding():
    rng = np.random.default_rng(3)
    masks, labels = _masks_and_labels(3, n=4, h=10, w=10)
    maps = rng.random(masks.shape)
    # letterbox: pad 3 rows above and below with junk scores and junk mask values
    pad = ((0, 0), (3, 3), (0, 0))
    maps_p = np.pad(maps, pad)
    maps_p[:, :3] = 10.0  # higher than every real score
    maps_p[:, -3:] = -5.0
    masks_p = np.pad(masks, pad)
    masks_p[:, :3, ::2] = 1  # junk ground truth touching the real regions
    valid = np.pad(np.ones(masks.shape, dtype=bool), pad)
    expected = evaluate(maps, masks, labels)
    got = evaluate(maps_p, masks_p, labels, valid=valid)
    assert got == pytest.approx(expected)
    fpr, pro = pro_curve(maps, masks)
    fpr_p, pro_p = pro_curve(maps_p, masks_p, valid=valid)
    np.testing.assert_allclose(fpr_p, fpr)
    np.testing.assert_allclose(pro_p, pro)
    # and without valid the junk does change things (the test can fail)
    assert evaluate(maps_p, masks_p, labels) != pytest.approx(expected)


# ---------------------------------------------------------------- image AUROC


def test_image_auroc_uses_max():
    # defective images have one hot pixel but a low mean; normal ones a flat medium map.
    maps = np.full((4, 5, 5), 0.5)
    maps[2:] = 0.0
    maps[2:, 2, 2] = 1.0
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(image_scores(maps), [0.5, 0.5, 1.0, 1.0])
    assert image_auroc(maps, labels) == 1.0  # the mean would rank them the other way: 0.0


def test_image_auroc_max_over_valid_only():
    maps = np.zeros((2, 3, 3))
    maps[0, 0, 0] = 9.0  # normal image: a hot pixel, but in the padding
    maps[1, 1, 1] = 1.0
    valid = np.ones((2, 3, 3), dtype=bool)
    valid[:, 0, :] = False
    assert image_auroc(maps, [0, 1], valid=valid) == 1.0
    assert image_auroc(maps, [0, 1]) == 0.0


# ---------------------------------------------------------------- slow direct reference


def _slow_pro_curve(maps, masks, thresholds):
    """Per threshold, overlap of each 8-connected region computed directly."""
    regions = []
    for m, g in zip(maps, masks, strict=True):
        lab, n = ndimage.label(g, structure=np.ones((3, 3), dtype=int))
        regions += [m[lab == k] for k in range(1, n + 1)]
    normal = maps[masks == 0]
    fpr = [np.mean(normal >= t) for t in thresholds]
    pro = [np.mean([np.mean(r >= t) for r in regions]) for t in thresholds]
    return np.array(fpr), np.array(pro)


@pytest.mark.parametrize("seed", range(5))
def test_pro_curve_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    masks = (rng.random((3, 9, 9)) < 0.15).astype(np.uint8)  # scattered, irregular regions
    masks[0] = 0  # plus one normal image
    maps = np.round(rng.random(masks.shape) * 15) / 15 + 0.3 * masks  # ties across classes
    thresholds = np.unique(maps)[::-1]
    fpr, pro = pro_curve(maps, masks)
    assert len(fpr) == len(thresholds) + 1
    ref_fpr, ref_pro = _slow_pro_curve(maps, masks, thresholds)
    np.testing.assert_allclose(fpr[1:], ref_fpr, atol=1e-12)
    np.testing.assert_allclose(pro[1:], ref_pro, atol=1e-12)
    assert fpr[0] == 0.0 and pro[0] == 0.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)


def test_pixel_auroc_matches_pair_count():
    rng = np.random.default_rng(7)
    masks, _ = _masks_and_labels(7, n=3, h=6, w=6)
    maps = np.round(rng.random(masks.shape) * 5)  # ties
    pos, neg = maps[masks == 1], maps[masks == 0]
    diff = pos[:, None] - neg[None, :]
    expected = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert pixel_auroc(maps, masks) == pytest.approx(expected)


# ---------------------------------------------------------------- inputs and errors


def test_accepts_torch_tensors():
    masks, labels = _masks_and_labels(1)
    rng = np.random.default_rng(1)
    maps = rng.random(masks.shape).astype(np.float32)
    expected = evaluate(maps, masks, labels)
    got = evaluate(torch.from_numpy(maps), torch.from_numpy(masks).bool(), torch.from_numpy(labels),
                   valid=torch.ones(masks.shape, dtype=torch.bool))
    assert got == pytest.approx(expected)
    assert all(type(v) is float for v in got.values())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: pixel_auroc(np.zeros((2, 3)), np.zeros((2, 3))), "maps must have shape"),
        (lambda: pixel_auroc(np.zeros((1, 2, 3)), np.zeros((1, 3, 2))), "masks must have shape"),
        (lambda: au_pro(np.zeros((1, 2, 2)), np.eye(2)[None], valid=np.ones((1, 3, 3))),
         "valid must have shape"),
        (lambda: image_auroc(np.zeros((2, 2, 2)), [0, 1, 1]), "labels must have shape"),
        (lambda: pixel_auroc(np.zeros((1, 2, 2)), np.full((1, 2, 2), 255)), "masks must be binary"),
        (lambda: pixel_auroc(np.zeros((1, 2, 2)), np.zeros((1, 2, 2))), "no anomalous pixels"),
        (lambda: pixel_auroc(np.zeros((1, 2, 2)), np.ones((1, 2, 2))), "no normal pixels"),
        (lambda: au_pro(np.zeros((1, 2, 2)), np.zeros((1, 2, 2))), "no anomalous pixels"),
        (lambda: au_pro(np.zeros((1, 2, 2)), np.ones((1, 2, 2))), "no normal pixels"),
        (lambda: image_auroc(np.zeros((2, 2, 2)), [1, 1]), "only one class"),
        (lambda: au_pro(np.zeros((1, 2, 2)), np.eye(2)[None], fpr_limit=0.0), "fpr_limit"),
        (lambda: pixel_auroc(np.full((1, 2, 2), np.nan), np.eye(2)[None]), "NaN"),
    ],
)
def test_errors_are_clear(call, match):
    with pytest.raises(ValueError, match=match):
        call()
