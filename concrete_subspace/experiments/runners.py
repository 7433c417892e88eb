"""The runners of notebooks 01, 03 and 05: every method on all tasks, on six seen tasks, and along the steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import pandas as pd

from ..problem import MergeProblem
from ..registry import METHODS, get_method
from .cache import RunRecord, cache_for, reference_rows, run_cached
from .configs import BaseConfig, CurvesConfig, GeneralizationConfig, MultitaskConfig
from .params import STEP_KEYS, method_params
from .problems import problem_for, restrict
from .tables import tidy_scores


def run_methods(
    problem: MergeProblem,
    methods: Sequence[str],
    config: BaseConfig,
    *,
    eval_problem: MergeProblem | None = None,
    context: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    curves: bool = True,
) -> dict[str, RunRecord]:
    """Run (or reuse) each method with :func:`method_params` for the config's scale/steps/smoke/precision/run seed.

    ``curves=False``: test-time runs log no accuracy along the way (for tables that show only final scores).
    """
    records = {}
    for name in methods:
        params = method_params(
            name,
            scale=config.scale,
            steps=config.steps,
            smoke=config.smoke,
            overrides=(overrides or {}).get(name),
            precision=config.precision,
            seed=config.run_seed,
            curves=curves,
        )
        records[name] = run_cached(
            problem, name, params, cache_dir=cache_for(config), eval_problem=eval_problem, context=context
        )
    return records


def run_multitask_seeds(config: MultitaskConfig) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Every method once per run seed of ``config.seeds`` (None: ``config.run_seed``; data-free methods once): tidy
    rows method, task, seed (the run seed), accuracy.

    The models are those of ``config.zoo_seed`` (at mini scale its zoo); the run seed orders the test-time batches
    and draws the masks. Records are keyed by method name for the first seed and ``name@seed<s>`` for the others.
    Only the first seed's runs keep their accuracy curves (notebooks 05-07 reuse them); the others are scored once.
    """
    seeds = tuple(config.seeds or (config.run_seed,))
    per_seed = {seed: replace(config, run_seed=seed) for seed in seeds}
    base = problem_for(per_seed[seeds[0]])
    methods = config.methods or tuple(METHODS)
    rows = reference_rows(base, cache_dir=cache_for(config))
    frames = [
        tidy_scores("zero_shot", rows["zero_shot"], seed=seeds[0]),
        tidy_scores("individual", rows["individual"], seed=seeds[0]),
    ]
    records: dict[str, RunRecord] = {}
    test_time = [m for m in methods if any(k in get_method(m).defaults for k in STEP_KEYS)]
    for seed in seeds:
        if seed != seeds[0] and not test_time:
            break  # data-free methods do not depend on the seed: nothing more to run (nor to load)
        problem = base if seed == seeds[0] else problem_for(per_seed[seed])
        for name in methods if seed == seeds[0] else test_time:
            first = seed == seeds[0]
            record = run_methods(problem, (name,), per_seed[seed], curves=first)[name]
            records[name if first else f"{name}@seed{seed}"] = record
            frames.append(tidy_scores(name, record.scores, seed=seed))
    return pd.concat(frames, ignore_index=True), records


def run_multitask(config: MultitaskConfig) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Table 1/2: zero-shot, individual and every method on all tasks, mean over ``config.seeds``.

    Tidy rows: method, task, accuracy; the per-seed rows come from :func:`run_multitask_seeds`.
    """
    runs, records = run_multitask_seeds(config)
    return mean_over_seeds(runs), records


def mean_over_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-seed tidy rows -> one row per method and task: the mean accuracy over seeds."""
    return runs.groupby(["method", "task"], sort=False)["accuracy"].mean().reset_index()


# Paper-scale task sets and their mini-zoo analogues (same roles: which tasks are held out / corrupted).
PAPER_GENERALIZATION_SPLITS = {"exp1": ("mnist", "eurosat"), "exp2": ("resisc45", "svhn")}

MINI_GENERALIZATION_SPLITS = {"exp1": ("mnist", "landcover"), "exp2": ("textures", "digits")}


def generalization_splits(config: BaseConfig) -> dict[str, tuple[str, ...]]:
    """Unseen tasks of each split (the paper's two splits, or their mini-zoo analogues)."""
    return dict(PAPER_GENERALIZATION_SPLITS if config.scale == "paper" else MINI_GENERALIZATION_SPLITS)


def run_generalization(config: GeneralizationConfig) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Table: merge the 6 seen tasks, score on seen and unseen tasks. Rows: split, method, task, seen, accuracy."""
    full = problem_for(config)
    frames, records = [], {}
    for split, unseen in generalization_splits(config).items():
        missing = [t for t in unseen if t not in full.task_names]
        if missing:
            raise KeyError(f"generalization split {split}: unseen task(s) {missing} are not among the loaded tasks")
        seen = tuple(t for t in full.task_names if t not in unseen)
        problem = restrict(full, seen)
        runs = run_methods(
            problem, config.methods, config, eval_problem=full, context={"experiment": "generalization"}, curves=False
        )
        for method, record in runs.items():
            records[f"{split}/{method}"] = record
            for task, score in record.scores.items():
                frames.append({"split": split, "method": method, "task": task, "seen": task in seen, "accuracy": score})
    table = pd.DataFrame(frames)
    return table, records


def generalization_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Average over seen and over unseen tasks per split and method (the paper's table layout)."""
    out = table.groupby(["split", "method", "seen"], sort=False)["accuracy"].mean().unstack("seen")
    out = out.rename(columns={True: "avg_seen", False: "avg_unseen"})[["avg_seen", "avg_unseen"]].reset_index()
    return out


