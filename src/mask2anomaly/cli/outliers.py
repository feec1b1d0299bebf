"""`mask2anomaly prepare-outliers --coco DIR --out DIR`: COCO -> the compact outlier layout."""

from __future__ import annotations

import argparse
import sys

from .common import bounded_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare-outliers",
        help="select COCO images for outlier fine-tuning and write their masks once",
        description="Select the COCO images the official fine-tuning pastes from (no person, "
        "bicycle, car, motorcycle, bus, truck, traffic light or stop sign; both sides >= "
        "--min-size) and write them as OUT/images/<id>.jpg + OUT/ood_annotations/<id>.png "
        "(254 on the union of all annotations). Files already written are skipped.",
    )
    parser.add_argument("--coco", required=True, metavar="DIR", help="COCO folder (annotations/)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    parser.add_argument(
        "--split",
        default="train2017",
        help="annotations/instances_SPLIT.json and image folder SPLIT/ (default: train2017)",
    )
    parser.add_argument(
        "--min-size",
        type=bounded_int(0),
        default=480,
        help="smallest image height and width kept (default: 480)",
    )
    parser.add_argument(
        "--exclude",
        nargs="*",
        metavar="CATEGORY",
        help="category names whose images are dropped (default: the eight official ones)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.outliers import EXCLUDED_CATEGORIES, prepare_outliers

    excluded = EXCLUDED_CATEGORIES if args.exclude is None else tuple(args.exclude)
    summary = prepare_outliers(
        args.coco, args.out, split=args.split, excluded_categories=excluded, min_size=args.min_size
    )
    for problem in summary.unreadable:
        print(f"mask2anomaly prepare-outliers: warning: {problem} (left out)", file=sys.stderr)
    print(
        f"{args.out}: {summary.written} outlier images written, {summary.existing} already "
        f"there, {summary.empty} left out (annotations cover no pixel), "
        f"{len(summary.unreadable)} left out (unreadable)"
    )
    return 1 if summary.unreadable else 0
