"""glancing.results reads the committed run folders into one table."""

from __future__ import annotations

from pathlib import Path

import pytest

from glancing.errors import GlancingError
from glancing.results import HEADS, losses, manifest, metrics_rows

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"


def test_rows_cover_every_run_category_and_head():
    rows = metrics_rows(RESULTS)
    # every run folder with a metrics.json is read (the benchmark folder has none)
    runs = {name for name in manifest(RESULTS) if any((RESULTS / name).rglob("metrics.json"))}
    assert {row["run"] for row in rows} == runs
    keys = {(row["file"], row["category"]) for row in rows}
    assert len(rows) == len(keys) * len(HEADS)
    for row in rows:
        assert 0.0 <= row["pixel_auroc"] <= 1.0 and 0.0 <= row["au_pro"] <= 1.0
        assert row["patch_size"] in (17, 33) and row["minutes"] > 0


def test_losses_of_a_stage():
    row = next(r for r in metrics_rows(RESULTS) if r["category"] == "brick")
    joint = losses(RESULTS, row["file"], "joint", "brick")
    assert joint[0]["it"] == 0 and "l_iad" in joint[0]
    assert "l_k" in losses(RESULTS, row["file"], "distil")[-1]
    with pytest.raises(GlancingError, match="per category"):
        losses(RESULTS, row["file"], "joint")
    with pytest.raises(GlancingError, match="no 'joint' losses"):
        losses(RESULTS, row["file"], "joint", "carpet")


def test_missing_results_folder_is_one_clear_error(tmp_path):
    with pytest.raises(GlancingError, match="does not exist"):
        metrics_rows(tmp_path / "none")
    with pytest.raises(GlancingError, match="results.yml is missing"):
        manifest(tmp_path)
