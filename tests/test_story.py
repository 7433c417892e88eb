"""experiments/claims.py verdicts and experiments/story.py paragraphs, on small hand-made tables.

Each paragraph must state the numbers of the table it is given (so a notebook's prose follows its run) and, at mini
scale only, say where mini departs from the paper.
"""

from __future__ import annotations

import pandas as pd
import pytest

from concrete_subspace import experiments as ex
from concrete_subspace.experiments import story


def tidy(rows: dict[str, dict[str, float]], **columns) -> pd.DataFrame:
    """Tidy rows (method, task, accuracy, **columns) from {method: {task: accuracy}}, 'average' included as given."""
    return pd.DataFrame(
        [{"method": m, "task": t, "accuracy": a, **columns} for m, scores in rows.items() for t, a in scores.items()]
    )


MULTITASK = tidy(
    {
        "zero_shot": {"a": 40.0, "b": 50.0, "average": 45.0},
        "task_arithmetic": {"a": 60.0, "b": 70.0, "average": 65.0},
        "concrete_task_arithmetic": {"a": 64.0, "b": 70.0, "average": 67.0},
        "individual": {"a": 90.0, "b": 80.0, "average": 85.0},
    }
)


def test_verdict_wording():
    assert ex.verdict(True) == "holds" and ex.verdict(False) == "does NOT hold"


def test_claim_lines_show_value_context_and_seed_spread():
    checked = pd.DataFrame(
        {"split": ["exp1", "exp1"], "claim": ["A beats B", "C beats D"], "difference": [1.25, -0.5], "holds": [1, 0]}
    )
    text = ex.claim_lines(checked, context=("split",))
    assert text.splitlines() == [
        "- exp1, A beats B: **holds** (+1.2)",
        "- exp1, C beats D: **does NOT hold** (-0.5)",
    ]
    seeds = ex.check_claims_over_seeds(
        pd.DataFrame(
            {
                "method": ["x", "x", "y"],
                "task": ["average"] * 3,
                "accuracy": [70.0, 72.0, 69.0],
                "seed": [0, 1, 0],
            }
        ),
        [ex.Claim("X beats Y", "x", "y")],
    )
    assert ex.claim_lines(seeds) == "- X beats Y: **holds** (+2.0 ± 1.4 over seeds; holds in 2/2 seeds)"
    assert ex.claim_lines(seeds.iloc[0:0]).startswith("_no claim")


def test_split_and_condition_claims():
    summary = pd.DataFrame(
        {
            "split": ["exp1", "exp1"],
            "method": ["task_arithmetic", "concrete_task_arithmetic"],
            "avg_seen": [60.0, 62.0],
            "avg_unseen": [40.0, 39.0],
        }
    )
    checked = ex.split_claims(summary, ["concrete_ta_beats_ta"])
    assert list(checked["tasks"]) == ["seen", "unseen"] and list(checked["holds"]) == [True, False]
    table = pd.concat([MULTITASK.assign(corruption="clean"), MULTITASK.assign(corruption="noise")])
    table.loc[(table["corruption"] == "noise") & (table["method"] == "concrete_task_arithmetic"), "accuracy"] = 10.0
    per = ex.per_condition_claims(table, ["concrete_ta_beats_ta"], "corruption")
    assert list(per["holds"]) == [True, False]
    assert ex.condition_count_lines(per) == "- Concrete TA beats Task Arithmetic: holds under **1 of 2** conditions"


def test_text_zoo_gates_and_orderings():
    sweep = pd.DataFrame(
        {
            "scaling": [0.0, 0.2, 0.4, 1.0],
            "task": ["average"] * 4,
            "accuracy": [40.0, 50.0, 60.0, 30.0],
            "entropy": [2.0, 1.5, 1.0, 1.2],
        }
    )
    gates = ex.text_zoo_gates({"zero_shot": 40.0, "individual": 80.0}, sweep)
    assert list(gates["value"][:2]) == [20.0, 20.0] and gates["holds"].all()
    runs = pd.DataFrame(
        {
            "method": ["task_arithmetic", "concrete_task_arithmetic", "concrete_task_arithmetic"],
            "task": ["average"] * 3,
            "accuracy": [60.0, 61.0, 59.0],
            "seed": [0, 0, 1],
        }
    )
    ordering = ex.ordering_claims(runs, [("concrete_task_arithmetic", "task_arithmetic")])
    assert ordering["claim"][0].endswith("(holds in 1/2 seeds)") and not ordering["holds"][0]


