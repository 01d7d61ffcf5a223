"""``python -m glancing bench scoremap``: how long a score map takes, three ways, side by side.

For image sides 128, 256 and 512 (patch p, stride s), on a fixed set of test images:

- **loop**: the paper's per-patch scorer (:meth:`Glance.window_scores`), one Global-Net pass
  per window, at its best batch size (:func:`glancing.config.score_batch`); its time leaves
  out assembling the map (in its favour). Where a side has more than ``--loop-full`` windows,
  an evenly spread sample of ``--loop-windows`` windows is scored and the time extrapolated
  to all windows (the table says so);
- **exact**: :mod:`glancing.fast_map` (same networks, same map);
- **one-pass**: :class:`~glancing.models.blind_spot.OnePassGlance` (another Global-Net,
  trained with the same objectives; its map is not the loop's).

Per method: ms per image, speed-up against the loop measured in the same run, the largest
difference of its combined window scores (``lambda_s s_IAD' + (1 - lambda_s) s_DAD'``, which
the map averages) from the loop's, on the windows the loop scored; pixel AUROC on the fixed
set; multiply-accumulates per image (every convolution and linear layer: Local-Net,
Global-Net, heads) and the rate achieved; peak memory (growth of the resident set, sampled
every 2 ms, on a CPU; ``max_memory_allocated`` on CUDA).

Networks: ``--model`` loads a trained ``model.pt`` (``python -m glancing run``); otherwise a
small Local-Net (random, undistilled: the three maps are compared with each other, not with
the paper) and a Global-Net trained for ``--train-iters`` steps. The blind-spot net is always
trained here, with the same Local-Net, data and objectives. Trained networks are kept in
``--work`` and reused.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import threading
import time
from pathlib import Path

import torch
from torch import nn

from glancing import checkpoint, metrics
from glancing.config import score_batch
from glancing.data import MVTecDataset, resolve_dataset
from glancing.errors import GlancingError
from glancing.fast_map import fast_window_scores, maps_from_scores_fast
from glancing.metrics import pixel_auroc
from glancing.models.blind_spot import BlindSpotNet, OnePassGlance
from glancing.models.glance import Glance
from glancing.models.global_net import GlobalNet, hole_mask
from glancing.models.heads import DADHead, iad_score
from glancing.models.local_net import LocalNet, crop_patches
from glancing.pipeline import git_commit
from glancing.score_map import window_centers
from glancing.scoring import ScoreNormalizer
from glancing.train import freeze, train_global_net
from glancing.train_blind_spot import train_blind_spot

METHODS = ("loop", "exact", "one-pass")


# -- networks ------------------------------------------------------------------------------------

def _split(root: Path, category: str, split: str, side: int, p: int) -> list[dict]:
    return list(MVTecDataset(root, category, split, image_size=side, min_side=p,
                             val_fraction=0.1, seed=0))


def _stack(items: list[dict], key: str) -> torch.Tensor:
    return torch.stack([item[key] for item in items])


def build_models(args, root: Path, device: torch.device) -> tuple[Glance, OnePassGlance, dict]:
    """The loop/exact model and the one-pass model, trained here or loaded; and how."""
    work = Path(args.work)
    info = {}
    size = args.train_size
    if args.model:
        from glancing.pipeline import load_model

        model, state = load_model(args.model, device)
        p = model.patch_size
        info["model"] = f"loaded ({Path(args.model).name}, trained at "\
                        f"{state['profile'].image_size} px)"
    else:
        p = args.patch_size
        torch.manual_seed(0)
        local_net = freeze(LocalNet(p, width=0.25).to(device))
        model = Glance(local_net, GlobalNet().to(device), DADHead().to(device)).to(device)
    train = _split(root, args.category, "train", size, p)
    images, valid = _stack(train, "image"), _stack(train, "valid")
    if not args.model:
        trained = train_global_net(
            work / f"global-p{p}-s{size}.pt", model.global_net, model.dad_head,
            model.local_net, images, valid, iterations=args.train_iters, batch_size=8,
            lr_global=1e-3, lr_head=1e-3, lambda_t=0.1,
            generator=torch.Generator().manual_seed(1), checkpoint_every=50,
            progress=not args.quiet)
        info["global_net_train_s"] = round(trained.seconds, 1)  # also when reused
        info["model"] = (f"trained here: random Local-Net (width 0.25), Global-Net "
                         f"{args.train_iters} steps x 8 patches at {size} px")
    torch.manual_seed(0)
    blind = BlindSpotNet(p, model.local_net.out_dim).to(device)
    blind_head = DADHead(model.local_net.out_dim).to(device)
    trained = train_blind_spot(
        work / f"blind-p{p}-s{size}-{_model_tag(args)}.pt", blind, blind_head,
        model.local_net, images, valid, iterations=args.train_iters, batch_size=4,
        positions=16, lr_global=1e-3, lr_head=1e-3, lambda_t=0.1,
        generator=torch.Generator().manual_seed(2), checkpoint_every=50,
        progress=not args.quiet)
    info["blind_spot_train_s"] = round(trained.seconds, 1)
    info["blind_spot"] = (f"trained here: {args.train_iters} steps x 4 images x 16 positions "
                          f"at {size} px")
    one_pass = OnePassGlance(model.local_net, freeze(blind), freeze(blind_head),
                             ScoreNormalizer(model.normalizer.lambda_s)).to(device).eval()
    model = model.eval()
    freeze(model)
    # Normalisers from validation windows, each model its own, as the pipeline does.
    val = _split(root, args.category, "val", size, p)
    if not args.model:
        _fit(model, val, args.stride, exact=True)
    _fit(one_pass, val, args.stride, exact=False)
    return model, one_pass, info


def _model_tag(args) -> str:
    if not args.model:
        return "small"
    digest = hashlib.sha1(str(Path(args.model).resolve()).encode()).hexdigest()[:10]
    return f"model-{digest}"  # a blind-spot net per loaded model


def _fit(model, items: list[dict], stride: int, exact: bool) -> None:
    scores = [(fast_window_scores(model, it["image"].to(_device(model)),
                                  it["valid"].to(_device(model)), it["box"].tolist(), stride)
               if exact else model.window_scores(it["image"].to(_device(model)),
                                                 it["valid"].to(_device(model)),
                                                 it["box"].tolist(), stride))
              for it in items]
    model.normalizer.fit(torch.cat([s["iad"] for s in scores]),
                         torch.cat([s["dad"] for s in scores]))


def _device(model: nn.Module) -> torch.device:
    return next(model.buffers()).device


# -- the per-patch loop on a sample of windows ----------------------------------------------------

@torch.no_grad()
def loop_scores_at(model: Glance, image: torch.Tensor, valid: torch.Tensor,
                   centers: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """The body of :meth:`Glance.window_scores` for chosen windows (to time a sample)."""
    p = model.patch_size
    s_iad, s_dad = [], []
    for chunk in centers.split(batch_size):
        n = len(chunk)
        images = image[None].expand(n, -1, -1, -1)
        z_local = model.local_net(crop_patches(images, chunk, p))
        mask = hole_mask(valid[None].expand(n, -1, -1, -1), chunk, p)
        z_global = model.global_net.predict(images, mask, chunk)
        s_iad.append(iad_score(z_local, z_global))
        s_dad.append(model.dad_head.score(z_local, z_global))
    return {"centers": centers, "iad": torch.cat(s_iad), "dad": torch.cat(s_dad)}


# -- measuring -----------------------------------------------------------------------------------

class MacCounter:
    """Multiply-accumulates of every ``Conv2d`` and ``Linear`` call inside ``modules``."""

    def __init__(self, *modules: nn.Module) -> None:
        self.total = 0
        layers = [m for module in modules for m in module.modules()
                  if isinstance(m, nn.Conv2d | nn.Linear)]
        self.handles = [m.register_forward_hook(self._count) for m in layers]

    def _count(self, module, _inputs, output) -> None:
        if isinstance(output, tuple):  # a partial convolution returns (features, mask)
            output = output[0]
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            self.total += kh * kw * module.in_channels // module.groups * output.numel()
        else:
            self.total += module.in_features * output.numel()

    def close(self) -> int:
        for handle in self.handles:
            handle.remove()
        return self.total


try:  # glibc's malloc_trim, to measure peaks on a CPU (Linux only)
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None


class PeakMemory:
    """Peak memory of a block: CUDA's allocator counter, or on a CPU the growth of the resident
    set (sampled every 2 ms, after handing freed memory back to the system)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        if _LIBC is not None:
            _LIBC.malloc_trim(0)  # hand freed memory back, so that reuse does not hide a peak
        self.base = self._rss() if os.path.exists("/proc/self/statm") else 0
        self.running = self.base > 0
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
            return
        self.running = False
        self.thread.join()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _combined(model, scores: dict) -> torch.Tensor:
    return model.normalizer.combine(scores["iad"], scores["dad"])


