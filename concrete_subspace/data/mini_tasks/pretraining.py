"""The mini CLIP's pre-training data: uncorrupted image-caption pairs of every task, and the captions' vocabulary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ...seeding import derive_rng
from .drawing import COLOURS, _to_uint8
from .procedural import _PROCEDURAL
from .real import _digits_arrays, _mnist_arrays, _render_digits, _render_mnist
from .splits import SplitSizes, _balanced_labels, _digits_sizes, _real_sizes, _real_split_indices
from .tasks import TASKS

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


def make_pretraining_set(
    seed: int,
    per_task: int,
    sizes: SplitSizes = SplitSizes(),
    unnamed: Mapping[str, Sequence[int]] | None = None,
    generic: Mapping[str, Sequence[int]] | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
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
            idx = _real_split_indices(seed, task, y, _digits_sizes(sizes) if task == "digits" else _real_sizes(sizes))[
                "train"
            ]
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
    """Every word used by captions (generic ones included) and zero-shot templates (sorted), for the tokenizer."""
    words = set(COLOURS)
    for caption in GENERIC_CAPTIONS.values():
        words.update(caption.lower().split())
    for spec in TASKS.values():
        for t in spec.templates + spec.captions:
            for c in spec.classnames:
                words.update(t.format(c).lower().split())
    return sorted(words)
