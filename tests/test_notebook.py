"""The chapters' shared setup: settings from the environment, results found, seeds fixed."""

from __future__ import annotations

import pytest
import torch

from glancing.errors import GlancingError
from glancing.notebook import find_results, setup


def test_setup_reads_profile_and_data_root_and_seeds(tmp_path, monkeypatch, capsys):
    (tmp_path / "magnetic_tile").mkdir()
    (tmp_path / "book" / "results").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "book")
    monkeypatch.setenv("GLANCING_PROFILE", "ci")
    monkeypatch.setenv("GLANCING_DATA_ROOT", str(tmp_path))
    monkeypatch.delenv("GLANCING_RESULTS", raising=False)
    book = setup(seed=3)
    assert book.profile.name == "ci"
    assert book.has_dataset("magnetic_tile") and not book.has_dataset("mvtec_ad")
    assert book.results == (tmp_path / "book" / "results").resolve()
    first = torch.rand(3)
    setup(seed=3, verbose=False)
    assert torch.equal(first, torch.rand(3))
    printed = capsys.readouterr().out
    assert "profile: ci" in printed and str(tmp_path) not in printed  # no machine path


def test_setup_without_data_root_uses_the_embedded_dataset(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLANCING_DATA_ROOT", "")
    monkeypatch.delenv("GLANCING_RESULTS", raising=False)
    book = setup(verbose=False)
    assert book.data_root is None and not book.has_dataset("magnetic_tile")


def test_missing_results_folder_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GLANCING_RESULTS", str(tmp_path / "nowhere"))
    with pytest.raises(GlancingError, match="GLANCING_RESULTS=.*is not a folder"):
        find_results()
    monkeypatch.delenv("GLANCING_RESULTS")
    with pytest.raises(GlancingError, match="no book/results folder above"):
        find_results(tmp_path)


def test_the_book_model_loads(monkeypatch, tmp_path):
    from pathlib import Path

    from glancing.notebook import BOOK_MODEL, BookSetup, trained_model

    results = Path(__file__).resolve().parent.parent / "book" / "results"
    book = BookSetup(profile=None, data_root=None, device=torch.device("cpu"),
                     results=results, seed=0)
    model, settings = trained_model(book)
    assert model.patch_size == settings["profile"].patch_size == 17
    assert all(p.dtype == torch.float32 for p in model.parameters())  # stored half, used float
    empty = BookSetup(profile=None, data_root=None, device=torch.device("cpu"),
                      results=tmp_path, seed=0)
    with pytest.raises(GlancingError, match=f"{BOOK_MODEL} is missing"):
        trained_model(empty)
