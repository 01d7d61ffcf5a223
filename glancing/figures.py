"""Figures the command line writes (the book draws its own from the same arrays).

They are built as :class:`matplotlib.figure.Figure` objects, not through pyplot: saving one needs
no display and no backend, and importing this module leaves a notebook's backend alone.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from matplotlib.figure import Figure

from glancing.checkpoint import atomic_write

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
    fig = Figure(figsize=(2.2 * len(COLUMNS), 2.2 * len(rows)))
    axes = fig.subplots(len(rows), len(COLUMNS), squeeze=False)
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


def save_figure(fig: Figure, path: Path, dpi: int = 80) -> None:
    """Write a matplotlib figure as PNG, atomically."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())
