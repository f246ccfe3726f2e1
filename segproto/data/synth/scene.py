"""Layout of one synthetic street scene: sky, skyline, ground, facades, barriers, things.

The camera looks down a street towards a vanishing point ``(vx, hz)``. Every street edge
is a line through the vanishing point, given by where it crosses the bottom row; the
perspective scale of a ground point at row ``y`` is ``s = (y - hz) / (H - hz)``. Things are
drawn far to near, so nearer ones occlude farther ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .canvas import Canvas, finish_image
from .classes import CLASS_ID as C
from .objects import (draw_bicycle, draw_clutter, draw_person, draw_pole, draw_tree,
                            draw_vehicle, jitter, veg_colour)

__all__ = ["render_scene"]

FACADES = ((0.72, 0.64, 0.5), (0.55, 0.55, 0.55), (0.55, 0.3, 0.22), (0.45, 0.35, 0.28),
           (0.8, 0.78, 0.72), (0.35, 0.35, 0.37))


@dataclass
class Street:
    """Street geometry. ``edges`` maps edge name -> x where it meets the bottom row."""

    h: int
    w: int
    hz: float
    vx: float
    edges: dict[str, float]

    def scale(self, y: float) -> float:
        return (y - self.hz) / (self.h - self.hz)

    def x_at(self, edge: str, y: float) -> float:
        return self.vx + (self.edges[edge] - self.vx) * self.scale(y)

    def y_at(self, edge: str, x: float) -> float:
        return self.hz + (x - self.vx) / (self.edges[edge] - self.vx) * (self.h - self.hz)

    def wedge(self, e1: str, e2: str) -> list[tuple[float, float]]:
        """Polygon between two edges (a triangle from the vanishing point, clipped by PIL)."""
        y = 4.0 * self.h
        return [(self.vx, self.hz), (self.x_at(e1, y), y), (self.x_at(e2, y), y)]


def _flat_colour(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    return jitter(rng, (rng.uniform(lo, hi),) * 3, 0.03)


def _facade_colour(rng: np.random.Generator) -> np.ndarray:
    return jitter(rng, FACADES[int(rng.integers(len(FACADES)))], 0.07)


def _paint_building(cv: Canvas, mask: np.ndarray, scale: float) -> None:
    """Facade colour with a grid of dark, bluish windows (windows are ``building`` too)."""
    rng = cv.rng
    px = max(3.0, scale * rng.uniform(0.05, 0.1) * cv.w)
    py = px * rng.uniform(0.9, 1.6)
    win = cv.cells(px, py, rng.uniform(0.35, 0.65), rng.uniform(0.4, 0.65),
                   rng.uniform(0, px), rng.uniform(0, py)) > 0
    glass = jitter(rng, (0.2, 0.24, 0.3), 0.06)
    pattern = np.where(win, 0.15 * cv.noise(4), 0.05 * cv.noise(2))
    cv.paint(mask, C["building"], _facade_colour(rng), pattern, alt=(glass, win))


def _wall_pattern(cv: Canvas) -> np.ndarray:
    """Brick courses: light horizontal mortar lines and staggered joints."""
    rng = cv.rng
    course = rng.uniform(2.5, 4.5)
    brick = course * rng.uniform(2.0, 3.0)
    row = np.floor(cv.yy / course)
    t = (cv.xx + (row % 2) * brick / 2) / brick
    mortar = ((cv.yy / course - row) < 0.3) | ((t - np.floor(t)) < 0.12)
    return 0.22 * mortar.astype(np.float32) + 0.07 * cv.noise(1)


def _draw_sky(cv: Canvas, hz: float) -> None:
    rng = cv.rng
    if rng.random() < 0.3:  # overcast: flat grey, close to light facades
        field = jitter(rng, (rng.uniform(0.6, 0.82),) * 3, 0.03)[None, None, :]
        field = field * (1 + 0.06 * cv.noise(16))[..., None]
    else:
        top = jitter(rng, (0.3, 0.5, 0.85), 0.07)
        low = jitter(rng, (0.72, 0.8, 0.9), 0.05)
        v = np.clip(cv.yy / max(hz, 1.0), 0, 1)[..., None]
        clouds = np.clip(cv.noise(16) - rng.uniform(0.3, 1.2), 0, 1)[..., None]
        field = (top * (1 - v) + low * v) * (1 - clouds) + 0.92 * clouds
    cv.paint(np.ones((cv.h, cv.w), bool), C["sky"], np.broadcast_to(field, (cv.h, cv.w, 3)))


def _draw_skyline(cv: Canvas, hz: float) -> None:
    rng, x = cv.rng, 0.0
    while x < cv.w:
        bw = rng.uniform(0.08, 0.25) * cv.w
        kind = rng.random()
        if kind < 0.6:
            top = hz - rng.uniform(0.08, 0.7) * hz
            _paint_building(cv, cv.rect(x, top, x + bw, hz + 1), 0.5)
        elif kind < 0.8:
            n = int(rng.integers(2, 5))
            cx = x + rng.uniform(0, bw, n)
            r = rng.uniform(0.03, 0.08, n) * cv.w
            boxes = [(a - b, hz - 1.6 * b, a + b, hz + 1) for a, b in zip(cx, r)]
            cv.paint(cv.ellipses(boxes), C["vegetation"], veg_colour(rng),
                     0.3 * cv.noise(2) + 0.1 * cv.noise(1))
        x += bw


def _draw_ground(cv: Canvas, st: Street) -> None:
    rng = cv.rng
    below = cv.yy >= st.hz
    for side, sel in (("l", cv.xx < st.vx), ("r", cv.xx >= st.vx)):
        if rng.random() < 0.5:
            cv.paint(below & sel, C["terrain"], veg_colour(rng) + np.float32(0.04),
                     0.16 * cv.noise(8) + 0.06 * cv.noise(1))
        else:
            _paint_sidewalk(cv, below & sel)
        if st.edges[f"out_{side}"] != st.edges[f"road_{side}"]:
            _paint_sidewalk(cv, cv.polygon(st.wedge(f"out_{side}", f"road_{side}")) & below)
        if rng.random() < 0.2:  # grass verge between sidewalk and road
            st.edges[f"verge_{side}"] = (st.edges[f"road_{side}"] * 0.9
                                         + st.edges[f"out_{side}"] * 0.1)
            cv.paint(cv.polygon(st.wedge(f"verge_{side}", f"road_{side}")) & below,
                     C["terrain"], veg_colour(rng), 0.16 * cv.noise(8) + 0.06 * cv.noise(1))
    road = cv.polygon(st.wedge("road_l", "road_r")) & below
    cv.paint(road, C["road"], _flat_colour(rng, 0.26, 0.5),
             0.09 * cv.noise(1) + 0.07 * cv.noise(3))
    _draw_markings(cv, st)
    if rng.random() < 0.2:
        _draw_parking(cv, st)


def _sidewalk_pattern(cv: Canvas) -> np.ndarray:
    rng = cv.rng
    p = rng.uniform(3.5, 7.0)
    tiles = cv.cells(p, p * rng.uniform(0.7, 1.3), 0.82, 0.82, rng.uniform(0, p))
    return -0.16 * (1 - tiles) + 0.04 * cv.noise(1)


def _paint_sidewalk(cv: Canvas, mask: np.ndarray) -> None:
    cv.paint(mask, C["sidewalk"], _flat_colour(cv.rng, 0.34, 0.6), _sidewalk_pattern(cv))


def _draw_markings(cv: Canvas, st: Street) -> None:
    """Dashed white lane lines, labelled ``road`` (parking stripes look alike)."""
    rng = cv.rng
    if rng.random() < 0.2:
        return
    centre = (st.edges["road_l"] + st.edges["road_r"]) / 2 + rng.uniform(-0.1, 0.1) * cv.w
    st.edges["lane"] = centre
    dash = rng.uniform(0.25, 0.5)
    yy = st.hz + (cv.h - st.hz) * np.linspace(0, 1.2, 16) ** 2
    polys = []
    for y0, y1 in zip(yy[:-1], yy[1:]):
        y1 = y0 + dash * (y1 - y0)
        half0, half1 = 0.012 * cv.w * st.scale(y0), 0.012 * cv.w * st.scale(y1)
        x0, x1 = st.x_at("lane", y0), st.x_at("lane", y1)
        polys.append([(x0 - half0, y0), (x0 + half0, y0), (x1 + half1, y1), (x1 - half1, y1)])
    white = jitter(rng, (0.82, 0.82, 0.78), 0.05)
    for poly in polys:
        cv.paint(cv.polygon(poly), C["road"], white, 0.08 * cv.noise(1))


def _draw_parking(cv: Canvas, st: Street) -> None:
    """A parking strip along one road edge: asphalt with thin stall lines."""
    rng = cv.rng
    side = "l" if rng.random() < 0.5 else "r"
    frac = rng.uniform(0.25, 0.45)
    st.edges[f"park_{side}"] = (st.edges[f"road_{side}"] * (1 - frac)
                                + st.edges["road_r" if side == "l" else "road_l"] * frac)
    y0 = st.hz + rng.uniform(0.1, 0.5) * (cv.h - st.hz)
    m = cv.polygon(st.wedge(f"road_{side}", f"park_{side}")) & (cv.yy >= y0)
    stalls = cv.stripes(rng.uniform(5, 10), rng.uniform(-30, 30), rng.uniform(0.12, 0.22))
    cv.paint(m, C["parking"], _flat_colour(rng, 0.26, 0.5),
             0.9 * stalls + 0.09 * cv.noise(1) + 0.07 * cv.noise(3))


def _band(cv: Canvas, st: Street, side: str, height: float) -> np.ndarray:
    """A vertical band standing on the outer street edge (wall, fence, hedge)."""
    e = f"out_{side}"
    ya, yb = st.hz + 0.02 * (cv.h - st.hz), 4.0 * cv.h
    pts = [(st.x_at(e, ya), ya), (st.x_at(e, yb), yb),
           (st.x_at(e, yb), yb - height * st.scale(yb)),
           (st.x_at(e, ya), ya - height * st.scale(ya))]
    m = cv.polygon(pts)
    y_lo = st.hz + cv.rng.uniform(0.0, 0.5) * (cv.h - st.hz)
    y_hi = y_lo + cv.rng.uniform(0.3, 1.5) * (cv.h - st.hz)
    foot = st.hz + (cv.xx - st.vx) / (st.edges[e] - st.vx) * (cv.h - st.hz)  # [H, W]
    return m & (foot >= y_lo) & (foot < y_hi)


def _draw_sides(cv: Canvas, st: Street) -> None:
    """Building facades beyond the outer edges, then walls, fences and hedges."""
    rng = cv.rng
    for side, xs in (("l", -2.0), ("r", cv.w + 1.0)):
        if rng.random() < 0.7:
            e = f"out_{side}"
            xfar = st.vx + (xs - st.vx) * rng.uniform(0.05, 0.4)
            ytop_near = rng.uniform(-0.3, 0.4) * st.hz
            ytop_far = st.hz - rng.uniform(0.2, 0.8) * (st.hz - ytop_near)
            yb = 4.0 * cv.h
            poly = [(xs, ytop_near), (xfar, ytop_far), (xfar, st.y_at(e, xfar)),
                    (st.x_at(e, yb), yb), (xs * 3 - st.vx, yb)]
            full = cv.polygon(poly)
            cuts = np.sort(rng.uniform(min(xs, xfar), max(xs, xfar), int(rng.integers(0, 3))))
            bounds = [min(xs, xfar), *cuts, max(xs, xfar)]
            for a, b in zip(bounds[:-1], bounds[1:]):
                part = full & (cv.xx >= a) & (cv.xx < b)
                _paint_building(cv, part, 1.0)
        kind = rng.random()
        height = rng.uniform(0.1, 0.28) * cv.h
        if kind < 0.3:
            cv.paint(_band(cv, st, side, height), C["wall"], _facade_colour(rng),
                     _wall_pattern(cv))
        elif kind < 0.55:
            m = _band(cv, st, side, height)
            bars = cv.stripes(rng.uniform(2.5, 5), rng.uniform(-8, 8), rng.uniform(0.3, 0.5))
            rail = cv.stripes(rng.uniform(4, 9), 90 + rng.uniform(-10, 10), 0.22)
            colour = _facade_colour(rng) if rng.random() < 0.6 else jitter(rng, (0.4,) * 3, 0.1)
            solid = (bars > 0) | (rail > 0) if rng.random() < 0.5 else bars > 0
            cv.paint(m & solid, C["fence"], colour, 0.05 * cv.noise(1))
        elif kind < 0.7:
            cv.paint(_band(cv, st, side, height), C["vegetation"], veg_colour(rng),
                     0.3 * cv.noise(2) + 0.1 * cv.noise(1))


def _place_things(cv: Canvas, st: Street) -> list[tuple[float, int, tuple]]:
    """Samples (y_base, order, draw call) for every thing; drawn sorted by y_base."""
    rng, h = cv.rng, cv.h
    things: list[tuple[float, int, tuple]] = []

    def ground_y(lo: float = 0.12, hi: float = 1.15) -> tuple[float, float]:
        y = st.hz + rng.uniform(lo, hi) * (h - st.hz)
        return y, st.scale(y)

    def on(a: str, b: str, y: float) -> float:
        xa, xb = st.x_at(a, y), st.x_at(b, y)
        return float(rng.uniform(min(xa, xb), max(xa, xb)))

    kinds = ["car"] * int(min(rng.poisson(1.6), 5))
    kinds += ["truck"] * int(rng.random() < 0.14) + ["bus"] * int(rng.random() < 0.11)
    for kind in kinds:
        y, s = ground_y()
        things.append((y, len(things), (draw_vehicle, kind, on("road_l", "road_r", y), y, s)))
    for _ in range(int(min(rng.poisson(1.1), 5))):
        side = "l" if rng.random() < 0.5 else "r"
        y, s = ground_y(0.15)
        things.append((y, len(things), (draw_person, on(f"road_{side}", f"out_{side}", y), y, s)))
    if rng.random() < 0.12:
        y, s = ground_y(0.2)
        x = on("road_l", "road_r", y) if rng.random() < 0.7 else on("road_l", "out_l", y)
        things.append((y, len(things), (draw_bicycle, x, y, s, rng.random() < 0.75)))
    for _ in range(int(min(rng.poisson(1.4), 5))):
        side = "l" if rng.random() < 0.5 else "r"
        y, s = ground_y(0.1, 1.05)
        carry = ["none", "lamp", "sign", "light"][int(rng.choice(4, p=[0.3, 0.25, 0.38, 0.07]))]
        x = st.x_at(f"road_{side}", y) + (-1 if side == "l" else 1) * 0.03 * cv.w * s
        things.append((y, len(things), (draw_pole, x, y, s, carry)))
    for _ in range(int(min(rng.poisson(0.8), 4))):
        side = "l" if rng.random() < 0.5 else "r"
        y, s = ground_y(0.1, 1.0)
        things.append((y, len(things), (draw_tree, on(f"road_{side}", f"out_{side}", y), y, s)))
    for _ in range(int(rng.random() < 0.3) * int(rng.integers(1, 3))):
        y, s = ground_y(0.2, 1.0)
        things.append((y, len(things), (draw_clutter, on("out_l", "out_r", y), y, s)))
    return sorted(things, key=lambda t: (t[0], t[1]))


def _cast_shadow(cv: Canvas, st: Street) -> None:
    """A large shadow (from a building off-screen) over part of the ground and things."""
    rng = cv.rng
    if rng.random() < 0.5:
        ang = rng.uniform(0, 2 * np.pi)
        d = (cv.xx - cv.w / 2) * np.cos(ang) + (cv.yy - cv.h / 2) * np.sin(ang)
        cv.shade((d > rng.uniform(-0.3, 0.3) * cv.w) & (cv.yy >= st.hz - 0.3 * cv.h),
                 rng.uniform(0.4, 0.75))


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Renders one scene.

    Args:
        rng: The scene's own generator (seeded per image by the caller).
        size: Output height and width ``S``.

    Returns:
        ``(image uint8 [S, S, 3], label uint8 [S, S])`` with fine-class ids, 255 = void.
    """
    cv = Canvas(rng, size)
    hz = rng.uniform(0.3, 0.5) * size
    vx = rng.uniform(0.3, 0.7) * size
    half = rng.uniform(0.3, 0.6) * size
    off = rng.uniform(-0.2, 0.2) * size
    edges = {"road_l": vx + off - half, "road_r": vx + off + half}
    for side, sgn in (("l", -1.0), ("r", 1.0)):
        width = 0.0 if rng.random() < 0.1 else rng.uniform(0.15, 0.45) * size
        edges[f"out_{side}"] = edges[f"road_{side}"] + sgn * width
    st = Street(size, size, hz, vx, edges)
    _draw_sky(cv, hz)
    _draw_skyline(cv, hz)
    _draw_ground(cv, st)
    _draw_sides(cv, st)
    for _, _, (fn, *args) in _place_things(cv, st):
        fn(cv, *args)
    _cast_shadow(cv, st)
    return finish_image(cv), cv.lab
