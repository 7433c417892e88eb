"""Issue 26: the experiment tables behind notebooks 05 and 06 (mask-only effect over seeds, meta stage, logits)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from concrete_subspace.experiments import (
    logit_layer_table,
    mask_effect_summary,
    mask_effect_table,
    meta_stage_table,
)
from concrete_subspace.experiments.cache import RunRecord


def record(method, key, scores, params=None, extras=None, history=None) -> RunRecord:
    return RunRecord(key, method, tuple(scores), params or {}, scores, history or [], extras or {}, 0.0, Path("."))


def records_for_two_seeds() -> dict[str, RunRecord]:
    ta = record("task_arithmetic", "ta", {"a": 60.0, "b": 70.0}, {"scaling": 0.3})
    out = {"task_arithmetic": ta}
    for seed, (cta, cam_init) in enumerate([(70.0, 66.0), (72.0, 64.0)]):
        suffix = "" if seed == 0 else f"@seed{seed}"
        out[f"concrete_task_arithmetic{suffix}"] = record(
            "concrete_task_arithmetic",
            f"c{seed}",
            {"a": cta, "b": cta},
            {"seed": seed},
            {"mask_only": {"coefficients": 0.3, "final_model": True}, "expected_mask_scores": {"a": 50.0, "b": 52.0}},
        )
        out[f"layer_wise_concrete_adamerging{suffix}"] = record(
            "layer_wise_concrete_adamerging",
            f"l{seed}",
            {"a": 80.0, "b": 80.0},
            {"seed": seed},
            {"mask_only": {"coefficients": 0.3, "final_model": False, "scores": {"a": cam_init, "b": cam_init}}},
        )
    return out


def test_mask_effect_table_rows_per_seed_against_task_arithmetic():
    table = mask_effect_table(records_for_two_seeds())
    cta = table[table["method"] == "concrete_task_arithmetic"].set_index("seed")
    assert cta.loc[0, "mask_only"] == 70.0 and cta.loc[1, "mask_only"] == 72.0  # CTA: its final model
    assert cta.loc[0, "task_arithmetic"] == 65.0 and cta.loc[0, "mask_effect"] == 5.0
    assert cta.loc[0, "expected_mask"] == 51.0
    cam = table[table["method"] == "layer_wise_concrete_adamerging"].set_index("seed")
    assert cam["mask_only"].tolist() == [66.0, 64.0] and cam["headline"].tolist() == [80.0, 80.0]
    assert cam["expected_mask"].isna().all()  # not recorded: NaN, not a made-up number
    summary = mask_effect_summary(table).set_index("method")
    assert summary.loc["layer_wise_concrete_adamerging", "mask_effect_mean"] == 0.0
    assert summary.loc["layer_wise_concrete_adamerging", "mask_effect_std"] == pytest.approx(2**0.5)
    assert summary.loc["concrete_task_arithmetic", "seeds"] == 2


def test_mask_effect_table_refuses_task_arithmetic_at_another_lambda():
    records = records_for_two_seeds()
    records["task_arithmetic"].params["scaling"] = 0.5
    with pytest.raises(ValueError, match=r"differ from task_arithmetic scaling 0.5; run task_arithmetic at the same"):
        mask_effect_table(records)


def test_mask_effect_table_reads_task_arithmetic_at_another_lambda_from_baseline_at():
    """The mini-text case: task arithmetic's run at 0.2, the Concrete runs at 0.3, a λ sweep gives TA at 0.3."""
    records = records_for_two_seeds()
    records["task_arithmetic"].params["scaling"] = 0.2
    table = mask_effect_table(records, baseline_at={0.0: 40.0, 0.3: 61.5})
    assert (table["task_arithmetic"] == 61.5).all()
    cta = table[table["method"] == "concrete_task_arithmetic"].set_index("seed")
    assert cta.loc[1, "mask_effect"] == 72.0 - 61.5
    with pytest.raises(ValueError, match="pass baseline_at with λ 0.3"):
        mask_effect_table(records, baseline_at={0.2: 65.0})


def test_mask_effect_table_needs_the_baseline():
    records = records_for_two_seeds()
    del records["task_arithmetic"]
    with pytest.raises(KeyError, match="needs a 'task_arithmetic' record"):
        mask_effect_table(records)


def test_meta_stage_table_reads_only_evaluated_meta_rows():
    history = [
        {"stage": "meta", "step": 0, "avg_accuracy": 50.0, "mask_only_accuracy": 50.0},
        {"stage": "meta", "step": 1, "loss": 1.0, "coefficient_share_at_bounds": 0.9},  # logged, not evaluated
        {
            "stage": "meta",
            "step": 2,
            "avg_accuracy": 40.0,
            "mask_only_accuracy": 55.0,
            "coefficient_share_at_bounds": 0.8,
            "mean_abs_logit": 0.1,
            "large_logit_share": 0.0,
        },
        {"stage": "tta", "step": 0, "avg_accuracy": 55.0},
    ]
    table = meta_stage_table({"m": record("layer_wise_concrete_adamerging", "k", {"a": 1.0}, history=history)})
    assert table["step"].tolist() == [0, 2]
    assert table["accuracy_at_adapted"].tolist() == [50.0, 40.0]
    assert table["accuracy_at_init"].tolist() == [50.0, 55.0]
    assert table.loc[1, "coefficient_share_at_bounds"] == 0.8


def test_logit_layer_table_averages_per_layer():
    density = pd.DataFrame(
        {
            "method": ["m", "m", "m"],
            "layer": ["layer 0", "layer 0", "layer 1"],
            "mean_abs_logit": [0.2, 0.4, 1.0],
            "large_logit_share": [0.0, 0.5, 1.0],
            "mean_keep_probability": [0.5, 0.5, 0.5],
        }
    )
    table = logit_layer_table(density).set_index("layer")
    assert table.loc["layer 0", "mean_abs_logit"] == pytest.approx(0.3)
    assert table.loc["layer 1", "large_logit_share"] == 1.0
