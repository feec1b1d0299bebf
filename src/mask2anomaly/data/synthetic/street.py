"""The static street of a synthetic scene: sky, ground (road, sidewalks, terrain) and the
background along both sides (building facades with windows, walls, fences, hedges, a skyline or
tree line at the horizon). The ground is computed per pixel from the inverse perspective of the
`Camera` (vectorised); facades are projected polygons sampled along depth so they follow the road.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .canvas import Canvas, Part, Pattern, Style
from .things import LABEL_ID, Camera, pick

Z_FAR = 160.0  # metres; the ground beyond is drawn at this depth
GROUND_IDS = (LABEL_ID["road"], LABEL_ID["sidewalk"], LABEL_ID["terrain"])
BUILDING_COLOURS = [(190, 170, 140), (165, 95, 75), (150, 150, 152), (215, 208, 195),
                    (185, 160, 115), (125, 112, 100), (175, 185, 190)]  # fmt: skip
SKIES = [((95, 145, 215), (185, 210, 235)), ((165, 180, 200), (215, 220, 225)),
         ((120, 160, 200), (225, 215, 195))]  # fmt: skip


@dataclass(frozen=True)
class Street:
    """Road width and sidewalk widths (left, right) in metres; each side is "buildings"
    (sidewalk up to the facades) or "open" (terrain beyond the sidewalk); optional zebra
    crossing depth."""

    road_width: float
    sidewalks: tuple[float, float]
    sides: tuple[str, str]
    crossing: float | None = None


def paint_sky(rng: np.random.Generator, canvas: Canvas, cam: Camera) -> None:
    """Fill the whole canvas with sky: a vertical gradient to the horizon plus clouds."""
    top, low = (np.asarray(c, np.float32) for c in SKIES[rng.integers(len(SKIES))])
    rows = int(np.clip(np.ceil(cam.horizon) + 2, 0, canvas.height))  # the ground covers the rest
    t = np.clip(np.arange(rows, dtype=np.float32) / max(cam.horizon, 1.0), 0, 1)
    rgb = top + (low - top) * t[:, None]
    cover, thin = np.float32(rng.uniform(0.2, 0.6)), np.float32(rng.uniform(0.0, 0.4))
    clouds = np.clip(canvas.coarse[:rows] * cover - thin, 0, 1)[..., None]
    canvas.image[:rows] = rgb[:, None, :] * (1 - clouds) + np.float32(235.0) * clouds
    canvas.layers[:] = canvas.new_layer(LABEL_ID["sky"])


def _ground_classes(
    cam: Camera, street: Street, top: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Depth z [h, 1], road-relative x [h, W] (metres) and class index [h, W] (0 road,
    1 sidewalk, 2 terrain) of the rows from `top` down."""
    rows = np.arange(top, height, dtype=np.float32) + 0.5
    z = np.minimum(cam.focal * cam.height_m / (rows - cam.horizon), Z_FAR)[:, None]
    cols = np.arange(width, dtype=np.float32)[None] + 0.5
    x = (cols - cam.cx) * z / cam.focal - cam.road_x(z)
    beyond = np.abs(x) - street.road_width / 2
    right = x > 0
    walk = np.where(right, street.sidewalks[1], street.sidewalks[0])
    is_open = np.where(right, street.sides[1] == "open", street.sides[0] == "open")
    classes = np.where(beyond < 0, 0, np.where((beyond < walk) | ~is_open, 1, 2))
    return z, x, beyond, classes


