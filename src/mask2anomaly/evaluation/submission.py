"""SMIYC test submissions: every frame's anomaly map in the benchmark's own result format.

The SMIYC benchmark code (road_anomaly_benchmark/evaluation.py `Evaluation.save_output`,
datasets/dataset_io.py `ChannelLoaderHDF5`) stores one map per frame as
`<dataset folder>/<frame id>.hdf5`: a single dataset "value", the map cast to float16, gzip
level 9. The folder is the benchmark's storage name: `AnomalyTrack-all` (RoadAnomaly21),
`ObstacleTrack-all` (RoadObstacle21), `LostAndFound-test` / `LostAndFound-train`; the scored
splits (AnomalyTrack-test, ObstacleTrack-test, LostAndFound-testNoKnown) are subsets of these.
A `manifest.json` beside the folders lists the frames and what produced the maps.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..data.benchmarks import Benchmark
from ..errors import UserError
from ..fileio import atomic_path, write_json_atomic
from .maps import HDF5_KEY, MapFolder, load_map

GZIP_LEVEL = 9
MANIFEST = "manifest.json"


def write_hdf5_map(path: Path, score: np.ndarray) -> None:
    """One SMIYC result file, written atomically."""
    import h5py

    with atomic_path(path, suffix=".hdf5") as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset(
            HDF5_KEY, data=np.asarray(score, np.float16), compression="gzip",
            compression_opts=GZIP_LEVEL,
        )  # fmt: skip


def submission_frames(dataset: Benchmark) -> list[tuple[str, str, int]]:
    """(result folder, frame id, index) of every frame of `dataset` in a SMIYC submission."""
    frames = [(f.group, f.frame_id, i) for i, f in enumerate(dataset.frames)]
    if not frames or any(group is None for group, _, _ in frames):
        raise UserError(
            f"{dataset.name}: not a SMIYC benchmark; submissions are for road-anomaly-21, "
            "road-obstacle-21 and lost-and-found"
        )
    return [(str(group), fid, i) for group, fid, i in frames]


def write_submission(
    out_dir: Path, datasets: Iterable[tuple[Benchmark, Path]], about: dict[str, Any]
) -> dict[str, int]:
    """Write every frame's map (read from its dataset's maps folder) as SMIYC .hdf5 under
    `out_dir/<result folder>/`, then the manifest; returns the file count per result folder.

    Args:
        datasets: (benchmark, folder of its maps) pairs.
        about: what produced the maps (weights, config), recorded in the manifest.
    """
    counts: dict[str, int] = {}
    listed: dict[str, dict[str, Any]] = {}
    for dataset, maps_dir in datasets:
        frames = submission_frames(dataset)
        maps = MapFolder(maps_dir)
        for group, frame_id, index in frames:
            score = load_map(maps.find(dataset.frames[index]))
            write_hdf5_map(out_dir / group / f"{frame_id}.hdf5", score)
            counts[group] = counts.get(group, 0) + 1
        listed[dataset.name] = {
            "subset": dataset.subset,
            "folders": sorted({group for group, _, _ in frames}),
            "frames": [frame_id for _, frame_id, _ in frames],
        }
    manifest = {
        "format": "SMIYC anomaly_p: <folder>/<frame id>.hdf5, dataset 'value', float16, gzip 9",
        "datasets": listed,
        **about,
    }
    write_json_atomic(out_dir / MANIFEST, manifest, indent=2)
    return counts
