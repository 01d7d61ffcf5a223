"""``python -m glancing compare`` in the ci profile on a tiny tree: every method, and resuming."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_mvtec_tree

from glancing.cli import main
from glancing.compare import METHODS, markdown_table
from glancing.results import compare_maps, compare_progress, compare_rows

METRICS = ("pixel_auroc", "au_pro", "image_auroc")
# Two trained GLANCE models (base, and no fine-tuning, which reuses the distillation), the
# rescored lambda_s variants, a skipped one, the one-pass net on the base Local-Net and the
# three peers: every kind of result, in about a minute. (The self-supervised Local-Net is
# tested in test_baselines.py; every method ran on embedded brick in the ci profile when this
# was written.)
CHOSEN = ("glance", "glance-iad", "glance-ls0.5", "glance-dad", "glance-p65",
          "glance-no-finetune", "glance-one-pass", "students", "padim", "patchcore")


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    data = write_mvtec_tree(tmp_path_factory.mktemp("data"), size=(64, 64), n_train=12,
                            n_good=2, defects=("scratch",), n_defect=2)
    out = tmp_path_factory.mktemp("compare")
    args = ["compare", "--data", str(data), "--profile", "ci", "--out", str(out), "--quiet",
            "--methods", *CHOSEN]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLANCING_CACHE", str(cache))
        assert main(args) == 0
        yield out, args


def test_compare_writes_every_method(compared):
    out, _ = compared
    report = json.loads((out / "compare.json").read_text())
    results = report["results"]["widget"]
    assert list(results) == [m for m in METHODS if m in CHOSEN]
    for method, by_seed in results.items():
        record = by_seed["0"]
        if method == "glance-p65":  # larger than the ci profile's 64 px images
            assert "skipped" in record
            continue
        for name in METRICS:
            assert 0.0 <= record["metrics"][name] <= 1.0, (method, name)
        assert record["train_s"] > 0 and record["ms_per_image"] > 0
        assert record["provenance"]["command"].startswith("python -m glancing compare")
        assert torch.backends.cpu.get_cpu_capability() in record["provenance"]["cpu"]
        assert (out / "maps" / "widget" / method / "seed0.pt").is_file()
    # the lambda_s variants rescore one model: same training time, other metrics possible
    assert results["glance-iad"]["0"]["train_s"] == results["glance"]["0"]["train_s"]
    assert results["glance-iad"]["0"]["settings"]["lambda_s"] == 1.0
    assert results["glance-no-finetune"]["0"]["settings"]["finetune_iters"] == 0
    # the one-pass net reuses the base model's Local-Net: its training time includes the base
    # model's Local-Net stages but not the Global-Net's joint stage
    one_pass = results["glance-one-pass"]["0"]
    assert one_pass["kind"] == "extension" and one_pass["settings"]["scorer"].startswith("one pass")
    assert (out / one_pass["model"] / "blind-spot.pt").is_file()
    table = (out / "compare.md").read_text()
    assert table == markdown_table(report)
    assert "| patchcore | peer | 1 |" in table and "skipped" in table


def test_a_second_call_recomputes_nothing(compared):
    out, args = compared
    before = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.json")}
    models = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.json")} == before
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == models


def test_two_seeds_give_mean_and_spread():
    report = {"profile": {"name": "ci"}, "data": "x", "results": {"c": {"padim": {
        "0": {"kind": "peer", "metrics": {"pixel_auroc": 0.8, "au_pro": 0.5, "image_auroc": 0.6},
              "train_s": 10.0, "ms_per_image": 5.0},
        "1": {"kind": "peer", "metrics": {"pixel_auroc": 0.9, "au_pro": 0.5, "image_auroc": 0.7},
              "train_s": 12.0, "ms_per_image": 7.0}}}}}
    table = markdown_table(report)
    assert "| padim | peer | 2 | 0.850 ± 0.071 | 0.500 ± 0.000 | 0.650 ± 0.071 | 11 ± 1 |" in table


def test_other_settings_in_the_same_folder_are_refused(compared, capsys):
    out, args = compared
    quick = [a if a != "ci" else "quick" for a in args]
    assert main(quick) == 2
    assert "other settings" in capsys.readouterr().err


def test_the_book_reads_a_comparison(compared):
    out, _ = compared
    rows = [row for row in compare_rows(out.parent) if row["file"] == f"{out.name}/compare.json"]
    # one row per finished method (the skipped p65 has none), provenance on each
    assert sorted(row["method"] for row in rows) == sorted(m for m in CHOSEN if m != "glance-p65")
    for row in rows:
        assert row["run"] == out.name and row["kind"] in ("glance", "ablation", "extension", "peer")
        assert row["category"] == "widget" and row["profile"] == "ci" and row["seed"] == 0
        assert 0.0 <= row["pixel_auroc"] <= 1.0 and row["train_s"] >= 0.0
        assert row["commit"] and row["command"].startswith("python -m glancing compare")
    saved = compare_maps(out.parent, next(r for r in rows if r["method"] == "padim"))
    assert saved["maps"].shape[0] == len(saved["defects"]) == len(saved["index"]) > 0
    assert compare_maps(out.parent, {**rows[0], "method": "none"}) == {}
    progress = compare_progress(out.parent)[out.name, "widget"]
    assert progress["skipped"] == ["glance-p65"]
    assert sorted(progress["finished"]) == sorted(m for m in CHOSEN if m != "glance-p65")
    assert sorted(progress["missing"]) == sorted(m for m in METHODS if m not in CHOSEN)


def _book_compare():
    """tools/book_compare.py, imported from its file (tools/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tools" / "book_compare.py"
    spec = importlib.util.spec_from_file_location("book_compare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_book_compare_merges_folders_and_keeps_a_small_gallery(compared, tmp_path):
    import shutil

    import torch

    from glancing.errors import GlancingError

    tool = _book_compare()
    out, _ = compared
    # two halves of the comparison, as two processes would have written them
    halves = [tmp_path / "a", tmp_path / "b"]
    records = sorted((out / "results").glob("*/*/seed*.json"))
    for k, half in enumerate(halves):
        half.mkdir()
        shutil.copy(out / "settings.json", half / "settings.json")
        for path in records[k::2]:
            target = half / path.relative_to(out)
            target.parent.mkdir(parents=True)
            shutil.copy(path, target)
    merged = tool.merge(tmp_path / "book", halves)
    original = json.loads((out / "compare.json").read_text())
    assert merged["results"] == original["results"]
    assert merged["provenance"]["sources"] == ["a", "b"]
    assert (tmp_path / "book" / "compare.md").read_text() == (out / "compare.md").read_text()
    assert not (tmp_path / "book" / "maps").exists()  # not the embedded data: no maps
    tool.merge(tmp_path / "book", halves[:1])  # again: only adds
    # a result that differs between two sources is refused
    changed = halves[1] / records[1].relative_to(out)
    changed.write_text(changed.read_text().replace('"seed": 0', '"seed": 0, "x": 1'))
    with pytest.raises(GlancingError, match="differs"):
        tool.merge(tmp_path / "book", halves)
    # the command line: usage, and one clear line (nothing written) for a wrong folder
    assert tool.main([]) == 2
    assert tool.main([str(tmp_path / "new"), str(tmp_path / "none")]) == 1
    assert not (tmp_path / "new").exists()
    # the gallery: first map of each defect type, 64 px, half precision
    saved = {"maps": torch.rand(5, 128, 128).half(), "paths": list("abcde"),
             "defects": ["good", "good", "hole", "stain", "hole"], "index": torch.arange(5)}
    small = tool.small_gallery(saved)
    assert small["maps"].shape == (3, 64, 64) and small["maps"].dtype == torch.float16
    assert small["defects"] == ["good", "hole", "stain"] and small["index"].tolist() == [0, 2, 3]


def test_a_patch_larger_than_the_narrowest_image_is_skipped_with_its_reason(tmp_path):
    # 24 x 64 strips stay 24 x 64 at the ci profile's 64 px: p = 33 fits the image size but not
    # the strips' short side (as Magnetic Tile's narrow tiles at p = 65 and 128 px)
    data = write_mvtec_tree(tmp_path / "data", size=(24, 64), n_train=4, n_good=1, n_defect=1)
    out = tmp_path / "compare"
    args = ["compare", "--data", str(data), "--profile", "ci", "--out", str(out), "--quiet",
            "--methods", "glance-p33"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLANCING_CACHE", str(tmp_path / "cache"))
        assert main(args) == 0
    record = json.loads((out / "results" / "widget" / "glance-p33" / "seed0.json").read_text())
    assert record["skipped"] == ("patch size 33 exceeds the shortest image side at 64 px "
                                 "(24 px, 000.png)")
    assert "| glance-p33 | skipped: patch size 33 exceeds" in (out / "compare.md").read_text()
