"""`mask2anomaly evaluate` with a real (tiny) checkpoint on a small synthetic world."""

from __future__ import annotations

import json

import numpy as np
import torch

from mask2anomaly.checkpoint import save_checkpoint
from mask2anomaly.cli import main
from mask2anomaly.config import load_config
from mask2anomaly.data.benchmarks import load_benchmark
from mask2anomaly.data.synthetic import write_world
from mask2anomaly.evaluation.maps import load_map
from mask2anomaly.inference.predictor import Predictor
from mask2anomaly.model import build_model


def test_evaluate_stores_the_predictor_maps_and_scores_them(tmp_path, capsys):
    world = tmp_path / "world"
    write_world(world, num_train=1, num_val=2, num_outliers=1, num_test=2)
    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    save_checkpoint(tmp_path / "tiny.pt", model, cfg)
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--weights",
        str(tmp_path / "tiny.pt"),
        "--device",
        "cpu",
        "--dataset",
        "road-anomaly-21",
        "cityscapes",
        "--root",
        str(world / "dataset_AnomalyTrack"),
        str(world / "cityscapes"),
        "--out",
        str(out),
        "--set",
        "inference.flip=False",
    ]
    assert main(args) == 0
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert [r["dataset"] for r in results] == ["road-anomaly-21", "cityscapes"]
    assert 0 <= results[0]["pixel"]["smiyc"]["auprc"] <= 1 and "miou" in results[1]["semantic"]
    dataset = load_benchmark("road-anomaly-21", world / "dataset_AnomalyTrack")
    predictor = Predictor(
        model,
        scoring=cfg.scoring,
        inference=load_config("tiny", ["inference.flip=False"]).inference,
    )
    frame = dataset.frames[0]
    stored = load_map(next((out / "maps" / "road-anomaly-21").glob(f"{frame.frame_id}.*")))
    expected = predictor.predict(dataset.load_image(0)).anomaly_score.astype(np.float16)
    assert np.array_equal(stored, expected)
    assert "road-anomaly-21" in capsys.readouterr().out


def test_evaluate_in_bf16_prints_its_throughput(tmp_path, capsys):
    world = tmp_path / "world"
    write_world(world, num_train=1, num_val=0, num_outliers=1, num_test=2)
    cfg = load_config("tiny", ["inference.flip=False"])
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pt", build_model(cfg.model), cfg)
    dataset = load_benchmark("road-anomaly-21", world / "dataset_AnomalyTrack")
    args = ["evaluate", "--weights", str(tmp_path / "tiny.pt"), "--device", "cpu",
            "--dataset", "road-anomaly-21", "--root", str(world / "dataset_AnomalyTrack"),
            "--out", str(tmp_path / "eval"), "--precision", "bf16"]  # fmt: skip
    assert main(args) == 0
    assert f"{len(dataset)} frames in " in capsys.readouterr().out
    bf16 = Predictor.from_checkpoint(tmp_path / "tiny.pt", overrides=["inference.precision=bf16"])
    frame = dataset.frames[0]
    stored = load_map(
        next((tmp_path / "eval" / "maps" / "road-anomaly-21").glob(f"{frame.frame_id}.*"))
    )
    assert np.array_equal(
        stored, bf16.predict(dataset.load_image(0)).anomaly_score.astype(np.float16)
    )
    assert main(args) == 0  # resumed: nothing left to predict
    assert "no frames predicted" in capsys.readouterr().out


def test_evaluate_several_scores_runs_the_model_once_per_frame(tmp_path, capsys, monkeypatch):
    from mask2anomaly.evaluation.open_set_metrics import OpenSetIoU, open_set_label
    from mask2anomaly.model import Mask2Anomaly

    world = tmp_path / "world"
    write_world(world, num_train=1, num_val=1, num_outliers=1, num_test=3)
    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    save_checkpoint(tmp_path / "tiny.pt", model, cfg)
    views = []
    infer = Mask2Anomaly.infer
    monkeypatch.setattr(
        Mask2Anomaly, "infer", lambda self, x: views.append(len(x)) or infer(self, x)
    )
    out, scores = tmp_path / "eval", ["rba", "mask2anomaly", "eam"]
    args = ["evaluate", "--weights", str(tmp_path / "tiny.pt"), "--device", "cpu",
            "--dataset", "road-anomaly-21", "--root", str(world / "dataset_AnomalyTrack"),
            "--out", str(out), "--set", "inference.flip=False", "--protocol", "smiyc",
            "--score", *scores]  # fmt: skip
    assert main(args) == 0
    assert sum(views) == 3  # one view per frame (no flip), for three scores
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert [r["score"] for r in results] == scores
    dataset = load_benchmark("road-anomaly-21", world / "dataset_AnomalyTrack")
    predictor = Predictor(model, inference=load_config("tiny", ["inference.flip=False"]).inference,
                          scores=scores)  # fmt: skip
    predictions = [predictor.predict(dataset.load_image(i)) for i in range(3)]
    for result in results:
        score = result["score"]
        folder = out / "maps" / ("" if score == "mask2anomaly" else score) / "road-anomaly-21"
        for i, prediction in enumerate(predictions):
            stored = load_map(folder / f"{dataset.frames[i].frame_id}.npy")
            assert np.array_equal(stored, prediction.maps[score].astype(np.float16))
        points = result["operating_points"]
        assert set(points) == {"tpr95", "fpr5", "best-f1"}
        # the open-set numbers are the ISSU metric of the stored maps at those thresholds
        metric = OpenSetIoU(19, points)
        for i, prediction in enumerate(predictions):
            stored = load_map(folder / f"{dataset.frames[i].frame_id}.npy")
            label = open_set_label(dataset.load_semantic(i), dataset.load_label(i), 19)
            metric.update(stored, prediction.semantic, label)
        assert result["open_set"]["open_miou"] == metric.compute().to_dict()["open_miou"]
        assert 0 <= result["open_set"]["closed_miou"] <= 1
    table = (out / "metrics.md").read_text()
    assert "| score | protocol |" in table and "| rba | smiyc |" in table
    assert "| eam | road-anomaly-21 |" in table and "open mIoU @tpr95" in table
    # another set of scores is another setting: refused without --overwrite
    assert main(args[:-3] + ["msp"]) == 2
    assert "--overwrite" in capsys.readouterr().err
