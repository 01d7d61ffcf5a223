"""Global-Net G (GLANCE Sec. 3, Z_g = G(I, M0)): shapes, hole filling, no leak, read-out."""

from __future__ import annotations

import pytest
import torch

from glancing.models.global_net import GlobalNet, hole_mask

PATCH_SIZES = (17, 33, 65)


@pytest.fixture(scope="module")
def net() -> GlobalNet:
    torch.manual_seed(0)
    return GlobalNet().eval()


def _inputs(batch, size, patch, centers, seed=0):
    torch.manual_seed(seed)
    image = torch.rand(batch, 3, size, size)
    centers = torch.as_tensor(centers, dtype=torch.long).view(batch, 2)
    mask = hole_mask(torch.ones(batch, 1, size, size, dtype=torch.bool), centers, patch)
    return image, mask, centers


@pytest.mark.parametrize("size", [64, 128])
def test_shapes_and_finite(net, size):
    image, mask, centers = _inputs(2, size, 17, [[size // 2, size // 2], [8, size - 9]])
    with torch.no_grad():
        features, out_mask = net(image, mask)
        z = net.predict(image, mask, centers)
    assert features.shape == (2, 128, size // 8, size // 8)
    assert out_mask.shape == (2, 1, size // 8, size // 8)
    assert z.shape == (2, 128)
    assert bool(torch.isfinite(features).all()) and bool(torch.isfinite(z).all())
    assert torch.equal(out_mask, net.propagate_mask(mask))


@pytest.mark.parametrize("patch", PATCH_SIZES)
def test_mask_is_full_at_readout_for_every_centre_on_diagonal_and_edges(net, patch):
    size, half = 128, patch // 2
    line = torch.arange(half, size - half, 3)
    first, last = torch.full_like(line, half), torch.full_like(line, size - 1 - half)
    centers = torch.cat([
        torch.stack([line, line], 1),  # middle and both corners
        torch.stack([first, line], 1),  # along the top edge
        torch.stack([line, last], 1),  # along the right edge
        torch.tensor([[half, half], [half, size - 1 - half], [size - 1 - half, half]]),
    ])
    valid = torch.ones(len(centers), 1, size, size, dtype=torch.bool)
    out_mask = net.propagate_mask(hole_mask(valid, centers, patch))
    assert bool(net.readout_filled(out_mask, centers).all())
    assert torch.allclose(net.read_out(out_mask, centers), torch.ones(len(centers), 1))


@pytest.mark.parametrize("patch", [33, 65])
def test_large_holes_survive_until_the_dilated_stage(net, patch):
    """The check above is not vacuous: the dilated last stage is what fills these holes."""
    size, half = 128, patch // 2
    centers = torch.tensor([[64, 64], [half, half]])
    mask = hole_mask(torch.ones(2, 1, size, size, dtype=torch.bool), centers, patch)
    for i, stage in enumerate(net.stages[:2]):
        if i:
            mask = torch.nn.functional.max_pool2d(mask, 2)
        for conv in stage:
            mask = conv.update_mask(mask)
    mask = torch.nn.functional.max_pool2d(mask, 2)  # the pool in front of the last stage
    assert not net.readout_filled(mask, centers).any()


@pytest.mark.parametrize("centre", [[64, 64], [32, 32]])
def test_hole_pixels_change_nothing_and_get_zero_gradient(net, centre):
    image, mask, centers = _inputs(1, 128, 65, [centre])
    hole = (mask == 0).expand_as(image)
    other = image.clone()
    other[hole] = torch.rand(int(hole.sum())) * 10 - 5
    with torch.no_grad():
        z1, z2 = net.predict(image, mask, centers), net.predict(other, mask, centers)
    assert (z1 - z2).abs().max().item() == 0.0

    image = image.clone().requires_grad_(True)
    z = net.predict(image, mask, centers)
    (z * torch.randn_like(z)).sum().backward()
    assert bool((image.grad[hole] == 0).all())
    assert (image.grad[~hole] != 0).any()


def test_context_far_from_the_hole_changes_z_g(net):
    image, mask, centers = _inputs(1, 128, 33, [[64, 64]])
    other = image.clone()
    other[..., 10:18, 10:18] = 1 - other[..., 10:18, 10:18]  # about 45 px from the hole
    with torch.no_grad():
        z1, z2 = net.predict(image, mask, centers), net.predict(other, mask, centers)
    assert (z1 - z2).abs().max().item() > 1e-4


def test_letterbox_padding_does_not_influence_z_g(net):
    size = 128
    valid = torch.zeros(1, 1, size, size, dtype=torch.bool)
    valid[..., :, 40:88] = True  # a tall image letterboxed into the square
    centers = torch.tensor([[30, 64]])
    mask = hole_mask(valid, centers, 33)
    torch.manual_seed(1)
    image = torch.rand(1, 3, size, size)
    other = image.clone()
    padding = (~valid).expand_as(image)
    other[padding] = torch.rand(int(padding.sum()))
    with torch.no_grad():
        z1, z2 = net.predict(image, mask, centers), net.predict(other, mask, centers)
        assert bool(net.readout_filled(net(image, mask)[1], centers).all())
    assert (z1 - z2).abs().max().item() == 0.0


def test_read_out_samples_the_right_cells(net):
    # A map linear in the cell index is reproduced exactly by bilinear sampling.
    h = w = 8
    rows = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    features = torch.stack([rows, cols, 100 * rows + cols]).unsqueeze(0).repeat(4, 1, 1, 1)
    # Cell k covers pixels 8k .. 8k+7: centre 8k+3.5 (half-integer) -> exactly cell k;
    # 8k+7.5 -> half way to cell k+1; integer pixel y -> (y + 0.5) / 8 - 0.5.
    centers = torch.tensor([[19.5, 43.5], [27.5, 3.5], [20.0, 44.0], [0.0, 63.0]])
    got = net.read_out(features, centers)
    expected = torch.tensor([
        [2.0, 5.0, 205.0],
        [3.0, 0.0, 300.0],
        [2.0625, 5.0625, 211.3125],
        [0.0, 7.0, 7.0],  # beyond the outermost cell centres: clamped to the border cells
    ])
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)

    one_hot = torch.zeros(1, 1, h, w)
    one_hot[..., 3, 5] = 1
    at = net.read_out(one_hot, torch.tensor([[27.5, 43.5]]))
    halfway = net.read_out(one_hot, torch.tensor([[27.5, 47.5]]))
    assert at.item() == pytest.approx(1.0, abs=1e-6)
    assert halfway.item() == pytest.approx(0.5, abs=1e-6)


def test_receptive_field_is_centred_on_the_cell(net):
    """The grid read_out assumes: cell k sees pixels symmetric about 8k + 3.5 (178 px wide)."""
    height = 256
    mask = torch.zeros(height, 1, height, 8)
    mask[torch.arange(height), 0, torch.arange(height), :] = 1  # one valid row per sample
    out = net.propagate_mask(mask)[:, 0, :, 0]  # (row, cell): cell sees that row
    for cell in (12, 16, 19):  # interior cells, receptive field inside the image
        seen = torch.nonzero(out[:, cell]).flatten().float()
        assert seen.mean().item() == 8 * cell + 3.5
        assert len(seen) == 178


def test_batch_equals_per_sample(net):
    image, mask, centers = _inputs(3, 64, 17, [[32, 32], [8, 8], [50, 20]])
    with torch.no_grad():
        batch = net.predict(image, mask, centers)
        alone = torch.cat([net.predict(image[i : i + 1], mask[i : i + 1], centers[i : i + 1])
                           for i in range(3)])
    assert torch.allclose(batch, alone, atol=1e-5, rtol=1e-5)


def test_hole_mask_box_and_valid_region():
    valid = torch.ones(2, 1, 20, 20, dtype=torch.bool)
    valid[1, :, :, 15:] = False
    mask = hole_mask(valid, torch.tensor([[10, 10], [2, 14]]), 5)
    assert mask.dtype == torch.float32
    expected = torch.ones(2, 1, 20, 20)
    expected[0, :, 8:13, 8:13] = 0  # rows c - p//2 .. c + p//2
    expected[1, :, 0:5, 12:15] = 0  # clipped at the top
    expected[1, :, :, 15:] = 0  # letterbox padding
    assert torch.equal(mask, expected)
    with pytest.raises(ValueError, match="centers"):
        hole_mask(valid, torch.tensor([10, 10]), 5)


def test_cost_is_light(net):
    macs = net.macs(128)
    # 4x4x3x32 at 64^2, 3x3x32x64 at 32^2, 3x3x(64x128 + 2x128x128) + 1x1x128x128 at 16^2
    expected = 16 * 3 * 32 * 64**2 + 9 * 32 * 64 * 32**2 + (9 * (64 + 256) + 128) * 128 * 16**2
    assert macs == expected
    assert 0.05e9 < macs < 0.15e9
    assert net.macs(256) == 4 * macs


def test_every_parameter_gets_a_gradient(net):
    image, mask, centers = _inputs(2, 64, 17, [[32, 32], [20, 40]])
    net.zero_grad()
    net.predict(image, mask, centers).pow(2).sum().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    net.zero_grad()


def test_state_dict_holds_weights_only(net):
    keys = set(net.state_dict())
    assert not any("mask_kernel" in k or k in ("mean", "std") for k in keys)
    assert len(keys) == 2 * 6  # weight and bias of six partial convolutions
