"""The command line: ``python -m glancing <command> ...``.

Commands:

- ``run``: train every stage of GLANCE and evaluate it (see :mod:`glancing.pipeline`).
- ``predict``: score new images with a trained run; writes their maps and a decision.
- ``data info``: what a dataset holds (splits, defect types, image sizes).
- ``data embedded``: generate the embedded default dataset (it is also generated on first use).
- ``data baseline``: the trivial per-pixel z-score baseline, to show how hard a dataset is.

Every command takes ``--profile`` (``ci``, ``quick``, ``gpu``, ``paper``; default
``$GLANCING_PROFILE`` or ``quick``) and ``--data-root`` (default ``$GLANCING_DATA_ROOT``). A
mistake in the input prints one line, ``glancing: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections import Counter

from glancing import __version__, compare
from glancing.config import PROFILES, get_profile
from glancing.errors import GlancingError


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=list(PROFILES), default=None,
                        help="how heavy the run is (default: $GLANCING_PROFILE or quick)")
    parser.add_argument("--data-root", default=None,
                        help="folder holding the datasets (default: $GLANCING_DATA_ROOT)")


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="embedded",
                        help="'embedded', a path, or a dataset name under the data root")
    parser.add_argument("--category", default="all", help="a category name, or 'all'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glancing", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"glancing {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train and evaluate GLANCE")
    _add_common(run)
    _add_data(run)
    run.add_argument("--teacher", default="efficientnet_lite0",
                     help="efficientnet_lite0 (default, offline), resnet18 (the paper's; "
                          "downloads), or a path to a weights file")
    run.add_argument("--out", default="runs/default", help="output folder (default: %(default)s)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--patch-size", type=int, choices=[17, 33, 65], default=None,
                     help="override the profile's patch size p (recorded in metrics.json)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    predict = commands.add_parser("predict", help="score new images with a trained run")
    predict.add_argument("--model", required=True, help="a run's category folder (model.pt)")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("--out", default=None, help="where to write maps (default: beside "
                         "the model, in predictions/)")
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    predict.set_defaults(func=cmd_predict)

    data = commands.add_parser("data", help="inspect or generate datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    info = data_commands.add_parser("info", help="what a dataset holds")
    _add_common(info)
    _add_data(info)
    info.set_defaults(func=cmd_data_info)

    embedded = data_commands.add_parser("embedded", help="generate the embedded dataset")
    _add_common(embedded)
    embedded.add_argument("--seed", type=int, default=0)
    embedded.set_defaults(func=cmd_data_embedded)

    baseline = data_commands.add_parser("baseline", help="per-pixel z-score baseline")
    _add_common(baseline)
    _add_data(baseline)
    baseline.add_argument("--json", action="store_true", help="print JSON instead of a table")
    baseline.set_defaults(func=cmd_data_baseline)

    report = commands.add_parser("report", help="a run's metrics as a Markdown table")
    report.add_argument("run_folder", help="the --out folder of 'glancing run'")
    report.add_argument("--head", default="combined", choices=["iad", "dad", "combined"])
    report.set_defaults(func=cmd_report)
    compare.add_parser(commands)
    _add_bench(commands)
    return parser


def _add_bench(commands) -> None:
    """``bench scoremap``: the three ways to make a score map, timed side by side."""
    bench = commands.add_parser("bench", help="benchmarks")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    scoremap = bench_commands.add_parser("scoremap", help="time the three ways to make a score map")
    scoremap.add_argument("--model", default=None,
                          help="a trained run's category folder or model.pt (default: train "
                               "small networks here)")
    scoremap.add_argument("--sides", default="128,256,512",
                          help="image sides, comma-separated (default: %(default)s)")
    scoremap.add_argument("--patch-size", type=int, default=33, choices=[17, 33, 65],
                          help="p when training here (default: %(default)s)")
    scoremap.add_argument("--stride", type=int, default=4, help="window step (default: 4)")
    scoremap.add_argument("--images", type=int, default=3,
                          help="defective test images in the fixed set (default: 3)")
    scoremap.add_argument("--loop-full", type=int, default=700,
                          help="sides with at most this many windows run the whole loop "
                               "(default: %(default)s)")
    scoremap.add_argument("--loop-windows", type=int, default=64,
                          help="windows the loop scores per image at larger sides, to "
                               "extrapolate its time (default: %(default)s)")
    scoremap.add_argument("--category", default="brick",
                          help="embedded category to train and test on (default: brick)")
    scoremap.add_argument("--train-size", type=int, default=128,
                          help="side of the training images (default: %(default)s)")
    scoremap.add_argument("--train-iters", type=int, default=200,
                          help="training steps of each Global-Net (default: %(default)s)")
    scoremap.add_argument("--work", default="runs/bench",
                          help="where trained networks are kept (default: %(default)s)")
    scoremap.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                          help="also compare the exact and one-pass maps on the whole test "
                               "split at the training side (default: on)")
    scoremap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    scoremap.add_argument("--out", default=None, help="also write the table as JSON here")
    scoremap.add_argument("--quiet", action="store_true", help="no progress bars")
    scoremap.set_defaults(func=cmd_bench)


def _datasets(args):
    """Yield ``(category, {split: MVTecDataset})`` for the chosen data and categories."""
    from glancing.data import MVTecDataset, resolve_dataset

    profile = get_profile(args.profile)
    root, categories = resolve_dataset(args.data, args.category, args.data_root, profile.seed)
    for category in categories:
        yield category, {
            split: MVTecDataset(root, category, split, image_size=profile.image_size,
                                min_side=profile.patch_size, val_fraction=profile.val_fraction,
                                seed=profile.seed)
            for split in ("train", "val", "test")
        }


def cmd_run(args) -> int:
    from glancing.pipeline import run

    profile = get_profile(args.profile)
    if args.patch_size:
        profile = dataclasses.replace(profile, patch_size=args.patch_size)
    report = run(args.data, args.category, profile, args.teacher, args.out, args.device,
                 args.data_root, progress=not args.quiet,
                 command=shlex.join(["python", "-m", "glancing", *args.argv]))
    print(f"{'category':16s} {'head':9s} {'pixel AUROC':>12s} {'AU-PRO':>8s} {'image AUROC':>12s}")
    for category, result in report["categories"].items():
        for head, m in result["metrics"].items():
            print(f"{category:16s} {head:9s} {m['pixel_auroc']:12.3f} {m['au_pro']:8.3f} "
                  f"{m['image_auroc']:12.3f}")
    print(f"results: {args.out}/metrics.json")
    return 0


def cmd_predict(args) -> int:
    from glancing.predict import predict

    for line in predict(args.model, args.images, args.out, args.device):
        print(json.dumps(line))
    return 0


def cmd_data_info(args) -> int:
    for category, splits in _datasets(args):
        print(f"{category}  ({splits['train'].folder})")
        for name, ds in splits.items():
            counts = Counter(r.defect for r in ds.records)
            sizes = sorted({(r.width, r.height) for r in ds.records})
            size_text = (f"{sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1
                         else f"{len(sizes)} sizes, e.g. {sizes[0][0]}x{sizes[0][1]}")
            print(f"  {name:5s} {len(ds):5d} images  {dict(sorted(counts.items()))}  {size_text}")
    return 0


def cmd_data_embedded(args) -> int:
    from glancing.data.embedded import ensure_embedded

    print(ensure_embedded(seed=args.seed))
    return 0


def cmd_data_baseline(args) -> int:
    from glancing.baselines.zscore import evaluate_zscore

    results = {category: evaluate_zscore(splits["train"], splits["test"])
               for category, splits in _datasets(args)}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'category':16s} {'pixel AUROC':>12s} {'AU-PRO':>8s} {'image AUROC':>12s}")
    for category, m in results.items():
        print(f"{category:16s} {m['pixel_auroc']:12.3f} {m['au_pro']:8.3f} "
              f"{m['image_auroc']:12.3f}")
    return 0


def cmd_bench(args) -> int:
    from glancing.bench import main as bench_main

    return bench_main(args)


def cmd_report(args) -> int:
    from glancing.results import run_table

    print(run_table(args.run_folder, args.head))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded with results, as the user typed it
    try:
        return args.func(args)
    except GlancingError as err:
        print(f"glancing: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glancing: interrupted", file=sys.stderr)
        return 130
