"""The built-in synthetic road world, written in the real dataset formats (issue 6).

`write_world(out_dir)` renders street scenes (`scene`) and outlier images
(`coco`) and writes, under `out_dir` (spec benchmarks.md A.4, C, E.1, E.2):

    cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    cityscapes/gtFine/{train,val}/<city>/..._gtFine_{labelIds,labelTrainIds,instanceIds}.png
    coco/train2017/<id:012d>.jpg, coco/annotations/instances_train2017.json
    dataset_AnomalyTrack/images/<fid>.jpg + labels_masks/<fid>_labels_semantic.png  (0/1/255)
    dataset_ObstacleTrack/images/<fid>.webp + labels_masks/<fid>_labels_semantic.png (0/1/255)
        and labels_masks/<fid>_labelTrainIds.png (semantic train IDs, for open-set metrics)
    RoadAnomaly_jpg/frame_list.json, frames/<name>.jpg, frames/<name>.labels/labels_semantic.png
        and frames/<name>.labels/labelTrainIds.png
    synthetic_world.json  (what was written; a re-run deletes files of the previous run it lists)

Every file is derived from (seed, set, index) alone, so the same seed gives identical bytes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ...errors import UserError
from .formats import (
    coco_kinds,
    rng_for,
    save_json,
    write_cityscapes,
    write_coco_image,
    write_coco_json,
    write_road_anomaly,
    write_smiyc,
)
from .scene import render_scene

MANIFEST = "synthetic_world.json"
GENERATOR_VERSION = 3  # bump when the same seed would write different files (2: test
# semantics, 3: anomaly instance labels)
FOLDERS = ("cityscapes", "coco", "dataset_AnomalyTrack", "dataset_ObstacleTrack", "RoadAnomaly_jpg")
Progress = Callable[[int], None]
Job = Callable[[], Any]


@dataclass(frozen=True)
class WorldSummary:
    """What `write_world` wrote: folder and image count of each set, the COCO images that pass
    the outlier filter, and wall-clock seconds (all images, and street scenes alone)."""

    root: Path
    size: tuple[int, int]
    folders: dict[str, Path]
    counts: dict[str, int]
    num_coco_outliers: int
    num_files: int
    seconds: float
    street_seconds: float
    files: list[str] = field(default_factory=list, repr=False)

    @property
    def images_per_second(self) -> float:
        return sum(self.counts.values()) / max(self.seconds, 1e-9)

    @property
    def street_images_per_second(self) -> float:
        """Street scenes rendered and written per second (everything except COCO)."""
        return (sum(self.counts.values()) - self.counts["coco"]) / max(self.street_seconds, 1e-9)

    def describe(self) -> str:
        """Multi-line human-readable summary."""
        lines = [f"synthetic world in {self.root}: {self.num_files} files"]
        for name, path in self.folders.items():
            extra = f", {self.num_coco_outliers} pass the outlier filter" if name == "coco" else ""
            lines.append(f"  {name:<18} {path}  ({self.counts[name]} images{extra})")
        lines.append(
            f"  {sum(self.counts.values())} images in {self.seconds:.1f} s "
            f"({self.images_per_second:.1f} images/s); street scenes at "
            f"{self.size[0]}x{self.size[1]}: {self.street_images_per_second:.1f} images/s"
        )
        return "\n".join(lines)


def _write_street(root: Path, seed: int, size: tuple[int, int], stream: str,
                  index: int) -> list[Path]:  # fmt: skip
    """Render street scene `index` of `stream` and write it in its set's format."""
    if stream in ("train", "val"):
        scene = render_scene(rng_for(seed, stream, index), size)
        return write_cityscapes(root / "cityscapes", stream, index, scene)
    anomalies = "obstacle" if stream == "obstacle" else "anywhere"
    scene = render_scene(rng_for(seed, stream, index), size, anomalies=anomalies)
    if stream == "anomaly":
        return write_smiyc(root / "dataset_AnomalyTrack", f"synthetic{index:04d}", scene, False)
    if stream == "obstacle":
        fid = f"synth{index // 10:02d}_{index % 10:04d}"  # <scene>_<name>
        return write_smiyc(root / "dataset_ObstacleTrack", fid, scene, True)
    return write_road_anomaly(root / "RoadAnomaly_jpg", _road_anomaly_name(index), scene)


def _road_anomaly_name(index: int) -> str:
    return f"synthetic{index:03d}"


def _street_jobs(root: Path, seed: int, size: tuple[int, int], num_train: int, num_val: int,
                 num_test: int) -> list[Job]:  # fmt: skip
    streams = [("train", num_train), ("val", num_val)]
    streams += [(name, num_test) for name in ("anomaly", "obstacle", "road-anomaly")]
    return [partial(_write_street, root, seed, size, stream, index)
            for stream, count in streams for index in range(count)]  # fmt: skip


def _coco_jobs(root: Path, seed: int, num_outliers: int,
               object_size: tuple[float, float]) -> list[Job]:  # fmt: skip
    kinds = coco_kinds(num_outliers)
    order = rng_for(seed, "coco", 0).permutation(len(kinds))
    return [partial(write_coco_image, root, seed, index, kinds[kind], object_size)
            for index, kind in enumerate(order)]  # fmt: skip


