"""Merges: hand-computed TIES and task arithmetic, masked merge identities, flat path ≡ dict path, the registry."""

from __future__ import annotations

import pytest
import torch

from concrete_subspace.masks import rescale, sample_concrete
from concrete_subspace.merging import (
    combine,
    disjoint_sum,
    elect_sign,
    masked_merge,
    merge_flat,
    task_arithmetic,
    ties_flat,
    ties_merging,
    ties_preprocess,
    trim_top_k,
    weight_averaging,
)
from concrete_subspace.registry import METHODS, get_method, run_method
from concrete_subspace.task_vectors import ParamLayout, task_vector

# Three task vectors of 5 entries; hand-worked TIES at density 0.2 (k = 5 − int(1.0) = 4: keep |x| ≥ 4th smallest |x|).
VECTORS = torch.tensor(
    [
        [1.0, -2.0, 3.0, -4.0, 0.5],  # 4th smallest |x| = 3 -> keep 3, -4
        [2.0, 2.0, -1.0, 2.0, 0.0],  # 4th smallest |x| = 2, a three-way tie: all three 2s kept
        [-3.0, -2.0, 0.5, 1.0, 0.0],
    ]
)  # 4th smallest |x| = 2 -> keep -3, -2
TRIMMED = torch.tensor([[0.0, 0.0, 3.0, -4.0, 0.0], [2.0, 2.0, 0.0, 2.0, 0.0], [-3.0, -2.0, 0.0, 0.0, 0.0]])
# column sums [-1, 0, 3, -2, 0] -> signs [-1, 0, 1, -1, 0]; Σ signs = −1, so the zero columns take −1 (majority).
SIGN = torch.tensor([-1.0, -1.0, 1.0, -1.0, -1.0])
MERGED = torch.tensor([-3.0, -2.0, 3.0, -4.0, 0.0])  # disjoint SUM of the entries agreeing with the elected sign


def test_trim_keeps_top_fraction_and_ties_at_threshold():
    assert torch.equal(trim_top_k(VECTORS, 0.2), TRIMMED)


def test_trim_density_one_keeps_everything():
    assert torch.equal(trim_top_k(VECTORS, 1.0), VECTORS)


@pytest.mark.parametrize("density", [-0.1, 1.5])
def test_trim_density_outside_unit_interval_is_refused(density):
    with pytest.raises(
        ValueError, match=rf"TIES density \(fraction of entries kept\) must be in \[0, 1\], got {density}"
    ):
        trim_top_k(VECTORS, density)


def test_elect_sign_zero_sum_takes_majority_sign():
    assert torch.equal(elect_sign(TRIMMED), SIGN)


def test_elect_sign_positive_majority():
    trimmed = torch.tensor([[1.0, -1.0, 2.0], [-1.0, 1.0, 3.0]])  # sums [0, 0, 5] -> majority +1
    assert torch.equal(elect_sign(trimmed), torch.tensor([1.0, 1.0, 1.0]))


def test_disjoint_sum_adds_only_agreeing_entries():
    assert torch.equal(disjoint_sum(TRIMMED, SIGN), MERGED)
    assert torch.equal(ties_flat(VECTORS, 0.2), MERGED)


def test_ties_preprocess_rows_sum_to_the_ties_merge():
    processed = ties_preprocess(VECTORS, 0.2)
    assert torch.equal(
        processed, torch.tensor([[0.0, 0.0, 3.0, -4.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [-3.0, -2.0, 0.0, 0.0, 0.0]])
    )
    assert torch.equal(processed.sum(0), MERGED)


def test_ties_merging_flattens_across_all_tensors():
    """Trimming is global over the concatenated float tensors, not per tensor."""
    layout = ParamLayout(("a", "b"), (torch.Size([3]), torch.Size([1, 2])))
    vectors = [layout.unflatten(row.clone()) for row in VECTORS]
    pre = {"a": torch.tensor([10.0, 20.0, 30.0]), "b": torch.tensor([[40.0, 50.0]]), "step": torch.tensor(7)}
    out = ties_merging(pre, vectors, scaling=0.5, density=0.2)
    expected = layout.unflatten(layout.flatten(pre) + 0.5 * MERGED)
    assert torch.equal(out["a"], expected["a"]) and torch.equal(out["b"], expected["b"])
    assert out["step"] is pre["step"]


def test_task_arithmetic_by_hand():
    pre = {"w": torch.tensor([1.0, 2.0])}
    tvs = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, -2.0])}]
    assert torch.equal(task_arithmetic(pre, tvs, 0.5)["w"], torch.tensor([1.5, 1.0]))
    assert torch.equal(task_arithmetic(pre, iter(tvs), 0.3)["w"], pre["w"] + 0.3 * (tvs[0]["w"] + tvs[1]["w"]))
    assert torch.equal(tvs[0]["w"], torch.tensor([1.0, 0.0]))  # inputs untouched


