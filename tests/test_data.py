"""The MVTec-layout loader, letterboxing, splits and dataset resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import real_dataset, write_mvtec_tree
from PIL import Image

from glancing.data import (
    MVTecDataset,
    letterbox,
    resolve_dataset,
    unletterbox,
    validation_split,
)
from glancing.data.letterbox import letterbox_box
from glancing.errors import GlancingError


def test_items_have_documented_shapes_and_fields(tiny_tree):
    ds = MVTecDataset(tiny_tree, "widget", "test", image_size=32)
    assert len(ds) == 4 and ds.defect_types == ["good", "scratch"]
    item = ds[-1]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].shape == (1, 32, 32) and set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["valid"].dtype == torch.bool
    assert item["label"] == 1 and item["defect"] == "scratch" and item["path"].endswith(".png")
    good = ds[0]
    assert good["label"] == 0 and good["mask"].sum() == 0


def test_dataloader_collates_items(tiny_tree):
    ds = MVTecDataset(tiny_tree, "widget", "test", image_size=32)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["box"].shape == (4, 4)
    assert batch["label"].tolist() == [0, 0, 1, 1]


def test_grayscale_becomes_rgb(tmp_path):
    root = write_mvtec_tree(tmp_path, grayscale=True)
    image = MVTecDataset(root, "widget", "train", image_size=24)[0]["image"]
    assert image.shape[0] == 3
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_masks_are_resized_with_nearest_neighbour(tmp_path):
    root = write_mvtec_tree(tmp_path, size=(64, 64))
    mask = MVTecDataset(root, "widget", "test", image_size=20)[-1]["mask"]
    assert set(mask.unique().tolist()) == {0.0, 1.0}


def test_validation_split_is_fixed_by_seed_and_disjoint():
    paths = [f"{i:03d}.png" for i in range(30)]
    train, val = validation_split(paths, 0.1, seed=3)
    assert len(val) == 3 and not set(train) & set(val) and sorted(train + val) == paths
    assert validation_split(paths, 0.1, seed=3) == (train, val)
    assert validation_split(paths, 0.1, seed=4)[1] != val


def test_train_and_val_splits_partition_train_good(tiny_tree):
    train = MVTecDataset(tiny_tree, "widget", "train", val_fraction=0.34)
    val = MVTecDataset(tiny_tree, "widget", "val", val_fraction=0.34)
    names = {r.path.name for r in train.records} | {r.path.name for r in val.records}
    assert len(train) == 3 and len(val) == 3 and len(names) == 6


@pytest.mark.parametrize("height,width", [(400, 103), (222, 632), (128, 128)])
def test_letterbox_keeps_aspect_ratio_and_marks_the_image(height, width):
    image = torch.ones(3, height, width)
    out, valid, box = letterbox(image, 128)
    assert out.shape == (3, 128, 128) and valid.shape == (1, 128, 128)
    assert max(box.height, box.width) == 128
    assert abs(box.height / box.width - height / width) < 0.05 * height / width + 0.02
    assert valid.sum() == box.height * box.width
    assert out[:, ~valid[0]].abs().sum() == 0  # padding is zero
    assert torch.allclose(out[:, valid[0]], torch.ones(1))


def test_unletterbox_returns_the_original_frame():
    ramp = torch.linspace(0, 1, 200).repeat(100, 1)[None]  # (1, 100, 200), varies along width
    out, _, box = letterbox(ramp, 64)
    back = unletterbox(out, box, 100, 200)
    assert back.shape == (1, 100, 200)
    assert (back - ramp).abs().mean() < 0.02


def test_magnetic_tile_is_letterboxed_not_stretched():
    root = real_dataset("magnetic_tile_mini")
    ds = MVTecDataset(root, "magnetic_tile", "test", image_size=128)
    tall = [r for r in ds.records if r.height > 2 * r.width]
    assert tall, "the mini set holds tall images"
    item = ds[ds.records.index(tall[0])]
    box = letterbox_box(tall[0].height, tall[0].width, 128)
    assert box.height == 128 and box.width < 64
    assert item["valid"].sum() == box.height * box.width


def test_magnetic_tile_mini_loads_through_the_same_loader():
    root = real_dataset("magnetic_tile_mini")
    assert resolve_dataset(str(root))[1] == ["magnetic_tile"]
    test = MVTecDataset(root, "magnetic_tile", "test", image_size=64)
    assert len(test) == 15
    assert test.defect_types == ["blowhole", "break", "crack", "fray", "good", "uneven"]
    for item in (test[i] for i in range(len(test))):
        assert (item["mask"].sum() > 0) == bool(item["label"])
        assert item["mask"][~item["valid"]].sum() == 0  # no defect pixel in the padding


def test_full_magnetic_tile_and_transistor_load(tmp_path):
    mt_root, cats = resolve_dataset("magnetic_tile", data_root=real_dataset("magnetic_tile").parent)
    counts = {s: len(MVTecDataset(mt_root, cats[0], s, image_size=128, val_fraction=0.1))
              for s in ("train", "val", "test")}
    assert counts["train"] + counts["val"] == 771 and counts["test"] == 181 + 388
    tr_root, cats = resolve_dataset("mvtec_ad", "transistor",
                                    data_root=real_dataset("mvtec_ad").parent)
    test = MVTecDataset(tr_root, "transistor", "test", image_size=256)
    assert cats == ["transistor"] and len(test) == 100
    assert sum(r.label for r in test.records) == 40
    item = test[0]
    assert item["valid"].all() and item["mask"].sum() > 0


# -- resolving what the user typed -------------------------------------------------------------

def test_resolve_by_name_under_the_data_root(tiny_tree):
    root, cats = resolve_dataset(tiny_tree.name, "all", data_root=tiny_tree.parent)
    assert root == tiny_tree and cats == ["widget"]


def test_resolve_a_category_folder_directly(tiny_tree):
    root, cats = resolve_dataset(str(tiny_tree / "widget"))
    assert root == tiny_tree and cats == ["widget"]


# -- bad input: one clear line naming the path and the fix --------------------------------------

def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_data_root(tmp_path):
    with pytest.raises(GlancingError) as err:
        resolve_dataset("mvtec_ad", data_root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in _one_line(err)


def test_missing_dataset_name(tmp_path):
    with pytest.raises(GlancingError) as err:
        resolve_dataset("mvtec_ad", data_root=tmp_path)
    assert "GLANCING_DATA_ROOT" in _one_line(err)


def test_missing_category(tiny_tree):
    with pytest.raises(GlancingError) as err:
        resolve_dataset(str(tiny_tree), "carpet")
    assert "carpet" in _one_line(err) and "available: widget" in str(err.value)
    with pytest.raises(GlancingError):
        MVTecDataset(tiny_tree, "carpet")


def test_no_training_images(tiny_tree):
    for path in (tiny_tree / "widget" / "train" / "good").iterdir():
        path.unlink()
    with pytest.raises(GlancingError) as err:
        MVTecDataset(tiny_tree, "widget", "train")
    assert "train/good" in _one_line(err)


def test_defect_image_without_mask(tiny_tree):
    (tiny_tree / "widget" / "ground_truth" / "scratch" / "001_mask.png").unlink()
    with pytest.raises(GlancingError) as err:
        MVTecDataset(tiny_tree, "widget", "test")
    assert "001_mask.png" in _one_line(err) and "001.png" in str(err.value)


def test_mask_of_another_size(tiny_tree):
    mask_path = tiny_tree / "widget" / "ground_truth" / "scratch" / "000_mask.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask_path)
    with pytest.raises(GlancingError) as err:
        MVTecDataset(tiny_tree, "widget", "test")
    assert "000_mask.png" in _one_line(err) and "10x10" in str(err.value)


def test_unreadable_image(tiny_tree):
    broken = tiny_tree / "widget" / "train" / "good" / "002.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(GlancingError) as err:
        MVTecDataset(tiny_tree, "widget", "train", val_fraction=0)
    assert "002.png" in _one_line(err)


def test_truncated_image_fails_when_decoded(tiny_tree):
    path = tiny_tree / "widget" / "train" / "good" / "000.png"
    path.write_bytes(path.read_bytes()[:60])  # header intact, pixel data cut
    ds = MVTecDataset(tiny_tree, "widget", "train", val_fraction=0)
    with pytest.raises(GlancingError) as err:
        ds[0]
    assert "000.png" in _one_line(err)


def test_image_smaller_than_the_patch(tmp_path):
    root = write_mvtec_tree(tmp_path, size=(200, 30))
    with pytest.raises(GlancingError) as err:
        MVTecDataset(root, "widget", "train", image_size=128, min_side=33)
    assert "smaller than the patch" in _one_line(err)
    MVTecDataset(root, "widget", "train", image_size=128, min_side=17)  # 19 px wide: fits
