"""Drawing surface, textures and photometric post-processing for the synthetic benchmark.

A :class:`Canvas` holds a float RGB image in ``[0, 1]`` and a uint8 label map; shapes are
rasterised with PIL into boolean masks and painted with a base colour modulated by a
texture pattern. Everything is vectorised numpy over the full ``[H, W]`` grid; all
randomness comes from the canvas' own ``numpy.random.Generator``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["Canvas", "finish_image"]

Point = tuple[float, float]


@lru_cache(maxsize=8)
def _grids(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``yy, xx`` of shape ``[H, W]`` (float32, read-only)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _upsample_bilinear(small: np.ndarray, h: int, w: int, scale: float) -> np.ndarray:
    """Bilinear interpolation of a coarse grid sampled every ``scale`` pixels to ``[h, w]``."""
    ys = np.arange(h, dtype=np.float32) / scale
    xs = np.arange(w, dtype=np.float32) / scale
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = small[y0][:, x0]
    b = small[y0][:, x0 + 1]
    c = small[y0 + 1][:, x0]
    d = small[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


class Canvas:
    """Image and label buffers of one synthetic scene.

    Args:
        rng: The scene's private random generator.
        size: Image height and width ``S``.
        ignore_index: Initial label value (pixels never painted stay ignored).

    Attributes:
        img: ``float32 [S, S, 3]`` in ``[0, 1]``.
        lab: ``uint8 [S, S]`` fine-class ids.
    """

    def __init__(self, rng: np.random.Generator, size: int, ignore_index: int = 255) -> None:
        self.rng = rng
        self.h = self.w = int(size)
        self.img = np.zeros((self.h, self.w, 3), np.float32)
        self.lab = np.full((self.h, self.w), ignore_index, np.uint8)
        self.yy, self.xx = _grids(self.h, self.w)
        self._noise: dict[float, np.ndarray] = {}

    # ------------------------------------------------------------------ masks
    def _new(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        im = Image.new("L", (self.w, self.h), 0)
        return im, ImageDraw.Draw(im)

    def polygon(self, pts: Sequence[Point]) -> np.ndarray:
        """Boolean ``[H, W]`` mask of a filled polygon (pixel coordinates ``(x, y)``)."""
        im, dr = self._new()
        dr.polygon([(float(x), float(y)) for x, y in pts], fill=255)
        return np.asarray(im) > 0

    def ellipses(self, boxes: Sequence[Sequence[float]], width: int = 0) -> np.ndarray:
        """Union of ellipses ``(x0, y0, x1, y1)``; ``width > 0`` draws rings only."""
        im, dr = self._new()
        for x0, y0, x1, y1 in boxes:
            box = (float(x0), float(y0), max(float(x1), x0 + 1.0), max(float(y1), y0 + 1.0))
            if width > 0:
                dr.ellipse(box, outline=255, width=int(width))
            else:
                dr.ellipse(box, fill=255)
        return np.asarray(im) > 0

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Axis-aligned box mask ``[x0, x1) x [y0, y1)`` (vectorised, no PIL)."""
        return ((self.xx >= x0) & (self.xx < x1)) & ((self.yy >= y0) & (self.yy < y1))

    def lines(self, segments: Sequence[Sequence[Point]], width: float) -> np.ndarray:
        """Union of polylines of the given stroke width (at least 1 px)."""
        im, dr = self._new()
        for seg in segments:
            dr.line([(float(x), float(y)) for x, y in seg], fill=255,
                    width=max(1, int(round(width))))
        return np.asarray(im) > 0

    # ------------------------------------------------------------------ textures
    def noise(self, scale: float) -> np.ndarray:
        """Unit-variance Gaussian noise with correlation length ~``scale`` px, ``[H, W]``.

        One field per scale per scene (different objects read different places of it).
        """
        if scale not in self._noise:
            if scale <= 1:
                field = self.rng.standard_normal((self.h, self.w)).astype(np.float32)
            else:
                gh, gw = int(self.h / scale) + 2, int(self.w / scale) + 2
                small = self.rng.standard_normal((gh, gw)).astype(np.float32)
                field = _upsample_bilinear(small, self.h, self.w, scale)
                field /= max(float(field.std()), 1e-6)
            self._noise[scale] = field
        return self._noise[scale]

    def stripes(self, period: float, angle_deg: float, duty: float = 0.5,
                phase: float = 0.0) -> np.ndarray:
        """Binary stripes (1 on the stripe), ``[H, W]`` float32.

        ``angle_deg`` is the direction of the stripe normal: 0 gives vertical stripes,
        90 horizontal ones.
        """
        a = np.deg2rad(angle_deg)
        t = (self.xx * np.cos(a) + self.yy * np.sin(a)) / max(period, 1e-3) + phase
        return ((t - np.floor(t)) < duty).astype(np.float32)

    def cells(self, px: float, py: float, fx: float, fy: float, ox: float = 0.0,
              oy: float = 0.0) -> np.ndarray:
        """Rectangular grid cells (windows, tiles): 1 inside a ``fx*px`` by ``fy*py`` cell."""
        u = (self.xx - ox) / max(px, 1e-3)
        v = (self.yy - oy) / max(py, 1e-3)
        return (((u - np.floor(u)) < fx) & ((v - np.floor(v)) < fy)).astype(np.float32)

    # ------------------------------------------------------------------ painting
    def paint(self, mask: np.ndarray, cls: int, rgb: Sequence[float] | np.ndarray,
              pattern: np.ndarray | None = None,
              alt: tuple[Sequence[float], np.ndarray] | None = None) -> None:
        """Paints ``mask`` with colour ``rgb * (1 + pattern)`` and label ``cls``.

        Args:
            mask: ``bool [H, W]``.
            cls: Label id written under the mask (255 for void).
            rgb: ``(3,)`` colour or ``[H, W, 3]`` colour field in ``[0, 1]``.
            pattern: Optional ``[H, W]`` multiplicative modulation (zero-mean-ish).
            alt: Optional ``(rgb2 (3,), select bool [H, W])``: colour ``rgb2`` where
                ``select`` (e.g. windows inside a facade), computed on masked pixels only.
        """
        if not mask.any():
            return
        col = np.asarray(rgb, np.float32)
        col = col[mask] if col.ndim == 3 else col[None, :]
        if alt is not None:
            col = np.where(alt[1][mask][:, None], np.asarray(alt[0], np.float32), col)
        if pattern is not None:
            col = col * (1.0 + pattern[mask])[:, None]
        self.img[mask] = np.clip(col, 0.0, 1.0)
        self.lab[mask] = cls

    def shade(self, mask: np.ndarray, factor: float) -> None:
        """Darkens the image under ``mask`` (shadows); labels are unchanged."""
        self.img[mask] *= factor


