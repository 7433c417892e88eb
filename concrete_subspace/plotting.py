"""Figure functions for the notebooks: matplotlib + seaborn, one style, each saved as PNG and PDF.

Every function takes tidy tables from :mod:`concrete_subspace.experiments`, returns the ``Figure`` and, when
given ``path`` (a file stem without suffix), saves ``<path>.png`` and ``<path>.pdf``. Published numbers, where
drawn, are always labelled "published" and hatched, never mixed into our bars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .experiments import pretty

PALETTE = "colorblind"
DPI = 150
#: Fixed colours per method family so every figure agrees.
METHOD_ORDER = (
    "zero_shot",
    "weight_averaging",
    "task_arithmetic",
    "ties_merging",
    "fisher_merging",
    "regmean",
    "task_wise_adamerging",
    "task_wise_adamerging_pp",
    "layer_wise_adamerging",
    "layer_wise_adamerging_pp",
    "concrete_task_arithmetic",
    "task_wise_concrete_adamerging",
    "layer_wise_concrete_adamerging",
    "individual",
)


def set_style() -> None:
    """The one style of every figure (seaborn whitegrid, paper context, colour-blind palette, no top/right spines)."""
    sns.set_theme(style="whitegrid", context="paper", palette=PALETTE, font_scale=1.1)
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": DPI,
            "savefig.bbox": "tight",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "pdf.fonttype": 42,
            "figure.autolayout": False,
            "svg.hashsalt": "concrete_subspace",
            "pdf.compression": 6,
        }
    )


def method_colors() -> dict[str, tuple]:
    """One colour per method, stable across figures."""
    colors = sns.color_palette(PALETTE, n_colors=10) + sns.color_palette("dark", n_colors=10)
    return {m: colors[i % len(colors)] for i, m in enumerate(METHOD_ORDER)}


def save(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Save ``fig`` as <path>.png and <path>.pdf (parent created); reproducible PDF metadata; returns the figure."""
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"))
    fig.savefig(path.with_suffix(".pdf"), metadata={"CreationDate": None, "ModDate": None})
    return fig


def _ordered(methods: Sequence[str]) -> list[str]:
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(dict.fromkeys(methods), key=lambda m: rank.get(m, len(rank)))


# ================================================================================================ figures
def temperature_figure(temperatures: Sequence[float] = (0.2, 0.5, 1.0, 2.0), path=None) -> plt.Figure:
    """The paper's temperature figure: σ(x/λ) over x for several λ (lower λ, closer to a hard step)."""
    set_style()
    x = np.linspace(-6, 6, 400)
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    for lam in temperatures:
        ax.plot(x, 1 / (1 + np.exp(-x / lam)), label=f"λ = {lam:g}")
    ax.set(xlabel="x", ylabel="σ(x / λ)", title="Concrete relaxation: temperature λ")
    ax.legend(frameon=False)
    return save(fig, path)


def average_bars(table: pd.DataFrame, published: pd.DataFrame | None = None, title: str = "", path=None) -> plt.Figure:
    """Average accuracy per method (horizontal bars); published averages, if given, as hatched bars beside ours."""
    set_style()
    avg = table[table["task"] == "average"].set_index("method")["accuracy"]
    methods = _ordered(avg.index)
    colors = method_colors()
    fig, ax = plt.subplots(figsize=(6.4, 0.38 * len(methods) + 1.2))
    y = np.arange(len(methods))
    height = 0.4 if published is not None else 0.7
    ax.barh(y, [avg[m] for m in methods], height=height, color=[colors.get(m) for m in methods], label="ours")
    for yi, m in zip(y, methods):
        ax.text(avg[m] + 0.5, yi, f"{avg[m]:.1f}", va="center", fontsize=8)
    if published is not None:
        pub = published[published["task"] == "average"].set_index("method")["accuracy"]
        vals = [pub.get(m, np.nan) for m in methods]
        ax.barh(y + height, vals, height=height, color="white", edgecolor="grey", hatch="///", label="published")
    ax.set_yticks(y + (height / 2 if published is not None else 0), [pretty(m) for m in methods])
    ax.invert_yaxis()
    ax.set(xlabel="average accuracy (%)", title=title, xlim=(0, 105))
    if published is not None:
        ax.legend(frameon=False, loc="lower right")
    return save(fig, path)


