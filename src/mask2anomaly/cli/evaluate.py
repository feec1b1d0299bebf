"""`mask2anomaly evaluate` (run the model, store maps, score) and `mask2anomaly score` (score
maps saved by any method). Under torchrun, `evaluate` scores one shard of frames per process and
process 0 computes the metrics from all stored maps, so sharded = single-process results."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from ..config import DEFAULT_SCORE, ScoreName, choices
from ..errors import UserError
from ..evaluation.pixel_metrics import PROTOCOLS
from .common import (
    add_device,
    add_overrides,
    add_overwrite,
    add_precision,
    precision_overrides,
    throughput,
)
from .instances import add_instance_flags, with_instances


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
        "--subset",
        nargs="+",
        metavar="NAME",
        help="benchmark subset(s), one for all or one per --dataset: lost-and-found "
        "testNoKnown (default) / test / testValid / train / trainValid; road-anomaly-21 all "
        "(default) / validation / test; road-obstacle-21 all / test / validation / night / "
        "snowstorm",
    )
    parser.add_argument(
        "--image-root",
        nargs="+",
        metavar="DIR",
        help="base images of Fishyscapes (a LostAndFound / Cityscapes folder, or a flat "
        "folder of *_leftImg8bit images), one for all or one per --dataset",
    )
    parser.add_argument("--split", help="split folder of Cityscapes (default: val)")
    parser.add_argument("--label-map", help='label map of the folder adapter, e.g. "0:0,1:1"')
    parser.add_argument(
        "--track",
        choices=("anomaly", "obstacle"),
        help="component size limits for every dataset (default: each dataset's own track)",
    )
    parser.add_argument(
        "--float16",
        action="store_true",
        help="round scores to float16 (smiyc), as SMIYC stores maps",
    )
    parser.add_argument(
        "--submission",
        metavar="DIR",
        help="also write every frame's map (labelled or not) as a SMIYC submission: "
        "DIR/<AnomalyTrack-all|ObstacleTrack-all|LostAndFound-test>/<frame id>.hdf5 + "
        "manifest.json",
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
    add_precision(evaluate)
    evaluate.add_argument("--map-format", choices=("npy", "npz"), default="npy")
    evaluate.add_argument(
        "--score",
        nargs="+",
        choices=choices(ScoreName),
        default=[DEFAULT_SCORE],
        metavar="NAME",
        help="anomaly score(s), all from one model run per frame: "
        f"{', '.join(choices(ScoreName))} (default {DEFAULT_SCORE}: Eq. 2); one table row each",
    )
    add_overwrite(evaluate)
    _common(evaluate)
    add_instance_flags(evaluate)
    evaluate.set_defaults(func=run_evaluate)
    score = subparsers.add_parser(
        "score",
        help="compute anomaly metrics of stored maps (.npy/.npz/.png/.hdf5)",
        description="Reference evaluator: maps named <frame id>.<ext> in --maps (or in "
        "--maps/<dataset name> for several datasets), higher = more anomalous.",
    )
    score.add_argument("--maps", required=True, help="folder of anomaly maps")
    _common(score)
    add_instance_flags(score)
    score.set_defaults(func=run_score)


def _per_dataset(values: list[str] | None, count: int, flag: str) -> list[str | None]:
    """One value for every dataset, or one per dataset."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return [values[0]] * count
    if len(values) != count:
        raise UserError(f"{len(values)} {flag} values for {count} datasets (give 1 or {count})")
    return [*values]


def _datasets(args: argparse.Namespace) -> list:
    from ..data.benchmarks import load_benchmark, parse_label_map

    count = len(args.dataset)
    if count != len(args.root):
        raise UserError(f"{count} --dataset names but {len(args.root)} --root folders")
    subsets = _per_dataset(args.subset, count, "--subset")
    image_roots = _per_dataset(args.image_root, count, "--image-root")
    label_map = parse_label_map(args.label_map) if args.label_map else None
    instance_labels = _per_dataset(args.instance_labels, count, "--instance-labels")
    if not args.instances:
        for flag in ("instance_threshold", "instance_labels", "calibration", "calibration_dataset"):
            if getattr(args, flag) is not None:
                raise UserError(f"--{flag.replace('_', '-')} is used with --instances only")
    datasets = []
    for i, (name, root) in enumerate(zip(args.dataset, args.root, strict=True)):
        options = {"image_root": image_roots[i], "split": args.split, "subset": subsets[i]}
        if label_map is not None:
            options["label_map"] = label_map
        datasets.append(load_benchmark(name, root, **options))
        folder = instance_labels[i]
        if folder is not None:
            datasets[-1].use_instance_labels(folder)
    return datasets


def _check_submission(args: argparse.Namespace, datasets: list) -> None:
    """Fail before any work when --submission names datasets SMIYC does not take."""
    from ..evaluation.submission import submission_frames

    if args.submission:
        for dataset in datasets:
            submission_frames(dataset)


def _write_submission(args: argparse.Namespace, maps: list, about: dict) -> None:
    from ..evaluation.submission import write_submission

    counts = write_submission(Path(args.submission), maps, about)
    files = ", ".join(f"{folder} {n}" for folder, n in sorted(counts.items()))
    print(f"wrote SMIYC submission {args.submission} ({files} .hdf5 files)")


