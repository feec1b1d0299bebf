"""The Gradio page of `mask2anomaly app` and its HTTP API (issue 18).

One page: an image tab (upload, paste or a built-in example; outputs the anomaly picture, the
semantic map, a status line with the prediction's time, and downloads) and a video tab (the
annotated video at the source frame rate, with a progress bar), sharing the controls. The image
function is also the API endpoint `/analyse`, the video one `/annotate_video`. Every image event
calls the same `PageHandlers.analyse`; the Analyser's cache makes threshold, view and refinement
changes cheap. A new control is one more entry of `controls` (named in `_inputs`, in the order
of the handlers' parameters, which pass it into `AppSettings`). Safe by default: `serve` binds
127.0.0.1, shares nothing without `share`, limits the upload size, and a bad upload is a one-line
status message, not an error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr

from ..config import DEFAULT_SCORE
from ..errors import UserError
from ..inference.media import DEFAULT_MAX_PIXELS
from ..scoring.scores import SCORE_NAMES, display_range
from .analysis import (
    DEFAULT_THRESHOLD,
    INSTANCE_COLUMNS,
    INSTANCE_METHODS,
    VIEWS,
    Analyser,
    AppSettings,
    score_thresholds,
)
from .files import Scratch, annotate_video, read_upload, write_downloads, write_examples

NO_IMAGE = "Upload an image, paste one, or pick an example below."
NO_VIDEO = "Upload a video."
ERROR_MARK = "⚠"
# System fonts: the default theme would fetch fonts from the internet.
THEME = gr.themes.Default(
    font=("ui-sans-serif", "system-ui", "sans-serif"), font_mono=("ui-monospace", "monospace")
)
CACHE_CLEANUP = (3600, 3600)  # (every, older than) seconds: Gradio's copies of page files


def _upload(payload: Any) -> tuple[Path, str]:
    """(path of Gradio's cached copy, the name the user gave it) of an image upload. The image
    events skip Gradio's decoding (`preprocess=False`: a corrupt file would be an error there) and
    get the file's record, after Gradio has checked that it was uploaded to its cache."""
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path:
        raise UserError("the image arrived without a file: upload it as a file")
    return Path(path), Path(payload.get("orig_name") or Path(path).name).name


SLIDER_STEPS = 1000  # slider positions across a score's display range


def _settings(
    refinement: Any,
    flip: Any,
    threshold: Any,
    view: Any,
    score: Any = DEFAULT_SCORE,
    open_set: Any = True,
    instances: Any = "off",
) -> AppSettings:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise UserError(f"threshold must be a number, got {threshold!r}") from None
    return AppSettings(refinement=bool(refinement), flip=bool(flip), threshold=value, view=view,
                       score=score, open_set=bool(open_set), instances=instances)  # fmt: skip


def _problem(error: UserError) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{ERROR_MARK} {lines[0] if lines else 'bad input'}"


class PageHandlers:
    """The page's functions over one Analyser; files go to numbered folders under `work`."""

    def __init__(
        self,
        analyser: Analyser,
        work: Path,
        max_pixels: int | None,
        thresholds: dict[str, float] | None = None,
    ) -> None:
        self.analyser, self.max_pixels = analyser, max_pixels
        self.scratch = Scratch(work / "requests")
        self.thresholds = thresholds or score_thresholds(analyser.num_classes, DEFAULT_THRESHOLD)

    def analyse(
        self,
        image: dict | None,
        refinement: bool,
        flip: bool,
        threshold: float,
        view: str,
        score: str = DEFAULT_SCORE,
        open_set: bool = True,
        instances: str = "off",
    ) -> tuple[str | None, str | None, str | None, list[list[Any]], str, list[str]]:
        """(anomaly picture, semantic picture, open-set picture, instance table rows, status
        line, downloads: map .npy, PNGs, instances JSON) of an uploaded image (Gradio's file
        record, see `_upload`)."""
        if image is None:
            return None, None, None, [], NO_IMAGE, []
        try:
            settings = _settings(refinement, flip, threshold, view, score, open_set, instances)
            path, name = _upload(image)
            pixels = read_upload(path, name, max_pixels=self.max_pixels)
            analysis = self.analyser.analyse(pixels, settings)
            files = write_downloads(analysis, self.scratch.folder(), Path(name).stem)
            rows = analysis.instance_rows()
        except UserError as error:
            return None, None, None, [], _problem(error), []
        anomaly, semantic = str(files["anomaly"]), str(files["semantic"])
        open_set_map = str(files["open_set"]) if "open_set" in files else None
        downloads = [str(path) for path in files.values()]
        return anomaly, semantic, open_set_map, rows, analysis.summary(), downloads

    def threshold_slider(self, score: str) -> Any:
        """The threshold slider for `score`: its display range, its starting threshold."""
        if score not in SCORE_NAMES:
            return gr.update()
        low, high = display_range(score, self.analyser.num_classes)
        value = min(max(self.thresholds[score], low), high)
        step = (high - low) / SLIDER_STEPS
        return gr.update(minimum=low, maximum=high, value=value, step=step)

    def annotate_video(
        self,
        video: str | None,
        refinement: bool,
        flip: bool,
        threshold: float,
        view: str,
        score: str = DEFAULT_SCORE,
        open_set: bool = True,
        instances: str = "off",
        progress: gr.Progress = gr.Progress(),  # noqa: B008 — Gradio's way to declare a bar
    ) -> tuple[str | None, str]:
        """(annotated video at the source frame rate, status line)."""
        if video is None:
            return None, NO_VIDEO
        start = time.perf_counter()
        target = self.scratch.folder() / f"{Path(video).stem}_annotated.mp4"

        def on_frame(done: int, total: int) -> None:
            progress((done, total or None), desc="annotating", unit="frames")

        try:
            settings = _settings(refinement, flip, threshold, view, score, open_set, instances)
            count = annotate_video(
                self.analyser, video, target, settings, max_pixels=self.max_pixels,
                on_frame=on_frame,
            )  # fmt: skip
        except UserError as error:
            return None, _problem(error)
        seconds = time.perf_counter() - start
        return str(target), f"{count} frames in {seconds:.1f} s ({count / seconds:.2f} frames/s)"


def build_page(
    analyser: Analyser,
    work: Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    calibration: str | Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    title: str = "mask2anomaly",
) -> gr.Blocks:
    """The page over `analyser`; its examples and request files live under `work`, a folder in
    the system's temporary folder (Gradio hands on only files there or in its cache).
    `threshold`: the starting threshold of Eq. 2; `calibration`: an evaluation's metrics.json
    with the other scores' starting thresholds (`score_thresholds`)."""
    thresholds = score_thresholds(analyser.num_classes, threshold, calibration)
    handlers = PageHandlers(analyser, work, max_pixels, thresholds)
    examples = write_examples(work / "examples")
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=CACHE_CLEANUP) as page:
        gr.Markdown(
            f"## {title}\nRoad-scene anomaly segmentation (Mask2Anomaly). Drop in a frame, "
            "slide the threshold: contours and masks show the pixels whose anomaly score is at "
            "or above it, in the chosen score's units. The semantic map is in Cityscapes "
            "colours; the open-set map shows the pixels above the threshold as unknown (white); "
            "instances lists the anomaly objects found at the threshold. The downloads hold the "
            "raw anomaly map (.npy, float32), the pictures and the instances (COCO RLE JSON)."
        )
        with gr.Row():
            controls = {
                "threshold": gr.Slider(0.0, 1.0, value=threshold, step=0.001, label="threshold",
                                       elem_id="threshold"),
                "view": gr.Radio(list(VIEWS), value=VIEWS[0], label="view", elem_id="view"),
                "refinement": gr.Checkbox(True, label="refinement mask", elem_id="refinement"),
                "flip": gr.Checkbox(True, label="flip averaging", elem_id="flip"),
            }  # fmt: skip
        with gr.Row():
            controls.update({
                "score": gr.Dropdown(list(SCORE_NAMES), value=DEFAULT_SCORE, label="score",
                                     elem_id="score"),
                "open_set": gr.Checkbox(True, label="open-set map", elem_id="open_set"),
                "instances": gr.Radio(list(INSTANCE_METHODS), value=INSTANCE_METHODS[0],
                                      label="instances", elem_id="instances"),
            })  # fmt: skip
        with gr.Tab("Image"):
            _image_tab(handlers, controls, examples)
        with gr.Tab("Video"):
            _video_tab(handlers, controls)
    return page


