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


# --- Verdicts: one wording for every notebook -------------------------------------------------------------------


def verdict(holds: bool) -> str:
    """The one wording of a claim's outcome in every notebook: 'holds' or 'does NOT hold' (capitals: easy to spot)."""
    return "holds" if holds else "does NOT hold"


def claim_lines(checked: pd.DataFrame, value: str = "difference", context: Sequence[str] = ()) -> str:
    """A Markdown bullet per row of a claims table: '- <context>: <claim>: **<verdict>** (<value>, ...)'.

    ``checked`` has columns 'claim', 'holds' and ``value`` (signed, in accuracy points); when it also has
    'difference std' and 'seeds holding' (:func:`check_claims_over_seeds`) the spread over seeds follows the value.
    ``context`` names columns (e.g. 'split', 'corruption') written before the claim. No row: an explicit sentence.
    """
    if checked.empty:
        return "_no claim could be checked with the methods run_"
    lines = []
    for row in checked.to_dict("records"):
        detail = f"{row[value]:+.1f}"
        if "difference std" in row and "seeds holding" in row:
            detail += f" ± {row['difference std']:.1f} over seeds; holds in {row['seeds holding']} seeds"
        prefix = "".join(f"{row[c]}, " for c in context)
        lines.append(f"- {prefix}{row['claim']}: **{verdict(bool(row['holds']))}** ({detail})")
    return "\n".join(lines)


def best_method_lines(best: pd.DataFrame) -> str:
    """Markdown bullets for :func:`best_method_claim`'s table (which method is the best merge here)."""
    return "\n".join(
        f"- {row['claim']}: **{verdict(bool(row['holds']))}** (best merge here: {pretty(row['best method'])}, "
        f"{row['best avg']:.1f})"
        for row in best.to_dict("records")
    )


# --- Claims of single notebooks, computed from the tables their runners return ------------------------------------


