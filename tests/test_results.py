"""The book's committed results are made with the library's current settings.

Chapters display results from ``book/results``; a profile edited after a run would leave the book
showing numbers that the current code's defaults no longer produce. Every run folder is declared in
``book/results/results.yml`` with the settings it changed on purpose.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from glancing.config import PROFILES

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"
MANIFEST = yaml.safe_load((RESULTS / "results.yml").read_text())["runs"]
# Top-level metrics.json files record the run's profile (per-category ones do not), and so does
# every compare.json of `python -m glancing compare`.
RUN_FILES = sorted(p for name in ("metrics.json", "compare.json") for p in RESULTS.rglob(name)
                   if "profile" in json.loads(p.read_text()))


def _run_of(path: Path) -> str:
    return path.relative_to(RESULTS).parts[0]


def test_every_run_folder_is_declared():
    folders = {p.name for p in RESULTS.iterdir() if p.is_dir()}
    assert folders == set(MANIFEST), (
        f"book/results/results.yml declares {sorted(MANIFEST)}, the folder holds {sorted(folders)}")
    assert RUN_FILES, "no metrics.json with a recorded profile under book/results"


def profile_differences(recorded: dict, overrides: dict) -> dict:
    """Settings where ``recorded`` differs from its current profile with ``overrides`` applied.

    A setting the recorded profile lacks was added to the library later; its default is the old
    behaviour, so it is not a difference.
    """
    current = dataclasses.asdict(dataclasses.replace(PROFILES[recorded["name"]], **overrides))
    return {key: (value, current[key]) for key, value in recorded.items()
            if key in current and current[key] != value}


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_committed_run_used_the_current_defaults(path):
    recorded = json.loads(path.read_text())["profile"]
    overrides = MANIFEST[_run_of(path)]["overrides"]
    differences = profile_differences(recorded, overrides)
    assert not differences, (
        f"{path.relative_to(RESULTS)} was made with settings the current '{recorded['name']}' "
        f"profile no longer has (recorded, current): {differences}; rerun it or declare the "
        "override in book/results/results.yml")


def test_the_check_notices_a_changed_default():
    recorded = dataclasses.asdict(PROFILES["quick"])
    assert profile_differences(recorded, {}) == {}
    recorded["stride"] += 1
    assert "stride" in profile_differences(recorded, {})
    with_p33 = recorded | {"patch_size": 33}
    assert profile_differences(with_p33, {"patch_size": 33}).keys() == {"stride"}
