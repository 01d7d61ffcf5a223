"""Local-Net L: shapes, exact receptive field, dense = sliding forward, patch sampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glancing.losses import descriptor_stats, distillation_loss
from glancing.models.local_net import (
    ARCHITECTURES,
    LEAKY_SLOPE,
    Decoder,
    LocalNet,
    crop_patches,
    sample_centers,
)

PATCH_SIZES = (17, 33, 65)
STRIDES = {17: 1, 33: 4, 65: 8}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net(p: int, dtype=torch.float32, seed: int = 0, **kwargs) -> LocalNet:
    torch.manual_seed(seed)
    return LocalNet(p, **kwargs).to(dtype)


# --- architecture ------------------------------------------------------------------------------


@pytest.mark.parametrize("p", PATCH_SIZES)
def test_forward_shape_and_finite(p):
    net = _net(p)
    patches = torch.rand(3, 3, p, p, generator=torch.Generator().manual_seed(p))
    out = net(patches)
    assert out.shape == (3, 128)
    assert torch.isfinite(out).all()
    # Different patches give different descriptors; a grey patch is repeated to RGB.
    assert not torch.allclose(out[0], out[1])
    grey = patches[:, :1]
    torch.testing.assert_close(net(grey), net(grey.expand(-1, 3, -1, -1)))


@pytest.mark.parametrize("p", PATCH_SIZES)
def test_receptive_field_and_stride_from_layers(p):
    net = LocalNet(p)
    assert net.receptive_field() == p
    assert net.stride == STRIDES[p]
    # Computed from the layers, not stored: a layer with a bigger kernel changes it.
    net.features[0] = nn.Conv2d(3, net.features[0].out_channels, kernel_size=8)
    assert net.receptive_field() == p + 2


@pytest.mark.parametrize("p", PATCH_SIZES)
def test_layers_follow_the_spec(p):
    net = LocalNet(p)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    pools = [m for m in net.features if isinstance(m, nn.MaxPool2d)]
    spec = ARCHITECTURES[p]
    assert [c.kernel_size[0] for c in convs] == [s[1] for s in spec if s[0] == "conv"]
    assert len(pools) == sum(s[0] == "pool" for s in spec)
    assert all(c.padding == (0, 0) and c.stride == (1, 1) for c in convs)
    assert isinstance(net.features[-1], nn.Conv2d) and net.features[-1].out_channels == 128
    relus = [m for m in net.features if isinstance(m, nn.LeakyReLU)]
    assert len(relus) == len(convs) - 1
    assert all(r.negative_slope == LEAKY_SLOPE == 5e-3 for r in relus)


@pytest.mark.parametrize("p", PATCH_SIZES)
def test_p_by_p_maps_to_1x1_and_pools_see_even_sizes(p):
    x = torch.zeros(1, 3, p, p)
    for layer in LocalNet(p).features:
        if isinstance(layer, nn.MaxPool2d):
            assert x.shape[-1] % 2 == 0, "a pooling floor would drop a row/column"
        x = layer(x)
    assert tuple(x.shape) == (1, 128, 1, 1)


def test_width_and_out_dim():
    thin = LocalNet(33, out_dim=64, width=0.25)
    full = LocalNet(33)
    assert thin.receptive_field() == 33 and thin.stride == 4
    assert thin(torch.rand(2, 3, 33, 33)).shape == (2, 64)
    assert sum(q.numel() for q in thin.parameters()) < sum(q.numel() for q in full.parameters())


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="patch_size"):
        LocalNet(31)
    net = LocalNet(17)
    with pytest.raises(ValueError, match="17"):
        net(torch.rand(2, 3, 18, 18))
    with pytest.raises(ValueError):
        net.dense(torch.rand(1, 3, 16, 40))


def test_normalisation_buffers():
    net = LocalNet(17)
    assert {"mean", "std"} <= dict(net.named_buffers()).keys()
    x = torch.rand(1, 3, 4, 4)
    expected = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(net.normalize(x), expected)


def test_decoder():
    dec = Decoder(512)
    assert isinstance(dec.linear, nn.Linear)
    assert dec(torch.rand(5, 128)).shape == (5, 512)
    assert Decoder(32, in_dim=64)(torch.rand(2, 64)).shape == (2, 32)


# --- dense --------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", PATCH_SIZES)
def test_dense_output_size(p):
    net = LocalNet(p, width=0.125)
    s = net.stride
    for height, width in ((p, p), (p + s - 1, p + s), (p + 3 * s + 1, p + 2 * s - 1)):
        out = net.dense(torch.rand(1, 3, height, width))
        assert out.shape == (1, 128, (height - p) // s + 1, (width - p) // s + 1)


@pytest.mark.parametrize("p", PATCH_SIZES)
def test_dense_gradient_is_exactly_the_window(p):
    """Backprop one output of ``dense``: the input gradient is non-zero exactly on its window."""
    net = _net(p, torch.float64, seed=p)
    height, width = p + 20, p + 24
    image = torch.rand(1, 3, height, width, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = net.dense(image)
    s = net.stride
    assert out.shape[-2:] == ((height - p) // s + 1, (width - p) // s + 1)
    # An interior position and the last one (window touching the bottom-right of the grid).
    for i, j in ((out.shape[-2] // 2, out.shape[-1] // 2 - 1),
                 (out.shape[-2] - 1, out.shape[-1] - 1)):
        (grad,) = torch.autograd.grad(out[0, :, i, j].sum(), image, retain_graph=True)
        nonzero = (grad[0] != 0).any(dim=0)
        window = torch.zeros(height, width, dtype=torch.bool)
        window[i * s : i * s + p, j * s : j * s + p] = True
        assert nonzero[window].all(), f"{int((~nonzero[window]).sum())} pixels of the window unused"
        assert not nonzero[~window].any(), "gradient outside the p x p window"


@pytest.mark.parametrize("p", PATCH_SIZES)
def test_dense_equals_forward_on_grid_crops(p):
    net = _net(p, torch.float64, seed=p, width=0.25)
    s = net.stride
    height, width = p + 2 * s + 1, p + 3 * s + 2
    image = torch.rand(2, 3, height, width, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(2))
    dense = net.dense(image)
    _, _, h, w = dense.shape
    assert (h, w) == ((4, 6) if s == 1 else (3, 4))
    crops = image.unfold(2, p, s).unfold(3, p, s)  # (B, 3, h, w, p, p)
    assert crops.shape[2:4] == (h, w)
    crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, p, p)
    expected = net(crops).reshape(2, h, w, 128).permute(0, 3, 1, 2)
    torch.testing.assert_close(dense, expected, rtol=1e-9, atol=1e-9)


# --- patches ------------------------------------------------------------------------------------


def test_crop_patches_matches_slicing():
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(4, 3, 30, 40, generator=gen)
    p, half = 9, 4
    centers = torch.tensor([[4, 4], [25, 35], [10, 20], [13, 4]])
    out = crop_patches(images, centers, p)
    assert out.shape == (4, 3, p, p)
    for b, (y, x) in enumerate(centers.tolist()):
        torch.testing.assert_close(out[b], images[b, :, y - half : y + half + 1,
                                                   x - half : x + half + 1], rtol=0, atol=0)
    # Several patches per image via batch_index.
    index = torch.tensor([2, 2, 0])
    out = crop_patches(images, centers[:3], p, batch_index=index)
    for n, (b, (y, x)) in enumerate(zip(index.tolist(), centers[:3].tolist(), strict=True)):
        torch.testing.assert_close(out[n], images[b, :, y - half : y + half + 1,
                                                   x - half : x + half + 1], rtol=0, atol=0)


def test_crop_patches_checks_bounds_and_passes_gradients():
    images = torch.rand(2, 3, 20, 20, requires_grad=True)
    with pytest.raises(ValueError, match="leaves"):
        crop_patches(images, torch.tensor([[3, 10], [10, 10]]), 9)
    with pytest.raises(ValueError, match="leaves"):
        crop_patches(images, torch.tensor([[10, 10], [10, 16]]), 9)
    crop_patches(images, torch.tensor([[4, 15], [10, 10]]), 9).sum().backward()
    assert images.grad[0].sum() == 3 * 81 and images.grad[0, :, 0, 11:20].all()


def _letterboxed(batch: int, height: int = 40, width: int = 48) -> torch.Tensor:
    """Image region rows 12..27 (a wide photo letterboxed into a taller canvas)."""
    valid = torch.zeros(batch, 1, height, width, dtype=torch.bool)
    valid[:, :, 12:28, :] = True
    return valid


def test_sample_centers_inside_image_and_on_valid_pixels():
    p, half = 17, 8
    valid = _letterboxed(500)
    centers = sample_centers(valid, p, generator=torch.Generator().manual_seed(0))
    assert centers.shape == (500, 2) and centers.dtype == torch.long
    y, x = centers[:, 0], centers[:, 1]
    assert (y >= half).all() and (y <= 39 - half).all()
    assert (x >= half).all() and (x <= 47 - half).all()
    assert valid[torch.arange(500), 0, y, x].all()
    # Uniform over the allowed set: the allowed extremes are reached.
    assert y.min() == 12 and y.max() == 27 and x.min() == half and x.max() == 47 - half
    crop_patches(torch.rand(500, 3, 40, 48), centers, p)  # every box is inside
    # Reproducible with a seeded generator.
    again = sample_centers(valid, p, generator=torch.Generator().manual_seed(0))
    assert torch.equal(centers, again)


def test_sample_centers_whole_box_valid():
    valid = torch.zeros(200, 1, 40, 48, dtype=torch.bool)
    valid[:, :, 5:35, 10:40] = True  # 30 x 30 image region
    centers = sample_centers(valid, 17, generator=torch.Generator().manual_seed(1),
                             whole_box_valid=True)
    y, x = centers[:, 0], centers[:, 1]
    assert (y >= 13).all() and (y <= 26).all() and (x >= 18).all() and (x <= 31).all()
    assert y.min() == 13 and y.max() == 26
    with pytest.raises(ValueError, match="no valid centre"):
        sample_centers(_letterboxed(2), 17, whole_box_valid=True)  # region only 16 rows tall


def test_sample_centers_raises_without_room():
    valid = torch.ones(2, 1, 40, 48, dtype=torch.bool)
    valid[1] = False
    with pytest.raises(ValueError, match=r"images \[1\]"):
        sample_centers(valid, 17)
    with pytest.raises(ValueError):
        sample_centers(torch.ones(1, 1, 16, 48, dtype=torch.bool), 17)


# --- distillation overfit -----------------------------------------------------------------------


def _distill(train_net: bool, train_decoder: bool, steps: int = 100) -> tuple[float, float]:
    """Distil a thin LocalNet(17) + Decoder on 64 fixed patches -> fixed random 32-d targets.

    ``width=0.25`` keeps it around 2 s on one CPU thread (the full-width net takes ~0.4 s a
    step); the geometry is the same.
    """
    gen = torch.Generator().manual_seed(0)
    patches = torch.rand(64, 3, 17, 17, generator=gen)
    targets = torch.randn(64, 32, generator=gen) * 3 + 1
    mean, std = descriptor_stats(targets)
    torch.manual_seed(0)
    net, dec = LocalNet(17, width=0.25), Decoder(32)
    params = [*(net.parameters() if train_net else []),
              *(dec.parameters() if train_decoder else [])]
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = distillation_loss(dec(net(patches)), targets, mean, std)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def test_distillation_overfits_a_small_set():
    first, last = _distill(train_net=True, train_decoder=True)
    assert 0.5 < first < 2.0  # per-dimension MSE of a near-zero prediction of unit-variance data
    assert last < first / 100


def test_local_net_itself_learns_with_a_frozen_decoder():
    # With 128-d features and 64 patches the decoder alone could fit the targets, so check that
    # the gradient reaches the Local-Net: with D frozen, only L can lower the loss.
    first, last = _distill(train_net=True, train_decoder=False)
    assert last < first / 20
