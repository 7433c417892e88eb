"""The fast library code against the executable specification (concrete_subspace/spec.py) on the toy problem.

Every test-time method of the registry and every option that changes what it computes (variant, clamp,
persist_inner_optimizer, inner_uses_previous_weights, eval_mask, init, init_logit, weight_decay, AdaMerging++) runs
a few steps in both, with the same seed, so both draw the same uniforms from the same generator streams.

Tolerances: where both compute the same operations in the same order the comparison is exact (``torch.equal``): the
mask sample, the evaluation masks, task arithmetic. The loops are compared with tolerances: the fast code computes
the same quantities in another order (λΣτ summed once, a matrix product for Σ_i w_i τ_i, per-tensor means by
``segment_reduce``, a fused rescale-and-merge with its own backward, all tasks in one batched forward), so losses and
gradients differ in their last float32 bits (~1e-7 relative), and a few Adam steps carry that over. Merged states and
coefficients: ``STATE_TOLERANCE`` (largest difference measured over these tests: 5e-6, on entries of order 1). Mask
logits: ``LOGIT_TOLERANCE``, 1% of one Adam step at the logits' lr of 1e-2 used throughout; where a logit's gradient
is near Adam's ε (1e-8) a last-bit change of the gradient moves that step a little (largest measured: 2.4e-5, 0.24%
of a step). Another seed's run differs by whole steps (2e-2 on the logits, 0.8 on the state after one step;
``test_the_comparison_notices_a_different_run``).
"""

from __future__ import annotations

import pytest
import torch

from concrete_subspace import masks, spec
from concrete_subspace.registry import run_method
from concrete_subspace.task_vectors import ParamLayout

STATE_TOLERANCE = {"atol": 2e-5, "rtol": 2e-5}
LOGIT_TOLERANCE = {"atol": 1e-4, "rtol": 0.0}  # 1% of one Adam step at lr 1e-2
QUIET = {"progress": False}


def flat(state: dict) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in state.values()])


def assert_matches(fast, reference) -> None:
    """The library's MergeResult equals the spec's SpecResult: merged state, mask logits, coefficients."""
    assert fast.state.keys() == reference.state.keys()
    for key in reference.state:
        torch.testing.assert_close(
            fast.state[key], reference.state[key], **STATE_TOLERANCE, msg=lambda m, key=key: f"{key}: {m}"
        )
    if reference.mask_logits is not None:
        torch.testing.assert_close(fast.extras["mask_logits"], flat(reference.mask_logits), **LOGIT_TOLERANCE)
    if reference.coefficients is not None:
        torch.testing.assert_close(fast.extras["coefficients"], reference.coefficients, **STATE_TOLERANCE)


def run_both(problem, name: str, **params):
    return run_method(name, problem, **params, **QUIET), spec.SPEC_METHODS[name](problem, **params)


# ---------------------------------------------------------------------------------------------------------------
# Exact: the same operations in the same order
# ---------------------------------------------------------------------------------------------------------------
def test_concrete_sample_is_the_library_sample_bit_for_bit(toy):
    layout = ParamLayout.of(toy.pretrained)
    logits = torch.randn(layout.num_params, generator=torch.Generator().manual_seed(1)) * 3
    fast = masks.sample_concrete(logits, 0.5, torch.Generator().manual_seed(7))
    plain = spec.concrete_sample(layout.unflatten(logits), 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(fast, flat(plain))


@pytest.mark.parametrize("kind", spec.EVAL_MASKS)
def test_evaluation_masks_are_the_library_masks_bit_for_bit(toy, kind):
    layout = ParamLayout.of(toy.pretrained)
    logits = torch.randn(layout.num_params, generator=torch.Generator().manual_seed(2))
    fast = masks.evaluation_mask(logits, kind, temperature=0.5, generator=torch.Generator().manual_seed(11))
    assert torch.equal(fast, flat(spec.evaluation_mask(layout.unflatten(logits), kind, 0.5, seed=11)))


def test_task_arithmetic_is_the_registry_result_bit_for_bit(toy):
    theta0, vectors = spec.pretrained_and_task_vectors(toy)
    fast = run_method("task_arithmetic", toy, scaling=0.4).state
    plain = spec.task_arithmetic(theta0, vectors, 0.4)
    assert fast.keys() == plain.keys() and all(torch.equal(fast[k], plain[k]) for k in plain)


# ---------------------------------------------------------------------------------------------------------------
# The loops: a few steps of every method and option
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,params",
    [
        ("task_wise_adamerging", {"steps": 5, "lr": 5e-2}),
        ("layer_wise_adamerging", {"steps": 5, "lr": 5e-2}),
        ("layer_wise_adamerging", {"steps": 5, "lr": 5e-2, "clamp": False, "init": 1.5}),
        ("task_wise_adamerging_pp", {"steps": 4, "lr": 5e-2}),
        ("layer_wise_adamerging_pp", {"steps": 4, "lr": 5e-2, "ties_density": 0.5}),
    ],
)
def test_adamerging_matches_the_spec(toy, name, params):
    assert_matches(*run_both(toy, name, **params))


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"eval_mask": "expected", "temperature": 1.0},
        {"eval_mask": "hard", "init_logit": 0.5},
        {"eval_mask": "bernoulli", "weight_decay": 0.1, "betas": (0.8, 0.99)},
        {"scaling": 0.6, "seed": 3},
    ],
)
def test_concrete_task_arithmetic_matches_the_spec(toy, params):
    assert_matches(*run_both(toy, "concrete_task_arithmetic", **{"steps": 5, "lr": 1e-2, **params}))


CAM_OPTIONS = [
    {},
    {"variant": "fusion_bench"},
    {"variant": "fusion_bench", "clamp": True},
    {"variant": "paper", "clamp": False, "init": 0.2},
    {"persist_inner_optimizer": False},
    {"inner_uses_previous_weights": True},
    {"inner_uses_previous_weights": True, "persist_inner_optimizer": False, "variant": "fusion_bench"},
    {"eval_mask": "hard"},
    {"eval_mask": "expected", "init_logit": -0.3},
    {"eval_mask": "bernoulli", "temperature": 0.7},
]


@pytest.mark.parametrize("name", ["task_wise_concrete_adamerging", "layer_wise_concrete_adamerging"])
@pytest.mark.parametrize("options", CAM_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "paper")
def test_concrete_adamerging_matches_the_spec(toy, name, options):
    steps = {"meta_steps": 4, "tta_steps": 4, "inner_lr": 1.0, "outer_lr": 1e-2, "tta_lr": 5e-2, "seed": 2}
    assert_matches(*run_both(toy, name, **{**steps, **options}))


def test_the_comparison_notices_a_different_run(toy):
    """Not vacuous: another seed (another mask sample) is far outside the tolerance after a single step."""
    fast = run_method("concrete_task_arithmetic", toy, steps=1, lr=1e-2, seed=0, **QUIET)
    other = spec.concrete_task_arithmetic(toy, steps=1, lr=1e-2, seed=1)
    with pytest.raises(AssertionError):
        assert_matches(fast, other)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda p: spec.concrete_adamerging(p, variant="x", meta_steps=0, tta_steps=0), "unknown variant 'x'"),
        (lambda p: spec.adamerging(p, granularity="block", steps=0), "granularity must be one of"),
        (lambda p: spec.concrete_task_arithmetic(p, steps=0, eval_mask="soft"), "unknown eval_mask 'soft'"),
    ],
)
def test_the_spec_refuses_unknown_options_in_one_line(toy, call, message):
    with pytest.raises(ValueError, match=message) as error:
        call(toy)
    assert "\n" not in str(error.value)
