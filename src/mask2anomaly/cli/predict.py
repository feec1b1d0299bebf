"""`mask2anomaly predict --weights CKPT INPUT... --out DIR`: anomaly maps and pictures for
images, folders, globs and videos (issue 7). Outputs and their encoding: `annotate.py`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..config import DEFAULT_SCORE, IGNORE_INDEX, OperatingPoint, ScoreName, choices
from ..errors import UserError
from .common import (
    add_device,
    add_max_pixels,
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
    _add_score_flags(parser)
    _add_instance_flags(parser)
    add_max_pixels(parser, "skip (with a warning) images")
    add_overwrite(parser)
    add_overrides(parser, "inference.min_size=512")
    parser.set_defaults(func=run)


def _add_score_flags(parser: argparse.ArgumentParser) -> None:
    """--score and the open-set flags."""
    parser.add_argument(
        "--score",
        choices=choices(ScoreName),
        default=DEFAULT_SCORE,
        metavar="NAME",
        help=f"anomaly score: {', '.join(choices(ScoreName))} (default {DEFAULT_SCORE}: Eq. 2)",
    )
    parser.add_argument(
        "--open-set",
        metavar="T",
        help="also write the open-set map: pixels whose score exceeds T become --unknown-label; "
        f"T is a number or an operating point ({', '.join(choices(OperatingPoint))}) read from "
        "--calibration",
    )
    parser.add_argument(
        "--calibration",
        metavar="METRICS_JSON",
        help="metrics.json of `mask2anomaly evaluate --score NAME` holding the thresholds of "
        "the operating points",
    )
    parser.add_argument(
        "--calibration-dataset",
        metavar="NAME",
        help="the dataset whose thresholds to use, when the calibration file holds several",
    )
    parser.add_argument(
        "--unknown-label",
        type=bounded_int(0, 255),
        default=IGNORE_INDEX,
        metavar="N",
        help=f"label of unknown pixels in the open-set map (default {IGNORE_INDEX})",
    )


def _add_instance_flags(parser: argparse.ArgumentParser) -> None:
    """--instances and its settings (issue 17)."""
    parser.add_argument(
        "--instances",
        choices=("components", "queries"),
        help="also write anomaly instances: connected components of score > "
        "--instance-threshold, or the model's own query masks whose mean score exceeds it",
    )
    parser.add_argument(
        "--instance-threshold",
        metavar="T",
        help="score threshold of --instances: a number or an operating point "
        f"({', '.join(choices(OperatingPoint))}) read from --calibration",
    )
    parser.add_argument(
        "--min-area",
        type=bounded_int(1),
        default=10,
        metavar="N",
        help="smallest instance in pixels (default 10, OoDIS's smallest evaluated region)",
    )
    parser.add_argument(
        "--instance-confidence",
        choices=("mean", "max"),
        default="mean",
        help="an instance's confidence: the mean (default) or max score inside",
    )
    parser.add_argument(
        "--format",
        choices=("coco", "oodis"),
        help="instance files: coco (default; <name>_instances.json beside the pictures) or "
        "oodis (the folder becomes an OoDIS submission folder: only its txt and mask files)",
    )


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
        predictor = Predictor(network, scoring=cfg.scoring, inference=cfg.inference,
                              batch_size=args.batch_size, scores=[args.score])  # fmt: skip
        return predictor, cfg, Path(args.onnx)
    if not args.weights:
        raise UserError("--weights CKPT is needed (or --backend onnxruntime --onnx MODEL.onnx)")
    device = resolve_device(args.device)
    cfg = load_checkpoint_config(args.weights, _overrides(args, device.type))
    model = load_model(args.weights, device=device)
    predictor = Predictor(model, scoring=cfg.scoring, inference=cfg.inference,
                          batch_size=args.batch_size, scores=[args.score])  # fmt: skip
    return predictor, cfg, Path(args.weights)


def _open_set_threshold(args: argparse.Namespace, cfg: Any) -> float | None:
    """The --open-set threshold: a number, or an operating point of --score read from
    --calibration; checked against the score's range (one-line errors)."""
    from ..evaluation.operating_points import OPERATING_POINTS
    from ..inference.prediction import check_threshold

    if args.open_set is None:
        for flag, value in (("--calibration", args.calibration),
                            ("--calibration-dataset", args.calibration_dataset)):  # fmt: skip
            if value is not None and args.instance_threshold not in OPERATING_POINTS:
                raise UserError(
                    f"{flag} is used with --open-set OPERATING_POINT only (or with "
                    "--instance-threshold OPERATING_POINT)"
                )
        return None
    threshold = _threshold_of(args, args.open_set, "--open-set")
    num_classes = cfg.model.num_classes
    check_threshold(args.score, threshold, num_classes, cfg.model.decoder.num_queries)
    if args.unknown_label < num_classes:
        raise UserError(
            f"--unknown-label {args.unknown_label} is a known class (0..{num_classes - 1}); "
            f"choose {num_classes}..255"
        )
    return threshold


