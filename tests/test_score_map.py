"""Sliding-window score maps: window grid, per-pixel mean, resizing."""

from __future__ import annotations

import pytest
import torch

from glancing.score_map import assemble, resize_map, window_centers, window_starts


def test_window_grid_is_aligned_to_the_far_border():
    assert window_starts(10, 3, 3) == [0, 3, 6, 7]
    assert window_starts(9, 3, 3) == [0, 3, 6]
    assert window_starts(5, 5, 2) == [0]
    assert window_starts(10, 3, 4, offset=2) == [2, 6, 9]
    with pytest.raises(ValueError):
        window_starts(4, 5, 1)


def test_windows_cover_every_pixel_of_the_box():
    centers = window_centers((3, 5, 20, 13), patch_size=5, stride=4)
    covered = assemble(torch.ones(len(centers)), centers, 5, (30, 30))
    assert covered[3:23, 5:18].eq(1).all()
    assert covered.sum() == 20 * 13  # nothing outside the box


def test_each_pixel_is_the_mean_of_its_windows():
    centers = torch.tensor([[1, 1], [1, 2]])  # two 3x3 windows overlapping in two columns
    score_map = assemble(torch.tensor([1.0, 3.0]), centers, 3, (3, 4))
    expected = torch.tensor([[1.0, 2.0, 2.0, 3.0]] * 3)
    assert torch.equal(score_map, expected)


def test_resize_map_is_bilinear_and_identity_at_same_size():
    m = torch.arange(16.0).reshape(1, 4, 4)
    assert resize_map(m, (4, 4)) is m
    up = resize_map(m, (8, 8))
    assert up.shape == (1, 8, 8) and up.min() >= 0 and up.max() <= 15