def test_curve_progress_and_meta_claims():
    curves = pd.DataFrame(
        {
            "method": ["m"] * 3,
            "stage": ["meta"] * 3,
            "step": [2, 0, 1],
            "task": ["average"] * 3,
            "accuracy": [55.0, 50.0, 60.0],
        }
    )
    progress = ex.curve_progress(curves)
    assert progress.iloc[0][["first", "last", "best", "gain"]].tolist() == [50.0, 55.0, 60.0, 5.0]
    assert ex.meta_learning_claims(progress)["holds"].tolist() == [True]


def test_ablation_claims():
    tables = {
        "temperature": tidy({"concrete_task_arithmetic": {"average": 60.0}}, temperature=0.5),
        "scaling": pd.concat(
            [
                tidy({"task_arithmetic": {"average": 60.0}}, scaling=0.3),
                tidy({"concrete_task_arithmetic": {"average": 61.0}}, scaling=0.3),
            ]
        ),
        "num_tasks": pd.DataFrame(),
    }
    checked = ex.ablation_claims(tables)
    assert checked["holds"].tolist() == [True, True]
    assert checked["difference"].tolist() == [0.0, 1.0]


def test_scale_note_is_shared_and_names_the_run_scale():
    mini, paper = story.scale_note("01_multitask_table", "mini"), story.scale_note("03_generalization", "paper")
    assert story.MINI_SCALE in mini and story.MINI_SCALE in paper
    assert '`scale="paper"`**' in paper and "Table 5" in paper
    assert set(story.PAPER_SCALE) == set(ex.CONFIGS)


def test_defaults_are_the_config_defaults():
    assert ex.defaults("07_ablations") == ex.AblationConfig()


@pytest.mark.parametrize("scale", ["mini", "paper"])
def test_multitask_story_states_the_tables_numbers(scale):
    text = story.multitask_story(MULTITASK, scale, {"task_arithmetic": 69.0})
    assert "Concrete Task Arithmetic (67.0%)" in text and "+2.0 points" in text
    assert "furthest below the task's own fine-tuned model on a (+26.0 points" in text
    assert "on CLIP ViT-B-32 (published, not ours): Task Arithmetic 69.0" in text
    assert "CLIP ViT-L-14" in story.multitask_story(MULTITASK, scale, {"task_arithmetic": 69.0}, "ViT-L-14")
    assert ("Mini vs paper" in text) == (scale == "mini")


def test_gap_and_cta_run_stories():
    gap = story.gap_story(MULTITASK, "paper")
    assert "65.0%: 20.0 points higher than the pre-trained" in gap and "20.0 points lower than the eight" in gap
    history = pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.5, 2.0]})
    run = story.cta_run_story(history, ta_average=65.0, cta_average=66.5, scale="paper")
    assert "3.000 to 2.000" in run and "+1.5 points" in run


def test_interference_story():
    names = ["a", "b", "c"]
    conflicts = pd.DataFrame([[0, 0.1, 0.3], [0.1, 0, 0.2], [0.3, 0.2, 0]], index=names, columns=names)
    text = story.interference_story(conflicts, pd.Series([1.0, 2.0, 4.0], index=names), "paper")
    assert "20% of the parameters" in text and "most: a and c" in text and "4.0× the smallest" in text


def test_generalization_and_robustness_stories():
    summary = pd.DataFrame(
        {
            "split": ["exp1", "exp1"],
            "method": ["task_arithmetic", "concrete_task_arithmetic"],
            "avg_seen": [60.0, 62.0],
            "avg_unseen": [40.0, 39.0],
        }
    )
    text = story.generalization_story(summary, "paper")
    assert "21.5 points lower than the seen" in text and "Concrete TA is -1.0 points" in text
    assert text.startswith("**What we see.** In exp1")
    table = pd.concat([MULTITASK.assign(corruption="clean"), MULTITASK.assign(corruption="noise")])
    table.loc[table["corruption"] == "noise", "accuracy"] -= 10.0
    robust = story.robustness_story(table, "mini")
    assert (
        "accuracy is 10.0 points lower than on clean data" in robust
        and "under 1 of 1 corruptions" in robust
        and "Mini vs paper" in robust
    )


