"""Objects of the synthetic road world: a pinhole camera over a curved road, and part builders for
vehicles, people, two-wheelers, poles, signs, traffic lights, trees and street clutter.

Upright objects are fronto-parallel cut-outs placed at a ground point and scaled by focal/depth;
vehicles are boxes whose back (or front) face and visible side face are projected in 3-D, so they
foreshorten with distance. Each builder returns `Part`s in painting order with Cityscapes labelIds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .canvas import Part, Style, ellipse, rectangle, scale_parts, transform

# Cityscapes labelIds (spec benchmarks.md E.1) of everything the world draws.
LABEL_ID = {
    "unlabeled": 0, "ego vehicle": 1, "static": 4, "road": 7, "sidewalk": 8, "building": 11,
    "wall": 12, "fence": 13, "pole": 17, "traffic light": 19, "traffic sign": 20,
    "vegetation": 21, "terrain": 22, "sky": 23, "person": 24, "rider": 25, "car": 26,
    "truck": 27, "bus": 28, "motorcycle": 32, "bicycle": 33,
}  # fmt: skip
MIN_THICKNESS_PX = 3.0  # thin structures (poles, frames) never get thinner than this on screen

CAR_COLOURS = [(205, 205, 210), (30, 30, 35), (150, 150, 158), (160, 30, 28), (35, 55, 130),
               (45, 80, 50), (215, 185, 50), (110, 75, 50), (90, 95, 105)]  # fmt: skip
CLOTHES = [(40, 45, 70), (150, 30, 35), (30, 30, 30), (200, 200, 190), (60, 110, 60),
           (190, 150, 60), (90, 60, 120), (110, 110, 115), (200, 90, 40)]  # fmt: skip
SKIN = [(230, 190, 160), (200, 150, 110), (140, 95, 65), (95, 65, 45)]
GLASS = (40, 48, 60)
TYRE = (24, 24, 26)


def pick(rng: np.random.Generator, palette: list, spread: float = 12.0) -> tuple:
    """A palette colour with brightness and per-channel jitter."""
    base = np.asarray(palette[rng.integers(len(palette))], np.float64)
    colour = base * rng.uniform(0.85, 1.15) + rng.normal(0.0, spread, 3)
    return tuple(np.clip(colour, 0.0, 255.0))


@dataclass(frozen=True)
class Camera:
    """Pinhole camera `height_m` above a flat ground; the road centre sits at lateral
    `offset + curve * z**2` metres at depth z. `x` arguments are relative to the road centre."""

    focal: float
    cx: float
    horizon: float
    height_m: float
    offset: float
    curve: float

    def road_x(self, z: np.ndarray | float) -> np.ndarray | float:
        return self.offset + self.curve * np.square(z)

    def project(
        self, x: np.ndarray | float, z: np.ndarray | float, y: np.ndarray | float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) pixels of points at road-relative x, depth z, height y (metres)."""
        z = np.maximum(z, 0.3)
        u = self.cx + self.focal * (self.road_x(z) + np.asarray(x)) / z
        v = self.horizon + self.focal * (self.height_m - np.asarray(y)) / z
        return u, v

    def polygon(self, points: list[tuple[float, float, float]]) -> np.ndarray:
        """[V, 2] pixels of 3-D points (x, z, y)."""
        x, z, y = (np.array(c, np.float64) for c in zip(*points))
        return np.stack(self.project(x, z, y), axis=1)

    def anchor(self, x: float, z: float) -> tuple[tuple[float, float], float]:
        """Ground point in pixels and pixels per metre at depth z."""
        u, v = self.project(x, z)
        return (float(u), float(v)), self.focal / max(z, 0.3)


def segment(p: tuple[float, float], q: tuple[float, float], thickness: float) -> np.ndarray:
    """[4, 2] quad of a thick line from p to q (same units as the points)."""
    d = np.subtract(q, p, dtype=np.float64)
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * thickness / 2
    return np.array([np.add(p, n), np.add(q, n), np.subtract(q, n), np.subtract(p, n)])


def _thick(metres: float, scale: float) -> float:
    """A thickness in metres, widened to at least MIN_THICKNESS_PX on screen."""
    return max(metres, MIN_THICKNESS_PX / scale)


Faces = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


