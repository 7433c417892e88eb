"""Scoring merged parameters on each task's evaluation data (accuracy in percent by default)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .functional import forward
from .problem import MergeProblem


def to_device(inputs, device):
    if isinstance(inputs, dict):
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    return inputs.to(device) if torch.is_tensor(inputs) else inputs


def head_logits(problem: MergeProblem, task: str, features: Tensor) -> Tensor:
    """``problem.task_logits``, with a missing head reported by task name instead of a bare KeyError."""
    try:
        return problem.task_logits(task, features)
    except KeyError as err:
        raise ValueError(f"task {task!r} has no head (task_logits raised KeyError: {err})") from None


@torch.no_grad()
def has_evaluation_data(problem: MergeProblem) -> bool:
    """Whether the problem has labeled evaluation data (a timing benchmark's problem has none)."""
    return any(True for task in problem.task_names for _ in problem.eval_batches(task))


def evaluate(
    problem: MergeProblem,
    params: Mapping[str, Tensor] | None = None,
    tasks: Iterable[str] | None = None,
    *,
    progress: bool = False,
) -> dict[str, float]:
    """Score of ``params`` (default: the pre-trained weights) on each task, in percent (metric: problem.metric_name)."""
    params = dict(problem.pretrained) if params is None else params
    scores = {}
    for task in tqdm(list(tasks or problem.task_names), desc="evaluate", disable=not progress):
        total, count = 0.0, 0
        for inputs, targets in problem.eval_batches(task):
            features = forward(problem.model, params, to_device(inputs, problem.device))
            batch_total, batch_count = problem.score(
                task, head_logits(problem, task, features), targets.to(problem.device)
            )
            total, count = total + batch_total, count + batch_count
        if count == 0:
            raise ValueError(f"task {task!r}: evaluation data is empty")
        scores[task] = 100.0 * total / count
    return scores


def average(scores: Mapping[str, float]) -> float:
    """Unweighted mean over tasks (how the paper reports 'Avg.')."""
    return sum(scores.values()) / len(scores)
