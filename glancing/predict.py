"""``python -m glancing predict``: score new images with a trained run.

Each image is letterboxed like the training data and scored with the trained networks; its map
is written as a PNG beside a JSON line with the image score (the max of its combined map) and a
decision: defective when the score exceeds the threshold chosen on the validation split (the
largest score of a normal validation image).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from glancing.checkpoint import save_json
from glancing.data import letterbox, read_image, unletterbox
from glancing.errors import GlancingError
from glancing.fast_map import fast_score_maps
from glancing.figures import save_figure
from glancing.pipeline import load_model, pick_device


def predict(model_dir: str | Path, images: list[str], out: str | Path | None = None,
            device: str = "auto") -> list[dict]:
    dev = pick_device(device)
    model, state = load_model(model_dir, dev)
    prof, threshold = state["profile"], state["thresholds"]["image"]
    out = Path(out) if out else Path(model_dir) / "predictions"
    results = []
    for name in images:
        path = Path(name)
        if not path.is_file():
            raise GlancingError(f"image {path} not found")
        raw = read_image(path).float() / 255.0
        image, valid, box = letterbox(raw, prof.image_size)
        if min(box.height, box.width) < prof.patch_size:
            raise GlancingError(f"image {path} is too small for the patch ({prof.patch_size} px "
                                f"at input size {prof.image_size})")
        maps = fast_score_maps(model, image.to(dev), valid.to(dev), box, prof.stride)
        combined = maps["combined"].cpu()
        score = float(combined[valid[0]].max())
        full = unletterbox(combined[None], box, raw.shape[1], raw.shape[2])[0]
        map_path = out / f"{path.stem}_map.png"
        _save_overlay(raw, full, map_path, score, threshold)
        results.append({"image": str(path), "score": score, "threshold": threshold,
                        "defective": score > threshold, "map": str(map_path)})
    save_json(results, out / "predictions.json")
    return results


def _save_overlay(image, score_map, path: Path, score: float, threshold: float) -> None:
    fig = Figure(figsize=(6, 3.2))
    axes = fig.subplots(1, 2)
    axes[0].imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    axes[1].imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    axes[1].imshow(score_map.numpy(), cmap="inferno", alpha=0.55, vmin=0,
                   vmax=max(threshold, 1e-6))
    verdict = "defective" if score > threshold else "normal"
    axes[1].set_title(f"{verdict}: {score:.2f} (threshold {threshold:.2f})", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    save_figure(fig, path, dpi=80)
