"""`mask2anomaly synth --out DIR`: write the built-in synthetic road world in the real formats."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.synthetic.writer import default_workers
from .common import add_no_progress


def _size(text: str) -> tuple[int, int]:
    """ "256x512" -> (256, 512)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x512, got {text!r}") from None
    if height < 32 or width < 32:
        raise argparse.ArgumentTypeError(f"size {text} is too small (at least 32x32)")
    return height, width


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write the synthetic road world (Cityscapes, COCO, SMIYC and Road Anomaly formats)",
        description="Render street scenes in perspective and write them as a Cityscapes folder "
        "(train/val), a COCO-format outlier source, SMIYC RoadAnomaly21 and RoadObstacle21 sets "
        "and a Road Anomaly set, all under OUT. The same seed gives identical files; a re-run "
        "replaces an earlier synthetic world in OUT.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default: 0)")
    parser.add_argument(
        "--size", type=_size, default=(256, 512), metavar="HxW", help="street image size"
    )
    parser.add_argument("--num-train", type=_count, default=300, metavar="N")
    parser.add_argument("--num-val", type=_count, default=50, metavar="N")
    parser.add_argument(
        "--num-outliers",
        type=_count,
        default=120,
        metavar="N",
        help="COCO images that pass the outlier filter (N/4 with excluded categories and N/8 "
        "too small are added)",
    )
    parser.add_argument(
        "--num-test", type=_count, default=30, metavar="N", help="frames per anomaly set"
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=default_workers(),
        metavar="N",
        help="processes rendering in parallel (default: the CPU count, at most 8); the files "
        "do not depend on it",
    )
    add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.synthetic import count_images, write_world
    from ..fileio import FolderLock, ensure_folder

    counts = {
        "num_train": args.num_train,
        "num_val": args.num_val,
        "num_outliers": args.num_outliers,
        "num_test": args.num_test,
    }
    ensure_folder(Path(args.out), "--out")
    with (
        FolderLock(Path(args.out), "synth"),
        tqdm(
            total=count_images(**counts), desc="synth", unit="img", disable=args.no_progress
        ) as bar,
    ):
        summary = write_world(
            args.out,
            seed=args.seed,
            size=args.size,
            progress=bar.update,
            workers=args.workers,
            **counts,
        )
    print(summary.describe())
    return 0
