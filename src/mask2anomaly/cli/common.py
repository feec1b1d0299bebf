"""Options several commands share, and the checked value types of their flags, defined once."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..errors import UserError
from ..inference.media import DEFAULT_MAX_PIXELS


def add_overrides(parser: argparse.ArgumentParser, example: str = "train.lr=1e-5") -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"config override (repeatable), e.g. {example}",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_max_pixels(parser: argparse.ArgumentParser, what: str) -> None:
    """--max-pixels: `what` happens to images (and frames) with more pixels than the limit."""
    parser.add_argument(
        "--max-pixels",
        type=bounded_int(1),
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"{what} with more pixels than this (default {DEFAULT_MAX_PIXELS})",
    )


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs in --out made with other weights, settings or inputs "
        "(without it such a folder is refused; matching outputs are always resumed)",
    )


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            limits = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"{value} is not {limits}")
        return value

    parse.__name__ = "integer"
    return parse


def bounded_float(low: float = -math.inf, high: float = math.inf) -> Callable[[str], float]:
    """argparse type: a finite number in [low, high] (no nan, no inf)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            limits = "finite" if math.isinf(low) and math.isinf(high) else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"{text} is not a {limits} number")
        return value

    parse.__name__ = "number"
    return parse


PRECISIONS = ("fp32", "bf16", "tf32", "fp16")
GPU_ONLY_PRECISIONS = ("tf32", "fp16")


def add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="numbers the network runs in: fp32 (default; the official outputs), bf16 (on a "
        "CPU a bfloat16 copy of the network, several times faster, maps within ~1e-2), "
        "tf32 / fp16 (GPUs only)",
    )


def precision_overrides(precision: str | None, device_type: str) -> list[str]:
    """The config override of --precision, refused where the device cannot run it."""
    if precision is None:
        return []
    if precision in GPU_ONLY_PRECISIONS and device_type != "cuda":
        raise UserError(f"--precision {precision} needs a CUDA GPU; on {device_type} use fp32 "
                        "or bf16")  # fmt: skip
    return [f"inference.precision={precision}"]


def throughput(frames: int, seconds: float) -> str:
    """The speed line a command prints at its end: frames predicted over wall-clock seconds
    (reading, predicting and writing)."""
    if not frames:
        return "no frames predicted (all were done already)"
    rate = frames / seconds if seconds > 0 else math.inf
    return (f"{frames} frames in {seconds:.1f} s: {rate:.2f} images/s "
            f"({seconds / frames:.2f} s per image)")  # fmt: skip
