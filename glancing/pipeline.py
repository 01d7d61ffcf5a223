"""``python -m glancing run``: every stage of GLANCE on one or more categories, from one call.

Under the output folder::

    run.json                  the settings; a second call with other settings is refused
    metrics.json              per category: metrics of IAD, DAD and combined; stage times;
                              config, teacher, device, seed, versions, git commit
    shared/distil.pt          the Local-Net distilled on natural images (shared by categories)
    <category>/finetune.pt    the fine-tuned Local-Net
    <category>/joint.pt       the Global-Net and DAD head
    <category>/model.pt       everything needed to score new images (``glancing predict``)
    <category>/metrics.json   this category's results (written last: its presence means done)
    <category>/maps.png       image | ground truth | IAD | DAD | combined, per defect type
    */losses.json             the loss terms of every training iteration, per stage

A stage whose checkpoint exists is reused; a stage that was interrupted resumes from its last
checkpoint (see :mod:`glancing.train`). Every file is written atomically.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

import glancing
from glancing import checkpoint, metrics
from glancing.config import Profile, cache_dir, get_profile
from glancing.config import data_root as configured_data_root
from glancing.data import MVTecDataset, resolve_dataset
from glancing.data.natural import natural_images, random_patches
from glancing.errors import GlancingError
from glancing.fast_map import fast_window_scores
from glancing.figures import save_map_figure
from glancing.losses import descriptor_stats
from glancing.models.glance import Glance
from glancing.models.global_net import GlobalNet
from glancing.models.heads import DADHead
from glancing.models.local_net import Decoder, LocalNet, crop_patches, sample_centers
from glancing.scoring import ScoreNormalizer
from glancing.teachers import Teacher, build_teacher, describe_patches
from glancing.train import freeze, train_global_net, train_local_net

HEADS = ("iad", "dad", "combined")
CACHE_VERSION = 1


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise GlancingError("--device cuda asked, but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


def git_commit() -> str | None:
    """The commit of the checkout the package runs from, or None.

    '+dirty' is added when the library itself (``glancing/``) differs from that commit; edits to
    the book or tests do not change what a run computes.
    """
    here = Path(glancing.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "glancing"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty.strip() else "")


def portable_path(path: Path, data_root: str | None = None) -> str:
    """``path`` written without this machine's folders, for results that get shared.

    Under the data root it becomes ``$GLANCING_DATA_ROOT/...``, under the cache
    ``$GLANCING_CACHE/...``; any other path keeps only its last two parts.
    """
    path = Path(path).resolve()
    for name, base in (("$GLANCING_DATA_ROOT", configured_data_root(data_root)),
                       ("$GLANCING_CACHE", cache_dir())):
        if base is not None and path.is_relative_to(Path(base).resolve()):
            return str(Path(name) / path.relative_to(Path(base).resolve()))
    return str(Path(*path.parts[-2:]))


# -- data ----------------------------------------------------------------------------------------

def load_split(dataset: MVTecDataset) -> dict[str, torch.Tensor | list]:
    """Every item of a split stacked: image (N,3,S,S), mask (N,1,S,S), valid, box, label."""
    items = [dataset[i] for i in range(len(dataset))]
    stacked = {key: torch.stack([it[key] for it in items])
               for key in ("image", "mask", "valid", "box")}
    stacked["label"] = torch.tensor([it["label"] for it in items])
    stacked["defect"] = [it["defect"] for it in items]
    stacked["path"] = [it["path"] for it in items]
    return stacked


def teacher_targets(teacher: Teacher, patches: torch.Tensor, cache_file: Path) -> torch.Tensor:
    """Teacher descriptors of ``patches``, computed once and cached in ``cache_file``."""
    if cache_file.exists():
        return checkpoint.load(cache_file)["targets"]
    targets = describe_patches(teacher, patches)
    checkpoint.save({"targets": targets}, cache_file)
    return targets


def distillation_set(teacher: Teacher, profile: Profile) -> tuple[torch.Tensor, torch.Tensor]:
    """Natural-image patches (N,3,p,p) and their teacher descriptors (N,D), cached by key."""
    generator = torch.Generator().manual_seed(profile.seed)
    patches = random_patches(natural_images(), profile.distill_patches, profile.patch_size,
                             generator)
    key = "|".join(map(str, (CACHE_VERSION, teacher.name, teacher.weights, teacher.input_size,
                             profile.patch_size, profile.distill_patches, profile.seed)))
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    cache_file = cache_dir() / "descriptors" / f"natural-{digest}.pt"
    return patches, teacher_targets(teacher, patches, cache_file)


def training_patches(train: dict, count: int, patch_size: int, seed: int) -> torch.Tensor:
    """A fixed set of ``count`` patches of the training images, whole boxes inside the image."""
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(train["image"]), (count,), generator=generator)
    centers = sample_centers(train["valid"][idx], patch_size, generator, whole_box_valid=True)
    return crop_patches(train["image"][idx], centers, patch_size)


# -- scoring -------------------------------------------------------------------------------------

def window_scores_of_split(model: Glance, split: dict, profile: Profile, device) -> list[dict]:
    """Raw window scores of every image of a split.

    Computed with the exact fast map (:func:`glancing.fast_map.fast_window_scores`), which
    returns what the paper's per-window procedure (:meth:`Glance.window_scores`) returns, within
    float rounding (tested), several times faster.
    """
    return [
        {k: v.cpu() for k, v in fast_window_scores(
            model, image.to(device), valid.to(device), box.tolist(), profile.stride).items()}
        for image, valid, box in zip(split["image"], split["valid"], split["box"], strict=True)
    ]


def maps_of_split(model: Glance, scores: list[dict], size) -> dict[str, torch.Tensor]:
    """Normalised maps {"iad", "dad", "combined"}, each (N, S, S), from window scores."""
    maps = [model.maps_from_scores(s, size) for s in scores]
    return {head: torch.stack([m[head] for m in maps]) for head in HEADS}


def thresholds_from_validation(maps: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    """Decision thresholds from normal validation maps (N,S,S) of the combined score.

    image: the largest image score (max of its map) among validation images, so that no
    validation image is flagged; pixel: the 99.9th percentile of validation pixel scores.
    """
    scores = [float(m[v[0]].max()) for m, v in zip(maps, valid, strict=True)]
    pixels = torch.cat([m[v[0]] for m, v in zip(maps, valid, strict=True)]).double()
    return {"image": max(scores), "pixel": float(torch.quantile(pixels, 0.999))}


# -- the run -------------------------------------------------------------------------------------

def run(data: str = "embedded", category: str = "all", profile: str | Profile | None = None,
        teacher: str = "efficientnet_lite0", out: str | Path = "runs/default",
        device: str = "auto", data_root: str | None = None, progress: bool = True,
        command: str | None = None) -> dict:
    """Train and evaluate GLANCE on each chosen category; returns the metrics.json content."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    dev = pick_device(device)
    out = Path(out)
    root, categories = resolve_dataset(data, category, data_root, prof.seed)
    settings = {"profile": dataclasses.asdict(prof), "teacher": str(teacher),
                "data": str(root), "glancing": glancing.__version__}
    teach = build_teacher(teacher, prof.teacher_input, dev)  # fails before anything is written
    _claim_output(out, settings)
    commit = git_commit()  # the code that runs, read before a long run lets the checkout move

    started = time.perf_counter()
    patches, targets = distillation_set(teach, prof)
    descriptor_seconds = time.perf_counter() - started
    stats = descriptor_stats(targets)
    torch.manual_seed(prof.seed)
    local_net, decoder = LocalNet(prof.patch_size).to(dev), Decoder(teach.dim).to(dev)
    distil = train_local_net(
        "distil", out / "shared" / "distil.pt", local_net, decoder, patches, targets, stats,
        iterations=prof.distill_iters, batch_size=prof.batch_size, lr=prof.lr_local,
        lambda_c=prof.lambda_c, generator=torch.Generator().manual_seed(prof.seed),
        checkpoint_every=prof.checkpoint_every, progress=progress)
    checkpoint.save_json({"distil": distil.log}, out / "shared" / "losses.json")

    report = {
        "glancing": glancing.__version__, "git_commit": commit, "command": command,
        "data": {"spec": data, "root": portable_path(root, data_root), "categories": categories},
        "profile": dataclasses.asdict(prof), "seed": prof.seed,
        "teacher": {"spec": str(teacher), "name": teach.name, "weights": teach.weights,
                    "dim": teach.dim, "input_size": teach.input_size},
        "device": _device_name(dev), "cpu": cpu_description(),
        "scoring": "exact fast map (glancing.fast_map)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "shared": {"teacher_descriptors_s": descriptor_seconds, "distil_s": distil.seconds,
                   "distil_final_loss": distil.log[-1] if distil.log else None},
        "categories": {},
    }
    for name in categories:
        report["categories"][name] = run_category(
            root, name, prof, teach, local_net, decoder, stats, out / name, dev, progress)
        checkpoint.save_json(report, out / "metrics.json")
    return report


