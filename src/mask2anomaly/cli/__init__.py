"""Command line: `mask2anomaly <command> ...` (also `python -m mask2anomaly`).

Each command lives in a small module of this package with `register(subparsers)`, which adds its
parser and sets `func`. Errors the user can fix (bad files, bad config) end in one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import UserError
from . import convert, demo, evaluate, export, outliers, predict, synth, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mask2anomaly",
        description="Mask2Anomaly road-scene anomaly segmentation (independent re-implementation).",
    )
    parser.add_argument("--version", action="version", version=f"mask2anomaly {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, convert, evaluate, train, outliers, synth, predict, export):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"mask2anomaly {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mask2anomaly {args.command}: interrupted", file=sys.stderr)
        return 130
