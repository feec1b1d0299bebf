"""Evaluation driver: score a benchmark with any score function, store the maps, compute metrics.

Issue 3 / spec ../shared/spec/benchmarks.md A-E. `score_dataset` runs a score function over a
dataset and stores each anomaly map as float16 (as SMIYC does, A.1), resuming where it stopped;
`score_maps` computes the metrics of stored maps from any method (.npy, .npz, 16-bit .png, SMIYC
.hdf5): pixel metrics per protocol, then the SMIYC component metrics at the smiyc pixel-F1-optimal
threshold, and the operating-point thresholds. `store_maps` stores several scores' maps of one
model run per frame (and its semantic prediction), `open_set_metrics` scores them as ISSU does.
Report files (json, Markdown, curves, overlays) are written by `report.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..config import DEFAULT_SCORE, TrackName
from ..data.benchmarks import Benchmark
from ..data.io import read_label_map
from ..data.layouts import Frame
from ..errors import UserError
from ..fileio import OutputFolder, file_signature, save_image_atomic
from .component_metrics import TRACKS, ComponentMetrics, ComponentResult
from .instance_scoring import queries_folder, save_query_masks
from .maps import MapFolder, load_map, save_map
from .open_set_metrics import OpenSetIoU, OpenSetMetrics, open_set_label
from .operating_points import operating_points
from .pixel_metrics import ExactPixelMetrics, PixelMetrics, make_pixel_metrics
from .results import AnomalyResult, SemanticResult, WorstFrame
from .semantic_metrics import ConfusionMatrix

log = logging.getLogger(__name__)

NUM_WORST_FRAMES = 4  # frames with the lowest per-frame AP get an overlay in the report


def score_dataset(
    dataset: Benchmark,
    score_fn: Callable[[np.ndarray], np.ndarray],
    out: OutputFolder | str | Path,
    *,
    protocols: Sequence[str] = ("smiyc",),
    map_format: str = "npy",
    shard: tuple[int, int] = (0, 1),
    compute_metrics: bool = True,
    settings: dict[str, Any] | None = None,
) -> AnomalyResult | None:
    """Score every frame not stored yet (with or without label), then compute the metrics of
    the labelled frames from the stored maps.

    Args:
        score_fn: image uint8 [H, W, 3] RGB -> float32 [H, W] anomaly map (higher = anomaly).
        out: output folder (an open `OutputFolder`, or a path opened here with `settings`);
            maps go to <out>/maps/<dataset name>/<frame id>.<map_format>, and a frame is
            scored again when its image changed or its map is not the one journalled.
        shard: (rank, world size): this process scores frames rank, rank + world, ...
        compute_metrics: False under sharding for all but one process.
        settings: what `score_fn` is (weights digest, config), when `out` is a path: a folder
            scored with other settings is refused.

    Returns:
        the result of `score_maps`, or None when compute_metrics is False.
    """
    if not isinstance(out, OutputFolder):
        with OutputFolder(out, command="score_dataset", settings=settings or {}) as folder:
            return score_dataset(dataset, score_fn, folder, protocols=protocols,
                                 map_format=map_format, shard=shard,
                                 compute_metrics=compute_metrics)  # fmt: skip
    store_maps(
        dataset, lambda image: ({DEFAULT_SCORE: score_fn(image)}, None), out, (DEFAULT_SCORE,),
        map_format=map_format, shard=shard,
    )  # fmt: skip
    if not compute_metrics:
        return None
    return score_maps(maps_folder(out.root, dataset.name), dataset, protocols)


def maps_folder(root: Path, dataset: str, score: str = DEFAULT_SCORE) -> Path:
    """Where an evaluation keeps one score's maps of a dataset: <root>/maps/<dataset> for
    Eq. 2 (`mask2anomaly`), <root>/maps/<score>/<dataset> for the other scores."""
    return root / "maps" / dataset if score == DEFAULT_SCORE else root / "maps" / score / dataset


def semantic_folder(root: Path, dataset: str) -> Path:
    """Where an evaluation keeps the closed-set semantic predictions (uint8 PNG train IDs) of a
    dataset's frames that have semantic labels (for open-set metrics)."""
    return root / "semantic" / dataset


# image -> ({score: map}, semantic or None[, query masks bool [Q, H, W] with query_masks=True])
MapsFn = Callable[[np.ndarray], tuple[Any, ...]]


