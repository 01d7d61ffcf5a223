"""End to end: `python -m glancing run` on a tiny tree, resuming after a kill, and predict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_mvtec_tree

from glancing.cli import main
from glancing.errors import GlancingError
from glancing.pipeline import load_model, run

HEADS = ("iad", "dad", "combined")
METRICS = ("pixel_auroc", "au_pro", "image_auroc")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One descriptor cache for the module (the teacher runs once per patch set)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLANCING_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def tree(tmp_path_factory, cache):
    return write_mvtec_tree(tmp_path_factory.mktemp("data"), size=(64, 64), n_train=12,
                            n_good=2, defects=("scratch", "dent"), n_defect=2)


@pytest.fixture(scope="module")
def trained(tree, tmp_path_factory):
    """One ci-profile run through the command line, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("run")
    code = main(["run", "--data", str(tree), "--profile", "ci", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def _cli(args, env_extra=None, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "glancing", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def test_run_writes_metrics_figure_and_checkpoints(tree, trained):
    out = trained
    report = json.loads((out / "metrics.json").read_text())
    result = report["categories"]["widget"]
    for head in HEADS:
        for name in METRICS:
            assert 0.0 <= result["metrics"][head][name] <= 1.0
    assert set(result["seconds"]) >= {"finetune", "joint", "calibrate", "evaluate"}
    assert report["teacher"]["name"] == "efficientnet_lite0" and report["seed"] == 0
    assert report["profile"]["name"] == "ci" and report["device"].startswith("cpu")
    assert report["cpu"].endswith(torch.backends.cpu.get_cpu_capability())
    assert report["command"].startswith("python -m glancing run --data ")
    # the last two parts of the path only, never the machine's folders
    assert report["data"]["root"] == f"{tree.parent.name}/{tree.name}"
    assert not report["data"]["root"].startswith("/")  # no machine folders
    for name in ("shared/distil.pt", "widget/finetune.pt", "widget/joint.pt", "widget/model.pt",
                 "widget/maps.png", "widget/losses.json", "shared/losses.json", "run.json"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.partial")) and not list(out.rglob(".*.tmp"))

    # a second call reuses everything and gives the same numbers
    again = run(str(tree), profile="ci", out=out, progress=False)
    assert again["categories"]["widget"]["metrics"] == result["metrics"]


def test_local_net_is_frozen_in_the_joint_stage(trained, tmp_path):
    import torch

    from glancing import checkpoint
    from glancing.models.global_net import GlobalNet
    from glancing.models.heads import DADHead
    from glancing.models.local_net import LocalNet
    from glancing.train import train_global_net

    finetuned = checkpoint.load(trained / "widget" / "finetune.pt")["modules"]["local_net"]
    model, _ = load_model(trained / "widget")
    for key, value in model.local_net.state_dict().items():
        assert torch.equal(value, finetuned[key]), key

    # and directly: a joint stage leaves L untouched, in eval mode, without gradients
    torch.manual_seed(0)
    local_net = LocalNet(17)
    before = {k: v.clone() for k, v in local_net.state_dict().items()}
    images, valid = torch.rand(4, 3, 48, 48), torch.ones(4, 1, 48, 48, dtype=torch.bool)
    train_global_net(tmp_path / "joint.pt", GlobalNet(), DADHead(), local_net, images, valid,
                     iterations=3, batch_size=2, lr_global=1e-2, lr_head=1e-2, lambda_t=1.0,
                     generator=torch.Generator().manual_seed(0), checkpoint_every=100,
                     progress=False)
    assert not local_net.training
    assert not any(p.requires_grad for p in local_net.parameters())
    for key, value in local_net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_run_killed_mid_stage_resumes_to_the_same_metrics(tree, trained, cache, tmp_path):
    args = ["run", "--data", str(tree), "--profile", "ci", "--quiet", "--out",
            str(tmp_path / "killed")]
    env = {"GLANCING_CACHE": str(cache)}
    killed = _cli(args, {**env, "GLANCING_TEST_KILL_AT": "joint:10"})
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "killed" / "widget" / "joint.pt.partial").is_file()
    assert not (tmp_path / "killed" / "widget" / "joint.pt").exists()
    resumed = _cli(args, env)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((trained / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert a["categories"]["widget"]["metrics"] == b["categories"]["widget"]["metrics"]


def test_predict_scores_new_images_with_a_decision(tree, trained):
    out = trained
    images = sorted((tree / "widget" / "test").rglob("*.png"))[:2]
    assert main(["predict", "--model", str(out / "widget"), *map(str, images)]) == 0
    predictions = json.loads((out / "widget" / "predictions" / "predictions.json").read_text())
    assert len(predictions) == 2
    for p in predictions:
        assert isinstance(p["defective"], bool) and Path(p["map"]).is_file()


def test_other_settings_in_the_same_folder_are_refused(tree, trained):
    with pytest.raises(GlancingError, match="other settings"):
        run(str(tree), profile="quick", out=trained, progress=False)


def test_a_bad_teacher_fails_before_writing_anything(tree, tmp_path):
    with pytest.raises(GlancingError, match="does not exist"):
        run(str(tree), profile="ci", teacher=str(tmp_path / "none.pth"), out=tmp_path / "out",
            progress=False)
    assert not (tmp_path / "out").exists()


def test_predict_without_a_model_is_one_line(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path), "x.png"]) == 2
    assert "no trained model" in capsys.readouterr().err
