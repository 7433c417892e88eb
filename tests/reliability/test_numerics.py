"""Numerical robustness (issue 6, item 4): saturated logits, tiny temperatures, collapsed masks, bf16 task vectors.

Mask-level checks (sampling at ±1e4 and λ = 1e-3, rescaling an all-zero mask) are in tests/test_masks.py; here the
same extremes go through the loss and the whole methods. The bf16 check is on the toy problem; the same check on
the mini zoo belongs to the experiment owner.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from concrete_subspace.evaluation import average, evaluate
from concrete_subspace.loop import entropy, entropy_loss
from concrete_subspace.merging import task_arithmetic
from concrete_subspace.registry import run_method
from concrete_subspace.task_vectors import task_vector

QUIET = {"progress": False}


def test_entropy_reference_values():
    torch.testing.assert_close(entropy(torch.zeros(2, 5)), torch.full((2,), math.log(5)))
    p = torch.tensor([0.7, 0.2, 0.1])
    torch.testing.assert_close(entropy(p.log().unsqueeze(0)), -(p * p.log()).sum().unsqueeze(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_entropy_finite_for_saturated_logits_with_finite_gradient(dtype):
    logits = torch.tensor(
        [[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4], [3.0, -2.0, 1e4]], dtype=dtype, requires_grad=True
    )
    h = entropy(logits)
    assert h.dtype == torch.float32 and torch.isfinite(h).all()
    torch.testing.assert_close(h, torch.tensor([0.0, math.log(3), math.log(2), 0.0]), atol=1e-3, rtol=0)
    entropy_loss(logits).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("init_logit,temperature", [(-1e4, 1e-3), (1e4, 1e-3), (-1e4, 0.5), (1e4, 0.5)])
def test_cta_with_saturated_mask_logits_stays_finite(toy, init_logit, temperature):
    """A collapsed mask (≈0 everywhere) merges to ≈θ0; a saturated-on mask to task arithmetic; never NaN."""
    result = run_method(
        "concrete_task_arithmetic", toy, steps=3, lr=1e-2, init_logit=init_logit, temperature=temperature, **QUIET
    )
    assert all(torch.isfinite(v).all() for v in result.state.values())
    assert all(math.isfinite(row["loss"]) for row in result.history if "loss" in row)
    assert torch.isfinite(result.extras["mask_logits"]).all()
    target = (
        toy.pretrained
        if init_logit < 0
        else task_arithmetic(
            toy.pretrained, [task_vector(toy.pretrained, toy.load_finetuned(t)) for t in toy.task_names], 0.3
        )
    )
    for k, v in target.items():
        torch.testing.assert_close(result.state[k], v, atol=1e-5, rtol=1e-5)


def test_concrete_adamerging_with_tiny_temperature_stays_finite(toy):
    result = run_method(
        "layer_wise_concrete_adamerging", toy, meta_steps=3, tta_steps=3, temperature=1e-3, init_logit=-1e4, **QUIET
    )
    assert all(torch.isfinite(v).all() for v in result.state.values())
    assert torch.isfinite(result.extras["coefficients"]).all()


def test_non_finite_loss_stops_the_run_with_a_clear_error(toy):
    """A diverging run (here: a task vector scaled to overflow) raises instead of silently writing NaN logits."""
    huge = {k: v * 1e38 for k, v in toy.load_finetuned("task0").items()}
    problem = dataclasses.replace(toy, load_finetuned=lambda t: huge if t == "task0" else toy.load_finetuned(t))
    with pytest.raises(FloatingPointError, match=r"task 'task0': non-finite entropy .* at data step 0") as info:
        run_method("concrete_task_arithmetic", problem, steps=2, scaling=10.0, **QUIET)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name,params",
    [
        ("concrete_task_arithmetic", {"steps": 50, "lr": 1e-2}),
        ("layer_wise_adamerging", {"steps": 50, "lr": 1e-2}),
        ("layer_wise_concrete_adamerging", {"meta_steps": 30, "tta_steps": 30, "outer_lr": 1e-2}),
    ],
)
def test_bfloat16_task_vectors_same_accuracy_within_half_a_point(toy, name, params):
    accuracy = {
        dtype: average(evaluate(toy, run_method(name, toy, vector_dtype=dtype, **params, **QUIET).state))
        for dtype in ("float32", "bfloat16")
    }
    assert abs(accuracy["bfloat16"] - accuracy["float32"]) <= 0.5, accuracy


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize(
    "name,params",
    [
        ("task_arithmetic", {}),
        ("concrete_task_arithmetic", {"steps": 3, **QUIET}),
        ("layer_wise_adamerging", {"steps": 3, **QUIET}),
        ("layer_wise_concrete_adamerging", {"meta_steps": 2, "tta_steps": 2, **QUIET}),
    ],
)
def test_models_in_other_float_dtypes_merge_in_their_dtype(dtype, name, params):
    """A bf16 / fp16 / fp64 model: every method runs and returns merged weights in the model's dtype."""
    from toy import make_toy_problem

    toy = make_toy_problem(finetune_steps=20)
    toy.model.to(dtype)
    problem = dataclasses.replace(
        toy,
        pretrained={k: v.to(dtype) for k, v in toy.pretrained.items()},
        load_finetuned=lambda t: {k: v.to(dtype) for k, v in toy.load_finetuned(t).items()},
        unlabeled_batch=lambda t, s: toy.unlabeled_batch(t, s).to(dtype),
        eval_batches=lambda t: ((x.to(dtype), y) for x, y in toy.eval_batches(t)),
        task_logits=lambda t, f: toy.task_logits(t, f.float()),
    )
    state = run_method(name, problem, **params).state
    assert {v.dtype for v in state.values()} == {dtype}
    assert all(torch.isfinite(v).all() for v in state.values())
    assert 0 <= average(evaluate(problem, state)) <= 100