def _threshold_of(args: argparse.Namespace, given: str, flag: str) -> float:
    """A threshold flag's value: a number, or an operating point of --score read from
    --calibration."""
    from ..evaluation.operating_points import OPERATING_POINTS, read_threshold

    if given in OPERATING_POINTS:
        if not args.calibration:
            raise UserError(
                f"{flag} {given} needs --calibration METRICS_JSON (the metrics.json "
                f"of `mask2anomaly evaluate --score {args.score}`)"
            )
        return read_threshold(args.calibration, args.score, given,
                              dataset=args.calibration_dataset)  # fmt: skip
    try:
        return float(given)
    except ValueError:
        raise UserError(
            f"{flag} {given!r}: expected a number or one of {', '.join(OPERATING_POINTS)}"
        ) from None


def _instance_options(args: argparse.Namespace, cfg: Any, inputs: list) -> Any:
    """InstanceOptions of the --instances flags (None without --instances), checked."""
    from ..inference.annotate import InstanceOptions
    from ..inference.prediction import check_threshold

    if args.instances is None:
        for flag, value in (("--instance-threshold", args.instance_threshold),
                            ("--format", args.format)):  # fmt: skip
            if value is not None:
                raise UserError(f"{flag} is used with --instances only")
        return None
    if args.instance_threshold is None:
        raise UserError(
            "--instances needs --instance-threshold T (a number, or tpr95 / fpr5 / best-f1 "
            "read from --calibration)"
        )
    threshold = _threshold_of(args, args.instance_threshold, "--instance-threshold")
    check_threshold(args.score, threshold, cfg.model.num_classes, cfg.model.decoder.num_queries)
    if args.format == "oodis":
        _check_oodis_inputs(args, inputs)
    return InstanceOptions(args.instances, threshold, args.min_area, args.instance_confidence,
                           args.format or "coco")  # fmt: skip


def _check_oodis_inputs(args: argparse.Namespace, inputs: list) -> None:
    """OoDIS takes images, one flat folder of distinct names, and nothing else in it."""
    from ..evaluation.oodis import check_oodis_folder, oodis_stem

    stems: dict[str, Any] = {}
    for item in inputs:
        if item.kind != "image":
            raise UserError(f"{item.path}: --format oodis takes images, not videos")
        other = stems.setdefault(oodis_stem(item.name), item.path)
        if other != item.path:
            raise UserError(f"{item.path}: same OoDIS name as {other} (one flat folder)")
    check_oodis_folder(Path(args.out))


def grow(bar: Any, frames: int) -> None:
    """Add a video's frames to the progress bar's total."""
    bar.total += frames
    bar.refresh()


def run(args: argparse.Namespace) -> int:

    from ..config import config_to_dict
    from ..fileio import OutputFolder, ensure_folder, file_digest
    from ..inference.annotate import OUTPUT_SECTIONS, AnnotateOptions
    from ..inference.media import discover_inputs
    from ..scoring.scores import display_range

    inputs, problems = discover_inputs(args.inputs)
    for problem in problems:
        _warn(problem)
    if not inputs:
        raise UserError("no images or videos to predict")
    ensure_folder(Path(args.out), "--out")
    predictor, cfg, network_file = _predictor(args)
    open_set = _open_set_threshold(args, cfg)
    instances = _instance_options(args, cfg, inputs)
    options = AnnotateOptions(
        threshold=args.threshold, batch_size=args.batch_size, max_pixels=args.max_pixels,
        open_set=open_set, unknown_label=args.unknown_label,
        display=display_range(args.score, cfg.model.num_classes), instances=instances,
    )  # fmt: skip
    settings: dict[str, Any] = {
        "network_sha256": file_digest(network_file),
        "config": {k: v for k, v in config_to_dict(cfg).items() if k in OUTPUT_SECTIONS},
        "threshold": args.threshold,
    }
    if args.score != DEFAULT_SCORE:  # folders of Eq. 2 keep their settings
        settings["score"] = args.score
    if open_set is not None:
        settings["open_set"] = {"threshold": open_set, "given": args.open_set,
                                "unknown_label": args.unknown_label}  # fmt: skip
    if instances is not None:
        settings["instances"] = {"method": instances.method, "threshold": instances.threshold,
                                 "given": args.instance_threshold, "min_area": instances.min_area,
                                 "confidence": instances.confidence,
                                 "format": instances.format}  # fmt: skip
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
