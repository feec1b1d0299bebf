"""The built-in synthetic road world, written in the real dataset formats (issue 6).

`write_world(out_dir)` renders street scenes (`scene`) and outlier images
(`coco`) and writes, under `out_dir` (spec benchmarks.md A.4, C, E.1, E.2):

    cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    cityscapes/gtFine/{train,val}/<city>/..._gtFine_{labelIds,labelTrainIds,instanceIds}.png
    coco/train2017/<id:012d>.jpg, coco/annotations/instances_train2017.json
    dataset_AnomalyTrack/images/<fid>.jpg + labels_masks/<fid>_labels_semantic.png  (0/1/255)
    dataset_ObstacleTrack/images/<fid>.webp + labels_masks/<fid>_labels_semantic.png (0/1/255)
    RoadAnomaly_jpg/frame_list.json, frames/<name>.jpg, frames/<name>.labels/labels_semantic.png
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

import numpy as np
from PIL import Image
from scipy import ndimage

from ...config import IGNORE_INDEX
from ...errors import UserError
from ...fileio import atomic_path, write_text_atomic
from ..labels import LABEL_ID_TO_TRAIN_ID
from .coco import annotation, coco_categories, render_outlier_image
from .scene import Scene, render_scene

MANIFEST = "synthetic_world.json"
GENERATOR_VERSION = 1  # bump when the same seed would write different files
FOLDERS = ("cityscapes", "coco", "dataset_AnomalyTrack", "dataset_ObstacleTrack", "RoadAnomaly_jpg")
STREAMS = {"train": 1, "val": 2, "coco": 3, "anomaly": 4, "obstacle": 5, "road-anomaly": 6}
CITIES = {"train": ("synthburg", "pixelstadt", "raycity"), "val": ("valdorf",)}
ROAD_LABEL_ID = 7  # Cityscapes road: the drivable area, the only non-void part of obstacle labels
ROAD_ANOMALY_LABEL = 2  # Road Anomaly (Lis et al.) marks anomalies with 2, background 0 (spec C)
JPEG_QUALITY = 92
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


def _rng(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[stream], index])


def _save(path: Path, image: np.ndarray, fmt: str, **options) -> None:
    """Write an image atomically (temporary name, then rename)."""
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format=fmt, **options)


def _save_json(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, separators=(",", ":")))


def train_id_table() -> np.ndarray:
    """[256] uint8 lookup Cityscapes labelId -> trainId (255 for every other id)."""
    table = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table


def anomaly_gaps(scene: Scene) -> np.ndarray:
    """[H, W] bool pixels enclosed by an anomaly but not part of it (the hole of a tyre): SMIYC
    labels such gaps void."""
    gaps = np.zeros_like(scene.anomaly_mask)
    for index in np.unique(scene.anomaly_ids[scene.anomaly_ids > 0]):
        own = scene.anomaly_ids == index
        gaps |= ndimage.binary_fill_holes(own) & ~own
    return gaps & ~scene.anomaly_mask


def anomaly_track_label(scene: Scene) -> np.ndarray:
    """[H, W] uint8 SMIYC anomaly-track label: 0 Cityscapes class, 1 anomaly, 255 void
    (Cityscapes void classes and gaps inside anomalies)."""
    label = np.where(train_id_table()[scene.label_ids] != IGNORE_INDEX, 0, IGNORE_INDEX)
    label[anomaly_gaps(scene)] = IGNORE_INDEX
    label[scene.anomaly_mask] = 1
    return label.astype(np.uint8)


def obstacle_track_label(scene: Scene) -> np.ndarray:
    """[H, W] uint8 SMIYC obstacle-track label: 0 road, 1 obstacle, 255 off the road and in
    gaps inside obstacles."""
    label = np.where(scene.label_ids == ROAD_LABEL_ID, 0, IGNORE_INDEX)
    label[anomaly_gaps(scene)] = IGNORE_INDEX
    label[scene.anomaly_mask] = 1
    return label.astype(np.uint8)


def _write_cityscapes(root: Path, split: str, index: int, scene: Scene) -> list[Path]:
    cities = CITIES[split]
    city = cities[index % len(cities)]
    stem = f"{city}_{index // len(cities):06d}_000019"
    image_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
    labels = root / "gtFine" / split / city
    paths = [image_path] + [labels / f"{stem}_gtFine_{kind}.png"
                            for kind in ("labelIds", "labelTrainIds", "instanceIds")]  # fmt: skip
    _save(paths[0], scene.image, "PNG", compress_level=1)
    _save(paths[1], scene.label_ids, "PNG")
    _save(paths[2], train_id_table()[scene.label_ids], "PNG")
    _save(paths[3], scene.instance_ids.astype(np.uint16), "PNG")
    return paths


def _write_smiyc(root: Path, fid: str, scene: Scene, obstacle: bool) -> list[Path]:
    if obstacle:
        image_path, label = root / "images" / f"{fid}.webp", obstacle_track_label(scene)
        _save(image_path, scene.image, "WEBP", quality=90, method=2)
    else:
        image_path, label = root / "images" / f"{fid}.jpg", anomaly_track_label(scene)
        _save(image_path, scene.image, "JPEG", quality=JPEG_QUALITY)
    label_path = root / "labels_masks" / f"{fid}_labels_semantic.png"
    _save(label_path, label, "PNG")
    return [image_path, label_path]


def _write_road_anomaly(root: Path, name: str, scene: Scene) -> list[Path]:
    image_path = root / "frames" / f"{name}.jpg"
    label_path = root / "frames" / f"{name}.labels" / "labels_semantic.png"
    _save(image_path, scene.image, "JPEG", quality=JPEG_QUALITY)
    _save(label_path, (scene.anomaly_mask * ROAD_ANOMALY_LABEL).astype(np.uint8), "PNG")
    return [image_path, label_path]


def coco_kinds(num_outliers: int) -> list[str]:
    """Kinds of the COCO images for `num_outliers` filter-passing ones: plus a quarter with
    excluded categories and an eighth below the minimum size (rounded up)."""
    return (["outlier"] * num_outliers + ["excluded"] * -(-num_outliers // 4)
            + ["small"] * -(-num_outliers // 8))  # fmt: skip


CocoImage = tuple[dict, list[dict], Path]  # images entry, its annotations (no ids yet), file


def _write_coco_image(
    root: Path, seed: int, index: int, kind: str, object_size: tuple[float, float]
) -> CocoImage:
    """Render and write COCO image `index`."""
    rendered = render_outlier_image(_rng(seed, "coco", index + 1), kind, object_size)
    image_id = 9 + 17 * index  # non-contiguous like COCO's ids: catches index == id bugs
    path = root / "train2017" / f"{image_id:012d}.jpg"
    _save(path, rendered.image, "JPEG", quality=JPEG_QUALITY)
    height, width = rendered.image.shape[:2]
    entry = {"id": image_id, "file_name": path.name, "height": height, "width": width}
    return entry, [annotation(obj, 0, image_id) for obj in rendered.objects], path


def _coco_jobs(root: Path, seed: int, num_outliers: int,
               object_size: tuple[float, float]) -> list[Job]:  # fmt: skip
    kinds = coco_kinds(num_outliers)
    order = _rng(seed, "coco", 0).permutation(len(kinds))
    return [partial(_write_coco_image, root, seed, index, kinds[kind], object_size)
            for index, kind in enumerate(order)]  # fmt: skip


def _write_coco_json(root: Path, rendered: list[CocoImage]) -> list[Path]:
    annotations = []
    for _, objects, _ in rendered:
        for entry in objects:
            annotations.append({**entry, "id": len(annotations) + 1})
    data = {
        "info": {"description": "mask2anomaly synthetic outliers", "version": "1"},
        "licenses": [],
        "images": [entry for entry, _, _ in rendered],
        "annotations": annotations,
        "categories": coco_categories(),
    }
    json_path = root / "annotations" / "instances_train2017.json"
    _save_json(json_path, data)
    return [*(path for _, _, path in rendered), json_path]


def _write_street(root: Path, seed: int, size: tuple[int, int], stream: str,
                  index: int) -> list[Path]:  # fmt: skip
    """Render street scene `index` of `stream` and write it in its set's format."""
    if stream in ("train", "val"):
        scene = render_scene(_rng(seed, stream, index), size)
        return _write_cityscapes(root / "cityscapes", stream, index, scene)
    anomalies = "obstacle" if stream == "obstacle" else "anywhere"
    scene = render_scene(_rng(seed, stream, index), size, anomalies=anomalies)
    if stream == "anomaly":
        return _write_smiyc(root / "dataset_AnomalyTrack", f"synthetic{index:04d}", scene, False)
    if stream == "obstacle":
        fid = f"synth{index // 10:02d}_{index % 10:04d}"  # <scene>_<name>
        return _write_smiyc(root / "dataset_ObstacleTrack", fid, scene, True)
    return _write_road_anomaly(root / "RoadAnomaly_jpg", _road_anomaly_name(index), scene)


