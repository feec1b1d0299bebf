"""Object families outside the road world: COCO-like outliers and the test anomalies.

Training outliers (written as a COCO source) are animals, furniture, balls, umbrellas, suitcases,
clocks, teddy bears and donuts, with real COCO category ids; COCO images may also show excluded
categories (person, car, traffic light, ...). Test anomalies come from *different* families —
rocks, traffic cones, striped barrels, crates, tyres, neon stars, tarps — so that, as with real
benchmarks, what is scored at test time was never seen in fine-tuning. Builders return `Part`s in
unit local coordinates (x right, y up, feet at y = 0, the larger side 1).
"""

from __future__ import annotations

import numpy as np

from .canvas import Part, Pattern, Style, ellipse, rectangle, scale_parts
from .things import (
    CAR_COLOURS,
    person_parts,
    pick,
    pole_parts,
    segment,
    two_wheeler_parts,
)

ANOMALY_FAMILIES = ("rock", "cone", "barrel", "crate", "tyre", "star", "tarp")
# Quadrupeds: body length, leg length, body height, neck length, neck angle (deg), head radius,
# palette, coat pattern ("stripes", "patches" or None).
SPECIES = {
    "dog": (0.9, 0.4, 0.35, 0.25, 50, 0.13, [(120, 80, 45), (30, 28, 26), (210, 170, 100)], None),
    "cat": (0.6, 0.25, 0.25, 0.12, 40, 0.11, [(120, 120, 120), (210, 130, 50)], "stripes"),
    "horse": (1.6, 0.9, 0.6, 0.6, 60, 0.18, [(110, 65, 35), (40, 30, 25), (225, 220, 210)], None),
    "sheep": (1.0, 0.35, 0.55, 0.15, 30, 0.14, [(225, 220, 200)], None),
    "cow": (1.6, 0.7, 0.7, 0.3, 30, 0.2, [(235, 235, 230), (120, 70, 40)], "patches"),
    "elephant": (2.2, 1.1, 1.3, 0.2, 10, 0.45, [(120, 115, 112)], None),
    "bear": (1.4, 0.5, 0.7, 0.25, 20, 0.22, [(75, 50, 30), (25, 22, 20)], None),
    "zebra": (1.6, 0.9, 0.6, 0.6, 60, 0.18, [(235, 235, 235)], "stripes"),
    "giraffe": (1.5, 1.4, 0.6, 1.4, 70, 0.16, [(215, 170, 90)], "patches"),
}  # fmt: skip
COCO_IDS = {
    "person": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "bus": 6, "truck": 8,
    "traffic light": 10, "stop sign": 13, "bird": 16, "cat": 17, "dog": 18, "horse": 19,
    "sheep": 20, "cow": 21, "elephant": 22, "bear": 23, "zebra": 24, "giraffe": 25,
    "umbrella": 28, "suitcase": 33, "sports ball": 37, "donut": 60, "chair": 62, "couch": 63,
    "dining table": 67, "clock": 85, "teddy bear": 88,
}  # fmt: skip
OUTLIER_FAMILIES = (*SPECIES, "bird", "umbrella", "suitcase", "sports ball", "chair", "couch",
                    "dining table", "clock", "teddy bear")  # fmt: skip
EXCLUDED_FAMILIES = ("person", "bicycle", "car", "bus", "traffic light", "stop sign")
CROWD_FAMILIES = ("sports ball", "donut", "bird")


def normalise(parts: list[Part]) -> list[Part]:
    """Shift and scale parts so the feet are at y = 0, centred in x, larger side 1."""
    points = np.concatenate([p for part in parts for p in part.polygons])
    low, high = points.min(0), points.max(0)
    shift = np.array([(low[0] + high[0]) / 2, low[1]])
    for part in parts:
        part.polygons = [p - shift for p in part.polygons]
        part.holes = [p - shift for p in part.holes]
    return scale_parts(parts, 1.0 / max(float((high - low).max()), 1e-6))


