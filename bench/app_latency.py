"""How long the browser app takes to answer: a first and a repeated prediction of one image.

Builds a Mask2Anomaly (default: `cityscapes_r50`, random weights, saved and loaded as a native
checkpoint like any other), serves `mask2anomaly app`'s page on a free loopback port and times
requests through its HTTP API (gradio_client) on a synthetic street image: the first request
(the model runs: with flip averaging, two forward passes), the same image with another threshold
(the cached prediction is redrawn), and the image without flip averaging (one forward pass).
Each line: seconds of the whole request (upload, prediction or cache, pictures, downloads) and
the prediction's own seconds as the page reports them.

    python bench/app_latency.py [--config cityscapes_r50] [--size 1024x2048] [--threads 2]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cityscapes_r50")
    parser.add_argument("--size", default="1024x2048", help="image HxW")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from gradio_client import Client, handle_file

    from mask2anomaly.app.analysis import Analyser
    from mask2anomaly.app.page import build_page, serve
    from mask2anomaly.checkpoint import save_checkpoint
    from mask2anomaly.config import load_config
    from mask2anomaly.data.synthetic.scene import render_scene
    from mask2anomaly.model import build_model

    height, width = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="app-latency-") as folder:
        work = Path(folder)
        torch.manual_seed(0)
        cfg = load_config(args.config)
        save_checkpoint(work / "model.pt", build_model(cfg.model), cfg)
        image = render_scene(np.random.default_rng(0), (height, width), anomalies="obstacle")
        Image.fromarray(image.image).save(work / "street.png")
        analyser = Analyser.from_checkpoint(work / "model.pt")
        page = build_page(analyser, work / "app")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = serve(page, port=port, block=False, quiet=True, max_upload_mb=100)
        client = Client(url, download_files=str(work / "downloads"), verbose=False)
        print(f"{args.config}, {height}x{width}, {torch.get_num_threads()} threads")
        for what, settings in (
            ("first (flip averaging)", {"threshold": 0.5}),
            ("repeated, threshold changed", {"threshold": 0.4}),
            ("repeated, same settings", {"threshold": 0.4}),
            ("first without flip averaging", {"threshold": 0.4, "flip": False}),
        ):
            start = time.perf_counter()
            *_, status, _ = client.predict(
                image=handle_file(str(work / "street.png")), api_name="/analyse", **settings
            )
            seconds = time.perf_counter() - start
            print(f"{what:32s} {seconds:7.2f} s   page: {status}")
        page.close()


if __name__ == "__main__":
    main()