def _road_anomaly_name(index: int) -> str:
    return f"synthetic{index:03d}"


def _street_jobs(root: Path, seed: int, size: tuple[int, int], num_train: int, num_val: int,
                 num_test: int) -> list[Job]:  # fmt: skip
    streams = [("train", num_train), ("val", num_val)]
    streams += [(name, num_test) for name in ("anomaly", "obstacle", "road-anomaly")]
    return [partial(_write_street, root, seed, size, stream, index)
            for stream, count in streams for index in range(count)]  # fmt: skip


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
    _save_json(root / MANIFEST, {"complete": False, "files": previous})  # until this run ends
    step = progress or (lambda _: None)
    start = time.perf_counter()
    jobs = _street_jobs(root, seed, size, num_train, num_val, num_test)
    paths: list[Path] = [path for result in _run_jobs(jobs, workers, step) for path in result]
    if num_test:
        names = [f"{_road_anomaly_name(index)}.jpg" for index in range(num_test)]
        _save_json(root / "RoadAnomaly_jpg" / "frame_list.json", names)
        paths.append(root / "RoadAnomaly_jpg" / "frame_list.json")
    street_seconds = time.perf_counter() - start
    object_size = (max(0.15 * height, 16.0), max(0.45 * height, 48.0))  # in COCO images
    coco = _run_jobs(_coco_jobs(root / "coco", seed, num_outliers, object_size), workers, step)
    paths += _write_coco_json(root / "coco", coco)
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
    _save_json(root / MANIFEST, manifest)
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
