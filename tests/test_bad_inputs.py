"""Bad input and faults against every command (issue 14): a corpus of bad files, flags and
configs built in a tmp dir, run through the CLI. Each must end with exactly one line on stderr
naming the offending file or key, no traceback, the documented exit status, nothing half-written,
and the good inputs of the same run processed."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mask2anomaly.fileio as fileio
from cityscapes_fixture import write_cityscapes
from mask2anomaly.checkpoint import save_checkpoint
from mask2anomaly.cli import main
from mask2anomaly.config import load_config
from mask2anomaly.data.outliers import OutlierPool
from mask2anomaly.data.synthetic import write_world
from mask2anomaly.inference.annotate import OUTPUT_SUFFIXES
from mask2anomaly.model import build_model

H, W = 40, 56


def _rgb(path: Path, seed: int, size: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _huge_png(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A 1x1 PNG whose header claims width x height pixels (a decompression bomb's header)."""
    _rgb(path, 0, (1, 1))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR CRC
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Good and bad files shared by the table: a tiny checkpoint and its broken variants, images,
    an m2a dataset with maps, configs."""
    root = tmp_path_factory.mktemp("corpus")
    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    files = {"ckpt": root / "tiny.pt", "root": root}
    save_checkpoint(files["ckpt"], model, cfg)
    nan = build_model(cfg.model)
    with torch.no_grad():
        next(nan.parameters()).fill_(float("nan"))
    files["nan_ckpt"] = root / "nan.pt"
    save_checkpoint(files["nan_ckpt"], nan, cfg)
    files["text"] = root / "notes.txt"
    files["text"].write_text("these are not weights\n" * 5)
    files["malformed"] = root / "malformed.pt"
    torch.save({"format": "mask2anomaly", "version": 1, "config": ["x"], "model": {}},
               files["malformed"])  # fmt: skip
    wide = load_config("tiny", ["model.decoder.num_queries=5"])
    files["misshaped"] = root / "misshaped.pt"
    save_checkpoint(files["misshaped"], build_model(wide.model), wide)
    files["file"] = root / "a_file"
    files["file"].write_text("x")
    files["images"] = root / "images"
    for i in range(2):
        _rgb(files["images"] / f"good{i}.png", i)
    data = root / "m2a"
    for i in range(2):
        _rgb(data / "images" / f"f{i}.png", 10 + i)
        label = np.zeros((H, W), np.uint8)
        label[10:20, 10:30] = 1
        Image.fromarray(label).save((data / "labels_masks").mkdir(exist_ok=True, parents=True)
                                    or data / "labels_masks" / f"f{i}.png")  # fmt: skip
    files["m2a"] = data
    files["binary_config"] = root / "binary.yaml"
    files["binary_config"].write_bytes(bytes(range(256)) * 4)
    files["road_anomaly"] = root / "RoadAnomaly"
    _rgb(files["road_anomaly"] / "frames" / "a.jpg", 3)
    (files["road_anomaly"] / "frame_list.json").write_text('{"not": "a list"')
    files["calibration"] = root / "calibration.json"  # Eq. 2 thresholds on m2a, fpr5 undefined
    points = {"tpr95": 0.5, "fpr5": None, "best-f1": 0.25}
    files["calibration"].write_text(json.dumps({"results": [
        {"dataset": "m2a", "score": "mask2anomaly", "operating_points": points}]}))  # fmt: skip
    return files


def _maps(tmp_path: Path, corpus: dict[str, Path], bad: Callable[[Path], None]) -> Path:
    """A maps folder for the m2a dataset: good maps, then `bad` applied to it."""
    maps = tmp_path / "maps"
    maps.mkdir()
    for i in range(2):
        np.save(maps / f"f{i}.npy", np.random.default_rng(i).random((H, W)).astype(np.float32))
    bad(maps)
    return maps


def _score(corpus: dict[str, Path], tmp_path: Path, bad: Callable[[Path], None]) -> list[str]:
    return ["score", "--maps", str(_maps(tmp_path, corpus, bad)), "--dataset", "m2a",
            "--root", str(corpus["m2a"]), "--out", str(tmp_path / "out")]  # fmt: skip


def _predict(corpus: dict[str, Path], tmp_path: Path, *extra: str, weights: str = "ckpt"):
    return ["predict", "--weights", str(corpus[weights]), str(corpus["images"]),
            "--out", str(tmp_path / "out"), "--device", "cpu", *extra]  # fmt: skip


def _evaluate(corpus: dict[str, Path], tmp_path: Path, *extra: str, weights: str = "ckpt"):
    return ["evaluate", "--weights", str(corpus[weights]), "--dataset", "m2a", "--root",
            str(corpus["m2a"]), "--out", str(tmp_path / "out"), "--device", "cpu",
            *extra]  # fmt: skip


def _train(corpus: dict[str, Path], tmp_path: Path, *extra: str, out: str | None = None):
    return ["train", "--config", "tiny", "--data", str(corpus["root"] / "cityscapes"),
            "--out", out or str(tmp_path / "run"), "--device", "cpu", "--no-progress",
            *extra]  # fmt: skip


def _finetune(corpus: dict[str, Path], tmp_path: Path, init: str, *extra: str):
    return ["finetune", "--init", str(corpus[init]), "--data", str(corpus["root"] / "cityscapes"),
            "--outliers", str(corpus["root"] / "world" / "coco"), "--out", str(tmp_path / "ft"),
            "--device", "cpu", "--no-progress", *extra]  # fmt: skip


def _npz_two_arrays(maps: Path) -> None:
    np.savez(maps / "f0.npz", a=np.zeros((H, W)), b=np.ones((H, W)))
    (maps / "f0.npy").unlink()


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[dict[str, Path], Path], list[str]]
    names: str  # what the one stderr line must contain (the file, flag or key)
    code: int = 2


CASES = [
    # --out that is a file
    Case("predict --out file", lambda c, t: _predict(c, t)[:4] + ["--out", str(c["file"])],
         "a_file"),
    Case("evaluate --out file", lambda c, t: _evaluate(c, t)[:-4] + ["--out", str(c["file"])],
         "a_file"),
    Case("train --out file", lambda c, t: _train(c, t, out=str(c["file"])), "a_file"),
    Case("synth --out file", lambda c, t: ["synth", "--out", str(c["file"])], "a_file"),
    Case("demo --out file", lambda c, t: ["demo", "--out", str(c["file"])], "a_file"),
    Case("score --out file", lambda c, t: _score(c, t, lambda m: None)[:-1] + [str(c["file"])],
         "a_file"),
    # weights
    Case("predict text weights", lambda c, t: _predict(c, t, weights="text"), "notes.txt"),
    Case("evaluate text weights", lambda c, t: _evaluate(c, t, weights="text"), "notes.txt"),
    Case("convert text weights", lambda c, t: ["convert", str(c["text"]), str(t / "o.pt")],
         "notes.txt"),
    Case("predict malformed checkpoint", lambda c, t: _predict(c, t, weights="malformed"),
         "malformed.pt"),
    Case("predict NaN weights", lambda c, t: _predict(c, t, weights="nan_ckpt"), "NaN or inf"),
    Case("evaluate NaN weights", lambda c, t: _evaluate(c, t, weights="nan_ckpt"), "NaN or inf"),
    Case("finetune NaN init", lambda c, t: _finetune(c, t, "nan_ckpt"), "NaN or inf"),
    Case("finetune mis-shaped init",
         lambda c, t: _finetune(c, t, "misshaped", "--set", "model.decoder.num_queries=4"),
         "mis-shaped"),
    # flags and config values
    Case("predict --threshold nan", lambda c, t: _predict(c, t, "--threshold", "nan"),
         "--threshold"),
    Case("predict --score unknown", lambda c, t: _predict(c, t, "--score", "maxlogits"),
         "'maxlogits'"),
    Case("evaluate --score unknown", lambda c, t: _evaluate(c, t, "--score", "msp", "energie"),
         "'energie'"),
    Case("evaluate --score twice", lambda c, t: _evaluate(c, t, "--score", "rba", "eam", "rba"),
         "score 'rba' is listed twice"),
    Case("predict --open-set not a number", lambda c, t: _predict(c, t, "--open-set", "high"),
         "--open-set 'high': expected a number or one of tpr95, fpr5, best-f1"),
    Case("predict --open-set outside the score's range",
         lambda c, t: _predict(c, t, "--score", "msp", "--open-set", "1.5"),
         "threshold 1.5 is outside the range of the msp score [0, 0.947368]"),
    Case("predict --open-set point without calibration",
         lambda c, t: _predict(c, t, "--open-set", "tpr95"),
         "--open-set tpr95 needs --calibration"),
    Case("predict calibration file missing",
         lambda c, t: _predict(c, t, "--open-set", "tpr95", "--calibration", str(t / "m.json")),
         "m.json: calibration file not found"),
    Case("predict calibration without the point",
         lambda c, t: _predict(c, t, "--open-set", "fpr5", "--calibration", str(c["calibration"])),
         "no fpr5 threshold of the mask2anomaly score on m2a (defined there: tpr95, best-f1)"),
    Case("predict calibration without the score",
         lambda c, t: _predict(c, t, "--open-set", "tpr95", "--score", "rba", "--calibration",
                               str(c["calibration"])),
         "no operating points of the rba score (it holds: mask2anomaly)"),
    Case("predict calibration of another dataset",
         lambda c, t: _predict(c, t, "--open-set", "tpr95", "--calibration",
                               str(c["calibration"]), "--calibration-dataset", "ra21"),
         "no mask2anomaly thresholds on dataset 'ra21'; choose from m2a"),
    Case("predict --calibration without --open-set",
         lambda c, t: _predict(c, t, "--calibration", str(c["calibration"])),
         "--calibration is used with --open-set OPERATING_POINT only"),
    Case("predict --unknown-label of a known class",
         lambda c, t: _predict(c, t, "--open-set", "0.5", "--unknown-label", "3"),
         "--unknown-label 3 is a known class (0..18); choose 19..255"),
    Case("predict --unknown-label 256",
         lambda c, t: _predict(c, t, "--open-set", "0.5", "--unknown-label", "256"),
         "--unknown-label"),
    Case("predict --batch-size 0", lambda c, t: _predict(c, t, "--batch-size", "0"),
         "--batch-size"),
    Case("predict --max-pixels 0", lambda c, t: _predict(c, t, "--max-pixels", "0"),
         "--max-pixels"),
    Case("predict --set model.*", lambda c, t: _predict(c, t, "--set", "model.num_classes=3"),
         "model.num_classes"),
    Case("evaluate --set model.*",
         lambda c, t: _evaluate(c, t, "--set", "model.decoder.num_queries=3"),
         "model.decoder.num_queries"),
    Case("predict min_size -5", lambda c, t: _predict(c, t, "--set", "inference.min_size=-5"),
         "inference.min_size"),
    Case("predict refine threshold 7",
         lambda c, t: _predict(c, t, "--set", "scoring.refine_mask_threshold=7"),
         "scoring.refine_mask_threshold"),
    Case("predict unknown key", lambda c, t: _predict(c, t, "--set", "scoring.refinment=none"),
         "scoring.refinment"),
    Case("predict override without =", lambda c, t: _predict(c, t, "--set", "scoring"),
         "scoring"),
    Case("train batch_size 0", lambda c, t: _train(c, t, "--set", "train.batch_size=0"),
         "train.batch_size"),
    Case("train max_iters -5", lambda c, t: _train(c, t, "--set", "train.max_iters=-5"),
         "train.max_iters"),
    Case("train log_every 0", lambda c, t: _train(c, t, "--set", "train.log_every=0"),
         "train.log_every"),
    Case("train eval_every -1", lambda c, t: _train(c, t, "--set", "train.eval_every=-1"),
         "train.eval_every"),
    Case("train empty train_min_sizes",
         lambda c, t: _train(c, t, "--set", "data.train_min_sizes=()"), "data.train_min_sizes"),
    Case("train heads do not divide width",
         lambda c, t: _train(c, t, "--set", "model.decoder.num_heads=7"), "num_heads"),
    Case("train binary config",
         lambda c, t: _train(c, t)[:2] + [str(c["binary_config"])] + _train(c, t)[3:],
         "binary.yaml"),
    Case("train missing config",
         lambda c, t: _train(c, t)[:2] + [str(t / "nope.yaml")] + _train(c, t)[3:], "nope.yaml"),
    Case("export --opset 3",
         lambda c, t: ["export", "--weights", str(c["ckpt"]), "--out", str(t / "m.onnx"),
                       "--opset", "3"], "--opset"),  # fmt: skip
    Case("export --height 0",
         lambda c, t: ["export", "--weights", str(c["ckpt"]), "--out", str(t / "m.onnx"),
                       "--height", "0"], "--height"),  # fmt: skip
    Case("synth --size 10x10",
         lambda c, t: ["synth", "--out", str(t / "w"), "--size", "10x10"], "--size"),
    # datasets, labels and maps
    Case("evaluate unknown subset", lambda c, t: _evaluate(c, t, "--subset", "nope"), "nope"),
    Case("evaluate label map out of range",
         lambda c, t: _evaluate(c, t)[:4] + ["folder", "--root", str(c["m2a"]), "--out",
                                             str(t / "o"), "--label-map", "0:0,70000:1"],
         "70000"),  # fmt: skip
    Case("evaluate missing root",
         lambda c, t: _evaluate(c, t)[:6] + [str(t / "missing")] + _evaluate(c, t)[7:],
         "missing"),
    Case("score zero-byte npy",
         lambda c, t: _score(c, t, lambda m: (m / "f0.npy").write_bytes(b"")), "f0.npy"),
    Case("score npz with two arrays", lambda c, t: _score(c, t, _npz_two_arrays), "f0.npz"),
    Case("score complex map",
         lambda c, t: _score(c, t, lambda m: np.save(m / "f1.npy", np.zeros((H, W), complex))),
         "f1.npy"),
    Case("score npy and png for one frame",
         lambda c, t: _score(c, t, lambda m: Image.fromarray(np.zeros((H, W), np.uint16)).save(
             m / "f1.png")), "f1"),  # fmt: skip
    Case("score map of the wrong size",
         lambda c, t: _score(c, t, lambda m: np.save(m / "f0.npy", np.zeros((H + 1, W)))),
         "f0.npy"),
    Case("score 3-D map",
         lambda c, t: _score(c, t, lambda m: np.save(m / "f0.npy", np.zeros((2, H, W)))),
         "f0.npy"),
    Case("score malformed frame_list.json",
         lambda c, t: ["score", "--maps", str(t), "--dataset", "road-anomaly", "--root",
                       str(c["road_anomaly"]), "--out", str(t / "o")],
         "frame_list.json"),
    Case("prepare-outliers misspelt category",
         lambda c, t: ["prepare-outliers", "--coco", str(c["root"] / "world" / "coco"),
                       "--out", str(t / "o"), "--exclude", "persn"], "persn"),  # fmt: skip
]  # fmt: skip


@pytest.fixture(scope="module")
def training_data(corpus):
    write_cityscapes(corpus["root"] / "cityscapes", num_train=2, num_val=1)
    write_world(corpus["root"] / "world", num_train=1, num_val=1, num_outliers=2, num_test=1)
    return corpus


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("mask2anomaly")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_naming_it(case, training_data, tmp_path, capsys):
    argv = case.argv(training_data, tmp_path)
    code = main(argv)
    line = _one_line(capsys)
    assert code == case.code, line
    assert case.names in line, line
    assert not list(tmp_path.rglob(f"{fileio.TEMP_PREFIX}*"))  # nothing half-written left


def test_bad_images_are_skipped_and_the_good_ones_predicted(corpus, tmp_path, capsys):
    huge = _huge_png(tmp_path / "huge.png")
    (tmp_path / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    out = tmp_path / "out"
    code = main(["predict", "--weights", str(corpus["ckpt"]), str(huge), str(corpus["images"]),
                 str(tmp_path / "truncated.jpg"), "--out", str(out),
                 "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 2 and "huge.png" in warnings[0] and "60000x60000" in warnings[0]
    assert "truncated.jpg" in warnings[1]
    for name in ("good0", "good1"):
        assert all((out / f"{name}{suffix}").is_file() for suffix in OUTPUT_SUFFIXES)
    assert not (out / "huge_anomaly.npy").exists()


def test_an_unexpected_exception_is_one_line_saying_bug(corpus, tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("something the code did not expect")

    monkeypatch.setattr("mask2anomaly.inference.annotate.write_frame", broken)
    assert main(_predict(corpus, tmp_path)) == 3
    line = _one_line(capsys)
    assert "internal error" in line and "TypeError" in line and "--debug" in line
    with pytest.raises(TypeError):
        main([*_predict(corpus, tmp_path), "--debug"])
    monkeypatch.setenv("MASK2ANOMALY_DEBUG", "1")  # the environment's way to the traceback
    with pytest.raises(TypeError):
        main(_predict(corpus, tmp_path))


def test_undecodable_outlier_image_is_left_out(training_data, tmp_path, capsys):
    coco = tmp_path / "coco"
    import shutil

    shutil.copytree(training_data["root"] / "world" / "coco", coco)
    broken = OutlierPool.from_coco(coco, split="train2017").entries[0].image_path
    broken.write_bytes(broken.read_bytes()[:200])
    code = main(["prepare-outliers", "--coco", str(coco), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and broken.name in err
    assert not (tmp_path / "o" / "images" / broken.name).exists()
    assert list((tmp_path / "o" / "images").glob("*.jpg"))  # the others were copied


def test_packaged_config_names_are_not_hidden_by_folders(tmp_path, monkeypatch):
    packaged = {name: load_config(name) for name in ("demo", "tiny")}
    monkeypatch.chdir(tmp_path)
    for name, cfg in packaged.items():
        (tmp_path / name).mkdir()  # e.g. `mask2anomaly demo --out demo`
        assert load_config(name) == cfg


def test_yaml_1_1_float_strings_are_numbers(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  lr: 1e-4\n  weight_decay: 5e-2\n")
    cfg = load_config(config)
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.weight_decay == 0.05


# ----------------------------------------------------------------------------------------------
# Faults: full disk, kills, concurrent runs, changed inputs


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and fileio.STATE_DIR not in p.parts}  # fmt: skip


def _many_images(folder: Path, count: int = 8) -> Path:
    for i in range(count):
        _rgb(folder / f"img{i:02d}.png", 100 + i)
    return folder


def test_full_disk_publishes_nothing_short_and_a_rerun_completes(corpus, tmp_path, capsys,
                                                                  monkeypatch):  # fmt: skip
    images = _many_images(tmp_path / "images", 3)
    argv = ["predict", "--weights", str(corpus["ckpt"]), str(images), "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0
    real, calls = fileio.publish, []

    def publish(temporary: Path, path: Path) -> None:
        calls.append(path)
        if len(calls) == 8:  # the third file of the second frame
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(temporary, path)

    monkeypatch.setattr(fileio, "publish", publish)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert "No space left on device" in line and str(out) in line
    assert not list(out.rglob(f"{fileio.TEMP_PREFIX}*"))
    monkeypatch.setattr(fileio, "publish", real)
    assert main([*argv, "--out", str(out)]) == 0
    assert _outputs(out) == _outputs(tmp_path / "clean")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mask2anomaly", *args]


def _kill_when(process: subprocess.Popen, ready: Callable[[], bool], sig: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not ready():
        time.sleep(0.02)
    process.send_signal(sig)
    process.wait()


def _journal_lines(out: Path) -> int:
    return sum(len(fileio.read_jsonl(p)) for p in (out / fileio.STATE_DIR).glob("*.jsonl"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_predict_killed_then_resumed_equals_an_uninterrupted_run(corpus, tmp_path, sig):
    images = _many_images(tmp_path / "images", 12)
    argv = ["predict", "--weights", str(corpus["ckpt"]), str(images), "--device", "cpu"]
    subprocess.run(_cli(*argv, "--out", str(tmp_path / "clean")), check=True, capture_output=True)
    out = tmp_path / "out"
    process = subprocess.Popen(_cli(*argv, "--out", str(out)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)  # fmt: skip
    _kill_when(process, lambda: _journal_lines(out) >= 3, sig)
    if sig == signal.SIGINT and process.returncode != 0:
        assert process.returncode == 130 and b"interrupted" in process.stderr.read()
    done = _journal_lines(out)
    assert done < 12, "the run finished before the signal"
    result = subprocess.run(_cli(*argv, "--out", str(out)), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"predicted {12 - done} frames" in result.stdout  # only the missing ones
    assert _outputs(out) == _outputs(tmp_path / "clean")


def test_evaluate_killed_then_resumed_equals_an_uninterrupted_run(corpus, tmp_path):
    data = tmp_path / "m2a"
    for i in range(10):
        _rgb(data / "images" / f"f{i}.png", 200 + i)
        label = np.zeros((H, W), np.uint8)
        label[5:15, 5 + i : 20 + i] = 1
        (data / "labels_masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(data / "labels_masks" / f"f{i}.png")
    argv = ["evaluate", "--weights", str(corpus["ckpt"]), "--dataset", "m2a", "--root",
            str(data), "--device", "cpu", "--protocol", "exact"]  # fmt: skip
    subprocess.run(_cli(*argv, "--out", str(tmp_path / "clean")), check=True, capture_output=True)
    out = tmp_path / "out"
    process = subprocess.Popen(_cli(*argv, "--out", str(out)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    _kill_when(process, lambda: _journal_lines(out) >= 2, signal.SIGKILL)
    assert _journal_lines(out) < 10, "the run finished before the kill"
    subprocess.run(_cli(*argv, "--out", str(out)), check=True, capture_output=True)
    clean = json.loads((tmp_path / "clean" / "metrics.json").read_text())["results"][0]
    resumed = json.loads((out / "metrics.json").read_text())["results"][0]
    assert resumed["pixel"] == clean["pixel"]
    clean_maps = _outputs(tmp_path / "clean" / "maps")
    assert _outputs(out / "maps") == clean_maps and len(clean_maps) == 10


def test_a_second_run_on_a_folder_in_use_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    owner = subprocess.Popen(["sleep", "60"])
    try:
        (out / fileio.STATE_DIR).mkdir(parents=True)
        lock = {"pid": owner.pid, "host": os.uname().nodename, "command": "predict"}
        (out / fileio.STATE_DIR / "lock").write_text(json.dumps(lock))
        assert main(_predict(corpus, tmp_path)) == 2
        line = _one_line(capsys)
        assert "in use by another run" in line and str(owner.pid) in line
        assert not list(out.glob("*.npy"))
    finally:
        owner.kill()
        owner.wait()
    assert main(_predict(corpus, tmp_path)) == 0  # the owner is gone: its lock is stale
    assert not (out / fileio.STATE_DIR / "lock").exists()


def test_reruns_with_other_weights_settings_or_inputs_are_never_stale(corpus, tmp_path, capsys):
    images = _many_images(tmp_path / "images", 3)
    out = tmp_path / "out"
    argv = ["predict", str(images), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--weights", str(corpus["ckpt"])]) == 0
    first = _outputs(out)
    capsys.readouterr()
    # other weights, other scoring: refused, nothing touched
    for extra in (["--weights", str(corpus["misshaped"])],
                  ["--weights", str(corpus["ckpt"]), "--set", "scoring.refinement=none"],
                  ["--weights", str(corpus["ckpt"]), "--threshold", "0.5"]):  # fmt: skip
        assert main([*argv, *extra]) == 2
        assert "other settings" in _one_line(capsys) and _outputs(out) == first
    # --overwrite replaces them
    assert main([*argv, "--weights", str(corpus["misshaped"]), "--overwrite"]) == 0
    replaced = _outputs(out)
    assert replaced.keys() == first.keys() and replaced != first
    # a changed input under the same name is predicted again, the others are kept
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("img0[02]_anomaly.npy")}
    time.sleep(0.01)
    _rgb(images / "img01.png", 999)
    capsys.readouterr()
    assert main([*argv, "--weights", str(corpus["misshaped"])]) == 0
    assert "predicted 1 frames" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("img0[02]_anomaly.npy")} == mtimes
    clean = tmp_path / "clean"
    assert main(["predict", str(images), "--out", str(clean), "--device", "cpu",
                 "--weights", str(corpus["misshaped"])]) == 0  # fmt: skip
    assert _outputs(out) == _outputs(clean)


def test_evaluate_rerun_with_other_weights_is_refused(corpus, tmp_path, capsys):
    assert main(_evaluate(corpus, tmp_path)) == 0
    metrics = (tmp_path / "out" / "metrics.json").read_text()
    capsys.readouterr()
    assert main(_evaluate(corpus, tmp_path, weights="misshaped")) == 2
    assert "other settings" in _one_line(capsys)
    assert (tmp_path / "out" / "metrics.json").read_text() == metrics
    assert main(_evaluate(corpus, tmp_path, "--overwrite", weights="misshaped")) == 0
    assert (tmp_path / "out" / "metrics.json").read_text() != metrics


def test_evaluate_rerun_with_other_scoring_is_refused(corpus, tmp_path, capsys):
    assert main(_evaluate(corpus, tmp_path)) == 0
    metrics = (tmp_path / "out" / "metrics.json").read_text()
    capsys.readouterr()
    assert main(_evaluate(corpus, tmp_path, "--set", "scoring.refinement=none")) == 2
    assert "other settings" in _one_line(capsys)
    assert (tmp_path / "out" / "metrics.json").read_text() == metrics


def test_temporaries_of_a_killed_run_are_removed(corpus, tmp_path):
    out = tmp_path / "out"
    main(_predict(corpus, tmp_path))
    leftover = out / f"{fileio.TEMP_PREFIX}good0_panel.jpg.x1y2z3.jpg"
    leftover.write_bytes(b"half a jpeg")
    assert main(_predict(corpus, tmp_path)) == 0
    assert not leftover.exists()
