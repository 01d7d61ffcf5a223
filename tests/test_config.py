"""Profiles and the data-root setting."""

from __future__ import annotations

import pytest

from glancing.config import PROFILES, cache_dir, data_root, get_profile
from glancing.errors import GlancingError


def test_profiles_grow_from_ci_to_paper():
    order = ["ci", "quick", "gpu", "paper"]
    assert list(PROFILES) == order
    for small, big in zip(order, order[1:], strict=False):
        a, b = PROFILES[small], PROFILES[big]
        assert a.image_size <= b.image_size
        assert a.joint_iters <= b.joint_iters and a.distill_iters <= b.distill_iters


def test_every_profile_fits_a_patch_on_its_image():
    for profile in PROFILES.values():
        assert profile.patch_size % 2 == 1  # the hole has a centre pixel
        assert profile.patch_size < profile.image_size
        assert 0 < profile.stride <= profile.patch_size


def test_profile_from_argument_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("GLANCING_PROFILE", raising=False)
    assert get_profile().name == "quick"
    monkeypatch.setenv("GLANCING_PROFILE", "ci")
    assert get_profile().name == "ci"
    assert get_profile("gpu").name == "gpu"


def test_unknown_profile_names_its_source(monkeypatch):
    monkeypatch.setenv("GLANCING_PROFILE", "huge")
    with pytest.raises(GlancingError, match="GLANCING_PROFILE.*ci, quick, gpu, paper"):
        get_profile()


def test_data_root_from_argument_or_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("GLANCING_DATA_ROOT", raising=False)
    assert data_root() is None
    monkeypatch.setenv("GLANCING_DATA_ROOT", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.setenv("GLANCING_DATA_ROOT", "")
    assert data_root() is None
    with pytest.raises(GlancingError, match="--data-root"):
        data_root(tmp_path / "missing")


def test_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GLANCING_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
