"""`mask2anomaly predict --weights CKPT INPUT... --out DIR`: anomaly maps and pictures for
images, folders, globs and videos (issue 7). Outputs and their encoding: `annotate.py`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import (
    add_device,
    add_overrides,
    add_overwrite,
    add_precision,
    bounded_float,
    bounded_int,
    precision_overrides,
    throughput,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="anomaly maps, heat maps and semantic maps for your images and videos",
        description="For every image (and every frame of a video): the anomaly map as float16 "
        ".npy and 16-bit PNG (score * 65535), a heat-map overlay, the semantic map in "
        "Cityscapes colours and a side-by-side panel; for a video also an annotated video at "
        "its frame rate. A re-run resumes: frames done with the same weights, settings and "
        "input are skipped, changed inputs are redone, and other weights or settings are "
        "refused (--overwrite replaces them).",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image/video files, folders, globs"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--weights", help="native checkpoint (.pt); optional with --onnx")
    parser.add_argument(
        "--backend", choices=("torch", "onnxruntime"), default="torch", help="network runtime"
    )
    parser.add_argument("--onnx", help="model exported by `mask2anomaly export` (onnxruntime)")
    add_device(parser)
    parser.add_argument(
        "--batch-size", type=bounded_int(1), default=1, help="frames predicted together"
    )
    add_precision(parser)
    parser.add_argument("--half", action="store_true", help="the same as --precision fp16")
    parser.add_argument("--no-flip", action="store_true", help="no horizontal-flip averaging")
    parser.add_argument("--no-refine", action="store_true", help="no refinement mask")
    parser.add_argument(
        "--threshold",
        type=bounded_float(),
        metavar="T",
        help="draw contours of anomaly score >= T",
    )
    parser.add_argument(
        "--max-pixels",
        type=bounded_int(1),
        default=150_000_000,
        metavar="N",
        help="skip (with a warning) images with more pixels than this (default 150000000)",
    )
    add_overwrite(parser)
    add_overrides(parser, "inference.min_size=512")
    parser.set_defaults(func=run)


def _warn(message: str) -> None:
    print(f"mask2anomaly predict: warning: {message}", file=sys.stderr)


def _overrides(args: argparse.Namespace, device_type: str) -> list[str]:
    overrides = list(args.overrides)
    if args.no_flip:
        overrides.append("inference.flip=False")
    if args.no_refine:
        overrides.append("scoring.refinement=none")
    if args.half and args.precision:
        raise UserError("--half and --precision: give one of them")
    overrides += precision_overrides(args.precision, device_type)
    if args.half:
        if device_type in ("cuda", "mps"):
            overrides.append("inference.precision=fp16")
        else:
            _warn(f"--half needs a GPU; running in float32 on {device_type}")
    return overrides


def _predictor(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """(Predictor over the torch model or the ONNX network with the flags applied, its config,
    the file of its network)."""
    from ..checkpoint import load_checkpoint_config, load_model
    from ..distributed import resolve_device
    from ..inference.predictor import Predictor

    if args.backend == "onnxruntime":
        from ..inference.export import OnnxNetwork

        if not args.onnx:
            raise UserError("--backend onnxruntime needs --onnx MODEL.onnx")
        if args.precision not in (None, "fp32"):
            raise UserError(f"--precision {args.precision}: the onnxruntime backend runs fp32")
        network = OnnxNetwork(args.onnx)
        base = load_checkpoint_config(args.weights) if args.weights else network.config
        cfg = base.with_overrides([*_overrides(args, "cpu"), "inference.precision=fp32"])
        predictor = Predictor(
            network, scoring=cfg.scoring, inference=cfg.inference, batch_size=args.batch_size
        )
        return predictor, cfg, Path(args.onnx)
    if not args.weights:
        raise UserError("--weights CKPT is needed (or --backend onnxruntime --onnx MODEL.onnx)")
    device = resolve_device(args.device)
    cfg = load_checkpoint_config(args.weights, _overrides(args, device.type))
    model = load_model(args.weights, device=device)
    predictor = Predictor(
        model, scoring=cfg.scoring, inference=cfg.inference, batch_size=args.batch_size
    )
    return predictor, cfg, Path(args.weights)


def grow(bar: Any, frames: int) -> None:
    """Add a video's frames to the progress bar's total."""
    bar.total += frames
    bar.refresh()


def run(args: argparse.Namespace) -> int:

    from ..config import config_to_dict
    from ..fileio import OutputFolder, ensure_folder, file_digest
    from ..inference.annotate import OUTPUT_SECTIONS, AnnotateOptions
    from ..inference.media import discover_inputs

    inputs, problems = discover_inputs(args.inputs)
    for problem in problems:
        _warn(problem)
    if not inputs:
        raise UserError("no images or videos to predict")
    ensure_folder(Path(args.out), "--out")
    predictor, cfg, network_file = _predictor(args)
    options = AnnotateOptions(
        threshold=args.threshold, batch_size=args.batch_size, max_pixels=args.max_pixels
    )
    settings = {
        "network_sha256": file_digest(network_file),
        "config": {k: v for k, v in config_to_dict(cfg).items() if k in OUTPUT_SECTIONS},
        "threshold": args.threshold,
    }
    with OutputFolder(
        args.out, command="predict", settings=settings, replace=args.overwrite
    ) as out:
        return _annotate(predictor, inputs, out, options, len(problems))


def _annotate(predictor: Any, inputs: list, out: Any, options: Any, failures: int) -> int:
    from tqdm import tqdm

    from ..inference.annotate import annotate_images, annotate_video

    images = [item for item in inputs if item.kind == "image"]

    def failed(message: str) -> None:
        nonlocal failures
        failures += 1
        tqdm.write(f"mask2anomaly predict: warning: {message}", file=sys.stderr)

    predicted, started = 0, time.perf_counter()
    with tqdm(total=len(images), unit="frame", desc="predict", file=sys.stderr) as bar:
        predicted += annotate_images(
            predictor, images, out, options, on_error=failed, on_frame=lambda: bar.update()
        )
        for item in (item for item in inputs if item.kind == "video"):
            try:
                predicted += annotate_video(
                    predictor,
                    item,
                    out,
                    options,
                    on_frame=lambda: bar.update(),
                    on_open=lambda n: grow(bar, n),
                )
            except UserError as error:
                failed(str(error))
    print(f"predicted {predicted} frames of {len(inputs)} inputs into {out.root}", end="")
    print(f" ({failures} problems, see warnings above)" if failures else "")
    print(throughput(predicted, time.perf_counter() - started))
    return 1 if failures else 0