def _inputs(controls: dict[str, Any]) -> list[Any]:
    """The controls in the order of the handlers' parameters."""
    names = ("refinement", "flip", "threshold", "view", "score", "open_set", "instances")
    return [controls[name] for name in names]


def _image_tab(handlers: PageHandlers, controls: dict[str, Any], examples: list[Path]) -> None:
    with gr.Row():
        image = gr.Image(label="input", type="filepath", sources=["upload", "clipboard"],
                         elem_id="input")  # fmt: skip
        anomaly = gr.Image(label="anomaly", type="filepath", format="png", interactive=False,
                           elem_id="anomaly")  # fmt: skip
        semantic = gr.Image(label="semantic", type="filepath",
                            format="png", interactive=False, elem_id="semantic")  # fmt: skip
        open_set = gr.Image(label="open set (white: unknown)", type="filepath", format="png",
                            interactive=False, elem_id="open_set_map")  # fmt: skip
    run = gr.Button("Analyse", variant="primary", elem_id="run")
    status = gr.Markdown(NO_IMAGE, label="status", elem_id="status")
    table = gr.Dataframe(headers=list(INSTANCE_COLUMNS), label="instances", interactive=False,
                         elem_id="instance_table")  # fmt: skip
    downloads = gr.File(label="downloads", file_count="multiple", interactive=False,
                        elem_id="downloads")  # fmt: skip
    gr.Examples([[str(p)] for p in examples], inputs=[image],
                label="built-in examples: frames of the synthetic road world",
                elem_id="examples")  # fmt: skip
    event: dict[str, Any] = {
        "fn": handlers.analyse,
        "inputs": [image, *_inputs(controls)],
        "outputs": [anomaly, semantic, open_set, table, status, downloads],
        "concurrency_id": "model",
        "concurrency_limit": 1,
        "preprocess": False,  # the upload's file record, read by the app (`_upload`)
    }
    run.click(**event, api_name="analyse")
    for name in ("refinement", "flip", "view", "open_set", "instances"):
        controls[name].change(**event, api_visibility="private")
    image.change(**event, api_visibility="private")
    # a new score: its slider range and starting threshold first, then the analysis
    controls["score"].change(handlers.threshold_slider, inputs=[controls["score"]],
                             outputs=[controls["threshold"]], api_visibility="private",
                             queue=False).then(**event, api_visibility="private")  # fmt: skip
    controls["threshold"].change(**event, api_visibility="private", trigger_mode="always_last",
                                 show_progress="minimal")  # fmt: skip


