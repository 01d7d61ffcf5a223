"""Figures the command line writes (the book draws its own from the same arrays)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the command line has no display; notebooks set their own backend
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from glancing.checkpoint import atomic_write  # noqa: E402

COLUMNS = ("image", "ground truth", "IAD", "DAD", "combined")


def pick_examples(defects: list[str], per_type: int = 1) -> list[int]:
    """Indices of the first ``per_type`` images of each defect type (good first)."""
    chosen, seen = [], {}
    order = sorted(set(defects), key=lambda d: (d != "good", d))
    for kind in order:
        for i, d in enumerate(defects):
            if d == kind and seen.get(kind, 0) < per_type:
                chosen.append(i)
                seen[kind] = seen.get(kind, 0) + 1
    return chosen


def save_map_figure(split: dict, maps: dict[str, torch.Tensor], path: Path,
                    title: str = "", per_type: int = 1) -> None:
    """image | ground truth | IAD map | DAD map | combined map, one row per defect type.

    Each map column shares one colour scale across rows (the normalised scores: 0 is a typical
    normal window, 1 the 99th percentile of normal windows).
    """
    rows = pick_examples(split["defect"], per_type)
    fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(2.2 * len(COLUMNS),
                                                              2.2 * len(rows)), squeeze=False)
    limits = {h: (0.0, float(torch.quantile(maps[h].flatten()[::7].float(), 0.999)))
              for h in ("iad", "dad", "combined")}
    for r, i in enumerate(rows):
        valid = split["valid"][i, 0]
        panels = [split["image"][i].permute(1, 2, 0), split["mask"][i, 0]]
        panels += [maps[h][i].masked_fill(~valid, 0) for h in ("iad", "dad", "combined")]
        for c, (panel, ax) in enumerate(zip(panels, axes[r], strict=True)):
            if c == 0:
                ax.imshow(panel.clamp(0, 1).numpy())
            elif c == 1:
                ax.imshow(panel.numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                head = ("iad", "dad", "combined")[c - 2]
                ax.imshow(panel.numpy(), cmap="inferno", vmin=limits[head][0],
                          vmax=max(limits[head][1], 1e-6))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize=9)
        axes[r, 0].set_ylabel(split["defect"][i], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path, dpi=72)


def save_figure(fig, path: Path, dpi: int = 80) -> None:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())
