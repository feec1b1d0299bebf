"""Benchmark adapters on tiny generated folders in each official layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mask2anomaly.data.benchmarks import BENCHMARKS, load_benchmark, parse_label_map
from mask2anomaly.errors import UserError


def _image(path: Path, h: int, w: int, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def _label(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


RAW = np.array([[0, 1, 2], [7, 200, 255]], np.uint8)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("road-anomaly-21", [[0, 1, 255], [255, 255, 255]]),
        ("road-obstacle-21", [[0, 1, 255], [255, 255, 255]]),
        ("m2a", [[0, 1, 255], [255, 255, 255]]),
        ("m2a-road-anomaly", [[0, 1, 1], [255, 255, 255]]),
    ],
)
def test_images_and_labels_masks_layouts(tmp_path, name, expected):
    suffix = "_labels_semantic" if name.startswith("road-") else ""
    for fid, (h, w) in {"b": (2, 3), "a": (2, 3)}.items():
        _image(tmp_path / "images" / f"{fid}.png", h, w)
        _label(tmp_path / "labels_masks" / f"{fid}{suffix}.png", RAW)
    dataset = load_benchmark(name, tmp_path)
    assert [f.frame_id for f in dataset.frames] == ["a", "b"]
    image, label = dataset[0]
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    assert label.tolist() == expected and label.dtype == np.uint8
    assert dataset.unmapped_pixels["a"] == int(np.sum(np.array(expected) == 255) - 1)
    assert dataset.track == ("obstacle" if name == "road-obstacle-21" else "anomaly")


def test_lost_and_found_label_ids(tmp_path):
    scene = "01_Hanns_Klemm_Str_45"
    _image(tmp_path / "leftImg8bit/test" / scene / f"{scene}_000000_000010_leftImg8bit.png", 2, 3)
    _label(tmp_path / "gtCoarse/test" / scene / f"{scene}_000000_000010_gtCoarse_labelIds.png", RAW)
    dataset = load_benchmark("lost-and-found", tmp_path)
    assert dataset.frames[0].frame_id == f"{scene}_000000_000010"
    assert dataset.load_label(0).tolist() == [[255, 0, 1], [1, 1, 255]]
    assert dataset.track == "obstacle"


def test_road_anomaly_original_layout(tmp_path):
    label = np.array([[0, 2], [2, 1]])
    for name in ("animals01", "cones02"):
        _image(tmp_path / "frames" / f"{name}.jpg", 2, 2)
        _label(tmp_path / "frames" / f"{name}.labels" / "labels_semantic.png", label)
    (tmp_path / "frame_list.json").write_text(json.dumps(["cones02.jpg"]))
    dataset = load_benchmark("road-anomaly", tmp_path)
    assert len(dataset) == 1 and dataset.load_label(0).tolist() == [[0, 1], [1, 255]]


def test_fishyscapes_lost_and_found_with_image_root(tmp_path):
    laf_id = "04_Maurener_Weg_8_000000_000030"
    _label(tmp_path / "fs" / f"0000_{laf_id}_labels.png", np.array([[0, 1, 255]]))
    _image(tmp_path / "laf/leftImg8bit/train/04_Maurener_Weg_8" / f"{laf_id}_leftImg8bit.png", 1, 3)
    with pytest.raises(UserError, match=f"{laf_id}_leftImg8bit.png"):
        load_benchmark("fs-lost-and-found", tmp_path / "fs")
    dataset = load_benchmark("fs-lost-and-found", tmp_path / "fs", image_root=tmp_path / "laf")
    image, label = dataset[0]
    assert label.tolist() == [[0, 1, 255]] and image.shape == (1, 3, 3)


def test_fishyscapes_static_adds_the_overlay(tmp_path):
    cs_id = "frankfurt_000000_000294"
    _label(tmp_path / "fs" / f"0003_{cs_id}_labels.png", np.array([[0, 1]]))
    overlay = np.array([[[200, 0, -150], [0, 0, 0]]])
    np.savez(tmp_path / "fs" / f"0003_{cs_id}_rgb.npz", rgb=overlay)
    _image(tmp_path / "cs/leftImg8bit/val/frankfurt" / f"{cs_id}_leftImg8bit.png", 1, 2)
    dataset = load_benchmark("fs-static", tmp_path / "fs", image_root=tmp_path / "cs")
    image, _ = dataset[0]
    assert image[0, 0].tolist() == [255, 100, 0] and image[0, 1].tolist() == [100, 100, 100]


def test_cityscapes_train_ids(tmp_path):
    city = "lindau"
    _image(tmp_path / "leftImg8bit/val" / city / f"{city}_000000_000019_leftImg8bit.png", 1, 4)
    ids = np.array([[7, 26, 33, 4]])
    _label(tmp_path / "gtFine/val" / city / f"{city}_000000_000019_gtFine_labelIds.png", ids)
    dataset = load_benchmark("cityscapes", tmp_path)
    assert dataset.load_label(0).tolist() == [[0, 13, 18, 255]] and dataset.track is None


def test_folder_adapter_with_label_map_and_sizes(tmp_path):
    _image(tmp_path / "images/x.png", 2, 3)
    _label(tmp_path / "labels/x.png", RAW)
    _image(tmp_path / "images/y.png", 4, 5)  # frames of different sizes
    _label(tmp_path / "labels/y.png", np.zeros((4, 5)))
    mapping = parse_label_map("0:0, 1:1, 2-200:1")
    dataset = load_benchmark("folder", tmp_path, label_map=mapping)
    assert dataset[0][1].tolist() == [[0, 1, 1], [1, 1, 255]]
    assert dataset[1][1].shape == (4, 5)
    with pytest.raises(UserError, match="SOURCE:TARGET"):
        parse_label_map("0=0")


def test_bad_layouts_give_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        load_benchmark("m2a", tmp_path / "missing")
    with pytest.raises(UserError, match="no frames found"):
        load_benchmark("m2a", tmp_path)
    with pytest.raises(UserError, match="unknown dataset"):
        load_benchmark("roadanomaly", tmp_path)
    _image(tmp_path / "images/a.png", 2, 3)
    with pytest.raises(UserError, match=r"no label for image .*a\.png"):
        load_benchmark("m2a", tmp_path)
    _label(tmp_path / "labels_masks/a.png", np.zeros((3, 3)))
    with pytest.raises(UserError, match=r"a\.png: label size"):
        load_benchmark("m2a", tmp_path)[0]
    assert set(BENCHMARKS) >= {"road-anomaly-21", "fs-static", "cityscapes", "folder"}


def test_folder_adapter_reads_semantic_labels_where_present(tmp_path):
    for stem in ("a", "b"):
        _image(tmp_path / "images" / f"{stem}.png", 2, 3)
        _label(tmp_path / "labels" / f"{stem}.png", np.array([[0, 1, 0], [0, 0, 255]]))
    # 300 does not fit uint8: written as a 16-bit PNG, read as void
    semantic = np.array([[0, 7, 18], [300, 19, 255]], np.uint16)
    (tmp_path / "semantic").mkdir()
    Image.fromarray(semantic).save(tmp_path / "semantic" / "a.png")
    dataset = load_benchmark("folder", tmp_path, label_map={0: 0, 1: 1})
    assert dataset.with_semantic == [0] and dataset.frames[1].semantic_path is None
    assert dataset.load_semantic(0).tolist() == [[0, 7, 18], [255, 19, 255]]
    with pytest.raises(UserError, match="b.png: this frame has no semantic label"):
        dataset.load_semantic(1)
