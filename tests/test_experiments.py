"""experiments/ / reference.py / plotting.py on the toy problem: configs, parameters, run cache, tables, claims."""

from __future__ import annotations

import dataclasses
import json
import os

import pandas as pd
import pytest
import torch
from toy import make_toy_problem

from concrete_subspace import experiments as ex
from concrete_subspace import reference as ref


def test_config_coerces_lists_and_validates():
    cfg = ex.MultitaskConfig(tasks="a, b", methods=["task_arithmetic"])
    assert cfg.tasks == ("a", "b") and cfg.methods == ("task_arithmetic",)
    with pytest.raises(ValueError, match="scale"):
        ex.MultitaskConfig(scale="huge")
    with pytest.raises(ValueError, match="steps"):
        ex.MultitaskConfig(steps=-1)
    with pytest.raises(ValueError, match="smoke"):
        ex.MultitaskConfig(scale="paper", smoke=True)


def test_checkpoints_parameter_is_paper_only_and_on_every_vision_config():
    with_arch = [cls for cls in ex.CONFIGS.values() if "arch" in cls.__dataclass_fields__]
    assert len(with_arch) == 6 and all("checkpoints" in cls.__dataclass_fields__ for cls in with_arch)
    assert ex.MultitaskConfig(scale="paper", checkpoints="/ckpt").checkpoints == "/ckpt"
    with pytest.raises(ValueError, match="only at scale='paper'"):
        ex.MultitaskConfig(checkpoints="/ckpt")  # scale='mini' by default
    with pytest.raises(ValueError, match="only at scale='paper'"):
        ex.config_from(
            ex.AblationConfig,
            {f: getattr(ex.AblationConfig(), f) for f in ex.AblationConfig.__dataclass_fields__}
            | {"checkpoints": "/ckpt"},
        )
    with pytest.raises(TypeError, match="checkpoints"):
        ex.CurvesConfig(scale="paper", checkpoints="")
    with pytest.raises(ValueError, match="only at scale='paper'"):
        ex.load_problem("mini", checkpoints="/ckpt")  # before the zoo is touched


def test_layer_of_hf_and_open_clip_keys():
    hf = {
        "vision_model.encoder.layers.3.mlp.fc1.weight": "layer 3",
        "vision_model.embeddings.class_embedding": "embeddings",
        "vision_model.post_layernorm.weight": "post_layernorm",
    }
    oc = {
        "vision_model.transformer.resblocks.11.attn.in_proj_weight": "layer 11",
        "vision_model.conv1.weight": "embeddings",
        "vision_model.class_embedding": "embeddings",
        "vision_model.ln_pre.bias": "embeddings",
        "vision_model.ln_post.weight": "ln_post",
        "vision_model.proj": "proj",
    }
    assert {k: ex.layer_of(k) for k in {**hf, **oc}} == {**hf, **oc}


def test_config_from_names_missing_parameters():
    with pytest.raises(KeyError, match="lacks"):
        ex.config_from(ex.CurvesConfig, {"scale": "mini"})
    names = {f: getattr(ex.CurvesConfig(), f) for f in ex.CurvesConfig.__dataclass_fields__}
    assert ex.config_from(ex.CurvesConfig, {**names, "unrelated": 1}) == ex.CurvesConfig()
    with pytest.raises(TypeError, match="zoo_seed .* run_seed"):  # papermill -p seed 1 injects it silently
        ex.config_from(ex.CurvesConfig, {**names, "seed": 1})