def run_category(root, name: str, prof: Profile, teach: Teacher, distilled: LocalNet,
                 distilled_decoder: Decoder, stats, out: Path, dev, progress: bool,
                 split_seed: int | None = None, save_scores: bool = False) -> dict:
    """Fine-tune, joint-train, calibrate on validation, evaluate on test; one category.

    ``split_seed`` draws the validation split (default: the profile's seed), so that runs with
    other training seeds can share one split. ``save_scores`` also writes the raw window scores
    of the validation and test images to ``window-scores.pt``, to rescore without retraining
    (e.g. other lambda_s). ``prof.finetune_iters == 0`` skips fine-tuning (L stays as given).
    """
    done = out / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    seconds = {}
    datasets = {split: MVTecDataset(root, name, split, image_size=prof.image_size,
                                    min_side=prof.patch_size, val_fraction=prof.val_fraction,
                                    seed=prof.seed if split_seed is None else split_seed)
                for split in ("train", "val", "test")}
    if len(datasets["val"]) == 0:
        raise GlancingError(f"category {name!r} has too few training images to hold out a "
                            "validation split; add images to train/good")
    t = time.perf_counter()
    train, val = load_split(datasets["train"]), load_split(datasets["val"])
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    local_net, decoder = copy.deepcopy(distilled), copy.deepcopy(distilled_decoder)
    ft_patches = training_patches(train, prof.finetune_patches, prof.patch_size, prof.seed + 1)
    ft_targets = (teacher_targets(teach, ft_patches, out / "finetune-targets.pt")
                  if prof.finetune_iters > 0 else torch.zeros(len(ft_patches), teach.dim))
    seconds["finetune_teacher"] = time.perf_counter() - t
    finetune = train_local_net(
        "finetune", out / "finetune.pt", local_net, decoder, ft_patches, ft_targets, stats,
        iterations=prof.finetune_iters, batch_size=prof.batch_size, lr=prof.lr_local,
        lambda_c=prof.lambda_c, generator=torch.Generator().manual_seed(prof.seed + 1),
        checkpoint_every=prof.checkpoint_every, progress=progress)
    seconds["finetune"] = finetune.seconds
    freeze(local_net)

    torch.manual_seed(prof.seed + 2)
    global_net, dad_head = GlobalNet().to(dev), DADHead(local_net.out_dim).to(dev)
    joint = train_global_net(
        out / "joint.pt", global_net, dad_head, local_net, train["image"], train["valid"],
        iterations=prof.joint_iters, batch_size=prof.batch_size, lr_global=prof.lr_global,
        lr_head=prof.lr_head, lambda_t=prof.lambda_t,
        generator=torch.Generator().manual_seed(prof.seed + 2),
        checkpoint_every=prof.checkpoint_every, progress=progress)
    seconds["joint"] = joint.seconds
    model = Glance(local_net, freeze(global_net), freeze(dad_head),
                   ScoreNormalizer(prof.lambda_s)).to(dev).eval()

    t = time.perf_counter()
    size = (prof.image_size, prof.image_size)
    val_scores = window_scores_of_split(model, val, prof, dev)
    model.normalizer.fit(torch.cat([s["iad"] for s in val_scores]),
                         torch.cat([s["dad"] for s in val_scores]))
    val_maps = maps_of_split(model, val_scores, size)
    thresholds = thresholds_from_validation(val_maps["combined"], val["valid"])
    seconds["calibrate"] = time.perf_counter() - t
    save_model(model, prof, teach, name, thresholds, out / "model.pt")

    t = time.perf_counter()
    test = load_split(datasets["test"])
    test_scores = window_scores_of_split(model, test, prof, dev)
    maps = maps_of_split(model, test_scores, size)
    seconds["evaluate"] = time.perf_counter() - t
    if save_scores:
        checkpoint.save({"val": val_scores, "test": test_scores}, out / "window-scores.pt")
    result = {
        "metrics": {head: metrics.evaluate(maps[head], test["mask"][:, 0], test["label"],
                                           valid=test["valid"][:, 0])
                    for head in HEADS},
        "seconds": seconds,
        "ms_per_test_image": 1000 * seconds["evaluate"] / len(test["label"]),
        "counts": {split: len(ds) for split, ds in datasets.items()},
        "thresholds": thresholds,
        "final_losses": {"finetune": finetune.log[-1] if finetune.log else None,
                         "joint": joint.log[-1] if joint.log else None},
    }
    save_map_figure(test, maps, out / "maps.png", title=name, per_type=2)
    checkpoint.save_json({"finetune": finetune.log, "joint": joint.log}, out / "losses.json")
    checkpoint.save_json(result, done)
    return result


