"""Anomaly instances (issue 17): extraction by components and by query, query masks of the
Predictor against the literal path, COCO RLE and OoDIS files read back, predict / evaluate
--instances, the synthetic world's instance labels, and the bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as coco_mask

from mask2anomaly.cli import main
from mask2anomaly.errors import UserError
from mask2anomaly.evaluation.instance_metrics import InstanceAP, InstanceTruth
from mask2anomaly.evaluation.instances import (
    component_instances,
    decode_rle,
    encode_rle,
    query_instances,
)
from mask2anomaly.evaluation.oodis import read_oodis_frame
from mask2anomaly.inference.predictor import Predictor, resized_shape


def _image(seed: int, shape=(40, 56)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_components_by_hand():
    score = np.zeros((10, 12), np.float32)
    score[1:4, 1:4] = [[0.6, 0.7, 0.8], [0.9, 1.0, 0.6], [0.6, 0.6, 0.6]]
    score[4, 4] = 0.9  # touches the block diagonally: one component (8-connectivity)
    score[7:9, 8:10] = 0.95  # four pixels: below min_area 5
    score[0, 11] = 0.5  # not above the threshold 0.5 (strict)
    found = component_instances(score, 0.5, min_area=5)
    assert len(found) == 1
    (blob,) = found
    assert blob.box == (1, 1, 4, 4) and blob.area == 10
    assert blob.confidence == pytest.approx((6.4 + 0.9) / 10)
    assert component_instances(score, 0.5, min_area=5, confidence="max")[0].confidence == 1.0
    two = component_instances(score, 0.5, min_area=4)
    assert [i.area for i in two] == [4, 10]  # highest confidence first (0.95 > 0.73)


def test_queries_by_hand():
    score = np.zeros((8, 8), np.float32)
    score[:, :4] = 0.9
    score[:, 4:] = 0.2
    masks = np.zeros((4, 8, 8), bool)
    masks[0, :, :5] = True  # mean (32 * .9 + 8 * .2) / 40 = 0.76
    masks[1, :4, :3] = True  # mean 0.9: taken first
    masks[2, :, 6:] = True  # mean 0.2: not anomalous
    masks[3, 5:, :1] = True  # 3 pixels: below min_area
    found = query_instances(masks, score, 0.5, min_area=4)
    assert [i.query for i in found] == [1, 0]
    np.testing.assert_array_equal(found[0].mask, masks[1])
    np.testing.assert_array_equal(found[1].mask, masks[0] & ~masks[1])  # overlap: to query 1
    rest = score[masks[0] & ~masks[1]]
    assert found[1].confidence == pytest.approx(rest.astype(np.float64).mean())


def test_rle_round_trip_and_coco_record():
    mask = np.random.default_rng(0).random((37, 53)) < 0.3
    rle = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle(json.loads(json.dumps(rle))), mask)
    encoded = {"size": rle["size"], "counts": rle["counts"].encode()}
    assert int(coco_mask.area(encoded)) == mask.sum()
    score = mask.astype(np.float32)
    instance = component_instances(score, 0.5, min_area=1)[0]
    record = instance.to_coco(0)
    x, y, w, h = record["bbox"]
    stored = {"size": record["segmentation"]["size"],
              "counts": record["segmentation"]["counts"].encode()}  # fmt: skip
    np.testing.assert_array_equal(coco_mask.toBbox(stored), [x, y, w, h])
    assert record["area"] == instance.mask.sum() and record["score"] == 1.0


def _literal_query_masks(model, image: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """sigmoid of the mask logits upsampled to the padded input, cropped, resized back (all at
    once), > 0.5."""
    height, width = image.shape[:2]
    h, w = resized_shape(height, width, min_size, max_size)
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    with torch.no_grad():
        batch = model.preprocess([torch.from_numpy(resized.copy()).permute(2, 0, 1).float()])
        logits = model(batch).mask_logits
        full = F.interpolate(logits, size=batch.shape[-2:], mode="bilinear", align_corners=False)
        probs = full[:, :, :h, :w].sigmoid()
        back = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
    return (back[0] > 0.5).numpy()


@pytest.mark.parametrize("shape", [(40, 56), (32, 64)])  # resized back / already at size
def test_query_masks_equal_the_literal_path(checkpoint, shape):
    predictor = Predictor.from_checkpoint(checkpoint)
    image = _image(1, shape)
    prediction = predictor.predict(image, return_query_masks=True)
    cfg = predictor.inference
    expected = _literal_query_masks(predictor.model, image, cfg.min_size, cfg.max_size)
    assert prediction.query_masks is not None and prediction.query_masks.shape == expected.shape
    np.testing.assert_array_equal(prediction.query_masks, expected)
    assert predictor.predict(image).query_masks is None
    threshold = float(np.quantile(prediction.anomaly_score, 0.5))
    found = prediction.instances("queries", threshold, min_area=1)
    assert all(i.confidence > threshold for i in found)


def test_prediction_instances_refuses_bad_requests(checkpoint):
    prediction = Predictor.from_checkpoint(checkpoint).predict(_image(2))
    with pytest.raises(UserError, match="return_query_masks=True"):
        prediction.instances("queries", 0.5)
    with pytest.raises(UserError, match="outside the range"):
        prediction.instances("components", 3.0)
    with pytest.raises(UserError, match="min_area"):
        prediction.instances("components", 0.5, min_area=0)


def _folder(tmp_path: Path, count: int = 3) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(count):
        Image.fromarray(_image(10 + i)).save(folder / f"frame{i}.png")
    return folder


def _threshold(checkpoint: Path, folder: Path, quantile: float) -> float:
    predictor = Predictor.from_checkpoint(checkpoint)
    maps = [predictor.predict(np.asarray(Image.open(p))).anomaly_score
            for p in sorted(folder.glob("*.png"))]  # fmt: skip
    return float(np.quantile(np.concatenate([m.ravel() for m in maps]), quantile))


def _predict(checkpoint: Path, folder: Path, out: Path, *options: str) -> int:
    return main(["predict", "--weights", str(checkpoint), str(folder), "--out", str(out),
                 "--device", "cpu", *options])  # fmt: skip


def test_predict_writes_coco_instances_that_read_back(checkpoint, tmp_path):
    folder = _folder(tmp_path)
    threshold = _threshold(checkpoint, folder, 0.8)
    out = tmp_path / "out"
    assert _predict(checkpoint, folder, out, "--instances", "components",
                    "--instance-threshold", repr(threshold), "--min-area", "2") == 0  # fmt: skip
    predictor = Predictor.from_checkpoint(checkpoint)
    total = 0
    for path in sorted(folder.glob("*.png")):
        expected = predictor.predict(np.asarray(Image.open(path)))
        expected = expected.instances("components", threshold, min_area=2)
        stored = json.loads((out / f"{path.stem}_instances.json").read_text())
        assert stored["method"] == "components" and stored["threshold"] == threshold
        records = stored["instances"]
        assert len(records) == len(expected)
        for record, instance in zip(records, expected, strict=True):
            np.testing.assert_array_equal(decode_rle(record["segmentation"]), instance.mask)
            assert record["score"] == pytest.approx(instance.confidence, abs=1e-12)
            assert record["bbox"] == list(instance.box) and record["area"] == instance.area
        total += len(records)
        assert (out / f"{path.stem}_overlay.jpg").is_file()
    assert total > 0
    # other instance settings are other outputs: refused without --overwrite
    assert _predict(checkpoint, folder, out, "--instances", "components",
                    "--instance-threshold", "0.9") == 2  # fmt: skip


def test_oodis_files_read_back_and_score_as_cityscapesscripts_does(checkpoint, tmp_path):
    folder = _folder(tmp_path)
    threshold = _threshold(checkpoint, folder, 0.7)
    out = tmp_path / "roadanomaly"
    assert _predict(checkpoint, folder, out, "--instances", "components", "--instance-threshold",
                    repr(threshold), "--format", "oodis", "--min-area", "3") == 0  # fmt: skip
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    txts = [n for n in names if n.endswith("_instanceIds_pred.txt")]
    assert txts == [f"frame{i}_instanceIds_pred.txt" for i in range(3)]
    predictor = Predictor.from_checkpoint(checkpoint)
    metric, truths = InstanceAP(), []
    for i, path in enumerate(sorted(folder.glob("*.png"))):
        expected = predictor.predict(np.asarray(Image.open(path)))
        expected = expected.instances("components", threshold, min_area=3)
        stored = read_oodis_frame(out / txts[i])
        assert len(stored) == max(1, len(expected))  # an image with none: one empty mask
        for (mask, confidence), instance in zip(stored, expected, strict=False):
            np.testing.assert_array_equal(mask, instance.mask)
            assert confidence == instance.confidence
        ids = np.full(mask.shape, 7, np.uint16)
        ids[5:25, 10:40] = 26000
        ids[30:, :8] = 0
        truths.append(ids)
        metric.update(InstanceTruth.from_instance_ids(ids), expected)
    cityscapes = pytest.importorskip("cityscapesscripts")
    assert cityscapes
    from cityscapes_instances import car_row, run_reference

    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    gt_files = []
    for i, ids in enumerate(truths):
        gt_files.append(str(gt_dir / f"frame_000000_{i:06d}_gtFine_instanceIds.png"))
        Image.fromarray(ids).save(gt_files[-1])
    result = run_reference(tmp_path, [str(out / t) for t in txts], gt_files, prediction_dir=out)
    np.testing.assert_allclose(metric.compute().ap_per_overlap, car_row(result), atol=1e-9)


def test_oodis_folder_with_other_files_is_refused(checkpoint, tmp_path):
    folder = _folder(tmp_path, 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = _predict(checkpoint, folder, out, "--instances", "components",
                    "--instance-threshold", "0.5", "--format", "oodis", "--overwrite")  # fmt: skip
    assert code == 2 and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--instances", "components"), "--instances needs --instance-threshold"),
        (("--instances", "queries", "--instance-threshold", "tpr95"), "needs --calibration"),
        (("--format", "oodis"), "--format is used with --instances only"),
        (("--instances", "components", "--instance-threshold", "7"), "outside the range"),
        (("--instances", "components", "--instance-threshold", "x"), "expected a number"),
    ],
)
def test_predict_instance_flags_are_checked(checkpoint, tmp_path, capsys, options, message):
    assert _predict(checkpoint, _folder(tmp_path, 1), tmp_path / "out", *options) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_calibration_without_the_operating_point_names_the_file(checkpoint, tmp_path, capsys):
    calibration = tmp_path / "metrics.json"
    calibration.write_text(json.dumps({"results": [{"dataset": "m2a", "operating_points": {
        "tpr95": 0.4, "fpr5": None, "best-f1": 0.6}}]}))  # fmt: skip
    code = _predict(checkpoint, _folder(tmp_path, 1), tmp_path / "out", "--instances",
                    "components", "--instance-threshold", "fpr5", "--calibration",
                    str(calibration))  # fmt: skip
    assert code == 2 and f"{calibration}: no fpr5 threshold" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    assert _predict(checkpoint, _folder(tmp_path / "b", 1), tmp_path / "out2", "--instances",
                    "components", "--instance-threshold", "best-f1", "--calibration",
                    str(calibration)) == 0  # fmt: skip
    stored = json.loads(next((tmp_path / "out2").glob("*_instances.json")).read_text())
    assert stored["threshold"] == 0.6


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from mask2anomaly.data.synthetic import write_world

    root = tmp_path_factory.mktemp("world")
    write_world(root, seed=5, size=(64, 128), num_train=1, num_val=1, num_outliers=1,
                num_test=3)  # fmt: skip
    return root


def test_synthetic_test_frames_carry_instance_labels(world):
    from mask2anomaly.data.benchmarks import load_benchmark

    for name, folder in (("road-anomaly-21", "dataset_AnomalyTrack"),
                         ("road-obstacle-21", "dataset_ObstacleTrack")):  # fmt: skip
        dataset = load_benchmark(name, world / folder)
        for i in dataset.labelled:
            ids, label = dataset.load_instance_ids(i), dataset.load_label(i)
            assert ids is not None and ids.dtype == np.uint16
            np.testing.assert_array_equal(ids >= 26000, label == 1)
            np.testing.assert_array_equal(ids == 0, label == 255)
            assert set(np.unique(ids[ids < 1000])) <= {0, 7}


def test_evaluate_reports_instance_ap_of_both_methods(world, checkpoint, tmp_path):
    root, out = world / "dataset_AnomalyTrack", tmp_path / "eval"
    args = ["evaluate", "--weights", str(checkpoint), "--dataset", "road-anomaly-21", "--root",
            str(root), "--out", str(out), "--device", "cpu", "--protocol", "exact",
            "--instances", "components", "queries", "--min-area", "3"]  # fmt: skip
    assert main(args) == 0
    (result,) = json.loads((out / "metrics.json").read_text())["results"]
    components, queries = result["instances"]
    threshold = result["operating_points"]["best-f1"]
    assert components["threshold"] == threshold and components["ground_truth"] == "instance labels"
    from mask2anomaly.data.benchmarks import load_benchmark
    from mask2anomaly.evaluation.instance_scoring import load_query_masks

    dataset = load_benchmark("road-anomaly-21", root)
    predictor = Predictor.from_checkpoint(checkpoint)
    metric = InstanceAP()
    for i in dataset.labelled:
        frame = dataset.frames[i]
        score = np.load(out / "maps" / "road-anomaly-21" / f"{frame.frame_id}.npy")
        truth = InstanceTruth.from_instance_ids(dataset.load_instance_ids(i))
        metric.update(truth, component_instances(score.astype(np.float32), threshold, min_area=3))
        masks = load_query_masks(out / "queries" / "road-anomaly-21" / f"{frame.frame_id}.json")
        expected = predictor.predict(dataset.load_image(i), return_query_masks=True).query_masks
        np.testing.assert_array_equal(masks, expected[expected.any((1, 2))])
    again = metric.compute()
    assert components["ap"] == pytest.approx(again.ap, abs=1e-12)
    assert components["num_gt"] == again.num_gt > 0
    assert queries["method"] == "queries" and queries["num_gt"] == again.num_gt
    assert "Anomaly instances" in (out / "metrics.md").read_text()


def test_bad_instance_labels_are_one_line_errors(world, tmp_path, capsys):
    root = world / "dataset_AnomalyTrack"
    maps = tmp_path / "maps"
    maps.mkdir()
    labels = tmp_path / "instances"
    labels.mkdir()
    from mask2anomaly.data.benchmarks import load_benchmark

    dataset = load_benchmark("road-anomaly-21", root)
    for frame in dataset.frames:
        np.save(maps / f"{frame.frame_id}.npy", np.zeros((64, 128), np.float16))
    bad = labels / f"{dataset.frames[0].frame_id}_instanceIds.png"
    Image.fromarray(np.full((64, 128), 255, np.uint8)).save(bad)  # 8-bit 0/255: not instanceIds
    base = ["score", "--maps", str(maps), "--dataset", "road-anomaly-21", "--root", str(root),
            "--protocol", "exact"]  # fmt: skip
    code = main([*base, "--out", str(tmp_path / "o1"), "--instances", "components",
                 "--instance-labels", str(labels), "--instance-threshold", "0.5"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{bad}: not a Cityscapes instanceIds label" in err
    assert len(err.splitlines()) == 1
    code = main([*base, "--out", str(tmp_path / "o2"), "--instance-threshold", "0.5"])
    assert code == 2 and "--instance-threshold is used with --instances only" in (
        capsys.readouterr().err
    )
    code = main([*base, "--out", str(tmp_path / "o3"), "--instances", "queries"])
    assert code == 2 and "needs the model" in capsys.readouterr().err