def box_faces(
    cam: Camera, x0: float, x1: float, z0: float, z1: float, y0: float, y1: float
) -> Faces:
    """Projected (end face at z0, visible side face or None, top face or None) of a box."""
    end = cam.polygon([(x0, z0, y0), (x1, z0, y0), (x1, z0, y1), (x0, z0, y1)])
    side_x = x0 if cam.road_x(z0) + x0 > 0 else x1 if cam.road_x(z0) + x1 < 0 else None
    side = None
    if side_x is not None:
        side = cam.polygon([(side_x, z0, y0), (side_x, z1, y0), (side_x, z1, y1), (side_x, z0, y1)])
    top = None
    if y1 < cam.height_m:
        top = cam.polygon([(x0, z0, y1), (x1, z0, y1), (x1, z1, y1), (x0, z1, y1)])
    return end, side, top


def _wheel(cam: Camera, x: float, z: float, radius: float) -> np.ndarray:
    """Ellipse of a wheel on a side face at lateral x, centred at depth z."""
    u0, _ = cam.project(x, z - radius)
    u1, _ = cam.project(x, z + radius)
    uc, vc = cam.project(x, z, radius)
    ry = radius * cam.focal / z
    return ellipse(float(uc), float(vc), max(abs(float(u1 - u0)) / 2, 1.0), ry, 16)


def vehicle(
    rng: np.random.Generator, cam: Camera, kind: str, x: float, z: float, instance: int
) -> list[Part]:
    """A car, truck or bus at road-relative x with its near end at depth z."""
    label = LABEL_ID[kind]
    dims = {"car": (1.8, 4.4), "truck": (2.4, 8.5), "bus": (2.5, 12.0)}[kind]
    half, length = dims[0] / 2, dims[1]
    palette = CAR_COLOURS if kind == "car" else [(220, 220, 220), (190, 45, 35), (45, 80, 150),
                                                 (220, 175, 40), (235, 235, 228)]  # fmt: skip
    body = Style(pick(rng, palette), grain=0.03, blotch=0.05, shade=0.15)
    side = Style(tuple(np.multiply(body.colour, 0.78)), grain=0.03, blotch=0.05, shade=0.15)
    glass = Style(pick(rng, [GLASS], 8), grain=0.05, blotch=0.15, shade=0.3)
    dark = Style(TYRE, grain=0.05, blotch=0.05, shade=0.0)

    def faces(
        y0: float, y1: float, inset: float = 0.0, z_in: float = 0.0, z_out: float = 0.0
    ) -> Faces:
        return box_faces(cam, x - half + inset, x + half - inset, z + z_in, z + length - z_out,
                         y0, y1)  # fmt: skip

    def part(polygon: np.ndarray, style: Style) -> Part:
        return Part([polygon], style, label, instance)

    parts = []
    roof = {"car": 1.45, "truck": 3.4, "bus": 3.1}[kind]
    waist = {"car": 0.95, "truck": 0.95, "bus": 1.25}[kind]
    end, side_face, top = faces(0.3, waist if kind == "car" else roof)
    under = faces(0.0, 0.35, inset=0.15)[0]
    parts.append(part(under, dark))
    if side_face is not None:
        parts.append(part(side_face, side))
        side_x = x - half if cam.road_x(z) + x - half > 0 else x + half
        for wz in (z + 0.9, z + length - 0.9):
            parts.append(part(_wheel(cam, side_x, wz, 0.36), dark))
        if kind == "bus":
            band = box_faces(cam, x - half, x + half, z + 0.3, z + length - 2.0, 1.35, 2.6)[1]
            if band is not None:
                parts.append(part(band, glass))
    if top is not None:
        parts.append(part(top, body))
    parts.append(part(end, body))
    if kind == "car":
        cab_end, cab_side, cab_top = faces(waist, roof, inset=0.15, z_in=1.0, z_out=0.9)
        for polygon, style in ((cab_side, glass), (cab_top, body), (cab_end, glass)):
            if polygon is not None:
                parts.append(part(polygon, style))
    else:
        window = box_faces(cam, x - half + 0.2, x + half - 0.2, z, z + 1, 1.7, 2.7)[0]
        parts.append(part(window, glass if kind == "bus" else side))
    lamp = Style((210, 30, 30) if rng.random() < 0.6 else (235, 230, 200), 0.02, 0.02, 0.0)
    for lx in (x - half + 0.1, x + half - 0.4):
        parts.append(part(box_faces(cam, lx, lx + 0.3, z - 0.01, z, 0.7, 0.85)[0], lamp))
    return parts


