"""The one contract between model/data adapters and merge methods: what a method reads and what it returns.

A :class:`MergeProblem` bundles what every method of :mod:`concrete_subspace.registry` needs: the shared
pre-trained module (a template for ``torch.func.functional_call``; never mutated), its float parameters θ0,
the task names, a loader for each fine-tuned state (called one task at a time, so task vectors stream), each
task's frozen head, and the data. Adapters (``models/``, ``zoo.py``) build it; methods only read it,
and return a :class:`MergeResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


def accuracy_score(task: str, logits: Tensor, targets: Tensor) -> tuple[float, int]:
    """Default per-batch score: (number correct, number of examples)."""
    return float((logits.argmax(dim=-1) == targets).sum()), int(targets.numel())


@dataclass(frozen=True)
class MergeProblem:
    """Everything a merge method needs, with data accessed by (task, step) so runs resume exactly.

    - ``model(inputs)`` returns features; ``task_logits(task, features)`` applies that task's frozen head.
      Inputs that are dicts are passed as keyword arguments.
    - ``unlabeled_batch(task, step)`` returns the inputs of the test-time batch used at optimisation step
      ``step`` (labels never reach the methods); it must be deterministic in (task, step).
    - ``eval_batches(task)`` yields ``(inputs, targets)`` for scoring; ``train_batches`` (optional) yields
      labelled training batches for the data-hungry baselines (Fisher merging, RegMean).
    - ``score(task, logits, targets)`` returns (sum of scores, count); accuracy by default.
    """

    model: nn.Module
    pretrained: Mapping[str, Tensor]
    task_names: tuple[str, ...]
    load_finetuned: Callable[[str], Mapping[str, Tensor]]
    task_logits: Callable[[str, Tensor], Tensor]
    unlabeled_batch: Callable[[str, int], Any]
    eval_batches: Callable[[str], Iterable[tuple[Any, Tensor]]]
    train_batches: Callable[[str], Iterable[tuple[Any, Tensor]]] | None = None
    score: Callable[[str, Tensor, Tensor], tuple[float, int]] = accuracy_score
    metric_name: str = "accuracy"
    info: dict = field(default_factory=dict)  # free-form provenance (ids, revisions, zoo manifest path)

    def __post_init__(self):
        if len(self.task_names) == 0:
            raise ValueError("MergeProblem needs at least one task; task_names is empty")
        if len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"MergeProblem task_names has duplicates: {list(self.task_names)}")
        if not self.pretrained:
            raise ValueError("MergeProblem.pretrained has no float tensors to merge")

    @property
    def device(self) -> torch.device:
        return next(iter(self.pretrained.values())).device


@dataclass
class MergeResult:
    """A merged state (the merged float params), the logged history, the resolved parameters, and extras."""

    state: dict[str, Tensor]
    params: dict[str, Any]
    history: list[dict] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
