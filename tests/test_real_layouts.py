"""The public benchmark downloads as they unpack (issue 13): tiny trees with the real file-name
patterns, extensions and label encodings, unlabelled test frames, LostAndFound's empty-label and
known-object frames; run through the CLI and checked against scikit-learn on the frames that
must be scored."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_curve

from mask2anomaly.checkpoint import save_checkpoint
from mask2anomaly.cli import main
from mask2anomaly.config import load_config
from mask2anomaly.data.benchmarks import load_benchmark
from mask2anomaly.evaluation.maps import load_map
from mask2anomaly.model import build_model

H, W = 12, 16


def _image(path: Path, seed: int, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def _label(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)


def _binary_label(seed: int) -> np.ndarray:
    """0 inlier, 1 anomaly block, 255 void rows."""
    rng = np.random.default_rng(seed)
    label = np.zeros((H, W), np.uint8)
    top, left = rng.integers(0, H - 4), rng.integers(0, W - 5)
    label[top : top + 4, left : left + 5] = 1
    label[-2:] = 255
    return label


def _score(seed: int, label: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    return (0.4 * (label == 1) + rng.random(label.shape)).astype(np.float32)


def _exact(frames: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(AP, FPR at the first point with TPR >= 0.95) over pooled pixels, void dropped."""
    scores = np.concatenate([s[(lab == 0) | (lab == 1)] for s, lab in frames])
    truth = np.concatenate([lab[(lab == 0) | (lab == 1)] == 1 for _, lab in frames])
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    return average_precision_score(truth, scores), float(fpr[np.searchsorted(tpr, 0.95)])


def _run_score(capsys, maps: Path, name: str, root: Path, out: Path, *extra: str) -> dict:
    args = ["score", "--maps", str(maps), "--dataset", name, "--root", str(root),
            "--out", str(out), "--protocol", "exact", "smiyc", *extra]  # fmt: skip
    assert main(args) == 0
    result = json.loads((out / "metrics.json").read_text())["results"][0]
    result["printed"] = capsys.readouterr()
    return result


def _check(result: dict, frames: list[tuple[np.ndarray, np.ndarray]]) -> None:
    ap, fpr95 = _exact(frames)
    assert result["pixel"]["exact"]["auprc"] == pytest.approx(ap, abs=1e-9)
    assert result["pixel"]["exact"]["fpr95"] == pytest.approx(fpr95, abs=1e-9)