def bench_side(model: Glance, one_pass: OnePassGlance, items: list[dict], stride: int,
               loop_windows: int, loop_full: int, device: torch.device) -> dict[str, dict]:
    """Every method on the fixed set ``items`` at one side; a row per method."""
    p = model.patch_size
    size = tuple(items[0]["image"].shape[-2:])
    rows = {m: {"seconds": 0.0, "macs": 0, "peak_bytes": 0, "maps": [], "max_diff": 0.0}
            for m in METHODS}
    sampled = False
    for item in items:
        image, valid, box = item["image"].to(device), item["valid"].to(device), item["box"].tolist()
        centers = window_centers(box, p, stride).to(device)
        n = len(centers)
        sample = n if n <= loop_full else min(n, loop_windows)
        pick = torch.linspace(0, n - 1, sample).round().long().unique()
        sampled |= len(pick) < n

        counter = MacCounter(model)
        with PeakMemory(device) as memory:
            _sync(device)
            started = time.perf_counter()
            loop = loop_scores_at(model, image, valid, centers[pick].to(device),
                                  score_batch(device))
            _sync(device)
            elapsed = time.perf_counter() - started
        rows["loop"]["seconds"] += elapsed * n / len(pick)
        rows["loop"]["macs"] += counter.close() * n / len(pick)
        rows["loop"]["peak_bytes"] = max(rows["loop"]["peak_bytes"], memory.peak)
        if len(pick) == n:
            rows["loop"]["maps"].append(maps_from_scores_fast(model, loop, size)["combined"])

        for method, scorer in (("exact", model), ("one-pass", one_pass)):
            stats = {"macs": 0}
            counter = MacCounter(scorer)
            with PeakMemory(device) as memory:
                _sync(device)
                started = time.perf_counter()
                if method == "exact":
                    scores = fast_window_scores(model, image, valid, box, stride, stats=stats)
                else:
                    scores = one_pass.window_scores(image, valid, box, stride)
                maps = maps_from_scores_fast(scorer, scores, size)
                _sync(device)
                elapsed = time.perf_counter() - started
            row = rows[method]
            row["seconds"] += elapsed
            row["macs"] += counter.close() + stats["macs"]
            row["peak_bytes"] = max(row["peak_bytes"], memory.peak)
            row["maps"].append(maps["combined"])
            # Against the loop: the combined score of every window the loop scored.
            diff = (_combined(scorer, scores)[pick] - _combined(model, loop)).abs().max()
            row["max_diff"] = max(row["max_diff"], float(diff))

    masks = torch.stack([it["mask"][0] > 0.5 for it in items])
    valid = torch.stack([it["valid"][0] for it in items])
    table = {}
    for method in METHODS:
        row = rows[method]
        per_image = row["seconds"] / len(items)
        entry = {
            "ms_per_image": 1000 * per_image,
            "speedup_vs_loop": None,
            "max_abs_diff_vs_loop": 0.0 if method == "loop" else row["max_diff"],
            "pixel_auroc": (pixel_auroc(torch.stack(row["maps"]).cpu(), masks, valid)
                            if row["maps"] else None),
            "gmac_per_image": row["macs"] / len(items) / 1e9,
            "gmac_per_s": row["macs"] / max(row["seconds"], 1e-9) / 1e9,
            "peak_mb": row["peak_bytes"] / 2**20,
            "windows": len(window_centers(items[0]["box"].tolist(), p, stride)),
            "note": "",
        }
        if method == "loop" and sampled:
            entry["note"] = (f"timed on {loop_windows} of {entry['windows']} windows per "
                             "image, extrapolated; AUROC = exact's (same map)")
            entry["pixel_auroc"] = None
        table[method] = entry
    loop_ms = table["loop"]["ms_per_image"]
    for method in METHODS:
        table[method]["speedup_vs_loop"] = loop_ms / table[method]["ms_per_image"]
    if table["loop"]["pixel_auroc"] is None:
        table["loop"]["pixel_auroc"] = table["exact"]["pixel_auroc"]
    return table


