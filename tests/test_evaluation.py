"""Evaluation driver and CLI on a generated 4-image dataset: storage, resume, readers, report."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mask2anomaly.checkpoint import save_checkpoint
from mask2anomaly.cli import main
from mask2anomaly.config import load_config
from mask2anomaly.data.benchmarks import load_benchmark
from mask2anomaly.errors import UserError
from mask2anomaly.evaluation import pixel_metrics as M
from mask2anomaly.evaluation.driver import score_dataset, score_maps
from mask2anomaly.evaluation.maps import load_map, save_map
from mask2anomaly.model import build_model


def _make_dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 60), (40, 60), (32, 48), (40, 60)]):
        label = np.zeros((h, w), np.uint8)
        if i != 1:  # frame 1 has no anomaly
            label[5 : 5 + 6 + i, 10 : 20 + i] = 1
        label[-4:] = 255
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image[..., 0] = np.where(label == 1, 250, image[..., 0] // 2)  # anomalies are red
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels_masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"frame{i}.png")
        Image.fromarray(label).save(root / "labels_masks" / f"frame{i}.png")


def _score(image: np.ndarray) -> np.ndarray:
    return image[..., 0].astype(np.float32) / 255 + 0.01 * image[..., 1].astype(np.float32) / 255


def test_score_dataset_stores_resumes_and_matches_direct_metrics(tmp_path):
    _make_dataset(tmp_path / "data")
    dataset = load_benchmark("m2a", tmp_path / "data")
    calls = []

    def flaky(image):
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted after two frames
        calls.append(1)
        return _score(image)

    with pytest.raises(KeyboardInterrupt):
        score_dataset(dataset, flaky, tmp_path / "out")
    maps_dir = tmp_path / "out" / "maps" / "m2a"
    assert sorted(p.name for p in maps_dir.iterdir()) == ["frame0.npy", "frame1.npy"]
    rescored = []
    result = score_dataset(dataset, lambda im: rescored.append(1) or _score(im), tmp_path / "out",
                           protocols=M.PROTOCOLS)  # fmt: skip
    assert len(rescored) == 2  # the re-run scores only the two missing frames
    stored = [load_map(maps_dir / f"frame{i}.npy") for i in range(4)]
    assert all(s.dtype == np.float16 for s in stored)
    frames = [(s, dataset.load_label(i)) for i, s in enumerate(stored)]
    for protocol in M.PROTOCOLS:
        direct = M.pixel_metrics(frames, protocol).to_dict()
        assert result.pixel[protocol].to_dict() == direct
    assert result.pixel["mask2anomaly"].num_frames == 3
    assert result.track == "anomaly"
    assert len(result.worst_frames) == 3  # frames with anomaly, lowest AP first
    assert [w.ap for w in result.worst_frames] == sorted(w.ap for w in result.worst_frames)


def test_map_readers_agree(tmp_path):
    score = np.random.default_rng(1).random((5, 7)).astype(np.float16)
    save_map(tmp_path / "a.npy", score)
    save_map(tmp_path / "b.npz", score)
    Image.fromarray((score.astype(np.float64) * 1000).astype(np.uint16)).save(tmp_path / "c.png")
    assert np.array_equal(load_map(tmp_path / "a.npy"), score)
    assert np.array_equal(load_map(tmp_path / "b.npz"), score)
    png = load_map(tmp_path / "c.png")
    assert png.dtype == np.float32 and png.max() == pytest.approx(score.max() * 1000, abs=1)
    with pytest.raises(UserError, match="cannot read"):
        (tmp_path / "d.npy").write_text("not a map")
        load_map(tmp_path / "d.npy")


def test_score_maps_errors_name_the_file(tmp_path):
    _make_dataset(tmp_path / "data")
    dataset = load_benchmark("m2a", tmp_path / "data")
    maps = tmp_path / "maps"
    for i in range(3):
        save_map(maps / f"frame{i}.npy", np.zeros(dataset.load_label(i).shape))
    with pytest.raises(UserError, match="no anomaly map for frame frame3"):
        score_maps(maps, dataset)
    save_map(maps / "frame3.npy", np.zeros((3, 3)))
    with pytest.raises(UserError, match=r"frame3\.npy: map size"):
        score_maps(maps, dataset)
    np.save(maps / "frame3.npy", np.full(dataset.load_label(3).shape, np.nan, np.float32))
    with pytest.raises(UserError, match=r"frame3\.npy: score map holds NaN"):
        score_maps(maps, dataset)


def test_cli_score_writes_report(tmp_path, capsys):
    _make_dataset(tmp_path / "data")
    dataset = load_benchmark("m2a", tmp_path / "data")
    for i in range(4):
        image = dataset.load_image(i)
        save_map(tmp_path / "maps" / f"frame{i}.npz", _score(image))
    out = tmp_path / "report"
    code = main(["score", "--maps", str(tmp_path / "maps"), "--dataset", "m2a",
                 "--root", str(tmp_path / "data"), "--out", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())["results"][0]
    assert set(metrics["pixel"]) == set(M.PROTOCOLS) and "siou" in metrics["components"]
    table = (out / "metrics.md").read_text()
    assert "m2a AuPRC" in table and "mean FPR95" in table and "| smiyc |" in table
    for name in ("pr_curves.png", "roc_curves.png"):
        assert Image.open(out / name).size[0] > 100
    assert len(list((out / "worst" / "m2a").glob("*.png"))) == 3
    assert main(["score", "--maps", str(tmp_path / "nowhere"), "--dataset", "m2a",
                 "--root", str(tmp_path / "data"), "--out", str(out)]) == 2  # fmt: skip
    assert "maps folder not found" in capsys.readouterr().err


def test_cli_evaluate_with_a_stand_in_predictor(tmp_path, monkeypatch):
    _make_dataset(tmp_path / "a")
    _make_dataset(tmp_path / "b")

    class FakePredictor:
        @classmethod
        def from_checkpoint(cls, path, device="cpu", overrides=(), scores=("mask2anomaly",)):
            assert overrides == ["scoring.refinement=none"] and list(scores) == ["mask2anomaly"]
            return cls()

        def predict(self, image):
            return types.SimpleNamespace(maps={"mask2anomaly": _score(image)}, semantic=None)

    fake = types.ModuleType("mask2anomaly.inference.predictor")
    fake.Predictor = FakePredictor
    monkeypatch.setitem(sys.modules, "mask2anomaly.inference.predictor", fake)
    weights = tmp_path / "model.pt"  # a real checkpoint: evaluate records its config
    cfg = load_config("tiny")
    save_checkpoint(weights, build_model(cfg.model), cfg)
    out = tmp_path / "eval"
    args = ["evaluate", "--weights", str(weights), "--dataset", "m2a", "m2a-road-anomaly",
            "--root", str(tmp_path / "a"), str(tmp_path / "b"), "--protocol", "smiyc", "exact",
            "--out", str(out), "--set", "scoring.refinement=none"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert [r["dataset"] for r in results] == ["m2a", "m2a-road-anomaly"]
    assert results[0]["pixel"]["smiyc"] == results[1]["pixel"]["smiyc"]  # same data, same maps
    assert len(list((out / "maps" / "m2a").glob("*.npy"))) == 4
    assert main(args) == 0  # a re-run reuses the stored maps
