"""Evaluation during a mini-text build: zero-shot, individual and task-arithmetic accuracy, the entropy premise."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..mini_zoo.evaluate import entropy_premise, with_average
from .config import TextZooConfig
from .problem import _problem_from


@torch.no_grad()
def task_logits_on(problem, params: Mapping[str, Tensor], task: str) -> tuple[Tensor, Tensor]:
    """(logits, labels) of ``params`` on the problem's evaluation data of one task."""
    from ..functional import forward

    out, ys = [], []
    for inputs, labels in problem.eval_batches(task):
        out.append(problem.task_logits(task, forward(problem.model, params, inputs)))
        ys.append(labels)
    return torch.cat(out), torch.cat(ys)


def evaluate_text_zoo(zoo_dir: Path, manifest: dict, cfg: TextZooConfig, progress: bool):
    """Zero-shot, individual and task-arithmetic (λ = cfg.ta_scaling) accuracy per split; entropy premise on TA."""
    accuracy = {s: {"zero_shot": {}, "individual": {}, "task_arithmetic": {}} for s in ("validation", "test")}
    premise: dict[str, dict] = {s: {} for s in ("validation", "test")}
    for split in ("validation", "test"):
        problem = _problem_from(zoo_dir, manifest, tasks=None, split=split, batch_size=16, seed=0, device="cpu")
        theta0 = problem.pretrained
        experts = {t: problem.load_finetuned(t) for t in problem.task_names}
        ta = {
            k: theta0[k] + cfg.ta_scaling * sum(experts[t][k] - theta0[k] for t in problem.task_names) for k in theta0
        }
        for task in tqdm(problem.task_names, desc=f"zoo: evaluate ({split})", disable=not progress):
            for name, params in (("zero_shot", theta0), ("individual", experts[task]), ("task_arithmetic", ta)):
                logits, labels = task_logits_on(problem, params, task)
                accuracy[split][name][task] = 100.0 * int((logits.argmax(-1) == labels).sum()) / len(labels)
                if name == "task_arithmetic":
                    premise[split][task] = entropy_premise(logits, labels)
        del experts
    accuracy = {s: {m: with_average(v) for m, v in d.items()} for s, d in accuracy.items()}
    for s in premise:
        first = next(iter(premise[s].values()))
        premise[s]["average"] = {k: float(np.nanmean([premise[s][t][k] for t in cfg.tasks])) for k in first}
    return accuracy, premise
