"""`mask2anomaly app` through its HTTP API (gradio_client) on a loopback port with the tiny model
(issue 18): maps equal the Predictor's, display changes never run the model, bad uploads are one
line and the app keeps serving, concurrent requests, no server path opened, upload limit, video,
and the command itself."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mask2anomaly.app.analysis import Analyser
from mask2anomaly.cli import main
from mask2anomaly.data.synthetic.scene import render_scene
from mask2anomaly.inference.pictures import colorize_semantic, heat_overlay
from mask2anomaly.inference.predictor import Predictor
from mask2anomaly.scoring.scores import display_range

pytest.importorskip("gradio", reason="the app needs the `app` extra")
httpx = pytest.importorskip("httpx")
from gradio_client import Client, handle_file  # noqa: E402

from mask2anomaly.app.page import build_page, serve  # noqa: E402
from test_app_analysis import count_calls  # noqa: E402

UPLOAD_LIMIT_MB = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Served:
    url: str
    calls: list[int]  # forward passes of the app's model
    reference: Predictor  # the same weights, loaded separately
    downloads: Path

    def client(self) -> Client:
        return Client(self.url, download_files=str(self.downloads), verbose=False)


@pytest.fixture(scope="module")
def served(checkpoint, tmp_path_factory):
    analyser = Analyser.from_checkpoint(checkpoint)
    calls = count_calls(analyser.model)
    page = build_page(analyser, tmp_path_factory.mktemp("work"))
    url = serve(page, port=free_port(), block=False, quiet=True, max_upload_mb=UPLOAD_LIMIT_MB)
    reference = Predictor.from_checkpoint(checkpoint)
    yield Served(url, calls, reference, tmp_path_factory.mktemp("downloads"))
    page.close()


@pytest.fixture(scope="module")
def client(served) -> Client:
    return served.client()


def scene(path: Path, seed: int, size: tuple[int, int] = (60, 100)) -> np.ndarray:
    image = render_scene(np.random.default_rng(seed), size, anomalies="obstacle").image
    Image.fromarray(image).save(path)
    return image


def analyse(client: Client, path: Path, **settings) -> dict:
    """The /analyse endpoint: its pictures as arrays, status line and downloads by suffix."""
    anomaly, semantic, open_set, table, status, files = client.predict(
        image=handle_file(str(path)), api_name="/analyse", **settings
    )
    files = {Path(f).name.split("_", 1)[1]: Path(f) for f in files or []}
    return {
        "anomaly": None if anomaly is None else np.asarray(Image.open(anomaly).convert("RGB")),
        "semantic": None if semantic is None else np.asarray(Image.open(semantic)),
        "open_set": None if open_set is None else np.asarray(Image.open(open_set)),
        "instances": (table or {}).get("data", []) if isinstance(table, dict) else table or [],
        "status": status,
        "files": files,
    }


def test_image_round_trip_equals_the_predictor(served, client, tmp_path):
    image = scene(tmp_path / "road.png", 1)
    expected = served.reference.predict(image)
    result = analyse(client, tmp_path / "road.png", threshold=0.4)
    stored = np.load(result["files"]["anomaly.npy"])
    assert stored.dtype == np.float32 and stored.shape == (60, 100)
    np.testing.assert_allclose(stored, expected.anomaly_score, atol=1e-6)
    np.testing.assert_array_equal(result["semantic"], colorize_semantic(expected.semantic))
    overlay = heat_overlay(image, stored, threshold=0.4)
    np.testing.assert_array_equal(result["anomaly"], overlay)
    assert set(result["files"]) == {
        "anomaly.npy", "overlay.png", "semantic.png", "open_set.png", "panel.png"
    }  # fmt: skip
    np.testing.assert_array_equal(  # pixels above the threshold are unknown (white)
        result["open_set"], colorize_semantic(expected.open_set(0.4), unknown=255)
    )
    assert result["instances"] == []  # instances are off by default
    assert result["status"].startswith("prediction: ") and "100×60" in result["status"]
    unrefined = analyse(client, tmp_path / "road.png", refinement=False)
    unrefined_map = np.load(unrefined["files"]["anomaly.npy"])
    np.testing.assert_allclose(unrefined_map, expected.anomaly_score_unrefined, atol=1e-6)
    no_flip = Predictor(
        served.reference.model,
        scoring=served.reference.scoring,
        inference=replace(served.reference.inference, flip=False),
    )
    single = analyse(client, tmp_path / "road.png", flip=False)
    np.testing.assert_allclose(
        np.load(single["files"]["anomaly.npy"]), no_flip.predict(image).anomaly_score, atol=1e-6
    )


def test_threshold_view_and_refinement_changes_do_not_run_the_model(served, client, tmp_path):
    scene(tmp_path / "frame.png", 2)
    before = len(served.calls)
    first = analyse(client, tmp_path / "frame.png", threshold=0.5)
    assert len(served.calls) == before + 2  # the image and its flip
    score = np.load(first["files"]["anomaly.npy"])
    middle = float(np.median(score))  # a threshold that cuts the map in two
    outputs = [first["anomaly"]]
    for settings in (
        {"threshold": middle},
        {"threshold": middle, "view": "mask"},
        {"threshold": middle, "view": "heat map"},
        {"threshold": middle, "refinement": False},
    ):
        result = analyse(client, tmp_path / "frame.png", **settings)
        assert result["status"].startswith("cached prediction: ")
        outputs.append(result["anomaly"])
    assert len(served.calls) == before + 2
    assert all((a != b).any() for a, b in zip(outputs, outputs[1:]))  # each change shows
    analyse(client, tmp_path / "frame.png", flip=False)  # a prediction setting
    assert len(served.calls) == before + 3


def test_scores_open_set_and_instances(served, client, tmp_path):
    image = scene(tmp_path / "scene.png", 8)
    reference = served.reference
    rba = Predictor(reference.model, scoring=reference.scoring, inference=reference.inference,
                    scores=("rba",)).predict(image, return_query_masks=True)  # fmt: skip
    before = len(served.calls)
    threshold = float(np.quantile(rba.anomaly_score, 0.9))  # the top tenth of the map
    result = analyse(client, tmp_path / "scene.png", score="rba", threshold=threshold,
                     instances="components")  # fmt: skip
    assert len(served.calls) == before + 2 and "score rba" in result["status"]
    np.testing.assert_allclose(np.load(result["files"]["anomaly.npy"]), rba.anomaly_score,
                               atol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(
        result["open_set"], colorize_semantic(rba.open_set(threshold), unknown=255)
    )
    expected = rba.instances("components", threshold)
    assert len(expected) > 0 and f"{len(expected)} instances (components)" in result["status"]
    assert [row[1:] for row in result["instances"]] == [
        [inst.area, round(inst.confidence, 4), *inst.box] for inst in expected
    ]
    stored = json.loads(result["files"]["instances.json"].read_text())
    assert [i["area"] for i in stored["instances"]] == [inst.area for inst in expected]
    assert stored["score"] == "rba" and stored["threshold"] == threshold
    # instances by query keep the query masks: a prediction setting; components are not
    queries = analyse(client, tmp_path / "scene.png", score="rba", threshold=threshold,
                      instances="queries")  # fmt: skip
    assert len(served.calls) == before + 4
    by_query = rba.instances("queries", threshold)
    assert [row[1] for row in queries["instances"]] == [inst.area for inst in by_query]
    hidden = analyse(client, tmp_path / "scene.png", score="rba", threshold=threshold,
                     open_set=False)  # fmt: skip
    assert hidden["open_set"] is None and "open_set.png" not in hidden["files"]
    assert hidden["status"].startswith("cached prediction: ")
    outside = analyse(client, tmp_path / "scene.png", score="mask2anomaly", threshold=3.0)
    assert outside["status"].startswith("⚠ threshold 3.0 is outside the range of the "
                                        "mask2anomaly score")  # fmt: skip


def test_a_new_score_moves_the_slider_to_its_range_and_calibrated_threshold(checkpoint, tmp_path):
    from mask2anomaly.app.page import PageHandlers

    analyser = Analyser.from_checkpoint(checkpoint)
    handlers = PageHandlers(analyser, tmp_path, None, {"mask2anomaly": 0.3, "energy": -1.5})
    energy = handlers.threshold_slider("energy")
    low, high = display_range("energy", analyser.num_classes)
    assert (energy["minimum"], energy["maximum"]) == (low, high) and low < high
    assert energy["value"] == min(max(-1.5, low), high)
    assert handlers.threshold_slider("mask2anomaly")["value"] == 0.3


def test_bad_upload_is_one_line_and_the_app_keeps_serving(served, client, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    good = scene(tmp_path / "good.png", 3)
    Image.fromarray(good).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:200])  # truncated
    (tmp_path / "notes.txt").write_text("hello")
    before = len(served.calls)
    for name, message in (
        ("junk.png", "⚠ junk.png: not a readable image"),
        ("cut.png", "⚠ cut.png: cannot read image ("),
        ("notes.txt", "⚠ notes.txt: not a readable image"),
    ):
        result = analyse(client, tmp_path / name)
        assert result["status"].startswith(message), result["status"]
        assert "\n" not in result["status"] and str(tmp_path) not in result["status"]
        assert result["anomaly"] is None and result["files"] == {}
    assert len(served.calls) == before
    result = analyse(client, tmp_path / "good.png")
    np.testing.assert_allclose(
        np.load(result["files"]["anomaly.npy"]),
        served.reference.predict(good).anomaly_score,
        atol=1e-6,
    )


def test_two_concurrent_requests_both_succeed(served, tmp_path):
    images = {seed: scene(tmp_path / f"{seed}.png", seed, (50, 90)) for seed in (11, 12)}
    results: dict[int, dict] = {}

    def request(seed: int) -> None:
        results[seed] = analyse(served.client(), tmp_path / f"{seed}.png")

    threads = [threading.Thread(target=request, args=(seed,)) for seed in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == sorted(images)
    for seed, image in images.items():
        stored = np.load(results[seed]["files"]["anomaly.npy"])
        np.testing.assert_allclose(stored, served.reference.predict(image).anomaly_score, atol=1e-6)


def _call_raw(url: str, payload: dict) -> str:
    """POST to the /analyse endpoint without gradio_client (no upload), read the result."""
    event = httpx.post(f"{url}gradio_api/call/analyse", json={"data": [payload]}, timeout=30)
    event_id = event.json()["event_id"]
    return httpx.get(f"{url}gradio_api/call/analyse/{event_id}", timeout=60).text


def test_no_server_path_from_the_page_is_opened(served, client, tmp_path):
    secret = tmp_path / "secret.png"
    scene(secret, 4)
    before = len(served.calls)
    for path in (str(secret), "/etc/hostname"):
        answer = _call_raw(served.url, {"path": path, "meta": {"_type": "gradio.FileData"}})
        assert answer.startswith("event: error"), answer
        fetched = httpx.get(f"{served.url}gradio_api/file={path}", timeout=30)
        assert fetched.status_code in (403, 404)
    assert len(served.calls) == before  # never read, never predicted
    assert analyse(client, secret)["status"].startswith("prediction: ")  # uploaded, it works


def test_uploads_over_the_limit_are_refused(served, client, tmp_path):
    big = tmp_path / "big.png"
    noise = np.random.default_rng(0).integers(0, 256, (500, 500, 3)).astype(np.uint8)
    Image.fromarray(noise).save(big)  # ~750 KB of noise: over the 0.5 MB limit
    assert big.stat().st_size > UPLOAD_LIMIT_MB * 1024 * 1024
    with open(big, "rb") as file:
        answer = httpx.post(f"{served.url}gradio_api/upload", files={"files": file}, timeout=30)
    assert answer.status_code == 413
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # said by the page
        analyse(client, big)
    scene(tmp_path / "small.png", 5)
    assert analyse(client, tmp_path / "small.png")["status"].endswith("≥ 0.5")


def test_video_is_annotated_at_its_frame_rate(served, client, tmp_path):
    av = pytest.importorskip("av")
    from mask2anomaly.inference.media import VideoWriter

    writer = VideoWriter(tmp_path / "clip.mp4", Fraction(8))
    for seed in range(4):
        writer.write(render_scene(np.random.default_rng(seed), (48, 96)).image)
    writer.close()
    before = len(served.calls)
    video, status = client.predict(
        video=handle_file(str(tmp_path / "clip.mp4")), threshold=0.3, api_name="/annotate_video"
    )
    assert len(served.calls) == before + 8  # 4 frames, each with its flip
    assert status.startswith("4 frames in ")
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate == 8
    assert len(frames) == 4 and frames[0].shape == (48, 96, 3)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    video, status = client.predict(
        video=handle_file(str(tmp_path / "broken.mp4")), api_name="/annotate_video"
    )
    assert video is None and status.startswith("⚠ broken.mp4: ")


def test_the_command_serves_on_loopback(checkpoint, tmp_path):
    port = free_port()
    (tmp_path / "metrics.json").write_text('{"threshold": 0.25}')
    command = [sys.executable, "-m", "mask2anomaly", "app", "--weights", str(checkpoint),
               "--port", str(port), "--calibration", str(tmp_path / "metrics.json")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert process.poll() is None, log.read_text()
        scene(tmp_path / "frame.png", 6)
        client = Client(url, download_files=str(tmp_path), verbose=False)
        result = analyse(client, tmp_path / "frame.png")
        assert result["status"].endswith("≥ 0.25")  # the calibration file's threshold
        busy = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        lines = busy.stderr.strip().splitlines()  # a second app on the same port
        assert busy.returncode == 2 and len(lines) == 1, busy.stderr
        assert lines[0] == (
            f"mask2anomaly app: error: cannot serve on 127.0.0.1:{port}: the port is in use "
            "or the address is not this machine's (--port, --host)"
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "threshold 0.25 (" in log.read_text()


def test_bad_weights_are_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not weights")
    assert main(["app", "--weights", str(tmp_path / "notes.txt")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mask2anomaly app: error: {tmp_path}/notes.txt")
