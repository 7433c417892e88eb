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
    """The mini problem with every test image corrupted (fixed per image, batch-wise generator from the seed)."""
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
    """Robustness table: per corruption, each method adapts on and is scored on the corrupted test images."""
    tasks = config.tasks or (PAPER_ROBUSTNESS_TASKS if config.scale == "paper" else MINI_ROBUSTNESS_TASKS)
    if config.scale == "paper":
        return _run_robustness_paper(config, tasks)
    clean = problem_for(config, tasks=tasks)
    zoo_dir = clean.info["zoo_dir"]
    if config.steps is None and not config.smoke:
        config = dataclasses.replace(config, steps=MINI_ROBUSTNESS_STEPS)
    rows, records = [], {}
    for corruption in corruption_names(config):
        problem = corrupted_problem(clean, corruption, config.severity, config.seed, zoo_dir)
        ref = reference_rows(problem, cache_dir=cache_for(config))
        for method in ("zero_shot", "individual"):
            rows += [
                {"corruption": corruption, "method": method, "task": t, "accuracy": s} for t, s in ref[method].items()
            ]
        runs = run_methods(problem, config.methods, config, context={"experiment": "robustness"})
        for method, record in runs.items():
            records[f"{corruption}/{method}"] = record
            rows += [
                {"corruption": corruption, "method": method, "task": t, "accuracy": s} for t, s in record.scores.items()
            ]
    table = pd.DataFrame(rows)
    return with_average(table, ["corruption", "method"]), records


def _run_robustness_paper(config: RobustnessConfig, tasks: Sequence[str]):
    """Paper scale: Hub CLIP (or the task_vectors checkpoints) with each test set corrupted after resize/crop."""
    from ..data.corruptions import corruption_transform
    from ..data.paper import clip_image_transform, load_vision_test_set
    from ..models.clip_hub import build_clip_hub_problem
    from ..models.open_clip_ckpt import build_open_clip_problem

    rows, records = [], {}
    for corruption in corruption_names(config):
        corrupt_fn = None if corruption == "clean" else corruption_transform(corruption, config.severity, config.seed)
        if config.checkpoints is not None:  # test sets at the open_clip model's resolution, corrupted the same way
            problem = build_open_clip_problem(
                config.checkpoints, config.arch, tasks, device=config.device, seed=config.seed, corruption=corrupt_fn
            )
        else:
            transform = clip_image_transform(224, corruption=corrupt_fn)
            test_sets = {t: load_vision_test_set(t, transform=transform) for t in tasks}
            problem = build_clip_hub_problem(
                config.arch, tasks, device=config.device, seed=config.seed, test_sets=test_sets
            )
        problem = dataclasses.replace(problem, info={**problem.info, "variant": f"{corruption}-s{config.severity}"})
        runs = run_methods(problem, config.methods, config, context={"experiment": "robustness"})
        for method, record in runs.items():
            records[f"{corruption}/{method}"] = record
            rows += [
                {"corruption": corruption, "method": method, "task": t, "accuracy": s} for t, s in record.scores.items()
            ]
    table = pd.DataFrame(rows)
    return with_average(table, ["corruption", "method"]), records
