"""Pictures of a prediction: Cityscapes-coloured semantic map (and open-set map, unknown in
white), anomaly heat-map overlay with contours at a threshold, a side-by-side panel, and the
16-bit PNG encoding of an anomaly map; anomaly instances drawn as contours, boxes and
confidences.

Heat maps use a fixed scale (anomaly score 0 -> transparent, 1 -> full colour) rather than each
frame's own range, so that frames of a video and different images compare directly; scores
other than Eq. 2 are first mapped to it by their display range (`to_display`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..evaluation.instances import Instance

# Colours of the 19 Cityscapes train IDs (road, sidewalk, building, wall, fence, pole, traffic
# light, traffic sign, vegetation, terrain, sky, person, rider, car, truck, bus, train,
# motorcycle, bicycle): the benchmark's standard colouring. IDs past 18 are drawn black.
CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ],
    dtype=np.uint8,
)
# Heat colour ramp (score -> RGB), linear between these stops: dark blue, red, yellow, white.
HEAT_STOPS = np.array([0.0, 0.35, 0.7, 1.0])
HEAT_COLORS = np.array([(20, 20, 120), (220, 30, 30), (255, 220, 0), (255, 255, 255)], float)
CONTOUR_COLOR = (0, 255, 0)
INSTANCE_COLOR = (0, 255, 255)  # contours of anomaly instances
BOX_COLOR = (255, 0, 255)  # their boxes and confidences
UNKNOWN_COLOR = (255, 255, 255)  # the "unknown" class of open-set maps: no Cityscapes colour
PNG16_MAX = 65535  # 16-bit PNG value of anomaly score 1.0
PANEL_TILE_WIDTH = 1024  # panel tiles wider than this are scaled down
LABEL_HEIGHT = 18  # pixels of the caption strip above each panel tile


def colorize_semantic(semantic: np.ndarray, unknown: int | None = None) -> np.ndarray:
    """Train IDs uint8 [H, W] -> Cityscapes colours uint8 [H, W, 3] (other IDs black; the
    open-set label `unknown`, when given, white)."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(CITYSCAPES_PALETTE)] = CITYSCAPES_PALETTE
    if unknown is not None:
        palette[unknown] = UNKNOWN_COLOR
    return palette[semantic.astype(np.uint8)]


def heat_colors(score: np.ndarray) -> np.ndarray:
    """Anomaly scores [H, W] (clipped to [0, 1]) -> float RGB [H, W, 3] on the heat ramp."""
    value = np.clip(score.astype(np.float32), 0.0, 1.0)
    return np.stack(
        [np.interp(value, HEAT_STOPS, HEAT_COLORS[:, c]) for c in range(3)], axis=-1
    ).astype(np.float32)


def mask_boundary(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of a bool mask [H, W] within `width` pixels of its edge (inside the mask)."""
    interior = mask.copy()
    for _ in range(width):
        padded = np.pad(interior, 1, mode="edge")
        interior = (
            interior & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        )
    return mask & ~interior


def heat_overlay(
    image: np.ndarray,
    score: np.ndarray,
    *,
    threshold: float | None = None,
    max_alpha: float = 0.7,
) -> np.ndarray:
    """The image with the anomaly heat map blended in, and contours of score >= threshold.

    Args:
        image: uint8 [H, W, 3]; score: float [H, W], higher = more anomalous.
        threshold: draw the outline of score >= threshold (None: no contours).
        max_alpha: opacity of the heat colour at score 1 (it grows linearly from 0 at score 0).

    Returns:
        uint8 [H, W, 3].
    """
    alpha = (np.clip(score.astype(np.float32), 0.0, 1.0) * max_alpha)[..., None]
    out = image.astype(np.float32) * (1 - alpha) + heat_colors(score) * alpha
    if threshold is not None:
        width = max(1, round(max(image.shape[:2]) / 512))
        out[mask_boundary(score >= threshold, width)] = CONTOUR_COLOR
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def draw_instances(picture: np.ndarray, instances: Sequence[Instance]) -> np.ndarray:
    """uint8 [H, W, 3] with each instance's contour, box and confidence drawn on it."""
    out = picture.copy()
    width = max(1, round(max(picture.shape[:2]) / 512))
    for instance in instances:
        edge = mask_boundary(np.pad(instance.crop, 1), width)[1:-1, 1:-1]
        out[instance.rows, instance.cols][edge] = INSTANCE_COLOR
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    for instance in instances:
        x, y, w, h = instance.box
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=BOX_COLOR, width=width)
        text = f"{instance.confidence:.2f}"
        draw.text((x + 2, max(0, y - 12)), text, fill=BOX_COLOR, stroke_width=1,
                  stroke_fill="black")  # fmt: skip
    return np.asarray(canvas)


def side_by_side(tiles: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Captioned tiles uint8 [H, W, 3] of one size, left to right -> uint8 panel.

    Tiles wider than PANEL_TILE_WIDTH are scaled down (aspect kept) so panels stay small.
    """
    height, width = tiles[0][1].shape[:2]
    scale = min(1.0, PANEL_TILE_WIDTH / width)
    tile_h, tile_w = max(1, round(height * scale)), max(1, round(width * scale))
    panel = Image.new("RGB", (tile_w * len(tiles), tile_h + LABEL_HEIGHT), "black")
    draw = ImageDraw.Draw(panel)
    for i, (caption, tile) in enumerate(tiles):
        picture = Image.fromarray(tile)
        if scale < 1.0:
            picture = picture.resize((tile_w, tile_h), Image.Resampling.BILINEAR)
        panel.paste(picture, (i * tile_w, LABEL_HEIGHT))
        draw.text((i * tile_w + 4, 3), caption, fill="white")
    return np.asarray(panel)


def prediction_panel(
    image: np.ndarray,
    overlay: np.ndarray,
    semantic_colors: np.ndarray,
    open_set_colors: np.ndarray | None = None,
) -> np.ndarray:
    """Input | anomaly heat map | semantic map [| open-set map], captioned (uint8)."""
    tiles = [("input", image), ("anomaly", overlay), ("semantic", semantic_colors)]
    if open_set_colors is not None:
        tiles.append(("open set (white: unknown)", open_set_colors))
    return side_by_side(tiles)


def to_display(score: np.ndarray, display: tuple[float, float]) -> np.ndarray:
    """A score map in the [0, 1] scale of the pictures: (score - low) / (high - low) for its
    display range (`scoring.scores.display_range`; Eq. 2's is [0, 1], kept as is)."""
    low, high = display
    if (low, high) == (0.0, 1.0):
        return score
    return ((score.astype(np.float64) - low) / (high - low)).astype(np.float32)


def threshold_to_display(threshold: float, display: tuple[float, float]) -> float:
    """A threshold in the score's units -> the same level on the `to_display` scale."""
    low, high = display
    if (low, high) == (0.0, 1.0):
        return threshold
    return (threshold - low) / (high - low)


def anomaly_to_png16(score: np.ndarray) -> np.ndarray:
    """Anomaly map [H, W] -> uint16 for a 16-bit PNG: round(clip(score, 0, 1) * 65535).

    Decode with `png / 65535`; the error is at most 0.5 / 65535 inside [0, 1]. Scores below 0
    (where predicted masks overlap, the semantic mass can pass 1) are stored as 0; the .npy map
    keeps them.
    """
    return np.round(np.clip(score.astype(np.float64), 0.0, 1.0) * PNG16_MAX).astype(np.uint16)
