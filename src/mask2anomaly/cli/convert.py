"""`mask2anomaly convert OFFICIAL.pth OUT.pt`: official weights -> native checkpoint."""

from __future__ import annotations

import argparse

from .common import add_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert official Mask2Anomaly weights (.pth/.pkl) to a native checkpoint",
        description="Read an official Mask2Anomaly (detectron2) checkpoint — a bare state dict, "
        "{'model': ...}, a full training checkpoint or a .pkl — check that every key is "
        "used, and write a native checkpoint with its config inside.",
    )
    parser.add_argument("official", help="official weights file (.pth or .pkl)")
    parser.add_argument("out", help="native checkpoint to write (.pt)")
    add_overrides(parser)
    parser.add_argument(
        "--trusted",
        action="store_true",
        help="allow arbitrary pickled objects (only for files you trust)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import import_official, save_checkpoint

    model, cfg = import_official(args.official, overrides=args.overrides, trusted=args.trusted)
    save_checkpoint(args.out, model, cfg)
    num_params = sum(p.numel() for p in model.state_dict().values())
    print(
        f"wrote {args.out}: {num_params / 1e6:.1f} M values, "
        f"{cfg.model.num_classes} classes, {cfg.model.decoder.num_queries} queries, "
        f"{cfg.model.decoder.cross_attention} cross-attention"
    )
    return 0