def _quadruped(rng: np.random.Generator, species: str) -> list[Part]:
    length, leg, body_h, neck, angle, head_r, palette, coat = SPECIES[species]
    colour = pick(rng, palette, 10)
    pattern = None
    if coat == "stripes":
        pattern = Pattern("stripes", body_h * 0.35, (25, 25, 25), np.pi * 0.05, duty=0.45)
    elif coat == "patches":
        pattern = Pattern("checker", body_h * 0.6, (60, 40, 25))
    fur = Style(colour, grain=0.12, blotch=0.15, shade=0.15, pattern=pattern)
    y_body = leg + body_h / 2
    legs = [segment((x * length, 0), (x * length * 0.9, y_body), 0.1 + 0.05 * length)
            for x in (-0.38, -0.25, 0.25, 0.38)]  # fmt: skip
    root = (length * 0.4, y_body + body_h * 0.2)
    rad = np.deg2rad(angle)
    head = (root[0] + neck * np.cos(rad), root[1] + neck * np.sin(rad))
    shapes = [
        ellipse(0, y_body, length / 2, body_h / 2),
        *legs,
        segment(root, head, head_r * 1.2),
        ellipse(*head, head_r * 1.4, head_r),
        segment((-length / 2, y_body + body_h * 0.2), (-length / 2 - 0.15, leg), 0.05),
    ]
    if species == "elephant":
        shapes.append(segment(head, (head[0] + 0.25, 0.2), 0.14))
    return [Part(shapes, fur, 0)]


def _simple(rng: np.random.Generator, family: str) -> list[Part]:
    """Outlier families made of a few primitives."""
    bright = [(200, 40, 40), (40, 90, 190), (230, 200, 40), (40, 150, 80), (230, 120, 170)]
    if family == "bird":
        feathers = Style(pick(rng, [(120, 90, 60), (30, 30, 30), (230, 230, 225)], 10), 0.1, 0.1)
        beak = Style((220, 160, 40), 0.02, 0.05)
        return [Part([ellipse(0, 0.5, 0.45, 0.22), ellipse(0.42, 0.72, 0.14, 0.13),
                      np.array([[-0.4, 0.5], [-0.75, 0.65], [-0.7, 0.45]]),
                      segment((0, 0.3), (0, 0), 0.04)], feathers, 0),
                Part([np.array([[0.54, 0.76], [0.7, 0.7], [0.54, 0.68]])], beak, 0)]  # fmt: skip
    if family == "umbrella":
        canopy = ellipse(0, 1.0, 1.0, 0.55, 24)
        canopy = canopy[canopy[:, 1] >= 1.0]
        stripes = Pattern("stripes", 0.25, pick(rng, bright), 0.0)
        return [
            Part([segment((0, 1.0), (0, 0.05), 0.05)], Style((40, 40, 40), 0.02, 0.02), 0),
            Part([canopy], Style(pick(rng, bright), 0.03, 0.05, 0.2, stripes), 0),
        ]
    if family == "suitcase":
        style = Style(pick(rng, [(30, 30, 35), (150, 30, 30), (40, 60, 120), (140, 110, 70)]))
        return [Part([rectangle(-0.35, 0.05, 0.35, 1.0), segment((-0.12, 1.1), (0.12, 1.1), 0.06),
                      rectangle(-0.14, 1.0, -0.1, 1.12), rectangle(0.1, 1.0, 0.14, 1.12),
                      ellipse(-0.25, 0.04, 0.05, 0.05, 8), ellipse(0.25, 0.04, 0.05, 0.05, 8)],
                     style, 0)]  # fmt: skip
    if family in ("sports ball", "donut"):
        return _round(rng, family)
    if family == "clock":
        face, rim = Style((235, 235, 230), 0.02, 0.03), Style((40, 40, 45), 0.02, 0.03)
        hands = [segment((0, 0.5), (0, 0.85), 0.05), segment((0, 0.5), (0.25, 0.5), 0.05)]
        return [
            Part([ellipse(0, 0.5, 0.5, 0.5, 24)], rim, 0),
            Part([ellipse(0, 0.5, 0.43, 0.43, 24)], face, 0),
            Part(hands, rim, 0),
        ]
    if family == "teddy bear":
        fur = Style(pick(rng, [(150, 105, 60), (200, 170, 120)]), 0.2, 0.15, 0.1)
        shapes = [
            ellipse(0, 0.4, 0.3, 0.35),
            ellipse(0, 0.9, 0.22, 0.2),
            ellipse(-0.17, 1.07, 0.08, 0.08, 10),
            ellipse(0.17, 1.07, 0.08, 0.08, 10),
            ellipse(-0.32, 0.5, 0.1, 0.18, 10),
            ellipse(0.32, 0.5, 0.1, 0.18, 10),
            ellipse(-0.18, 0.1, 0.12, 0.1, 10),
            ellipse(0.18, 0.1, 0.12, 0.1, 10),
        ]
        return [Part(shapes, fur, 0)]
    return _furniture(rng, family)


