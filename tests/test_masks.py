"""The Concrete mask: sampling (≡ torch RelaxedBernoulli), range, rescaling, evaluation masks, density, robustness."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import RelaxedBernoulli

from concrete_subspace.masks import (
    check_temperature,
    density,
    evaluation_mask,
    init_logits,
    rescale,
    rescale_flat,
    sample_concrete,
    segment_means,
)
from concrete_subspace.task_vectors import ParamLayout


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


LAYOUT = ParamLayout(("w", "b", "c"), (torch.Size([3, 4]), torch.Size([5]), torch.Size([1])))


def test_init_logits_are_zero_keep_probability_half():
    logits = init_logits(7)
    assert logits.shape == (7,) and not logits.any()
    assert torch.sigmoid(logits).eq(0.5).all()


@pytest.mark.parametrize("temperature", [0.2, 0.5, 1.0, 2.0])
def test_sample_matches_torch_relaxed_bernoulli_with_same_noise(temperature):
    logits = torch.linspace(-4, 4, 257)
    torch.manual_seed(123)  # torch's rsample draws its uniforms from the global generator
    reference = RelaxedBernoulli(torch.tensor(temperature), logits=logits).rsample()
    ours = sample_concrete(logits, temperature, gen(123))  # same seed, same stream of uniforms
    torch.testing.assert_close(ours, reference, atol=2e-6, rtol=1e-5)


def test_sample_is_the_binary_concrete_formula():
    logits = torch.tensor([-1.0, 0.0, 2.5])
    u = torch.rand(3, generator=gen(5))
    expected = torch.sigmoid((torch.log(u) - torch.log(1 - u) + logits) / 0.5)
    torch.testing.assert_close(sample_concrete(logits, 0.5, gen(5)), expected)


def test_sample_values_strictly_inside_unit_interval_for_moderate_logits():
    logits = torch.randn(10_000, generator=gen(1)) * 3
    m = sample_concrete(logits, 0.5, gen(2))
    assert (m > 0).all() and (m < 1).all()


def test_sample_mean_follows_keep_probability():
    m = sample_concrete(torch.full((20_000,), 2.0), 0.5, gen(3))
    assert m.mean() > 0.8  # σ(2) ≈ 0.88
    m = sample_concrete(torch.full((20_000,), -2.0), 0.5, gen(3))
    assert m.mean() < 0.2


def test_same_seed_same_sample_different_seed_different_sample():
    logits = torch.zeros(100)
    assert torch.equal(sample_concrete(logits, 0.5, gen(7)), sample_concrete(logits, 0.5, gen(7)))
    assert not torch.equal(sample_concrete(logits, 0.5, gen(7)), sample_concrete(logits, 0.5, gen(8)))


def test_sampling_does_not_touch_global_rng():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    sample_concrete(torch.zeros(10), 0.5, gen(1))
    evaluation_mask(torch.zeros(10), "bernoulli", generator=gen(1))
    assert torch.equal(torch.get_rng_state(), before)


def test_gradient_reaches_logits():
    logits = torch.zeros(12, requires_grad=True)
    m = sample_concrete(logits, 0.5, gen(0))
    (m * torch.arange(12.0)).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [0.0, -0.5, float("inf"), float("nan"), "0.5", None])
def test_bad_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        sample_concrete(torch.zeros(3), temperature, gen(0))
    with pytest.raises(ValueError, match="temperature"):
        check_temperature(temperature)


def test_rescale_single_tensor_mean_one():
    m = torch.rand(4, 5, generator=gen(0))
    torch.testing.assert_close(rescale(m).mean(), torch.tensor(1.0))
    torch.testing.assert_close(rescale(m) * m.mean(), m)


def test_rescale_flat_mean_one_per_segment_and_matches_per_tensor():
    m = torch.rand(LAYOUT.num_params, generator=gen(1)) * 0.9 + 0.05
    r = rescale_flat(m, LAYOUT)
    torch.testing.assert_close(segment_means(r, LAYOUT), torch.ones(3))
    per_tensor = torch.cat([rescale(part.reshape(-1)) for part in LAYOUT.unflatten(m).values()])
    torch.testing.assert_close(r, per_tensor)


def test_rescale_of_all_zero_mask_is_zero_not_nan():
    assert torch.equal(rescale(torch.zeros(3, 3)), torch.zeros(3, 3))
    m = torch.rand(LAYOUT.num_params, generator=gen(2))
    m[12:17] = 0  # the whole of tensor "b"
    r = rescale_flat(m, LAYOUT)
    assert torch.isfinite(r).all() and not r[12:17].any()
    torch.testing.assert_close(segment_means(r, LAYOUT)[[0, 2]], torch.ones(2))


@pytest.mark.parametrize("value", [1e4, -1e4])
@pytest.mark.parametrize("temperature", [1e-3, 0.5])
def test_extreme_logits_and_tiny_temperature_never_nan(value, temperature):
    logits = torch.full((1000,), value, requires_grad=True)
    m = sample_concrete(logits, temperature, gen(0))
    assert torch.isfinite(m).all()
    assert torch.equal(m.detach().round(), torch.full((1000,), float(value > 0)))
    (rescale(m) * torch.arange(1000.0)).sum().backward()
    assert torch.isfinite(logits.grad).all()
    for kind in ("sample", "expected", "hard", "bernoulli"):
        em = evaluation_mask(logits, kind, temperature=temperature, generator=gen(1))
        assert torch.isfinite(rescale_flat(em, ParamLayout(("x",), (torch.Size([1000]),)))).all()


def test_mixed_extreme_logits_with_tiny_temperature():
    logits = torch.tensor([-1e4, -30.0, -1.0, 0.0, 1.0, 30.0, 1e4])
    m = sample_concrete(logits, 1e-3, gen(4))
    assert torch.isfinite(m).all() and ((m == 0) | (m == 1) | ((m > 0) & (m < 1))).all()


def test_evaluation_masks():
    logits = torch.tensor([-2.0, -0.1, 0.0, 0.3, 5.0])
    torch.testing.assert_close(evaluation_mask(logits, "expected"), torch.sigmoid(logits))
    assert evaluation_mask(logits, "hard").tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # σ(x) > 0.5 strictly
    b = evaluation_mask(torch.tensor([-1e4, 1e4] * 50), "bernoulli", generator=gen(0))
    assert b.tolist() == [0.0, 1.0] * 50
    s = evaluation_mask(logits, "sample", temperature=0.5, generator=gen(9))
    assert torch.equal(s, sample_concrete(logits, 0.5, gen(9)))
    assert not evaluation_mask(logits.requires_grad_(True), "sample", generator=gen(9)).requires_grad


def test_evaluation_mask_errors():
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        evaluation_mask(torch.zeros(3), "sample")
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        evaluation_mask(torch.zeros(3), "bernoulli")
    with pytest.raises(ValueError, match=r"unknown evaluation mask 'hardd'; choose one of \['sample'"):
        evaluation_mask(torch.zeros(3), "hardd")


def test_density_counts_kept_fraction_overall_and_per_tensor():
    logits = torch.full((LAYOUT.num_params,), -1.0)
    logits[:6] = 1.0  # half of "w"
    logits[12:17] = 3.0  # all of "b"
    stats = density(logits, LAYOUT)
    assert stats["density"] == pytest.approx(11 / 18)
    assert stats["per_tensor"]["w"]["density"] == pytest.approx(0.5)
    assert stats["per_tensor"]["b"]["density"] == pytest.approx(1.0)
    assert stats["per_tensor"]["c"]["density"] == pytest.approx(0.0)
    assert stats["mean_keep_probability"] == pytest.approx(float(torch.sigmoid(logits).mean()))


def test_collapsed_tensor_gives_finite_gradients_through_flat_rescale():
    logits = torch.zeros(LAYOUT.num_params)
    logits[12:17] = -1e4  # tensor "b" collapses to a ≈0 mask
    logits.requires_grad_(True)
    r = rescale_flat(sample_concrete(logits, 1e-3, gen(0)), LAYOUT)
    (r * torch.linspace(-1, 1, LAYOUT.num_params)).sum().backward()
    assert torch.isfinite(r).all() and r[12:17].abs().max() < 1e-6
    assert torch.isfinite(logits.grad).all()