def split_claims(summary: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Notebook 03: the claims ``names`` checked per split on the seen and on the unseen tasks' averages.

    ``summary`` has columns 'split', 'method', 'avg_seen', 'avg_unseen' (:func:`generalization_summary`).
    """
    rows = []
    for split, frame in summary.groupby("split", sort=False):
        for column in ("avg_seen", "avg_unseen"):
            checked = check_claims(dict(zip(frame["method"], frame[column])), claims(*names))
            checked.insert(0, "tasks", column.removeprefix("avg_"))
            checked.insert(0, "split", split)
            rows.append(checked)
    return pd.concat(rows, ignore_index=True) if rows else check_claims({}, [])


def per_condition_claims(table: pd.DataFrame, names: Sequence[str], condition: str) -> pd.DataFrame:
    """Notebook 04: the claims ``names`` checked on the task averages of each value of column ``condition``."""
    rows = []
    for value, frame in table[table["task"] == "average"].groupby(condition, sort=False):
        checked = check_claims(dict(zip(frame["method"], frame["accuracy"])), claims(*names))
        checked.insert(0, condition, value)
        rows.append(checked)
    return pd.concat(rows, ignore_index=True) if rows else check_claims({}, [])


def condition_count_lines(checked: pd.DataFrame) -> str:
    """Markdown bullets: under how many conditions (rows) each claim of ``checked`` holds."""
    counts = checked.groupby("claim", sort=False)["holds"].agg(["sum", "count"])
    return "\n".join(
        f"- {claim}: holds under **{held} of {total}** conditions" for claim, (held, total) in counts.iterrows()
    )


def curve_progress(curves: pd.DataFrame) -> pd.DataFrame:
    """Notebook 05: per method and stage, the average accuracy at the first and last logged step, the best, the gain."""
    rows = []
    for (method, stage), frame in curves[curves["task"] == "average"].groupby(["method", "stage"], sort=False):
        accuracy = frame.sort_values("step")["accuracy"]
        rows.append(
            {
                "method": method,
                "stage": stage,
                "first": accuracy.iloc[0],
                "last": accuracy.iloc[-1],
                "best": accuracy.max(),
                "gain": accuracy.iloc[-1] - accuracy.iloc[0],
            }
        )
    return pd.DataFrame(rows, columns=["method", "stage", "first", "last", "best", "gain"])


def meta_learning_claims(progress: pd.DataFrame) -> pd.DataFrame:
    """Notebook 05, the paper's Figure 3: accuracy at w′ rises along the mask meta-learning stage of each method."""
    meta = progress[progress["stage"] == "meta"]
    return pd.DataFrame(
        {
            "claim": [f"mask meta-learning of {pretty(m)} raises accuracy at w′" for m in meta["method"]],
            "difference": meta["gain"].to_numpy(),
            "holds": (meta["gain"] > 0).to_numpy(),
        },
        columns=["claim", "difference", "holds"],
    )


def text_zoo_gates(averages: Mapping[str, float], sweep: pd.DataFrame, margin: float = 5.0) -> pd.DataFrame:
    """Notebook 02 (mini-text zoo): the premises a merging benchmark needs, from the averages and the λ sweep.

    zero-shot < task arithmetic at its best λ by at least ``margin`` points < individual by at least ``margin``;
    lower entropy goes with higher accuracy between λ = 0 and the best λ (Spearman ρ < 0: the premise of entropy
    minimisation); the lowest-entropy λ lies within 0.1 of the best λ. ``sweep``: 'scaling', 'task', 'accuracy',
    'entropy' (its 'average' rows are used). Column 'value': the margin, ρ or λ difference each claim is judged on.
    """
    avg = sweep[sweep["task"] == "average"].reset_index(drop=True)
    best = avg.loc[avg["accuracy"].idxmax()]
    lowest = avg.loc[avg["entropy"].idxmin()]
    upto = avg[avg["scaling"] <= best["scaling"]]
    rho = upto["accuracy"].corr(upto["entropy"], method="spearman") if len(upto) > 2 else float("nan")
    above_zero_shot = best["accuracy"] - averages["zero_shot"]
    below_individual = averages["individual"] - best["accuracy"]
    rows = [
        (f"zero-shot < task arithmetic (best λ) by >= {margin:g}", above_zero_shot, above_zero_shot >= margin),
        (f"task arithmetic (best λ) < individual by >= {margin:g}", below_individual, below_individual >= margin),
        ("entropy falls with rising accuracy from λ = 0 to the best λ (Spearman < 0)", rho, bool(rho < 0)),
        (
            f"lowest-entropy λ ({lowest['scaling']:.1f}) is within 0.1 of the best λ ({best['scaling']:.1f})",
            lowest["scaling"] - best["scaling"],
            abs(lowest["scaling"] - best["scaling"]) <= 0.1 + 1e-9,
        ),
    ]
    return pd.DataFrame(rows, columns=["claim", "value", "holds"]).astype({"holds": bool})


#: The orderings of the paper's Table 3 checked per seed on the mini-text zoo (better, worse).
TEXT_ORDERINGS = (
    ("concrete_task_arithmetic", "task_arithmetic"),
    ("layer_wise_adamerging", "task_arithmetic"),
    ("layer_wise_concrete_adamerging", "layer_wise_adamerging"),
    ("layer_wise_concrete_adamerging", "concrete_task_arithmetic"),
    ("ties_merging", "task_arithmetic"),
    ("task_arithmetic", "weight_averaging"),
)


def ordering_claims(runs: pd.DataFrame, pairs: Sequence[tuple[str, str]] = TEXT_ORDERINGS) -> pd.DataFrame:
    """Notebook 02: 'better > worse' on each seed's average; holds only when it holds in every seed ('value': mean
    difference).

    A method with one run (data-free merges) is compared with every seed of the other.
    """
    per_seed = runs[runs["task"] == "average"].pivot_table(index="seed", columns="method", values="accuracy")
    rows = []
    for better, worse in pairs:
        if better not in per_seed or worse not in per_seed:
            continue
        pair = per_seed[[better, worse]]
        filled = pair.fillna(pair.iloc[0])  # a data-free method: its one (seed-independent) run
        diff = (filled[better] - filled[worse])[pair.notna().any(axis=1)]
        rows.append(
            {
                "claim": f"{pretty(better)} > {pretty(worse)} (holds in {int((diff > 0).sum())}/{len(diff)} seeds)",
                "value": float(diff.mean()),
                "holds": bool((diff > 0).all()),
            }
        )
    return pd.DataFrame(rows, columns=["claim", "value", "holds"])


def ablation_claims(tables: Mapping[str, pd.DataFrame], paper_temperature: float = 0.5) -> pd.DataFrame:
    """Notebook 07: the paper's temperature (``paper_temperature`` is the best), and CTA > TA at each λ_TA and task count.

    ``tables`` are :func:`run_ablations`' tables ('temperature', 'scaling', 'num_tasks'; average rows used).
    """
    rows = []
    temp = tables["temperature"]
    temp = temp[temp["task"] == "average"].reset_index(drop=True) if not temp.empty else temp
    if not temp.empty:
        best = temp.loc[temp["accuracy"].idxmax()]
        at_paper = temp.loc[temp["temperature"] == paper_temperature, "accuracy"]
        rows.append(
            {
                "claim": f"temperature λ = {paper_temperature:g} is the best (best here: λ = {best['temperature']:g}, "
                f"{best['accuracy']:.1f}); value: λ = {paper_temperature:g} minus the best",
                "difference": float(at_paper.iloc[0] - best["accuracy"]) if len(at_paper) else float("nan"),
                "holds": bool(best["temperature"] == paper_temperature),
            }
        )
    for column, label in (("scaling", "λ_TA = {:g}"), ("num_tasks", "{:g} tasks")):
        frame = tables[column]
        if frame.empty:
            continue
        frame = frame[frame["task"] == "average"]
        for key in sorted(set(frame.loc[frame["method"] == "concrete_task_arithmetic", column])):
            pair = frame[frame[column] == key].set_index("method")["accuracy"]
            if {"task_arithmetic", "concrete_task_arithmetic"} <= set(pair.index):
                d = float(pair["concrete_task_arithmetic"] - pair["task_arithmetic"])
                rows.append({"claim": f"{label.format(key)}: Concrete TA beats TA", "difference": d, "holds": d > 0})
    return pd.DataFrame(rows, columns=["claim", "difference", "holds"])