def _round(rng: np.random.Generator, family: str) -> list[Part]:
    if family == "sports ball":
        pattern = Pattern("checker", 0.3, (20, 20, 20)) if rng.random() < 0.5 else None
        colour = (235, 235, 235) if pattern else pick(rng, [(220, 110, 30), (230, 210, 60)])
        return [Part([ellipse(0, 0.5, 0.5, 0.5, 24)], Style(colour, 0.03, 0.05, 0.3, pattern), 0)]
    dough, icing = Style((190, 130, 70), 0.08, 0.1, 0.2), Style(pick(rng, [(235, 150, 190)]))
    return [Part([ellipse(0, 0.35, 0.5, 0.35, 24)], dough, 0,
                 holes=[ellipse(0, 0.35, 0.17, 0.12, 16)]),
            Part([ellipse(0, 0.42, 0.42, 0.25, 24)], icing, 0,
                 holes=[ellipse(0, 0.35, 0.17, 0.12, 16)])]  # fmt: skip


def _furniture(rng: np.random.Generator, family: str) -> list[Part]:
    wood = Style(pick(rng, [(120, 80, 45), (90, 60, 40), (170, 130, 90)]), 0.08, 0.12)
    fabric = Style(pick(rng, [(120, 40, 40), (60, 80, 120), (150, 140, 120)]), 0.1, 0.1, 0.2)
    if family == "chair":
        return [
            Part(
                [
                    rectangle(-0.3, 0.45, 0.3, 0.52),
                    rectangle(-0.3, 0, -0.25, 0.45),
                    rectangle(0.25, 0, 0.3, 0.45),
                    rectangle(0.22, 0.52, 0.3, 1.0),
                ],
                wood,
                0,
            )
        ]
    if family == "couch":
        return [
            Part(
                [
                    rectangle(-1.0, 0.1, 1.0, 0.45),
                    rectangle(-0.9, 0.45, 0.9, 0.85),
                    rectangle(-1.1, 0.1, -0.9, 0.6),
                    rectangle(0.9, 0.1, 1.1, 0.6),
                ],
                fabric,
                0,
            )
        ]
    if family == "dining table":
        return [
            Part(
                [
                    rectangle(-0.9, 0.7, 0.9, 0.78),
                    rectangle(-0.8, 0, -0.72, 0.7),
                    rectangle(0.72, 0, 0.8, 0.7),
                ],
                wood,
                0,
            )
        ]
    raise ValueError(f"unknown family {family!r}")


def _excluded(rng: np.random.Generator, family: str) -> list[Part]:
    """Simple drawings of COCO categories the outlier filter rejects."""
    if family == "person":
        return person_parts(rng, 0, 0)
    if family == "bicycle":
        return two_wheeler_parts(rng, "bicycle", 0, scale=100.0)
    if family == "traffic light":
        return pole_parts(rng, 100.0, height=2.0, head="light")
    paint = Style(pick(rng, CAR_COLOURS), 0.03, 0.05, 0.2)
    glass, tyre = Style((40, 48, 60), 0.05, 0.1), Style((25, 25, 25), 0.05, 0.05)
    if family == "stop sign":
        octagon = ellipse(0, 2.0, 0.4, 0.4, 8)
        return [
            Part([rectangle(-0.04, 0, 0.04, 1.7)], Style((120, 120, 120)), 0),
            Part([octagon], Style((200, 25, 30), 0.02, 0.04), 0),
            Part([rectangle(-0.28, 1.93, 0.28, 2.07)], Style((240, 240, 240)), 0),
        ]
    long = 4.4 if family == "car" else 11.0
    tall = 1.45 if family == "car" else 3.0
    body = [rectangle(-long / 2, 0.25, long / 2, tall * 0.65),
            np.array([[-long * 0.3, tall * 0.65], [long * 0.3, tall * 0.65],
                      [long * 0.2, tall], [-long * 0.25, tall]])]  # fmt: skip
    wheels = [ellipse(x * long, 0.33, 0.33, 0.33, 14) for x in (-0.32, 0.32)]
    window = rectangle(-long * 0.2, tall * 0.7, long * 0.15, tall * 0.93)
    return [Part(body, paint, 0), Part([window], glass, 0), Part(wheels, tyre, 0)]


