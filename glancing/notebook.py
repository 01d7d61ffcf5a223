"""What every chapter of the book does first: pick the profile, the data and the device, find the
committed results, fix the seeds.

A chapter's first cell installs ``glancing`` when it is missing (Colab: it clones the repository,
so that the committed results under ``book/results/`` come along) and then calls :func:`setup`.
The settings are the library's own (:mod:`glancing.config`): ``GLANCING_PROFILE`` (``ci`` when
the book is built and tested, ``quick`` by default), ``GLANCING_DATA_ROOT`` (the folder holding
``magnetic_tile/`` and ``mvtec_ad/``; without it the chapters use the embedded dataset).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import random
import textwrap
from pathlib import Path

import numpy as np
import torch

from glancing.config import Profile, data_root, get_profile
from glancing.errors import GlancingError

RESULTS_ENV = "GLANCING_RESULTS"
# The trained model the chapters load (quick profile, embedded brick, p = 17; see its README).
BOOK_MODEL = "2026-12-03-quick-cpu-brick-model/brick/model.pt"
# The book's comparison folders (python -m glancing compare, quick profile), one per dataset.
BOOK_COMPARISONS = ("2026-12-03-compare-quick-embedded", "2026-12-04-compare-quick-magnetic-tile",
                    "2026-12-04-compare-quick-transistor")
# Complete quick runs that fill the patch-size and lambda_s sweeps where a comparison has not
# reached a value yet (glancing.results.sweep_rows); the two-thread repeat of Magnetic Tile is
# left out (one run per category and value).
BOOK_SWEEP_RUNS = ("2026-12-03-quick-cpu/embedded", "2026-12-03-quick-cpu/magnetic_tile",
                   "2026-12-03-quick-cpu/transistor", "2026-12-03-quick-cpu-p33")


@dataclasses.dataclass(frozen=True)
class BookSetup:
    """The settings a chapter runs with (printed by :func:`setup`)."""

    profile: Profile
    data_root: Path | None  # None: only the embedded dataset is available
    device: torch.device
    results: Path  # the committed results folder, book/results
    seed: int

    def has_dataset(self, name: str) -> bool:
        """True when ``name`` (e.g. ``"magnetic_tile"``) is a folder under the data root."""
        return self.data_root is not None and (self.data_root / name).is_dir()


def find_results(start: Path | None = None) -> Path:
    """The book's committed results folder: ``$GLANCING_RESULTS``, else ``results/`` next to the
    chapter (the working directory of a notebook), else ``book/results`` above it."""
    chosen = os.environ.get(RESULTS_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_dir():
            raise GlancingError(f"{RESULTS_ENV}={chosen} is not a folder; point it at the book's "
                                "results folder (book/results in the repository) or unset it")
        return path
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        for candidate in (folder / "results", folder / "book" / "results"):
            if candidate.is_dir():
                return candidate
    raise GlancingError(f"no book/results folder above {here}: run the chapter from the "
                        f"repository's book/ folder, or set {RESULTS_ENV}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a chapter's live cells repeat."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (the legacy global state a reader's np.random.* calls use)
    torch.manual_seed(seed)


def setup(seed: int = 0, verbose: bool = True) -> BookSetup:
    """Resolve the chapter's settings, seed everything and (by default) print one line of each."""
    settings = BookSetup(
        profile=get_profile(),
        data_root=data_root(),
        device=torch.device("cuda" if torch.cuda.is_available() else "cpu"),
        results=find_results(),
        seed=seed,
    )
    seed_everything(seed)
    if verbose:
        where = ("embedded dataset only (set GLANCING_DATA_ROOT for Magnetic Tile and MVTec AD)"
                 if settings.data_root is None else "GLANCING_DATA_ROOT + embedded dataset")
        print(f"profile: {settings.profile.name} | data: {where} | "
              f"device: {settings.device.type} | seed: {seed}")
    return settings


def trained_model(book: BookSetup):
    """The book's committed trained model: ``(Glance, settings)`` from :data:`BOOK_MODEL`.

    ``settings["profile"]`` is the profile it was trained with (not the chapter's profile).
    """
    from glancing.pipeline import load_model  # heavy imports only when a chapter needs them

    path = book.results / BOOK_MODEL
    if not path.is_file():
        raise GlancingError(f"the book's trained model {BOOK_MODEL} is missing under "
                            f"{book.results}; restore it from the repository (git checkout)")
    return load_model(path, device=book.device)


def show_code(*objects) -> None:
    """Display the library's own source of ``objects`` as one code listing (in a notebook)."""
    from IPython.display import Markdown, display

    source = "\n".join(textwrap.dedent(inspect.getsource(obj)) for obj in objects)
    display(Markdown(f"```python\n{source}```"))
