"""Things of the synthetic street scenes: vehicles with parts, people, bicycles with riders,
poles with signs and lights, trees and void clutter.

Every ``draw_*`` function paints one instance onto a :class:`Canvas` standing on the
ground point ``(x, y_base)`` at perspective scale ``s`` in ``(0, 1.3]`` (1 = bottom row).
Fine classes of one coarse class share their colour distribution on purpose (car, truck and
bus draw body colours from one palette; pedestrian parts and riders from one clothing
palette; pole and traffic-light housings from one grey range), so they must be told apart
by shape, part layout and context.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .canvas import Canvas
from .classes import CLASS_ID as C

__all__ = ["jitter", "draw_vehicle", "draw_person", "draw_bicycle", "draw_pole",
           "draw_tree", "draw_clutter", "VEHICLE_SIZE"]

BODY_COLORS = ((0.7, 0.1, 0.1), (0.1, 0.2, 0.6), (0.85, 0.85, 0.85), (0.12, 0.12, 0.14),
               (0.6, 0.6, 0.62), (0.15, 0.4, 0.2), (0.85, 0.7, 0.15), (0.45, 0.3, 0.2))
CLOTHES = ((0.1, 0.12, 0.3), (0.1, 0.1, 0.1), (0.7, 0.15, 0.15), (0.85, 0.85, 0.82),
           (0.45, 0.45, 0.45), (0.2, 0.4, 0.25), (0.65, 0.55, 0.4), (0.3, 0.25, 0.5))
SKIN = ((0.88, 0.7, 0.56), (0.68, 0.48, 0.34), (0.42, 0.28, 0.18))
GLASS = (0.16, 0.22, 0.3)

# Side-view templates in (u, v) units: u along the length [0, 1], v up from the ground in
# units of the vehicle height (= aspect * length). Wheels: (u, v) centres, radius in v units.
_TEMPLATES: dict[str, dict] = {
    "car": dict(aspect=0.42, body=[[(0.0, 0.18), (0.0, 0.55), (0.2, 0.6), (0.32, 0.98),
                                    (0.72, 0.98), (0.86, 0.6), (1.0, 0.52), (1.0, 0.18)]],
                windows=[[(0.34, 0.63), (0.4, 0.9), (0.51, 0.9), (0.51, 0.63)],
                         [(0.54, 0.63), (0.54, 0.9), (0.69, 0.9), (0.79, 0.63)]],
                wheels=[(0.2, 0.17), (0.8, 0.17)], radius=0.17),
    "truck": dict(aspect=0.5, body=[[(0.0, 0.14), (0.0, 0.6), (0.05, 0.8), (0.25, 0.8),
                                     (0.25, 0.14)],
                                    [(0.27, 0.12), (0.27, 1.0), (1.0, 1.0), (1.0, 0.12)]],
                  windows=[[(0.03, 0.56), (0.07, 0.75), (0.21, 0.75), (0.21, 0.56)]],
                  wheels=[(0.13, 0.12), (0.66, 0.12), (0.84, 0.12)], radius=0.12),
    "bus": dict(aspect=0.32, body=[[(0.0, 0.1), (0.0, 0.92), (0.03, 1.0), (1.0, 1.0),
                                    (1.0, 0.1)]],
                windows=[[(0.05 + 0.13 * k, 0.55), (0.05 + 0.13 * k, 0.88),
                          (0.15 + 0.13 * k, 0.88), (0.15 + 0.13 * k, 0.55)]
                         for k in range(7)],
                wheels=[(0.15, 0.12), (0.82, 0.12)], radius=0.13),
}
# Length of a vehicle at scale 1, as a fraction of the image width.
VEHICLE_SIZE = {"car": (0.3, 0.42), "truck": (0.45, 0.6), "bus": (0.6, 0.8)}


def jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> np.ndarray:
    """Colour plus uniform per-channel noise in ``[-amount, amount]``, clipped to [0, 1]."""
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 1)


def _pick(rng: np.random.Generator, options: Sequence) -> object:
    return options[int(rng.integers(len(options)))]


def draw_vehicle(cv: Canvas, kind: str, x: float, y_base: float, s: float) -> None:
    """Side view of a car, truck or bus with wheel and window parts, plus its shadow."""
    rng, t = cv.rng, _TEMPLATES[kind]
    length = s * rng.uniform(*VEHICLE_SIZE[kind]) * cv.w
    height = t["aspect"] * length
    flip = rng.random() < 0.5
    x0 = x - length / 2

    def pt(u: float, v: float) -> tuple[float, float]:
        return (x0 + (1 - u if flip else u) * length, y_base - v * height)

    cv.shade(cv.ellipses([(x0 - 0.03 * length, y_base - 0.06 * height,
                           x0 + 1.03 * length, y_base + 0.06 * height)]), 0.5)
    body = jitter(rng, _pick(rng, BODY_COLORS), 0.08)
    gloss = 0.25 * (cv.yy - (y_base - height)) / max(height, 1.0)  # darker towards the sill
    for poly in t["body"]:
        cv.paint(cv.polygon([pt(u, v) for u, v in poly]), C[kind], body,
                 -gloss + 0.04 * cv.noise(1))
        body = jitter(rng, _pick(rng, BODY_COLORS), 0.08) if kind == "truck" else body
    glass = jitter(rng, GLASS, 0.05)
    glint = 0.5 * cv.stripes(max(3.0, 0.2 * length), rng.uniform(30, 60), 0.25)
    for poly in t["windows"]:
        cv.paint(cv.polygon([pt(u, v) for u, v in poly]), C["window"], glass, glint)
    r = t["radius"] * height
    tyre = jitter(rng, (0.07, 0.07, 0.08), 0.03)
    hub = jitter(rng, (0.55, 0.55, 0.57), 0.08)
    for u, v in t["wheels"]:
        cx, cy = pt(u, v)
        cv.paint(cv.ellipses([(cx - r, cy - r, cx + r, cy + r)]), C["wheel"], tyre)
        cv.paint(cv.ellipses([(cx - 0.45 * r, cy - 0.45 * r, cx + 0.45 * r, cy + 0.45 * r)]),
                 C["wheel"], hub)


def _clothes(rng: np.random.Generator) -> np.ndarray:
    return jitter(rng, _pick(rng, CLOTHES), 0.08)


def _human(cv: Canvas, hip: tuple[float, float], shoulder: tuple[float, float],
           feet: Sequence[tuple[float, float]], hands: Sequence[tuple[float, float]],
           size: float, labels: tuple[int, int, int]) -> None:
    """Legs, torso with arms and head; ``labels`` = (head, torso, legs) class ids."""
    rng = cv.rng
    head_c, torso_c, legs_c = labels
    lw = max(1.0, 0.09 * size)
    cv.paint(cv.lines([[hip, f] for f in feet], lw), legs_c, _clothes(rng),
             0.05 * cv.noise(1))
    shirt = _clothes(rng)
    pattern = 0.05 * cv.noise(1)
    if rng.random() < 0.3:  # striped shirt
        pattern = pattern + 0.3 * cv.stripes(max(2.0, 0.06 * size), 90, 0.5) - 0.15
    half = 0.13 * size
    torso = cv.polygon([(shoulder[0] - half, shoulder[1]), (shoulder[0] + half, shoulder[1]),
                        (hip[0] + 0.8 * half, hip[1]), (hip[0] - 0.8 * half, hip[1])])
    arms = cv.lines([[(shoulder[0], shoulder[1] + 0.02 * size), h] for h in hands],
                    max(1.0, 0.06 * size))
    cv.paint(torso | arms, torso_c, shirt, pattern)
    hr = max(1.0, 0.08 * size)
    hx, hy = shoulder[0] + 0.01 * size, shoulder[1] - 0.9 * hr
    cv.paint(cv.ellipses([(hx - 0.85 * hr, hy - hr, hx + 0.85 * hr, hy + hr)]), head_c,
             jitter(rng, _pick(rng, SKIN), 0.05), 0.04 * cv.noise(1))
    if rng.random() < 0.8:  # hair: darker cap, still part of the head
        cv.paint(cv.ellipses([(hx - 0.9 * hr, hy - 1.1 * hr, hx + 0.9 * hr, hy - 0.1 * hr)]),
                 head_c, jitter(rng, (0.15, 0.1, 0.07), 0.07))


def draw_person(cv: Canvas, x: float, y_base: float, s: float) -> None:
    """A walking pedestrian labelled as head / torso / legs parts."""
    rng = cv.rng
    size = s * rng.uniform(0.42, 0.58) * cv.h
    stride = rng.uniform(0.0, 0.16) * size
    hip = (x, y_base - 0.47 * size)
    shoulder = (x + rng.uniform(-0.02, 0.02) * size, y_base - 0.8 * size)
    feet = [(x - stride, y_base), (x + stride, y_base)]
    swing = rng.uniform(-0.12, 0.12) * size
    hands = [(x - swing - 0.12 * size, y_base - 0.45 * size),
             (x + swing + 0.12 * size, y_base - 0.45 * size)]
    cv.shade(cv.ellipses([(x - 0.18 * size, y_base - 0.03 * size, x + 0.18 * size,
                           y_base + 0.03 * size)]), 0.6)
    _human(cv, hip, shoulder, feet, hands, size, (C["head"], C["torso"], C["legs"]))


def draw_bicycle(cv: Canvas, x: float, y_base: float, s: float, ridden: bool) -> None:
    """A bicycle (thin frame + wheel parts); if ``ridden``, a rider labelled ``rider``."""
    rng = cv.rng
    rw = s * rng.uniform(0.07, 0.09) * cv.h  # wheel radius
    d = 1.0 if rng.random() < 0.5 else -1.0
    rear = (x - d * 1.3 * rw, y_base - rw)
    front = (x + d * 1.3 * rw, y_base - rw)
    crank = (x - d * 0.1 * rw, y_base - rw)
    seat = (x - d * 0.55 * rw, y_base - 2.2 * rw)
    bars = (x + d * 0.95 * rw, y_base - 2.45 * rw)
    ring = max(1, int(round(0.22 * rw)))
    cv.paint(cv.ellipses([(cx - rw, cy - rw, cx + rw, cy + rw) for cx, cy in (rear, front)],
                         width=ring), C["wheel"], jitter(rng, (0.08, 0.08, 0.09), 0.03))
    frame = [[rear, seat, crank, rear], [seat, bars, crank], [bars, front]]
    cv.paint(cv.lines(frame, max(1.0, 0.14 * rw)), C["bicycle"],
             jitter(rng, _pick(rng, BODY_COLORS), 0.08))
    if ridden:
        size = 4.6 * rw  # a standing rider would be this tall
        shoulder = (seat[0] + d * 0.35 * rw, seat[1] - 1.45 * rw)
        feet = [(crank[0] + d * 0.3 * rw, crank[1] + 0.3 * rw),
                (crank[0] - d * 0.3 * rw, crank[1] - 0.2 * rw)]
        lab = C["rider"]
        _human(cv, seat, shoulder, feet, [bars], size, (lab, lab, lab))


def draw_pole(cv: Canvas, x: float, y_base: float, s: float, carry: str) -> None:
    """A pole carrying nothing, a lamp arm, a traffic sign or a traffic light."""
    rng = cv.rng
    height = s * rng.uniform(0.6, 0.95) * cv.h
    width = max(1.0, s * rng.uniform(0.015, 0.03) * cv.w)
    top = y_base - height
    grey = jitter(rng, (rng.uniform(0.2, 0.55),) * 3, 0.03)
    cv.paint(cv.rect(x - width / 2, top, x + width / 2, y_base), C["pole"], grey,
             0.06 * cv.noise(1))
    if carry == "lamp":
        arm = rng.uniform(0.08, 0.16) * cv.w * s * (1 if rng.random() < 0.5 else -1)
        cv.paint(cv.lines([[(x, top + width), (x + arm, top)]], width), C["pole"], grey)
    elif carry == "sign":
        r = s * rng.uniform(0.045, 0.07) * cv.w
        cy = top + r
        face = jitter(rng, _pick(rng, ((0.8, 0.1, 0.1), (0.1, 0.25, 0.7), (0.9, 0.9, 0.9),
                                       (0.9, 0.75, 0.1))), 0.06)
        shape = int(rng.integers(4))
        if shape == 0:
            m = cv.ellipses([(x - r, cy - r, x + r, cy + r)])
        elif shape == 1:
            m = cv.polygon([(x - r, cy - 0.8 * r), (x + r, cy - 0.8 * r), (x, cy + r)])
        elif shape == 2:
            m = cv.rect(x - r, cy - r, x + r, cy + r)
        else:
            m = cv.polygon([(x, cy - r), (x + r, cy), (x, cy + r), (x - r, cy)])
        border = m & ~cv.ellipses([(x - 0.6 * r, cy - 0.6 * r, x + 0.6 * r, cy + 0.6 * r)])
        cv.paint(m, C["traffic sign"], face)
        if rng.random() < 0.6:
            cv.paint(border, C["traffic sign"], jitter(rng, (0.92, 0.92, 0.9), 0.04))
    elif carry == "light":
        bw = max(2.0, s * rng.uniform(0.035, 0.05) * cv.w)
        bh = 2.7 * bw
        box = jitter(rng, (rng.uniform(0.1, 0.3),) * 3, 0.03)
        cv.paint(cv.rect(x - bw / 2, top, x + bw / 2, top + bh), C["traffic light"], box,
                 0.05 * cv.noise(1))
        lit = int(rng.integers(3))
        for k, col in enumerate(((0.9, 0.1, 0.05), (0.95, 0.7, 0.05), (0.1, 0.85, 0.3))):
            cy = top + bh * (k + 0.5) / 3
            rgb = np.asarray(col) * (1.0 if k == lit else 0.3)
            rr = 0.32 * bw
            cv.paint(cv.ellipses([(x - rr, cy - rr, x + rr, cy + rr)]), C["traffic light"],
                     rgb)


def veg_colour(rng: np.random.Generator) -> np.ndarray:
    """Vegetation and terrain share this colour distribution (told apart by texture)."""
    return np.asarray([rng.uniform(0.14, 0.42), rng.uniform(0.3, 0.5),
                       rng.uniform(0.08, 0.24)], np.float32)


def draw_tree(cv: Canvas, x: float, y_base: float, s: float) -> None:
    """Trunk and a canopy of overlapping blobs, all ``vegetation``."""
    rng = cv.rng
    th = s * rng.uniform(0.25, 0.4) * cv.h
    tw = max(1.0, s * 0.025 * cv.w)
    cv.paint(cv.rect(x - tw / 2, y_base - th, x + tw / 2, y_base), C["vegetation"],
             jitter(rng, (0.3, 0.2, 0.12), 0.05), 0.1 * cv.noise(1))
    cr = s * rng.uniform(0.07, 0.13) * cv.w
    n = int(rng.integers(3, 7))
    cx = x + rng.normal(0, 0.6 * cr, n)
    cy = y_base - th - rng.uniform(0.2, 1.2, n) * cr
    rad = cr * rng.uniform(0.6, 1.1, n)
    boxes = [(a - r, b - r, a + r, b + r) for a, b, r in zip(cx, cy, rad)]
    cv.paint(cv.ellipses(boxes), C["vegetation"], veg_colour(rng),
             0.3 * cv.noise(2) + 0.1 * cv.noise(1))


def draw_clutter(cv: Canvas, x: float, y_base: float, s: float) -> None:
    """A void object (bin, box, unknown thing) labelled ignore (255)."""
    rng = cv.rng
    w = s * rng.uniform(0.04, 0.12) * cv.w
    h = w * rng.uniform(0.6, 1.8)
    rgb = rng.uniform(0.05, 0.95, 3)
    if rng.random() < 0.5:
        m = cv.ellipses([(x - w / 2, y_base - h, x + w / 2, y_base)])
    else:
        m = cv.rect(x - w / 2, y_base - h, x + w / 2, y_base)
    cv.paint(m, 255, rgb, 0.1 * cv.noise(2))