def person_parts(
    rng: np.random.Generator, label: int, instance: int, *, seated: bool = False
) -> list[Part]:
    """A person (or rider when `seated`) in local metres: feet at y=0, 1.75 m tall."""
    clothes, trousers = Style(pick(rng, CLOTHES), 0.05, 0.12), Style(pick(rng, CLOTHES), 0.05, 0.1)
    skin, hair = Style(pick(rng, SKIN, 6), 0.03, 0.05), Style(pick(rng, [(40, 30, 25)]), 0.1, 0.1)
    if seated:  # on a bike facing +x: hip above the saddle, leaning forward
        legs = [segment((-0.1, 0.95), (0.1, 0.55), 0.18), segment((0.1, 0.55), (0.05, 0.3), 0.14)]
        torso = [segment((-0.1, 0.95), (0.12, 1.45), 0.34)]
        arms = [segment((0.1, 1.4), (0.45, 1.05), 0.1)]
        head = (0.18, 1.62)
    else:
        stride = rng.uniform(-0.12, 0.12)
        legs = [segment((-0.1 + stride, 0.0), (-0.09, 0.88), 0.16),
                segment((0.1 - stride, 0.0), (0.09, 0.88), 0.16)]  # fmt: skip
        torso = [np.array([[-0.22, 0.85], [0.22, 0.85], [0.24, 1.45], [-0.24, 1.45]])]
        arms = [segment((-0.28, 1.42), (-0.3, 0.9), 0.1), segment((0.28, 1.42), (0.3, 0.9), 0.1)]
        head = (0.0, 1.6)
    return [
        Part(legs, trousers, label, instance),
        Part(torso + arms, clothes, label, instance),
        Part([ellipse(*head, 0.11, 0.13, 12)], skin, label, instance),
        Part([ellipse(head[0], head[1] + 0.07, 0.115, 0.08, 12)], hair, label, instance),
    ]


def two_wheeler_parts(
    rng: np.random.Generator, kind: str, instance: int, scale: float
) -> list[Part]:
    """A bicycle or motorcycle in side view (local metres, facing +x, wheels on y=0)."""
    label = LABEL_ID[kind]
    frame = Style(pick(rng, CLOTHES + CAR_COLOURS), 0.03, 0.05)
    dark = Style(TYRE, 0.05, 0.05, 0.0)
    radius, base = (0.34, 0.55) if kind == "bicycle" else (0.32, 0.7)
    rim = _thick(0.09 if kind == "bicycle" else 0.12, scale)
    hubs = [(-base, radius), (base, radius)]
    wheels = Part([ellipse(cx, cy, radius, radius, 18) for cx, cy in hubs], dark, label, instance)
    if kind == "bicycle":
        wheels.holes = [ellipse(cx, cy, radius - rim, radius - rim, 18) for cx, cy in hubs]
        t = _thick(0.07, scale)
        joints = [(-base, radius), (-0.12, 0.92), (0.02, 0.36), (0.42, 0.92), (base, radius)]
        bars = [segment(joints[a], joints[b], t) for a, b in ((0, 1), (1, 2), (2, 0), (1, 3),
                                                            (3, 4), (2, 3))]  # fmt: skip
        bars.append(segment((0.42, 0.92), (0.38, 1.08), t))
        return [wheels, Part(bars, frame, label, instance)]
    body = np.array([[-0.55, 0.45], [0.35, 0.42], [0.6, 0.75], [0.3, 0.95], [-0.2, 0.9],
                     [-0.6, 0.7]])  # fmt: skip
    seat = segment((-0.5, 0.92), (0.0, 0.95), 0.1)
    return [wheels, Part([body], frame, label, instance), Part([seat], dark, label, instance)]


def pole_parts(rng: np.random.Generator, scale: float, *, height: float, head: str) -> list[Part]:
    """A pole (local metres, base at 0,0) carrying `head`: "sign", "light", "lamp" or "none"."""
    grey = Style(pick(rng, [(95, 95, 100), (70, 80, 70), (140, 140, 145)], 8), 0.03, 0.05, 0.2)
    half = _thick(0.35, scale) / 2
    parts = [Part([rectangle(-half, 0, half, height)], grey, LABEL_ID["pole"])]
    if head == "lamp":
        parts[0].polygons += [segment((0, height - 0.1), (1.2, height + 0.2), 2 * half),
                              rectangle(0.9, height + 0.05, 1.5, height + 0.3)]  # fmt: skip
    elif head == "light":
        housing = Style(pick(rng, [(35, 35, 38)], 5), 0.03, 0.05, 0.1)
        top = height + 0.1
        lamps = [(0.8, 0.1, 0.1), (0.9, 0.7, 0.1), (0.1, 0.8, 0.3)]
        lit = rng.integers(3)
        box = rectangle(-0.36, top - 1.5, 0.36, top)
        parts.append(Part([box], housing, LABEL_ID["traffic light"]))
        for i, rgb in enumerate(lamps):
            gain = 255 if i == lit else 70
            lamp = Style((rgb[0] * gain, rgb[1] * gain, rgb[2] * gain), 0.02, 0.02, 0.0)
            circle = ellipse(0, top - 0.27 - 0.48 * i, 0.19, 0.19, 12)
            parts.append(Part([circle], lamp, LABEL_ID["traffic light"]))
    elif head == "sign":
        parts += sign_parts(rng, centre=(0.0, height - 0.45))
    return parts


