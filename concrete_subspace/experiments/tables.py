"""Tidy tables (one row per method x task) and their wide and Markdown forms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..evaluation import average
from ..registry import METHODS


def tidy_scores(method: str, scores: Mapping[str, float], **columns: Any) -> pd.DataFrame:
    """Long rows (method, task, accuracy, **columns) for one method, including the task 'average'."""
    rows = [{"method": method, "task": t, "accuracy": float(s), **columns} for t, s in scores.items()]
    rows.append({"method": method, "task": "average", "accuracy": float(average(scores)), **columns})
    return pd.DataFrame(rows)


def with_average(table: pd.DataFrame, by: str | Sequence[str], values: Sequence[str] = ("accuracy",)) -> pd.DataFrame:
    """``table`` with one row of task 'average' per group of ``by`` appended (the mean of ``values`` over its rows)."""
    keys = [by] if isinstance(by, str) else list(by)
    averages = table.groupby(keys, sort=False)[list(values)].mean().reset_index().assign(task="average")
    return pd.concat([table, averages], ignore_index=True)


def wide(
    table: pd.DataFrame, index: str | list[str] = "method", columns: str = "task", values: str = "accuracy"
) -> pd.DataFrame:
    """Pivot a tidy table to methods x tasks (task order and row order as first seen; 'average' last)."""
    index_cols = [index] if isinstance(index, str) else list(index)
    order = list(dict.fromkeys(table[columns]))
    if "average" in order:
        order = [c for c in order if c != "average"] + ["average"]
    rows = list(dict.fromkeys(map(tuple, table[index_cols].itertuples(index=False))))
    out = table.pivot_table(index=index_cols, columns=columns, values=values, aggfunc="first")
    out = out.reindex(
        pd.MultiIndex.from_tuples(rows, names=index_cols) if len(index_cols) > 1 else [r[0] for r in rows]
    )
    out.columns.name = None
    return out[order]


def to_markdown(frame: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """A GitHub Markdown table (no tabulate dependency); index included when it is named."""
    df = frame.reset_index() if any(n is not None for n in frame.index.names) else frame

    def cell(v):
        if isinstance(v, float):
            return "" if pd.isna(v) else format(v, floatfmt)
        if isinstance(v, bool):
            return "yes" if v else "no"
        return str(v)

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = (
        "|"
        + "|".join(
            "---:" if pd.api.types.is_numeric_dtype(df[c]) and df[c].dtype != bool else "---" for c in df.columns
        )
        + "|"
    )
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def pretty(method: str) -> str:
    """The registry's pretty name for a method ('Zero-shot' / 'Individual' for the reference rows)."""
    special = {"zero_shot": "Zero-shot (pre-trained)", "individual": "Individual (fine-tuned)"}
    return special.get(method, METHODS[method].pretty_name if method in METHODS else method)


def runtime_table(records: Mapping[str, Any]) -> pd.DataFrame:
    """One row per run record: its name, wall seconds and whether it came from the cache (saved as runtime.csv)."""
    rows = [{"method": name, "seconds": r.seconds, "cached": r.cached} for name, r in records.items()]
    return pd.DataFrame(rows, columns=["method", "seconds", "cached"])
