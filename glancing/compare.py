"""``python -m glancing compare``: GLANCE, its ablations and three peers on the same split.

Every method sees the same letterboxed images at the profile's size, the same train / validation /
test split (drawn once, with the profile's seed, whatever the training seed) and the same
teacher. Nothing is tuned on the test set; no method is tuned at all: each runs with its paper's
settings (scaled to the image size), and the validation split only calibrates scores (GLANCE's
head normalisation, the students' standardisation).

Methods (:data:`METHODS`):

- ``glance`` and the lambda_s ablation ``glance-iad`` (lambda_s = 1), ``glance-ls0.5``,
  ``glance-ls0.2``, ``glance-dad`` (lambda_s = 0): one trained model, rescored from its saved
  window scores (the profile's lambda_s is ``glance``);
- ``glance-p17`` / ``-p33`` / ``-p65``: patch size (the profile's own p is ``glance``; a p that
  does not fit the shortest side of some letterboxed image of the category is skipped, with the
  reason recorded, as Magnetic Tile's narrow strips are at p = 65 and 128 px);
- ``glance-no-finetune`` (reuses the distillation), ``glance-no-compactness`` (lambda_c = 0),
  ``glance-random-teacher`` (EfficientNet-Lite0 randomly initialised), ``glance-selfsup``
  (no teacher: SimSiam on the category's patches, :mod:`glancing.selfsup`, with the iterations
  and batch of distillation + fine-tuning);
- ``glance-one-pass`` (beyond the paper): the base model's Local-Net with the blind-spot
  one-pass net (:mod:`glancing.models.blind_spot`) in place of the Global-Net, trained with the
  same objectives and the Global-Net's budget (:func:`glancing.train_blind_spot.train_one_pass`);
- peers: ``students`` (Uninformed Students on GLANCE's fine-tuned Local-Net), ``padim``,
  ``patchcore`` (:mod:`glancing.baselines`).

Under ``--out``::

    settings.json                      profile and data; another call must match them
    results/<category>/<method>/seed<k>.json   one result, written atomically; existing = done
    maps/<category>/<method>/seed<k>.pt        maps of two test images per defect type
    seed<k>/distil/<teacher>-p<p>-lc<c>/       a distilled Local-Net, shared by categories
    seed<k>/glance-<variant>/<category>/       a GLANCE run (:func:`glancing.pipeline.run_category`)
    seed<k>/students/<category>/               the students' checkpoints
    seed<k>/one-pass/<category>/               the one-pass net's checkpoint
    compare.json, compare.md                   everything so far, rebuilt after each result

Training seconds (``train_s``) count every stage a method needs from scratch on one category,
the shared distillation included; ``ms_per_image`` is the test scoring time per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import time
from pathlib import Path

from glancing.config import PROFILES, Profile, get_profile
from glancing.errors import GlancingError

DEFAULT_TEACHER = "efficientnet_lite0"
RANDOM_TEACHER = "efficientnet_lite0-random"
METRICS = ("pixel_auroc", "au_pro", "image_auroc")
MAPS_PER_DEFECT = 2


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the table: a GLANCE model (``variant``) scored with ``lambda_s``, or a peer."""

    name: str
    kind: str  # "glance", "ablation", "extension" (beyond the paper) or "peer"
    variant: str | None = None  # the trained GLANCE model it uses (None for peers)
    lambda_s: float | None = None  # None: the profile's
    patch_size: int | None = None  # None: the profile's
    teacher: str = DEFAULT_TEACHER
    overrides: tuple = ()  # (field, value) pairs replaced in the profile
    selfsup: bool = False
    one_pass: bool = False  # the blind-spot net in place of the Global-Net


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("glance", "glance", "base"),
    Method("glance-iad", "ablation", "base", lambda_s=1.0),
    Method("glance-ls0.5", "ablation", "base", lambda_s=0.5),
    Method("glance-ls0.2", "ablation", "base", lambda_s=0.2),
    Method("glance-dad", "ablation", "base", lambda_s=0.0),
    Method("glance-p17", "ablation", "p17", patch_size=17),
    Method("glance-p33", "ablation", "p33", patch_size=33),
    Method("glance-p65", "ablation", "p65", patch_size=65),
    Method("glance-no-finetune", "ablation", "no-finetune", overrides=(("finetune_iters", 0),)),
    Method("glance-no-compactness", "ablation", "no-compactness",
           overrides=(("lambda_c", 0.0),)),
    Method("glance-random-teacher", "ablation", "random-teacher", teacher=RANDOM_TEACHER),
    Method("glance-selfsup", "ablation", "selfsup", selfsup=True),
    Method("glance-one-pass", "extension", "one-pass", one_pass=True),
    Method("students", "peer"),
    Method("padim", "peer"),
    Method("patchcore", "peer"),
)}


