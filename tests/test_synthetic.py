"""The synthetic road world: determinism, label encodings of every written format, COCO
polygons and RLE against the rendered masks, and that the project's loaders read the folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mask2anomaly.cli import main
from mask2anomaly.data.cityscapes import CityscapesSemantic
from mask2anomaly.data.labels import LABEL_ID_TO_TRAIN_ID
from mask2anomaly.data.synthetic import (
    existing_world,
    render_outlier_image,
    render_scene,
    rle_encode,
    write_world,
)
from mask2anomaly.data.synthetic.coco import COCO_MIN_SIDE
from mask2anomaly.data.synthetic.formats import (
    anomaly_gaps,
    anomaly_track_label,
    obstacle_track_label,
)
from mask2anomaly.data.synthetic.scene import Scene
from mask2anomaly.data.synthetic.writer import MANIFEST
from mask2anomaly.errors import UserError

SIZE = (96, 192)
COUNTS = {"num_train": 4, "num_val": 2, "num_outliers": 6, "num_test": 3}


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_world(root, seed=3, size=SIZE, **COUNTS)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(world, tmp_path):
    write_world(tmp_path / "again", seed=3, size=SIZE, workers=2, **COUNTS)  # in 2 processes
    write_world(tmp_path / "other", seed=4, size=SIZE, **COUNTS)
    first, again, other = _files(world), _files(tmp_path / "again"), _files(tmp_path / "other")
    assert first == again
    images = [name for name in first if name.endswith((".png", ".jpg", ".webp"))]
    assert images and all(first[name] != other[name] for name in images if "leftImg8bit" in name)


def test_cityscapes_labels_follow_the_official_table(world):
    table = np.full(256, 255, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    label_files = sorted((world / "cityscapes" / "gtFine").rglob("*_gtFine_labelIds.png"))
    assert len(label_files) == COUNTS["num_train"] + COUNTS["num_val"]
    seen = set()
    for path in label_files:
        label_ids = _read(path)
        train_ids = _read(Path(str(path).replace("labelIds", "labelTrainIds")))
        instance_ids = _read(Path(str(path).replace("labelIds", "instanceIds"))).astype(np.int64)
        assert label_ids.shape == SIZE and label_ids.max() <= 33
        assert set(np.unique(train_ids)) <= {*range(19), 255}
        np.testing.assert_array_equal(train_ids, table[label_ids])
        things = instance_ids >= 1000
        np.testing.assert_array_equal(
            np.where(things, instance_ids // 1000, instance_ids), label_ids
        )
        seen |= set(np.unique(train_ids).tolist())
    assert {0, 1, 2, 8, 10, 13} <= seen  # road, sidewalk, building, vegetation, sky, car


def test_cityscapes_loader_reads_both_splits(world):
    for split, count in (("train", COUNTS["num_train"]), ("val", COUNTS["num_val"])):
        dataset = CityscapesSemantic(world / "cityscapes", split)
        assert len(dataset) == count
        image, target = dataset[(0, 0)]
        assert image.shape == (3, *SIZE)
        assert target.labels.numel() >= 4 and int(target.labels.max()) < 19


def _polygon_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        draw.polygon(polygon, fill=1)
    return np.asarray(canvas, dtype=bool)


def _rle_mask(rle: dict) -> np.ndarray:
    """Decode uncompressed COCO RLE (runs alternate 0/1, column-major)."""
    height, width = rle["size"]
    values = np.zeros(len(rle["counts"]), np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, rle["counts"])
    assert flat.size == height * width
    return flat.reshape(width, height).T.astype(bool)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel of the mask's edge."""
    padded = np.pad(mask, 1, mode="edge")
    shifts = [padded[1 + dy : 1 + dy + mask.shape[0], 1 + dx : 1 + dx + mask.shape[1]]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # fmt: skip
    return np.any([s != mask for s in shifts], axis=0)


@pytest.mark.parametrize("kind", ["outlier", "excluded", "small"])
def test_coco_polygons_and_rle_reproduce_the_drawn_masks(kind):
    crowds = 0
    for seed in range(12):
        rendered = render_outlier_image(np.random.default_rng(seed), kind, (30.0, 90.0))
        height, width = rendered.image.shape[:2]
        assert (min(height, width) >= COCO_MIN_SIDE) == (kind != "small")
        for obj in rendered.objects:
            if obj.iscrowd:
                crowds += 1
                np.testing.assert_array_equal(_rle_mask(rle_encode(obj.mask)), obj.mask)
                continue
            decoded = _polygon_mask(obj.polygons, height, width)
            differ = decoded != obj.mask
            assert not (differ & ~_boundary(obj.mask)).any(), "mismatch away from the boundary"
            assert differ.sum() <= 0.02 * obj.mask.sum() + 2
    assert crowds  # crowd groups (RLE) occur


def test_coco_json_is_consistent_and_the_filter_has_work(world):
    data = json.loads((world / "coco" / "annotations" / "instances_train2017.json").read_text())
    images = {image["id"]: image for image in data["images"]}
    names = {c["id"]: c["name"] for c in data["categories"]}
    excluded = {"person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light",
                "stop sign"}  # fmt: skip
    kept = dict.fromkeys(images, True)
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        height, width = image["height"], image["width"]
        if ann["iscrowd"]:
            mask = _rle_mask(ann["segmentation"])
        else:
            mask = _polygon_mask(ann["segmentation"], height, width)
        area = float(mask.sum())
        assert abs(ann["area"] - area) <= 0.05 * area + 5
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w > 0 and h > 0
        if names[ann["category_id"]] in excluded:
            kept[ann["image_id"]] = False
    for image_id, image in images.items():
        assert (world / "coco" / "train2017" / image["file_name"]).is_file()
        assert image["file_name"] == f"{image_id:012d}.jpg"
        if min(image["height"], image["width"]) < COCO_MIN_SIDE:
            kept[image_id] = False
    assert sum(kept.values()) == COUNTS["num_outliers"] < len(images)


def test_outlier_filter_keeps_exactly_the_outlier_images(world):
    outliers = pytest.importorskip("mask2anomaly.data.outliers")
    pool = outliers.OutlierPool.from_coco(world / "coco")
    assert len(pool) == COUNTS["num_outliers"]
    image, mask = pool.load(0)
    assert image.shape[:2] == mask.shape and mask.any()


def test_smiyc_and_road_anomaly_label_encodings(world):
    sets = {
        "dataset_AnomalyTrack": ("jpg", {0, 1, 255}),
        "dataset_ObstacleTrack": ("webp", {0, 1, 255}),
    }
    for folder, (suffix, values) in sets.items():
        images = sorted((world / folder / "images").glob(f"*.{suffix}"))
        assert len(images) == COUNTS["num_test"]
        for image in images:
            label = _read(world / folder / "labels_masks" / f"{image.stem}_labels_semantic.png")
            assert set(np.unique(label)) <= values and (label == 1).any()
            assert label.shape == _read(image).shape[:2] == SIZE
    road_anomaly = world / "RoadAnomaly_jpg"
    names = json.loads((road_anomaly / "frame_list.json").read_text())
    assert len(names) == COUNTS["num_test"]
    for name in names:
        label = _read(road_anomaly / "frames" / f"{Path(name).stem}.labels" / "labels_semantic.png")
        assert set(np.unique(label)) <= {0, 2} and (label == 2).any()
        assert (road_anomaly / "frames" / name).is_file()


def test_test_frames_carry_semantic_labels_consistent_with_their_anomaly_labels(world):
    from mask2anomaly.data.benchmarks import load_benchmark

    sets = (("road-anomaly-21", "dataset_AnomalyTrack"), ("road-obstacle-21",
            "dataset_ObstacleTrack"), ("road-anomaly", "RoadAnomaly_jpg"))  # fmt: skip
    for name, folder in sets:
        dataset = load_benchmark(name, world / folder)
        assert dataset.with_semantic == dataset.labelled == list(range(COUNTS["num_test"]))
        for index in dataset.with_semantic:
            semantic, label = dataset.load_semantic(index), dataset.load_label(index)
            assert semantic.shape == label.shape == SIZE
            assert set(np.unique(semantic)) <= {*range(19), 255}
            assert (semantic[label == 1] == 255).all()  # anomalies are no known class
            known = semantic < 19
            assert known.mean() > 0.5 and len(np.unique(semantic[known])) > 3
            if name == "road-anomaly-21":  # inlier pixels are exactly the known classes
                assert (known[label == 0]).all() and (label[known] != 1).all()
            if name == "road-obstacle-21":  # the road (train ID 0) is the inlier region
                assert (semantic[label == 0] == 0).all()


def test_obstacle_labels_are_void_off_the_road():
    for seed in range(3):
        scene = render_scene(np.random.default_rng(seed), SIZE, anomalies="obstacle")
        label = obstacle_track_label(scene)
        road = (scene.label_ids == 7) & ~scene.anomaly_mask & ~anomaly_gaps(scene)
        np.testing.assert_array_equal(label == 0, road)
        np.testing.assert_array_equal(label == 1, scene.anomaly_mask)
        assert scene.anomaly_mask.any()


def test_gaps_inside_anomalies_are_void():
    yy, xx = np.mgrid[:40, :40]
    radius = np.hypot(yy - 20, xx - 20)
    ring = (radius < 12) & (radius >= 5)
    label_ids = np.full((40, 40), 7, np.uint8)
    label_ids[ring] = 0
    scene = Scene(np.zeros((40, 40, 3), np.uint8), label_ids, label_ids.astype(np.int32),
                  ring.astype(np.uint8))  # fmt: skip
    np.testing.assert_array_equal(anomaly_gaps(scene), radius < 5)
    for label in (obstacle_track_label(scene), anomaly_track_label(scene)):
        assert (label[radius < 5] == 255).all() and (label[ring] == 1).all()
        assert (label[radius >= 12] == 0).all()


def test_benchmark_adapters_read_the_test_sets(world):
    benchmarks = pytest.importorskip("mask2anomaly.data.benchmarks")
    for name, folder in (
        ("road-anomaly-21", "dataset_AnomalyTrack"),
        ("road-obstacle-21", "dataset_ObstacleTrack"),
        ("road-anomaly", "RoadAnomaly_jpg"),
        ("cityscapes", "cityscapes"),
    ):
        dataset = benchmarks.load_benchmark(name, world / folder)
        expected = COUNTS["num_val"] if name == "cityscapes" else COUNTS["num_test"]
        assert len(dataset) == expected
        for index in range(len(dataset)):
            image, label = dataset[index]
            assert image.shape == (*SIZE, 3)
            if name != "cityscapes":
                assert (label == 1).any() and set(np.unique(label)) <= {0, 1, 255}
        assert not dataset.unmapped_pixels


def test_scene_maps_are_consistent_at_any_size():
    scene = render_scene(np.random.default_rng(0), (71, 203), anomalies="anywhere")
    assert scene.image.shape == (71, 203, 3) and scene.image.dtype == np.uint8
    assert scene.label_ids.shape == scene.instance_ids.shape == scene.anomaly_ids.shape
    assert (scene.label_ids[scene.anomaly_mask] == 0).all()
    with pytest.raises(ValueError):
        render_scene(np.random.default_rng(0), SIZE, anomalies="everywhere")


def test_rerun_replaces_the_previous_world_and_refuses_foreign_folders(tmp_path):
    root = tmp_path / "world"
    write_world(root, seed=0, size=SIZE, num_train=3, num_val=1, num_outliers=1, num_test=2)
    summary = write_world(root, seed=0, size=SIZE, num_train=1, num_val=1, num_outliers=1,
                          num_test=1)  # fmt: skip
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert on_disk == sorted([*summary.files, MANIFEST])
    assert existing_world(root, seed=0, size=SIZE, num_train=1, num_val=1, num_outliers=1,
                          num_test=1).files == summary.files  # fmt: skip
    assert existing_world(root, seed=1, size=SIZE, num_train=1, num_val=1, num_outliers=1,
                          num_test=1) is None  # fmt: skip
    (root / summary.files[0]).unlink()
    assert existing_world(root, seed=0, size=SIZE, num_train=1, num_val=1, num_outliers=1,
                          num_test=1) is None  # fmt: skip
    foreign = tmp_path / "foreign"
    (foreign / "cityscapes").mkdir(parents=True)
    with pytest.raises(UserError, match="refusing"):
        write_world(foreign, size=SIZE, num_train=1, num_val=1, num_outliers=1, num_test=1)


def test_synth_command_writes_and_summarises(tmp_path, capsys):
    args = [
        "synth",
        "--out",
        str(tmp_path),
        "--size",
        "64x128",
        "--num-train",
        "1",
        "--num-val",
        "1",
        "--num-outliers",
        "1",
        "--num-test",
        "1",
        "--no-progress",
    ]
    assert main([*args, "--workers", "0"]) == 2  # a bad flag: one line, exit status 2
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "images/s" in out and str(tmp_path) in out
    assert (tmp_path / "cityscapes" / "leftImg8bit" / "val").is_dir()