def _finish(args: argparse.Namespace, datasets: list, results: list) -> int:
    from ..evaluation.report import write_report
    from ..evaluation.results import AnomalyResult

    out = Path(args.out)
    write_report(out, results, datasets)
    for result in results:
        if isinstance(result, AnomalyResult):
            print(result.summary)
    print((out / "metrics.md").read_text(), end="")
    print(f"wrote {out / 'metrics.json'}")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from ..evaluation.driver import score_maps
    from ..fileio import ensure_folder

    ensure_folder(Path(args.out), "--out")
    datasets, results, folders = _datasets(args), [], []
    _check_submission(args, datasets)
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
        folders.append((dataset, maps))
        result = score_maps(
            maps, dataset, args.protocol, round_to_float16=args.float16, track=args.track
        )
        results.append(with_instances(args, dataset, maps, None, result))
    if args.submission:
        _write_submission(args, folders, {"maps": str(Path(args.maps).resolve())})
    return _finish(args, datasets, results)


def run_evaluate(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..checkpoint import load_checkpoint_config
    from ..config import config_to_dict
    from ..fileio import OutputFolder, ensure_folder, file_digest
    from ..inference.predictor import Predictor

    if not Path(args.weights).is_file():
        raise UserError(f"{args.weights}: checkpoint not found")
    ensure_folder(Path(args.out), "--out")
    ctx = distributed.setup(args.device)
    try:
        args.overrides = [*args.overrides, *precision_overrides(args.precision, ctx.device.type)]
        datasets = _datasets(args)
        _check_submission(args, datasets)
        cfg = load_checkpoint_config(args.weights, args.overrides)
        predictor = Predictor.from_checkpoint(
            args.weights, device=ctx.device, overrides=args.overrides, scores=args.score
        )
        settings = {
            "weights_sha256": file_digest(args.weights),
            "config": {k: v for k, v in config_to_dict(cfg).items() if k in MAP_SECTIONS},
            "map_format": args.map_format,
        }
        if list(args.score) != [DEFAULT_SCORE]:  # folders of Eq. 2 alone keep their settings
            settings["scores"] = list(args.score)
        if "queries" in (args.instances or ()):  # query masks are stored beside the maps
            settings["query_masks"] = True

        def folder(lock: bool) -> OutputFolder:
            return OutputFolder(args.out, command="evaluate", settings=settings,
                                replace=args.overwrite, lock=lock,
                                journal=f"journal-{ctx.rank}")  # fmt: skip

        if ctx.is_main:  # the main process checks the folder (and clears it) first
            with folder(lock=True) as out:
                distributed.barrier()
                _predict_maps(args, datasets, predictor, out, ctx)
                distributed.barrier()
                return _evaluate(args, datasets, predictor, out, cfg, settings)
        distributed.barrier()
        with folder(lock=False) as out:
            _predict_maps(args, datasets, predictor, out, ctx)
        distributed.barrier()
        return 0
    finally:
        distributed.teardown()


MAP_SECTIONS = ("model", "scoring", "inference")  # the config sections the maps depend on


def _predict_maps(args: argparse.Namespace, datasets: list, predictor, out, ctx) -> None:
    from ..evaluation.driver import store_maps

    queries = "queries" in (args.instances or ())
    frames, started = 0, time.perf_counter()

    def maps(image):
        nonlocal frames
        frames += 1
        if queries:  # the query masks are stored too
            prediction = predictor.predict(image, return_query_masks=True)
            return prediction.maps, prediction.semantic, prediction.query_masks
        prediction = predictor.predict(image)
        return prediction.maps, prediction.semantic

    for dataset in datasets:
        if dataset.track is not None:
            store_maps(dataset, maps, out, args.score, map_format=args.map_format,
                       shard=(ctx.rank, ctx.world_size), semantic=True,
                       query_masks=queries)  # fmt: skip
    if ctx.is_main:
        print(throughput(frames, time.perf_counter() - started))


def _evaluate(args: argparse.Namespace, datasets: list, predictor, out, cfg, settings) -> int:
    from ..config import config_to_dict
    from ..evaluation.driver import evaluate_semantic
    from ..evaluation.results import AnomalyResult, SemanticResult

    if args.submission:
        about = {
            "weights": str(Path(args.weights).resolve()),
            "weights_sha256": settings["weights_sha256"],
            "config": config_to_dict(cfg),
        }
        if args.score[0] != DEFAULT_SCORE:
            about["score"] = args.score[0]
        from ..evaluation.driver import maps_folder

        anomaly = [d for d in datasets if d.track is not None]
        folders = [(d, maps_folder(out.root, d.name, args.score[0])) for d in anomaly]
        _write_submission(args, folders, about)
    results: list[AnomalyResult | SemanticResult] = []
    for dataset in datasets:
        if dataset.track is None:
            segment = lambda image: predictor.predict(image).semantic  # noqa: E731
            results.append(evaluate_semantic(dataset, segment))
            continue
        for score in args.score:
            result = _score_result(args, dataset, out.root, score, cfg.model.num_classes)
            if score == args.score[0]:  # instances of the first score
                result = with_instances(args, dataset, out.root, cfg, result)
            results.append(result)
    return _finish(args, datasets, results)


def _score_result(args: argparse.Namespace, dataset, root: Path, score: str, num_classes: int):
    """One score's metrics on one dataset: pixel, component, operating points, open-set."""
    from ..evaluation.driver import maps_folder, open_set_metrics, score_maps, semantic_folder

    folder = maps_folder(root, dataset.name, score)
    result = score_maps(folder, dataset, args.protocol, round_to_float16=args.float16,
                        track=args.track)  # fmt: skip
    open_set = open_set_metrics(folder, semantic_folder(root, dataset.name), dataset,
                                result.operating_points, num_classes)  # fmt: skip
    return dataclasses.replace(result, score=score, open_set=open_set)
