"""Raster canvas of the synthetic road world: polygons painted with textured, shaded colours.

Every drawn shape is a `Part` (polygons in pixels, optional holes, a `Style`, a Cityscapes labelId
and an instance key). `Canvas.paint` rasterises the part with PIL on its bounding box only and
writes colour, labelId, instance id and anomaly id in painter's order, so later parts occlude
earlier ones. All randomness comes from a numpy Generator passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

NOISE_CELLS = (6, 24)  # medium and coarse noise: one random value per this many pixels


@dataclass(frozen=True)
class Pattern:
    """A procedural two-colour pattern in image coordinates.

    kind: "stripes" (bands across `angle`), "checker" (squares) or "grid" (thin lines).
    period: pattern period in pixels; duty: fraction of a period in the second colour.
    """

    kind: str
    period: float
    colour: tuple[float, float, float]
    angle: float = 0.0
    duty: float = 0.5


@dataclass(frozen=True)
class Style:
    """How a part is coloured: RGB 0..255 times (1 + grain * fine noise + blotch * medium noise
    + shade * vertical gradient), with an optional second-colour `pattern`."""

    colour: tuple[float, float, float]
    grain: float = 0.04
    blotch: float = 0.08
    shade: float = 0.1
    pattern: Pattern | None = None


@dataclass
class Part:
    """One painted shape: polygons ([V, 2] float x, y pixels), holes cut from them, its style,
    Cityscapes labelId, instance index (0 for stuff) and anomaly index (0 for inliers)."""

    polygons: list[np.ndarray]
    style: Style
    label_id: int
    instance: int = 0
    anomaly: int = 0
    holes: list[np.ndarray] = field(default_factory=list)


def ellipse(cx: float, cy: float, rx: float, ry: float, num_vertices: int = 20) -> np.ndarray:
    """[V, 2] polygon approximating an axis-aligned ellipse."""
    angles = np.linspace(0.0, 2.0 * np.pi, num_vertices, endpoint=False)
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def rectangle(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """[4, 2] polygon of an axis-aligned rectangle."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def transform(polygon: np.ndarray, origin: tuple[float, float], scale: float) -> np.ndarray:
    """Local coordinates (x right, y up, units) -> image pixels (x right, y down)."""
    return np.stack([origin[0] + polygon[:, 0] * scale, origin[1] - polygon[:, 1] * scale], 1)


def scale_parts(parts: list[Part], factor: float) -> list[Part]:
    """Scale polygons, holes and pattern periods of parts about the origin (in place)."""
    for part in parts:
        part.polygons = [p * factor for p in part.polygons]
        part.holes = [p * factor for p in part.holes]
        if part.style.pattern is not None:
            pattern = replace(part.style.pattern, period=part.style.pattern.period * factor)
            part.style = replace(part.style, pattern=pattern)
    return parts


