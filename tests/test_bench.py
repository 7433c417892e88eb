"""The benchmark harness end to end on its seconds-long case (a tiny CLIP vision tower, 8 synthetic task vectors)."""

import json

import pytest

from benchmarks.harness import main


@pytest.mark.slow
def test_bench_vit_tiny_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench"
    assert (
        main(
            [
                "--cases",
                "vit_tiny",
                "--methods",
                "concrete_task_arithmetic",
                "layer_wise_adamerging",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--threads",
                "1",
                "--configs",
                "bf16:batched",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "concrete_task_arithmetic" in printed and "layer_wise_adamerging" in printed
    payload = json.loads(out.with_suffix(".json").read_text())
    rows = payload["rows"] if isinstance(payload, dict) and "rows" in payload else payload
    assert out.with_suffix(".csv").exists()
    text = json.dumps(payload)
    assert "torch" in text and "vit_tiny" in text
    assert len(rows) >= 2
    assert {(r["method"], r["config"], r["precision"], r["forward_mode"]) for r in rows} == {
        (m, "bf16:batched", "bf16", "batched") for m in ("concrete_task_arithmetic", "layer_wise_adamerging")
    }
    for row in rows:  # every method reports a step time, a peak and its task-vector build time
        assert row["step_seconds_median"] > 0 and row["peak_bytes"] > 0
        assert row["build_vectors_seconds"] is not None and row["build_vectors_seconds"] > 0, row["method"]


def test_bench_configs_are_checked_and_filtered_by_precision():
    from benchmarks.harness import DEFAULT_CONFIGS, parse_config, select_configs

    assert parse_config("bf16:batched") == ("bf16", "batched")
    assert select_configs(DEFAULT_CONFIGS, ["bf16"]) == ["bf16:batched"]
    assert select_configs(DEFAULT_CONFIGS, None) == list(DEFAULT_CONFIGS)
    for bad, match in (
        ("bf16", "PRECISION:FORWARD_MODE"),
        ("fp16:batched", "unknown precision"),
        ("fp32:summed", "unknown forward_mode"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_config(bad)
    with pytest.raises(ValueError, match="no bench config"):
        select_configs(["fp32:batched"], ["bf16"])


def test_compare_keeps_to_fusion_bench_rows_of_the_same_cpu():
    import pandas as pd

    from benchmarks.harness import compare

    key = {"case": "vit_b32", "stage": "s", "device": "cpu", "threads": 1, "batch_size": 16}
    ours = pd.DataFrame(
        [
            {
                **key,
                "method": m,
                "config": "fp32:batched",
                "cpu_model": "cpu A",
                "step_seconds_median": 2.0,
                "step_cpu_seconds_median": 2.0,
                "peak_bytes": 2,
                "steps": 2,
            }
            for m in ("a", "b")
        ]
    )

    def ref(method, cpu, seconds):
        return {
            **key,
            "method": method,
            "cpu_model": cpu,
            "step_seconds_median": seconds,
            "step_cpu_seconds_median": seconds,
            "peak_bytes": 4,
            "steps": 2,
            "source_file": f"{cpu}.json",
        }

    theirs = [ref("a", "cpu A", 4.0), ref("a", "cpu B", 1.0), ref("a", None, 8.0), ref("b", None, 8.0)]
    merged = compare(ours, theirs).set_index("method")
    assert len(merged) == 2  # a: the same-CPU row only; b: the unrecorded-CPU row as a fallback; never cpu B
    assert merged.loc["a", "step_cpu_ratio"] == 0.5 and bool(merged.loc["a", "fb_same_machine"])
    assert merged.loc["b", "step_cpu_ratio"] == 0.25 and not bool(merged.loc["b", "fb_same_machine"])
    assert merged.loc["a", "peak_memory_ratio"] == 0.5


def test_compare_keeps_to_fusion_bench_rows_of_the_same_kernel_path():
    """An AVX2-forced fusion_bench run (ATEN_CPU_CAPABILITY=avx2) is not the reference of an AVX-512 run of ours."""
    import pandas as pd

    from benchmarks.harness import compare

    key = {"case": "vit_b32", "method": "a", "stage": "s", "device": "cpu", "threads": 1, "batch_size": 16}
    values = {"step_seconds_median": 2.0, "step_cpu_seconds_median": 2.0, "peak_bytes": 2, "steps": 2}
    ours = pd.DataFrame([{**key, **values, "config": "fp32:per_task", "cpu_model": "A", "cpu_capability": "AVX512"}])
    theirs = [
        {**key, **values, "cpu_model": "A", "cpu_capability": "AVX2", "step_cpu_seconds_median": 8.0},
        {**key, **values, "cpu_model": "A", "cpu_capability": "AVX512", "step_cpu_seconds_median": 4.0},
    ]
    merged = compare(ours, theirs)
    assert len(merged) == 1 and merged["step_cpu_ratio"].item() == 0.5
