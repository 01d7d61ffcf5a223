"""Tests for the frozen patch teachers (glancing.teachers). Offline, a few seconds on one thread."""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import ResNet18_Weights, resnet18

from glancing import teachers
from glancing.errors import GlancingError
from glancing.teachers import (
    DEFAULT_TEACHER,
    TEACHERS,
    Teacher,
    build_teacher,
    describe_patches,
)

SMALL = 64  # teacher input side for the fast tests


@pytest.fixture(scope="module")
def lite() -> Teacher:
    return build_teacher("efficientnet_lite0", input_size=SMALL)


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory) -> Path:
    """A randomly initialised torchvision ResNet-18 state dict on disk (no download needed)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18_random.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture
def isolated_hub(tmp_path, monkeypatch) -> Path:
    """Point torch hub's cache at an empty tmp folder for one test (restored afterwards)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # original value is restored on teardown
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))
    hub = Path(torch.hub.get_dir())
    assert hub == tmp_path / "torch" / "hub"
    return hub


def _patches(n: int, p: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, p, p, generator=torch.Generator().manual_seed(seed))


def test_names():
    assert TEACHERS == ("efficientnet_lite0", "resnet18")
    assert DEFAULT_TEACHER == "efficientnet_lite0"


def test_frozen(lite):
    lite.train()
    assert not lite.training and not any(m.training for m in lite.modules())
    lite.train(True)
    assert not any(m.training for m in lite.modules())
    assert all(not p.requires_grad for p in lite.parameters())

    student = torch.nn.Conv2d(3, 8, 3)
    params = [p for p in [*student.parameters(), *lite.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(params)
    teacher_ids = {id(p) for p in lite.parameters()}
    assert all(id(p) not in teacher_ids for g in opt.param_groups for p in g["params"])

    x = _patches(2, 17).requires_grad_(True)
    out = lite(x)
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize("p", [17, 33])
def test_shapes_and_determinism(lite, p):
    x = _patches(5, p)
    a, b = lite(x), lite(x.clone())
    assert a.shape == (5, 1280) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert torch.isfinite(a).all() and a.abs().sum() > 0
    # one patch's descriptor does not depend on its batch neighbours (eval-mode BatchNorm)
    assert torch.allclose(lite(x[:1]), a[:1], atol=1e-5)


def test_grey_patches_are_repeated_to_rgb(lite):
    grey = _patches(3, 17)[:, :1]
    assert torch.equal(lite(grey), lite(grey.expand(-1, 3, -1, -1)))


def test_describe_patches_batches_match(lite):
    x = _patches(10, 17)
    out = describe_patches(lite, x, batch_size=4)
    assert out.shape == (10, lite.dim) and out.device.type == "cpu"
    assert torch.allclose(out, lite(x), atol=1e-5)
    as_uint8 = (x * 255).round().to(torch.uint8)
    ref = lite(as_uint8.float() / 255)
    assert torch.allclose(describe_patches(lite, as_uint8, batch_size=3), ref, atol=1e-5)
    assert describe_patches(lite, x[:0]).shape == (0, lite.dim)


def test_describe_patches_cpu_budget_does_not_change_results(lite, monkeypatch):
    x = _patches(5, 17)
    ref = describe_patches(lite, x)
    monkeypatch.setattr(teachers, "CPU_PIXEL_BUDGET", 1)  # one patch per forward pass
    assert torch.allclose(describe_patches(lite, x), ref, atol=1e-5)


def _square(img: np.ndarray) -> torch.Tensor:
    """HWC uint8 photo -> (1, 3, s, s) in [0, 1], centre-cropped to a square."""
    h, w = img.shape[:2]
    s = min(h, w)
    crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255


def test_offline_teacher_labels_natural_photos():
    from skimage import data

    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    teacher = build_teacher(DEFAULT_TEACHER, input_size=224)
    photos = [_square(data.chelsea()), _square(data.coffee())]  # classify() resizes to 224
    probs = torch.cat([teacher.classify(x) for x in photos]).softmax(dim=1)
    assert probs.shape == (2, 1000)
    cat, coffee = (categories[i] for i in probs.argmax(dim=1))
    assert cat in {"Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat"}
    assert coffee in {"espresso", "cup", "coffee mug"}
    assert probs.max(dim=1).values.min() > 0.3


def _assert_offline_message(err: GlancingError) -> None:
    msg = str(err)
    assert "\n" not in msg
    assert "ResNet-18" in msg and "could not be downloaded" in msg
    assert "efficientnet_lite0" in msg and "/path/to/resnet18.pth" in msg


def test_resnet18_download_failure_is_one_line(isolated_hub, monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(teachers, "_probe_host", lambda url, timeout=None: None)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    with pytest.raises(GlancingError) as info:
        build_teacher("resnet18", input_size=SMALL)
    _assert_offline_message(info.value)
    assert calls, "the download was not attempted"
    assert not list(isolated_hub.rglob("*.pth"))


def test_resnet18_unreachable_host_fails_before_download(isolated_hub, monkeypatch):
    def no_route(*args, **kwargs):
        raise OSError(113, "No route to host")

    def must_not_download(*args, **kwargs):
        raise AssertionError("download attempted although the host is unreachable")

    monkeypatch.setattr(teachers.socket, "create_connection", no_route)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", must_not_download)
    with pytest.raises(GlancingError) as info:
        build_teacher("resnet18")
    _assert_offline_message(info.value)


def test_resnet18_silent_network_fails_fast(isolated_hub, monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(5)
        raise OSError("unreachable")

    monkeypatch.setattr(teachers, "PROBE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(teachers.socket, "create_connection", hang)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", hang)
    start = time.perf_counter()
    with pytest.raises(GlancingError) as info:
        build_teacher("resnet18")
    assert time.perf_counter() - start < 2.0
    _assert_offline_message(info.value)


def test_resnet18_uses_hub_cache(isolated_hub, resnet_file, monkeypatch):
    def must_not_download(*args, **kwargs):
        raise AssertionError("download attempted although the weights are cached")

    monkeypatch.setattr(teachers, "_probe_host", must_not_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", must_not_download)
    name = Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    (isolated_hub / "checkpoints").mkdir(parents=True)
    (isolated_hub / "checkpoints" / name).write_bytes(resnet_file.read_bytes())
    teacher = build_teacher("resnet18", input_size=SMALL)
    assert (teacher.name, teacher.dim, teacher.input_size) == ("resnet18", 512, SMALL)
    assert teacher(_patches(2, 33)).shape == (2, 512)


def test_resnet18_from_local_file(resnet_file):
    teacher = build_teacher(str(resnet_file), input_size=SMALL)
    assert (teacher.name, teacher.dim) == ("resnet18", 512)
    assert teacher.weights == str(resnet_file.resolve())
    for p in (17, 33):
        out = teacher(_patches(3, p))
        assert out.shape == (3, 512) and torch.equal(out, teacher(_patches(3, p)))
    assert all(not p.requires_grad for p in teacher.parameters())


def test_efficientnet_from_local_file_matches_packaged(lite, tmp_path):
    path = tmp_path / "lite0.pt"
    torch.save({"state_dict": lite.net.state_dict()}, path)  # a wrapped checkpoint is accepted
    teacher = build_teacher(path, input_size=SMALL)
    assert (teacher.name, teacher.dim) == ("efficientnet_lite0", 1280)
    x = _patches(2, 17)
    assert torch.equal(teacher(x), lite(x))


def test_wrong_keys_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(GlancingError, match="other.pth"):
        build_teacher(str(path))


def test_partial_state_dict_is_refused(tmp_path, resnet_file):
    state = torch.load(resnet_file, weights_only=True)
    del state["layer4.1.conv2.weight"]
    path = tmp_path / "broken_resnet.pth"
    torch.save(state, path)
    with pytest.raises(GlancingError, match="broken_resnet.pth") as info:
        build_teacher(str(path))
    assert "\n" not in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(GlancingError, match="does not exist"):
        build_teacher(str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(GlancingError, match="junk.pth") as info:
        build_teacher(str(junk))
    assert "\n" not in str(info.value)


def test_unknown_name():
    with pytest.raises(GlancingError, match="efficientnet_lite0"):
        build_teacher("vgg16")
