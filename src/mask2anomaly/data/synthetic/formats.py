"""The synthetic world's files in the real formats: Cityscapes images and labelIds /
labelTrainIds / instanceIds, SMIYC anomaly- and obstacle-track frames with their 0/1/255 labels
and anomaly instance labels (instanceIds), Road Anomaly frames (0/2) and COCO images with an
instances JSON (spec benchmarks.md A.4, C, E);
the test frames also get their semantic labels (train IDs), for open-set metrics.
Each writer returns the paths it wrote, every file written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ...config import IGNORE_INDEX
from ...fileio import atomic_path, write_text_atomic
from ..labels import train_id_table
from .coco import annotation, coco_categories, render_outlier_image
from .scene import Scene

STREAMS = {"train": 1, "val": 2, "coco": 3, "anomaly": 4, "obstacle": 5, "road-anomaly": 6}
CITIES = {"train": ("synthburg", "pixelstadt", "raycity"), "val": ("valdorf",)}
ROAD_LABEL_ID = 7  # Cityscapes road: the drivable area, the only non-void part of obstacle labels
ROAD_ANOMALY_LABEL = 2  # Road Anomaly (Lis et al.) marks anomalies with 2, background 0 (spec C)
INSTANCE_BASE = 26000  # anomaly instances: Cityscapes car (26) * 1000 + k, as OoDIS encodes them
VOID_LABEL_ID = 0  # Cityscapes "unlabeled": void in instance evaluation
JPEG_QUALITY = 92


def rng_for(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[stream], index])


def save_image(path: Path, image: np.ndarray, fmt: str, **options) -> None:
    """Write an image atomically (temporary name, then rename)."""
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format=fmt, **options)


def save_json(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, separators=(",", ":")))


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


def write_cityscapes(root: Path, split: str, index: int, scene: Scene) -> list[Path]:
    cities = CITIES[split]
    city = cities[index % len(cities)]
    stem = f"{city}_{index // len(cities):06d}_000019"
    image_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
    labels = root / "gtFine" / split / city
    paths = [image_path] + [labels / f"{stem}_gtFine_{kind}.png"
                            for kind in ("labelIds", "labelTrainIds", "instanceIds")]  # fmt: skip
    save_image(paths[0], scene.image, "PNG", compress_level=1)
    save_image(paths[1], scene.label_ids, "PNG")
    save_image(paths[2], train_id_table()[scene.label_ids], "PNG")
    save_image(paths[3], scene.instance_ids.astype(np.uint16), "PNG")
    return paths


def semantic_label(scene: Scene) -> np.ndarray:
    """[H, W] uint8 Cityscapes train IDs of a test frame (anomalies and void classes 255): the
    known classes for open-set metrics, beside the anomaly label."""
    return train_id_table()[scene.label_ids]


def write_smiyc(root: Path, fid: str, scene: Scene, obstacle: bool) -> list[Path]:
    if obstacle:
        image_path, label = root / "images" / f"{fid}.webp", obstacle_track_label(scene)
        save_image(image_path, scene.image, "WEBP", quality=90, method=2)
    else:
        image_path, label = root / "images" / f"{fid}.jpg", anomaly_track_label(scene)
        save_image(image_path, scene.image, "JPEG", quality=JPEG_QUALITY)
    label_path = root / "labels_masks" / f"{fid}_labels_semantic.png"
    save_image(label_path, label, "PNG")
    semantic_path = root / "labels_masks" / f"{fid}_labelTrainIds.png"
    save_image(semantic_path, semantic_label(scene), "PNG")
    instance_path = root / "labels_masks" / f"{fid}_instanceIds.png"
    save_image(instance_path, instance_label(scene, label), "PNG")
    return [image_path, label_path, semantic_path, instance_path]


def instance_label(scene: Scene, label: np.ndarray) -> np.ndarray:
    """[H, W] uint16 anomaly instances of a test frame in the Cityscapes instanceIds encoding
    as OoDIS scores them: anomaly object k is 26000 + k (every anomaly a "car" instance), the
    label's void 0 (unlabeled), everything else 7 (road: evaluated, not an instance)."""
    ids = np.where(label == IGNORE_INDEX, VOID_LABEL_ID, ROAD_LABEL_ID).astype(np.uint16)
    objects = scene.anomaly_ids[scene.anomaly_mask].astype(np.uint16)
    ids[scene.anomaly_mask] = INSTANCE_BASE + objects
    return ids


def write_road_anomaly(root: Path, name: str, scene: Scene) -> list[Path]:
    image_path = root / "frames" / f"{name}.jpg"
    label_path = root / "frames" / f"{name}.labels" / "labels_semantic.png"
    save_image(image_path, scene.image, "JPEG", quality=JPEG_QUALITY)
    save_image(label_path, (scene.anomaly_mask * ROAD_ANOMALY_LABEL).astype(np.uint8), "PNG")
    semantic_path = root / "frames" / f"{name}.labels" / "labelTrainIds.png"
    save_image(semantic_path, semantic_label(scene), "PNG")
    return [image_path, label_path, semantic_path]


def coco_kinds(num_outliers: int) -> list[str]:
    """Kinds of the COCO images for `num_outliers` filter-passing ones: plus a quarter with
    excluded categories and an eighth below the minimum size (rounded up)."""
    return (["outlier"] * num_outliers + ["excluded"] * -(-num_outliers // 4)
            + ["small"] * -(-num_outliers // 8))  # fmt: skip


CocoImage = tuple[dict, list[dict], Path]  # images entry, its annotations (no ids yet), file


def write_coco_image(
    root: Path, seed: int, index: int, kind: str, object_size: tuple[float, float]
) -> CocoImage:
    """Render and write COCO image `index`."""
    rendered = render_outlier_image(rng_for(seed, "coco", index + 1), kind, object_size)
    image_id = 9 + 17 * index  # non-contiguous like COCO's ids: catches index == id bugs
    path = root / "train2017" / f"{image_id:012d}.jpg"
    save_image(path, rendered.image, "JPEG", quality=JPEG_QUALITY)
    height, width = rendered.image.shape[:2]
    entry = {"id": image_id, "file_name": path.name, "height": height, "width": width}
    return entry, [annotation(obj, 0, image_id) for obj in rendered.objects], path


def write_coco_json(root: Path, rendered: list[CocoImage]) -> list[Path]:
    annotations: list[dict] = []
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
    save_json(json_path, data)
    return [*(path for _, _, path in rendered), json_path]
