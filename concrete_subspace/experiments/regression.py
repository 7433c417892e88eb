"""A small table recomputed from scratch at smoke size, compared with committed expectations (tests/expected/)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from ..evaluation import average, evaluate
from ..problem import MergeProblem
from ..registry import get_method, run_method
from .params import method_params

REGRESSION_METHODS = (
    "task_arithmetic",
    "ties_merging",
    "concrete_task_arithmetic",
    "layer_wise_adamerging",
    "layer_wise_concrete_adamerging",
)


def regression_table(problem: MergeProblem, methods: Sequence[str] = REGRESSION_METHODS) -> pd.DataFrame:
    """A small table recomputed from scratch (never from the run cache), to compare with committed expectations.

    Rows (method, task, quantity, value): accuracy per task and average of the zero-shot, individual and each
    method's model at smoke size (:func:`method_params` with ``smoke=True``), plus each method's merged-weight
    L2 norm and, for test-time methods, the final step's summed entropy: continuous values that move with any
    numeric drift, where accuracy on a small test set moves in whole images.
    """
    rows = []

    def add(method: str, scores: Mapping[str, float]) -> None:
        rows.extend({"method": method, "task": t, "quantity": "accuracy", "value": float(s)} for t, s in scores.items())
        rows.append({"method": method, "task": "average", "quantity": "accuracy", "value": float(average(scores))})

    add("zero_shot", evaluate(problem))
    individual = {}
    for task in problem.task_names:
        state = problem.load_finetuned(task)
        individual.update(evaluate(problem, {k: state[k] for k in problem.pretrained}, tasks=[task]))
    add("individual", individual)
    for method in methods:
        result = run_method(
            method, problem, **method_params(method, smoke=True, overrides=_regression_overrides(method))
        )
        add(method, evaluate(problem, result.state))
        norm = torch.sqrt(sum(v.double().pow(2).sum() for v in result.state.values()))
        rows.append({"method": method, "task": "all", "quantity": "weight_norm", "value": float(norm)})
        losses = [row["loss"] for row in result.history if "loss" in row]
        if losses:
            rows.append({"method": method, "task": "all", "quantity": "final_loss", "value": float(losses[-1])})
    return pd.DataFrame(rows, columns=["method", "task", "quantity", "value"])


def _regression_overrides(method: str) -> dict[str, Any]:
    """No progress bar and no accuracy curve (the final state is scored once) for the regression runs."""
    defaults = get_method(method).defaults
    return {k: v for k, v in (("progress", False), ("eval_every", 0)) if k in defaults}


def compare_regression(
    actual: pd.DataFrame, expected: pd.DataFrame, tolerances: Mapping[str, tuple[float, float]]
) -> list[str]:
    """Rows of ``actual`` outside (absolute, relative) ``tolerances[quantity]`` of ``expected``, or missing, as text."""
    keys = ["method", "task", "quantity"]
    merged = expected.merge(actual, on=keys, how="outer", suffixes=("_expected", "_actual"), indicator="presence")
    problems = []
    for row in merged.to_dict("records"):
        where = f"{row['method']}/{row['task']}/{row['quantity']}"
        if row["presence"] != "both":
            problems.append(
                f"{where}: {'missing now' if row['presence'] == 'left_only' else 'not in the expectations'}"
            )
            continue
        absolute, relative = tolerances[row["quantity"]]
        allowed = absolute + relative * abs(row["value_expected"])
        if not abs(row["value_actual"] - row["value_expected"]) <= allowed:
            problems.append(
                f"{where}: {row['value_actual']:.6g} vs expected {row['value_expected']:.6g} (allowed ±{allowed:.3g})"
            )
    return problems
