"""Reading the results that ``python -m glancing run`` writes, for the book and for comparisons.

A run folder holds a top-level ``metrics.json`` (provenance: profile, teacher, device, seed,
versions, commit, command; and per category the metrics of each head and the stage times) and
per category a ``losses.json``. The book commits several run folders under ``book/results/``,
declared in ``book/results/results.yml``; :func:`metrics_rows` flattens all of them into one
table, so that every chapter reads the same numbers the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from glancing.config import get_profile
from glancing.errors import GlancingError

HEADS = ("iad", "dad", "combined")
METRICS = ("pixel_auroc", "au_pro", "image_auroc")


def run_files(results: str | Path) -> list[Path]:
    """Every top-level ``metrics.json`` (one that records a profile) under ``results``, sorted."""
    results = Path(results)
    if not results.is_dir():
        raise GlancingError(f"results folder {results} does not exist")
    return sorted(path for path in results.rglob("metrics.json")
                  if "profile" in json.loads(path.read_text()))


def manifest(results: str | Path) -> dict:
    """``results.yml``: run folder name -> ``{"what": ..., "overrides": {...}}``."""
    path = Path(results) / "results.yml"
    if not path.is_file():
        raise GlancingError(f"{path} is missing: it declares the run folders of {results}")
    return yaml.safe_load(path.read_text())["runs"]


def metrics_rows(results: str | Path) -> list[dict]:
    """One row per (run file, category, head) with the metrics and the run's provenance.

    Row keys: ``run`` (the folder under ``results``), ``file`` (relative path), ``category``,
    ``data`` (``embedded``, ``magnetic_tile``, ``mvtec_ad`` ...), ``patch_size``, ``lambda_s``,
    ``profile``,
    ``head``, the three :data:`METRICS`, ``minutes`` (the category's stage times, without the
    shared distillation), ``seed``, ``device``, ``commit``, ``command``.
    """
    results = Path(results)
    rows = []
    for path in run_files(results):
        run = json.loads(path.read_text())
        for category, entry in run["categories"].items():
            for head in HEADS:
                rows.append({
                    "run": path.relative_to(results).parts[0],
                    "file": str(path.relative_to(results)),
                    "category": category,
                    "data": run["data"]["spec"],
                    "patch_size": run["profile"]["patch_size"],
                    "lambda_s": run["profile"]["lambda_s"],
                    "profile": run["profile"]["name"],
                    "head": head,
                    **{name: entry["metrics"][head][name] for name in METRICS},
                    "minutes": sum(entry["seconds"].values()) / 60,
                    "seed": run["seed"],
                    "device": run["device"],
                    "commit": run["git_commit"],
                    "command": run.get("command"),
                })
    return rows


# The methods whose maps the book keeps for its gallery (tools/book_compare.py); the lambda_s
# rows rescore the glance model, so their maps would add little.
GALLERY_METHODS = ("glance", "glance-iad", "glance-dad", "glance-selfsup", "students", "padim",
                   "patchcore")


def _comparisons(results: Path):
    """(path, report) of every compare.json under ``results``, sorted."""
    if not results.is_dir():
        raise GlancingError(f"results folder {results} does not exist")
    for path in sorted(results.rglob("compare.json")):
        yield path, json.loads(path.read_text())


def compare_rows(results: str | Path) -> list[dict]:
    """One row per finished (comparison, category, method, seed) of every ``compare.json``.

    ``python -m glancing compare`` writes ``compare.json``; each committed one under ``results``
    is read. Row keys: ``run`` (the folder under ``results``), ``file``, ``data``, ``category``,
    ``method``, ``kind`` (``glance``, ``ablation``, ``extension`` or ``peer``), ``seed``, the three
    :data:`METRICS`, ``train_s``, ``ms_per_image``, ``wall_s``, ``settings`` (the method's own),
    ``profile``, ``device``, ``cpu`` (None before it was recorded), ``commit``, ``command``.
    Skipped methods (a patch larger than the image) have no row: see :func:`compare_progress`.
    """
    results = Path(results)
    rows = []
    for path, report in _comparisons(results):
        for category, by_method in report["results"].items():
            for method, by_seed in by_method.items():
                for record in by_seed.values():
                    if "metrics" not in record:
                        continue
                    try:
                        provenance = record["provenance"]
                        rows.append({
                            "run": path.relative_to(results).parts[0],
                            "file": str(path.relative_to(results)),
                            "data": report["data"], "category": category, "method": method,
                            "kind": record["kind"], "seed": record["seed"],
                            **{name: record["metrics"][name] for name in METRICS},
                            "train_s": record["train_s"], "ms_per_image": record["ms_per_image"],
                            "wall_s": record.get("wall_s"), "settings": record["settings"],
                            "profile": report["profile"]["name"], "device": provenance["device"],
                            "cpu": provenance.get("cpu"), "commit": provenance["git_commit"],
                            "command": provenance["command"],
                        })
                    except KeyError as missing:
                        raise GlancingError(
                            f"{path}: the {category}/{method} result lacks {missing}; rebuild the "
                            "file with the current `python -m glancing compare`") from None
    return rows


def compare_progress(results: str | Path) -> dict:
    """How far each comparison has come: ``{(run, category): {"finished", "skipped",
    "missing"}}``, each a list of method names (``missing``: in ``compare.json``'s method list
    but with no result yet, for any seed)."""
    results = Path(results)
    progress = {}
    for path, report in _comparisons(results):
        run = path.relative_to(results).parts[0]
        for category, by_method in report["results"].items():
            finished = [m for m, by_seed in by_method.items()
                        if any("metrics" in r for r in by_seed.values())]
            skipped = [m for m, by_seed in by_method.items()
                       if all("skipped" in r for r in by_seed.values())]
            missing = [m for m in report["methods"] if m not in by_method]
            progress[run, category] = {"finished": finished, "skipped": skipped,
                                       "missing": missing}
    return progress


# The GLANCE rows of a comparison that vary one setting of the base model and nothing else.
SWEEP_METHODS = {"patch_size": ("glance", "glance-p17", "glance-p33", "glance-p65"),
                 "lambda_s": ("glance-iad", "glance", "glance-ls0.5", "glance-ls0.2", "glance-dad")}


def sweep_rows(results: str | Path, setting: str, comparisons: tuple[str, ...],
               runs: tuple[str, ...] = ()) -> list[dict]:
    """GLANCE's metrics as one setting varies: one row per (category, value), sorted.

    The one reader of the patch-size and lambda_s sweeps, so that every chapter that plots them
    shows the same numbers. ``setting`` is ``"patch_size"`` or ``"lambda_s"``. Rows come from
    the comparison folders ``comparisons`` (the methods of :data:`SWEEP_METHODS`, the value
    read from each result's settings, metrics averaged over seeds). Where a (category, value) has
    no comparison result yet, the run folders ``runs`` (folders under ``results``, at any depth)
    fill it: a run's combined score at its
    patch size and lambda_s, and, for lambda_s, its IAD head alone (1.0) and DAD head alone
    (0.0). Only runs of the comparisons' profile are read, with the other setting at that
    profile's value. Row keys: ``category``, ``data``,
    ``value``, the three :data:`METRICS`, ``seeds``, ``source`` (the folder it came from).
    """
    if setting not in SWEEP_METHODS:
        raise GlancingError(f"no sweep of {setting!r}: choose from {', '.join(SWEEP_METHODS)}")
    found = [r for r in compare_rows(results)
             if r["run"] in comparisons and r["method"] in SWEEP_METHODS[setting]]
    grouped: dict[tuple, list[dict]] = {}
    for r in found:
        grouped.setdefault((r["category"], r["settings"][setting]), []).append(r)
    rows = {key: {"category": key[0], "data": group[0]["data"], "value": key[1],
                  **{m: sum(r[m] for r in group) / len(group) for m in METRICS},
                  "seeds": len(group), "source": group[0]["run"]}
            for key, group in grouped.items()}
    profiles = {r["profile"] for r in found} or None
    head_value = {"combined": None, "iad": 1.0, "dad": 0.0}
    filled: dict[tuple, dict] = {}
    for r in metrics_rows(results) if runs else []:
        if not any(r["file"].startswith(folder + "/") for folder in runs):
            continue
        if (profiles and r["profile"] not in profiles) or (
                setting == "patch_size" and r["head"] != "combined"):
            continue
        other = "lambda_s" if setting == "patch_size" else "patch_size"
        if r[other] != getattr(get_profile(r["profile"]), other):
            continue  # the other setting is held at the profile's value
        value = r[setting] if head_value[r["head"]] is None else head_value[r["head"]]
        key = (r["category"], value)
        if key in filled and filled[key]["file"] != r["file"]:
            raise GlancingError(
                f"two run files give {r['category']} at {setting} = {value}: "
                f"{filled[key]['file']} and {r['file']}; name one folder of each in runs=")
        filled[key] = {"category": r["category"], "data": r["data"], "value": value,
                       **{m: r[m] for m in METRICS}, "seeds": 1,
                       "source": str(Path(r["file"]).parent), "file": r["file"]}
    for key, row in filled.items():
        row.pop("file")
        rows.setdefault(key, row)
    return [rows[key] for key in sorted(rows)]


def compare_maps(results: str | Path, row: dict) -> dict:
    """The test maps a comparison saved for ``row`` (a :func:`compare_rows` row), or {}.

    ``compare`` keeps the maps of the first test images of each defect type:
    ``{"maps": (N, S, S) half tensor, "paths", "defects", "index": (N,) test indices}``; the
    indices refer to the test split drawn with the comparison's ``split_seed`` (its
    ``settings.json``). The book commits them only for datasets that may be redistributed, and
    only for :data:`GALLERY_METHODS` (``tools/book_compare.py``).
    """
    from glancing import checkpoint

    path = (Path(results) / row["file"]).parent / "maps" / row["category"] / row["method"] / (
        f"seed{row['seed']}.pt")
    return checkpoint.load(path) if path.is_file() else {}


def losses(results: str | Path, run_file: str, stage: str,
           category: str | None = None) -> list[dict]:
    """The per-iteration loss records of ``stage`` (``distil``, ``finetune``, ``joint``).

    ``run_file`` is a row's ``file``. Distillation is shared by the run's categories
    (``shared/losses.json``); the other stages are per ``category`` (``<category>/losses.json``).
    """
    folder = (Path(results) / run_file).parent
    if stage == "distil":
        path = folder / "shared" / "losses.json"
    elif category is None:
        raise GlancingError(f"the {stage!r} losses are per category: give category=")
    else:
        path = folder / category / "losses.json"
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    if stage not in recorded:
        raise GlancingError(f"no {stage!r} losses in {path}")
    return recorded[stage]


def run_table(run_folder: str | Path, head: str = "combined") -> str:
    """A Markdown table of one run's categories, with their mean: what ``glancing report`` prints.

    Each row: category, pixel AUROC, AU-PRO@0.3, image AUROC of ``head``, minutes. The mean row
    averages the categories (the MVTec AD convention: every category counts once).
    """
    path = Path(run_folder) / "metrics.json"
    if not path.is_file():
        raise GlancingError(f"{path} does not exist: give the --out folder of a "
                            "'python -m glancing run' (it writes metrics.json there)")
    run = json.loads(path.read_text())
    if head not in HEADS:
        raise GlancingError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    entries = run["categories"]
    if not entries:
        raise GlancingError(f"{path} holds no finished category yet")
    lines = ["| category | pixel AUROC | AU-PRO@0.3 | image AUROC | minutes |",
             "|---|---|---|---|---|"]
    values = []
    for category, entry in sorted(entries.items()):
        metrics = [entry["metrics"][head][name] for name in METRICS]
        values.append(metrics)
        minutes = sum(entry["seconds"].values()) / 60
        lines.append(f"| {category} | " + " | ".join(f"{v:.3f}" for v in metrics)
                     + f" | {minutes:.1f} |")
    means = [sum(column) / len(values) for column in zip(*values, strict=True)]
    lines.append(f"| **mean of {len(values)}** | " + " | ".join(f"**{v:.3f}**" for v in means)
                 + " | |")
    profile = run["profile"]
    lines.append("")
    lines.append(f"{head} score; profile {profile['name']} ({profile['image_size']} px, "
                 f"p = {profile['patch_size']}, stride {profile['stride']}); seed {run['seed']}; "
                 f"{run['device']}; teacher {run['teacher']['name']}; commit {run['git_commit']}")
    return "\n".join(lines)