def save_model(model: Glance, prof: Profile, teach: Teacher, category: str,
               thresholds: dict, path: Path) -> None:
    checkpoint.save({
        "profile": dataclasses.asdict(prof),
        "teacher_dim": teach.dim,
        "category": category,
        "thresholds": thresholds,
        "state_dict": model.state_dict(),
        "glancing": glancing.__version__,
    }, path)


def load_model(path: str | Path, device="cpu") -> tuple[Glance, dict]:
    """A trained :class:`Glance` and its saved settings from ``model.pt`` (or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise GlancingError(f"no trained model at {path}: run `python -m glancing run` first, "
                            "and pass --model <out>/<category>")
    state = checkpoint.load(path, map_location=device)
    known = {f.name for f in dataclasses.fields(Profile)}  # tolerate keys of older versions
    prof = Profile(**{k: v for k, v in state["profile"].items() if k in known})
    model = Glance(LocalNet(prof.patch_size), GlobalNet(), DADHead(),
                   ScoreNormalizer(prof.lambda_s))
    model.load_state_dict(state["state_dict"])
    model.requires_grad_(False)  # an inference model
    return model.to(device).eval(), {**state, "profile": prof}


def _claim_output(out: Path, settings: dict) -> None:
    """Record the settings in ``out/run.json``; refuse a folder made with other settings."""
    marker = out / "run.json"
    if marker.exists():
        previous = json.loads(marker.read_text())
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise GlancingError(
                f"{out} holds a run made with other settings ({', '.join(changed)}); "
                "use another --out, or delete that folder to start over")
        return
    checkpoint.save_json(settings, marker)


def cpu_description() -> str:
    """The CPU's model and the instruction set PyTorch's kernels use on it (``AVX2``,
    ``AVX512`` ...): the same code, seed and thread count can train a different model on
    another CPU, since the kernels' float sums differ."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}"


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    threads = torch.get_num_threads()
    return (f"cpu ({platform.processor() or platform.machine()}, {threads} "
            f"thread{'' if threads == 1 else 's'})")