def _video_tab(handlers: PageHandlers, controls: dict[str, Any]) -> None:
    with gr.Row():
        video = gr.Video(label="input video", sources=["upload"], include_audio=True)
        annotated = gr.Video(label="annotated", interactive=False)
    run = gr.Button("Annotate video", variant="primary")
    status = gr.Markdown(NO_VIDEO, label="status")
    run.click(
        handlers.annotate_video,
        inputs=[video, *_inputs(controls)],
        outputs=[annotated, status],
        api_name="annotate_video",
        concurrency_id="model",
        concurrency_limit=1,
    )


def serve(
    page: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    max_upload_mb: float = 50.0,
    block: bool = True,
    quiet: bool = False,
) -> str:
    """Start the server (blocking unless `block` is False); returns its local URL. Only
    Gradio's own cache is served: the page's files (under a temporary folder) are copied there
    as they are returned."""
    try:
        _, url, _ = page.launch(
            server_name=host,
            server_port=port,
            share=share,
            max_file_size=int(max_upload_mb * 1024 * 1024),
            ssr_mode=False,
            show_error=False,
            prevent_thread_lock=not block,
            quiet=quiet,
            theme=THEME,
            footer_links=["api"],
        )
    except OSError as error:
        if "empty port" not in str(error):  # Gradio's word for "could not bind"
            raise
        raise UserError(
            f"cannot serve on {host}:{port}: the port is in use or the address is not this "
            "machine's (--port, --host)"
        ) from None
    return url
