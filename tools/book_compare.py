"""Bring one or more ``python -m glancing compare`` folders of the same data into the book.

    python tools/book_compare.py book/results/<run> runs/cmp-a [runs/cmp-b ...]

Two processes on the two cores each run some categories into their own ``--out``; this merges
their finished results into one book folder and rebuilds ``compare.json`` / ``compare.md``
(:func:`glancing.compare.write_report`). Every result keeps the provenance it was written with.

What is copied: ``settings.json`` (all sources must agree), ``results/`` (a result present in
two sources must be identical), and, for the embedded dataset only (Magnetic Tile and MVTec AD
may not be redistributed), a small gallery: for each method of
``glancing.results.GALLERY_METHODS``, the saved map of the first test image of each defect type,
resized to :data:`GALLERY_SIDE` pixels (antialiased) in half precision, under ``maps/`` in the
layout :func:`glancing.results.compare_maps` reads. Trained models and checkpoints stay behind
(too large for the book). Run it again as more results finish: it only adds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.nn.functional as F

from glancing import checkpoint
from glancing.compare import write_report
from glancing.errors import GlancingError
from glancing.results import GALLERY_METHODS, manifest

GALLERY_SIDE = 64  # about 60 kB per (category, method)


def first_of_each_defect(saved: dict) -> list[int]:
    """Positions in ``saved`` of the first map of each defect type, in their saved order."""
    seen, keep = set(), []
    for k, defect in enumerate(saved["defects"]):
        if defect not in seen:
            seen.add(defect)
            keep.append(k)
    return keep


def small_gallery(saved: dict) -> dict:
    """The first map of each defect type, resized to GALLERY_SIDE x GALLERY_SIDE, half."""
    keep = first_of_each_defect(saved)
    maps = saved["maps"][keep].float()[:, None]  # (K, 1, S, S)
    small = F.interpolate(maps, size=(GALLERY_SIDE, GALLERY_SIDE), mode="bilinear",
                          antialias=True, align_corners=False)[:, 0]
    return {"maps": small.half(), "paths": [saved["paths"][k] for k in keep],
            "defects": [saved["defects"][k] for k in keep], "index": saved["index"][keep]}


def merge(target: Path, sources: list[Path]) -> dict:
    settings = None
    for source in sources:
        path = source / "settings.json"
        if not path.is_file():
            raise GlancingError(f"{path} is missing: give the --out folder of a "
                                "'python -m glancing compare'")
        these = json.loads(path.read_text())
        if settings is not None and these != settings:
            changed = sorted(k for k in these if settings.get(k) != these[k])
            raise GlancingError(f"{source} was run with other settings than {sources[0]} "
                                f"({', '.join(changed)}): merge only comparisons of the same "
                                "data and profile")
        settings = these
    if (target / "settings.json").is_file() and json.loads(
            (target / "settings.json").read_text()) != settings:
        raise GlancingError(f"{target} holds a comparison with other settings; choose another "
                            "target folder")
    checkpoint.save_json(settings, target / "settings.json")
    commands = set()
    for source in sources:
        for path in sorted((source / "results").glob("*/*/seed*.json")):
            record = json.loads(path.read_text())
            relative = path.relative_to(source)
            copy = target / relative
            if copy.is_file() and json.loads(copy.read_text()) != record:
                raise GlancingError(f"{relative} differs between {target} and {source}")
            checkpoint.save_json(record, copy)
            commands.add(record["provenance"]["command"])
            maps = source / "maps" / relative.parent.relative_to("results") / (
                relative.stem + ".pt")
            if (settings["data"] == "embedded" and record["method"] in GALLERY_METHODS
                    and maps.is_file()):
                checkpoint.save(small_gallery(checkpoint.load(maps)),
                                target / "maps" / maps.relative_to(source / "maps"))
    provenance = {"written_by": "tools/book_compare.py",
                  "sources": [source.name for source in sources],
                  "commands": sorted(c for c in commands if c)}
    return write_report(target, settings, provenance)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: " + __doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    target, sources = Path(argv[0]), [Path(s) for s in argv[1:]]
    try:
        report = merge(target, sources)
    except GlancingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if target.parent.name == "results" and target.name not in manifest(target.parent):
        print(f"note: declare {target.name} in {target.parent / 'results.yml'} (what it is, "
              "and any profile overrides); tests/test_results.py checks it", file=sys.stderr)
    done = sum(len(by_method) for by_method in report["results"].values())
    size = sum(p.stat().st_size for p in Path(target).rglob("*") if p.is_file()) / 1e6
    print(f"{target}: {done} (category, method) results over {len(report['results'])} "
          f"categories, {size:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
