"""Data: the MVTec-layout loader, the embedded default dataset, and stains for the DAD head.

:func:`resolve_dataset` turns what a user types (``embedded``, a path, or a dataset name under the
data root) into a folder and its categories; :class:`MVTecDataset` reads one category.
"""

from __future__ import annotations

from pathlib import Path

from glancing.config import data_root as configured_data_root
from glancing.data.letterbox import Box, letterbox, unletterbox
from glancing.data.mvtec import MVTecDataset, list_categories, read_image, validation_split
from glancing.errors import GlancingError

EMBEDDED = "embedded"

__all__ = [
    "EMBEDDED", "Box", "MVTecDataset", "letterbox", "list_categories", "read_image",
    "resolve_dataset",
    "unletterbox", "validation_split",
]


def resolve_dataset(
    data: str = EMBEDDED,
    category: str | None = "all",
    data_root: str | Path | None = None,
    seed: int = 0,
) -> tuple[Path, list[str]]:
    """Find the dataset folder and the categories to run on.

    Args:
        data: ``"embedded"`` (generated on first use, no download), a path to an MVTec-layout
            root or to one category folder, or a dataset name looked up under the data root
            (``--data-root`` / ``$GLANCING_DATA_ROOT``), e.g. ``"mvtec_ad"``.
        category: a category name, or ``"all"`` / None for every category found.
        data_root: overrides ``$GLANCING_DATA_ROOT``.
        seed: the embedded dataset's seed.

    Returns:
        ``(root, categories)``: the folder holding the category folders, and the chosen names.
    """
    if data == EMBEDDED:
        from glancing.data.embedded import ensure_embedded

        root = ensure_embedded(seed=seed)
    else:
        root = _find_folder(data, configured_data_root(data_root))
        if (root / "train").is_dir() or (root / "test").is_dir():  # a category folder itself
            if category not in (None, "all", root.name):
                raise GlancingError(
                    f"{root} is the category {root.name!r}, but --category {category!r} was asked"
                )
            return root.parent, [root.name]
    available = list_categories(root)
    if not available:
        raise GlancingError(
            f"no categories in {root}: expected <category>/train/good and <category>/test "
            "folders (the MVTec AD layout)"
        )
    if category in (None, "all"):
        return root, available
    if category not in available:
        raise GlancingError(
            f"category {category!r} not found in {root}; available: {', '.join(available)}"
        )
    return root, [category]


def _find_folder(data: str, root: Path | None) -> Path:
    direct = Path(data).expanduser()
    if direct.is_dir():
        return direct
    if root is not None and (root / data).is_dir():
        return root / data
    where = f"under the data root {root}" if root else "and no data root is set"
    raise GlancingError(
        f"dataset {data!r} not found: it is not a folder {where}; give a path, set "
        "GLANCING_DATA_ROOT (or --data-root), or use --data embedded"
    )
