"""Command line: `mask2anomaly <command> ...` (also `python -m mask2anomaly`).

Each command lives in a small module of this package with `register(subparsers)`, which adds its
parser and sets `func`. `main` is the one error boundary: errors the user can fix (a bad file,
flag or config value, a full disk, a folder in use) end in one line on stderr and exit status 2;
anything else is a bug, reported in one line with exit status 3 (`--debug`, or
MASK2ANOMALY_DEBUG=1, shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import UserError
from . import app, convert, demo, evaluate, export, outliers, predict, synth, train

EXIT_USER_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 2, 3, 130
DEBUG_ENV = "MASK2ANOMALY_DEBUG"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mask2anomaly",
        description="Mask2Anomaly road-scene anomaly segmentation (independent re-implementation).",
    )
    parser.add_argument("--version", action="version", version=f"mask2anomaly {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help=f"show tracebacks (also: {DEBUG_ENV}=1)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, convert, evaluate, train, outliers, synth, predict, export, app):
        module.register(subparsers)
    for command in subparsers.choices.values():  # --debug after the command too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks")  # fmt: skip
    return parser


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help, --version, or a bad flag (said in one line)
        return exit.code if isinstance(exit.code, int) else EXIT_USER_ERROR
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    prefix = f"mask2anomaly {args.command}: error:"
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        if debug:
            raise
        print(f"{prefix} {_one_line(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"mask2anomaly {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # the disk or the file system: full, read-only, permissions
        if debug:
            raise
        where = f"{error.filename}: " if error.filename else ""
        reason = error.strerror or _one_line(error)
        print(f"{prefix} {where}{reason}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as error:  # noqa: BLE001 — the boundary: a bug, said in one line
        if debug:
            raise
        print(
            f"mask2anomaly {args.command}: internal error (a bug, please report it): "
            f"{type(error).__name__}: {_one_line(error)} — run with --debug for the traceback",
            file=sys.stderr,
        )
        return EXIT_BUG