def task_heatmap(table: pd.DataFrame, title: str = "", path=None, value: str = "accuracy") -> plt.Figure:
    """Methods x tasks heatmap of accuracy (annotated), average column last."""
    set_style()
    from .experiments import wide

    frame = wide(table, values=value)
    frame = frame.reindex(_ordered(frame.index))
    frame.index = [pretty(m) for m in frame.index]
    fig, ax = plt.subplots(figsize=(0.85 * frame.shape[1] + 3.2, 0.42 * frame.shape[0] + 1.4))
    sns.heatmap(
        frame,
        annot=True,
        fmt=".1f",
        cmap="viridis",
        vmin=0,
        vmax=100,
        cbar_kws={"label": "accuracy (%)"},
        ax=ax,
        annot_kws={"fontsize": 7},
    )
    ax.set(title=title, xlabel="", ylabel="")
    ax.tick_params(axis="x", rotation=35)
    return save(fig, path)


def generalization_bars(summary: pd.DataFrame, path=None, title: str = "") -> plt.Figure:
    """Seen / unseen average accuracy per method, one panel per split."""
    set_style()
    long = summary.melt(
        id_vars=["split", "method"], value_vars=["avg_seen", "avg_unseen"], var_name="tasks", value_name="accuracy"
    )
    long["tasks"] = long["tasks"].map({"avg_seen": "seen (merged)", "avg_unseen": "unseen"})
    long["method"] = long["method"].map(pretty)
    grid = sns.catplot(
        data=long, kind="bar", x="accuracy", y="method", hue="tasks", col="split", height=3.4, aspect=1.25, orient="h"
    )
    grid.set_axis_labels("average accuracy (%)", "")
    grid.figure.suptitle(title, y=1.03)
    return save(grid.figure, path)


def robustness_figure(table: pd.DataFrame, path=None, title: str = "") -> plt.Figure:
    """Average accuracy per corruption (x) and method (hue)."""
    set_style()
    avg = table[(table["task"] == "average") & (~table["method"].isin(["individual", "zero_shot"]))].copy()
    order = _ordered(avg["method"])
    colors = method_colors()
    fig, ax = plt.subplots(figsize=(8.0, 3.6))
    sns.barplot(
        data=avg,
        x="corruption",
        y="accuracy",
        hue="method",
        hue_order=order,
        palette={m: colors.get(m) for m in order},
        ax=ax,
    )
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles, [pretty(m) for m in labels], frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1)
    )
    ax.set(xlabel="", ylabel="average accuracy (%)", title=title)
    ax.tick_params(axis="x", rotation=25)
    return save(fig, path)


