"""The zoo's task data: every task's train / validation / test split, saved and loaded as datasets.DatasetDict."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import mini
from .config import SPLITS, MiniConfig


def generate_task_data(
    cfg: MiniConfig, seed: int, progress: bool = True
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """All task splits: {task: {split: (uint8 images, int64 labels)}}."""
    data = {}
    for task in tqdm(cfg.tasks, desc="zoo: task data", disable=not progress):
        data[task] = {s: mini.make_task_split(task, s, seed, cfg.sizes, cfg.domain_shift) for s in SPLITS}
    return data


def save_task_datasets(data: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], root: Path) -> None:
    """Save each task as a datasets.DatasetDict (uint8 image arrays + ClassLabel) under root/<task>."""
    import datasets

    for task, splits in data.items():
        names = list(mini.TASKS[task].classnames)
        features = datasets.Features(
            {
                "image": datasets.Array3D(shape=(mini.IMAGE_SIZE, mini.IMAGE_SIZE, 3), dtype="uint8"),
                "label": datasets.ClassLabel(names=names),
            }
        )
        dd = datasets.DatasetDict(
            {s: datasets.Dataset.from_dict({"image": x, "label": y}, features=features) for s, (x, y) in splits.items()}
        )
        dd.save_to_disk(str(root / task))


def load_task_split(zoo_dir: str | Path, task: str, split: str) -> tuple[Tensor, Tensor]:
    """(uint8 images N x 28 x 28 x 3, int64 labels) of one saved split."""
    import datasets

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(zoo_dir) / "datasets" / task
    if not path.exists():
        raise FileNotFoundError(f"zoo {zoo_dir} has no dataset for task {task!r} (expected {path})")
    ds = datasets.load_from_disk(str(path))[split].with_format("numpy")
    return torch.from_numpy(np.asarray(ds["image"], dtype=np.uint8)), torch.from_numpy(
        np.asarray(ds["label"], dtype=np.int64)
    )
