"""Random stains for the DAD head's negatives."""

from __future__ import annotations

import pytest
import torch

from glancing.data.stains import paste_random_stain, random_stain_alpha, random_stain_alphas


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _patches(batch: int = 8, size: int = 33, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=_generator(99), dtype=dtype)


def test_alpha_shape_range_and_coverage():
    alphas = random_stain_alphas(400, 33, _generator(0))
    assert alphas.shape == (400, 33, 33)
    assert alphas.min() >= 0 and alphas.max() <= 1
    coverage = alphas.flatten(1).mean(dim=1)
    # 5-40% before the blur; the blur keeps the sum except what spills over the border.
    assert coverage.min() >= 0.03 and coverage.max() <= 0.41
    assert coverage.max() - coverage.min() > 0.25  # varied, not one size
    assert (alphas.amax(dim=(1, 2)) > 0.5).all()  # a visible core in every stain


def test_single_alpha_and_determinism():
    first = random_stain_alpha(21, _generator(5))
    assert first.shape == (21, 21)
    assert torch.equal(first, random_stain_alpha(21, _generator(5)))
    assert not torch.equal(first, random_stain_alpha(21, _generator(6)))


def test_paste_shapes_range_and_blend():
    patches = _patches()
    stained, alpha = paste_random_stain(patches, _generator(1))
    assert stained.shape == patches.shape and alpha.shape == (8, 1, 33, 33)
    assert stained.min() >= 0 and stained.max() <= 1 and alpha.min() >= 0 and alpha.max() <= 1
    untouched = (alpha == 0).expand_as(patches)
    assert torch.equal(stained[untouched], patches[untouched])
    assert ((stained - patches).abs().flatten(1).amax(dim=1) > 0.05).all()  # every patch stained


def test_paste_is_deterministic_for_a_seeded_generator():
    patches = _patches()
    first = paste_random_stain(patches, _generator(2))
    second = paste_random_stain(patches, _generator(2))
    other = paste_random_stain(patches, _generator(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


def test_dtype_and_device_follow_the_patches():
    stained, alpha = paste_random_stain(_patches(dtype=torch.float64), _generator(4))
    assert stained.dtype == alpha.dtype == torch.float64
    assert stained.device == alpha.device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_patches_with_a_cpu_generator_match_cpu():
    patches = _patches()
    on_cpu = paste_random_stain(patches, _generator(7))
    on_gpu = paste_random_stain(patches.cuda(), _generator(7))
    assert on_gpu[0].device.type == "cuda" and on_gpu[1].device.type == "cuda"
    torch.testing.assert_close(on_gpu[0].cpu(), on_cpu[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(on_gpu[1].cpu(), on_cpu[1], atol=1e-4, rtol=0)
