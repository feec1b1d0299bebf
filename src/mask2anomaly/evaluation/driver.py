"""Evaluation driver: score a benchmark with any score function, store the maps, compute metrics.

Issue 3 / spec ../shared/spec/benchmarks.md A-E. `score_dataset` runs a score function over a
dataset and stores each anomaly map as float16 (as SMIYC does, A.1), resuming where it stopped;
`score_maps` computes the metrics of stored maps from any method (.npy, .npz, 16-bit .png, SMIYC
.hdf5): pixel metrics per protocol, then the SMIYC component metrics at the smiyc pixel-F1-optimal
threshold. Report files (json, Markdown, curves, overlays) are written by `report.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..config import TrackName
from ..data.benchmarks import Benchmark
from ..data.layouts import Frame
from ..errors import UserError
from ..fileio import OutputFolder, file_signature
from .component_metrics import TRACKS, ComponentMetrics
from .maps import MapFolder, load_map, save_map
from .pixel_metrics import ExactPixelMetrics, make_pixel_metrics
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
    maps_dir = out.root / "maps" / dataset.name
    rank, world = shard
    signatures = {i: frame_signature(dataset.frames[i]) for i in range(rank, len(dataset), world)}
    todo = [i for i, s in signatures.items() if not out.is_done(frame_key(dataset, i), s)]
    for i in tqdm(todo, desc=f"{dataset.name} [{rank}/{world}]", unit="frame", disable=None):
        frame = dataset.frames[i]
        image = dataset.load_image(i)
        score = np.asarray(score_fn(image))
        if score.shape != image.shape[:2]:
            raise UserError(
                f"{frame.image_path}: anomaly map {score.shape} != image {image.shape[:2]}"
            )
        if not np.isfinite(score).all():
            raise UserError(f"{frame.image_path}: the anomaly map holds NaN or inf")
        path = maps_dir / f"{frame.frame_id}.{map_format}"
        for other in maps_dir.glob(f"{frame.frame_id}.*"):
            other.unlink()  # a map of another format would make the frame ambiguous
        save_map(path, score)
        out.mark_done(frame_key(dataset, i), signatures[i], [path])
    if not compute_metrics:
        return None
    return score_maps(maps_dir, dataset, protocols)


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
    per_frame = []
    for i, path, score, label in _frames(maps, dataset, f"{dataset.name} pixel metrics"):
        try:
            for accumulator in accumulators.values():
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
    components = None
    if "smiyc" in pixel and track is not None and pixel["smiyc"].num_pos > 0:
        segments = ComponentMetrics(pixel["smiyc"].best_f1_threshold, TRACKS[track])
        for _, _, score, label in _frames(maps, dataset, f"{dataset.name} components"):
            segments.update(score.astype(np.float16) if round_to_float16 else score, label)
        components = segments.compute()
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
    )


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