def test_task_arithmetic_needs_a_vector():
    with pytest.raises(ValueError, match="at least one task vector"):
        task_arithmetic({"w": torch.zeros(1)}, [])
    with pytest.raises(ValueError, match="at least one task vector"):
        weight_averaging({"w": torch.zeros(1)}, [])


def test_weight_averaging_is_mean_of_models():
    pre = {"w": torch.tensor([1.0, 2.0, 3.0])}
    models = [
        {"w": torch.tensor([2.0, 2.0, 0.0])},
        {"w": torch.tensor([0.0, 5.0, 3.0])},
        {"w": torch.tensor([1.0, -1.0, 3.0])},
    ]
    out = weight_averaging(pre, (task_vector(pre, m) for m in models))
    torch.testing.assert_close(out["w"], torch.stack([m["w"] for m in models]).mean(0))


def toy_state(seed: int):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g), "c": torch.randn(1, generator=g)}


def test_all_ones_mask_is_task_arithmetic():
    pre = toy_state(0)
    tvs = [toy_state(1), toy_state(2), toy_state(3)]
    ones = {k: torch.ones_like(v) for k, v in pre.items()}
    masked = masked_merge(pre, tvs, [0.3] * 3, ones)
    ta = task_arithmetic(pre, tvs, 0.3)
    for k in pre:
        torch.testing.assert_close(masked[k], ta[k])
    layout = ParamLayout.of(pre)
    flat = merge_flat(
        layout.flatten(pre),
        torch.stack([layout.flatten(v) for v in tvs]),
        torch.full((3,), 0.3),
        layout,
        torch.ones(layout.num_params),
    )
    torch.testing.assert_close(flat, layout.flatten(ta))


def test_constant_mask_is_task_arithmetic_after_rescaling():
    pre, tvs = toy_state(0), [toy_state(1)]
    half = {k: torch.full_like(v, 0.25) for k, v in pre.items()}
    for k, v in masked_merge(pre, tvs, [1.0], half).items():
        torch.testing.assert_close(v, task_arithmetic(pre, tvs, 1.0)[k])


def test_zero_coefficients_give_pretrained():
    pre = toy_state(0)
    tvs = [toy_state(1), toy_state(2)]
    layout = ParamLayout.of(pre)
    mask = layout.unflatten(torch.rand(layout.num_params, generator=torch.Generator().manual_seed(4)))
    for k, v in masked_merge(pre, tvs, [0.0, 0.0], mask).items():
        assert torch.equal(v, pre[k])
    for k, v in task_arithmetic(pre, tvs, 0.0).items():
        assert torch.equal(v, pre[k])
    theta0 = layout.flatten(pre)
    stacked = torch.stack([layout.flatten(v) for v in tvs])
    assert torch.equal(merge_flat(theta0, stacked, torch.zeros(2), layout, layout.flatten(mask)), theta0)
    assert torch.equal(merge_flat(theta0, stacked, torch.zeros(2, 3), layout), theta0)


def test_flat_merge_equals_dict_merge_task_wise():
    pre = toy_state(0)
    tvs = [toy_state(1), toy_state(2), toy_state(3)]
    layout = ParamLayout.of(pre)
    flat_mask = sample_concrete(
        torch.randn(layout.num_params, generator=torch.Generator().manual_seed(5)),
        0.5,
        torch.Generator().manual_seed(6),
    )
    w = torch.tensor([0.2, 0.5, 0.9])
    flat = merge_flat(layout.flatten(pre), torch.stack([layout.flatten(v) for v in tvs]), w, layout, flat_mask)
    ref = masked_merge(pre, tvs, w, layout.unflatten(flat_mask))
    torch.testing.assert_close(flat, layout.flatten(ref))