def store_maps(
    dataset: Benchmark,
    predict_fn: MapsFn,
    out: OutputFolder,
    scores: Sequence[str],
    *,
    map_format: str = "npy",
    shard: tuple[int, int] = (0, 1),
    semantic: bool = False,
    query_masks: bool = False,
) -> None:
    """Store every score's map (`maps_folder`) of every frame not stored yet, and with
    `semantic` the semantic prediction of the frames with a semantic label (`semantic_folder`),
    with `query_masks` the binarised query masks of every frame (`instance_scoring.py`).

    Args:
        predict_fn: image uint8 [H, W, 3] -> ({score: float32 [H, W]}, semantic uint8 [H, W]
            or None): one model run gives every map of a frame.
        shard: (rank, world size): this process stores frames rank, rank + world, ...
    """
    rank, world = shard
    with_semantic = set(dataset.with_semantic) if semantic else set()
    signatures = {i: frame_signature(dataset.frames[i]) for i in range(rank, len(dataset), world)}

    def paths(i: int) -> list[Path]:
        frame_id = dataset.frames[i].frame_id
        found = [
            maps_folder(out.root, dataset.name, s) / f"{frame_id}.{map_format}" for s in scores
        ]
        if i in with_semantic:
            found.append(semantic_folder(out.root, dataset.name) / f"{frame_id}.png")
        if query_masks:
            found.append(queries_folder(out.root, dataset.name) / f"{frame_id}.json")
        return found

    def done(i: int) -> bool:
        return out.is_done(frame_key(dataset, i), signatures[i]) and all(
            path.is_file() for path in paths(i)
        )

    todo = [i for i in signatures if not done(i)]
    for i in tqdm(todo, desc=f"{dataset.name} [{rank}/{world}]", unit="frame", disable=None):
        frame = dataset.frames[i]
        image = dataset.load_image(i)
        maps, labels, *extra = predict_fn(image)
        files = paths(i)
        for score, path in zip(scores, files, strict=False):
            _save_checked(path, np.asarray(maps[score]), image.shape[:2], frame)
        if i in with_semantic:
            if labels is None or labels.shape != image.shape[:2]:
                raise UserError(f"{frame.image_path}: no semantic prediction of the image's size")
            save_image_atomic(files[len(scores)], np.asarray(labels, np.uint8))
        if query_masks:
            save_query_masks(files[-1], extra[0])
        out.mark_done(frame_key(dataset, i), signatures[i], files)


def _save_checked(path: Path, score: np.ndarray, size: tuple[int, ...], frame: Frame) -> None:
    if score.shape != size:
        raise UserError(f"{frame.image_path}: anomaly map {score.shape} != image {size}")
    if not np.isfinite(score).all():
        raise UserError(f"{frame.image_path}: the anomaly map holds NaN or inf")
    for other in path.parent.glob(f"{frame.frame_id}.*"):
        other.unlink()  # a map of another format would make the frame ambiguous
    save_map(path, score)


def frame_key(dataset: Benchmark, index: int) -> str:
    return f"{dataset.name}/{dataset.frames[index].frame_id}"


def frame_signature(frame: Frame) -> list[list[int]]:
    """The frame's input files as they are now (size, modification time)."""
    return file_signature(frame.image_path, frame.overlay_path)


def _frames(
    maps: MapFolder, dataset: Benchmark, desc: str
) -> Iterator[tuple[int, Path, np.ndarray, np.ndarray]]:
    """(index, map path, score [H, W], label [H, W]) of every labelled frame, checked."""
    for i in tqdm(dataset.labelled, desc=desc, unit="frame", disable=None):
        frame = dataset.frames[i]
        path = maps.find(frame)
        score, label = load_map(path), dataset.load_label(i)
        if score.shape != label.shape:
            raise UserError(
                f"{path}: map size {score.shape} != label size {label.shape} ({frame.label_path})"
            )
        yield i, path, score, label