def test_zoo_and_run_seeds_are_non_negative_ints():
    assert (ex.MultitaskConfig().zoo_seed, ex.MultitaskConfig().run_seed) == (0, 0)
    for bad in ({"zoo_seed": -1}, {"run_seed": 1.5}, {"run_seed": True}, {"zoo_seed": "1"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ex.CurvesConfig(**bad)


def test_method_params_steps_smoke_and_curves():
    smoke = ex.method_params("layer_wise_concrete_adamerging", smoke=True)
    assert smoke["meta_steps"] == smoke["tta_steps"] == ex.SMOKE_STEPS and smoke["eval_every"] == ex.SMOKE_STEPS
    fixed = ex.method_params("concrete_task_arithmetic", steps=50)
    assert fixed["steps"] == 50 and fixed["eval_every"] == 50 // ex.CURVE_POINTS
    assert "eval_every" not in ex.method_params("task_arithmetic")
    paper = ex.method_params("concrete_task_arithmetic", scale="paper")
    assert "steps" not in paper and paper["eval_every"] == 2000 // ex.CURVE_POINTS  # registry default: paper's 2000
    final_only = ex.method_params("concrete_task_arithmetic", steps=50, curves=False)
    assert final_only["eval_every"] == 0 and {**final_only, "eval_every": 10} == fixed
    assert "eval_every" not in ex.method_params("task_arithmetic", curves=False)
    with pytest.raises(KeyError, match="no parameter"):
        ex.method_params("task_arithmetic", overrides={"temperature": 1.0})


def test_run_cached_reuses_and_keys_on_parameters(tmp_path):
    problem = make_toy_problem()
    params = ex.method_params("concrete_task_arithmetic", steps=3)
    first = ex.run_cached(problem, "concrete_task_arithmetic", params, cache_dir=tmp_path, verbose=False)
    again = ex.run_cached(problem, "concrete_task_arithmetic", params, cache_dir=tmp_path, verbose=False)
    assert again.cached and not first.cached and again.scores == first.scores and again.key == first.key
    assert again.tensor("mask_logits").shape == first.tensor("mask_logits").shape
    other = ex.run_cached(
        problem, "concrete_task_arithmetic", {**params, "temperature": 1.0}, cache_dir=tmp_path, verbose=False
    )
    assert other.key != first.key
    quiet = ex.run_cached(
        problem, "concrete_task_arithmetic", {**params, "progress": True}, cache_dir=tmp_path, verbose=False
    )
    assert quiet.cached  # progress does not change the result, so it does not change the key
    spelled_out = ex.run_cached(
        problem,
        "concrete_task_arithmetic",
        {**params, "temperature": 0.5, "seed": 0},
        cache_dir=tmp_path,
        verbose=False,
    )
    assert spelled_out.cached and spelled_out.key == first.key  # registry defaults written out: the same run
    saved = json.loads((first.directory / "record.json").read_text())
    assert saved["params"]["steps"] == 3 and not (first.directory / "checkpoint").exists()


def test_tables_curves_and_claims(tmp_path):
    problem = make_toy_problem()
    runs = {
        m: ex.run_cached(problem, m, ex.method_params(m, steps=5), cache_dir=tmp_path, verbose=False)
        for m in ("task_arithmetic", "concrete_task_arithmetic", "layer_wise_concrete_adamerging")
    }
    table = pd.concat([ex.tidy_scores(m, r.scores) for m, r in runs.items()])
    wide = ex.wide(table)
    assert list(wide.columns)[-1] == "average" and list(wide.index) == list(runs)
    assert "| method |" in ex.to_markdown(wide)
    curves = ex.curves_table(runs)
    assert set(curves["stage"]) == {"concrete", "meta", "tta"}
    assert curves.groupby(["method", "stage"])["step"].max().min() == 5
    claims = ex.check_claims(
        {"a": 2.0, "b": 1.0},
        [ex.Claim("a beats b", "a", "b"), ex.Claim("b beats a", "b", "a"), ex.Claim("skipped", "a", "missing")],
    )
    assert list(claims["holds"]) == [True, False] and len(claims) == 2
    best = ex.best_method_claim({"individual": 99.0, "task_arithmetic": 50.0, "layer_wise_concrete_adamerging": 60.0})
    assert bool(best["holds"].iloc[0])


def test_masked_individual_and_eval_masks(tmp_path):
    problem = make_toy_problem()
    run = ex.run_cached(
        problem,
        "concrete_task_arithmetic",
        ex.method_params("concrete_task_arithmetic", steps=2),
        cache_dir=tmp_path,
        verbose=False,
    )
    masked = ex.masked_individual_table(problem, {"concrete_task_arithmetic": run})
    assert set(masked["model"]) == {"individual", "masked by Concrete Task Arithmetic"}
    kinds = ex.eval_mask_table(problem, run, ["sample", "expected", "hard"])
    sample = kinds[(kinds["eval_mask"] == "sample") & (kinds["task"] == "average")]["accuracy"].iloc[0]
    assert sample == pytest.approx(run.average)  # the run itself is evaluated with the 'sample' mask


def test_reference_data_is_shipped_and_labelled():
    table = ref.reference_long("clip_vit_b32_8tasks")
    assert {"zero_shot", "individual", "task_arithmetic", "layer_wise_concrete_adamerging"} <= set(table["method"])
    avg = table[(table["method"] == "layer_wise_concrete_adamerging") & (table["task"] == "average")]["accuracy"]
    assert avg.iloc[0] == pytest.approx(84.0)
    assert "subspace_fusion" in ref.readme()
    ours = pd.DataFrame({"method": ["task_arithmetic"], "task": ["average"], "accuracy": [70.0]})
    both = ref.beside(ours, table, on=["method", "task"])
    assert both["accuracy (published)"].iloc[0] == pytest.approx(69.0) and "published source" in both


def test_figures_save_png_and_pdf(tmp_path):
    from concrete_subspace import plotting as pl

    pl.temperature_figure(path=tmp_path / "t")
    assert (tmp_path / "t.png").stat().st_size > 0 and (tmp_path / "t.pdf").stat().st_size > 0


def test_set_threads_one_at_mini_cpu_env_overrides_and_bad_env_is_named(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(ex.THREADS_ENV, raising=False)
        assert ex.set_threads(ex.MultitaskConfig()) == 1
        monkeypatch.setenv(ex.THREADS_ENV, "2")
        assert ex.set_threads(ex.MultitaskConfig()) == 2
        monkeypatch.setenv(ex.THREADS_ENV, "two")
        with pytest.raises(ValueError, match="CONCRETE_SUBSPACE_THREADS"):
            ex.set_threads(ex.MultitaskConfig())
    finally:
        torch.set_num_threads(before)


def test_claims_are_looked_up_by_name():
    ta_claim, ties_claim = ex.claims("concrete_ta_beats_ta", "ties_beats_ta")
    assert (ta_claim.better, ta_claim.worse) == ("concrete_task_arithmetic", "task_arithmetic")
    assert ties_claim.better == "ties_merging" and list(ex.CLAIMS)[0] == "merging_interferes"
    with pytest.raises(KeyError, match="valid"):
        ex.claims("concrete_ta_beats_everything")


def test_setup_builds_the_config_and_prepares_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    params = {f.name: f.default for f in dataclasses.fields(ex.CurvesConfig)}
    config, out, started = ex.setup("05_curves", {**params, "smoke": True, "figures_dir": str(tmp_path)})
    assert isinstance(config, ex.CurvesConfig) and config.smoke and out == tmp_path / "mini-smoke" / "05_curves"
    assert out.is_dir() and started > 0 and os.environ["HF_HUB_OFFLINE"] == "1"


def test_runs_without_curves_keep_their_final_scores(tmp_path):
    """curves=False only drops the evaluations along the run: same final scores, no accuracy rows, its own key."""
    problem = make_toy_problem()
    config = ex.CurvesConfig(steps=6, cache_dir=str(tmp_path))
    methods = ("concrete_task_arithmetic", "layer_wise_adamerging", "layer_wise_concrete_adamerging")
    with_curves = ex.run_methods(problem, methods, config)
    final_only = ex.run_methods(problem, methods, config, curves=False)
    for name in methods:
        assert final_only[name].key != with_curves[name].key and not final_only[name].cached
        assert final_only[name].scores == with_curves[name].scores, name
        assert any("avg_accuracy" in row for row in with_curves[name].history), name
        assert not any("avg_accuracy" in row for row in final_only[name].history), name


def test_multitask_seeds_keep_curves_for_the_first_seed_only(tmp_path, monkeypatch):
    from concrete_subspace.experiments import runners

    monkeypatch.setattr(runners, "problem_for", lambda config, **kwargs: make_toy_problem())
    config = ex.MultitaskConfig(
        steps=4, seeds=(0, 1), methods=("task_arithmetic", "concrete_task_arithmetic"), cache_dir=str(tmp_path)
    )
    _, records = runners.run_multitask_seeds(config)
    assert set(records) == {"task_arithmetic", "concrete_task_arithmetic", "concrete_task_arithmetic@seed1"}
    assert records["concrete_task_arithmetic"].params["eval_every"] > 0  # notebooks 05 and 06 reuse this run
    assert records["concrete_task_arithmetic@seed1"].params["eval_every"] == 0
    assert [records[k].params["seed"] for k in ("concrete_task_arithmetic", "concrete_task_arithmetic@seed1")] == [0, 1]


def test_run_seed_seeds_the_runs_and_zoo_seed_picks_the_zoo(tmp_path, monkeypatch):
    """run_seed reaches the test-time methods' ``seed`` (so it is in the run's key); zoo_seed only picks the models."""
    from concrete_subspace.experiments import problems

    problem = make_toy_problem()
    first, second = (
        ex.run_methods(
            problem, ("concrete_task_arithmetic",), ex.CurvesConfig(steps=2, run_seed=s, cache_dir=str(tmp_path))
        )
        for s in (0, 1)
    )
    assert (
        first["concrete_task_arithmetic"].params["seed"] == 0 and second["concrete_task_arithmetic"].params["seed"] == 1
    )
    assert first["concrete_task_arithmetic"].key != second["concrete_task_arithmetic"].key
    loaded = []
    monkeypatch.setattr(problems, "ensure_zoo", lambda seed, smoke, progress: loaded.append(seed) or tmp_path)
    monkeypatch.setattr("concrete_subspace.zoo.load_zoo_problem", lambda directory, **kw: loaded.append(kw["seed"]))
    ex.problem_for(ex.CurvesConfig(zoo_seed=3, run_seed=5))
    assert loaded == [3, 5]  # the zoo of seed 3, its test batches ordered by run seed 5