def test_layer_wise_combine_equals_per_tensor_loop():
    pre = toy_state(0)
    tvs = [toy_state(1), toy_state(2), toy_state(3)]
    layout = ParamLayout.of(pre)
    stacked = torch.stack([layout.flatten(v) for v in tvs])
    w = torch.rand(3, 3, generator=torch.Generator().manual_seed(7))  # [T, K]
    expected = {k: sum(w[i, j] * tvs[i][k] for i in range(3)) for j, k in enumerate(layout.keys)}
    torch.testing.assert_close(combine(stacked, w, layout), layout.flatten(expected))
    mask = torch.rand(layout.num_params, generator=torch.Generator().manual_seed(8))
    masks = layout.unflatten(mask)
    per_tensor = {k: pre[k] + expected[k] * rescale(masks[k]) for k in layout.keys}
    torch.testing.assert_close(merge_flat(layout.flatten(pre), stacked, w, layout, mask), layout.flatten(per_tensor))


def test_combine_bfloat16_vectors_matches_float32():
    layout = ParamLayout.of(toy_state(0))
    stacked = torch.stack([layout.flatten(toy_state(s)) for s in (1, 2)]).bfloat16()
    for w in (torch.tensor([0.3, 0.6]), torch.rand(2, 3, generator=torch.Generator().manual_seed(1))):
        out = combine(stacked, w, layout)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, combine(stacked.float(), w, layout))


def test_combine_checks_number_of_weights():
    layout = ParamLayout.of(toy_state(0))
    with pytest.raises(ValueError, match="3 task vectors but weights of shape \\(2,\\)"):
        combine(torch.zeros(3, layout.num_params), torch.zeros(2), layout)