def curves_table(records: Mapping[str, RunRecord]) -> pd.DataFrame:
    """Accuracy over steps from the runs' histories: method, stage (tta|meta), step, task, accuracy."""
    rows = []
    for method, record in records.items():
        for row in record.history:
            if "avg_accuracy" not in row:
                continue
            stage = row.get("stage", "tta")
            stage = "concrete" if stage == "concrete_task_arithmetic" else stage
            rows.append(
                {
                    "method": method,
                    "stage": stage,
                    "step": row["step"],
                    "task": "average",
                    "accuracy": row["avg_accuracy"],
                }
            )
            rows += [
                {"method": method, "stage": stage, "step": row["step"], "task": k.removeprefix("acc/"), "accuracy": v}
                for k, v in row.items()
                if k.startswith("acc/")
            ]
    return pd.DataFrame(rows, columns=["method", "stage", "step", "task", "accuracy"])


#: Meta-stage history columns of Concrete AdaMerging, renamed for :func:`meta_stage_table`.
META_COLUMNS = {
    "avg_accuracy": "accuracy_at_adapted",
    "mask_only_accuracy": "accuracy_at_init",
    "coefficient_share_at_bounds": "coefficient_share_at_bounds",
    "mean_abs_logit": "mean_abs_logit",
    "large_logit_share": "large_logit_share",
}


def meta_stage_table(records: Mapping[str, RunRecord]) -> pd.DataFrame:
    """Concrete AdaMerging's meta stage at the evaluation steps: method, step, and per step

    ``accuracy_at_adapted``: the model the mask gradient is taken at (w' after the one inner step, evaluation mask);
    ``accuracy_at_init``: the same mask at the initial coefficients (the mask's own effect); where the coefficients
    are (``coefficient_share_at_bounds``: share of w' at or beyond 0 or 1) and what the mask learned (|logit|).
    """
    rows = []
    for method, record in records.items():
        for row in record.history:
            if row.get("stage") != "meta" or "avg_accuracy" not in row:
                continue
            rows.append(
                {"method": method, "step": row["step"], **{new: row.get(old) for old, new in META_COLUMNS.items()}}
            )
    return pd.DataFrame(rows, columns=["method", "step", *META_COLUMNS.values()])


def run_mask_effect(config: BaseConfig, methods: Sequence[str]) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """The mask-only effect of ``methods`` over the seeds of notebook 01 (its runs, same keys, reused from the cache).

    Returns :func:`mask_analysis.mask_effect_table` (one row per run and seed) and the records (incl. task
    arithmetic, the baseline at λ).
    """
    from .mask_analysis import mask_effect_table

    # every field the two configs share (scale, zoo_seed, smoke, arch, ...); the run seeds are notebook 01's `seeds`
    shared = {f.name: getattr(config, f.name) for f in fields(MultitaskConfig) if f.name not in ("methods", "seeds")}
    shared = {k: v for k, v in shared.items() if k in {f.name for f in fields(config)}}
    multitask = MultitaskConfig(**shared, methods=("task_arithmetic", *methods))
    _, records = run_multitask_seeds(multitask)
    return mask_effect_table(records), records


def run_curves(config: CurvesConfig) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Accuracy curves of the test-time methods (reusing the table's cached runs: same parameters, same key)."""
    problem = problem_for(config)
    records = run_methods(problem, config.methods, config)
    return curves_table(records), records


#: The paper's mask budget for Concrete TA (Adam lr 1e-3 for 2,000 steps); the mini default is shorter at a larger lr.
PAPER_CTA_BUDGET = {"lr": 1e-3, "steps": 2000}
PAPER_BUDGET_RUN = "concrete_task_arithmetic@paper_budget"


def run_paper_budget(config: CurvesConfig) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Concrete TA at the mini default (notebook 01's run, reused) and at the paper's budget, ``run_seed``, with curves.

    Smoke runs keep the smoke step count for both (only the wiring is checked)."""
    problem = problem_for(config)
    records = run_methods(problem, ("concrete_task_arithmetic",), config)
    paper = method_params(
        "concrete_task_arithmetic",
        scale=config.scale,
        steps=config.steps if config.smoke or config.steps else PAPER_CTA_BUDGET["steps"],
        smoke=config.smoke,
        overrides={"lr": PAPER_CTA_BUDGET["lr"]},
        precision=config.precision,
        seed=config.run_seed,
    )
    records[PAPER_BUDGET_RUN] = run_cached(problem, "concrete_task_arithmetic", paper, cache_dir=cache_for(config))
    return curves_table(records), records