def sign_parts(rng: np.random.Generator, centre: tuple[float, float]) -> list[Part]:
    """A traffic sign plate (local metres) centred at `centre`: circle, triangle, diamond or
    rectangle in regulatory colours with an inner symbol."""
    cx, cy = centre
    label = LABEL_ID["traffic sign"]
    kind = rng.integers(4)
    red, white = (200, 30, 35), (235, 235, 235)
    blue, yellow = (30, 70, 170), (235, 195, 30)
    if kind == 0:
        outer, inner, colours = ellipse(cx, cy, 0.42, 0.42), ellipse(cx, cy, 0.3, 0.3), (red, white)
    elif kind == 1:
        outer = np.array([[cx - 0.5, cy - 0.38], [cx + 0.5, cy - 0.38], [cx, cy + 0.5]])
        inner = np.array([[cx - 0.3, cy - 0.26], [cx + 0.3, cy - 0.26], [cx, cy + 0.28]])
        colours = (red, white)
    elif kind == 2:
        outer = np.array([[cx, cy - 0.45], [cx + 0.45, cy], [cx, cy + 0.45], [cx - 0.45, cy]])
        inner, colours = rectangle(cx - 0.12, cy - 0.12, cx + 0.12, cy + 0.12), (white, yellow)
    else:
        outer = rectangle(cx - 0.55, cy - 0.35, cx + 0.55, cy + 0.35)
        inner, colours = rectangle(cx - 0.4, cy - 0.06, cx + 0.4, cy + 0.06), (blue, white)
    outer, inner = (cx, cy) + (outer - (cx, cy)) * 1.25, (cx, cy) + (inner - (cx, cy)) * 1.25
    return [Part([outer], Style(pick(rng, [colours[0]], 10), 0.02, 0.04), label),
            Part([inner], Style(pick(rng, [colours[1]], 10), 0.02, 0.04), label)]  # fmt: skip


def tree_parts(rng: np.random.Generator, scale: float, *, height: float) -> list[Part]:
    """A tree (local metres, trunk base at 0,0): trunk and a crown of overlapping ellipses."""
    label = LABEL_ID["vegetation"]
    bark = Style(pick(rng, [(85, 65, 45)], 10), 0.1, 0.15, 0.1)
    leaves = Style(pick(rng, [(60, 100, 40), (45, 85, 35), (85, 120, 50), (50, 80, 45)], 10),
                   grain=0.22, blotch=0.25, shade=0.2)  # fmt: skip
    radius = height * rng.uniform(0.25, 0.4)
    crown_y = height - radius
    blobs = [ellipse(rng.normal(0, radius * 0.35), crown_y + rng.normal(0, radius * 0.25),
                     radius * rng.uniform(0.55, 0.9), radius * rng.uniform(0.5, 0.8))
             for _ in range(rng.integers(3, 7))]  # fmt: skip
    trunk = rectangle(-_thick(0.18, scale), 0, _thick(0.18, scale), crown_y)
    return [Part([trunk], bark, label), Part(blobs, leaves, label)]


def clutter_parts(rng: np.random.Generator) -> list[Part]:
    """Street furniture left void in Cityscapes (labelId 4 static): a bin or a bollard."""
    style = Style(pick(rng, [(50, 70, 55), (80, 80, 85), (150, 120, 40)], 10), 0.05, 0.1, 0.2)
    if rng.random() < 0.5:
        return [Part([rectangle(-0.3, 0, 0.3, 1.0)], style, LABEL_ID["static"])]
    return [Part([rectangle(-0.12, 0, 0.12, 0.9), ellipse(0, 0.9, 0.12, 0.05, 8)], style,
                 LABEL_ID["static"])]  # fmt: skip


def place(
    parts: list[Part], origin: tuple[float, float], scale: float, flip: bool = False
) -> list[Part]:
    """Parts in local metres -> pixels at ground point `origin` and `scale` px/m (in place)."""
    sign = np.array([-1.0 if flip else 1.0, 1.0])
    for part in scale_parts(parts, scale):
        part.polygons = [transform(p * sign, origin, 1.0) for p in part.polygons]
        part.holes = [transform(p * sign, origin, 1.0) for p in part.holes]
    return parts
