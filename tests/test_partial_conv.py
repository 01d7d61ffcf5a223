"""Partial convolution (Liu et al. 2018, Eq. 1-2): re-weighting, hole invariance, mask update."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glancing.models.partial_conv import PartialConv2d, mask_pool


def _layer(cin=2, cout=3, k=3, seed=0, **kwargs) -> PartialConv2d:
    torch.manual_seed(seed)
    return PartialConv2d(cin, cout, k, **kwargs)


def _plain(layer: PartialConv2d) -> nn.Conv2d:
    plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                      layer.padding, layer.dilation, layer.groups, layer.bias is not None)
    plain.load_state_dict(layer.state_dict())
    return plain


def _hole(b, h, w, top, left, size) -> torch.Tensor:
    mask = torch.ones(b, 1, h, w)
    mask[..., top : top + size, left : left + size] = 0
    return mask


def test_ratio_is_one_away_from_holes_and_borders():
    layer = _layer(padding=1)
    x = torch.randn(2, 2, 16, 16)
    mask = _hole(2, 16, 16, 6, 6, 4)  # hole rows/cols 6..9
    out, new_mask = layer(x, mask)
    with torch.no_grad():
        out, expected = out.detach(), _plain(layer)(x)
    # Windows touching neither the hole (5..10) nor the border (0, 15) are fully valid.
    far = torch.zeros(16, 16, dtype=torch.bool)
    far[1:15, 1:15] = True
    far[5:11, 5:11] = False
    assert torch.allclose(out[..., far], expected[..., far], atol=1e-6, rtol=0)
    assert torch.equal(new_mask[..., 7:9, 7:9], torch.zeros(2, 1, 2, 2))  # still a hole
    assert bool((new_mask[..., far] == 1).all())


def test_border_ratio_is_1_5_at_edges_and_2_25_at_corners_and_bias_is_not_scaled():
    layer = PartialConv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(0.5)
    x = torch.ones(1, 1, 6, 6)
    out, new_mask = layer(x, torch.ones(1, 1, 6, 6))
    out = out.detach() - 0.5
    plain = F.conv2d(x, layer.weight, padding=1)  # 9 inside, 6 on edges, 4 in corners
    ratio = (out / plain)[0, 0]
    assert torch.equal(ratio[1:-1, 1:-1], torch.ones(4, 4))
    for edge in (ratio[0, 1:-1], ratio[-1, 1:-1], ratio[1:-1, 0], ratio[1:-1, -1]):
        assert torch.equal(edge, torch.full((4,), 1.5))
    for corner in (ratio[0, 0], ratio[0, -1], ratio[-1, 0], ratio[-1, -1]):
        assert corner.item() == 2.25
    assert torch.equal(out, torch.full_like(out, 9.0))  # flat image stays flat, bias unscaled
    assert torch.equal(new_mask, torch.ones_like(new_mask))


def test_hole_content_has_no_effect_through_two_layers():
    first, second = _layer(cin=2, cout=4, padding=1, seed=1), _layer(cin=4, cout=3, padding=1)
    mask = torch.ones(2, 1, 14, 14)
    mask[..., 4:11, 3:10] = 0  # 7x7 hole, larger than the kernel
    hole = mask == 0

    def run(x):
        h, m = first(x, mask)
        return second(torch.nn.functional.leaky_relu(h, 0.2), m)

    x1 = torch.randn(2, 2, 14, 14)
    x2 = x1.clone()
    x2[hole.expand_as(x2)] = torch.randn(int(hole.sum()) * 2) * 100
    out1, mask1 = run(x1)
    out2, mask2 = run(x2)
    assert torch.equal(out1, out2)
    assert torch.equal(mask1, mask2)
    assert (mask2 == 0).any()  # the hole is not yet filled after two 3x3 layers

    x = x2.clone().requires_grad_(True)
    out, _ = run(x)
    (out * torch.randn_like(out)).sum().backward()
    assert bool((x.grad[hole.expand_as(x)] == 0).all())
    assert (x.grad[~hole.expand_as(x)] != 0).any()


def test_window_without_valid_pixel_is_exactly_zero_bias_included():
    layer = _layer(padding=1)
    with torch.no_grad():
        layer.bias.fill_(3.0)
    mask = _hole(1, 10, 10, 2, 2, 5)  # rows/cols 2..6; windows centred 3..5 see no valid pixel
    out, new_mask = layer(torch.randn(1, 2, 10, 10), mask)
    assert torch.equal(out[..., 3:6, 3:6].detach(), torch.zeros(1, 3, 3, 3))
    assert torch.equal(new_mask[..., 3:6, 3:6], torch.zeros(1, 1, 3, 3))
    assert bool((out[..., 0, :] != 0).all())  # bias present where the window is valid


@pytest.mark.parametrize("kwargs", [
    {"padding": 1},
    {"stride": 2, "padding": 1},
    {"padding": 2, "dilation": 2},
    {"stride": 2, "padding": 0, "dilation": 2},
])
def test_mask_update_is_one_iff_any_valid_pixel_and_shapes_match_conv2d(kwargs):
    layer = _layer(**kwargs)
    torch.manual_seed(3)
    mask = (torch.rand(3, 1, 13, 13) < 0.15).float()  # sparse: many empty windows
    x = torch.randn(3, 2, 13, 13)
    out, new_mask = layer(x, mask)
    assert out.shape == _plain(layer)(x).shape
    # Independent rule: the max over the zero-padded window.
    padded = F.pad(mask, (kwargs["padding"],) * 4)
    expected = F.max_pool2d(padded, 3, kwargs.get("stride", 1), 0, kwargs.get("dilation", 1))
    assert torch.equal(new_mask, expected)
    assert 0 < new_mask.mean() < 1


def test_batch_size_changes_between_calls_do_not_go_stale():
    layer = _layer(padding=1)
    torch.manual_seed(4)
    for batch in (4, 1, 7):
        x = torch.randn(batch, 2, 12, 12)
        mask = (torch.rand(batch, 1, 12, 12) < 0.5).float()
        out, new_mask = layer(x, mask)
        for i in range(batch):
            alone, alone_mask = layer(x[i : i + 1], mask[i : i + 1])
            assert torch.allclose(out[i : i + 1], alone, atol=1e-6, rtol=0)
            assert torch.equal(new_mask[i : i + 1], alone_mask)


def test_state_dict_round_trip_and_mask_kernel_not_saved():
    layer = _layer(padding=1)
    state = layer.state_dict()
    assert set(state) == {"weight", "bias"}
    fresh = PartialConv2d(2, 3, 3, padding=1)
    fresh.load_state_dict(state)
    x, mask = torch.randn(2, 2, 8, 8), _hole(2, 8, 8, 2, 2, 3)
    assert torch.equal(layer(x, mask)[0], fresh(x, mask)[0])


def _half_dtype() -> torch.dtype:
    try:
        F.conv2d(torch.ones(1, 1, 3, 3, dtype=torch.float16), torch.ones(1, 1, 3, 3,
                                                                       dtype=torch.float16))
        return torch.float16
    except RuntimeError:
        return torch.bfloat16


def test_half_precision_single_valid_pixel_is_finite():
    dtype = _half_dtype()
    layer = _layer(padding=1).to(dtype)
    mask = torch.zeros(1, 1, 8, 8, dtype=dtype)
    mask[..., 4, 4] = 1  # windows around it see one valid pixel: ratio 9
    out, new_mask = layer(torch.randn(1, 2, 8, 8, dtype=dtype), mask)
    assert out.dtype == dtype and new_mask.dtype == dtype
    assert bool(torch.isfinite(out).all())
    assert torch.equal(new_mask[0, 0, 3:6, 3:6], torch.ones(3, 3, dtype=dtype))
    assert new_mask.sum().item() == 9
    assert bool((out[..., 0, 0] == 0).all())  # empty window: 0, not NaN


def test_soft_mask_with_tiny_sum_does_not_explode():
    layer = PartialConv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., 2, 2] = 1e-7
    out, new_mask = layer(torch.ones(1, 1, 5, 5), mask)
    # sum(1)/sum(M) would be 9e7; capped at the kernel area 9 it gives 9 * 1e-7.
    assert out.max().item() == pytest.approx(9e-7, rel=1e-5)
    assert new_mask.sum().item() == 9


def test_to_moves_the_mask_kernel():
    layer = _layer(padding=1).to(torch.float64)
    assert layer.mask_kernel.dtype == torch.float64
    out, new_mask = layer(torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.ones(1, 1, 5, 5))
    assert out.dtype == torch.float64 and new_mask.dtype == torch.float64
    assert layer.to("meta").mask_kernel.device.type == "meta"


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="padding_mode"):
        PartialConv2d(1, 1, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        _layer()(torch.randn(2, 2, 6, 6), torch.ones(2, 2, 6, 6))


def test_mask_pool_pools_features_and_marks_any_valid_cell():
    features = torch.arange(16.0).view(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, 1] = 1
    mask[..., 3, 3] = 1
    pooled, pooled_mask = mask_pool(features, mask)
    assert torch.equal(pooled, F.max_pool2d(features, 2))
    assert torch.equal(pooled_mask, torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]))
