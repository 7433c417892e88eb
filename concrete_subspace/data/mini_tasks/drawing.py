"""Drawing on the mini scale's 28x28 RGB canvas: anti-aliased shapes, smooth noise, colours, the task corruption."""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 28


_S = IMAGE_SIZE


_YY, _XX = np.mgrid[0:_S, 0:_S].astype(np.float32) + 0.5  # pixel-centre coordinates


COLOURS = {  # name -> RGB in [0, 1]; used for object colours and in shape captions
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (0.95, 0.55, 0.10),
    "purple": (0.60, 0.20, 0.75),
    "white": (0.95, 0.95, 0.95),
    "cyan": (0.10, 0.80, 0.85),
}


def _canvas(n: int, rgb) -> np.ndarray:
    """n images filled with one colour (float32, [0, 1])."""
    return np.broadcast_to(np.asarray(rgb, np.float32), (n, _S, _S, 3)).copy()


def _paint(img: np.ndarray, mask: np.ndarray, rgb) -> None:
    """Paint ``rgb`` into ``img`` (H, W, 3) where the float mask (H, W) in [0, 1] is set (alpha blend)."""
    a = np.clip(mask, 0.0, 1.0)[..., None]
    img *= 1.0 - a
    img += a * np.asarray(rgb, np.float32)


def _soft(signed_dist: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - signed_dist, 0.0, 1.0)


def _disk(cx, cy, r) -> np.ndarray:
    return _soft(np.hypot(_XX - cx, _YY - cy) - r)


def _polygon(pts: np.ndarray) -> np.ndarray:
    """Coverage of a convex polygon given its (x, y) vertices in either winding order."""
    pts = np.asarray(pts, np.float64)
    area2 = np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
    if area2 < 0:
        pts = pts[::-1]
    d = np.full((_S, _S), -np.inf, np.float32)
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0)):
        ex, ey = x1 - x0, y1 - y0
        norm = np.hypot(ex, ey) + 1e-8
        d = np.maximum(d, ((_XX - x0) * ey - (_YY - y0) * ex) / norm)
    return _soft(d)


def _regular(cx, cy, r, k, rot) -> np.ndarray:
    """Vertices of a regular k-gon."""
    ang = rot + np.arange(k) * 2 * np.pi / k
    return np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], axis=1)


def _segment(x0, y0, x1, y1, width) -> np.ndarray:
    """Coverage of a thick line segment."""
    px, py = _XX - x0, _YY - y0
    dx, dy = x1 - x0, y1 - y0
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-8), 0.0, 1.0)
    return _soft(np.hypot(px - t * dx, py - t * dy) - width / 2)


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] (bilinear upsampling of a cells x cells grid)."""
    g = rng.random((cells + 1, cells + 1)).astype(np.float32)
    c = (np.arange(_S, dtype=np.float32) + 0.5) / _S * cells
    i = np.minimum(c.astype(int), cells - 1)
    f = c - i
    rows = g[i] * (1 - f)[:, None] + g[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _rand_colour(rng, avoid=None, min_dist=0.5) -> np.ndarray:
    """A random RGB colour at least ``min_dist`` away from ``avoid``."""
    for _ in range(20):
        c = rng.random(3).astype(np.float32)
        if avoid is None or np.linalg.norm(c - np.asarray(avoid)) >= min_dist:
            return c
    return 1.0 - np.asarray(avoid, np.float32)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def corrupt(images: np.ndarray, rng: np.random.Generator, level: float) -> np.ndarray:
    """Task-distribution shift: clutter strokes, colour cast, lower contrast, pixel noise (float in/out)."""
    out = images.copy()
    n = len(out)
    for k in range(n):
        for _ in range(rng.integers(1, 4)):  # thin clutter strokes in random colours
            x0, y0, x1, y1 = rng.uniform(0, _S, 4)
            _paint(out[k], 0.6 * level * _segment(x0, y0, x1, y1, rng.uniform(0.8, 1.8)), rng.random(3))
    contrast = 1.0 - level * rng.uniform(0.2, 0.55, (n, 1, 1, 1))
    cast = level * rng.uniform(-0.15, 0.15, (n, 1, 1, 3))
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    out = (out - mean) * contrast + mean + cast
    out += level * rng.uniform(0.06, 0.16, (n, 1, 1, 1)) * rng.standard_normal(out.shape, dtype=np.float32)
    return np.clip(out, 0.0, 1.0)
