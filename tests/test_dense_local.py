"""Dense Local-Net features (Bailer et al. 2017) equal the per-patch network at every window."""

from __future__ import annotations

import pytest
import torch

from glancing.models.local_net import LocalNet, crop_patches


def per_patch(net: LocalNet, images: torch.Tensor) -> torch.Tensor:
    """``(B, out_dim, H - p + 1, W - p + 1)`` by running ``forward`` on every window."""
    batch, _, height, width = images.shape
    p = net.patch_size
    h, w = height - p + 1, width - p + 1
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centers = torch.stack([ys.flatten(), xs.flatten()], 1) + p // 2
    index = torch.arange(batch).repeat_interleave(len(centers))
    z = net(crop_patches(images, centers.repeat(batch, 1), p, index))
    return z.view(batch, h * w, -1).permute(0, 2, 1).reshape(batch, -1, h, w)


@pytest.mark.parametrize("patch_size", [17, 33, 65])
@pytest.mark.parametrize("extra", [(0, 0), (9, 6)])
def test_dense_all_equals_forward_on_every_window(patch_size, extra):
    torch.manual_seed(patch_size)
    net = LocalNet(patch_size, width=0.25).eval()
    images = torch.rand(2, 3, patch_size + extra[0], patch_size + extra[1])
    with torch.no_grad():
        dense = net.dense_all(images)
        reference = per_patch(net, images)
    assert dense.shape == reference.shape
    torch.testing.assert_close(dense, reference, rtol=1e-5, atol=1e-5)


def test_dense_all_matches_the_strided_dense_map_on_its_grid():
    net = LocalNet(33, width=0.25).eval()
    images = torch.rand(1, 3, 61, 57)
    with torch.no_grad():
        every, strided = net.dense_all(images), net.dense(images)
    step = net.stride
    torch.testing.assert_close(every[..., ::step, ::step][..., : strided.shape[-2],
                                                          : strided.shape[-1]], strided)


def test_dense_all_refuses_images_smaller_than_the_patch():
    with pytest.raises(ValueError, match="H, W >= 33"):
        LocalNet(33, width=0.25).dense_all(torch.rand(1, 3, 32, 40))


@pytest.mark.parametrize("stride", [3, 4, 8])
def test_local_features_at_a_window_grid_equal_forward(stride):
    from glancing.fast_map import local_features_at
    from glancing.score_map import window_centers

    torch.manual_seed(0)
    net = LocalNet(33, width=0.25).eval()
    image = torch.rand(3, 70, 61)
    centers = window_centers((2, 1, 67, 58), 33, stride)
    with torch.no_grad():
        expected = net(crop_patches(image[None].expand(len(centers), -1, -1, -1), centers, 33))
        torch.testing.assert_close(local_features_at(net, image, centers), expected,
                                   rtol=1e-5, atol=1e-5)