def budget_figure(curves: pd.DataFrame, labels: dict[str, str], path=None, title: str = "") -> plt.Figure:
    """Average accuracy over steps of a few runs of one method, each labelled (e.g. two mask budgets of Concrete TA)."""
    set_style()
    avg = curves[curves["task"] == "average"]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for run, label in labels.items():
        rows = avg[avg["method"] == run].sort_values("step")
        ax.plot(rows["step"], rows["accuracy"], marker="o", markersize=3, label=label)
    ax.set(xlabel="mask (Adam) steps", ylabel="average accuracy (%)", title=title)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def curves_figure(
    curves: pd.DataFrame, published: pd.DataFrame | None = None, path=None, title: str = ""
) -> plt.Figure:
    """Average accuracy over steps: panel 1 test-time adaptation / CTA steps, panel 2 Concrete AM meta-learning."""
    set_style()
    avg = curves[curves["task"] == "average"]
    colors = method_colors()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    panels = {
        "meta-learning (mask) steps": avg[avg["stage"] == "meta"],
        "TTA / Concrete TA steps": avg[avg["stage"] != "meta"],
    }
    for ax, (name, frame) in zip(axes, panels.items()):
        for method in _ordered(frame["method"]):
            rows = frame[frame["method"] == method].sort_values("step")
            stage = rows["stage"].iloc[0]
            label = pretty(method) + (" (mask)" if stage == "meta" else "")
            ax.plot(rows["step"], rows["accuracy"], marker="o", markersize=3, color=colors.get(method), label=label)
        ax.set(xlabel=name, ylabel="average accuracy (%)")
        if frame.empty:
            ax.text(0.5, 0.5, "no runs", ha="center", transform=ax.transAxes)
        else:
            ax.legend(frameon=False, fontsize=7)
    if published is not None and not published.empty:
        for curve, rows in published.groupby("curve", sort=False):
            ax = axes[0] if curve.endswith("_meta") else axes[1]
            ax.plot(rows["step"], rows["avg_accuracy"], linestyle=":", color="grey", linewidth=1)
        axes[1].plot([], [], linestyle=":", color="grey", label="published (ViT-B/32)")
        axes[1].legend(frameon=False, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def curves_per_task(curves: pd.DataFrame, method: str, stage: str, path=None) -> plt.Figure:
    """Per-task accuracy over the steps of one method's stage."""
    set_style()
    rows = curves[(curves["method"] == method) & (curves["stage"] == stage) & (curves["task"] != "average")]
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    sns.lineplot(data=rows, x="step", y="accuracy", hue="task", marker="o", markersize=3, ax=ax)
    ax.set(title=f"{pretty(method)}: {stage} steps", ylabel="accuracy (%)")
    ax.legend(frameon=False, fontsize=7, ncol=2)
    return save(fig, path)


def _per_tensor_panels(density: pd.DataFrame, panels: Sequence[tuple[str, str, float | None]], path=None) -> plt.Figure:
    """One panel per (column, y label, reference line) of a per-tensor table, tensors grouped by layer, per method."""
    set_style()
    colors = method_colors()
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.0, 2.7 * len(panels)), sharex=True)
    for method, rows in density.groupby("method", sort=False):
        for i, (ax, (column, _, _)) in enumerate(zip(axes, panels)):
            label = pretty(method) if i == 0 else None
            ax.plot(rows["index"], rows[column], marker=".", color=colors.get(method), label=label)
    first = density.drop_duplicates("index")
    starts = first.drop_duplicates("layer")
    for ax, (_, ylabel, reference) in zip(axes, panels):
        for idx in starts["index"]:
            ax.axvline(idx - 0.5, color="lightgrey", linewidth=0.6)
        if reference is not None:
            ax.axhline(reference, color="grey", linestyle=":", linewidth=0.8)
        ax.set(ylabel=ylabel)
    axes[-1].set(xlabel="merged tensor (grouped by layer)")
    shown, last = [], -10
    for idx, layer in zip(starts["index"], starts["layer"]):  # skip labels that would overlap their neighbour
        if idx - last >= 4:
            shown.append((idx, layer))
            last = idx
    axes[-1].set_xticks([i for i, _ in shown], [name for _, name in shown], rotation=30, fontsize=7)
    axes[0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def mask_density_figure(density: pd.DataFrame, path=None) -> plt.Figure:
    """Fraction of kept elements (σ(x) > 0.5) and mean keep probability per merged tensor, per method."""
    panels = [("density", "density (σ(x) > 0.5)", 0.5), ("mean_keep_probability", "mean σ(x)", 0.5)]
    return _per_tensor_panels(density, panels, path)


def logit_magnitude_figure(density: pd.DataFrame, path=None) -> plt.Figure:
    """Mean |logit| and the share of |logit| > 0.5 per merged tensor, per method: 0 for an untrained mask.

    Unlike the mean keep probability, moves up and down do not cancel here.
    """
    panels = [("mean_abs_logit", "mean |x|", None), ("large_logit_share", "share |x| > 0.5", None)]
    return _per_tensor_panels(density, panels, path)


def meta_stage_figure(meta: pd.DataFrame, path=None) -> plt.Figure:
    """Concrete AdaMerging's meta stage (:func:`experiments.meta_stage_table`): left, average accuracy at w' (the
    model the mask gradient is taken at; solid) and with the same mask at the initial coefficients (dashed); right,
    the share of w' at or beyond the bounds 0 / 1 (solid) and the mean |logit| (dotted, right axis)."""
    set_style()
    colors = method_colors()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.4))
    twin = right.twinx()
    for method, rows in meta.groupby("method", sort=False):
        rows = rows.sort_values("step")
        color = colors.get(method)
        left.plot(rows["step"], rows["accuracy_at_adapted"], marker="o", color=color, label=f"{pretty(method)}, at w'")
        left.plot(rows["step"], rows["accuracy_at_init"], marker="s", linestyle="--", color=color, label="at init w")
        later = rows[rows["step"] > 0]  # the step-0 row is scored before any inner step: no w' yet
        right.plot(later["step"], later["coefficient_share_at_bounds"], marker="o", color=color, label=pretty(method))
        twin.plot(later["step"], later["mean_abs_logit"], linestyle=":", color=color)
    left.set(xlabel="meta step", ylabel="average accuracy (%)", title="accuracy along the meta stage")
    right.set(xlabel="meta step", ylabel="share of w' at 0 or 1", ylim=(-0.02, 1.02), title="where w' is")
    twin.set_ylabel("mean |logit| (dotted)")
    twin.grid(False)
    left.legend(frameon=False, fontsize=7)
    right.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def keep_probability_histogram(probabilities: Mapping[str, np.ndarray], path=None) -> plt.Figure:
    """Histogram of the learned keep probabilities σ(x) of every mask element, per method."""
    set_style()
    colors = method_colors()
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for method, probs in probabilities.items():
        ax.hist(probs, bins=60, range=(0, 1), histtype="step", color=colors.get(method), label=pretty(method), log=True)
    ax.set(xlabel="keep probability σ(x)", ylabel="elements (log)")
    ax.legend(frameon=False, fontsize=8)
    return save(fig, path)


