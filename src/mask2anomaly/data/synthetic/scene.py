"""Synthetic road scenes in perspective: `render_scene(rng, size)` -> image and Cityscapes labels.

A street is a flat ground seen by a pinhole camera: road (lane markings, crossings), sidewalks
with curbs and tiles, terrain, building facades with windows, walls, fences, a skyline or tree
line, sky; then upright objects painted far-to-near (cars, trucks, buses, people, riders on
bicycles and motorcycles, poles with signs and traffic lights, trees, street clutter), an
optional ego-vehicle hood (void) and test anomalies (`objects`). Appearance varies per
instance (colour jitter, texture noise, shading), per scene (light, tint, blur, sensor noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .canvas import Canvas, Part, Style, scale_parts
from .objects import ANOMALY_FAMILIES, family_parts
from .street import Street, background_parts, paint_ground, paint_sky
from .things import (
    LABEL_ID,
    Camera,
    clutter_parts,
    person_parts,
    pick,
    place,
    pole_parts,
    tree_parts,
    two_wheeler_parts,
    vehicle,
)

THING_LABEL_IDS = (24, 25, 26, 27, 28, 29, 30, 31, 32, 33)  # hasInstances in cityscapesScripts
ANOMALY_KINDS = ("anywhere", "obstacle")
MIN_ANOMALY_FRACTION = 4e-4  # a test frame shows at least this fraction of anomaly pixels
MAX_ATTEMPTS = 100  # redraws before giving up (a handful at most in practice)


@dataclass(frozen=True)
class Scene:
    """A rendered frame.

    image: [H, W, 3] uint8 RGB. label_ids: [H, W] uint8 Cityscapes labelIds (anomaly pixels are
    0, unlabeled). instance_ids: [H, W] int32 Cityscapes instanceIds (labelId * 1000 + k on
    things, labelId elsewhere). anomaly_ids: [H, W] uint8, k > 0 on the k-th anomaly object.
    """

    image: np.ndarray
    label_ids: np.ndarray
    instance_ids: np.ndarray
    anomaly_ids: np.ndarray

    @property
    def anomaly_mask(self) -> np.ndarray:
        """[H, W] bool pixels of anomalies."""
        return self.anomaly_ids > 0


def _camera(rng: np.random.Generator, height: int, width: int) -> Camera:
    return Camera(
        focal=width * rng.uniform(0.75, 0.95),
        cx=width * rng.uniform(0.47, 0.53),
        horizon=height * rng.uniform(0.38, 0.47),
        height_m=rng.uniform(1.3, 1.7),
        offset=rng.uniform(-1.5, 1.5),
        curve=rng.uniform(-0.004, 0.004),
    )


def _street(rng: np.random.Generator) -> Street:
    first, second = ("buildings" if rng.random() < 0.65 else "open" for _ in range(2))
    return Street(
        road_width=rng.uniform(6.5, 11.0),
        sidewalks=(rng.uniform(1.8, 4.0), rng.uniform(1.8, 4.0)),
        sides=(first, second),
        crossing=rng.uniform(8.0, 25.0) if rng.random() < 0.3 else None,
    )


class _Placer:
    """Collects (depth, parts) of upright objects and numbers instances."""

    def __init__(self, cam: Camera) -> None:
        self.cam = cam
        self.items: list[tuple[float, list[Part]]] = []
        self.next_instance = 1

    def new_instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def upright(self, parts: list[Part], x: float, z: float, flip: bool = False) -> None:
        origin, scale = self.cam.anchor(x, z)
        self.items.append((z, place(parts, origin, scale, flip)))

    def scale(self, z: float) -> float:
        return self.cam.focal / z

    def sorted_parts(self) -> list[Part]:
        """All parts far-to-near (painter's order)."""
        order = sorted(range(len(self.items)), key=lambda i: -self.items[i][0])
        return [part for i in order for part in self.items[i][1]]


def _add_street_furniture(
    rng: np.random.Generator, placer: _Placer, street: Street, near: float
) -> None:
    half = street.road_width / 2
    for side, sign in ((0, -1.0), (1, 1.0)):
        z = near + rng.uniform(0.5, 6.0)
        while z < 70:
            head = rng.choice(["sign", "light", "lamp", "none", "sign", "light"])
            height = rng.uniform(3.2, 4.5) if head in ("light", "sign") else rng.uniform(5, 8)
            parts = pole_parts(rng, placer.scale(z), height=height, head=str(head))
            placer.upright(parts, sign * (half + 0.45), z, flip=sign < 0)
            z += rng.uniform(10, 22)
        walk = street.sidewalks[side]
        for _ in range(rng.integers(0, 3)):
            zt = rng.uniform(near + 1, 50)
            if street.sides[side] == "open" or rng.random() < 0.5:
                x = sign * (half + walk + rng.uniform(1.0, 6.0))
            else:
                x = sign * (half + walk - 0.8)
            placer.upright(tree_parts(rng, placer.scale(zt), height=rng.uniform(4, 9)), x, zt)
        for _ in range(rng.integers(0, 3)):
            zc = rng.uniform(near + 1, 40)
            placer.upright(clutter_parts(rng), sign * (half + rng.uniform(0.6, walk)), zc)


def _add_road_users(rng: np.random.Generator, placer: _Placer, street: Street, near: float) -> None:
    half = street.road_width / 2
    lanes = [half / 2, -half / 2, half - 1.1, -(half - 1.1)]
    taken: list[tuple[float, float, float]] = []
    for kind in ["car"] * int(rng.integers(1, 7)) + ["truck", "bus"]:
        if kind != "car" and rng.random() < 0.5:
            continue
        x, z = lanes[rng.integers(len(lanes))], rng.uniform(near + 2, 60)
        length = {"car": 4.4, "truck": 8.5, "bus": 12.0}[kind]
        if any(abs(x - tx) < 1 and z < tz + tl + 1 and tz < z + length + 1 for tx, tz, tl in taken):
            continue
        taken.append((x, z, length))
        placer.items.append((z, vehicle(rng, placer.cam, kind, x, z, placer.new_instance())))
    for _ in range(rng.integers(1, 7)):
        side = rng.integers(2)
        x = (1 if side else -1) * (half + rng.uniform(0.4, street.sidewalks[side] - 0.2))
        if rng.random() < 0.15:
            x = rng.uniform(-half, half)
        z, height = rng.uniform(near + 1, 45), rng.uniform(1.55, 1.95)
        parts = person_parts(rng, LABEL_ID["person"], placer.new_instance())
        placer.upright(scale_parts(parts, height / 1.75), x, z)  # scaled about the feet
    for _ in range(rng.integers(1, 4)):
        kind = "bicycle" if rng.random() < 0.55 else "motorcycle"
        riding = rng.random() < 0.75
        side = rng.integers(2)
        if riding:
            x = (1 if side else -1) * (half - rng.uniform(0.8, 1.5))
        else:
            x = (1 if side else -1) * (half + rng.uniform(0.5, street.sidewalks[side]))
        z, flip = rng.uniform(near + 2, 32), bool(rng.random() < 0.5)
        parts = two_wheeler_parts(rng, kind, placer.new_instance(), placer.scale(z))
        if riding:
            parts += person_parts(rng, LABEL_ID["rider"], placer.new_instance(), seated=True)
        placer.upright(parts, x, z, flip=flip)


def _add_anomalies(
    rng: np.random.Generator, placer: _Placer, street: Street, kind: str, near: float
) -> None:
    """1-3 small obstacles on the road ("obstacle") or 1-2 large anomalies anywhere near the
    road ("anywhere"), from the test-only families."""
    half = street.road_width / 2
    count = rng.integers(1, 4) if kind == "obstacle" else rng.integers(1, 3)
    for k in range(1, count + 1):
        family = ANOMALY_FAMILIES[rng.integers(len(ANOMALY_FAMILIES))]
        if kind == "obstacle":
            size = rng.uniform(0.35, 0.9)
            far = max(near + 2, min(30.0, size * placer.cam.focal / 12))
            x, z = rng.uniform(-half + 0.5, half - 0.5), rng.uniform(near + 1, far)
        else:
            size = rng.uniform(0.9, 2.4)
            x, z = rng.uniform(-half - 3, half + 3), rng.uniform(near + 2, 22)
        parts = scale_parts(family_parts(rng, family), size)
        for part in parts:
            part.label_id, part.anomaly = LABEL_ID["unlabeled"], k
        placer.upright(parts, x, z, flip=bool(rng.random() < 0.5))


def _ego_hood(rng: np.random.Generator, height: int, width: int) -> Part:
    rise = height * rng.uniform(0.06, 0.13)
    xs = np.linspace(-0.02 * width, 1.02 * width, 24)
    ys = height - rise * (1 - 0.7 * np.square((xs - width / 2) / (width / 2)))
    outline = np.concatenate([np.stack([xs, ys], 1), [[1.02 * width, height + 2],
                                                       [-0.02 * width, height + 2]]])  # fmt: skip
    style = Style(pick(rng, [(30, 30, 35), (120, 120, 125), (60, 20, 20)]), 0.02, 0.15, -0.3)
    return Part([outline], style, LABEL_ID["ego vehicle"])


def _instance_ids(label_ids: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """[H, W] int32 Cityscapes instanceIds: labelId * 1000 + k (k counted per class) on things."""
    out = label_ids.astype(np.int32)
    thing = np.isin(label_ids, THING_LABEL_IDS) & (instances > 0)
    keys = label_ids[thing].astype(np.int64) << 32 | instances[thing]
    unique, inverse = np.unique(keys, return_inverse=True)
    labels = unique >> 32
    rank = np.arange(len(unique)) - np.searchsorted(labels, labels, side="left")
    out[thing] = (labels * 1000 + rank)[inverse]
    return out


def _relight(rng: np.random.Generator, canvas: Canvas) -> None:
    """Scene illumination: brightness, colour tint and a horizontal light gradient."""
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.93, 1.07, 3)
    ramp = 1 + rng.uniform(-0.15, 0.15) * (np.linspace(-1, 1, canvas.width, dtype=np.float32))
    canvas.image *= (ramp[None, :, None] * gain).astype(np.float32)


def _render_once(rng: np.random.Generator, height: int, width: int, anomalies: str | None) -> Scene:
    cam, street = _camera(rng, height, width), _street(rng)
    canvas = Canvas(rng, height, width)
    paint_sky(rng, canvas, cam)
    paint_ground(rng, canvas, cam, street)
    canvas.paint_all(background_parts(rng, cam, street))
    near = cam.focal * cam.height_m / (height - cam.horizon)  # depth seen at the bottom row
    placer = _Placer(cam)
    _add_street_furniture(rng, placer, street, near)
    _add_road_users(rng, placer, street, near)
    if anomalies is not None:
        _add_anomalies(rng, placer, street, anomalies, near)
    canvas.paint_all(placer.sorted_parts())
    if rng.random() < 0.6:
        canvas.paint(_ego_hood(rng, height, width))
    if rng.random() < 0.2:  # unlabeled image border (rectification artefact)
        edge = max(1, int(width * rng.uniform(0.005, 0.02)))
        columns = slice(0, edge) if rng.random() < 0.5 else slice(width - edge, width)
        canvas.image[:, columns] = 8.0
        canvas.layers[:, columns] = canvas.new_layer(LABEL_ID["unlabeled"])
    _relight(rng, canvas)
    image = canvas.finish(rng, blur=rng.uniform(0, 0.9) * height / 256, noise=rng.uniform(1, 4))
    label_ids = canvas.label_ids
    instance_ids = _instance_ids(label_ids, canvas.instances)
    return Scene(image, label_ids, instance_ids, canvas.anomalies)


def render_scene(
    rng: np.random.Generator, size: tuple[int, int] = (256, 512), *, anomalies: str | None = None
) -> Scene:
    """Render one street scene.

    Args:
        rng: source of all randomness (same state -> same scene).
        size: (H, W) in pixels.
        anomalies: None (inliers only), "anywhere" (1-2 large anomalies on road, sidewalk or
            terrain, RoadAnomaly21-like) or "obstacle" (1-3 small obstacles on the road).

    Returns:
        Scene; with anomalies, at least MIN_ANOMALY_FRACTION of the pixels are anomalous
        (scenes are redrawn from the same generator until they are).
    """
    if anomalies is not None and anomalies not in ANOMALY_KINDS:
        raise ValueError(f"anomalies must be None or one of {ANOMALY_KINDS}, got {anomalies!r}")
    height, width = size
    for _ in range(MAX_ATTEMPTS):
        scene = _render_once(rng, height, width, anomalies)
        visible = np.count_nonzero(scene.anomaly_ids)
        if anomalies is None or visible >= MIN_ANOMALY_FRACTION * height * width:
            return scene
    raise RuntimeError(f"no visible anomaly in {MAX_ATTEMPTS} scenes of size {height}x{width}")
