"""The notebooks' "What we see" paragraphs, written from each run's own tables (never typed by hand), and the
scale note every notebook opens with.

Every paragraph function takes the tables a runner returned and gives Markdown: what the figure above it shows, in
that run's numbers, then (at mini scale) where the mini zoo departs from the paper. Published numbers
(:mod:`concrete_subspace.reference`) appear only as context, labelled "published", never as our result.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .. import reference as ref
from .tables import pretty

#: The paper-scale sentence of each notebook's scale note (the mini-scale sentence is shared: :func:`scale_note`).
PAPER_SCALE = {
    "00_walkthrough": 'At `scale="paper"` the same cells run on CLIP ViT-B/32 (GPU); this notebook shows no '
    "published numbers at either scale: it shows the method's steps.",
    "01_multitask_table": 'At `scale="paper"` (GPU, Hub checkpoints) it scores every method on the paper\'s eight '
    'tasks with the published Tables 1/2 numbers **beside** ours (labelled "published").',
    "02_flan_t5_glue": 'At `scale="paper"` it runs Flan-T5 with the published LoRA-16 GLUE adapters and shows the '
    "published Table 3 averages **beside** ours. At mini scale the models are the *mini-text* zoo instead "
    "(docs/zoo_text.md).",
    "03_generalization": 'At `scale="paper"` it shows the seen/unseen averages with the published Table 5 numbers '
    "**beside** ours (ViT-B/32).",
    "04_robustness": 'At `scale="paper"` it shows our numbers on the paper\'s four corrupted tasks; the reference '
    "data of this project hold no published robustness numbers, so none are shown at either scale.",
    "05_curves": 'At `scale="paper"` it draws the published ViT-B/32 curves (authors\' logs) **beside** ours.',
    "06_mask_analysis": 'At `scale="paper"` the same analysis runs on the paper\'s models; the paper has no table '
    "of mask densities, so no published numbers are shown at either scale.",
    "07_ablations": 'At `scale="paper"` the same ablations run on ViT-B/32; no published numbers are shown at '
    "either scale.",
}

MINI_SCALE = (
    'At `scale="mini"` (the default; offline, CPU) everything runs on the mini zoo: a small CLIP-shaped model '
    "pre-trained here on rendered image–caption pairs, fine-tuned on eight synthetic/real tasks against frozen "
    "zero-shot heads (docs/zoo.md). Every number is **ours** on that zoo and is not comparable to the paper's."
)

#: Where the mini zoo departs from the paper, by topic: said after the figures it concerns (mini scale only).
MINI_DEPARTURES = {
    "zoo": "The mini zoo departs from the paper in size, not in kind: its task vectors are small next to the "
    "pre-trained weights and the entropy signal the Concrete mask follows is weak (docs/zoo.md), so expect the "
    "gaps between methods to be much smaller than the published ones. Tried on the validation split to widen them "
    "(docs/method.md §7a): a smaller inner lr and larger mask budgets for Concrete AdaMerging (kept: its meta stage "
    "now rises); the frozen heads' temperature (0.25-2x the zoo's logit scale), a pre-training logit scale fixed at "
    "CLIP's 100, and a narrower (width 64) or deeper (6 layers) vision tower (no gain; the shipped zoo kept). "
    "The paper's +8 of Concrete TA over task arithmetic is not reached at this scale.",
    "steps": "The mini runs use the zoo's validation-chosen step counts (`MINI_DEFAULTS`), far fewer than the "
    "paper's defaults (2000 Concrete TA steps; 2000 meta steps and 1000 adaptation steps for Concrete AdaMerging, "
    "docs/method.md), so a curve can end before it flattens.",
    "corruption": "The corruptions are applied to the mini zoo's small rendered images rather than the paper's "
    "photographs, so one severity level need not remove the same share of the signal, and the test-time methods "
    "run fewer steps (`MINI_ROBUSTNESS_STEPS`).",
    "text": "The mini-text zoo uses a small sentence encoder (all-MiniLM-L6-v2) with zero-shot classification "
    "heads, not Flan-T5's generated labels, so only the orderings between methods can be compared with the "
    "paper's Table 3.",
    "mask": "The paper shows no mask statistics; on the mini zoo the mask trains for few steps from logits at 0, "
    "so how far it moves is itself a finding of this scale.",
}


def scale_note(name: str, scale: str) -> str:
    """The scale note of notebook ``name`` (shared mini sentence + the notebook's paper sentence), marking ``scale``."""
    current = f'This run: **`scale="{scale}"`**.'
    return f"**Scale.** {MINI_SCALE} {PAPER_SCALE[name]} {current}"


def departure(topic: str, scale: str) -> str:
    """The sentence on where mini departs from the paper for ``topic``, or '' at paper scale."""
    return f" *Mini vs paper:* {MINI_DEPARTURES[topic]}" if scale == "mini" else ""


def published_averages(name: str) -> dict[str, float]:
    """Published average accuracy per method of reference table ``name`` (context beside our numbers, never ours)."""
    table = ref.reference_long(name)
    rows = table[table["task"] == "average"]
    return dict(zip(rows["method"], rows["accuracy"]))


def _average(table: pd.DataFrame, method: str, column: str = "accuracy") -> float:
    """The 'average' row of ``method`` in a tidy table (NaN if absent)."""
    rows = table[(table["method"] == method) & (table["task"] == "average")]
    return float(rows[column].iloc[0]) if len(rows) else float("nan")


def _more_or_less(difference: float, more: str = "higher", less: str = "lower") -> str:
    """'3.2 points higher' / '1.0 points lower': the size of ``difference`` and the word for its sign."""
    return f"{abs(difference):.1f} points {more if difference >= 0 else less}"


def _published_context(published: Mapping[str, float] | None, methods: tuple[str, ...], model: str) -> str:
    """' For context, the paper reports on <model> (published, not ours): A x, B y.'; '' without numbers."""
    if not published:
        return ""
    known = [f"{pretty(m)} {published[m]:.1f}" for m in methods if m in published]
    return (
        f" For context, the paper reports on CLIP {model} (published, not ours): {', '.join(known)}." if known else ""
    )


# --- 00 walkthrough ----------------------------------------------------------------------------------------------


def interference_story(conflicts: pd.DataFrame, norms: pd.Series, scale: str) -> str:
    """After the interference figure: how often task vectors disagree in sign, and how unequal their sizes are."""
    values = conflicts.to_numpy()
    off = values[~np.eye(len(values), dtype=bool)]
    i, j = np.unravel_index(np.argmax(np.where(np.eye(len(values), dtype=bool), -1, values)), values.shape)
    return (
        f"**What we see.** Between two task vectors, {off.mean():.0%} of the parameters move in opposite directions "
        f"on average (from {off.min():.0%} to {off.max():.0%}; most: {conflicts.index[i]} and "
        f"{conflicts.columns[j]}). Summing them cancels part of each update, which is the interference the mask is "
        f"meant to remove. The largest task vector ({norms.idxmax()}, {norms.max():.3g}) is "
        f"{norms.max() / norms.min():.1f}× the smallest ({norms.idxmin()}), so in a plain sum the large ones "
        f"dominate." + departure("zoo", scale)
    )


def gap_story(
    gap: pd.DataFrame, scale: str, published: Mapping[str, float] | None = None, model: str = "ViT-B-32"
) -> str:
    """After the zero-shot / Task Arithmetic / individual table: the gap that merging leaves open."""
    zero_shot, ta, individual = (_average(gap, m) for m in ("zero_shot", "task_arithmetic", "individual"))
    return (
        f"**What we see.** Task Arithmetic averages {ta:.1f}%: {_more_or_less(ta - zero_shot)} than the pre-trained "
        f"model ({zero_shot:.1f}%) and {_more_or_less(ta - individual)} than the eight fine-tuned models used one "
        f"per task ({individual:.1f}%). The distance to the fine-tuned models is what merging lost to interference, "
        f"and what the method tries to win back."
        + _published_context(published, ("zero_shot", "task_arithmetic", "individual"), model)
        + departure("zoo", scale)
    )


def cta_run_story(history: pd.DataFrame, ta_average: float, cta_average: float, scale: str) -> str:
    """After the CTA run figure: did the entropy fall, and did the accuracy follow it past Task Arithmetic?"""
    loss = history["loss"].dropna()
    return (
        f"**What we see.** Over {len(loss)} steps the summed entropy went from {loss.iloc[0]:.3f} to "
        f"{loss.iloc[-1]:.3f} ({loss.iloc[-1] - loss.iloc[0]:+.3f}). The final CTA model averages {cta_average:.1f}% "
        f"against Task Arithmetic's {ta_average:.1f}% at the same λ ({cta_average - ta_average:+.1f} points): "
        f"that difference is all the learned mask changed, guided only by the entropy of unlabeled test inputs."
        + departure("steps", scale)
    )


# --- 01 multi-task table ----------------------------------------------------------------------------------------


def multitask_story(
    table: pd.DataFrame, scale: str, published: Mapping[str, float] | None = None, model: str = "ViT-B-32"
) -> str:
    """After the average bars and the heatmap: the best merge, CTA vs TA, and the task merging hurts most."""
    averages = table[table["task"] == "average"].set_index("method")["accuracy"]
    merged = averages.drop([m for m in ("zero_shot", "individual") if m in averages.index])
    best = merged.idxmax()
    tasks = table[(table["task"] != "average") & (table["method"].isin([best, "individual"]))]
    per_task = tasks.pivot_table(index="task", columns="method", values="accuracy")
    text = (
        f"**What we see.** The best merge is {pretty(best)} ({merged[best]:.1f}%); the pre-trained model scores "
        f"{averages.get('zero_shot', float('nan')):.1f}% and the individual models "
        f"{averages.get('individual', float('nan')):.1f}%."
    )
    if {"concrete_task_arithmetic", "task_arithmetic"} <= set(averages.index):
        d = averages["concrete_task_arithmetic"] - averages["task_arithmetic"]
        text += f" Concrete TA is {d:+.1f} points from Task Arithmetic."
    if {"individual", best} <= set(per_task.columns) and best != "individual":
        loss = per_task["individual"] - per_task[best]
        text += (
            f" In the heatmap, the best merge is furthest below the task's own fine-tuned model on {loss.idxmax()} "
            f"({loss.max():+.1f} points individual minus merge) and closest on {loss.idxmin()} ({loss.min():+.1f})."
        )
    context = ("task_arithmetic", "concrete_task_arithmetic", "layer_wise_concrete_adamerging")
    return text + _published_context(published, context, model) + departure("zoo", scale)


# --- 02 text ------------------------------------------------------------------------------------------------------


def text_story(spread: pd.DataFrame, sweep: pd.DataFrame, scale: str) -> str:
    """After notebook 02's figure: the spread over seeds, and how entropy and accuracy move together along λ."""
    merges = spread[~spread["method"].isin(["zero_shot", "individual"])].reset_index(drop=True)
    best = merges.loc[merges["mean"].idxmax()]
    avg = sweep[sweep["task"] == "average"].reset_index(drop=True)
    top = avg.loc[avg["accuracy"].idxmax()]
    low = avg.loc[avg["entropy"].idxmin()]
    return (
        f"**What we see.** Left: the best merge on average is {pretty(best['method'])} ({best['mean']:.1f}% ± "
        f"{best['std']:.1f}); the largest seed spread of any method is {spread['std'].max():.1f} points, the scale "
        f"against which the differences between methods should be read. Right: task arithmetic is most accurate at "
        f"λ = {top['scaling']:g} ({top['accuracy']:.1f}%) and its predictions are least uncertain at "
        f"λ = {low['scaling']:g} ({low['entropy']:.3f} nats); entropy minimisation can only find a good merge when "
        f"these two λ are close." + departure("text", scale)
    )


# --- 03 generalization -------------------------------------------------------------------------------------------


def generalization_story(summary: pd.DataFrame, scale: str) -> str:
    """After the seen/unseen bars: per split, the drop from seen to unseen tasks and CTA vs TA on unseen tasks."""
    parts = []
    for split, frame in summary.groupby("split", sort=False):
        frame = frame.set_index("method")
        drop = (frame["avg_seen"] - frame["avg_unseen"]).mean()
        part = f"in {split} the unseen tasks score {_more_or_less(-drop)} than the seen ones (mean over methods)"
        if {"concrete_task_arithmetic", "task_arithmetic"} <= set(frame.index):
            d = frame.loc["concrete_task_arithmetic", "avg_unseen"] - frame.loc["task_arithmetic", "avg_unseen"]
            part += f", and Concrete TA is {d:+.1f} points from Task Arithmetic on them"
        parts.append(part)
    sentence = "; ".join(parts)
    return (
        f"**What we see.** {sentence[:1].upper()}{sentence[1:]}. A mask learned on the seen tasks' test inputs can only "
        f"help the unseen ones if what it removes is interference common to all tasks." + departure("zoo", scale)
    )


# --- 04 robustness -----------------------------------------------------------------------------------------------


def robustness_story(table: pd.DataFrame, scale: str) -> str:
    """After the robustness figure: the mean drop from clean data, the hardest corruption, CTA vs TA under them."""
    avg = table[table["task"] == "average"].pivot_table(index="corruption", columns="method", values="accuracy")
    corrupted = avg.drop(index="clean", errors="ignore")
    text = "**What we see.**"
    if "clean" in avg.index and len(corrupted):
        drop = (avg.loc["clean"] - corrupted.mean()).mean()
        hardest = corrupted.mean(axis=1).idxmin()
        text += (
            f" Averaged over methods and corruptions, accuracy is {_more_or_less(-drop)} than on clean data; the hardest "
            f"corruption here is {hardest} ({corrupted.mean(axis=1).min():.1f}% on average)."
        )
    if {"concrete_task_arithmetic", "task_arithmetic"} <= set(corrupted.columns) and len(corrupted):
        d = corrupted["concrete_task_arithmetic"] - corrupted["task_arithmetic"]
        text += (
            f" Concrete TA is ahead of Task Arithmetic under {int((d > 0).sum())} of {len(d)} corruptions "
            f"(mean {d.mean():+.1f} points)."
        )
    return text + departure("corruption", scale)


# --- 05 curves ---------------------------------------------------------------------------------------------------


def curves_story(progress: pd.DataFrame, scale: str) -> str:
    """After the curves figure: each stage's accuracy from its first to its last logged step."""
    lines = [
        f"{pretty(r['method'])} ({r['stage']}) {r['first']:.1f} → {r['last']:.1f}% ({r['gain']:+.1f})"
        for r in progress.to_dict("records")
    ]
    return (
        "**What we see.** From the first to the last logged step: "
        + "; ".join(lines)
        + ". A flat curve means the entropy gradient barely changed the merge."
        + departure("steps", scale)
    )


def per_task_story(curves: pd.DataFrame, method: str, stage: str) -> str:
    """After a per-task curve: which task gained and which lost most along ``method``'s ``stage``."""
    frame = curves[(curves["method"] == method) & (curves["stage"] == stage) & (curves["task"] != "average")]
    ends = frame.sort_values("step").groupby("task")["accuracy"].agg(["first", "last"])
    change = ends["last"] - ends["first"]
    if change.abs().max() < 0.05:
        return (
            f"**What we see** ({pretty(method)}, {stage}): no task moved by 0.05 points or more along the stage; at "
            f"this run's length the merge stayed where it started."
        )
    return (
        f"**What we see** ({pretty(method)}, {stage}): the largest gain is on {change.idxmax()} "
        f"({change.max():+.1f} points), the largest loss on {change.idxmin()} ({change.min():+.1f}); "
        f"{int((change > 0).sum())} of {len(change)} tasks end higher than they started. The entropy is summed "
        f"over tasks, so one task can pay for another's gain."
    )


def meta_stage_story(meta: pd.DataFrame) -> str:
    """After the meta-stage figure: accuracy at w′ vs at the initial w, and the share of w′ at the bounds."""
    parts = []
    for method, frame in meta.groupby("method", sort=False):
        frame = frame.sort_values("step")
        adapted = frame["accuracy_at_adapted"].iloc[-1] - frame["accuracy_at_adapted"].iloc[0]
        alone = frame["accuracy_at_init"].iloc[-1] - frame["accuracy_at_init"].iloc[0]
        bounds = frame["coefficient_share_at_bounds"].max()
        parts.append(
            f"{pretty(method)}: {adapted:+.1f} points at w′ and {alone:+.1f} with the mask alone at the initial w; "
            f"at most {bounds:.0%} of w′ at or beyond 0 or 1"
        )
    return "**What we see.** " + "; ".join(parts) + "."


# --- 06 mask analysis --------------------------------------------------------------------------------------------


def density_story(density: pd.DataFrame, scale: str) -> str:
    """After the density and keep-probability figures: how much of each tensor the learned mask keeps."""
    parts = []
    for method, frame in density.groupby("method", sort=False):
        per_layer = frame.groupby("layer", sort=False)["density"].mean()
        parts.append(
            f"{pretty(method)} keeps {frame['density'].mean():.1%} of the elements on average over tensors "
            f"(layers from {per_layer.min():.1%} to {per_layer.max():.1%}), mean keep probability "
            f"{frame['mean_keep_probability'].mean():.3f}"
        )
    return (
        "**What we see.** "
        + "; ".join(parts)
        + ". A keep probability near 0.5 everywhere would mean the mask is still at its starting point."
        + departure("mask", scale)
    )


def logit_story(logit_layers: pd.DataFrame) -> str:
    """After the logit-magnitude figure: how far the logits moved from 0, and in which layer most."""
    parts = []
    for method, frame in logit_layers.groupby("method", sort=False):
        top = frame.loc[frame["mean_abs_logit"].idxmax()]
        parts.append(
            f"{pretty(method)}: mean |logit| up to {top['mean_abs_logit']:.3f} (layer {top['layer']}), "
            f"{frame['large_logit_share'].mean():.1%} of logits beyond ±0.5 on average over layers"
        )
    return "**What we see.** " + "; ".join(parts) + "."


def mask_effect_story(summary: pd.DataFrame) -> str:
    """The mask-only effect per method, from :func:`mask_effect_summary` (mean ± std over seeds)."""
    lines = [
        f"- {pretty(r.method)}: mask alone {r.mask_only_mean:.1f} vs task arithmetic {r.task_arithmetic_mean:.1f} "
        f"({r.mask_effect_mean:+.1f} ± {r.mask_effect_std:.1f} over {r.seeds} seeds); final model "
        f"{r.headline_mean:.1f}, under σ(x) {r.expected_mask_mean:.1f}"
        for r in summary.itertuples()
    ]
    return "\n".join(lines)


def masked_individual_story(masked: pd.DataFrame) -> str:
    """After the masked-individual bars: does the shared mask keep what each task's own model needs?"""
    avg = masked[masked["task"] == "average"].set_index("model")["accuracy"]
    lines = [
        f"- {model}: average {value:.1f} vs unmasked individual {avg['individual']:.1f} ({value - avg['individual']:+.1f})"
        for model, value in avg.items()
        if model != "individual"
    ]
    return (
        "**What we see.** Each fine-tuned model with the shared mask applied to its own task vector:\n"
        + "\n".join(lines)
        + "\n\nA small loss means the mask removed little that a single task needs: what it drops is mostly what "
        "the tasks disagree on."
    )


# --- 07 ablations ------------------------------------------------------------------------------------------------


def ablation_story(tables: Mapping[str, pd.DataFrame], scale: str) -> str:
    """After the ablation figure: the range each factor spans, panel by panel."""
    parts = []
    for name, label in (
        ("temperature", "temperature λ"),
        ("eval_mask", "evaluation mask"),
        ("num_tasks", "number of tasks"),
    ):
        frame = tables.get(name, pd.DataFrame())
        if frame.empty:
            continue
        cta = frame[(frame["task"] == "average") & (frame["method"] == "concrete_task_arithmetic")].reset_index(
            drop=True
        )
        top, bottom = cta.loc[cta["accuracy"].idxmax()], cta.loc[cta["accuracy"].idxmin()]
        if top["accuracy"] - bottom["accuracy"] < 0.05:
            parts.append(f"over {label} Concrete TA stays at {top['accuracy']:.1f}%")
        else:
            parts.append(
                f"over {label} Concrete TA ranges from {bottom['accuracy']:.1f}% ({label} {bottom[name]}) to "
                f"{top['accuracy']:.1f}% ({label} {top[name]})"
            )
    steps = tables.get("steps", pd.DataFrame())
    if not steps.empty:
        avg = steps[steps["task"] == "average"].sort_values("step")["accuracy"]
        parts.append(f"along the steps it goes from {avg.iloc[0]:.1f}% at the first logged step to {avg.iloc[-1]:.1f}%")
    sentence = "; ".join(parts)
    return f"**What we see.** {sentence[:1].upper()}{sentence[1:]}." + departure("zoo", scale)


def paper_budget_story(default, paper, scale: str) -> str:
    """After the budget figure: Concrete TA's final accuracy at the mini default and at the paper's budget (two runs)."""
    budgets = [(r.average, r.params["lr"], r.params["steps"]) for r in (default, paper)]
    (a_mini, lr_mini, s_mini), (a_paper, lr_paper, s_paper) = budgets
    return (
        f"**What we see.** Concrete TA ends at {a_mini:.1f}% with the mini default (lr {lr_mini:g} × {s_mini} steps) "
        f"and at {a_paper:.1f}% with the paper's budget (lr {lr_paper:g} × {s_paper} steps), {a_paper - a_mini:+.1f} "
        f"points (one run seed). Adam moves each logit by at most about lr per step, so lr × steps is the budget: "
        f"{lr_mini * s_mini:g} against {lr_paper * s_paper:g}." + departure("steps", scale)
    )
