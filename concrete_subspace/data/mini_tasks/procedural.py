"""The six procedural tasks' class names and renderers: textures, landcover, signs, shapes, letters, directions."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from .drawing import (
    _S,
    _XX,
    _YY,
    COLOURS,
    _canvas,
    _disk,
    _paint,
    _polygon,
    _rand_colour,
    _regular,
    _segment,
    _smooth_noise,
    _soft,
)

TEXTURES = (
    "banded",
    "chequered",
    "dotted",
    "grid",
    "zigzagged",
    "wavy",
    "marbled",
    "crosshatched",
    "spiralled",
    "speckled",
)  # class c of _textures draws pattern c


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
        if c == 0:  # banded
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
            m = np.maximum(
                _soft(np.abs(((u + v) % per) - per / 2) - 0.6), _soft(np.abs(((u - v) % per) - per / 2) - 0.6)
            )
        elif c == 8:  # spiralled
            cx, cy = rng.uniform(9, 19, 2)
            r = np.hypot(_XX - cx, _YY - cy)
            ang = np.arctan2(_YY - cy, _XX - cx)
            m = (np.sin(2 * np.pi * r / per - 2 * ang + ph) > 0).astype(np.float32)
        else:  # speckled (irregular random specks)
            m = (rng.random((_S, _S)) < 0.12).astype(np.float32)
        img = _canvas(1, a)[0]
        _paint(img, m, b)
        out[k] = img
    return out


LANDCOVER = (
    "annual crop",
    "forest",
    "herbaceous vegetation",
    "highway",
    "industrial",
    "pasture",
    "permanent crop",
    "residential",
    "river",
    "sea",
)


def _landcover(rng, labels: np.ndarray, clean: bool) -> np.ndarray:
    """EuroSAT-like land-cover tiles seen from above."""
    out = np.zeros((len(labels), _S, _S, 3), np.float32)
    green = np.array([0.25, 0.55, 0.20], np.float32)
    for k, c in enumerate(labels):
        j = rng.uniform(0.85, 1.15, 3).astype(np.float32)  # per-image colour jitter
        n1 = _smooth_noise(rng, 4)[..., None]
        if c == 0:  # annual crop: parallel strips of alternating crop colours
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
            houses = (
                (((_XX + ox) % per) > 2.2)
                & (((_XX + ox) % per) < per - 1.0)
                & (((_YY + oy) % per) > 2.2)
                & (((_YY + oy) % per) < per - 1.0)
            )
            roof = np.where(rng.random() < 0.5, np.array([0.70, 0.25, 0.20]), np.array([0.75, 0.70, 0.65]))
            _paint(img, houses.astype(np.float32), roof)
        elif c == 8:  # river: meandering blue band over vegetation
            img = green * (0.8 + 0.4 * n1)
            th = rng.uniform(0, np.pi)
            u = _XX * np.cos(th) + _YY * np.sin(th) - 14 * (np.cos(th) + np.sin(th))
            v = -_XX * np.sin(th) + _YY * np.cos(th)
            m = _soft(np.abs(u - 4 * np.sin(2 * np.pi * v / rng.uniform(14, 24) + rng.uniform(0, 6))) - 2.5)
            _paint(img, m, (0.15, 0.30, 0.60))
        else:  # sea: water with a little shore
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
    head = _polygon(
        np.array(
            [
                [tx, ty],
                [tx - dx * 2.2 * width - hx * 1.6 * width, ty - dy * 2.2 * width - hy * 1.6 * width],
                [tx - dx * 2.2 * width + hx * 1.6 * width, ty - dy * 2.2 * width + hy * 1.6 * width],
            ]
        )
    )
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
        if c == 0:  # stop: red octagon with a white bar
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
        else:  # priority road: yellow diamond with a white border
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
            m = np.maximum(
                _segment(cx - dx, cy - dy, cx + dx, cy + dy, 0.5 * r),
                _segment(cx + dy, cy - dx, cx - dy, cy + dx, 0.5 * r),
            )
        elif c == 4:
            m = np.zeros((_S, _S), np.float32)
            for t in range(5):
                a = rot + t * 2 * np.pi / 5
                tip = np.array([cx + r * np.cos(a), cy + r * np.sin(a)])
                ll = np.array([cx + 0.38 * r * np.cos(a - 0.63), cy + 0.38 * r * np.sin(a - 0.63)])
                rr = np.array([cx + 0.38 * r * np.cos(a + 0.63), cy + 0.38 * r * np.sin(a + 0.63)])
                m = np.maximum(m, _polygon(np.stack([tip, rr, [cx, cy], ll])[::-1]))
                m = np.maximum(m, _polygon(np.stack([tip, ll, [cx, cy], rr])[::-1]))
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


_PROCEDURAL: dict[str, Callable] = {
    "textures": _textures,
    "landcover": _landcover,
    "signs": _signs,
    "shapes": _shapes,
    "letters": _letters,
    "directions": _directions,
}