def _anomaly(rng: np.random.Generator, family: str) -> list[Part]:
    """Test-time anomaly families (never used as training outliers)."""
    neon = [(255, 0, 200), (0, 230, 255), (180, 255, 0), (255, 90, 0), (140, 0, 255)]
    if family == "rock":
        angles = np.linspace(0, 2 * np.pi, 14, endpoint=False)
        radius = 0.5 * (1 + 0.25 * rng.standard_normal(14))
        outline = np.stack([radius * np.cos(angles), 0.35 + 0.7 * radius * np.sin(angles)], 1)
        outline[:, 1] = np.maximum(outline[:, 1], 0)
        style = Style(pick(rng, [(120, 110, 100), (90, 85, 80), (140, 120, 95)]), 0.3, 0.35, 0.3)
        return [Part([outline], style, 0)]
    if family == "cone":
        stripes = Pattern("stripes", 0.28, (245, 245, 245), np.pi / 2, duty=0.3)
        return [Part([rectangle(-0.4, 0, 0.4, 0.08)], Style((20, 20, 20)), 0),
                Part([np.array([[-0.3, 0.08], [0.3, 0.08], [0.06, 1.0], [-0.06, 1.0]])],
                     Style((255, 100, 10), 0.03, 0.05, 0.2, stripes), 0)]  # fmt: skip
    if family == "barrel":
        stripes = Pattern("stripes", 0.3, pick(rng, neon), np.pi / 2)
        return [Part([rectangle(-0.35, 0, 0.35, 0.95), ellipse(0, 0.95, 0.35, 0.06, 12)],
                     Style(pick(rng, [(245, 245, 245), (20, 40, 200)]), 0.03, 0.05, 0.3,
                           stripes), 0)]  # fmt: skip
    if family == "crate":
        planks = Pattern("stripes", 0.22, (70, 45, 20), 0.0, duty=0.15)
        colour = pick(rng, [(210, 170, 60), (230, 230, 40), (60, 200, 220)])
        return [
            Part([rectangle(-0.5, 0, 0.5, 0.8)], Style(colour, 0.1, 0.1, 0.1, planks), 0),
            Part([segment((-0.45, 0.05), (0.45, 0.75), 0.1)], Style((70, 45, 20)), 0),
        ]
    if family == "tyre":
        hole = ellipse(0, 0.5, 0.22, 0.22, 20)
        return [Part([ellipse(0, 0.5, 0.5, 0.5, 24)], Style((15, 15, 18), 0.25, 0.1, 0.4), 0,
                     holes=[hole]),
                Part([ellipse(0, 0.5, 0.22, 0.22, 20)], Style((170, 170, 175), 0.05, 0.05), 0,
                     holes=[ellipse(0, 0.5, 0.1, 0.1, 12)])]  # fmt: skip
    if family == "star":
        points = int(rng.integers(5, 8))
        angles = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False) + np.pi / 2
        radius = np.where(np.arange(2 * points) % 2 == 0, 0.5, 0.22)
        outline = np.stack([radius * np.cos(angles), 0.5 + radius * np.sin(angles)], 1)
        checker = Pattern("checker", 0.18, pick(rng, neon))
        return [Part([outline], Style(pick(rng, neon), 0.02, 0.05, 0.1, checker), 0)]
    if family == "tarp":
        xs = np.linspace(-1, 1, 12)
        top = 0.25 + 0.12 * rng.standard_normal(12)
        outline = np.concatenate([np.stack([xs, top], 1), [[1, 0], [-1, 0]]])
        stripes = Pattern("stripes", 0.2, pick(rng, neon), np.pi / 4)
        return [Part([outline], Style(pick(rng, [(30, 60, 220), (120, 20, 160)]), 0.05, 0.3,
                                      0.4, stripes), 0)]  # fmt: skip
    raise ValueError(f"unknown anomaly family {family!r}")


def family_parts(rng: np.random.Generator, family: str) -> list[Part]:
    """Parts of one object of `family` (an anomaly, outlier or excluded COCO family), in unit
    local coordinates (feet at y = 0, centred, larger side 1), labelId 0."""
    if family in ANOMALY_FAMILIES:
        parts = _anomaly(rng, family)
    elif family in SPECIES:
        parts = _quadruped(rng, family)
    elif family in EXCLUDED_FAMILIES:
        parts = _excluded(rng, family)
    else:
        parts = _simple(rng, family)
    return normalise(parts)