def _smiyc_track(root: Path, maps: Path, kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A SMIYC track folder: labelled validation frames, unlabelled test frames; maps for all
    (SMIYC's own .hdf5 for half, .npy for the others). Returns the labelled frames."""
    suffix, fmt = (".jpg", "JPEG") if kind == "anomaly" else (".webp", "WEBP")
    if kind == "anomaly":
        labelled = ["validation0000", "validation0001", "validation0002"]
        unlabelled = ["zebra0000", "cones0003"]
    else:
        labelled = ["validation_1_0000", "validation_19_0001", "validation_25_0002"]
        unlabelled = ["gravel_0000", "driveway_0001"]
    frames = {}
    for seed, fid in enumerate(labelled + unlabelled):
        _image(root / "images" / f"{fid}{suffix}", seed, fmt)
        label = _binary_label(seed)
        if fid in labelled:
            _label(root / "labels_masks" / f"{fid}_labels_semantic.png", label)
            frames[fid] = (_score(seed, label), label)
        score = _score(seed, label)
        maps.mkdir(parents=True, exist_ok=True)
        if seed % 2:
            with h5py.File(maps / f"{fid}.hdf5", "w") as file:
                file.create_dataset("value", data=score.astype(np.float16), compression="gzip")
            if fid in frames:
                frames[fid] = (score.astype(np.float16).astype(np.float32), frames[fid][1])
        else:
            np.save(maps / f"{fid}.npy", score)
    return frames


def test_road_anomaly_21_scores_the_labelled_frames_only(tmp_path, capsys):
    frames = _smiyc_track(tmp_path / "dataset_AnomalyTrack", tmp_path / "maps", "anomaly")
    result = _run_score(capsys, tmp_path / "maps", "road-anomaly-21",
                        tmp_path / "dataset_AnomalyTrack", tmp_path / "out")  # fmt: skip
    assert result["num_frames"] == 5 and result["num_scored"] == 3
    assert "3 frames scored, 2 without labels (predicted only)" in result["printed"].out
    _check(result, list(frames.values()))
    assert result["components"]["min_pred_size"] == 500  # anomaly track limits


def test_road_obstacle_21_validation_subset_leaves_out_smiyc_exclusions(tmp_path, capsys):
    frames = _smiyc_track(tmp_path / "dataset_ObstacleTrack", tmp_path / "maps", "obstacle")
    root = tmp_path / "dataset_ObstacleTrack"
    everything = _run_score(capsys, tmp_path / "maps", "road-obstacle-21", root, tmp_path / "a")
    assert everything["num_scored"] == 3
    _check(everything, list(frames.values()))
    assert everything["components"]["min_pred_size"] == 50  # obstacle track limits
    validation = _run_score(capsys, tmp_path / "maps", "road-obstacle-21", root,
                            tmp_path / "b", "--subset", "validation")  # fmt: skip
    # validation_19 and validation_25 are not part of SMIYC's ObstacleTrack-validation
    assert validation["num_frames"] == 1 and validation["num_scored"] == 1
    _check(validation, [frames["validation_1_0000"]])
    dataset = load_benchmark("road-obstacle-21", root, subset="test")
    assert [f.frame_id for f in dataset.frames] == ["gravel_0000"]  # driveway is "night"


LAF_FRAMES = {  # frame id -> kind
    "04_Maurener_Weg_8_000000_000030": "scored",
    "04_Maurener_Weg_8_000002_000120": "scored",
    "02_Hanns_Klemm_Str_44_000000_000190": "empty",  # in SMIYC's list of empty labels
    "15_Rechbergstr_Deckenpfronn_000001_000050": "known",  # children
}


def _lost_and_found(root: Path, maps: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """LostAndFound test split with raw labelIds (0 void, 1 road, 2..200 obstacles); maps as
    SMIYC writes them (<fid>.hdf5). Returns every frame's (score, expected 0/1/255 label)."""
    frames = {}
    for seed, (fid, kind) in enumerate(LAF_FRAMES.items()):
        scene = fid.rsplit("_", 2)[0]
        _image(root / "leftImg8bit/test" / scene / f"{fid}_leftImg8bit.png", seed)
        raw = np.zeros((H, W), np.uint8)
        if kind != "empty":
            raw[4:] = 1  # road below the horizon, void (0) above
            raw[6:9, 3:7] = 2 + 40 * seed  # an obstacle of class 2..200
        _label(root / "gtCoarse/test" / scene / f"{fid}_gtCoarse_labelIds.png", raw)
        expected = np.select([raw == 1, (raw >= 2) & (raw <= 200)], [0, 1], 255).astype(np.uint8)
        score = _score(seed, expected).astype(np.float16)
        maps.mkdir(parents=True, exist_ok=True)
        with h5py.File(maps / f"{fid}.hdf5", "w") as file:
            file.create_dataset("value", data=score, compression="gzip", compression_opts=9)
        frames[fid] = (score.astype(np.float32), expected)
    return frames


def test_lost_and_found_test_no_known_and_no_warnings(tmp_path, capsys, caplog):
    frames = _lost_and_found(tmp_path / "LostAndFound", tmp_path / "maps")
    root = tmp_path / "LostAndFound"
    default = _run_score(capsys, tmp_path / "maps", "lost-and-found", root, tmp_path / "a")
    assert default["subset"] == "testNoKnown" and default["num_scored"] == 2
    assert default["unmapped_pixels"] == {}
    assert "WARNING" not in caplog.text and "outside the label map" not in caplog.text
    assert "outside the label map" not in default["printed"].err
    _check(default, [frames[f] for f, kind in LAF_FRAMES.items() if kind == "scored"])
    full = _run_score(capsys, tmp_path / "maps", "lost-and-found", root, tmp_path / "b",
                      "--subset", "test")  # fmt: skip
    assert full["num_scored"] == 4
    _check(full, list(frames.values()))
    valid = load_benchmark("lost-and-found", root, subset="testValid")
    assert len(valid) == 3  # only the empty-label frame left out
    assert default["components"]["min_pred_size"] == 50


def test_fishyscapes_lost_and_found_layouts_and_map_names(tmp_path, capsys):
    laf_ids = ["04_Maurener_Weg_8_000000_000030", "01_Hanns_Klemm_Str_45_000001_000260"]
    flat, tree = tmp_path / "laf_flat", tmp_path / "LostAndFound"
    fishy, smiyc = tmp_path / "fs_laf", tmp_path / "dataset_FishyLAF"
    maps_fs, maps_smiyc = tmp_path / "maps_fs", tmp_path / "maps_smiyc"
    frames = []
    for n, laf_id in enumerate(laf_ids):
        _image(flat / f"{laf_id}_leftImg8bit.png", n)  # a flat folder (as RbA keeps them)
        split = "test" if laf_id.startswith("04") else "train"
        _image(tree / "leftImg8bit" / split / laf_id.rsplit("_", 2)[0]
               / f"{laf_id}_leftImg8bit.png", n)  # fmt: skip
        label = _binary_label(n)
        _label(fishy / f"{n:04d}_{laf_id}_labels.png", label)
        _label(smiyc / "labels/val" / f"{laf_id}_fishy-labels.png", label)
        score = _score(n, label)
        maps_fs.mkdir(exist_ok=True)
        np.save(maps_fs / f"{n:04d}_anomaly.npy", score)  # a Fishyscapes container's name
        maps_smiyc.mkdir(exist_ok=True)
        with h5py.File(maps_smiyc / f"{laf_id}.hdf5", "w") as file:
            file.create_dataset("value", data=score)
        frames.append((score, label))
    first = _run_score(capsys, maps_fs, "fs-lost-and-found", fishy, tmp_path / "a",
                       "--image-root", str(flat))  # fmt: skip
    second = _run_score(capsys, maps_smiyc, "fs-lost-and-found", smiyc, tmp_path / "b",
                        "--image-root", str(tree))  # fmt: skip
    for result in (first, second):
        assert result["num_scored"] == 2
        _check(result, frames)
    (maps_fs / "0001_anomaly.npy").unlink()
    code = main(["score", "--maps", str(maps_fs), "--dataset", "fs-lost-and-found",
                 "--root", str(fishy), "--image-root", str(flat), "--out",
                 str(tmp_path / "c")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "0001_anomaly.{npy" in err and "no anomaly map" in err


def test_fishyscapes_static_overlay_by_prefix_and_base_image_in_any_split(tmp_path, capsys):
    cs_id = "frankfurt_000001_000538"
    root, cityscapes = tmp_path / "fs_static", tmp_path / "cityscapes"
    label = _binary_label(3)
    _label(root / f"0007_{cs_id}_labels.png", label)
    overlay = np.zeros((H, W, 3), np.int16)
    overlay[label == 1] = (150, -100, 0)
    np.savez(root / f"0007_{cs_id}_rgb.npz", rgb=overlay)  # found by its prefix and suffix
    _image(cityscapes / "leftImg8bit/train/frankfurt" / f"{cs_id}_leftImg8bit.png", 3)
    dataset = load_benchmark("fs-static", root, image_root=cityscapes)
    base = np.asarray(Image.open(next(cityscapes.rglob("*.png"))), np.int64)
    assert np.array_equal(dataset.load_image(0), np.clip(base + overlay, 0, 255))
    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / "0007_anomaly.npy", _score(3, label))
    result = _run_score(capsys, maps, "fs-static", root, tmp_path / "out",
                        "--image-root", str(cityscapes))  # fmt: skip
    _check(result, [(_score(3, label), label)])


def test_score_reads_the_predict_output_folder(tmp_path, capsys):
    frames = _smiyc_track(tmp_path / "dataset_AnomalyTrack", tmp_path / "unused", "anomaly")
    predicted = tmp_path / "predictions"
    predicted.mkdir()
    for fid, (score, _) in frames.items():  # what `predict` writes for <fid>.jpg
        np.save(predicted / f"{fid}_anomaly.npy", score.astype(np.float16))
        Image.fromarray(np.zeros((H, W), np.uint16)).save(predicted / f"{fid}_anomaly.png")
    result = _run_score(capsys, predicted, "road-anomaly-21", tmp_path / "dataset_AnomalyTrack",
                        tmp_path / "out")  # fmt: skip
    rounded = [(s.astype(np.float16).astype(np.float32), lab) for s, lab in frames.values()]
    _check(result, rounded)


def test_bad_real_layout_inputs_name_the_file(tmp_path, capsys):
    frames = _smiyc_track(tmp_path / "dataset_AnomalyTrack", tmp_path / "maps", "anomaly")
    root = tmp_path / "dataset_AnomalyTrack"
    args = ["score", "--maps", str(tmp_path / "maps"), "--dataset", "road-anomaly-21",
            "--root", str(root), "--out", str(tmp_path / "out")]  # fmt: skip
    np.save(tmp_path / "maps" / "validation0000.npy", np.zeros((H + 1, W), np.float32))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "validation0000.npy" in err and "map size" in err and len(err.splitlines()) == 1
    np.save(tmp_path / "maps" / "validation0000.npy", frames["validation0000"][0])
    np.save(tmp_path / "maps" / "validation0001.npy", frames["validation0001"][0])  # + .hdf5
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "several maps for frame validation0001" in err and len(err.splitlines()) == 1
    (tmp_path / "maps" / "validation0001.npy").unlink()
    (tmp_path / "maps" / "validation0002.npy").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no anomaly map for frame validation0002" in err and len(err.splitlines()) == 1
    np.save(tmp_path / "maps" / "validation0002.npy", frames["validation0002"][0])
    _label(root / "labels_masks" / "validation0001_labels_semantic.png", np.zeros((H, W + 2)))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "validation0001_labels_semantic.png" in err and len(err.splitlines()) == 1


def test_evaluate_writes_a_smiyc_submission(tmp_path, capsys):
    root = tmp_path / "dataset_AnomalyTrack"
    _smiyc_track(root, tmp_path / "unused", "anomaly")
    cfg = load_config("tiny")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pt", build_model(cfg.model).eval(), cfg)
    out, submission = tmp_path / "eval", tmp_path / "submission"
    args = ["evaluate", "--weights", str(tmp_path / "tiny.pt"), "--device", "cpu",
            "--dataset", "road-anomaly-21", "--root", str(root), "--out", str(out),
            "--submission", str(submission), "--set", "inference.flip=False"]  # fmt: skip
    assert main(args) == 0
    files = sorted((submission / "AnomalyTrack-all").glob("*.hdf5"))
    assert [f.stem for f in files] == sorted(
        ["validation0000", "validation0001", "validation0002", "zebra0000", "cones0003"]
    )
    for path in files:
        with h5py.File(path, "r") as file:
            assert list(file) == ["value"]
            value = file["value"]
            assert value.dtype == np.float16 and value.compression == "gzip"
            assert value.compression_opts == 9
            stored = load_map(out / "maps" / "road-anomaly-21" / f"{path.stem}.npy")
            assert np.array_equal(value[()], stored) and value.shape == (H, W)
    manifest = json.loads((submission / "manifest.json").read_text())
    assert sorted(manifest["datasets"]["road-anomaly-21"]["frames"]) == [f.stem for f in files]
    assert len(manifest["weights_sha256"]) == 64 and manifest["config"]["model"]
    other = tmp_path / "m2a"
    _image(other / "images" / "a.png", 0)
    _label(other / "labels_masks" / "a.png", _binary_label(0))
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(tmp_path / "tiny.pt"), "--dataset", "m2a",
                 "--root", str(other), "--out", str(tmp_path / "eval2"),
                 "--submission", str(submission)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "not a SMIYC benchmark" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "eval2" / "maps").exists()  # refused before predicting


def test_several_datasets_get_their_own_track_and_subset(tmp_path, capsys):
    maps = tmp_path / "maps"
    anomaly = _smiyc_track(tmp_path / "dataset_AnomalyTrack", maps / "road-anomaly-21", "anomaly")
    obstacle = _smiyc_track(tmp_path / "dataset_ObstacleTrack", maps / "road-obstacle-21",
                            "obstacle")  # fmt: skip
    roots = [str(tmp_path / "dataset_AnomalyTrack"), str(tmp_path / "dataset_ObstacleTrack")]

    def run(out: str, *extra: str) -> dict:
        args = ["score", "--maps", str(maps), "--dataset", "road-anomaly-21",
                "road-obstacle-21", "--root", *roots, "--out", str(tmp_path / out),
                "--protocol", "exact", "smiyc", *extra]  # fmt: skip
        assert main(args) == 0
        results = json.loads((tmp_path / out / "metrics.json").read_text())["results"]
        return {r["dataset"]: r for r in results}

    found = run("default", "--subset", "all", "validation")
    assert found["road-anomaly-21"]["components"]["min_pred_size"] == 500  # anomaly track
    assert found["road-obstacle-21"]["components"]["min_pred_size"] == 50  # obstacle track
    assert found["road-anomaly-21"]["num_scored"] == 3  # all: every labelled frame
    assert found["road-obstacle-21"]["num_scored"] == 1  # validation: SMIYC's exclusions out
    _check(found["road-anomaly-21"], list(anomaly.values()))
    _check(found["road-obstacle-21"], [obstacle["validation_1_0000"]])
    overridden = run("forced", "--track", "anomaly")
    assert {r["components"]["min_pred_size"] for r in overridden.values()} == {500}


def test_road_anomaly_original_layout_through_the_cli(tmp_path, capsys):
    """RoadAnomaly_jpg as unpacked: frames/<name>.jpg, frames/<name>.labels/labels_semantic.png
    (0 road / inlier, 2 anomaly, 1 void here) and frame_list.json naming the frames."""
    root, maps = tmp_path / "RoadAnomaly_jpg", tmp_path / "maps"
    names = ["animals01", "cones02", "tractor03"]
    frames = []
    for seed, name in enumerate(names):
        _image(root / "frames" / f"{name}.jpg", seed, "JPEG")
        label = _binary_label(seed)
        encoded = np.select([label == 1, label == 255], [2, 1], 0)
        _label(root / "frames" / f"{name}.labels" / "labels_semantic.png", encoded)
        score = _score(seed, label)
        maps.mkdir(exist_ok=True)
        np.save(maps / f"{name}.npy", score)
        frames.append((score, label))
    (root / "frame_list.json").write_text(json.dumps([f"{n}.jpg" for n in names]))
    result = _run_score(capsys, maps, "road-anomaly", root, tmp_path / "out")
    assert result["num_frames"] == 3 and result["num_scored"] == 3
    _check(result, frames)


def test_score_writes_a_submission_of_stored_maps(tmp_path, capsys):
    maps = tmp_path / "maps"
    _smiyc_track(tmp_path / "dataset_ObstacleTrack", maps, "obstacle")
    submission = tmp_path / "submission"
    _run_score(capsys, maps, "road-obstacle-21", tmp_path / "dataset_ObstacleTrack",
               tmp_path / "out", "--submission", str(submission))  # fmt: skip
    files = sorted((submission / "ObstacleTrack-all").glob("*.hdf5"))
    assert len(files) == 5  # labelled and unlabelled frames alike
    for path in files:
        with h5py.File(path, "r") as file:
            value = file["value"][()]
        assert value.dtype == np.float16 and value.shape == (H, W)
        stored = load_map(next(maps.glob(f"{path.stem}.*")))
        assert np.array_equal(value, stored.astype(np.float16))
