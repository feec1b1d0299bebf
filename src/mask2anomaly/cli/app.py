"""`mask2anomaly app --weights CKPT`: look at a model in the browser (issue 18). The page and its
HTTP API: `app/page.py`; Gradio comes with the optional `app` extra."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
from pathlib import Path

from ..errors import UserError
from .common import add_device, add_max_pixels, add_overrides, bounded_float, bounded_int

APP_EXTRA_HINT = 'the app needs Gradio: pip install -e ".[app]"'
LOOPBACK = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app",
        help="a browser app over a checkpoint: images, videos, scores, a threshold slider, "
        "open-set map, instances",
        description="Serve a page (and its HTTP API) that shows the anomaly heat map with "
        "threshold contours (any of the package's scores), the semantic and open-set maps, the "
        "anomaly instances and the prediction time for an uploaded, pasted or built-in example "
        "image, and annotates videos. The model is loaded once; changing only the threshold, "
        "the view, refinement, the open-set map or components instances reuses the last "
        "prediction. Binds to "
        f"{LOOPBACK} unless --host says otherwise; no public link unless --share.",
    )
    parser.add_argument("--weights", required=True, help="native checkpoint (.pt)")
    parser.add_argument("--host", default=LOOPBACK, help=f"address to bind (default {LOOPBACK})")
    parser.add_argument("--port", type=bounded_int(1, 65535), default=7860, help="default 7860")
    parser.add_argument(
        "--share", action="store_true", help="also make a public Gradio link (off by default)"
    )
    parser.add_argument(
        "--calibration",
        metavar="JSON",
        help='initial threshold from a JSON file: {"threshold": T}, or the metrics.json of '
        "`mask2anomaly evaluate` (its first dataset's smiyc best-F1 threshold; the other "
        "scores start at their best-f1 operating point when it holds them)",
    )
    parser.add_argument(
        "--threshold",
        type=bounded_float(),
        metavar="T",
        help="initial threshold (default: from --calibration, else 0.5)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=bounded_float(0.001),
        default=50.0,
        metavar="MB",
        help="largest upload accepted, in MB (default 50)",
    )
    add_max_pixels(parser, "refuse images and video frames")
    add_device(parser)
    add_overrides(parser, "inference.min_size=512")
    parser.set_defaults(func=run)


def initial_threshold(args: argparse.Namespace) -> tuple[float, str]:
    """(threshold, where it came from): --threshold, else --calibration, else the default."""
    from ..app.analysis import DEFAULT_THRESHOLD, calibration_threshold

    if args.threshold is not None:
        return args.threshold, "--threshold"
    if args.calibration:
        value, where = calibration_threshold(args.calibration)
        return value, f"{args.calibration}: {where}"
    return DEFAULT_THRESHOLD, "default"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    threshold, source = initial_threshold(args)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError(APP_EXTRA_HINT) from None
    from ..app.analysis import Analyser
    from ..app.page import build_page, serve
    from ..distributed import resolve_device

    device = resolve_device(args.device)
    analyser = Analyser.from_checkpoint(args.weights, device=device, overrides=args.overrides)
    if not _is_loopback(args.host):
        print(
            f"mask2anomaly app: warning: serving on {args.host}: anyone who can reach this "
            "machine can use the app",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="mask2anomaly-app-") as work:
        page = build_page(
            analyser,
            Path(work),
            threshold=threshold,
            calibration=args.calibration,
            max_pixels=args.max_pixels,
            title=f"mask2anomaly · {Path(args.weights).name}",
        )
        print(f"mask2anomaly app: {args.weights} on {device}, threshold {threshold:g} ({source})")
        serve(
            page,
            host=args.host,
            port=args.port,
            share=args.share,
            max_upload_mb=args.max_upload_mb,
        )
    return 0
