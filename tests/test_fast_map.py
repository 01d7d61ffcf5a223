"""The fast exact score map equals the per-patch reference, with trained weights."""

from __future__ import annotations

import pytest
import torch

from glancing.data.letterbox import letterbox
from glancing.errors import GlancingError
from glancing.fast_map import fast_global_features, fast_score_maps, fast_window_scores
from glancing.models.glance import Glance
from glancing.models.global_net import GlobalNet, hole_mask
from glancing.models.heads import DADHead
from glancing.models.local_net import LocalNet
from glancing.score_map import assemble, assemble_fast, window_centers
from glancing.train import train_global_net

DIM = 32  # narrow networks keep the per-patch reference quick; the geometry is the real one


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Glance:
    """L, G and C with G and C trained for a few steps (weights far from their init)."""
    torch.manual_seed(0)
    local_net = LocalNet(33, out_dim=DIM, width=0.25).eval()
    global_net, dad_head = GlobalNet(out_dim=DIM, widths=(8, 16, 32)), DADHead(DIM, 32)
    before = global_net.stages[2][1].weight.detach().clone()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 72, 72, generator=generator)
    valid = torch.ones(6, 1, 72, 72, dtype=torch.bool)
    train_global_net(tmp_path_factory.mktemp("joint") / "joint.pt", global_net, dad_head,
                     local_net, images, valid, iterations=12, batch_size=4, lr_global=1e-2,
                     lr_head=1e-2, lambda_t=0.1, generator=generator, checkpoint_every=100,
                     progress=False)
    moved = (global_net.stages[2][1].weight - before).abs().max()
    assert moved > 1e-3, "the weights did not move: the equality would test an untrained net"
    return Glance(local_net, global_net.eval(), dad_head.eval()).eval()


def canvas(kind: str):
    """An odd-sized image: 131 x 97 whole, or letterboxed into 131 x 131 (padding invalid)."""
    image = torch.rand(3, 131, 97, generator=torch.Generator().manual_seed(1))
    if kind == "letterboxed":
        image, valid, box = letterbox(image, 131)
        return image, valid, tuple(box)
    return image, torch.ones(1, 131, 97, dtype=torch.bool), (0, 0, 131, 97)


@pytest.fixture(scope="module")
def reference(model):
    cache = {}

    def get(kind, stride):
        if (kind, stride) not in cache:
            image, valid, box = canvas(kind)
            cache[kind, stride] = model.window_scores(image, valid, box, stride, batch_size=256)
        return cache[kind, stride]
    return get


# Both strides, both kinds of canvas and both chunk sizes, within the test-time budget: the
# per-patch reference is the slow part, and chunks of 1 cost a Python step per window.
@pytest.mark.parametrize(("kind", "stride", "chunk_size"), [
    ("whole", 3, 7), ("letterboxed", 4, 7), ("letterboxed", 4, 1)])
def test_fast_window_scores_equal_the_per_patch_loop(model, reference, kind, stride,
                                                     chunk_size):
    image, valid, box = canvas(kind)
    expected = reference(kind, stride)
    fast = fast_window_scores(model, image, valid, box, stride, chunk_size)
    assert torch.equal(fast["centers"], expected["centers"])
    assert expected["iad"].std() > 0 and expected["dad"].std() > 0  # a map, not a constant
    torch.testing.assert_close(fast["iad"], expected["iad"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast["dad"], expected["dad"], rtol=1e-4, atol=1e-6)


def test_fast_maps_equal_the_reference_maps(model, reference):
    image, valid, box = canvas("letterboxed")
    scores = reference("letterboxed", 4)
    model.normalizer.fit(scores["iad"], scores["dad"])
    expected = model.maps_from_scores(scores, tuple(image.shape[-2:]))
    fast = fast_score_maps(model, image, valid, box, 4, chunk_size=7)
    for head in ("iad", "dad", "combined"):
        torch.testing.assert_close(fast[head], expected[head], rtol=1e-4, atol=1e-5)
    assert (fast["combined"][~valid[0]] == 0).all()


def test_z_g_equals_predict_for_holes_at_the_corners_and_borders(model):
    image, valid, _ = canvas("letterboxed")
    centers = torch.tensor([[16, 33], [16, 97], [114, 33], [114, 97], [65, 40], [20, 65]])
    expected = model.global_net.predict(image[None].expand(6, -1, -1, -1),
                                        hole_mask(valid[None].expand(6, -1, -1, -1), centers, 33),
                                        centers)
    stats = {}
    fast = fast_global_features(model.global_net, image, valid, centers, 33, 4, stats)
    torch.testing.assert_close(fast, expected.detach(), rtol=1e-4, atol=1e-6)
    assert 0 < stats["macs"] < 6 * model.global_net.macs(131)


def test_assemble_fast_equals_assemble():
    generator = torch.Generator().manual_seed(2)
    centers = window_centers((3, 5, 90, 70), 17, 3)
    scores = torch.randn(len(centers), generator=generator)
    torch.testing.assert_close(assemble_fast(scores, centers, 17, (99, 80)),
                               assemble(scores, centers, 17, (99, 80)), rtol=1e-5, atol=1e-6)


def test_bad_chunk_size_is_one_clear_error(model):
    image, valid, _ = canvas("whole")
    with pytest.raises(GlancingError, match="chunk_size"):
        fast_global_features(model.global_net, image, valid, torch.tensor([[60, 40]]), 33, 0)


@pytest.mark.parametrize("patch_size", [17, 65])
def test_fast_window_scores_at_the_other_patch_sizes(model, patch_size):
    """p = 17 (the quick profile's, which the pipeline scores with) and p = 65: the cones
    change with the hole's size."""
    torch.manual_seed(3)
    local_net = LocalNet(patch_size, out_dim=DIM, width=0.25).eval()
    other = Glance(local_net, model.global_net, model.dad_head).eval()
    image, valid, box = canvas("letterboxed")
    stride = 8 if patch_size == 17 else 16
    expected = other.window_scores(image, valid, box, stride, batch_size=256)
    fast = fast_window_scores(other, image, valid, box, stride, chunk_size=7)
    torch.testing.assert_close(fast["iad"], expected["iad"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast["dad"], expected["dad"], rtol=1e-4, atol=1e-6)
