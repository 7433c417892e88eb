"""Notebook 04: each method adapts on and is scored on corrupted test images, per corruption."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from ..problem import MergeProblem
from ..seeding import derive_seed
from .cache import RunRecord, cache_for, reference_rows
from .configs import RobustnessConfig
from .problems import problem_for
from .runners import run_methods
from .tables import with_average

PAPER_ROBUSTNESS_TASKS = ("cars", "eurosat", "resisc45", "gtsrb")
MINI_ROBUSTNESS_TASKS = ("letters", "landcover", "textures", "signs")


# Robustness repeats every test-time run for 8 conditions: at mini scale (steps=None) each runs this many steps.
MINI_ROBUSTNESS_STEPS = 50


def corrupted_problem(
    problem: MergeProblem, corruption: str, severity: int, seed: int, zoo_dir: str | Path
) -> MergeProblem:
    """The mini problem with every test image corrupted (fixed per image, batch-wise generator from the run seed)."""
    from ..data.batching import step_indices
    from ..data.corruptions import corrupt
    from ..zoo import load_task_split

    pixels, labels = {}, {}
    for i, task in enumerate(problem.task_names):
        images, y = load_task_split(zoo_dir, task, problem.info.get("split", "test"))
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if corruption != "clean":
            x = corrupt(x, corruption, severity, generator=torch.Generator().manual_seed(derive_seed(seed, i)))
        pixels[task] = ((x.clamp(0, 1) - 0.5) / 0.5).to(problem.device)
        labels[task] = y

    def unlabeled_batch(task: str, step: int) -> Tensor:
        return pixels[task][step_indices(len(labels[task]), 16, step, seed)]

    def eval_batches(task: str):
        for start in range(0, len(labels[task]), 256):
            yield pixels[task][start : start + 256], labels[task][start : start + 256]

    info = {**problem.info, "variant": f"{corruption}-s{severity}"}
    return dataclasses.replace(problem, unlabeled_batch=unlabeled_batch, eval_batches=eval_batches, info=info)


def corruption_names(config: RobustnessConfig) -> tuple[str, ...]:
    """'clean' plus the configured corruptions (default: all seven of the paper)."""
    from ..data.corruptions import CORRUPTIONS

    return ("clean",) + tuple(config.corruptions or CORRUPTIONS)


def run_robustness(config: RobustnessConfig) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Robustness table: per corruption, each method adapts on and is scored on the corrupted test images.

    At mini scale the zero-shot and individual models are scored on each corruption too; with ``steps=None`` every
    test-time run uses :data:`MINI_ROBUSTNESS_STEPS` steps (eight conditions repeat every run).
    """
    tasks = config.tasks or (PAPER_ROBUSTNESS_TASKS if config.scale == "paper" else MINI_ROBUSTNESS_TASKS)
    if config.scale == "paper":
        problem_of, reference = (lambda corruption: _paper_problem(config, tasks, corruption)), False
    else:
        clean = problem_for(config, tasks=tasks)
        if config.steps is None and not config.smoke:
            config = dataclasses.replace(config, steps=MINI_ROBUSTNESS_STEPS)
        severity, seed, zoo_dir = config.severity, config.run_seed, clean.info["zoo_dir"]
        problem_of, reference = (lambda corruption: corrupted_problem(clean, corruption, severity, seed, zoo_dir)), True
    rows, records = [], {}
    for corruption in corruption_names(config):
        problem = problem_of(corruption)
        scores = dict(reference_rows(problem, cache_dir=cache_for(config))) if reference else {}
        for method, record in run_methods(
            problem, config.methods, config, context={"experiment": "robustness"}, curves=False
        ).items():
            records[f"{corruption}/{method}"] = record
            scores[method] = record.scores
        rows += [
            {"corruption": corruption, "method": method, "task": task, "accuracy": score}
            for method, per_task in scores.items()
            for task, score in per_task.items()
        ]
    return with_average(pd.DataFrame(rows), ["corruption", "method"]), records


def _paper_problem(config: RobustnessConfig, tasks: Sequence[str], corruption: str) -> MergeProblem:
    """Paper scale: Hub CLIP (or the task_vectors checkpoints) with each test set corrupted after resize/crop."""
    from ..data.corruptions import corruption_transform
    from ..data.paper import clip_image_transform, load_vision_test_set
    from ..models.clip_hub import build_clip_hub_problem
    from ..models.open_clip_ckpt import build_open_clip_problem

    corrupt_fn = None if corruption == "clean" else corruption_transform(corruption, config.severity, config.run_seed)
    if config.checkpoints is not None:  # test sets at the open_clip model's resolution, corrupted the same way
        problem = build_open_clip_problem(
            config.checkpoints, config.arch, tasks, device=config.device, seed=config.run_seed, corruption=corrupt_fn
        )
    else:
        transform = clip_image_transform(224, corruption=corrupt_fn)
        test_sets = {t: load_vision_test_set(t, transform=transform) for t in tasks}
        problem = build_clip_hub_problem(
            config.arch, tasks, device=config.device, seed=config.run_seed, test_sets=test_sets
        )
    return dataclasses.replace(problem, info={**problem.info, "variant": f"{corruption}-s{config.severity}"})
