"""`mask2anomaly predict`: outputs per image and video frame, resume, bad inputs (issue 7)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mask2anomaly.cli import main
from mask2anomaly.fileio import STATE_DIR, TEMP_PREFIX
from mask2anomaly.inference.annotate import OUTPUT_SUFFIXES
from mask2anomaly.inference.media import read_image, to_rgb_uint8
from mask2anomaly.inference.pictures import PNG16_MAX
from mask2anomaly.inference.predictor import Predictor


def _random(shape: tuple[int, ...], seed: int, dtype=np.uint8, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


def _mixed_folder(folder: Path) -> dict[str, tuple[int, int]]:
    """PNG, JPEG, RGBA, greyscale and 16-bit greyscale images of different sizes."""
    folder.mkdir()
    Image.fromarray(_random((60, 90, 3), 0)).save(folder / "rgb.png")
    Image.fromarray(_random((70, 50, 3), 1)).save(folder / "photo.jpg")
    Image.fromarray(_random((64, 64, 4), 2), "RGBA").save(folder / "alpha.png")
    Image.fromarray(_random((40, 80), 3), "L").save(folder / "grey.png")
    Image.fromarray(_random((33, 47), 4, np.uint16, 65536)).save(folder / "deep.png")
    return {
        "rgb": (60, 90),
        "photo": (70, 50),
        "alpha": (64, 64),
        "grey": (40, 80),
        "deep": (33, 47),
    }


def _predict(checkpoint: Path, out: Path, *inputs: object, options: tuple[str, ...] = ()) -> int:
    args = ["predict", "--weights", str(checkpoint), *map(str, inputs), "--out", str(out)]
    return main([*args, "--device", "cpu", *options])


def test_mixed_folder_gives_one_correct_set_each(checkpoint, tmp_path):
    sizes = _mixed_folder(tmp_path / "images")
    out = tmp_path / "out"
    assert _predict(checkpoint, out, tmp_path / "images", options=("--threshold", "0.5")) == 0
    predictor = Predictor.from_checkpoint(checkpoint)
    predictor.batch_size = 1  # as the command (batch composition moves the last bits)
    assert sorted(p.name for p in out.iterdir() if p.name != STATE_DIR) == sorted(
        f"{name}{suffix}" for name in sizes for suffix in OUTPUT_SUFFIXES
    )
    for name, (height, width) in sizes.items():
        expected = predictor.predict(read_image(next((tmp_path / "images").glob(name + ".*"))))
        stored = np.load(out / f"{name}_anomaly.npy")
        assert stored.dtype == np.float16 and stored.shape == (height, width)
        np.testing.assert_array_equal(stored, expected.anomaly_score.astype(np.float16))
        png = np.asarray(Image.open(out / f"{name}_anomaly.png"))
        assert png.dtype == np.uint16 and png.shape == (height, width)
        clipped = np.clip(expected.anomaly_score, 0, 1)
        assert np.abs(png / PNG16_MAX - clipped).max() <= 0.5 / PNG16_MAX + 1e-7
        for suffix in ("_overlay.jpg", "_semantic.png"):
            assert Image.open(out / f"{name}{suffix}").size == (width, height)
        panel = Image.open(out / f"{name}_panel.jpg")
        assert panel.width == 3 * width and panel.height > height


def test_batched_equals_single(checkpoint, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, size in enumerate([(40, 60), (40, 60), (50, 30)]):
        Image.fromarray(_random((*size, 3), 20 + i)).save(folder / f"{i}.png")
    options = ("--no-flip",)
    assert _predict(checkpoint, tmp_path / "one", folder, options=options) == 0
    options = ("--no-flip", "--batch-size", "3")
    assert _predict(checkpoint, tmp_path / "three", folder, options=options) == 0
    for path in (tmp_path / "one").glob("*.npy"):
        batched = np.load(tmp_path / "three" / path.name).astype(np.float32)
        np.testing.assert_allclose(batched, np.load(path).astype(np.float32), atol=2e-3)


def test_image_modes_become_rgb_uint8():
    deep = Image.fromarray(np.array([[0, 257, 65535]], np.uint16))
    np.testing.assert_array_equal(to_rgb_uint8(deep)[0, :, 0], [0, 1, 255])
    grey = to_rgb_uint8(Image.fromarray(np.array([[7, 9]], np.uint8), "L"))
    assert grey.shape == (1, 2, 3) and (grey[..., 2] == [7, 9]).all()
    rgba = to_rgb_uint8(Image.fromarray(_random((2, 3, 4), 5), "RGBA"))
    assert rgba.shape == (2, 3, 3) and rgba.dtype == np.uint8


def _write_video(path: Path, num_frames: int, fps: int, size: tuple[int, int]) -> None:
    from mask2anomaly.inference.media import VideoWriter

    writer = VideoWriter(path, Fraction(fps))
    for i in range(num_frames):
        writer.write(_random((*size, 3), 10 + i))
    writer.close()


def test_video_round_trip_and_resume(checkpoint, tmp_path):
    av = pytest.importorskip("av")
    _write_video(tmp_path / "clip.mp4", num_frames=6, fps=12, size=(45, 62))
    out = tmp_path / "out"
    assert _predict(checkpoint, out, tmp_path / "clip.mp4", options=("--batch-size", "4")) == 0
    frames = sorted((out / "clip").glob("*_anomaly.npy"))
    assert [p.name for p in frames] == [f"{i:06d}_anomaly.npy" for i in range(6)]
    assert np.load(frames[0]).shape == (46, 62)  # the writer padded the odd height
    with av.open(str(out / "clip_annotated.mp4")) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate == 12
    assert len(decoded) == 6 and decoded[0].shape == (46, 62, 3)
    # resume: with one frame's file and the video gone, only that frame is predicted again
    (out / "clip" / "000004_panel.jpg").unlink()
    (out / "clip_annotated.mp4").unlink()
    kept = (out / "clip" / "000001_anomaly.npy").stat().st_mtime_ns
    assert _predict(checkpoint, out, tmp_path / "clip.mp4") == 0
    assert (out / "clip" / "000004_panel.jpg").exists() and (out / "clip_annotated.mp4").exists()
    assert (out / "clip" / "000001_anomaly.npy").stat().st_mtime_ns == kept
    assert not [p for p in out.rglob(f"{TEMP_PREFIX}*")]  # no temporary files left


def test_bad_inputs_warn_and_keep_the_rest(checkpoint, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(_random((50, 70, 3), 6)).save(good)
    out = tmp_path / "out"
    assert _predict(checkpoint, out, good) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(_random((50, 70, 3), 7)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "garbage.png").write_bytes(b"\x00" * 64)
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 20)
    other = tmp_path / "other.jpg"
    Image.fromarray(_random((40, 40, 3), 8)).save(other)
    bad = ("truncated.jpg", "notes.txt", "garbage.png", "broken.mp4", "empty")
    rc = _predict(checkpoint, out, good, *(tmp_path / name for name in bad), other)
    assert rc == 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    for name in bad:
        assert sum(name in line for line in warnings) == 1, (name, warnings)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    assert all((out / f"other{suffix}").exists() for suffix in OUTPUT_SUFFIXES)
    assert not (out / "truncated_anomaly.npy").exists()


def test_half_on_cpu_falls_back_with_a_message(checkpoint, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(_random((32, 48, 3), 9)).save(image)
    assert _predict(checkpoint, tmp_path / "out", image, options=("--half",)) == 0
    assert "--half needs a GPU" in capsys.readouterr().err


def test_nothing_to_predict_is_a_one_line_error(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _predict(checkpoint, tmp_path / "out", tmp_path / "empty") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "mask2anomaly predict: error: no images or videos to predict"


def test_precision_bf16_runs_the_bf16_predictor_and_prints_throughput(checkpoint, tmp_path, capsys):
    image = _random((48, 80, 3), 7)
    Image.fromarray(image).save(tmp_path / "frame.png")
    out = tmp_path / "out"
    assert _predict(checkpoint, out, tmp_path / "frame.png", options=("--precision", "bf16")) == 0
    printed = capsys.readouterr().out
    assert "1 frames in " in printed and "images/s" in printed
    bf16 = Predictor.from_checkpoint(checkpoint, overrides=["inference.precision=bf16"])
    bf16.batch_size = 1
    expected = bf16.predict(image).anomaly_score.astype(np.float16)
    np.testing.assert_array_equal(np.load(out / "frame_anomaly.npy"), expected)
    fp32 = Predictor.from_checkpoint(checkpoint).predict(image).anomaly_score
    assert not np.array_equal(expected, fp32.astype(np.float16))  # bf16 did run
    assert np.abs(expected.astype(np.float32) - fp32).max() < 0.05
    # the precision is one of the output's settings: fp32 into the same folder is refused
    assert _predict(checkpoint, out, tmp_path / "frame.png") == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (("--precision", "fp16"), "--precision fp16 needs a CUDA GPU"),
        (("--precision", "tf32"), "--precision tf32 needs a CUDA GPU"),
        (("--precision", "bf16", "--half"), "--half and --precision"),
        (("--precision", "fp8"), "invalid choice: 'fp8'"),
    ],
)
def test_precision_the_cpu_cannot_run_is_one_line(checkpoint, tmp_path, capsys, options, message):
    Image.fromarray(_random((32, 32, 3), 8)).save(tmp_path / "frame.png")
    assert _predict(checkpoint, tmp_path / "out", tmp_path / "frame.png", options=options) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_score_and_open_set_outputs(checkpoint, tmp_path, capsys):
    import json

    from mask2anomaly.inference.annotate import OPEN_SET_SUFFIXES
    from mask2anomaly.scoring.scores import display_range

    image = tmp_path / "a.png"
    Image.fromarray(_random((40, 60, 3), 11)).save(image)
    predictor = Predictor.from_checkpoint(checkpoint, scores=["rba"])
    expected = predictor.predict(read_image(image))
    threshold = float(np.quantile(expected.anomaly_score, 0.7))
    calibration = tmp_path / "metrics.json"
    calibration.write_text(json.dumps({"results": [
        {"dataset": "road-anomaly-21", "score": "rba", "operating_points": {"fpr5": threshold}},
    ]}))  # fmt: skip
    out = tmp_path / "out"
    options = ("--score", "rba", "--open-set", "fpr5", "--calibration", str(calibration),
               "--unknown-label", "200")  # fmt: skip
    assert _predict(checkpoint, out, image, options=options) == 0
    names = sorted(p.name for p in out.iterdir() if p.name != STATE_DIR)
    assert names == sorted(f"a{suffix}" for suffix in OUTPUT_SUFFIXES + OPEN_SET_SUFFIXES)
    stored = np.load(out / "a_anomaly.npy")
    np.testing.assert_array_equal(stored, expected.anomaly_score.astype(np.float16))
    low, high = display_range("rba", 19)
    png = np.asarray(Image.open(out / "a_anomaly.png")) / PNG16_MAX
    shown = np.clip((expected.anomaly_score - low) / (high - low), 0, 1)
    assert np.abs(png - shown).max() <= 0.5 / PNG16_MAX + 1e-6
    labels = np.asarray(Image.open(out / "a_open_set_labels.png"))
    above = expected.anomaly_score > threshold
    assert above.any() and (labels[above] == 200).all()
    np.testing.assert_array_equal(labels[~above], expected.semantic[~above])
    colours = np.asarray(Image.open(out / "a_open_set.png"))
    assert (colours[above] == 255).all() and not (colours[~above] == 255).all(axis=-1).any()
    assert Image.open(out / "a_panel.jpg").width == 4 * 60
    # another threshold is another setting: refused, and replaced with --overwrite
    capsys.readouterr()
    other = ("--score", "rba", "--open-set", "-0.5")
    assert _predict(checkpoint, out, image, options=other) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _predict(checkpoint, out, image, options=(*other, "--overwrite")) == 0
    labels = np.asarray(Image.open(out / "a_open_set_labels.png"))
    np.testing.assert_array_equal(labels == 255, expected.anomaly_score > -0.5)
