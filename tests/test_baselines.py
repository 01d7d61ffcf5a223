"""The peers of GLANCE (PaDiM, PatchCore, Uninformed Students) and the self-supervised Local-Net
on tiny images: shapes, and a planted defect that must score above its surroundings."""

from __future__ import annotations

import pytest
import torch

from glancing.baselines import PaDiM, PatchCore, StudentEnsemble
from glancing.baselines.patchcore import greedy_coreset
from glancing.baselines.students import centre_map
from glancing.models.local_net import LocalNet
from glancing.selfsup import SimSiamHead, simsiam_loss, train_selfsup, two_views
from glancing.teachers import build_teacher

SIZE = 48
BOX = slice(18, 30)  # the planted defect, rows and columns


def _stripes(n: int, seed: int) -> torch.Tensor:
    """(n, 3, S, S) normal images: soft diagonal stripes with a random phase, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    phase = torch.rand(n, 1, 1, generator=g) * 6.28
    base = 0.5 + 0.2 * torch.sin((x + y)[None] * 0.5 + phase)
    noise = 0.03 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    return (base[:, None] + noise).clamp(0, 1)


@pytest.fixture(scope="module")
def data():
    train, test = _stripes(24, 0), _stripes(3, 1)
    test[:, 0, BOX, BOX] = 1.0  # a red square where stripes should be
    test[:, 1:, BOX, BOX] = 0.0
    valid = torch.ones(len(train), 1, SIZE, SIZE, dtype=torch.bool)
    return train, valid, test


@pytest.fixture(scope="module")
def teacher():
    return build_teacher("efficientnet_lite0", 64)


def _defect_scores_higher(maps: torch.Tensor) -> None:
    assert maps.shape == (3, SIZE, SIZE) and torch.isfinite(maps).all()
    inside = maps[:, BOX, BOX].mean()
    outside = maps.clone()
    outside[:, 10:38, 10:38] = float("nan")  # leave the defect's blurred rim out
    assert inside > torch.nanquantile(outside.flatten(), 0.95)


def test_padim_shapes_and_planted_defect(data, teacher):
    train, valid, test = data
    model = PaDiM(teacher, channels=50).fit(train, valid)
    assert model.mean.shape == (12 * 12, 50) and model.precision.shape == (144, 50, 50)
    _defect_scores_higher(model.score_maps(test))


def test_patchcore_shapes_and_planted_defect(data, teacher):
    train, valid, test = data
    model = PatchCore(teacher, coreset_ratio=0.25).fit(train, valid)
    assert model.bank.shape == (round(0.25 * 24 * 36), 152)
    _defect_scores_higher(model.score_maps(test, None))


def test_greedy_coreset_covers_the_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    chosen = greedy_coreset(points, 3, g)
    assert sorted((chosen // 50).tolist()) == [0, 1, 2]  # one point from each cluster


def test_students_shapes_and_planted_defect(data, tmp_path):
    train, valid, test = data
    torch.manual_seed(0)
    teacher_net = LocalNet(17, width=0.25)
    model = StudentEnsemble(teacher_net, ensemble=2, iterations=40, batch_size=16,
                            lr=1e-3, work_dir=tmp_path).fit(train, valid, train[:4], valid[:4])
    assert model.stages[0].log[-1]["loss"] < model.stages[0].log[0]["loss"]
    assert set(model.stats) == {"e_mean", "e_std", "v_mean", "v_std"}
    _defect_scores_higher(model.score_maps(test))
    # resumable: a second fit finds the students' checkpoints
    again = StudentEnsemble(teacher_net, ensemble=2, iterations=40, batch_size=16, lr=1e-3,
                            work_dir=tmp_path).fit(train, valid, train[:4], valid[:4])
    assert all(stage.reused for stage in again.stages)
    # the standardisation only counts windows centred on image pixels (not letterbox padding)
    e, v = model._window_scores(train[:1])  # (1, h, w)
    p, stride = teacher_net.patch_size, teacher_net.stride
    only = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
    only[0, 0, p // 2, p // 2] = only[0, 0, p // 2 + stride, p // 2] = True  # windows (0,0), (1,0)
    model._standardise(train[:1], only)
    assert model.stats["e_mean"] == pytest.approx(float(e[0, :2, 0].mean()), rel=1e-5)
    assert model.stats["v_mean"] == pytest.approx(float(v[0, :2, 0].mean()), rel=1e-5)


def test_centre_map_puts_each_window_at_its_centre():
    scores = torch.arange(4.0).reshape(1, 2, 2)  # windows of p = 5 at stride 1 in a 6 x 6 image
    out = centre_map(scores, 5, 1, (6, 6))
    assert out.shape == (1, 6, 6)
    assert out[0, 2, 2] == 0 and out[0, 2, 3] == 1 and out[0, 3, 2] == 2 and out[0, 3, 3] == 3
    assert out[0, 0, 0] == 0 and out[0, 5, 5] == 3  # border repeated


def test_selfsup_views_and_a_loss_that_decreases(data, tmp_path):
    train, valid, _ = data
    g = torch.Generator().manual_seed(0)
    a, b = two_views(train[:4], valid[:4], 17, g)
    assert a.shape == b.shape == (4, 3, 17, 17) and not torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    z, q = SimSiamHead(8).train()(torch.randn(4, 8))
    assert z.shape == q.shape == (4, 8)
    assert simsiam_loss(z, z, z, z).item() == pytest.approx(-1.0)

    torch.manual_seed(0)
    local_net = LocalNet(17, width=0.25)
    stage = train_selfsup(tmp_path / "selfsup.pt", local_net, train, valid, iterations=60,
                          batch_size=16, lr=3e-3, generator=torch.Generator().manual_seed(0),
                          checkpoint_every=20, progress=False)
    losses = [entry["loss"] for entry in stage.log]
    assert len(losses) == 60
    # measured: the mean of the first ten steps -0.004, of the last ten -0.099
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.05
    assert stage.log[-1]["z_std"] > 0.05  # no collapse (1 / sqrt(128) = 0.088 when spread)
    assert local_net(a).shape == (4, 128)


def test_random_teacher_for_the_ablation_has_live_descriptors(teacher):
    """The randomly initialised teacher: same architecture, no ImageNet weights, and BatchNorm
    statistics from natural patches so that descriptors still differ between patches."""
    random = build_teacher("efficientnet_lite0-random", 64)
    assert random.name == "efficientnet_lite0" and "random" in random.weights
    assert not any(m.training for m in random.modules())
    patches = _stripes(8, 3)[:, :, :17, :17]
    described = random(patches)
    assert described.shape == (8, 1280)
    assert described.std(dim=0).mean() > 1e-3  # without calibration: ~1e-10
    weights = dict(random.net.named_parameters())
    trained = dict(teacher.net.named_parameters())
    assert not torch.equal(weights["_conv_stem.weight"], trained["_conv_stem.weight"])