def evaluate_split(model: Glance, one_pass: OnePassGlance, items: list[dict], stride: int,
                   device: torch.device) -> dict[str, dict]:
    """The MVTec metrics of the exact map (the loop's map) and the one-pass map on ``items``."""
    maps = {"exact (= loop)": [], "one-pass": []}
    for it in items:
        image, valid, box = it["image"].to(device), it["valid"].to(device), it["box"].tolist()
        size = tuple(image.shape[-2:])
        scores = fast_window_scores(model, image, valid, box, stride)
        maps["exact (= loop)"].append(maps_from_scores_fast(model, scores, size)["combined"])
        scores = one_pass.window_scores(image, valid, box, stride)
        maps["one-pass"].append(maps_from_scores_fast(one_pass, scores, size)["combined"])
    masks = torch.stack([it["mask"][0] > 0.5 for it in items])
    labels = torch.tensor([it["label"] for it in items])
    valid = torch.stack([it["valid"][0] for it in items])
    return {name: metrics.evaluate(torch.stack(m).cpu(), masks, labels, valid=valid)
            for name, m in maps.items()}


def format_table(results: dict) -> str:
    """The printed table: one line per side and method."""
    head = (f"{'side':>5s} {'method':9s} {'ms/image':>11s} {'speed-up':>9s} {'max|diff|':>10s} "
            f"{'pix AUROC':>9s} {'GMAC/img':>9s} {'GMAC/s':>7s} {'peak MB':>8s}  note")
    lines = [head]
    for side, table in results["sides"].items():
        for method, row in table.items():
            lines.append(
                f"{side:>5s} {method:9s} {row['ms_per_image']:11.1f} "
                f"{row['speedup_vs_loop']:8.1f}x {row['max_abs_diff_vs_loop']:10.2e} "
                f"{row['pixel_auroc']:9.3f} {row['gmac_per_image']:9.2f} "
                f"{row['gmac_per_s']:7.1f} {row['peak_mb']:8.1f}  {row['note']}")
    return "\n".join(lines)