def score_maps(
    maps_dir: str | Path,
    dataset: Benchmark,
    protocols: Sequence[str] = ("smiyc", "exact", "mask2anomaly"),
    *,
    round_to_float16: bool = False,
    track: TrackName | None = None,
) -> AnomalyResult:
    """Metrics of stored maps (any method) for the labelled frames of a dataset: the reference
    evaluator. Frames without a label are left out (predicted only); a protocol that finds no
    evaluable pixel is skipped with a note.

    Args:
        maps_dir: folder with one map per frame (names: `MapFolder.names`; searched below too).
        round_to_float16: round scores to float16 first (smiyc), as SMIYC stores maps.
        track: component size limits ("anomaly" / "obstacle"); default: the dataset's own.

    Returns:
        pixel metrics per protocol (with curves), component metrics (smiyc only), worst frames.
    """
    maps = MapFolder(Path(maps_dir))
    accumulators = {p: make_pixel_metrics(p, round_to_float16=round_to_float16) for p in protocols}
    exact = accumulators.get("exact")
    curve = exact if isinstance(exact, ExactPixelMetrics) else ExactPixelMetrics("exact")
    per_frame = []
    for i, path, score, label in _frames(maps, dataset, f"{dataset.name} pixel metrics"):
        try:
            for accumulator in {*accumulators.values(), curve}:
                accumulator.update(score, label, index=i)
            per_frame.append((_frame_ap(score, label), dataset.frames[i].frame_id, str(path)))
        except ValueError as error:
            raise UserError(f"{path}: {error}") from None
    pixel, notes = {}, []
    for protocol, accumulator in accumulators.items():
        try:
            pixel[protocol] = accumulator.compute()
        except ValueError as error:  # no frame with evaluated pixels
            notes.append(f"{protocol}: skipped ({error})")
    worst = sorted(f for f in per_frame if not np.isnan(f[0]))[:NUM_WORST_FRAMES]
    track = track or dataset.track
    components = _components(maps, dataset, pixel, track, round_to_float16)
    return AnomalyResult(
        dataset=dataset.name,
        num_frames=len(dataset),
        num_scored=len(dataset.labelled),
        subset=dataset.subset,
        pixel=pixel,
        components=components,
        track=track if components is not None else None,
        worst_frames=tuple(WorstFrame(fid, path, ap) for ap, fid, path in worst),
        unmapped_pixels=dict(dataset.unmapped_pixels),
        notes=tuple(notes),
        operating_points=operating_points(curve.curve_points(), *curve.counts()),
    )


def _components(
    maps: MapFolder,
    dataset: Benchmark,
    pixel: Mapping[str, PixelMetrics],
    track: TrackName | None,
    round_to_float16: bool,
) -> ComponentResult | None:
    """SMIYC component metrics at the smiyc pixel-F1-optimal threshold (None: not computed)."""
    if "smiyc" not in pixel or track is None or pixel["smiyc"].num_pos == 0:
        return None
    segments = ComponentMetrics(pixel["smiyc"].best_f1_threshold, TRACKS[track])
    for _, _, score, label in _frames(maps, dataset, f"{dataset.name} components"):
        segments.update(score.astype(np.float16) if round_to_float16 else score, label)
    return segments.compute()


def open_set_metrics(
    maps_dir: Path,
    semantic_dir: Path,
    dataset: Benchmark,
    thresholds: Mapping[str, float],
    num_classes: int,
) -> OpenSetMetrics | None:
    """ISSU open-set and closed-set mIoU (`open_set_metrics.py`) of the frames with both labels,
    from stored maps and semantic predictions (`store_maps`); None when no frame has both."""
    if not dataset.with_semantic:
        return None
    maps = MapFolder(maps_dir)
    metric = OpenSetIoU(num_classes, thresholds)
    for i in tqdm(dataset.with_semantic, desc=f"{dataset.name} open-set", unit="frame",
                  disable=None):  # fmt: skip
        frame = dataset.frames[i]
        path = semantic_dir / f"{frame.frame_id}.png"
        if not path.is_file():
            raise UserError(f"{path}: semantic prediction missing (run evaluate again)")
        label = open_set_label(dataset.load_semantic(i), dataset.load_label(i), num_classes)
        try:
            metric.update(load_map(maps.find(frame)), read_label_map(path), label)
        except ValueError as error:
            raise UserError(f"{path}: {error}") from None
    return metric.compute()


def _frame_ap(score: np.ndarray, label: np.ndarray) -> float:
    """Exact AP of one frame (NaN without anomaly pixels), to pick the worst frames."""
    if not (label == 1).any():
        return float("nan")
    accumulator = ExactPixelMetrics("exact")
    accumulator.update(score, label)
    return accumulator.compute().auprc


def evaluate_semantic(
    dataset: Benchmark, segment_fn: Callable[[np.ndarray], np.ndarray]
) -> SemanticResult:
    """Inlier mIoU: segment_fn(image uint8 [H, W, 3]) -> train IDs [H, W] (19 classes)."""
    confusion = ConfusionMatrix()
    for i in tqdm(range(len(dataset)), desc=f"{dataset.name} mIoU", unit="frame", disable=None):
        image, label = dataset[i]
        confusion.update(segment_fn(image), label)
    return SemanticResult(dataset.name, len(dataset), confusion.compute())