def polygons_box(
    polygons: Sequence[np.ndarray], height: int, width: int
) -> tuple[int, int, int, int] | None:
    """Integer (x0, y0, x1, y1) of the polygons clipped to the image, or None if empty."""
    points = np.concatenate(polygons)
    x0 = max(int(np.floor(points[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(points[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(points[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(points[:, 1].max())) + 2, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def rasterise(
    polygons: Sequence[np.ndarray], box: tuple[int, int, int, int], holes: Sequence[np.ndarray] = ()
) -> np.ndarray:
    """[y1 - y0, x1 - x0] bool union of the polygons minus the holes inside `box` (PIL fill)."""
    x0, y0, x1, y1 = box
    image = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(image)
    for polygons_, value in ((polygons, 1), (holes, 0)):
        for polygon in polygons_:
            if len(polygon) >= 3:
                draw.polygon((polygon - (x0, y0)).ravel().tolist(), fill=value)
    return np.asarray(image, dtype=bool)


def _noise_field(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """[H, W] float32 smooth noise (unit-ish std): bilinear upsampling of a coarse normal grid."""
    small = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
    field_ = Image.fromarray(small, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(field_) * 1.4


def pattern_mask(pattern: Pattern, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """bool per pixel (ys, xs: [n] image coordinates): True where the second colour shows."""
    if pattern.kind == "stripes":
        t = xs * np.cos(pattern.angle) + ys * np.sin(pattern.angle)
        return np.mod(t / pattern.period, 1.0) < pattern.duty
    u, v = np.mod(xs / pattern.period, 1.0), np.mod(ys / pattern.period, 1.0)
    if pattern.kind == "checker":
        return (u < 0.5) ^ (v < 0.5)
    if pattern.kind == "grid":
        return (u < pattern.duty) | (v < pattern.duty)
    raise ValueError(f"unknown pattern kind {pattern.kind!r}")


class Canvas:
    """An image being painted with its label maps.

    Every `paint` call (and `new_layer`) makes a layer holding a labelId, an instance index and
    an anomaly index; `layers` records which layer shows at each pixel, so one integer write per
    pixel keeps the three label maps.

    Attributes:
        image: [H, W, 3] float32 RGB (0..255 before clipping).
        layers: [H, W] int32 index of the visible layer (0: nothing painted, labelId 0).
        fine, medium, coarse: [H, W] float32 noise fields shared by all parts.
    """

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.image = np.zeros((height, width, 3), np.float32)
        self.layers = np.zeros((height, width), np.int32)
        self._layer_values: list[tuple[int, int, int]] = [(0, 0, 0)]
        self.fine = rng.standard_normal((height, width), dtype=np.float32)
        self.medium = _noise_field(rng, height, width, NOISE_CELLS[0])
        self.coarse = _noise_field(rng, height, width, NOISE_CELLS[1])

    def new_layer(self, label_id: int, instance: int = 0, anomaly: int = 0) -> int:
        """Index of a new layer with these values (write it into `layers` yourself)."""
        self._layer_values.append((label_id, instance, anomaly))
        return len(self._layer_values) - 1

    def _lookup(self, column: int, dtype: type) -> np.ndarray:
        table: np.ndarray = np.array([v[column] for v in self._layer_values], dtype)
        return table[self.layers]

    @property
    def label_ids(self) -> np.ndarray:
        """[H, W] uint8 Cityscapes labelIds."""
        return self._lookup(0, np.uint8)

    @property
    def instances(self) -> np.ndarray:
        """[H, W] int32 instance index of thing/anomaly parts (0 elsewhere)."""
        return self._lookup(1, np.int32)

    @property
    def anomalies(self) -> np.ndarray:
        """[H, W] uint8 anomaly index (0 = inlier or void)."""
        return self._lookup(2, np.uint8)

    def colours(self, style: Style, box: tuple[int, int, int, int], mask: np.ndarray) -> np.ndarray:
        """[n, 3] float32 colours of the `mask` pixels ([h, w] bool) of a part in `box`."""
        x0, y0, x1, y1 = box
        window = (slice(y0, y1), slice(x0, x1))
        fine, medium = self.fine[window][mask], self.medium[window][mask]
        gain = 1.0 + style.grain * fine + style.blotch * medium
        if style.shade or style.pattern is not None:
            ys, xs = np.nonzero(mask)
            if style.shade:
                gain += style.shade * (1.0 - 2.0 * ys / max(y1 - y0, 1)).astype(np.float32)
        rgb = np.asarray(style.colour, np.float32)[None, :]
        if style.pattern is not None:
            alt = pattern_mask(style.pattern, ys + np.float32(y0), xs + np.float32(x0))
            rgb = np.where(alt[:, None], np.asarray(style.pattern.colour, np.float32), rgb)
        return rgb * gain[:, None]

    def paint(self, part: Part) -> int:
        """Paint `part` over what is there; returns the number of pixels painted."""
        if not part.polygons:
            return 0
        box = polygons_box(part.polygons, self.height, self.width)
        if box is None:
            return 0
        mask = rasterise(part.polygons, box, part.holes)
        x0, y0, x1, y1 = box
        window = (slice(y0, y1), slice(x0, x1))
        colours = self.colours(part.style, box, mask)
        if not len(colours):
            return 0
        self.image[window][mask] = colours
        self.layers[window][mask] = self.new_layer(part.label_id, part.instance, part.anomaly)
        return len(colours)

    def paint_all(self, parts: Sequence[Part]) -> None:
        for part in parts:
            self.paint(part)

    def finish(self, rng: np.random.Generator, *, blur: float, noise: float) -> np.ndarray:
        """[H, W, 3] uint8 image after sensor noise (std, 0..255) and lens blur (box radius, px)."""
        # sensor noise: a per-channel mix of the shared per-pixel noise field (cheap, still random)
        mix = (noise * (1.0 + 0.3 * rng.standard_normal(3))).astype(np.float32)
        image = self.image + self.fine[..., None] * mix
        image = np.clip(image, 0, 255).astype(np.uint8)
        if blur > 0.05:  # one box pass: cheap, and enough to soften the rendered edges
            image = np.asarray(Image.fromarray(image).filter(ImageFilter.BoxBlur(blur)))
        return image
