"""The one-pass Global-Net never sees the p x p box around a position, and sees just outside."""

from __future__ import annotations

import pytest
import torch

from glancing.models.blind_spot import BlindSpotNet, CausalConv2d


def input_gradient(net: BlindSpotNet, size: tuple[int, int], center: tuple[int, int]):
    """``|d Z_g(center) / d image|`` summed over channels and output dims: ``(H, W)``."""
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0),
                       requires_grad=True)
    valid = torch.ones(1, 1, *size, dtype=torch.bool)
    z = net(image, valid, torch.tensor([center]))
    # A random projection of Z_g, so that no output unit's gradient cancels another's.
    direction = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    (z * direction).sum().backward()
    return image.grad[0].abs().sum(0)


@pytest.mark.parametrize(("size", "center"), [
    ((96, 96), (48, 48)), ((96, 96), (17, 78)), ((101, 80), (60, 30)), ((101, 80), (83, 62))])
def test_gradient_is_zero_in_the_box_and_non_zero_just_outside(size, center):
    torch.manual_seed(0)
    p = 33
    net = BlindSpotNet(p, out_dim=16, widths=(4, 8, 8, 8), ring_dim=8, hidden=16)
    grad = input_gradient(net, size, center)
    h = p // 2
    y, x = center
    inside = grad[y - h : y + h + 1, x - h : x + h + 1]
    assert inside.shape == (p, p)
    assert (inside == 0).all(), "the box around the position leaks into Z_g"
    ring = torch.ones(p + 2, p + 2, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    around = grad[y - h - 1 : y + h + 2, x - h - 1 : x + h + 2][ring]
    assert (around > 0).all(), "a pixel just outside the box does not reach Z_g"
    far = grad.clone()
    far[y - h - 1 : y + h + 2, x - h - 1 : x + h + 2] = 0
    assert (far > 0).float().mean() > 0.5, "Z_g sees little context"


def test_one_pass_equals_one_position_at_a_time():
    torch.manual_seed(0)
    net = BlindSpotNet(17, out_dim=8, widths=(4, 8, 8, 8), ring_dim=8, hidden=16).eval()
    image, valid = torch.rand(2, 3, 64, 64), torch.ones(2, 1, 64, 64, dtype=torch.bool)
    centers = torch.tensor([[8, 8], [40, 20], [55, 60]])
    index = torch.tensor([0, 1, 1])
    with torch.no_grad():
        together = net(image, valid, centers, index)
        alone = torch.cat([net(image[i : i + 1], valid[i : i + 1], c[None])
                           for c, i in zip(centers, index, strict=True)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_letterbox_padding_content_is_ignored():
    torch.manual_seed(0)
    net = BlindSpotNet(17, out_dim=8, widths=(4, 8, 8, 8), ring_dim=8, hidden=16).eval()
    image, valid = torch.rand(1, 3, 48, 48), torch.ones(1, 1, 48, 48, dtype=torch.bool)
    valid[..., :, 40:] = False
    other = image.clone()
    other[..., :, 40:] = torch.rand(1, 3, 48, 8)
    centers = torch.tensor([[24, 20]])
    with torch.no_grad():
        torch.testing.assert_close(net(image, valid, centers), net(other, valid, centers))


def test_causal_conv_sees_rows_above_only():
    conv = CausalConv2d(1, 1, 3, dilation=2)
    x = torch.zeros(1, 1, 12, 12, requires_grad=True)
    conv(x)[0, 0, 6, 6].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero().flatten().tolist()
    assert rows == [2, 4, 6]


def test_macs_grow_with_the_image():
    net = BlindSpotNet(33)
    assert 0 < net.macs(64) < net.macs(128)


def test_training_lowers_the_iad_loss(tmp_path):
    from glancing.models.heads import DADHead
    from glancing.models.local_net import LocalNet
    from glancing.train_blind_spot import train_blind_spot

    torch.manual_seed(0)
    local_net = LocalNet(17, out_dim=8, width=0.25)
    net = BlindSpotNet(17, out_dim=8, widths=(4, 8, 8, 8), ring_dim=8, hidden=16)
    # Smooth images: Z_l is predictable from the surroundings, so l_IAD can fall.
    base = torch.rand(8, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    images = torch.nn.functional.interpolate(base, size=48, mode="bilinear")
    valid = torch.ones(8, 1, 48, 48, dtype=torch.bool)
    result = train_blind_spot(tmp_path / "bs.pt", net, DADHead(8, 16), local_net, images, valid,
                              iterations=24, batch_size=4, positions=8, lr_global=3e-3,
                              lr_head=3e-3, lambda_t=0.1,
                              generator=torch.Generator().manual_seed(0), checkpoint_every=100,
                              progress=False)
    losses = [entry["l_iad"] for entry in result.log]
    assert sum(losses[-6:]) < 0.7 * sum(losses[:6])