def test_curve_stories():
    curves = pd.DataFrame(
        {
            "method": ["m"] * 4,
            "stage": ["tta"] * 4,
            "step": [0, 1, 0, 1],
            "task": ["a", "a", "b", "b"],
            "accuracy": [50.0, 55.0, 60.0, 58.0],
        }
    )
    text = story.per_task_story(curves, "m", "tta")
    assert "gain is on a (+5.0" in text and "loss on b (-2.0)" in text and "1 of 2 tasks" in text
    flat = curves.assign(accuracy=50.0)
    assert "no task moved" in story.per_task_story(flat, "m", "tta")
    progress = pd.DataFrame([{"method": "m", "stage": "tta", "first": 50.0, "last": 55.0, "best": 55.0, "gain": 5.0}])
    assert "50.0 → 55.0% (+5.0)" in story.curves_story(progress, "paper")
    meta = pd.DataFrame(
        {
            "method": ["m", "m"],
            "step": [0, 1],
            "accuracy_at_adapted": [50.0, 48.0],
            "accuracy_at_init": [50.0, 51.0],
            "coefficient_share_at_bounds": [0.0, 0.25],
        }
    )
    assert "-2.0 points at w′ and +1.0" in story.meta_stage_story(meta) and "25%" in story.meta_stage_story(meta)


def test_mask_stories():
    density = pd.DataFrame(
        {
            "method": ["concrete_task_arithmetic"] * 2,
            "layer": ["0", "1"],
            "density": [0.4, 0.6],
            "mean_keep_probability": [0.49, 0.51],
            "mean_abs_logit": [0.1, 0.3],
            "large_logit_share": [0.0, 0.2],
        }
    )
    assert "keeps 50.0%" in story.density_story(density, "paper") and "from 40.0% to 60.0%" in story.density_story(
        density, "paper"
    )
    logits = story.logit_story(ex.logit_layer_table(density))
    assert "up to 0.300 (layer 1)" in logits and "10.0% of logits" in logits
    masked = pd.DataFrame(
        {"model": ["individual", "masked by X"], "task": ["average", "average"], "accuracy": [90.0, 87.5]}
    )
    assert "masked by X: average 87.5 vs unmasked individual 90.0 (-2.5)" in story.masked_individual_story(masked)


def test_ablation_story():
    tables = {
        "temperature": pd.concat(
            [
                tidy({"concrete_task_arithmetic": {"average": 60.0}}, temperature=0.5),
                tidy({"concrete_task_arithmetic": {"average": 58.0}}, temperature=2.0),
            ]
        ),
        "steps": tidy({"concrete_task_arithmetic": {"average": 55.0}}, step=0, stage="concrete"),
    }
    text = story.ablation_story(tables, "paper")
    assert "Over temperature λ Concrete TA ranges from 58.0% (temperature λ 2.0) to 60.0% (temperature λ 0.5)" in text
    assert "55.0% at the first logged step" in text
    same = {"temperature": tables["temperature"].assign(accuracy=60.0)}
    assert "stays at 60.0%" in story.ablation_story(same, "paper")


def test_text_story_names_the_best_merge_not_a_reference_row():
    spread = pd.DataFrame(
        {
            "method": ["individual", "task_arithmetic", "ties_merging"],
            "mean": [90.0, 60.0, 61.0],
            "std": [0.0, 0.5, 1.5],
        }
    )
    sweep = pd.DataFrame(
        {"scaling": [0.0, 0.3], "task": ["average"] * 2, "accuracy": [40.0, 60.0], "entropy": [1.0, 0.8]}
    )
    text = story.text_story(spread, sweep, "paper")
    assert "best merge on average is TIES-Merging (61.0% ± 1.5)" in text and "largest seed spread" in text
    assert "λ = 0.3 (60.0%)" in text and "λ = 0.3 (0.800 nats)" in text