def finish_image(canvas: Canvas) -> np.ndarray:
    """Illumination, blur and sensor noise; returns the ``uint8 [H, W, 3]`` image.

    Global gain, colour cast and gamma; a linear illumination gradient in a random
    direction; with probability 0.5 a Gaussian blur of radius 0.3-1.2 px; Gaussian noise
    of standard deviation 1-5% of the range.
    """
    rng, img = canvas.rng, canvas.img
    h, w = canvas.h, canvas.w
    gain = rng.uniform(0.6, 1.3)
    tint = rng.uniform(0.88, 1.12, size=3).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(-0.45, 0.45)
    ramp = ((canvas.xx - w / 2) * np.cos(ang) + (canvas.yy - h / 2) * np.sin(ang)) / max(h, w)
    light = gain * (1.0 + slope * ramp)  # [H, W]
    out = np.clip(img * light[..., None] * tint, 0.0, 1.0)
    out = out ** np.float32(rng.uniform(0.8, 1.25))
    u8 = (out * 255.0 + 0.5).astype(np.uint8)
    if rng.random() < 0.5:
        radius = float(rng.uniform(0.3, 1.2))
        u8 = np.asarray(Image.fromarray(u8).filter(ImageFilter.GaussianBlur(radius)))
    sigma = rng.uniform(2.5, 13.0)
    noisy = u8.astype(np.float32) + rng.standard_normal(u8.shape, dtype=np.float32) * sigma
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
