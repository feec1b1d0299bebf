"""`mask2anomaly demo`: the whole method on the built-in synthetic road world."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device, add_no_progress, bounded_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="generate a synthetic road world, train, fine-tune, evaluate, report",
        description="Generate the synthetic road world (Cityscapes, COCO and SMIYC formats), "
        "train stage 1, fine-tune stage 2 (AnomalyMix + mask contrastive loss), evaluate on the "
        "synthetic RoadAnomaly21 / RoadObstacle21 sets and write report.md. An interrupted "
        "demo resumes where it stopped when run again with the same --out.",
    )
    parser.add_argument("--out", default="mask2anomaly-demo", help="output folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny world and a few iterations (a smoke test, ~2 min)",
    )
    parser.add_argument(
        "--seed", type=bounded_int(0), default=0, help="training seed of both stages (default 0)"
    )
    parser.add_argument(
        "--world-seed",
        type=bounded_int(0),
        default=0,
        help="seed of the synthetic world, test sets included (default 0)",
    )
    parser.add_argument(
        "--threads",
        type=bounded_int(0),
        default=2,
        help="intra-op threads (default 2, the count the README's numbers were made with: "
        "another count ends at a slightly different model; 0: PyTorch's default)",
    )
    add_device(parser)
    add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo.run import run_demo
    from ..fileio import FolderLock, ensure_folder

    ensure_folder(Path(args.out), "--out")
    with FolderLock(Path(args.out), "demo"):
        result = run_demo(
            args.out,
            quick=args.quick,
            seed=args.seed,
            world_seed=args.world_seed,
            threads=args.threads or None,
            device=args.device,
            progress=not args.no_progress,
        )
    print(f"\n{result.table}\nreport: {args.out}/report.md ({result.seconds / 60:.1f} min)")
    return 0