def main(args) -> int:
    """Run ``bench scoremap`` with parsed ``args``; prints the table (and writes ``--out``)."""
    try:
        sides = [int(s) for s in str(args.sides).split(",") if s.strip()]
    except ValueError:
        raise GlancingError(f"--sides {args.sides!r}: give image sides as integers, e.g. "
                            "128,256,512") from None
    if args.loop_windows < 1 or args.images < 1 or args.stride < 1:
        raise GlancingError("--loop-windows, --images and --stride must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise GlancingError("--device cuda asked, but torch sees no CUDA device; use --device cpu")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    root, _ = resolve_dataset("embedded", args.category)
    started = time.perf_counter()
    model, one_pass, info = build_models(args, root, device)
    p = model.patch_size
    if min(sides) < p:
        raise GlancingError(f"--sides: every side must hold one {p} px patch, got {min(sides)}")
    results = {"settings": {"patch_size": p, "stride": args.stride, "images": args.images,
                            "category": args.category, "device": str(device),
                            "threads": torch.get_num_threads(), "torch": torch.__version__,
                            "score_batch": score_batch(device),
                            "loop_windows": args.loop_windows, "loop_full": args.loop_full,
                            "command": shlex.join(["python", "-m", "glancing",
                                                   *getattr(args, "argv", [])]),
                            "git_commit": git_commit(), "machine": platform.machine(),
                            "date": time.strftime("%Y-%m-%d"), **info},
               "sides": {}}
    for side in sides:
        test = [it for it in _split(root, args.category, "test", side, p) if it["label"] == 1]
        results["sides"][str(side)] = bench_side(model, one_pass, test[: args.images],
                                                 args.stride, args.loop_windows, args.loop_full,
                                                 device)
    if args.evaluate:
        test = _split(root, args.category, "test", args.train_size, p)
        results["test_split"] = {"side": args.train_size, "images": len(test),
                                 "metrics": evaluate_split(model, one_pass, test, args.stride,
                                                           device)}
    results["settings"]["total_s"] = round(time.perf_counter() - started, 1)
    print(f"score maps: p = {p}, stride {args.stride}, {args.images} defective "
          f"{args.category} images per side, {device} ({torch.get_num_threads()} threads)")
    print(f"networks: {info['model']}; one-pass: {info['blind_spot']}")
    print(format_table(results))
    if "test_split" in results:
        split = results["test_split"]
        print(f"whole {args.category} test split ({split['images']} images, {split['side']} px):")
        for name, m in split["metrics"].items():
            print(f"  {name:15s} pixel AUROC {m['pixel_auroc']:.3f}  AU-PRO {m['au_pro']:.3f}  "
                  f"image AUROC {m['image_auroc']:.3f}")
    if args.out:
        checkpoint.save_json(results, Path(args.out))
        print(f"table: {args.out}")
    return 0