def test_gradients_reach_coefficients_and_logits_through_flat_merge():
    pre = toy_state(0)
    layout = ParamLayout.of(pre)
    stacked = torch.stack([layout.flatten(toy_state(s)) for s in (1, 2)])
    w = torch.full((2, 3), 0.3, requires_grad=True)
    logits = torch.zeros(layout.num_params, requires_grad=True)
    mask = sample_concrete(logits, 0.5, torch.Generator().manual_seed(0))
    merged = merge_flat(layout.flatten(pre), stacked, w, layout, mask)
    (merged**2).sum().backward()
    for grad in (w.grad, logits.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# Registry and the data-free methods through it
# ---------------------------------------------------------------------------------------------------------------
EXPECTED_METHODS = [
    "weight_averaging",
    "task_arithmetic",
    "ties_merging",
    "fisher_merging",
    "regmean",
    "task_wise_adamerging",
    "layer_wise_adamerging",
    "task_wise_adamerging_pp",
    "layer_wise_adamerging_pp",
    "concrete_task_arithmetic",
    "task_wise_concrete_adamerging",
    "layer_wise_concrete_adamerging",
]


def test_registry_has_every_method_with_metadata():
    assert list(METHODS) == EXPECTED_METHODS
    for name, spec in METHODS.items():
        assert spec.name == name and spec.pretty_name and spec.reference.startswith("https://")
        assert get_method(name) is spec


def test_registry_defaults_are_the_papers():
    cta = METHODS["concrete_task_arithmetic"].defaults
    assert (
        cta["scaling"],
        cta["temperature"],
        cta["lr"],
        cta["betas"],
        cta["weight_decay"],
        cta["steps"],
        cta["init_logit"],
        cta["eval_mask"],
    ) == (0.3, 0.5, 1e-3, (0.9, 0.999), 0.0, 2000, 0.0, "sample")
    for name in ("task_wise_concrete_adamerging", "layer_wise_concrete_adamerging"):
        cam = METHODS[name].defaults
        assert "granularity" not in cam
        assert (
            cam["init"],
            cam["temperature"],
            cam["inner_lr"],
            cam["outer_lr"],
            cam["meta_steps"],
            cam["tta_lr"],
            cam["tta_steps"],
            cam["variant"],
        ) == (0.3, 0.5, 1.0, 1e-3, 2000, 1e-3, 1000, "paper")
    for name in ("task_wise_adamerging", "layer_wise_adamerging"):
        ada = METHODS[name].defaults
        assert (ada["init"], ada["clamp"], ada["lr"], ada["steps"], ada["ties_density"]) == (
            0.3,
            True,
            1e-3,
            1000,
            None,
        )
    assert METHODS["layer_wise_adamerging_pp"].defaults["ties_density"] == 0.2
    assert METHODS["task_arithmetic"].defaults == {"scaling": 0.3}
    assert METHODS["ties_merging"].defaults == {"scaling": 0.3, "density": 0.2}


def test_data_free_methods_through_registry_match_pure_functions(toy):
    tvs = [task_vector(toy.pretrained, toy.load_finetuned(t)) for t in toy.task_names]
    ta = run_method("task_arithmetic", toy, scaling=0.4)
    assert ta.params == {"scaling": 0.4}
    for k, v in task_arithmetic(toy.pretrained, tvs, 0.4).items():
        assert torch.equal(ta.state[k], v)
    wa = run_method("weight_averaging", toy).state
    mean = {k: torch.stack([toy.load_finetuned(t)[k] for t in toy.task_names]).mean(0) for k in toy.pretrained}
    for k in toy.pretrained:
        torch.testing.assert_close(wa[k], mean[k])
    ties = run_method("ties_merging", toy).state
    for k, v in ties_merging(toy.pretrained, tvs, 0.3, 0.2).items():
        assert torch.equal(ties[k], v)
    for name in ("weight_averaging", "task_arithmetic", "ties_merging"):
        spec = METHODS[name]
        out = spec.data_free(toy.pretrained, iter(tvs), **spec.defaults)
        assert all(torch.equal(out[k], run_method(name, toy).state[k]) for k in toy.pretrained)


# ---------------------------------------------------------------------------------------------------------------
# Fisher merging and RegMean
# ---------------------------------------------------------------------------------------------------------------
def test_fisher_and_regmean_of_identical_models_return_that_model(toy):
    import dataclasses

    same = toy.load_finetuned("task1")
    problem = dataclasses.replace(toy, load_finetuned=lambda t: {k: v.clone() for k, v in same.items()})
    for name in ("fisher_merging", "regmean"):
        state = run_method(name, problem, num_examples=64, progress=False).state
        for k, v in same.items():
            torch.testing.assert_close(state[k], v, atol=1e-4, rtol=1e-4)


def test_fisher_with_a_dominant_floor_is_the_plain_average(toy):
    state = run_method("fisher_merging", toy, num_examples=8, minimal_fisher_weight=1e6, progress=False).state
    for k in toy.pretrained:
        mean = torch.stack([toy.load_finetuned(t)[k] for t in toy.task_names]).mean(0)
        torch.testing.assert_close(state[k], mean, atol=1e-5, rtol=1e-5)


def test_regmean_first_layer_by_hand(toy):
    """W* = (Σ_i G_i)⁻¹ Σ_i G_i W_iᵀ (transposed), G_i = XᵢᵀXᵢ/n with off-diagonals × 0.6; biases averaged."""
    state = run_method("regmean", toy, num_examples=256, reduce_non_diagonal_ratio=0.6, progress=False).state
    grams, weighted = 0, 0
    for task in toy.task_names:
        x = torch.cat([inputs for inputs, _ in toy.train_batches(task)])
        gram = x.T @ x / len(x)
        gram = gram * (torch.full_like(gram, 0.6).fill_diagonal_(1.0))
        grams = grams + gram
        weighted = weighted + gram @ toy.load_finetuned(task)["fc1.weight"].T
    torch.testing.assert_close(state["fc1.weight"], torch.linalg.solve(grams, weighted).T, atol=1e-4, rtol=1e-4)
    bias = torch.stack([toy.load_finetuned(t)["fc1.bias"] for t in toy.task_names]).mean(0)
    torch.testing.assert_close(state["fc1.bias"], bias)


def test_flat_masked_merge_gradients_equal_plain_autograd():
    """apply_mask_flat's hand-written backward ≡ autograd of θ0 + δ ⊙ rescale_flat(m), incl. a collapsed tensor."""
    from concrete_subspace.masks import rescale_flat
    from concrete_subspace.merging import apply_mask_flat

    layout = ParamLayout(("w", "b", "c"), (torch.Size([3, 4]), torch.Size([5]), torch.Size([2])))
    g = torch.Generator().manual_seed(0)
    theta0 = torch.randn(layout.num_params, generator=g, dtype=torch.float64)
    upstream = torch.randn(layout.num_params, generator=g, dtype=torch.float64)
    base_delta = torch.randn(layout.num_params, generator=g, dtype=torch.float64)
    base_mask = torch.rand(layout.num_params, generator=g, dtype=torch.float64)
    base_mask[17:19] = 1e-30  # tensor "c" collapsed below the mean floor
    results = []
    for fused in (True, False):
        delta, mask = base_delta.clone().requires_grad_(True), base_mask.clone().requires_grad_(True)
        out = apply_mask_flat(theta0, delta, mask, layout) if fused else theta0 + delta * rescale_flat(mask, layout)
        (out * upstream).sum().backward()
        results.append((out.detach(), delta.grad, mask.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
