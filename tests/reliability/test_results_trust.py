"""Issue 13, points 1-3: the run cache knows the code, analyses use the exact evaluation mask, no silent fallbacks."""

from __future__ import annotations

import hashlib
import json
import sys
import types

import pandas as pd
import pytest
import torch

from concrete_subspace import diagnostics
from concrete_subspace import experiments as ex
from concrete_subspace.merging import apply_mask_flat, merge_flat
from concrete_subspace.provenance import code_fingerprint
from concrete_subspace.registry import run_method
from concrete_subspace.task_vectors import ParamLayout, stack_task_vectors, sum_task_vectors

QUIET = {"progress": False}
RUNS = {
    "task_arithmetic": {"scaling": 0.3},
    "layer_wise_adamerging": {"steps": 2, **QUIET},
    "concrete_task_arithmetic": {"steps": 2, **QUIET},
    "layer_wise_concrete_adamerging": {"meta_steps": 2, "tta_steps": 2, **QUIET},
}


def run_all(toy, cache):
    return {m: ex.run_cached(toy, m, p, cache_dir=cache, verbose=False) for m, p in RUNS.items()}


def edited_mask_extras(logits, layout):
    """A stand-in for an edit of diagnostics.py's ``mask_extras``: same result, different source."""
    extras = {"mask_logits": logits.detach().cpu(), "layout_keys": list(layout.keys)}
    return {**extras, "mask_density": diagnostics.density(logits, layout)}


edited_mask_extras.__module__ = "concrete_subspace.diagnostics"  # the fingerprint follows package code only
edited_mask_extras.__qualname__ = "mask_extras"


def test_a_code_change_recomputes_exactly_the_runs_of_the_methods_it_reaches(toy, tmp_path, monkeypatch):
    first = run_all(toy, tmp_path)
    assert all(
        json.loads((r.directory / "record.json").read_text())["code"]["sha256"] == r.code for r in first.values()
    )
    assert all(r.cached for r in run_all(toy, tmp_path).values())
    monkeypatch.setattr(diagnostics, "mask_extras", edited_mask_extras)
    second = run_all(toy, tmp_path)
    assert {m: r.cached for m, r in second.items()} == {
        "task_arithmetic": True,
        "layer_wise_adamerging": True,
        "concrete_task_arithmetic": False,
        "layer_wise_concrete_adamerging": False,
    }
    assert second["concrete_task_arithmetic"].key != first["concrete_task_arithmetic"].key


def test_the_fingerprint_names_the_changed_function_and_covers_problem_code(toy, monkeypatch):
    before = ex.run_fingerprint("concrete_task_arithmetic", toy)
    assert "concrete_subspace.concrete.concrete_task_arithmetic" in before["objects"]
    assert "concrete_subspace.diagnostics.mask_extras" in before["objects"] and before["versions"]["torch"]
    monkeypatch.setattr(diagnostics, "mask_extras", edited_mask_extras)
    after = ex.run_fingerprint("concrete_task_arithmetic", toy)
    changed = {
        k
        for k in before["objects"].keys() | after["objects"].keys()
        if before["objects"].get(k) != after["objects"].get(k)
    }
    assert changed == {"concrete_subspace.diagnostics.mask_extras"}

    def load_finetuned(task):  # a problem whose data or model code changes must not reuse runs either
        return toy.load_finetuned(task)

    load_finetuned.__module__ = "concrete_subspace.zoo"
    import dataclasses

    other = dataclasses.replace(toy, load_finetuned=load_finetuned)
    assert (
        ex.run_fingerprint("task_arithmetic", other)["sha256"] != ex.run_fingerprint("task_arithmetic", toy)["sha256"]
    )


def test_plain_data_in_closures_is_part_of_the_fingerprint():
    def make(batch):
        def batch_of(task, step):
            return batch

        batch_of.__module__ = "concrete_subspace.zoo"
        return batch_of

    assert code_fingerprint([make(16)])["sha256"] != code_fingerprint([make(32)])["sha256"]
    assert code_fingerprint([make(16)])["sha256"] == code_fingerprint([make(16)])["sha256"]


def test_results_json_lists_reused_and_computed_runs_with_their_code(toy, tmp_path):
    runs = list(run_all(toy, tmp_path / "cache").values())
    reused = list(run_all(toy, tmp_path / "cache").values())[:2]
    config = ex.MultitaskConfig(figures_dir=str(tmp_path / "figures"))
    directory = ex.write_outputs(config, "demo", {}, started=0.0, runs=runs + reused)
    payload = json.loads((directory / "results.json").read_text())
    assert payload["runs_computed"] == 4 and payload["runs_reused"] == 2
    assert [r["cached"] for r in payload["runs"]] == [False] * 4 + [True] * 2
    assert all(len(r["code"]) == 64 and r["computed_at"] for r in payload["runs"])
    assert payload["environment"]["installed_sha256"]