def default_workers() -> int:
    """Render processes by default: the usable CPUs, at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))  # fmt: skip


def _run_jobs(jobs: list[Job], workers: int, progress: Progress) -> list[Any]:
    """Results of `jobs` in order, computed in `workers` processes (1: in this one)."""
    if workers <= 1 or len(jobs) < 2:
        results = []
        for job in jobs:
            results.append(job())
            progress(1)
        return results
    context = multiprocessing.get_context("spawn")  # no fork of a process that runs torch
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(job) for job in jobs]
        for future in as_completed(futures):
            future.result()  # re-raises a worker's error here
            progress(1)
        return [future.result() for future in futures]


def count_images(*, num_train: int, num_val: int, num_outliers: int, num_test: int) -> int:
    """Number of images `write_world` renders (for a progress bar)."""
    return num_train + num_val + len(coco_kinds(num_outliers)) + 3 * num_test


def _previous_files(root: Path) -> list[str]:
    """Files listed by an earlier run's manifest; refuses folders not written by us."""
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            return list(json.loads(manifest.read_text())["files"])
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"{manifest}: unreadable manifest ({error})") from None
    for folder in FOLDERS:
        if (root / folder).exists():
            raise UserError(
                f"{root / folder} exists but {root / MANIFEST} does not: refusing to write a "
                "synthetic world over other data (choose a new --out folder)"
            )
    return []


def _remove_stale(root: Path, previous: list[str], written: set[str]) -> None:
    """Delete files of the previous run that this run did not write, then empty folders."""
    for name in previous:
        path = root / name
        if name not in written and name.split("/", 1)[0] in FOLDERS and path.is_file():
            path.unlink()
    for folder in FOLDERS:
        for directory in sorted((root / folder).glob("**/"), key=lambda p: -len(p.parts)):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()


def write_world(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: tuple[int, int] = (256, 512),
    num_train: int = 300,
    num_val: int = 50,
    num_outliers: int = 120,
    num_test: int = 30,
    progress: Progress | None = None,
    workers: int = 1,
) -> WorldSummary:
    """Render and write the synthetic world (layout in the module docstring).

    Args:
        out_dir: output folder (created; an earlier synthetic world there is replaced).
        seed: world seed; the same seed gives byte-identical files.
        size: (H, W) of the street images in pixels.
        num_train, num_val: Cityscapes-format train / val images.
        num_outliers: COCO images that pass the outlier filter (plus num_outliers / 4 with
            excluded categories and num_outliers / 8 too small, rounded up).
        num_test: frames in each of the three anomaly sets.
        progress: called with 1 after every rendered image.
        workers: processes rendering in parallel (the files do not depend on it).
    """
    height, width = size
    if height < 32 or width < 32:
        raise UserError(f"image size {height}x{width} is too small (at least 32x32)")
    if min(num_train, num_val, num_outliers, num_test) < 0:
        raise UserError("image counts must be >= 0")
    root = Path(out_dir)
    previous = _previous_files(root)
    save_json(root / MANIFEST, {"complete": False, "files": previous})  # until this run ends
    step = progress or (lambda _: None)
    start = time.perf_counter()
    jobs = _street_jobs(root, seed, size, num_train, num_val, num_test)
    paths: list[Path] = [path for result in _run_jobs(jobs, workers, step) for path in result]
    if num_test:
        names = [f"{_road_anomaly_name(index)}.jpg" for index in range(num_test)]
        save_json(root / "RoadAnomaly_jpg" / "frame_list.json", names)
        paths.append(root / "RoadAnomaly_jpg" / "frame_list.json")
    street_seconds = time.perf_counter() - start
    object_size = (max(0.15 * height, 16.0), max(0.45 * height, 48.0))  # in COCO images
    coco = _run_jobs(_coco_jobs(root / "coco", seed, num_outliers, object_size), workers, step)
    paths += write_coco_json(root / "coco", coco)
    seconds = time.perf_counter() - start
    files = sorted(path.relative_to(root).as_posix() for path in paths)
    _remove_stale(root, previous, set(files))
    counts = _counts(num_train, num_val, num_outliers, num_test)
    manifest = {
        "complete": True,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": [height, width],
        "counts": counts,
        "num_outliers": num_outliers,
        "files": files,
    }
    save_json(root / MANIFEST, manifest)
    return _summary(root, manifest, seconds, street_seconds)


def _counts(num_train: int, num_val: int, num_outliers: int, num_test: int) -> dict[str, int]:
    return {"cityscapes/train": num_train, "cityscapes/val": num_val,
            "coco": len(coco_kinds(num_outliers)), "road-anomaly-21": num_test,
            "road-obstacle-21": num_test, "road-anomaly": num_test}  # fmt: skip


def _summary(root: Path, manifest: dict, seconds: float, street_seconds: float) -> WorldSummary:
    counts, files = manifest["counts"], manifest["files"]
    folders = {name: root / folder for name, folder in zip(counts, ("cityscapes",) + FOLDERS)}
    height, width = manifest["size"]
    return WorldSummary(
        root, (height, width), folders, counts, manifest["num_outliers"], len(files) + 1,
        seconds, street_seconds, files
    )  # fmt: skip


def existing_world(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: tuple[int, int] = (256, 512),
    num_train: int = 300,
    num_val: int = 50,
    num_outliers: int = 120,
    num_test: int = 30,
) -> WorldSummary | None:
    """The summary of a finished `write_world` run in `out_dir` with exactly these arguments
    (same generator version, every file present), else None: lets a caller skip rewriting.
    Its timings are 0 (the manifest holds no timings, so that it too is byte-identical)."""
    root = Path(out_dir)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    wanted = {"complete": True, "version": GENERATOR_VERSION, "seed": seed, "size": list(size),
              "counts": _counts(num_train, num_val, num_outliers, num_test)}  # fmt: skip
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in wanted.items()):
        return None
    if not all((root / name).is_file() for name in manifest["files"]):
        return None
    return _summary(root, manifest, 0.0, 0.0)
