"""Task-specific domain shifts of the mini zoo: each task's images live in their own, label-preserving domain.

Pre-training sees every task's concepts without these shifts, so each task's distribution is one that the
pre-trained model never saw (as EuroSAT's or SVHN's images are for CLIP), and the shifts differ between tasks, so
an expert's update is specific to its task. Float images N x H x W x 3 in [0, 1] in and out; the only randomness
(salt-and-pepper) comes from the caller's generator. Measured effect on zero-shot and linear-probe accuracy:
docs/zoo.md ("Zoo v3"; v2's and the probes that led to v3: "Zoo v2").
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from scipy import ndimage


def invert(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour inversion (white strokes on black become black on white)."""
    return 1.0 - x


def blur(x: np.ndarray, rng: np.random.Generator, sigma: float = 1.2) -> np.ndarray:
    """Gaussian blur of sigma pixels over the two spatial axes."""
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest")


def centre_zoom(x: np.ndarray, rng: np.random.Generator, factor: int = 2) -> np.ndarray:
    """The central 1/factor of the image, enlarged back to full size (bilinear)."""
    size = x.shape[1]
    crop = size // factor
    lo = (size - crop) // 2
    centre = x[:, lo : lo + crop, lo : lo + crop]
    return np.clip(ndimage.zoom(centre, (1, size / crop, size / crop, 1), order=1), 0.0, 1.0)


def permute_channels(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """R <- G, G <- B, B <- R, then a fixed warm tint."""
    return np.clip(x[..., [1, 2, 0]] * np.array([1.0, 0.85, 0.7], dtype=x.dtype) + 0.08, 0.0, 1.0)


def pixelate(x: np.ndarray, rng: np.random.Generator, block: int = 4) -> np.ndarray:
    """Block means over block x block cells (28 / 4 = 7 x 7 cells), repeated back to full size."""
    n, h, w, c = x.shape
    cells = x.reshape(n, h // block, block, w // block, block, c).mean(axis=(2, 4))
    return np.repeat(np.repeat(cells, block, axis=1), block, axis=2)


def salt_and_pepper(x: np.ndarray, rng: np.random.Generator, fraction: float = 0.08) -> np.ndarray:
    """A random fraction of the pixels set to black or white (all channels)."""
    hit = rng.random(x.shape[:3]) < fraction
    value = (rng.random(x.shape[:3]) < 0.5).astype(x.dtype)
    return np.where(hit[..., None], value[..., None], x)


def mirror(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Horizontal mirror."""
    return x[:, :, ::-1].copy()


def posterise(x: np.ndarray, rng: np.random.Generator, contrast: float = 2.0, levels: int = 3) -> np.ndarray:
    """Contrast x2 about mid-grey, then 3 grey levels per channel."""
    y = np.clip((x - 0.5) * contrast + 0.5, 0.0, 1.0)
    return np.round(y * (levels - 1)) / (levels - 1)


def permute_and_invert(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The channel permutation and tint, then colour inversion."""
    return invert(permute_channels(x, rng), rng)


Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# Zoo v2's shifts, one per task (kept so that v2 and its probes can be rebuilt: benchmarks/zoo_v2/probe.py).
V2_SHIFTS: dict[str, Shift] = {
    "mnist": invert,
    "digits": blur,
    "textures": centre_zoom,
    "landcover": permute_channels,
    "signs": pixelate,
    "shapes": salt_and_pepper,
    "letters": mirror,
    "directions": posterise,
}


def pixelate_and_permute(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Block means over 4 x 4 cells, then the channel permutation and tint (red signs turn blue, blue ones green)."""
    return permute_channels(pixelate(x, rng), rng)


# The "medium" probe of docs/zoo.md: v2's shifts with digits, landcover and directions shifted harder (validation
# zero-shot 64.5 -> 57.9 on v2's pre-trained model). benchmarks/zoo_v2/probe.py --shifts medium|v3 builds it.
MEDIUM_SHIFTS: dict[str, Shift] = {
    **V2_SHIFTS,
    "digits": partial(blur, sigma=1.6),
    "landcover": permute_and_invert,
    "directions": partial(posterise, levels=2),
}

# Zoo v3's shifts (the default since 2026-12-03): the medium shifts, and signs recoloured as well as pixelated
# (signs kept zero-shot 83 under the medium shifts; recoloured: 21, expert 97; docs/zoo.md "Zoo v3").
V3_SHIFTS: dict[str, Shift] = {**MEDIUM_SHIFTS, "signs": pixelate_and_permute}

# One shift per task, applied to every split of the task after its rendering and corruption (zoo v3's).
TASK_SHIFTS: dict[str, Shift] = dict(V3_SHIFTS)


def apply_task_shift(task: str, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The domain shift of ``task`` applied to float images (a task without a shift is an error)."""
    if task not in TASK_SHIFTS:
        raise KeyError(f"no domain shift for task {task!r}; tasks with one: {list(TASK_SHIFTS)}")
    return TASK_SHIFTS[task](images.astype(np.float32, copy=False), rng).astype(np.float32)
