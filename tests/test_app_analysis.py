"""The app's computing side, without Gradio (issue 18): cached predictions equal the Predictor's,
display settings never re-run the model, views, calibration files, uploads, downloads."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mask2anomaly.app.analysis import (
    Analyser,
    AppSettings,
    calibration_threshold,
    score_thresholds,
    view_picture,
)
from mask2anomaly.app.files import read_upload, write_downloads, write_examples
from mask2anomaly.cli import main
from mask2anomaly.config import load_config
from mask2anomaly.errors import UserError
from mask2anomaly.inference.pictures import (
    CONTOUR_COLOR,
    colorize_semantic,
    heat_overlay,
    mask_boundary,
)
from mask2anomaly.inference.predictor import Predictor
from mask2anomaly.model import build_model
from mask2anomaly.scoring.scores import display_range

SMALL = ["inference.min_size=32", "inference.max_size=64"]


def count_calls(model: torch.nn.Module) -> list[int]:
    """Count the network's forward passes (Predictor calls `infer` once per batch of views)."""
    calls: list[int] = []
    infer = model.infer

    def counted(batch: torch.Tensor):  # type: ignore[no-untyped-def]
        calls.append(batch.shape[0])
        return infer(batch)

    model.infer = counted  # type: ignore[method-assign]
    return calls


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    cfg = load_config("tiny", SMALL)
    return build_model(cfg.model), cfg


def _image(seed: int, size: tuple[int, int] = (40, 70)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3)).astype(np.uint8)


def test_analysis_equals_the_predictor_and_display_settings_reuse_it(parts):
    model, cfg = parts
    image = _image(0)
    expected = Predictor(model, scoring=cfg.scoring, inference=cfg.inference).predict(image)
    no_flip = replace(cfg.inference, flip=False)
    single = Predictor(model, scoring=cfg.scoring, inference=no_flip).predict(image)
    analyser = Analyser(model, scoring=cfg.scoring, inference=cfg.inference)
    calls = count_calls(model)
    first = analyser.analyse(image, AppSettings(threshold=0.5))
    assert len(calls) == 2 and not first.cached  # the image and its flip, batch 1 on CPU
    np.testing.assert_allclose(first.anomaly_map, expected.anomaly_score, atol=1e-6)
    np.testing.assert_array_equal(first.prediction.semantic, expected.semantic)
    for settings in (
        AppSettings(threshold=0.2),
        AppSettings(threshold=0.2, view="mask"),
        AppSettings(refinement=False, view="heat map"),
    ):
        again = analyser.analyse(image.copy(), settings)
        assert again.cached and again.seconds == first.seconds
        assert again.prediction is first.prediction
    assert len(calls) == 2
    unrefined = analyser.analyse(image, AppSettings(refinement=False))
    np.testing.assert_allclose(unrefined.anomaly_map, expected.anomaly_score_unrefined, atol=1e-6)
    unflipped = analyser.analyse(image, AppSettings(flip=False))  # a prediction setting
    assert len(calls) == 3 and not unflipped.cached
    np.testing.assert_allclose(unflipped.anomaly_map, single.anomaly_score, atol=1e-6)
    assert analyser.analyse(image, AppSettings(flip=True)).cached


def test_cache_keeps_the_latest_predictions(parts):
    model, cfg = parts
    analyser = Analyser(model, scoring=cfg.scoring, inference=cfg.inference, cache_size=2)
    calls = count_calls(model)
    settings = AppSettings(flip=False)
    for seed in (1, 2, 3):
        analyser.analyse(_image(seed), settings)
    assert len(calls) == 3
    assert analyser.analyse(_image(3), settings).cached
    assert analyser.analyse(_image(2), settings).cached
    assert not analyser.analyse(_image(1), settings).cached  # evicted
    assert len(calls) == 4
    # the same pixels in another shape are another image
    flat = _image(3).reshape(70, 40, 3)
    assert not analyser.analyse(flat, settings).cached


def test_refinement_can_be_switched_on_for_a_checkpoint_without_it(parts):
    model, cfg = parts
    scoring = replace(cfg.scoring, refinement="none")
    analyser = Analyser(model, scoring=scoring, inference=cfg.inference)
    assert analyser.scoring.refinement == "official"


