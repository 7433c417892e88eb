"""Bad inputs fail early with one clear line that names the problem (issue 6, item 1)."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from concrete_subspace.data.batching import step_indices
from concrete_subspace.evaluation import evaluate
from concrete_subspace.problem import MergeProblem
from concrete_subspace.registry import UnknownMethodError, get_method, resolve_params, run_method
from concrete_subspace.task_vectors import StateDictError, ZeroTaskVectorWarning

QUIET = {"progress": False}
TEST_TIME = {
    "concrete_task_arithmetic": {"steps": 1},
    "layer_wise_adamerging": {"steps": 1},
    "layer_wise_concrete_adamerging": {"meta_steps": 1, "tta_steps": 1},
}


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message and message.strip(), repr(message)
    return message


def with_finetuned(problem, task, edit):
    """The problem with ``edit(state)`` applied to the fine-tuned state of ``task``."""

    def load(name):
        state = problem.load_finetuned(name)
        return edit(state) if name == task else state

    return dataclasses.replace(problem, load_finetuned=load)


def drop(key):
    def edit(state):
        del state[key]
        return state

    return edit


def put(key, value):
    def edit(state):
        state[key] = value(state[key])
        return state

    return edit


def nan_at(state_value):
    v = state_value.clone()
    v.view(-1)[3] = float("nan")
    return v


def inf_at(state_value):
    v = state_value.clone()
    v.view(-1)[0] = -float("inf")
    return v


BAD_MODELS = {
    "missing key": (drop("fc2.bias"), r"fine-tuned model 'task1': missing key 'fc2\.bias'"),
    "extra key": (
        lambda s: {**s, "fc3.weight": torch.zeros(2)},
        r"fine-tuned model 'task1': unexpected key 'fc3\.weight'",
    ),
    "shape": (put("fc1.weight", lambda v: v.T.contiguous()), r"'task1': shape mismatch for 'fc1\.weight': \(8, 16\)"),
    "dtype": (put("fc1.bias", lambda v: v.double()), r"'task1': dtype mismatch for 'fc1\.bias': torch\.float64"),
    "nan": (put("fc1.weight", nan_at), r"'task1': non-finite values \(NaN/Inf\) in 'fc1\.weight'"),
    "inf": (put("fc2.weight", inf_at), r"'task1': non-finite values \(NaN/Inf\) in 'fc2\.weight'"),
}


@pytest.mark.parametrize("method", ["task_arithmetic", "ties_merging", "weight_averaging", *TEST_TIME])
@pytest.mark.parametrize("bad", list(BAD_MODELS))
def test_incompatible_or_non_finite_model_is_refused_naming_task_and_key(toy, method, bad):
    edit, message = BAD_MODELS[bad]
    with pytest.raises(StateDictError, match=message) as info:
        run_method(
            method,
            with_finetuned(toy, "task1", edit),
            **TEST_TIME.get(method, {}),
            **(QUIET if method in TEST_TIME else {}),
        )
    one_line(info)


@pytest.mark.parametrize("method", ["task_arithmetic", "concrete_task_arithmetic"])
def test_non_finite_pretrained_is_refused(toy, method):
    pretrained = {k: v.clone() for k, v in toy.pretrained.items()}
    pretrained["fc2.bias"][1] = float("nan")
    with pytest.raises(
        StateDictError, match=r"pre-trained model: non-finite values \(NaN/Inf\) in 'fc2\.bias'"
    ) as info:
        run_method(
            method,
            dataclasses.replace(toy, pretrained=pretrained),
            **TEST_TIME.get(method, {}),
            **(QUIET if method in TEST_TIME else {}),
        )
    one_line(info)


@pytest.mark.parametrize("method", ["task_arithmetic", "concrete_task_arithmetic"])
def test_finetuned_identical_to_pretrained_warns(toy, method):
    problem = dataclasses.replace(
        toy, load_finetuned=lambda t: dict(toy.pretrained) if t == "task2" else toy.load_finetuned(t)
    )
    with pytest.warns(ZeroTaskVectorWarning, match="'task2'.*all zeros"):
        run_method(method, problem, **TEST_TIME.get(method, {}), **(QUIET if method in TEST_TIME else {}))


def test_no_zero_vector_warning_for_real_models(toy):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroTaskVectorWarning)
        run_method("task_arithmetic", toy)


# ---------------------------------------------------------------------------------------------------------------
# Hyperparameters: checked before any model is loaded
# ---------------------------------------------------------------------------------------------------------------
def never_loads(problem):
    def load(task):
        raise AssertionError("a fine-tuned model was loaded before the parameters were checked")

    return dataclasses.replace(problem, load_finetuned=load)


@pytest.mark.parametrize(
    "method", ["concrete_task_arithmetic", "task_wise_concrete_adamerging", "layer_wise_concrete_adamerging"]
)
@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_temperature_is_refused(toy, method, temperature):
    with pytest.raises(ValueError, match="temperature must be a positive finite number") as info:
        run_method(method, never_loads(toy), temperature=temperature, **QUIET)
    one_line(info)


@pytest.mark.parametrize(
    "method", ["layer_wise_adamerging", "task_wise_adamerging_pp", "layer_wise_concrete_adamerging"]
)
@pytest.mark.parametrize("init", [-0.1, 1.5])
def test_init_outside_unit_interval_with_clamp_is_refused(toy, method, init):
    with pytest.raises(ValueError, match=rf"init={init} is outside \[0, 1\] while clamp=True") as info:
        run_method(method, never_loads(toy), init=init, **QUIET)
    one_line(info)


def test_init_outside_unit_interval_allowed_without_clamp(toy):
    run_method("layer_wise_adamerging", toy, init=1.5, clamp=False, steps=1, **QUIET)
    run_method(
        "layer_wise_concrete_adamerging", toy, init=-0.2, variant="fusion_bench", meta_steps=1, tta_steps=1, **QUIET
    )


@pytest.mark.parametrize(
    "method,params,message",
    [
        (
            "layer_wise_concrete_adamerging",
            {"variant": "fusionbench"},
            r"unknown variant 'fusionbench'; choose one of \['paper', 'fusion_bench'\]",
        ),
        (
            "concrete_task_arithmetic",
            {"eval_mask": "threshold"},
            r"unknown eval_mask 'threshold'; choose one of \['sample'",
        ),
        ("layer_wise_concrete_adamerging", {"eval_mask": "Hard"}, r"unknown eval_mask 'Hard'"),
        (
            "concrete_task_arithmetic",
            {"vector_dtype": "bf16"},
            r"unknown dtype 'bf16'; choose one of \['float32', 'bfloat16'",
        ),
        ("concrete_task_arithmetic", {"steps": -1}, r"number of steps must be >= 0, got -1"),
        ("layer_wise_adamerging", {"steps": -5}, r"number of steps must be >= 0, got -5"),
    ],
)
def test_bad_choice_is_refused_with_the_valid_ones(toy, method, params, message):
    with pytest.raises(ValueError, match=message) as info:
        run_method(method, toy, **QUIET, **params)
    one_line(info)


def test_bad_granularity_is_refused():
    from concrete_subspace.adamerging import init_coefficients

    with pytest.raises(ValueError, match=r"granularity must be one of \('task', 'layer'\), got 'block'"):
        init_coefficients(3, 4, "block")


@pytest.mark.parametrize(
    "params,message",
    [
        (
            {"steps": "10"},
            r"parameter 'steps' of method 'concrete_task_arithmetic' must be int \(default 2000\), got str '10'",
        ),
        ({"lr": "1e-3"}, r"parameter 'lr' .* must be float \(default 0\.001\), got str '1e-3'"),
        ({"progress": "False"}, r"parameter 'progress' .* must be bool \(default True\), got str 'False'"),
        ({"steps": 10.0}, r"parameter 'steps' .* must be int"),
        ({"steps": True}, r"parameter 'steps' .* must be int"),
        ({"betas": 0.9}, r"parameter 'betas' .* must be sequence of 2"),
        ({"vector_dtype": 16}, r"parameter 'vector_dtype' .* must be str"),
    ],
)
def test_parameter_of_the_wrong_type_is_refused(toy, params, message):
    """What a hand-typed notebook / papermill parameter would look like (e.g. ``-p steps 10`` passed as text)."""
    with pytest.raises(TypeError, match=message) as info:
        run_method("concrete_task_arithmetic", never_loads(toy), **params)
    one_line(info)


@pytest.mark.parametrize(
    "method,params,message",
    [
        (
            "layer_wise_concrete_adamerging",
            {"clamp": "False"},
            r"parameter 'clamp' .* must be bool \(default None\), got str 'False'",
        ),
        (
            "task_wise_adamerging",
            {"ties_density": "0.2"},
            r"parameter 'ties_density' .* must be float \(default None\)",
        ),
    ],
)
def test_optional_parameter_of_the_wrong_type_is_refused(toy, method, params, message):
    with pytest.raises(TypeError, match=message):
        run_method(method, never_loads(toy), **params)


def test_optional_parameters_accept_none_and_their_type(toy, tmp_path):
    run_method("layer_wise_concrete_adamerging", toy, clamp=None, meta_steps=1, tta_steps=1, **QUIET)
    run_method("layer_wise_concrete_adamerging", toy, clamp=False, meta_steps=1, tta_steps=1, **QUIET)
    run_method(
        "task_wise_adamerging", toy, ties_density=0.5, steps=1, checkpoint_dir=tmp_path, **QUIET
    )  # a Path is fine


def test_numpy_scalars_and_lists_are_accepted(toy):
    result = run_method(
        "concrete_task_arithmetic",
        toy,
        steps=np.int64(1),
        lr=np.float64(1e-3),
        scaling=1,
        betas=[0.9, 0.99],
        progress=np.bool_(False),
    )
    assert type(result.params["steps"]) is int and type(result.params["progress"]) is bool


# ---------------------------------------------------------------------------------------------------------------
# Names: unknown methods and parameters list the valid ones and suggest the closest
# ---------------------------------------------------------------------------------------------------------------
def test_unknown_method_lists_valid_and_suggests_closest(toy):
    with pytest.raises(UnknownMethodError) as info:
        run_method("concrete_task_arithmetc", toy)
    message = one_line(info)
    assert "unknown method 'concrete_task_arithmetc'" in message
    assert "Did you mean 'concrete_task_arithmetic'?" in message
    assert "Valid methods: weight_averaging, task_arithmetic, ties_merging" in message
    with pytest.raises(KeyError):  # also a KeyError, for code that catches lookups
        get_method("nope")


def test_unknown_parameter_lists_valid_and_suggests_closest(toy):
    with pytest.raises(UnknownMethodError) as info:
        run_method("concrete_task_arithmetic", toy, temprature=0.5)
    message = one_line(info)
    assert "unknown parameter 'temprature' for method 'concrete_task_arithmetic'" in message
    assert "Did you mean 'temperature'?" in message and "Valid parameters: scaling, temperature, lr" in message
    with pytest.raises(UnknownMethodError, match="unknown parameter 'granularity'"):  # fixed by the registry entry
        resolve_params("layer_wise_concrete_adamerging", {"granularity": "task"})
    with pytest.raises(UnknownMethodError, match="Valid parameters: scaling, density"):
        resolve_params("ties_merging", {"k": 0.2})


# ---------------------------------------------------------------------------------------------------------------
# Data: empty, exhausted, or missing heads
# ---------------------------------------------------------------------------------------------------------------
def test_empty_evaluation_set_raises(toy):
    empty = dataclasses.replace(toy, eval_batches=lambda task: iter(()))
    with pytest.raises(ValueError, match="task 'task0': evaluation data is empty") as info:
        evaluate(empty)
    one_line(info)
    with pytest.raises(ValueError, match="evaluation data is empty"):  # also inside a run with accuracy curves
        run_method("concrete_task_arithmetic", empty, steps=1, eval_every=1, **QUIET)


@pytest.mark.parametrize("method", list(TEST_TIME))
def test_empty_unlabeled_set_fails_before_loading_models(toy, method):
    empty = never_loads(dataclasses.replace(toy, unlabeled_batch=lambda task, step: torch.zeros(0, 8)))
    with pytest.raises(ValueError, match="task 'task0': the unlabeled batch of step 0 is empty") as info:
        run_method(method, empty, **TEST_TIME[method], **QUIET)
    one_line(info)


def test_unlabeled_batch_empty_later_raises_instead_of_nan(toy):
    def batch(task, step):
        return toy.unlabeled_batch(task, step)[: 0 if step == 3 else None]

    with pytest.raises(ValueError, match="the unlabeled batch of step 3 is empty"):
        run_method("concrete_task_arithmetic", dataclasses.replace(toy, unlabeled_batch=batch), steps=5, **QUIET)


def test_exhausted_unlabeled_data_raises_not_hangs(toy):
    def batch(task, step):
        if step >= 2:
            raise StopIteration
        return toy.unlabeled_batch(task, step)

    with pytest.raises(RuntimeError, match="task 'task0': unlabeled data exhausted at step 2") as info:
        run_method("layer_wise_adamerging", dataclasses.replace(toy, unlabeled_batch=batch), steps=5, **QUIET)
    one_line(info)


def test_step_indices_of_empty_dataset_raises():
    with pytest.raises(ValueError, match=r"empty dataset \(n=0\)"):
        step_indices(0, 16, 0, 0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        step_indices(10, 0, 0, 0)


def test_task_without_head_fails_before_loading_models(toy):
    ghost = never_loads(
        dataclasses.replace(
            toy,
            task_names=(*toy.task_names, "ghost"),  # data, but no head
            unlabeled_batch=lambda task, step: toy.unlabeled_batch("task0", step),
        )
    )
    with pytest.raises(ValueError, match="task 'ghost' has no head") as info:
        run_method("layer_wise_concrete_adamerging", ghost, meta_steps=1, tta_steps=1, **QUIET)
    one_line(info)
    ghost = dataclasses.replace(ghost, eval_batches=lambda task: toy.eval_batches("task0"))
    with pytest.raises(ValueError, match="task 'ghost' has no head") as info:
        evaluate(ghost, tasks=["ghost"])
    one_line(info)


def test_data_hungry_baselines_need_training_data(toy):
    for method in ("fisher_merging", "regmean"):
        with pytest.raises(ValueError, match=f"{method} needs training data: this MergeProblem has no train_batches"):
            run_method(method, dataclasses.replace(toy, train_batches=None), progress=False)


def test_merge_problem_validates_its_tasks(toy):
    with pytest.raises(ValueError, match="at least one task"):
        dataclasses.replace(toy, task_names=())
    with pytest.raises(ValueError, match=r"duplicates: \['task0', 'task0'\]"):
        dataclasses.replace(toy, task_names=("task0", "task0"))
    with pytest.raises(ValueError, match="no float tensors"):
        MergeProblem(
            toy.model, {}, toy.task_names, toy.load_finetuned, toy.task_logits, toy.unlabeled_batch, toy.eval_batches
        )


# ---------------------------------------------------------------------------------------------------------------
# Zoo directories (API of concrete_subspace.zoo)
# ---------------------------------------------------------------------------------------------------------------
def test_incomplete_or_other_version_zoo_is_refused(tmp_path):
    zoo = pytest.importorskip("concrete_subspace.zoo")
    with pytest.raises(FileNotFoundError, match="is not a complete mini zoo") as info:
        zoo.load_zoo_problem(tmp_path)
    one_line(info)
    (tmp_path / zoo.MANIFEST).write_text(json.dumps({"format_version": zoo.ZOO_FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match=rf"format_version {zoo.ZOO_FORMAT_VERSION + 1}, this package reads") as info:
        zoo.load_zoo_problem(tmp_path)
    one_line(info)