def grouped_bars(table: pd.DataFrame, hue: str, path=None, title: str = "", x: str = "task") -> plt.Figure:
    """Accuracy per ``x`` with one bar per ``hue`` value (e.g. masked vs plain individual models)."""
    set_style()
    fig, ax = plt.subplots(figsize=(8.0, 3.4))
    sns.barplot(data=table, x=x, y="accuracy", hue=hue, ax=ax)
    ax.set(xlabel="", ylabel="accuracy (%)", title=title)
    ax.legend(frameon=False, fontsize=8)
    ax.tick_params(axis="x", rotation=25)
    return save(fig, path)


def ablation_figure(tables: Mapping[str, pd.DataFrame], path=None) -> plt.Figure:
    """Five panels of average accuracy: temperature, steps, λ, evaluation mask, number of tasks."""
    set_style()
    colors = method_colors()
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.4))

    def avg(frame):
        return frame[frame["task"] == "average"] if not frame.empty else frame

    def line(ax, frame, x, method, **kw):
        rows = avg(frame)
        rows = rows[rows["method"] == method].sort_values(x) if not rows.empty else rows
        if not rows.empty:
            ax.plot(rows[x], rows["accuracy"], marker="o", color=colors.get(method), label=pretty(method), **kw)

    temperature = tables.get("temperature", pd.DataFrame())
    line(axes[0], temperature, "temperature", "concrete_task_arithmetic")
    axes[0].set(xscale="log", xlabel="temperature λ", ylabel="average accuracy (%)", title="temperature")
    if not temperature.empty:
        ticks = sorted(set(temperature["temperature"]))
        axes[0].set_xticks(ticks, [f"{t:g}" for t in ticks])
        axes[0].minorticks_off()
    steps = tables.get("steps", pd.DataFrame())
    line(axes[1], steps.rename(columns={}), "step", "concrete_task_arithmetic")
    axes[1].set(xlabel="Concrete TA steps", title="steps")
    for method in ("task_arithmetic", "concrete_task_arithmetic"):
        line(axes[2], tables.get("scaling", pd.DataFrame()), "scaling", method)
    axes[2].set(xlabel="λ_TA (scaling)", title="task-arithmetic coefficient")
    axes[2].legend(frameon=False, fontsize=7)
    eval_mask = avg(tables.get("eval_mask", pd.DataFrame()))
    if not eval_mask.empty:
        axes[3].bar(eval_mask["eval_mask"], eval_mask["accuracy"], color=colors["concrete_task_arithmetic"])
        lo = float(eval_mask["accuracy"].min())
        axes[3].set_ylim(max(0.0, lo - 10), None)
    axes[3].set(title="evaluation mask", xlabel="")
    for method in ("task_arithmetic", "concrete_task_arithmetic"):
        line(axes[4], tables.get("num_tasks", pd.DataFrame()), "num_tasks", method)
    axes[4].set(xlabel="number of merged tasks", title="number of tasks")
    axes[4].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def interference_figure(conflicts: pd.DataFrame, norms: pd.Series, path=None) -> plt.Figure:
    """Walkthrough: pairwise sign-conflict fraction between task vectors, and each task vector's norm."""
    set_style()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8), gridspec_kw={"width_ratios": [1.3, 1]})
    sns.heatmap(
        conflicts,
        annot=True,
        fmt=".2f",
        cmap="magma",
        vmin=0,
        vmax=0.6,
        ax=axes[0],
        annot_kws={"fontsize": 7},
        cbar_kws={"label": "fraction with opposite signs"},
    )
    axes[0].set(title="sign conflicts between task vectors")
    axes[1].barh(norms.index, norms.values, color=sns.color_palette(PALETTE)[0])
    axes[1].invert_yaxis()
    axes[1].set(xlabel="‖τ_i‖₂", title="task-vector magnitudes")
    fig.tight_layout()
    return save(fig, path)


