"""`mask2anomaly evaluate` (run the model, store maps, score) and `mask2anomaly score` (score
maps saved by any method). Under torchrun, `evaluate` scores one shard of frames per process and
process 0 computes the metrics from all stored maps, so sharded = single-process results."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..evaluation.pixel_metrics import PROTOCOLS
from .common import add_device, add_overrides


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        nargs="+",
        required=True,
        metavar="NAME",
        help="benchmark adapter(s): road-anomaly-21, road-obstacle-21, "
        "lost-and-found, fs-lost-and-found, fs-static, road-anomaly, m2a, "
        "m2a-road-anomaly, cityscapes, folder",
    )
    parser.add_argument(
        "--root",
        nargs="+",
        required=True,
        metavar="DIR",
        help="dataset folder(s), one per --dataset",
    )
    parser.add_argument(
        "--protocol",
        nargs="+",
        choices=PROTOCOLS,
        default=list(PROTOCOLS),
        help="metric protocol(s) (default: all)",
    )
    parser.add_argument("--out", required=True, help="output folder (metrics, report, maps)")
    parser.add_argument(
        "--image-root", help="base images of Fishyscapes (LostAndFound / Cityscapes root)"
    )
    parser.add_argument("--split", help="split folder of LostAndFound / Cityscapes")
    parser.add_argument("--label-map", help='label map of the folder adapter, e.g. "0:0,1:1"')
    parser.add_argument(
        "--track",
        choices=("anomaly", "obstacle"),
        help="component size limits (default: the dataset's track)",
    )
    parser.add_argument(
        "--float16",
        action="store_true",
        help="round scores to float16 (smiyc), as SMIYC stores maps",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="run a model on benchmark datasets and compute anomaly metrics",
        description="Store one float16 anomaly map per frame (resuming an interrupted run), "
        "then write metrics.json, metrics.md, PR/ROC curves and worst-frame overlays.",
    )
    evaluate.add_argument("--weights", required=True, help="native checkpoint (.pt)")
    add_device(evaluate)
    add_overrides(evaluate)
    evaluate.add_argument("--map-format", choices=("npy", "npz"), default="npy")
    _common(evaluate)
    evaluate.set_defaults(func=run_evaluate)
    score = subparsers.add_parser(
        "score",
        help="compute anomaly metrics of stored maps (.npy/.npz/.png/.hdf5)",
        description="Reference evaluator: maps named <frame id>.<ext> in --maps (or in "
        "--maps/<dataset name> for several datasets), higher = more anomalous.",
    )
    score.add_argument("--maps", required=True, help="folder of anomaly maps")
    _common(score)
    score.set_defaults(func=run_score)


def _datasets(args: argparse.Namespace) -> list:
    from ..data.benchmarks import load_benchmark, parse_label_map

    if len(args.dataset) != len(args.root):
        raise UserError(f"{len(args.dataset)} --dataset names but {len(args.root)} --root folders")
    options = {"image_root": args.image_root, "split": args.split}
    if args.label_map:
        options["label_map"] = parse_label_map(args.label_map)
    return [load_benchmark(n, r, **options) for n, r in zip(args.dataset, args.root, strict=True)]


def _finish(args: argparse.Namespace, datasets: list, results: list) -> int:
    from ..evaluation.report import write_report

    out = Path(args.out)
    write_report(out, results, datasets)
    print((out / "metrics.md").read_text(), end="")
    print(f"wrote {out / 'metrics.json'}")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from ..evaluation.driver import score_maps

    datasets, results = _datasets(args), []
    for dataset in datasets:
        maps = Path(args.maps)
        if (maps / dataset.name).is_dir():
            maps = maps / dataset.name
        elif len(datasets) > 1:
            raise UserError(
                f"{maps / dataset.name}: missing (several datasets need one folder each)"
            )
        if not maps.is_dir():
            raise UserError(f"{maps}: maps folder not found")
        results.append(
            score_maps(
                maps, dataset, args.protocol, round_to_float16=args.float16, track=args.track
            )
        )
    return _finish(args, datasets, results)


def run_evaluate(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..evaluation.driver import evaluate_semantic, score_dataset, score_maps
    from ..evaluation.results import AnomalyResult, SemanticResult
    from ..inference.predictor import Predictor

    if not Path(args.weights).is_file():
        raise UserError(f"{args.weights}: checkpoint not found")
    ctx = distributed.setup(args.device)
    try:
        datasets = _datasets(args)
        predictor = Predictor.from_checkpoint(
            args.weights, device=ctx.device, overrides=args.overrides
        )
        out = Path(args.out)
        for dataset in datasets:
            if dataset.track is not None:
                score_dataset(
                    dataset,
                    lambda image: predictor.predict(image).anomaly_score,
                    out,
                    map_format=args.map_format,
                    shard=(ctx.rank, ctx.world_size),
                    compute_metrics=False,
                )
        distributed.barrier()
        if not ctx.is_main:
            return 0
        results: list[AnomalyResult | SemanticResult] = []
        for dataset in datasets:
            if dataset.track is None:
                segment = lambda image: predictor.predict(image).semantic  # noqa: E731
                results.append(evaluate_semantic(dataset, segment))
            else:
                results.append(
                    score_maps(
                        out / "maps" / dataset.name,
                        dataset,
                        args.protocol,
                        round_to_float16=args.float16,
                        track=args.track,
                    )
                )
        return _finish(args, datasets, results)
    finally:
        distributed.teardown()
