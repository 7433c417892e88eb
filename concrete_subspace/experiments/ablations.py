"""Notebook 07: temperature, steps, λ_TA, evaluation mask and number of tasks, around the default Concrete TA run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..problem import MergeProblem
from .cache import RunRecord, cache_for, cached_table, resolved_params, run_cached
from .configs import AblationConfig
from .mask_analysis import eval_mask_table
from .params import method_params
from .problems import problem_for, problem_identity, restrict
from .runners import curves_table
from .tables import tidy_scores


def run_ablations(config: AblationConfig) -> tuple[dict[str, pd.DataFrame], dict[str, RunRecord]]:
    """Temperature, steps, λ_TA, evaluation mask and number of tasks, all for Concrete TA (TA beside it)."""
    problem = problem_for(config)
    cache = cache_for(config)
    base = method_params(
        "concrete_task_arithmetic",
        scale=config.scale,
        steps=config.steps,
        smoke=config.smoke,
        precision=config.precision,
        seed=config.run_seed,
    )
    records: dict[str, RunRecord] = {}
    tables: dict[str, pd.DataFrame] = {}

    default = resolved_params("concrete_task_arithmetic", base)

    def cta(overrides: Mapping[str, Any], target: MergeProblem = problem) -> RunRecord:
        """Concrete TA with ``overrides``; a sweep point (not the default run) is scored once, with no curve."""
        params = {**base, **overrides}
        if target is not problem or resolved_params("concrete_task_arithmetic", params) != default:
            params["eval_every"] = 0  # only the default run's curve is drawn (the steps table)
        return run_cached(target, "concrete_task_arithmetic", params, cache_dir=cache)

    frames = []
    for temperature in config.temperatures or ():
        record = records[f"temperature={temperature}"] = cta({"temperature": float(temperature)})
        frames.append(tidy_scores("concrete_task_arithmetic", record.scores, temperature=float(temperature)))
    tables["temperature"] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    default_run = records.get(f"temperature={base.get('temperature', 0.5)}") or cta({})
    records["default"] = default_run
    steps = curves_table({"concrete_task_arithmetic": default_run})
    tables["steps"] = steps

    frames = []
    for scaling in config.ta_scalings or ():
        record = run_cached(problem, "task_arithmetic", {"scaling": float(scaling)}, cache_dir=cache, verbose=False)
        frames.append(tidy_scores("task_arithmetic", record.scores, scaling=float(scaling)))
    for scaling in config.scalings or ():
        record = records[f"scaling={scaling}"] = cta({"scaling": float(scaling)})
        frames.append(tidy_scores("concrete_task_arithmetic", record.scores, scaling=float(scaling)))
    tables["scaling"] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    kinds = tuple(config.eval_masks or ())
    tables["eval_mask"] = cached_table(
        cache,
        "eval_mask",
        {**problem_identity(problem), "run": default_run.key, "kinds": kinds},
        lambda: eval_mask_table(problem, default_run, kinds),
    )

    frames = []
    for count in config.task_counts or ():
        count = int(count)
        if not 1 <= count <= len(problem.task_names):
            raise ValueError(f"task_counts: {count} is outside 1..{len(problem.task_names)}")
        subset = restrict(problem, problem.task_names[:count])
        ta = run_cached(
            subset,
            "task_arithmetic",
            method_params("task_arithmetic", scale=config.scale),
            cache_dir=cache,
            verbose=False,
        )
        frames.append(tidy_scores("task_arithmetic", ta.scores, num_tasks=count))
        record = records[f"num_tasks={count}"] = default_run if count == len(problem.task_names) else cta({}, subset)
        frames.append(tidy_scores("concrete_task_arithmetic", record.scores, num_tasks=count))
    tables["num_tasks"] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return tables, records
