"""The MVTec AD appendix's commands work, run as written on a fake MVTec AD tree.

book/mvtec.md holds the commands of the full reproduction in one fenced block. This test reads
that block and runs each line in the ``ci`` profile: the data root points at a fake tree of two
categories, and ``--teacher resnet18`` (a download on Colab) reads a local ResNet-18 weights
file instead, since nothing may be downloaded here.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import torch
import torchvision
from conftest import write_mvtec_tree

from glancing.cli import main

APPENDIX = Path(__file__).resolve().parent.parent / "book" / "mvtec.md"
MARKER = "# The reproduction"


def appendix_commands() -> list[str]:
    """The lines of the fenced block that starts with :data:`MARKER`."""
    blocks = re.findall(r"```bash\n(.*?)```", APPENDIX.read_text(), flags=re.DOTALL)
    chosen = [block for block in blocks if block.startswith(MARKER)]
    assert len(chosen) == 1, f"book/mvtec.md must hold one bash block starting with {MARKER!r}"
    return [line for line in chosen[0].splitlines() if line and not line.startswith("#")]


def test_the_appendix_commands_run_on_a_fake_mvtec_tree(tmp_path, monkeypatch, capsys):
    data_root = tmp_path / "data"
    for category in ("bottle", "zipper"):
        write_mvtec_tree(data_root / "mvtec_ad", category, size=(48, 48),
                         defects=("broken", "squeezed"), seed=len(category))
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    monkeypatch.chdir(tmp_path)

    commands = appendix_commands()
    assert commands[0].startswith("export GLANCING_DATA_ROOT=")
    assert [c.split()[:4] for c in commands[1:]] == [
        ["python", "-m", "glancing", "data"], ["python", "-m", "glancing", "run"],
        ["python", "-m", "glancing", "report"]]
    monkeypatch.setenv("GLANCING_DATA_ROOT", str(data_root))
    for command in commands[1:]:
        argv = shlex.split(command)[3:]
        argv = [{"gpu": "ci", "resnet18": str(weights)}.get(arg, arg) for arg in argv]
        if argv[0] == "run":
            argv.append("--quiet")
        assert main(argv) == 0, command

    out = capsys.readouterr().out
    assert "bottle" in out and "zipper" in out
    assert "| **mean of 2** |" in out  # the report's table
    report = json.loads((tmp_path / "runs" / "mvtec-gpu" / "metrics.json").read_text())
    assert sorted(report["categories"]) == ["bottle", "zipper"]
    assert report["teacher"]["name"] == "resnet18" and report["profile"]["name"] == "ci"
