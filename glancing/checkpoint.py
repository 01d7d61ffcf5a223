"""Files that appear whole or not at all, and checkpoints that load with ``weights_only=True``.

Everything a run writes goes through :func:`atomic_write`: the content is written to a temporary
file in the same folder and renamed over the target, so a run killed at any moment leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch

from glancing.errors import GlancingError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb"):
    """Open a temporary file beside ``path``; rename it onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should read like any file
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(obj, path: str | Path) -> None:
    """``torch.save`` atomically. Keep ``obj`` to tensors, numbers, strings, lists and dicts."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def load(path: str | Path, map_location="cpu"):
    """``torch.load(..., weights_only=True)`` with one clear line when the file is unusable."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise GlancingError(f"checkpoint {path} not found") from None
    except Exception as err:  # unpickling errors come in many types
        raise GlancingError(
            f"checkpoint {path} cannot be loaded ({type(err).__name__}); delete it to retrain"
        ) from None


def save_json(obj, path: str | Path) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=False)
        handle.write("\n")