def paint_ground(rng: np.random.Generator, canvas: Canvas, cam: Camera, street: Street) -> None:
    """Road with lane markings (and a crossing), sidewalks with curb and tiles, terrain."""
    top = max(int(np.ceil(cam.horizon + 0.5)), 0)
    if top >= canvas.height:
        return
    z, x, beyond, classes = _ground_classes(cam, street, top, canvas.height, canvas.width)
    base = np.array([pick(rng, [(92, 92, 98), (110, 108, 106)], 6),
                     pick(rng, [(150, 145, 140), (172, 148, 138), (138, 138, 144)], 8),
                     pick(rng, [(120, 115, 70), (140, 122, 82), (98, 112, 58)], 8)],
                    np.float32)  # fmt: skip
    grain = np.array([0.06, 0.05, 0.14], np.float32)[classes]
    blotch = np.array([0.08, 0.06, 0.22], np.float32)[classes]
    gain = 1 + grain * canvas.fine[top:] + blotch * canvas.medium[top:]
    rgb = base[classes]
    road = classes == 0
    half = street.road_width / 2
    lines = (np.abs(x) < 0.07) & (np.mod(z, 9.0) < 4.0)
    lines |= (np.abs(beyond + 0.35) < 0.07) & (rng.random() < 0.7)
    if street.crossing is not None:
        zc = street.crossing
        lines |= (z > zc) & (z < zc + 3.5) & (np.mod(x + half, 1.0) < 0.5)
    rgb = np.where((road & lines)[..., None], np.float32(215.0), rgb)
    shade = np.ones_like(gain)
    shade[(beyond >= 0) & (beyond < 0.25)] = 1.2  # curb
    tiles = (classes == 1) & (z < 25) & ((np.mod(x, 0.6) < 0.05) | (np.mod(z, 0.6) < 0.05))
    shade[tiles] = 0.8
    canvas.image[top:] = rgb * (gain * shade)[..., None]
    layers = np.array([canvas.new_layer(label_id) for label_id in GROUND_IDS], np.int32)
    canvas.layers[top:] = layers[classes]


def _plane(cam: Camera, x: float, z0: float, z1: float, y0: float, y1: float) -> np.ndarray:
    """Polygon of a vertical plane parallel to the road at road-relative x, sampled in depth."""
    zs = np.linspace(z0, z1, 6)
    bottom = cam.polygon([(x, zz, y0) for zz in zs])
    top = cam.polygon([(x, zz, y1) for zz in zs])
    return np.concatenate([bottom, top[::-1]])


def _windows(cam: Camera, x: float, z0: float, z1: float, height: float) -> list[np.ndarray]:
    """Window quads on a facade at x between depths z0..z1, floors every 3.2 m."""
    zs = np.arange(z0 + 1.0, z1 - 1.6, 2.8)
    ys = np.arange(1.2, height - 1.4, 3.2)
    if not len(zs) or not len(ys):
        return []
    zz, yy = (a.ravel() for a in np.meshgrid(zs, ys))
    corners_z = np.stack([zz, zz + 1.3, zz + 1.3, zz], 1)
    corners_y = np.stack([yy, yy, yy + 1.7, yy + 1.7], 1)
    u, v = cam.project(x, corners_z, corners_y)
    quads = np.stack([u, v], -1)  # [n, 4, 2]
    big = (v[:, 0] - v[:, 3] > 1.5) & (np.abs(u[:, 1] - u[:, 0]) > 0.8)
    return list(quads[big])


def _facades(
    rng: np.random.Generator, cam: Camera, x_face: float, sign: float, start: float
) -> list[Part]:
    """Building blocks along one side, far to near: front face, side facade, windows."""
    blocks, z = [], start
    while z < 140:
        gap = rng.uniform(3, 12) if rng.random() < 0.25 else 0.0
        length = rng.uniform(8, 30)
        blocks.append((z + gap, z + gap + length, rng.uniform(6, 26), rng.uniform(0, 1.5)))
        z += gap + length
    parts = []
    for z0, z1, height, setback in reversed(blocks):
        x = x_face + sign * setback
        wall = Style(pick(rng, BUILDING_COLOURS, 10), grain=0.04, blotch=0.1, shade=0.1)
        end = Style(tuple(np.multiply(wall.colour, 0.8)), grain=0.04, blotch=0.1, shade=0.1)
        glass = Style(pick(rng, [(45, 55, 70), (90, 110, 130), (60, 50, 45)], 10), 0.05, 0.2, 0.2)
        front = cam.polygon([(x, z0, 0), (x + sign * 12, z0, 0), (x + sign * 12, z0, height),
                             (x, z0, height)])  # fmt: skip
        parts.append(Part([front], end, LABEL_ID["building"]))
        parts.append(Part([_plane(cam, x, z0, z1, 0, height)], wall, LABEL_ID["building"]))
        parts.append(Part(_windows(cam, x, z0, z1, height), glass, LABEL_ID["building"]))
    return parts