def test_views_draw_the_map_at_the_threshold():
    image = np.full((8, 8, 3), 100, np.uint8)
    score = np.zeros((8, 8), np.float32)
    score[2:6, 2:6] = 0.9
    np.testing.assert_array_equal(
        view_picture(image, score, 0.5, "overlay"), heat_overlay(image, score, threshold=0.5)
    )
    mask = view_picture(image, score, 0.5, "mask")
    above = score >= 0.5
    assert (mask[above][:, 0] > mask[above][:, 1]).all()  # red inside
    assert (mask[~above] == 45).all()  # dimmed outside: 100 * 0.45
    heat = view_picture(image, score, 0.5, "heat map")
    assert (heat[3, 3] != heat[0, 0]).any() and tuple(heat[2, 2]) == (0, 255, 0)  # contour
    assert (view_picture(image, score, 0.95, "mask")[above] == 45).all()
    with pytest.raises(UserError, match="view must be one of"):
        view_picture(image, score, 0.5, "sideways")


def test_settings_are_checked():
    with pytest.raises(UserError, match="finite"):
        AppSettings(threshold=float("nan"))
    with pytest.raises(UserError, match="view must be one of"):
        AppSettings(view="x")
    assert AppSettings(flip=False).prediction_key != AppSettings().prediction_key
    assert AppSettings(threshold=0.1, view="mask").prediction_key == AppSettings().prediction_key
    for wrong in ({"score": "max"}, {"instances": "boxes"}):
        with pytest.raises(UserError, match=f"{next(iter(wrong))} must be one of"):
            AppSettings(**wrong)
    assert AppSettings(score="rba").prediction_key != AppSettings().prediction_key
    assert AppSettings(instances="queries").prediction_key != AppSettings().prediction_key
    same = AppSettings(open_set=False, instances="components")
    assert same.prediction_key == AppSettings().prediction_key


