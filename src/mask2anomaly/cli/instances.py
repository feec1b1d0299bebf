"""The instance flags of `mask2anomaly evaluate` and `score` (issue 17): instance AP / AP50 of
each --instances method, at a threshold given or read from an operating point."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from ..config import DEFAULT_SCORE
from ..errors import UserError
from .common import bounded_int


def add_instance_flags(parser: argparse.ArgumentParser) -> None:
    """Instance AP / AP50 (issue 17)."""
    parser.add_argument(
        "--instances",
        nargs="+",
        choices=("components", "queries"),
        metavar="METHOD",
        help="also report instance AP / AP50 as OoDIS computes them, of anomaly instances by "
        "connected components of the map (components) or by the model's query masks "
        "(queries; evaluate only)",
    )
    parser.add_argument(
        "--instance-threshold",
        metavar="T",
        help="score threshold of the instances: a number, or an operating point (tpr95, fpr5, "
        "best-f1) of each dataset in this evaluation or, with --calibration, of that file "
        "(default best-f1, as the SMIYC component metrics)",
    )
    parser.add_argument(
        "--instance-labels",
        nargs="+",
        metavar="DIR",
        help="ground-truth instances in the Cityscapes instanceIds encoding (<frame id>"
        "_instanceIds.png below DIR), one DIR for all or one per --dataset; frames without "
        "instance labels use the connected components of their anomaly label",
    )
    parser.add_argument(
        "--min-area", type=bounded_int(1), default=10, metavar="N",
        help="smallest predicted instance in pixels (default 10)",
    )  # fmt: skip
    parser.add_argument(
        "--instance-confidence", choices=("mean", "max"), default="mean",
        help="an instance's confidence: mean (default) or max score inside",
    )  # fmt: skip
    parser.add_argument(
        "--calibration", metavar="METRICS_JSON",
        help="metrics.json whose operating point is --instance-threshold",
    )  # fmt: skip
    parser.add_argument(
        "--calibration-dataset", metavar="NAME",
        help="the dataset of --calibration, when it holds several",
    )  # fmt: skip


def with_instances(args: argparse.Namespace, dataset, where: Path, cfg, result):
    """`result` with the instance AP / AP50 of each --instances method: from the maps of an
    evaluation folder `where` (cfg: its model's config), or of a --maps folder (cfg None)."""
    from ..evaluation.driver import maps_folder
    from ..evaluation.instance_scoring import instance_results, queries_folder

    if not args.instances:
        return result
    if cfg is None and "queries" in args.instances:
        raise UserError("--instances queries needs the model: use `mask2anomaly evaluate`")
    threshold, given = _instance_threshold(args, dataset, result, cfg)
    score = args.score[0] if cfg is not None else DEFAULT_SCORE
    maps = maps_folder(where, dataset.name, score) if cfg is not None else where
    found = instance_results(
        maps, dataset, list(dict.fromkeys(args.instances)), threshold,
        queries_dir=queries_folder(where, dataset.name), min_area=args.min_area,
        confidence=args.instance_confidence, threshold_from=given,
    )  # fmt: skip
    return dataclasses.replace(result, instances=found)


def _instance_threshold(args: argparse.Namespace, dataset, result, cfg) -> tuple[float, str]:
    """(threshold, where it comes from) of --instance-threshold (default best-f1)."""

    from ..evaluation.operating_points import OPERATING_POINTS, read_threshold

    given = args.instance_threshold or "best-f1"
    score = args.score[0] if cfg is not None else DEFAULT_SCORE
    if given in OPERATING_POINTS:
        if args.calibration:
            value = read_threshold(args.calibration, score, given,
                                   dataset=args.calibration_dataset)  # fmt: skip
            return value, f"{given} of {args.calibration}"
        value = result.operating_points.get(given, math.nan)
        if math.isnan(value):
            raise UserError(f"{dataset.name}: no {given} threshold (no anomaly pixels); give "
                            "--instance-threshold T")  # fmt: skip
        return value, f"{given} of {dataset.name}"
    try:
        value = float(given)
    except ValueError:
        raise UserError(f"--instance-threshold {given!r}: expected a number or one of "
                        f"{', '.join(OPERATING_POINTS)}") from None  # fmt: skip
    if cfg is not None:
        from ..inference.prediction import check_threshold

        check_threshold(score, value, cfg.model.num_classes, cfg.model.decoder.num_queries)
    return value, "given"
