"""The built-in synthetic road world (issue 6): street scenes in perspective written as
Cityscapes, a COCO-format outlier source and SMIYC / Road Anomaly test sets, so the demo runs the
same loaders as real data. Modules, bottom up: `canvas` (painting), `things` (camera and road
objects), `street` (ground, sky, facades), `objects` (outlier and anomaly families), `scene`
(`render_scene`), `coco` (outlier images and annotations), `writer` (`write_world`).
"""

from __future__ import annotations

from .coco import OutlierImage, OutlierObject, render_outlier_image, rle_encode
from .scene import Scene, render_scene
from .writer import WorldSummary, count_images, existing_world, write_world

__all__ = [
    "OutlierImage",
    "OutlierObject",
    "Scene",
    "WorldSummary",
    "count_images",
    "existing_world",
    "render_outlier_image",
    "render_scene",
    "rle_encode",
    "write_world",
]