def test_calibration_files(tmp_path):
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"threshold": 0.73}))
    assert calibration_threshold(own) == (0.73, "threshold")
    metrics = tmp_path / "metrics.json"  # the layout of `mask2anomaly evaluate`'s metrics.json
    results = [
        {"dataset": "cityscapes", "miou": 0.5},
        {"dataset": "road-anomaly-21", "pixel": {"smiyc": {"best_f1_threshold": 0.61}}},
        {"dataset": "road-obstacle-21", "pixel": {"smiyc": {"best_f1_threshold": 0.2}}},
    ]
    metrics.write_text(json.dumps({"results": results}))
    assert calibration_threshold(metrics) == (0.61, "road-anomaly-21 smiyc best F1")
    for text, message in (
        ("{", "cannot read calibration JSON"),
        ('{"results": []}', "no threshold in it"),
        ('{"threshold": null}', "not a finite number"),
        ('{"threshold": true}', "not a finite number"),
        ("[1, 2]", "no threshold in it"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(UserError, match=message):
            calibration_threshold(bad)
    with pytest.raises(UserError, match="cannot read"):
        calibration_threshold(tmp_path / "missing.json")


def test_uploads_are_named_by_their_upload_name(tmp_path):
    bad = tmp_path / "f00d" / "cached.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError) as error:
        read_upload(bad, "holiday.png", max_pixels=None)
    assert str(error.value).startswith("holiday.png: ") and str(tmp_path) not in str(error.value)
    Image.fromarray(_image(4)).save(tmp_path / "big.png")
    with pytest.raises(UserError, match="big.png: 70x40 pixels is more than the limit of 100"):
        read_upload(tmp_path / "big.png", "big.png", max_pixels=100)
    np.testing.assert_array_equal(
        read_upload(tmp_path / "big.png", "x", max_pixels=None), _image(4)
    )


def test_downloads_hold_the_raw_map_and_the_pictures(parts, tmp_path):
    model, cfg = parts
    analyser = Analyser(model, scoring=cfg.scoring, inference=cfg.inference)
    analysis = analyser.analyse(_image(5), AppSettings(threshold=0.3, view="mask"))
    files = write_downloads(analysis, tmp_path, "frame")
    assert {p.name for p in files.values()} == {
        "frame_anomaly.npy", "frame_mask.png", "frame_semantic.png", "frame_open_set.png",
        "frame_panel.png",
    }  # fmt: skip
    np.testing.assert_array_equal(
        np.asarray(Image.open(files["open_set"])),
        colorize_semantic(analysis.prediction.open_set(0.3), unknown=255),
    )
    stored = np.load(files["map"])
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, analysis.anomaly_map)
    np.testing.assert_array_equal(
        np.asarray(Image.open(files["anomaly"])), analysis.anomaly_picture()
    )
    np.testing.assert_array_equal(
        np.asarray(Image.open(files["semantic"])), colorize_semantic(analysis.prediction.semantic)
    )
    assert Image.open(files["panel"]).width == 4 * 70  # input, anomaly, semantic, open set
    plain = replace(analysis, settings=AppSettings(threshold=0.3, open_set=False))
    assert "open_set" not in write_downloads(plain, tmp_path / "plain", "frame")


def test_other_scores_are_drawn_in_their_display_range_with_contours_at_the_threshold(parts):
    model, cfg = parts
    image = _image(6, (48, 80))
    analyser = Analyser(model, scoring=cfg.scoring, inference=cfg.inference)
    calls = count_calls(model)
    for name in ("energy", "rba", "msp"):
        expected = Predictor(model, scoring=cfg.scoring, inference=cfg.inference,
                             scores=(name,)).predict(image)  # fmt: skip
        values = np.unique(expected.anomaly_score)
        threshold = float(values[len(values) // 2] + values[len(values) // 2 + 1]) / 2
        before = len(calls)
        analysis = analyser.analyse(image, AppSettings(score=name, threshold=threshold))
        assert len(calls) == before + 2  # a score is a prediction setting
        np.testing.assert_allclose(analysis.anomaly_map, expected.anomaly_score, atol=1e-6)
        picture = analysis.anomaly_picture()
        contour = mask_boundary(expected.anomaly_score >= threshold, 1)
        assert 0 < contour.mean() < 1
        np.testing.assert_array_equal((picture == CONTOUR_COLOR).all(axis=-1), contour)
        assert analyser.analyse(image, AppSettings(score=name, view="mask")).cached


def test_instances_are_drawn_and_listed_without_running_the_model(parts):
    model, cfg = parts
    image = _image(7, (48, 80))
    analyser = Analyser(model, scoring=cfg.scoring, inference=cfg.inference)
    calls = count_calls(model)
    base = analyser.analyse(image, AppSettings(threshold=0.5))
    threshold = float(np.quantile(base.anomaly_map, 0.8))
    found = analyser.analyse(image, AppSettings(threshold=threshold, instances="components"))
    assert found.cached and len(calls) == 2
    expected = base.prediction.instances("components", threshold)
    assert len(expected) > 0
    assert found.instance_rows() == [
        [i + 1, inst.area, round(inst.confidence, 4), *inst.box] for i, inst in enumerate(expected)
    ]
    drawn = found.anomaly_picture()
    assert (
        drawn != replace(found, settings=AppSettings(threshold=threshold)).anomaly_picture()
    ).any()
    queries = analyser.analyse(image, AppSettings(threshold=threshold, instances="queries"))
    assert not queries.cached and len(calls) == 4 and queries.prediction.query_masks is not None
    assert [r[1] for r in queries.instance_rows()] == [
        inst.area for inst in queries.prediction.instances("queries", threshold)
    ]


def test_score_thresholds_come_from_a_metrics_json(tmp_path):
    metrics = {"results": [
        {"dataset": "road-anomaly-21", "score": "rba",
         "operating_points": {"tpr95": -3.0, "fpr5": -2.0, "best-f1": -2.5}},
        {"dataset": "road-anomaly-21", "score": "msp",
         "operating_points": {"tpr95": 0.9, "fpr5": 0.93, "best-f1": None}},
    ]}  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    found = score_thresholds(19, 0.7, tmp_path / "metrics.json")
    assert found["mask2anomaly"] == 0.7 and found["rba"] == -2.5
    for name in ("msp", "energy"):  # no best-f1 point there: the middle of the display range
        assert found[name] == sum(display_range(name, 19)) / 2
    (tmp_path / "plain.json").write_text('{"threshold": 0.3}')
    assert score_thresholds(19, 0.3, tmp_path / "plain.json")["eam"] == sum(
        display_range("eam", 19)) / 2  # fmt: skip


def test_examples_are_synthetic_frames_with_anomalies(tmp_path):
    paths = write_examples(tmp_path, size=(64, 128))
    assert len(paths) == 3 and len({p.read_bytes() for p in paths}) == 3
    assert all(Image.open(p).size == (128, 64) for p in paths)
    again = write_examples(tmp_path / "again", size=(64, 128))
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]  # same seeds


def test_without_gradio_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert main(["app", "--weights", str(tmp_path / "any.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'mask2anomaly app: error: the app needs Gradio: pip install -e ".[app]"'


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--calibration", "{missing}"], "missing.json: cannot read calibration JSON"),
        (["--calibration", "{empty}"], "empty.json: no threshold in it"),
        (["--port", "0"], "argument --port: 0 is not in 1..65535"),
        (["--threshold", "nan"], "argument --threshold: nan is not a finite number"),
        (["--max-upload-mb", "0"], "argument --max-upload-mb: 0 is not a"),
    ],
)
def test_bad_app_flags_are_one_line(flags, names, tmp_path, capsys):
    (tmp_path / "empty.json").write_text("{}")
    paths = {"missing": tmp_path / "missing.json", "empty": tmp_path / "empty.json"}
    argv = ["app", "--weights", str(tmp_path / "any.pt"), *(f.format(**paths) for f in flags)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and names in err, err
