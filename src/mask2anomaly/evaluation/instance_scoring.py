"""Instance AP / AP50 of stored evaluations (issue 17): instances from each frame's stored map
(`components`) or its stored query masks (`queries`, written by `evaluate --instances queries`
as compressed RLE), scored against the frame's instance label (Cityscapes instanceIds) where the
dataset has one, else against the 8-connected components of its anomaly label.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.benchmarks import Benchmark
from ..errors import UserError
from ..fileio import write_json_atomic
from .instance_metrics import InstanceAP, InstanceResult, InstanceTruth
from .instances import (
    MIN_AREA,
    Confidence,
    InstanceMethod,
    decode_rle,
    encode_masks,
    extract_instances,
)
from .maps import MapFolder, load_map

FROM_INSTANCE_LABELS = "instance labels"
FROM_COMPONENTS = "connected components of the anomaly label"


def queries_folder(root: Path, dataset: str) -> Path:
    """Where an evaluation keeps the query masks of a dataset's frames."""
    return root / "queries" / dataset


def save_query_masks(path: Path, masks: np.ndarray) -> None:
    """bool [Q, H, W] -> JSON: the size and the RLE of every non-empty query mask by index."""
    kept = [q for q in range(len(masks)) if masks[q].any()]
    rles = encode_masks(masks[kept])
    write_json_atomic(path, {"size": list(masks.shape[1:]), "num_queries": len(masks),
                             "queries": dict(zip(map(str, kept), rles))})  # fmt: skip


def load_query_masks(path: Path) -> np.ndarray:
    """The bool [Q, H, W] of `save_query_masks` (Q: the non-empty ones, in query order)."""
    try:
        data = json.loads(path.read_text())
        size = tuple(data["size"])
        masks = [decode_rle(rle) for _, rle in sorted(data["queries"].items(), key=_index)]
    except FileNotFoundError:
        raise UserError(f"{path}: query masks missing (run evaluate --instances queries)") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: cannot read query masks ({error})") from None
    return np.stack(masks) if masks else np.zeros((0, *size), bool)


def _index(item: tuple[str, object]) -> int:
    return int(item[0])


def ground_truth(dataset: Benchmark, index: int) -> tuple[InstanceTruth, str]:
    """A frame's ground-truth instances and where they come from (one-line errors)."""
    ids = dataset.load_instance_ids(index)
    if ids is None:
        return InstanceTruth.from_label(dataset.load_label(index)), FROM_COMPONENTS
    try:
        return InstanceTruth.from_instance_ids(ids), FROM_INSTANCE_LABELS
    except ValueError as error:
        path = dataset.frames[index].instance_path
        raise UserError(f"{path}: not a Cityscapes instanceIds label ({error})") from None


def score_instances(
    maps_dir: Path,
    dataset: Benchmark,
    method: InstanceMethod,
    threshold: float,
    *,
    queries_dir: Path | None = None,
    min_area: int = MIN_AREA,
    confidence: Confidence = "mean",
    threshold_from: str | None = None,
) -> InstanceResult:
    """Instance AP / AP50 of one method on the labelled frames of a dataset, streaming."""
    maps = MapFolder(maps_dir)
    metric, sources = InstanceAP(), Counter[str]()
    for i in tqdm(dataset.labelled, desc=f"{dataset.name} instances ({method})", unit="frame",
                  disable=None):  # fmt: skip
        frame = dataset.frames[i]
        path = maps.find(frame)
        score = np.asarray(load_map(path), np.float32)
        truth, source = ground_truth(dataset, i)
        sources[source] += 1
        if truth.regions.shape != score.shape:
            where = frame.instance_path or frame.label_path
            raise UserError(f"{path}: map size {score.shape} != label size "
                            f"{truth.regions.shape} ({where})")  # fmt: skip
        masks = None
        if method == "queries":
            masks = load_query_masks((queries_dir or maps_dir) / f"{frame.frame_id}.json")
            if masks.shape[1:] != score.shape:
                raise UserError(f"{queries_dir}: query masks of {frame.frame_id} have size "
                                f"{masks.shape[1:]}, its map {score.shape}")  # fmt: skip
        instances = extract_instances(method, score, threshold, query_masks=masks,
                                      min_area=min_area, confidence=confidence)  # fmt: skip
        metric.update(truth, instances)
    return dataclasses.replace(metric.compute(), method=method, threshold=threshold,
                               threshold_from=threshold_from,
                               ground_truth=_sources(sources))  # fmt: skip


def _sources(sources: Counter[str]) -> str:
    if len(sources) <= 1:
        return next(iter(sources), FROM_COMPONENTS)
    return ", ".join(f"{source} ({count} frames)" for source, count in sources.most_common())


def instance_results(
    maps_dir: Path,
    dataset: Benchmark,
    methods: Sequence[InstanceMethod],
    threshold: float,
    **options,
) -> tuple[InstanceResult, ...]:
    """`score_instances` of each method."""
    return tuple(score_instances(maps_dir, dataset, m, threshold, **options) for m in methods)
