"""The mini-text zoo's task data: every task's splits, saved and loaded as datasets.DatasetDict, and token lengths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..data import text as text_data
from .config import SPLITS, TextZooConfig


def make_task_data(cfg: TextZooConfig, seed: int) -> dict[str, dict[str, tuple[list[str], list[int]]]]:
    return {t: text_data.make_task_splits(t, seed, cfg.per_class) for t in cfg.tasks}


def save_task_datasets(data: Mapping[str, Mapping[str, tuple[list[str], list[int]]]], root: Path) -> None:
    import datasets

    for task, splits in data.items():
        features = datasets.Features(
            {
                "text": datasets.Value("string"),
                "label": datasets.ClassLabel(names=list(text_data.TASKS[task].classnames)),
            }
        )
        dd = datasets.DatasetDict(
            {s: datasets.Dataset.from_dict({"text": x, "label": y}, features=features) for s, (x, y) in splits.items()}
        )
        dd.save_to_disk(str(root / task))


def load_text_split(zoo_dir: str | Path, task: str, split: str) -> tuple[list[str], Tensor]:
    """(texts, int64 labels) of one saved split."""
    import datasets

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(zoo_dir) / "datasets" / task
    if not path.exists():
        raise FileNotFoundError(f"text zoo {zoo_dir} has no dataset for task {task!r} (expected {path})")
    ds = datasets.load_from_disk(str(path))[split]
    return list(ds["text"]), torch.tensor(list(ds["label"]), dtype=torch.long)


def token_length(tokenizer, texts: Sequence[str], cap: int) -> int:
    """Longest tokenised text (with [CLS]/[SEP]), capped: the task's fixed padded length."""
    longest = max(len(ids) for ids in tokenizer(list(texts))["input_ids"])
    return int(min(cap, longest))