def _edge_structure(rng: np.random.Generator, cam: Camera, x: float) -> list[Part]:
    """A wall, fence or hedge segment along the outer sidewalk edge at x."""
    z0 = rng.uniform(2, 30)
    z1 = z0 + rng.uniform(8, 40)
    kind = rng.choice(["wall", "fence", "hedge"], p=[0.4, 0.4, 0.2])
    height = rng.uniform(1.0, 2.4)
    px = cam.focal / (z0 + 6)  # pixels per metre around the near end
    if kind == "wall":
        style = Style(pick(rng, [(165, 160, 150), (140, 132, 122), (188, 176, 156)], 8),
                      0.05, 0.1, 0.15, Pattern("stripes", max(0.5 * px, 3), (110, 105, 100),
                                               np.pi / 2, duty=0.12))  # fmt: skip
    elif kind == "fence":
        colour = pick(rng, [(120, 95, 70), (125, 128, 132), (65, 90, 70)], 8)
        style = Style(colour, 0.03, 0.05, 0.1,
                      Pattern("grid", max(0.25 * px, 3), tuple(np.multiply(colour, 0.45)),
                              duty=0.35))  # fmt: skip
    else:
        style = Style(pick(rng, [(55, 95, 40), (70, 105, 45)], 8), 0.22, 0.25, 0.2)
    label = LABEL_ID["vegetation" if kind == "hedge" else str(kind)]
    return [Part([_plane(cam, x, z0, z1, 0, height)], style, label)]


def _horizon_band(rng: np.random.Generator, cam: Camera, width: int) -> list[Part]:
    """A distant skyline (buildings) or tree line (vegetation) across the horizon, or nothing."""
    kind = rng.choice(["skyline", "trees", "none"], p=[0.45, 0.35, 0.2])
    if kind == "none":
        return []
    z = rng.uniform(110, 200)
    ground = cam.horizon + cam.focal * cam.height_m / z
    edges = np.cumsum(rng.uniform(0.04, 0.15, 30) * width) - 0.1 * width
    if kind == "trees":
        xs = np.linspace(-0.05 * width, 1.05 * width, 40)
        tops = ground - cam.focal / z * rng.uniform(6, 16) * (1 + 0.3 * rng.standard_normal(40))
        outline = np.concatenate([np.stack([xs, tops], 1), [[xs[-1], ground], [xs[0], ground]]])
        style = Style(pick(rng, [(70, 95, 60), (60, 85, 60)], 8), 0.2, 0.2, 0.1)
        return [Part([outline], style, LABEL_ID["vegetation"])]
    parts = []
    for x0, x1 in zip(edges[:-1], edges[1:]):
        top = ground - cam.focal / z * rng.uniform(8, 40)
        style = Style(pick(rng, [(150, 155, 165), (170, 160, 150)], 12), 0.03, 0.08, 0.05)
        parts.append(Part([np.array([[x0, top], [x1, top], [x1, ground], [x0, ground]])],
                          style, LABEL_ID["building"]))  # fmt: skip
    return parts


def background_parts(rng: np.random.Generator, cam: Camera, street: Street) -> list[Part]:
    """Everything behind the upright objects, in painting order."""
    parts = _horizon_band(rng, cam, int(round(cam.cx * 2)))
    half = street.road_width / 2
    for side, sign in ((0, -1.0), (1, 1.0)):
        edge = sign * (half + street.sidewalks[side])
        if street.sides[side] == "buildings" and rng.random() < 0.3:  # front yard and a wall
            parts += _facades(rng, cam, edge + sign * rng.uniform(2, 6), sign, start=2.0)
            parts += _edge_structure(rng, cam, edge)
        elif street.sides[side] == "buildings":
            parts += _facades(rng, cam, edge, sign, start=rng.uniform(0.5, 4.0))
        else:
            if rng.random() < 0.5:  # buildings far behind the terrain
                parts += _facades(rng, cam, edge + sign * rng.uniform(8, 20), sign, start=6.0)
            if rng.random() < 0.7:
                parts += _edge_structure(rng, cam, edge)
    return parts
