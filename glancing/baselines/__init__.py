"""Baselines: what GLANCE is measured against, kept apart from the method.

- :mod:`~glancing.baselines.zscore`: the trivial per-pixel z-score, which shows how much of a
  dataset intensity alone solves.
- :class:`StudentEnsemble` (:mod:`~glancing.baselines.students`): Uninformed Students
  (Bergmann et al., CVPR 2020), students regressing GLANCE's distilled Local-Net.
- :class:`PaDiM` (:mod:`~glancing.baselines.padim`): a Gaussian per feature-map position
  (Defard et al., ICPR Workshops 2021).
- :class:`PatchCore` (:mod:`~glancing.baselines.patchcore`): a coreset memory bank and
  nearest-neighbour distance (Roth et al., CVPR 2022).

The three peers share one small interface, on the letterboxed network input that GLANCE sees
(:func:`glancing.pipeline.load_split`) and the same teacher (:mod:`glancing.teachers`)::

    model.fit(images, valid, val_images=None, val_valid=None) -> model
        images (N, 3, S, S) in [0, 1], normal training images; valid (N, 1, S, S) bool, the
        image region (False on letterbox padding); the validation split (normal, held out) is
        used only to calibrate scores (the students' standardisation), never the test set.
    model.score_maps(images, valid) -> (N, S, S)
        anomaly maps at the input resolution, higher = more anomalous; the image score is the
        map's maximum (:mod:`glancing.metrics`).

``python -m glancing compare`` (:mod:`glancing.compare`) runs them beside GLANCE.
"""

import importlib

__all__ = ["PaDiM", "PatchCore", "StudentEnsemble"]

_MODULES = {"PaDiM": "padim", "PatchCore": "patchcore", "StudentEnsemble": "students"}


def __getattr__(name: str):
    """Import a peer on first use: ``glancing.baselines.zscore`` alone needs no torch."""
    if name in _MODULES:
        return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
