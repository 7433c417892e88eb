"""A task's train / validation / test split: sizes, stratified disjoint splits of the real data, rendered images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...seeding import derive_rng
from ..shifts import apply_task_shift
from .drawing import _to_uint8, corrupt
from .procedural import _PROCEDURAL
from .real import _digits_arrays, _mnist_arrays, _render_digits, _render_mnist
from .tasks import TASKS


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
    for idx in per_class.values():
        t = int(round(sizes.test / n_cls))
        v = int(round(sizes.validation / n_cls))
        out["test"].append(idx[:t])
        out["validation"].append(idx[t : t + v])
        out["train"].append(idx[t + v : t + v + int(round(sizes.train / n_cls))])
    return {s: rng.permutation(np.concatenate(v)) for s, v in out.items()}


def _real_sizes(sizes: SplitSizes) -> SplitSizes:
    """Real data is scarce: test and validation as asked, every remaining image for training."""
    return SplitSizes(train=10**9, validation=sizes.validation, test=sizes.test)


def _digits_sizes(sizes: SplitSizes) -> SplitSizes:
    """UCI digits has 1,797 images: test as asked, a smaller validation split, every other image for training."""
    return SplitSizes(train=10**9, validation=min(sizes.validation, 300), test=sizes.test)


def make_task_split(
    task: str, split: str, seed: int, sizes: SplitSizes = SplitSizes(), domain_shift: bool = False
) -> tuple[np.ndarray, np.ndarray]:
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
