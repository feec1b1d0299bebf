"""The README's picture of the browser app (docs/app.png), taken in headless Chromium.

Serves `mask2anomaly app`'s page for a checkpoint (the demo's fine-tuned model makes a telling
picture) on a free loopback port, opens it in Debian's Chromium through Playwright, picks a
built-in example with instances shown, sets the threshold, waits for the overlay and saves a
screenshot of the page as a palette PNG (small enough to commit).

    python bench/app_screenshot.py --weights mask2anomaly-demo/stage2/model_final.pt \
        [--out docs/app.png] [--example 1] [--threshold 0.5] [--instances components] \
        [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
from pathlib import Path

from PIL import Image

VIEWPORT = {"width": 1400, "height": 1080}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out", default="docs/app.png")
    parser.add_argument("--example", type=int, default=1, help="which built-in example (0..2)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument(
        "--instances", default="components", choices=("off", "components", "queries")
    )
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from mask2anomaly.app.analysis import Analyser
    from mask2anomaly.app.page import build_page, serve

    with tempfile.TemporaryDirectory(prefix="app-screenshot-") as folder:
        analyser = Analyser.from_checkpoint(args.weights)
        title = f"mask2anomaly · {Path(args.weights).name}"
        page = build_page(analyser, Path(folder), threshold=args.threshold, title=title)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = serve(page, port=port, block=False, quiet=True)
        shot = Path(folder) / "page.png"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium)
            tab = browser.new_page(viewport=VIEWPORT)
            tab.goto(url, wait_until="networkidle")
            tab.locator("#instances label", has_text=args.instances).click()
            tab.locator("#examples button").nth(args.example).click()
            tab.wait_for_function(
                "() => (document.querySelector('#status')?.innerText || '').includes('prediction')",
                timeout=120_000,
            )
            tab.wait_for_load_state("networkidle")
            tab.wait_for_timeout(2000)  # the outputs fade in
            tab.evaluate("window.scrollTo(0, 0)")
            tab.screenshot(path=str(shot), full_page=False)
            browser.close()
        page.close()
        picture = (
            Image.open(shot).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        picture.save(args.out, optimize=True)
    print(f"{args.out}: {Path(args.out).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