def cta_run_figure(
    history: pd.DataFrame, ta_average: float, ta_scaling: float, cta_scaling: float, path=None
) -> plt.Figure:
    """Walkthrough: a CTA run's summed entropy (the loss) per step, and its logged average accuracy beside TA's.

    ``history`` is the run's history (columns 'step', 'loss' and, on the logged steps, 'avg_accuracy').
    """
    set_style()
    logged = history.dropna(subset=["avg_accuracy"]) if "avg_accuracy" in history else history.iloc[0:0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(history["step"], history["loss"], marker=".")
    axes[0].set(xlabel="CTA step", ylabel="summed entropy (loss)")
    axes[1].plot(logged["step"], logged.get("avg_accuracy", []), marker="o")
    axes[1].axhline(ta_average, color="grey", linestyle=":", label=f"Task Arithmetic (λ = {ta_scaling:g})")
    axes[1].set_title(f"CTA (λ = {cta_scaling:g})")
    axes[1].set(xlabel="CTA step", ylabel="average accuracy (%)")
    axes[1].legend(frameon=False)
    fig.tight_layout()
    return save(fig, path)


def seed_spread_and_lambda_figure(spread: pd.DataFrame, sweep: pd.DataFrame, title: str = "", path=None) -> plt.Figure:
    """Notebook 02 (mini): each method's average accuracy (mean ± std over seeds), and task arithmetic along λ.

    ``spread`` is :func:`experiments.seed_summary`'s table; ``sweep`` the λ sweep (columns 'scaling', 'task',
    'accuracy', 'entropy'); its 'average' rows give accuracy and the merged model's mean entropy (second axis).
    """
    set_style()
    fig, (ax_bar, ax_lam) = plt.subplots(1, 2, figsize=(11, 3.8))
    s = spread.set_index("method")
    ax_bar.barh([pretty(m) for m in s.index], s["mean"], xerr=s["std"], color="#4c72b0", capsize=3)
    ax_bar.invert_yaxis()
    ax_bar.set_xlabel("average accuracy (%), mean ± std over seeds")
    ax_bar.set_xlim(max(0, s["min"].min() - 10), min(100, s["max"].max() + 5))
    avg = sweep[sweep["task"] == "average"]
    ax_lam.plot(avg["scaling"], avg["accuracy"], "o-", color="#4c72b0", label="accuracy")
    ax_lam.set_xlabel("task arithmetic λ")
    ax_lam.set_ylabel("average accuracy (%)", color="#4c72b0")
    ax_ent = ax_lam.twinx()
    ax_ent.plot(avg["scaling"], avg["entropy"], "s--", color="#dd8452", label="entropy")
    ax_ent.set_ylabel("mean entropy (nats)", color="#dd8452")
    ax_lam.set_title("task arithmetic along λ (test inputs)")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)