# -- command line --------------------------------------------------------------------------------

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``compare`` on the command line's subparsers."""
    parser = subparsers.add_parser("compare", help="GLANCE, its ablations and peers, one table")
    parser.add_argument("--profile", choices=list(PROFILES), default=None,
                        help="how heavy the run is (default: $GLANCING_PROFILE or quick)")
    parser.add_argument("--data-root", default=None,
                        help="folder holding the datasets (default: $GLANCING_DATA_ROOT)")
    parser.add_argument("--data", default="embedded",
                        help="'embedded', a path, or a dataset name under the data root")
    parser.add_argument("--category", default="all", help="a category name, or 'all'")
    parser.add_argument("--out", default="runs/compare", help="output folder (default: "
                        "%(default)s); a second call resumes there")
    parser.add_argument("--seeds", type=int, default=1,
                        help="training seeds 0..N-1 added to the profile's (default: 1)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None,
                        metavar="METHOD", help=f"a subset of: {', '.join(METHODS)} (default: all)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=main)
    return parser


def main(args) -> int:
    if args.seeds < 1:
        raise GlancingError(f"--seeds {args.seeds}: give 1 or more")
    argv = getattr(args, "argv", None)
    command = shlex.join(["python", "-m", "glancing", *argv]) if argv is not None else None
    report = compare(args.data, args.category, args.profile, args.out, seeds=args.seeds,
                     methods=args.methods, device=args.device, data_root=args.data_root,
                     progress=not args.quiet, command=command)
    print(markdown_table(report))
    print(f"results: {Path(args.out) / 'compare.json'}")
    return 0


# -- the run -------------------------------------------------------------------------------------

def compare(data: str = "embedded", category: str = "all", profile: str | Profile | None = None,
            out: str | Path = "runs/compare", seeds: int = 1, methods=None,
            device: str = "auto", data_root: str | None = None, progress: bool = True,
            command: str | None = None) -> dict:
    """Run every chosen method on every chosen category and seed; returns compare.json."""
    from glancing.data import resolve_dataset
    from glancing.pipeline import pick_device

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    chosen = list(METHODS) if not methods else list(dict.fromkeys(methods))
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise GlancingError(f"unknown method {unknown[0]!r} (from --methods); choose from "
                            f"{', '.join(METHODS)}")
    dev = pick_device(device)
    root, categories = resolve_dataset(data, category, data_root, prof.seed)
    runner = _Runner(Path(out), prof, root, data, data_root, dev, progress, command)
    runner.claim()
    for k in range(seeds):
        for name in categories:
            for method in chosen:
                runner.result(name, METHODS[method], prof.seed + k)
    return runner.write_report()


class _Runner:
    """State shared across results: teachers, distilled Local-Nets and data splits, each built
    once and only when a missing result needs it."""

    def __init__(self, out: Path, prof: Profile, root: Path, data: str, data_root, dev,
                 progress: bool, command: str | None) -> None:
        from glancing.pipeline import git_commit

        self.out, self.prof, self.root, self.dev, self.progress = out, prof, root, dev, progress
        self.data, self.data_root, self.command = data, data_root, command
        self.commit = git_commit()
        self._teachers: dict[str, object] = {}
        self._distilled: dict[tuple, tuple] = {}
        self._splits: dict[str, dict] = {}

    # settings ------------------------------------------------------------------------------
    def settings(self) -> dict:
        import glancing
        from glancing.pipeline import portable_path

        return {"profile": dataclasses.asdict(self.prof), "data": self.data,
                "data_root": portable_path(self.root, self.data_root),
                "split_seed": self.prof.seed, "glancing": glancing.__version__}

    def claim(self) -> None:
        from glancing import checkpoint

        marker = self.out / "settings.json"
        settings = self.settings()
        if marker.exists():
            previous = json.loads(marker.read_text())
            if previous != settings:
                changed = sorted(k for k in settings if previous.get(k) != settings[k])
                raise GlancingError(
                    f"{self.out} holds a comparison made with other settings "
                    f"({', '.join(changed)}); use another --out, or delete it to start over")
            return
        checkpoint.save_json(settings, marker)

    def provenance(self) -> dict:
        import platform

        import torch

        import glancing
        from glancing.pipeline import _device_name, cpu_description

        return {"glancing": glancing.__version__, "git_commit": self.commit,
                "command": self.command, "device": _device_name(self.dev),
                "cpu": cpu_description(),
                "torch": torch.__version__, "python": platform.python_version()}

    # shared pieces -------------------------------------------------------------------------
    def teacher(self, spec: str):
        from glancing.teachers import build_teacher

        if spec not in self._teachers:
            self._teachers[spec] = build_teacher(spec, self.prof.teacher_input, self.dev)
        return self._teachers[spec]

    def splits(self, category: str) -> dict:
        """train / val / test of ``category``, stacked (:func:`glancing.pipeline.load_split`)."""
        from glancing.data import MVTecDataset
        from glancing.pipeline import load_split

        if category not in self._splits:
            self._splits = {}  # one category in memory at a time
            self._splits[category] = {
                split: load_split(MVTecDataset(
                    self.root, category, split, image_size=self.prof.image_size,
                    min_side=self.prof.patch_size, val_fraction=self.prof.val_fraction,
                    seed=self.prof.seed))
                for split in ("train", "val", "test")}
        return self._splits[category]

    def shortest_side(self, category: str) -> tuple[int, str]:
        """The shortest side, in pixels at the profile's input size, of the letterboxed images
        of ``category`` (train and test), and the file it belongs to: a larger patch fits
        nowhere in that image."""
        from glancing.data import MVTecDataset
        from glancing.data.letterbox import letterbox_box

        size = self.prof.image_size
        sides = []
        for split in ("train", "test"):
            records = MVTecDataset(self.root, category, split, image_size=size,
                                   val_fraction=0.0, seed=self.prof.seed).records
            for r in records:
                box = letterbox_box(r.height, r.width, size)
                sides.append((min(box.height, box.width), r.path.name))
        return min(sides)

    def variant_profile(self, method: Method, seed: int) -> Profile:
        changes = dict(method.overrides)
        if method.patch_size is not None:
            changes["patch_size"] = method.patch_size
        return dataclasses.replace(self.prof, seed=seed, **changes)

    def distilled(self, teacher: str, prof: Profile) -> tuple:
        """(Local-Net, decoder, stats, seconds) distilled on natural images, once per key."""
        import torch

        from glancing import checkpoint
        from glancing.losses import descriptor_stats
        from glancing.models.local_net import Decoder, LocalNet
        from glancing.pipeline import distillation_set
        from glancing.train import train_local_net

        key = (teacher, prof.patch_size, prof.lambda_c, prof.seed)
        if key in self._distilled:
            return self._distilled[key]
        folder = (self.out / f"seed{prof.seed}" / "distil"
                  / f"{teacher}-p{prof.patch_size}-lc{prof.lambda_c:g}")
        teach = self.teacher(teacher)
        started = time.perf_counter()
        patches, targets = distillation_set(teach, prof)
        describe_s = time.perf_counter() - started
        stats = descriptor_stats(targets)
        torch.manual_seed(prof.seed)
        local_net = LocalNet(prof.patch_size).to(self.dev)
        decoder = Decoder(teach.dim).to(self.dev)
        stage = train_local_net(
            "distil", folder / "distil.pt", local_net, decoder, patches, targets, stats,
            iterations=prof.distill_iters, batch_size=prof.batch_size, lr=prof.lr_local,
            lambda_c=prof.lambda_c, generator=torch.Generator().manual_seed(prof.seed),
            checkpoint_every=prof.checkpoint_every, progress=self.progress)
        timing = folder / "timing.json"
        if not timing.exists():  # the descriptors' time is only true when they were computed
            checkpoint.save_json({"describe_s": describe_s, "distil_s": stage.seconds}, timing)
        seconds = sum(json.loads(timing.read_text()).values())
        self._distilled[key] = (local_net, decoder, stats, seconds)
        return self._distilled[key]

    # GLANCE --------------------------------------------------------------------------------
    def glance_run(self, method: Method, category: str, seed: int) -> tuple[dict, Path, float]:
        """Train (or reuse) the GLANCE model of ``method``; returns (run_category's result,
        its folder, seconds of the Local-Net stages before fine-tuning)."""
        import torch

        from glancing import checkpoint
        from glancing.models.local_net import Decoder, LocalNet
        from glancing.pipeline import run_category
        from glancing.selfsup import train_selfsup

        prof = self.variant_profile(method, seed)
        folder = self.out / f"seed{seed}" / f"glance-{method.variant}" / category
        upstream = folder / "upstream.json"
        if (folder / "metrics.json").exists() and upstream.exists():
            return (json.loads((folder / "metrics.json").read_text()), folder,
                    json.loads(upstream.read_text())["seconds"])
        teach = self.teacher(method.teacher)
        if method.selfsup:
            train = self.splits(category)["train"]
            torch.manual_seed(seed)
            local_net = LocalNet(prof.patch_size).to(self.dev)
            stage = train_selfsup(
                folder / "selfsup.pt", local_net, train["image"], train["valid"],
                iterations=prof.distill_iters + prof.finetune_iters, batch_size=prof.batch_size,
                lr=prof.lr_local, generator=torch.Generator().manual_seed(seed),
                checkpoint_every=prof.checkpoint_every, progress=self.progress)
            decoder = Decoder(teach.dim).to(self.dev)
            stats = (torch.zeros(teach.dim), torch.ones(teach.dim))
            prof = dataclasses.replace(prof, finetune_iters=0)  # no teacher to fine-tune on
            seconds = stage.seconds
        else:
            local_net, decoder, stats, seconds = self.distilled(method.teacher, prof)
        result = run_category(self.root, category, prof, teach, local_net, decoder, stats, folder,
                              self.dev, self.progress, split_seed=self.prof.seed,
                              save_scores=True)
        checkpoint.save_json({"seconds": seconds}, upstream)
        return result, folder, seconds

    def glance_result(self, method: Method, category: str, seed: int) -> tuple[dict, object]:
        import torch

        from glancing import checkpoint, metrics
        from glancing.pipeline import load_model

        result, folder, upstream_s = self.glance_run(method, category, seed)
        prof = self.variant_profile(method, seed)
        if method.selfsup:  # as trained: SimSiam in place of distillation and fine-tuning
            prof = dataclasses.replace(prof, finetune_iters=0)
        lam = prof.lambda_s if method.lambda_s is None else method.lambda_s
        s = result["seconds"]
        train_s = upstream_s + sum(s.get(k, 0.0) for k in
                                   ("finetune_teacher", "finetune", "joint", "calibrate"))
        test = self.splits(category)["test"]
        model, _ = load_model(folder)
        scores = checkpoint.load(folder / "window-scores.pt")["test"]
        size = (self.prof.image_size, self.prof.image_size)
        maps = torch.stack([model.maps_from_scores(w, size, lam)["combined"] for w in scores])
        head = {1.0: "iad", 0.0: "dad", prof.lambda_s: "combined"}.get(lam)
        values = (result["metrics"][head] if head else
                  metrics.evaluate(maps, test["mask"][:, 0], test["label"],
                                   valid=test["valid"][:, 0]))
        record = {
            "metrics": {k: values[k] for k in METRICS}, "train_s": train_s,
            "ms_per_image": result["ms_per_test_image"],
            "settings": {"patch_size": prof.patch_size, "lambda_s": lam,
                         "lambda_c": prof.lambda_c, "finetune_iters": prof.finetune_iters,
                         "teacher": None if method.selfsup else method.teacher,
                         "local_net": (f"selfsup (SimSiam, {self.prof.distill_iters} + "
                                       f"{self.prof.finetune_iters} iterations)"
                                       if method.selfsup else "distilled"),
                         "stride": prof.stride, "scorer": "exact fast map (glancing.fast_map)"},
            "model": str(folder.relative_to(self.out)),
        }
        return record, maps

    def one_pass_result(self, method: Method, category: str, seed: int) -> tuple[dict, object]:
        """The base model's Local-Net with a blind-spot net trained in place of its Global-Net."""
        import torch

        from glancing import metrics
        from glancing.fast_map import maps_from_scores_fast
        from glancing.pipeline import load_model
        from glancing.train_blind_spot import POSITIONS_PER_IMAGE, train_one_pass

        base_result, base_folder, base_upstream = self.glance_run(METHODS["glance"], category,
                                                                  seed)
        prof = self.variant_profile(method, seed)
        splits = self.splits(category)
        test = splits["test"]
        local_net = load_model(base_folder, self.dev)[0].local_net
        model, seconds = train_one_pass(
            local_net, splits["train"], splits["val"], prof,
            self.out / f"seed{seed}" / "one-pass" / category / "blind-spot.pt", self.dev,
            seed=seed + 2, progress=self.progress)
        size = (self.prof.image_size, self.prof.image_size)
        started = time.perf_counter()
        maps = torch.stack([
            maps_from_scores_fast(model, model.window_scores(
                image.to(self.dev), valid.to(self.dev), box.tolist(), prof.stride),
                size)["combined"].cpu()
            for image, valid, box in zip(test["image"], test["valid"], test["box"], strict=True)])
        ms = 1000 * (time.perf_counter() - started) / len(maps)
        values = metrics.evaluate(maps, test["mask"][:, 0], test["label"],
                                  valid=test["valid"][:, 0])
        upstream_s = base_upstream + sum(base_result["seconds"].get(k, 0.0)
                                         for k in ("finetune_teacher", "finetune"))
        record = {
            "metrics": {k: values[k] for k in METRICS},
            "train_s": upstream_s + seconds["train"] + seconds["calibrate"],
            "ms_per_image": ms,
            "settings": {"patch_size": prof.patch_size, "lambda_s": prof.lambda_s,
                         "teacher": method.teacher, "local_net": "the base model's",
                         "global_net": (f"blind-spot one-pass net, {prof.joint_iters} steps x "
                                        f"{max(1, prof.batch_size // POSITIONS_PER_IMAGE)} "
                                        f"images x {POSITIONS_PER_IMAGE} positions"),
                         "stride": prof.stride, "scorer": "one pass (glancing.models.blind_spot)"},
            "model": str((self.out / f"seed{seed}" / "one-pass" / category
                          ).relative_to(self.out)),
        }
        return record, maps

    # peers ---------------------------------------------------------------------------------
    def peer_result(self, method: Method, category: str, seed: int) -> tuple[dict, object]:
        from glancing import metrics
        from glancing.baselines import PaDiM, PatchCore, StudentEnsemble
        from glancing.pipeline import load_model

        splits = self.splits(category)
        train, val, test = splits["train"], splits["val"], splits["test"]
        upstream_s = 0.0
        if method.name == "students":
            base_result, folder, base_upstream = self.glance_run(METHODS["glance"], category, seed)
            upstream_s = base_upstream + sum(base_result["seconds"].get(k, 0.0)
                                             for k in ("finetune_teacher", "finetune"))
            teacher_net = load_model(folder, self.dev)[0].local_net
            ensemble = 3
            model = StudentEnsemble(
                teacher_net, ensemble=ensemble,
                iterations=(self.prof.finetune_iters + self.prof.joint_iters) // ensemble,
                batch_size=self.prof.batch_size, lr=self.prof.lr_local, seed=seed,
                work_dir=self.out / f"seed{seed}" / "students" / category,
                progress=self.progress, stat_patches=self.prof.finetune_patches)
            settings = {"ensemble": ensemble, "iterations_per_student": model.iterations,
                        "teacher": "GLANCE's fine-tuned Local-Net",
                        "patch_size": teacher_net.patch_size}
        elif method.name == "padim":
            model = PaDiM(self.teacher(DEFAULT_TEACHER), seed=seed)
            settings = {"channels": model.channels, "strides": [4, 8, 16]}
        else:
            model = PatchCore(self.teacher(DEFAULT_TEACHER), seed=seed)
            settings = {"coreset_ratio": model.coreset_ratio, "max_bank": model.max_bank,
                        "strides": [8, 16]}
        started = time.perf_counter()
        model.fit(train["image"], train["valid"], val["image"], val["valid"])
        fit_s = time.perf_counter() - started
        if method.name == "students":  # checkpointed training time survives a resume
            fit_s = model.seconds + model.calibrate_seconds
        started = time.perf_counter()
        maps = model.score_maps(test["image"], test["valid"])
        ms = 1000 * (time.perf_counter() - started) / len(maps)
        values = metrics.evaluate(maps, test["mask"][:, 0], test["label"],
                                  valid=test["valid"][:, 0])
        record = {"metrics": {k: values[k] for k in METRICS}, "train_s": upstream_s + fit_s,
                  "ms_per_image": ms, "settings": {"teacher": DEFAULT_TEACHER, **settings}}
        return record, maps

    # one result ----------------------------------------------------------------------------
    def result(self, category: str, method: Method, seed: int) -> None:
        """Compute and store one (category, method, seed) result unless it exists."""
        import torch

        from glancing import checkpoint

        path = self.out / "results" / category / method.name / f"seed{seed}.json"
        if path.exists():
            return
        p = method.patch_size or self.prof.patch_size
        # the profile's own p fitted every image when the split was loaded; a larger one may not
        if method.variant is not None and p > self.prof.patch_size and \
                p > (shortest := self.shortest_side(category))[0]:
            record = {"skipped": f"patch size {p} exceeds the shortest image side at "
                                 f"{self.prof.image_size} px ({shortest[0]} px, {shortest[1]})"}
        elif method.name == f"glance-p{self.prof.patch_size}":
            record = {"skipped": "the profile's own patch size: see 'glance'"}
        else:
            started = time.perf_counter()
            produce = (self.peer_result if method.kind == "peer" else
                       self.one_pass_result if method.one_pass else self.glance_result)
            record, maps = produce(method, category, seed)
            record["wall_s"] = time.perf_counter() - started
            test = self.splits(category)["test"]
            keep = _gallery_indices(test["defect"])
            checkpoint.save({"maps": maps[keep].half(), "paths": [test["path"][i] for i in keep],
                             "defects": [test["defect"][i] for i in keep],
                             "index": torch.tensor(keep)},
                            self.out / "maps" / category / method.name / f"seed{seed}.pt")
        record = {"category": category, "method": method.name, "kind": method.kind,
                  "seed": seed, **record, "provenance": self.provenance()}
        checkpoint.save_json(record, path)
        self.write_report()

    def write_report(self) -> dict:
        """compare.json and compare.md from every result file under ``results/``."""
        return write_report(self.out, self.settings(), self.provenance())


def write_report(out: Path, settings: dict, provenance: dict) -> dict:
    """Rebuild ``out``'s compare.json and compare.md from its ``results/*/*/seed*.json``.

    ``settings`` is the comparison's (``settings.json``); ``provenance`` describes who wrote the
    report (each result keeps its own provenance, so a report merged from several folders by
    ``tools/book_compare.py`` loses nothing).
    """
    from glancing import checkpoint

    results: dict = {}
    for path in sorted((out / "results").glob("*/*/seed*.json")):
        record = json.loads(path.read_text())
        results.setdefault(record["category"], {}).setdefault(record["method"], {})[
            str(record["seed"])] = record
    order = {name: i for i, name in enumerate(METHODS)}
    results = {cat: dict(sorted(by_method.items(), key=lambda kv: order.get(kv[0], 99)))
               for cat, by_method in sorted(results.items())}
    report = {**settings, "provenance": provenance, "methods": {
        name: {"kind": m.kind, "variant": m.variant} for name, m in METHODS.items()},
        "results": results}
    checkpoint.save_json(report, out / "compare.json")
    with checkpoint.atomic_write(out / "compare.md", "w") as handle:
        handle.write(markdown_table(report))
    return report


def _gallery_indices(defects: list[str]) -> list[int]:
    """The first :data:`MAPS_PER_DEFECT` test images of each defect type (good included)."""
    seen: dict[str, int] = {}
    keep = []
    for i, defect in enumerate(defects):
        if seen.get(defect, 0) < MAPS_PER_DEFECT:
            seen[defect] = seen.get(defect, 0) + 1
            keep.append(i)
    return keep


# -- the table -----------------------------------------------------------------------------------

def _summary(values: list[float], digits: int) -> str:
    """One value as is; several as mean ± sample standard deviation."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown_table(report: dict) -> str:
    """compare.md: one table per category; with several seeds, mean ± standard deviation."""
    lines = [f"# GLANCE among its peers (profile {report['profile']['name']}, "
             f"data {report['data']})", ""]
    for category, by_method in report["results"].items():
        lines += [f"## {category}", "",
                  "| method | kind | seeds | pixel AUROC | AU-PRO@0.3 | image AUROC | train s "
                  "| ms / image |", "|---|---|---|---|---|---|---|---|"]
        for method, by_seed in by_method.items():
            done = [r for r in by_seed.values() if "metrics" in r]
            if not done:
                reason = next(iter(by_seed.values())).get("skipped", "")
                lines.append(f"| {method} | skipped: {reason} | | | | | | |")
                continue
            cells = [_summary([r["metrics"][k] for r in done], 3) for k in METRICS]
            cells += [_summary([r["train_s"] for r in done], 0),
                      _summary([r["ms_per_image"] for r in done], 0)]
            lines.append(f"| {method} | {done[0]['kind']} | {len(done)} | " + " | ".join(cells)
                         + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