def test_results_file_refuses_runs_from_another_zoo_build(toy, tmp_path):
    record = ex.run_cached(toy, "task_arithmetic", {}, cache_dir=tmp_path, verbose=False)
    record.context["zoo_created"] = "2020-01-01 00:00:00"
    with pytest.raises(ValueError, match="computed on the zoo built 2020-01-01"):
        ex.check_runs_match_models([record], {"zoo_created": "2026-11-22 10:00:00", "zoo_dir": "/zoo"})
    ex.check_runs_match_models([record], {"zoo_created": "2020-01-01 00:00:00"})  # same build: fine


# ------------------------------------------------------------------------------------------ point 2: the exact mask
CONCRETE_RUNS = {
    "concrete_task_arithmetic": {"steps": 2, "eval_mask": "bernoulli"},
    "task_wise_concrete_adamerging": {"meta_steps": 2, "tta_steps": 2},
    "layer_wise_concrete_adamerging": {"meta_steps": 2, "tta_steps": 2, "eval_mask": "sample"},
}


def rebuilt_state(toy, method, record, mask):
    """The final model rebuilt from the saved run (coefficients, scaling) and ``mask``, as the method builds it."""
    layout = ParamLayout.of(toy.pretrained)
    theta0 = layout.flatten(toy.pretrained)
    flat_mask = layout.flatten(mask)
    if method == "concrete_task_arithmetic":
        _, summed = sum_task_vectors(
            toy.pretrained, toy.load_finetuned, toy.task_names, scaling=record.params["scaling"]
        )
        return apply_mask_flat(theta0, summed, flat_mask, layout)
    _, vectors = stack_task_vectors(toy.pretrained, toy.load_finetuned, toy.task_names)
    return merge_flat(theta0, vectors, record.tensor("coefficients"), layout, flat_mask)


@pytest.mark.parametrize("method", list(CONCRETE_RUNS))
def test_analyses_use_the_exact_mask_of_the_final_model(toy, tmp_path, method):
    params = {**CONCRETE_RUNS[method], **QUIET}
    record = ex.run_cached(toy, method, params, cache_dir=tmp_path, verbose=False)
    final = run_method(method, toy, **params).state  # deterministic: the very model the record scored
    layout = ParamLayout.of(toy.pretrained)
    mask = ex.mask_of(record, toy)
    assert record.extras["eval_mask"]["kind"] == params.get("eval_mask", "sample")
    torch.testing.assert_close(rebuilt_state(toy, method, record, mask), layout.flatten(final), rtol=0, atol=0)
    table = ex.masked_individual_table(toy, {method: record})
    assert len(table) == 2 * (len(toy.task_names) + 1)


def test_a_mask_that_cannot_be_reproduced_is_an_error_not_a_silent_redraw(toy, tmp_path):
    record = ex.run_cached(toy, "concrete_task_arithmetic", {"steps": 2, **QUIET}, cache_dir=tmp_path, verbose=False)
    record.extras["eval_mask"] = {**record.extras["eval_mask"], "seed": 12345}
    with pytest.raises(ValueError, match="differs from the one its final model used"):
        ex.mask_of(record, toy)
    plain = ex.run_cached(toy, "task_arithmetic", {}, cache_dir=tmp_path, verbose=False)
    with pytest.raises(ValueError, match="recorded no evaluation mask"):
        ex.mask_of(plain, toy)


# ------------------------------------------------------------------------------------------ point 3: no fallbacks
def test_mini_defaults_never_fall_back_silently(monkeypatch):
    from concrete_subspace.zoo import MINI_DEFAULTS

    assert ex.method_params("concrete_task_arithmetic")["steps"] == MINI_DEFAULTS["concrete_task_arithmetic"]["steps"]
    monkeypatch.setitem(sys.modules, "concrete_subspace.zoo", None)  # the zoo module fails to import
    with pytest.raises(ImportError):
        ex.mini_defaults()


def test_cached_tables_are_keyed_on_the_code_that_computes_them(tmp_path):
    log = types.SimpleNamespace(calls=[])  # not plain data: its changing content is not part of the fingerprint

    def compute_a():
        log.calls.append("a")
        return pd.DataFrame({"x": [1]})

    def compute_b():
        log.calls.append("b")
        return pd.DataFrame({"x": [2]})

    for fn in (compute_a, compute_b):
        fn.__module__ = "concrete_subspace.experiments"
    ex.cached_table(tmp_path, "t", {"k": 1}, compute_a)
    ex.cached_table(tmp_path, "t", {"k": 1}, compute_a)
    assert list(ex.cached_table(tmp_path, "t", {"k": 1}, compute_b)["x"]) == [2] and log.calls == ["a", "b"]


def test_results_json_records_the_lock_file_hash(toy, tmp_path):
    from concrete_subspace.provenance import default_lock_path

    config = ex.MultitaskConfig(figures_dir=str(tmp_path / "figures"))
    payload = json.loads((ex.write_outputs(config, "demo", {}, started=0.0) / "results.json").read_text())
    assert payload["environment"]["lock_sha256"] == hashlib.sha256(default_lock_path().read_bytes()).hexdigest()
    assert payload["device"]["cpu_capability"] and "kernel_env" in payload["device"]
