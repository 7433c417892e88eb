"""Qualitative claims of the paper, checked on our numbers; looked up by name (:data:`CLAIMS`, :func:`claims`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .tables import pretty


@dataclass(frozen=True)
class Claim:
    """A qualitative claim of the paper, checked on our numbers: 'a' beats 'b' on average accuracy."""

    text: str
    better: str
    worse: str


#: The paper's claims on the multi-task tables, by name (notebooks pick them with :func:`claims`).
CLAIMS: dict[str, Claim] = {
    "merging_interferes": Claim(
        "Merging interferes: Task Arithmetic is below the individual models", "individual", "task_arithmetic"
    ),
    "concrete_ta_beats_ta": Claim("Concrete TA beats Task Arithmetic", "concrete_task_arithmetic", "task_arithmetic"),
    "task_wise_concrete_am_beats_am": Claim(
        "Task-wise Concrete AdaMerging beats task-wise AdaMerging",
        "task_wise_concrete_adamerging",
        "task_wise_adamerging",
    ),
    "layer_wise_concrete_am_beats_am": Claim(
        "Layer-wise Concrete AdaMerging beats layer-wise AdaMerging",
        "layer_wise_concrete_adamerging",
        "layer_wise_adamerging",
    ),
    "ties_beats_ta": Claim("TIES-Merging beats Task Arithmetic", "ties_merging", "task_arithmetic"),
    "layer_wise_am_beats_task_wise": Claim(
        "Layer-wise AdaMerging beats task-wise AdaMerging", "layer_wise_adamerging", "task_wise_adamerging"
    ),
    "ta_beats_zero_shot": Claim("Task Arithmetic beats the zero-shot model", "task_arithmetic", "zero_shot"),
}


def claims(*names: str) -> list[Claim]:
    """The claims called ``names`` (keys of :data:`CLAIMS`); an unknown name is an error listing the valid ones."""
    unknown = [n for n in names if n not in CLAIMS]
    if unknown:
        raise KeyError(f"unknown claim(s) {unknown}; valid: {list(CLAIMS)}")
    return [CLAIMS[n] for n in names]


def check_claims(averages: Mapping[str, float], claims: Sequence[Claim], margin: float = 0.0) -> pd.DataFrame:
    """For each claim whose methods were run: both averages, their difference and whether the claim holds."""
    rows = []
    for claim in claims:
        if claim.better not in averages or claim.worse not in averages:
            continue
        a, b = averages[claim.better], averages[claim.worse]
        rows.append(
            {
                "claim": claim.text,
                claim_col("better"): a,
                claim_col("worse"): b,
                "difference": a - b,
                "holds": bool(a - b > margin),
            }
        )
    return pd.DataFrame(rows, columns=["claim", claim_col("better"), claim_col("worse"), "difference", "holds"])


def claim_col(which: str) -> str:
    return {"better": "avg (claimed better)", "worse": "avg (claimed worse)"}[which]


def best_method_claim(averages: Mapping[str, float], expected: str = "layer_wise_concrete_adamerging") -> pd.DataFrame:
    """Is ``expected`` the best merge (highest average among merged models, i.e. excluding individual/zero-shot)?"""
    merged = {m: v for m, v in averages.items() if m not in ("individual", "zero_shot")}
    if expected not in merged:
        return pd.DataFrame(columns=["claim", "best method", "best avg", "holds"])
    best = max(merged, key=merged.get)
    return pd.DataFrame(
        [
            {
                "claim": f"{pretty(expected)} is the best merging method",
                "best method": best,
                "best avg": merged[best],
                "holds": best == expected,
            }
        ]
    )


def averages_of(table: pd.DataFrame, by: str = "method") -> dict[str, float]:
    """Average accuracy per method from a tidy table (its 'average' rows)."""
    rows = table[table["task"] == "average"]
    return dict(zip(rows[by], rows["accuracy"]))


def check_claims_over_seeds(runs: pd.DataFrame, claims: Sequence[Claim]) -> pd.DataFrame:
    """Each claim on per-seed averages (tidy rows with a 'seed' column): mean difference, its spread, seeds holding.

    A method with one run (zero-shot, individual, data-free merges) is compared with every seed of the other. The
    claim holds when the mean difference is positive; "seeds holding" says in how many seeds it did.
    """
    avg = runs[runs["task"] == "average"]
    per_seed = {m: dict(zip(g["seed"], g["accuracy"])) for m, g in avg.groupby("method", sort=False)}
    rows = []
    for claim in claims:
        if claim.better not in per_seed or claim.worse not in per_seed:
            continue
        a, b = per_seed[claim.better], per_seed[claim.worse]
        seeds = sorted(set(a) | set(b)) if len(a) > 1 and len(b) > 1 else sorted(a if len(a) > 1 else b)
        diffs = np.array([a.get(s, next(iter(a.values()))) - b.get(s, next(iter(b.values()))) for s in seeds])
        rows.append(
            {
                "claim": claim.text,
                claim_col("better"): float(np.mean([a[s] for s in a])),
                claim_col("worse"): float(np.mean([b[s] for s in b])),
                "difference": float(diffs.mean()),
                "difference std": float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
                "seeds holding": f"{int((diffs > 0).sum())}/{len(diffs)}",
                "holds": bool(diffs.mean() > 0),
            }
        )
    columns = [
        "claim",
        claim_col("better"),
        claim_col("worse"),
        "difference",
        "difference std",
        "seeds holding",
        "holds",
    ]
    return pd.DataFrame(rows, columns=columns)


def seed_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean, std, min and max over seeds of the task-average accuracy, and the number of seeds."""
    avg = runs[runs["task"] == "average"]
    out = avg.groupby("method", sort=False)["accuracy"].agg(["mean", "std", "min", "max", "count"]).reset_index()
    return out.rename(columns={"count": "seeds"}).fillna({"std": 0.0})
