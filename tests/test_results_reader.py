"""glancing.results reads the committed run folders into one table."""

from __future__ import annotations

from pathlib import Path

import pytest

from glancing.errors import GlancingError
from glancing.notebook import BOOK_COMPARISONS, BOOK_SWEEP_RUNS
from glancing.results import HEADS, compare_rows, losses, manifest, metrics_rows, sweep_rows

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


def test_sweeps_prefer_the_comparison_and_name_their_source():
    compared = {(r["category"], r["method"]): r for r in compare_rows(RESULTS)
                if r["run"] in BOOK_COMPARISONS}
    rows = sweep_rows(RESULTS, "patch_size", BOOK_COMPARISONS, BOOK_SWEEP_RUNS)
    assert len({(r["category"], r["value"]) for r in rows}) == len(rows)
    for row in rows:
        method = "glance" if row["value"] == 17 else f"glance-p{row['value']}"
        if (row["category"], method) in compared:  # the comparison wins over a run folder
            assert row["source"] in BOOK_COMPARISONS
            assert row["pixel_auroc"] == compared[row["category"], method]["pixel_auroc"]
        else:
            assert row["source"].startswith(BOOK_SWEEP_RUNS) or any(
                row["source"].startswith(run + "/") for run in BOOK_SWEEP_RUNS)
    # every dataset of the complete runs has both patch sizes
    assert {(r["category"], r["value"]) for r in rows} >= {
        (c, p) for c in ("brick", "grass", "gravel", "mesh", "magnetic_tile", "transistor")
        for p in (17, 33)}


def test_lambda_sweep_reads_a_runs_heads_at_the_profiles_patch_size():
    rows = sweep_rows(RESULTS, "lambda_s", (), BOOK_SWEEP_RUNS)
    heads = {(r["category"], r["head"]): r for r in metrics_rows(RESULTS)
             if r["file"] == "2026-12-03-quick-cpu/embedded/metrics.json"}
    grass = {r["value"]: r for r in rows if r["category"] == "grass"}
    assert sorted(grass) == [0.0, 0.8, 1.0]
    assert grass[1.0]["au_pro"] == heads["grass", "iad"]["au_pro"]
    assert grass[0.0]["au_pro"] == heads["grass", "dad"]["au_pro"]
    assert grass[0.8]["au_pro"] == heads["grass", "combined"]["au_pro"]  # not the p = 33 run


def test_sweep_errors_are_one_clear_line():
    with pytest.raises(GlancingError, match="no sweep of 'stride'"):
        sweep_rows(RESULTS, "stride", BOOK_COMPARISONS)
    # the whole quick-cpu folder holds Magnetic Tile twice (the two-thread repeat)
    with pytest.raises(GlancingError, match="two run files give magnetic_tile"):
        sweep_rows(RESULTS, "patch_size", (), ("2026-12-03-quick-cpu",))
