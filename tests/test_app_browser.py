"""`mask2anomaly app` in a real browser (issue 18): headless Chromium (Debian's `chromium`, driven
by Playwright's Python API) uploads an image, moves the threshold slider, waits for the overlay,
and checks that it changed and equals what the HTTP API returns; it also opens a built-in
example and saves a screenshot. Skipped, saying why, only where no Chromium is installed."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the app needs the `app` extra")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs Playwright: pip install playwright"
)
CHROMIUM = os.environ.get("MASK2ANOMALY_CHROMIUM") or next(
    filter(None, (shutil.which(name) for name in ("chromium", "chromium-browser"))), None
)
if CHROMIUM is None:
    pytest.skip(
        "no Chromium to drive: install Debian's package (apt-get install chromium) or set "
        "MASK2ANOMALY_CHROMIUM to a Chromium executable",
        allow_module_level=True,
    )

import httpx  # noqa: E402
import torch  # noqa: E402

from mask2anomaly.app.analysis import Analyser  # noqa: E402
from mask2anomaly.app.page import build_page, serve  # noqa: E402
from mask2anomaly.checkpoint import save_checkpoint  # noqa: E402
from mask2anomaly.config import load_config  # noqa: E402
from mask2anomaly.model import build_model  # noqa: E402
from mask2anomaly.scoring.scores import display_range  # noqa: E402
from test_app import analyse, free_port, scene  # noqa: E402
from test_app_analysis import count_calls  # noqa: E402

WAIT_MS = 60_000


def _picture(page, url: str, elem_id: str) -> tuple[str, np.ndarray]:
    """(src, pixels) of the image shown in the component `elem_id`, fetched as the page does."""
    src = page.locator(f"#{elem_id} img").get_attribute("src")
    assert src
    data = httpx.get(src if src.startswith("http") else url.rstrip("/") + src, timeout=30)
    return src, np.asarray(Image.open(io.BytesIO(data.content)).convert("RGB"))


def _wait_for_status(page, text: str) -> str:
    page.wait_for_function(
        "t => (document.querySelector('#status')?.innerText || '').includes(t)",
        arg=text,
        timeout=WAIT_MS,
    )
    return page.locator("#status").inner_text()


def _move_slider(page, fraction: float) -> float:
    """Click the threshold slider's track at `fraction` of its width; returns the new value."""
    track = page.locator("#threshold input[type=range]")
    box = track.bounding_box()
    assert box
    page.mouse.click(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2)
    return float(track.input_value())


@pytest.fixture()
def app(tmp_path):
    torch.manual_seed(0)
    cfg = load_config("tiny", ["inference.min_size=64", "inference.max_size=128"])
    model = build_model(cfg.model)
    with torch.no_grad():  # a random model's masks overlap so much that its scores are < 0:
        for layer in model.decoder.mask_embed.layers:  # flatter masks bring them to ~[0, 0.3]
            layer.weight.mul_(0.1)
    save_checkpoint(tmp_path / "tiny.pt", model, cfg)
    analyser = Analyser.from_checkpoint(tmp_path / "tiny.pt")
    calls = count_calls(analyser.model)
    page = build_page(analyser, tmp_path / "work")
    url = serve(page, port=free_port(), block=False, quiet=True)
    yield url, calls
    page.close()


def test_browser_upload_slider_and_example(app, tmp_path):
    from gradio_client import Client

    url, calls = app
    scene(tmp_path / "street.png", 21, (120, 240))
    client = Client(url, download_files=str(tmp_path / "api"), verbose=False)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="networkidle")
            page.locator("#input input[type=file]").set_input_files(str(tmp_path / "street.png"))
            status = _wait_for_status(page, "prediction: ")
            assert "240×120" in status and "≥ 0.5" in status
            first_src, first = _picture(page, url, "anomaly")
            result = analyse(client, tmp_path / "street.png")
            np.testing.assert_array_equal(first, result["anomaly"])
            score = np.load(result["files"]["anomaly.npy"])
            predicted = len(calls)

            threshold = _move_slider(page, float(np.median(score)))  # about there
            assert 0 < np.mean(score >= threshold) < 1 and not (score >= 0.5).any()
            status = _wait_for_status(page, f"≥ {threshold:g}")
            assert status.startswith("cached prediction: ")
            page.wait_for_function(
                "src => document.querySelector('#anomaly img')?.src !== src", arg=first_src
            )
            _, moved = _picture(page, url, "anomaly")
            assert (moved != first).any()
            api = analyse(client, tmp_path / "street.png", threshold=threshold)["anomaly"]
            np.testing.assert_array_equal(moved, api)
            assert len(calls) == predicted  # the slider never ran the model

            page.locator("#instances label", has_text="components").click()
            status = _wait_for_status(page, "instances (components)")
            assert status.startswith("cached prediction: ") and len(calls) == predicted
            listed = analyse(client, tmp_path / "street.png", threshold=threshold,
                             instances="components")["instances"]  # fmt: skip
            assert f"{len(listed)} instances (components)" in status

            page.locator("#score input").click()  # another score: its range, a new prediction
            page.get_by_role("option", name="rba", exact=True).click()
            status = _wait_for_status(page, "score rba")
            low, high = display_range("rba", 19)
            slider = page.locator("#threshold input[type=range]")
            assert float(slider.get_attribute("min")) == pytest.approx(low)
            assert float(slider.get_attribute("max")) == pytest.approx(high)
            assert len(calls) == predicted + 2  # the image and its flip, with the rba score

            page.locator("#threshold input[type=range]").scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            assert Image.open(tmp_path / "app.png").width >= 1400

            page.locator("#examples button").first.click()  # a built-in example
            _wait_for_status(page, "1024×512")
        finally:
            browser.close()
