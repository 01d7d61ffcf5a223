"""``bench scoremap`` runs end to end in seconds and reports honest, comparable rows."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from glancing.bench import loop_scores_at
from glancing.cli import build_parser
from glancing.errors import GlancingError
from glancing.models.glance import Glance
from glancing.models.global_net import GlobalNet
from glancing.models.heads import DADHead
from glancing.models.local_net import LocalNet


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", "scoremap", *argv])


def test_tiny_bench_writes_a_table_with_every_method(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = parse("--sides", "48,64", "--patch-size", "17", "--train-size", "48",
                 "--train-iters", "2", "--images", "1", "--loop-full", "100",
                 "--loop-windows", "9", "--work", str(tmp_path / "work"), "--out", str(out),
                 "--device", "cpu", "--quiet", "--no-evaluate")
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "one-pass" in printed and "extrapolated" in printed
    results = json.loads(out.read_text())
    full, sampled = results["sides"]["48"], results["sides"]["64"]
    assert set(full) == {"loop", "exact", "one-pass"}
    # At 48 px the loop ran on every window: the exact map is the loop's map.
    assert full["loop"]["note"] == "" and "extrapolated" in sampled["loop"]["note"]
    assert full["exact"]["max_abs_diff_vs_loop"] < 1e-3
    assert full["exact"]["pixel_auroc"] == pytest.approx(full["loop"]["pixel_auroc"], abs=1e-4)
    for row in (*full.values(), *sampled.values()):
        assert row["ms_per_image"] > 0 and row["gmac_per_image"] > 0
        assert 0 <= row["pixel_auroc"] <= 1
    assert full["loop"]["speedup_vs_loop"] == pytest.approx(1.0)


def test_the_sampled_loop_is_the_reference_scorer():
    torch.manual_seed(0)
    model = Glance(LocalNet(17, out_dim=16, width=0.25), GlobalNet(16, (8, 8, 16)),
                   DADHead(16, 16)).eval()
    image, valid = torch.rand(3, 40, 44), torch.ones(1, 40, 44, dtype=torch.bool)
    expected = model.window_scores(image, valid, (0, 0, 40, 44), 5)
    pick = torch.tensor([0, 3, len(expected["centers"]) - 1])
    sampled = loop_scores_at(model, image, valid, expected["centers"][pick], 2)
    torch.testing.assert_close(sampled["iad"], expected["iad"][pick])
    torch.testing.assert_close(sampled["dad"], expected["dad"][pick])


def test_bad_sides_are_one_clear_error():
    args = parse("--sides", "128,big")
    with pytest.raises(GlancingError, match="--sides"):
        args.func(args)
