"""The embedded dataset: layout, determinism, exact masks, disjoint crops, atomic writing."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glancing.data import embedded
from glancing.errors import GlancingError

SMALL = dict(image_size=64, n_train=4, n_test_good=2, n_test_defect=12)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return embedded.generate(tmp_path_factory.mktemp("small") / "data", seed=3, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _png(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def test_layout_and_counts(small_root):
    for category in embedded.CATEGORIES:
        folder = small_root / category
        assert len(list((folder / "train" / "good").glob("*.png"))) == SMALL["n_train"]
        assert len(list((folder / "test" / "good").glob("*.png"))) == SMALL["n_test_good"]
        per_kind = SMALL["n_test_defect"] // len(embedded.DEFECT_KINDS)
        for kind in embedded.DEFECT_KINDS:
            images = sorted((folder / "test" / kind).glob("*.png"))
            masks = sorted((folder / "ground_truth" / kind).glob("*_mask.png"))
            assert [p.name for p in images] == [f"{i:03d}.png" for i in range(per_kind)]
            assert [p.name for p in masks] == [f"{i:03d}_mask.png" for i in range(per_kind)]
    assert (small_root / "README.md").is_file()
    manifest = json.loads((small_root / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["format_version"] == embedded.FORMAT_VERSION
    assert "CC0" in manifest["licence"]
    assert not list(small_root.parent.glob(".*partial*"))  # no staging folder left behind


def test_images_grayscale_and_masks_binary_nonempty(small_root):
    for category in embedded.CATEGORIES:
        for image_path in (small_root / category / "test").rglob("*.png"):
            image = _png(image_path)
            assert image.mode == "L" and image.size == (64, 64)
            kind = image_path.parent.name
            if kind == "good":
                continue
            mask = _png(small_root / category / "ground_truth" / kind
                        / f"{image_path.stem}_mask.png")
            values = np.asarray(mask)
            assert mask.mode == "L" and mask.size == image.size
            assert set(np.unique(values)) <= {0, 255}
            assert (values == 255).any(), image_path


def test_written_defects_change_only_masked_pixels(small_root):
    """Rebuild each clean test image from its seed: the defect differs only inside its mask."""
    manifest = json.loads((small_root / "manifest.json").read_text())
    for category in embedded.CATEGORIES:
        images = manifest["categories"][category]["images"]
        for index in range(SMALL["n_test_defect"]):
            kind = embedded.DEFECT_KINDS[index % len(embedded.DEFECT_KINDS)]
            name = f"{index // len(embedded.DEFECT_KINDS):03d}"
            rng = embedded.image_rng(3, category, "test", SMALL["n_test_good"] + index)
            clean, _ = embedded.render_clean(category, "test", rng, 64)
            defective = np.asarray(_png(small_root / category / "test" / kind / f"{name}.png"))
            mask = np.asarray(_png(small_root / category / "ground_truth" / kind
                                   / f"{name}_mask.png")) > 0
            changed = defective != embedded._to_uint8(clean)
            assert not (changed & ~mask).any(), (category, kind, name)
            assert changed[mask].mean() > 0.5, (category, kind, name)
            assert images[f"test/{kind}/{name}.png"]["defect"]["kind"] == kind


@pytest.mark.parametrize("kind", embedded.DEFECT_KINDS)
@pytest.mark.parametrize("category", embedded.CATEGORIES)
def test_make_defect_mask_is_exactly_the_change(category, kind):
    rng = np.random.default_rng(11)
    clean, _ = embedded.render_clean(category, "test", rng, 128)
    defect = embedded.make_defect(clean, kind, rng)
    assert defect.image.shape == defect.mask.shape == clean.shape
    assert defect.mask.dtype == bool and defect.mask.any()
    assert np.array_equal(defect.image[~defect.mask], clean[~defect.mask])
    assert 0.0 <= defect.image.min() and defect.image.max() <= 1.0
    assert (np.abs(defect.image - clean)[defect.mask] > 1 / 510).mean() > 0.5
    rows, cols = np.nonzero(defect.mask)
    extent = max(np.ptp(rows), np.ptp(cols)) + 1
    assert 0.02 * 128 <= extent <= 0.35 * 128, extent
    assert defect.params["kind"] == kind
    json.dumps(defect.params)  # parameters must go into the manifest


def test_make_defect_rejects_unknown_kind():
    with pytest.raises(GlancingError, match="scratch"):
        embedded.make_defect(np.zeros((32, 32)), "dent", np.random.default_rng(0))


def test_same_seed_same_bytes_and_other_seed_differs(small_root, tmp_path):
    again = embedded.generate(tmp_path / "again", seed=3, **SMALL)
    assert _files(again) == _files(small_root)
    other = embedded.generate(tmp_path / "other", seed=4, categories=("gravel",), **SMALL)
    changed = [name for name, data in _files(other).items()
               if name.startswith("gravel/") and _files(small_root).get(name) != data]
    assert len(changed) > 0.9 * len(list((other / "gravel").rglob("*.png")))


def test_train_and_test_crops_come_from_disjoint_regions(small_root):
    manifest = json.loads((small_root / "manifest.json").read_text())
    for category in embedded.PHOTO_CATEGORIES:
        images = manifest["categories"][category]["images"]
        train = [v["source_box"] for k, v in images.items() if k.startswith("train/")]
        test = [v["source_box"] for k, v in images.items() if k.startswith("test/")]
        assert train and test
        for r0, c0, r1, c1 in train:
            for s0, d0, s1, d1 in test:
                overlap = min(r1, s1) > max(r0, s0) and min(c1, d1) > max(c0, d0)
                assert not overlap, (category, (r0, c0, r1, c1), (s0, d0, s1, d1))


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_save = embedded._save_png

    def failing_save(path, array):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt("simulated interruption")
        real_save(path, array)

    monkeypatch.setattr(embedded, "_save_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        embedded.generate(tmp_path / "data", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_generator_keeps_the_first_result(tmp_path, monkeypatch):
    """Another process finishes while this one is writing: this copy is discarded quietly."""
    root = tmp_path / "data"
    real_write = embedded._write_metadata
    state = {"raced": False}

    def write_after_a_rival(folder, *args):
        if not state["raced"]:
            state["raced"] = True
            embedded.generate(root, seed=1, categories=("mesh",), **SMALL)  # the rival
        real_write(folder, *args)

    monkeypatch.setattr(embedded, "_write_metadata", write_after_a_rival)
    assert embedded.generate(root, seed=0, categories=("mesh",), **SMALL) == root
    assert json.loads((root / "manifest.json").read_text())["seed"] == 1  # the rival's
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_ensure_embedded_uses_cache_and_generates_once(tmp_path, monkeypatch):
    monkeypatch.setenv("GLANCING_CACHE", str(tmp_path / "cache"))
    calls = []
    small_generate = functools.partial(embedded.generate, categories=("grass",), **SMALL)

    def counting_generate(root, seed=0):
        calls.append(root)
        return small_generate(root, seed=seed)

    monkeypatch.setattr(embedded, "generate", counting_generate)
    root = embedded.ensure_embedded(seed=5)
    assert root == tmp_path / "cache" / "embedded" / f"v{embedded.FORMAT_VERSION}-seed5"
    assert (root / "grass" / "train" / "good" / "000.png").is_file()
    assert embedded.ensure_embedded(seed=5) == root
    assert len(calls) == 1


def test_ensure_embedded_refuses_an_incomplete_folder(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(GlancingError, match="delete it"):
        embedded.ensure_embedded(root=tmp_path / "half")


def test_generate_refuses_existing_root_and_unknown_category(tmp_path):
    with pytest.raises(GlancingError, match="already exists"):
        embedded.generate(tmp_path, **SMALL)
    with pytest.raises(GlancingError, match="unknown"):
        embedded.generate(tmp_path / "x", categories=("carpet",), **SMALL)


def test_full_size_category_is_fast_and_varied(tmp_path):
    start = time.perf_counter()
    root = embedded.generate(tmp_path / "full", categories=("gravel",))
    assert time.perf_counter() - start < 15  # all four categories take about 10 s on one core
    train = sorted((root / "gravel" / "train" / "good").glob("*.png"))
    assert len(train) == 100
    first, second = (np.asarray(_png(p)) for p in train[:2])
    assert first.shape == (256, 256) and not np.array_equal(first, second)
    masks = list((root / "gravel" / "ground_truth").rglob("*_mask.png"))
    assert len(masks) == 42
    sides = []
    for path in masks:
        rows, cols = np.nonzero(np.asarray(_png(path)))
        sides.append(max(np.ptp(rows), np.ptp(cols)) + 1)
    # Defects span about 4-20% of the side (warps a little more), not specks nor half images.
    assert 0.03 * 256 <= min(sides) and max(sides) <= 0.35 * 256
    assert np.median(sides) >= 0.06 * 256
