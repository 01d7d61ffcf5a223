"""Copy a trained ``model.pt`` into the book's results in half precision (half the size).

    python tools/book_model.py runs/q-brick/brick/model.pt book/results/<run>/<category>/model.pt

The chapters load it with :func:`glancing.pipeline.load_model` like any model: loading a state
dict copies each tensor into the float32 parameters, so the weights come back as float32 values
rounded to half precision. The tool prints how far that rounding moves the score maps of a few
test images, so that the cost of the smaller file is measured, not assumed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from glancing import checkpoint
from glancing.data import MVTecDataset, resolve_dataset
from glancing.pipeline import load_model


def halve(state: dict) -> dict:
    """The checkpoint with every floating-point tensor of its state dict in float16."""
    weights = {name: value.half() if value.is_floating_point() else value
               for name, value in state["state_dict"].items()}
    return {**state, "state_dict": weights}


def main(source: str, target: str, images: int = 4) -> int:
    state = checkpoint.load(source)
    checkpoint.save(halve(state), Path(target))
    full, settings = load_model(source)
    half, _ = load_model(target)
    profile = settings["profile"]
    root, _ = resolve_dataset("embedded", settings["category"])
    test = MVTecDataset(root, settings["category"], "test", image_size=profile.image_size)
    worst = 0.0
    for index in torch.linspace(0, len(test) - 1, images).long().tolist():
        item = test[index]
        args = (item["image"], item["valid"], item["box"], profile.stride)
        a = full.score_maps(*args)["combined"]
        b = half.score_maps(*args)["combined"]
        worst = max(worst, (a - b).abs().max().item() / max(a.abs().max().item(), 1e-12))
    size = Path(target).stat().st_size / 1e6
    print(f"wrote {target} ({size:.1f} MB); largest change of a combined map on {images} test "
          f"images, relative to the map's maximum: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
