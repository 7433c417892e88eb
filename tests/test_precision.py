"""The ``forward_mode`` ("batched" | "per_task") and ``precision`` ("fp32" | "bf16") options of the test-time loop.

Batched and per-task steps compute the same summed gradient; bf16 autocast changes the forward only, and every
learned tensor (mask logits, coefficients, optimizer state) and every result stays fp32; both are deterministic.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from toy import Encoder

from concrete_subspace.loop import FORWARD_MODES, PRECISIONS, concat_inputs, entropy_backward, shape_groups
from concrete_subspace.masks import sample_concrete
from concrete_subspace.merging import apply_mask_flat, merge_flat
from concrete_subspace.registry import run_method

QUIET = {"progress": False}
STEPS = {
    "concrete_task_arithmetic": {"steps": 3},
    "layer_wise_adamerging": {"steps": 3},
    "task_wise_adamerging_pp": {"steps": 3},
    "layer_wise_concrete_adamerging": {"meta_steps": 2, "tta_steps": 2},
}


def close(a, b):
    torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


def cta_logit_grad(problem, layout, theta0, vectors, **options):
    """d(Σ entropies)/d(mask logits) of one Concrete TA step at non-trivial logits."""
    logits = torch.linspace(-1, 1, layout.num_params).requires_grad_(True)
    mask = sample_concrete(logits, 0.5, torch.Generator().manual_seed(0))
    entropy_backward(problem, apply_mask_flat(theta0, 0.3 * vectors.sum(0), mask, layout), layout, 3, **options)
    return logits.grad


def adamerging_coefficient_grad(problem, layout, theta0, vectors, **options):
    """d(Σ entropies)/d(layer-wise coefficients) of one AdaMerging step."""
    w = torch.full((len(vectors), len(layout.keys)), 0.3, requires_grad=True)
    entropy_backward(problem, merge_flat(theta0, vectors, w, layout), layout, 3, **options)
    return w.grad


@pytest.mark.parametrize("grad_fn", [cta_logit_grad, adamerging_coefficient_grad])
def test_batched_gradient_equals_per_task_gradient(toy, toy_vectors, grad_fn):
    per_task = grad_fn(toy, *toy_vectors, forward_mode="per_task")
    batched = grad_fn(toy, *toy_vectors, forward_mode="batched")
    assert per_task.abs().sum() > 0
    close(batched, per_task)


class SequenceEncoder(Encoder):
    """The toy encoder over [B, L, 8] token inputs given as a dict, mean-pooled: inputs of different L per task."""

    def forward(self, x, scale=1.0):
        return super().forward(x).mean(dim=1) * scale


@pytest.fixture(scope="module")
def dict_problem(toy):
    """The toy problem with dict inputs ``{"x": [16, L, 8], "scale": 1.0}``, L = 1, 2, 1 for the three tasks."""
    model = SequenceEncoder()
    model.load_state_dict({**model.state_dict(), **toy.pretrained})
    lengths = dict(zip(toy.task_names, (1, 2, 1)))

    def unlabeled_batch(task, step):
        x = toy.unlabeled_batch(task, step)
        return {"x": x.unsqueeze(1).expand(-1, lengths[task], -1).contiguous(), "scale": 1.0}

    return dataclasses.replace(toy, model=model.eval().requires_grad_(False), unlabeled_batch=unlabeled_batch)


def test_dict_inputs_are_grouped_by_shape_and_concatenated(dict_problem):
    batches = {t: dict_problem.unlabeled_batch(t, 0) for t in dict_problem.task_names}
    groups = shape_groups(batches)
    assert groups == [["task0", "task2"], ["task1"]]
    joined = concat_inputs([batches[t] for t in groups[0]])
    assert joined["x"].shape == (32, 1, 8) and joined["scale"] == 1.0


@pytest.mark.parametrize("grad_fn", [cta_logit_grad, adamerging_coefficient_grad])
def test_batched_gradient_with_dict_inputs_of_different_shapes(dict_problem, toy_vectors, grad_fn):
    close(
        grad_fn(dict_problem, *toy_vectors, forward_mode="batched"),
        grad_fn(dict_problem, *toy_vectors, forward_mode="per_task"),
    )


def test_bf16_gradient_is_fp32_and_close_to_fp32(toy, toy_vectors):
    fp32 = cta_logit_grad(toy, *toy_vectors, precision="fp32")
    bf16 = cta_logit_grad(toy, *toy_vectors, precision="bf16")
    assert bf16.dtype == torch.float32
    assert not torch.equal(bf16, fp32)  # autocast did change the forward
    cosine = torch.nn.functional.cosine_similarity(bf16, fp32, dim=0)
    assert cosine > 0.99, float(cosine)


@pytest.mark.parametrize("method", list(STEPS))
def test_bf16_run_keeps_fp32_state_and_is_deterministic(toy, method):
    params = {**STEPS[method], "precision": "bf16", "seed": 4, **QUIET}
    first, second = run_method(method, toy, **params), run_method(method, toy, **params)
    fp32 = run_method(method, toy, **{**params, "precision": "fp32"})
    for k, v in first.state.items():
        assert v.dtype == torch.float32, k
        assert torch.isfinite(v).all(), k
        assert torch.equal(v, second.state[k]), k
    for name in ("mask_logits", "coefficients"):
        if name in first.extras:
            assert first.extras[name].dtype == torch.float32
    assert any(not torch.equal(first.state[k], fp32.state[k]) for k in first.state)
    assert first.params["precision"] == "bf16"


def test_bf16_optimizer_state_stays_fp32(toy, monkeypatch):
    """Adam's moments are checked at every step of a bf16 Concrete TA run (through the optimizer's step)."""
    seen = []
    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        seen.extend(v.dtype for state in self.state.values() for v in state.values() if torch.is_tensor(v) and v.dim())
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    run_method("concrete_task_arithmetic", toy, steps=2, precision="bf16", **QUIET)
    assert seen and set(seen) == {torch.float32}


@pytest.mark.parametrize("forward_mode", FORWARD_MODES)
def test_forward_modes_deterministic_and_agree(toy, forward_mode):
    params = {"steps": 3, "seed": 1, "forward_mode": forward_mode, **QUIET}
    a, b = run_method("concrete_task_arithmetic", toy, **params), run_method("concrete_task_arithmetic", toy, **params)
    other = run_method("concrete_task_arithmetic", toy, **{**params, "forward_mode": "per_task"})
    for k in a.state:
        assert torch.equal(a.state[k], b.state[k]), k
        close(a.state[k], other.state[k])


@pytest.mark.parametrize("option,value", [("precision", "fp16"), ("forward_mode", "summed")])
@pytest.mark.parametrize(
    "method", ["concrete_task_arithmetic", "layer_wise_adamerging", "task_wise_concrete_adamerging"]
)
def test_unknown_option_value_is_refused(toy, method, option, value):
    choices = PRECISIONS if option == "precision" else FORWARD_MODES
    with pytest.raises(ValueError, match=f"unknown {option} '{value}'.*{choices[0]}"):
        run_method(method, toy, **{option: value}, **QUIET)


def tiny_image_encoder():
    """A seeded 2-layer CLIP vision tower on 28x28 images (the mini zoo's input format)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from concrete_subspace.models.clip_hf import ImageEncoder

    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=7,
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vision = CLIPVisionModel(config)
        projection = torch.nn.Linear(32, 16, bias=False)
    return ImageEncoder(getattr(vision, "vision_model", vision), projection)


def test_zoo_finetune_under_bf16_is_deterministic_and_keeps_fp32_weights():
    from concrete_subspace import zoo

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 28, 28, 3), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 4, (64,), generator=g)
    head = torch.randn(4, 16, generator=g)
    results = {}
    for precision in ("fp32", "bf16", "bf16"):
        cfg = dataclasses.replace(zoo.mini_config(smoke=True, precision=precision), finetune_steps=3, finetune_batch=16)
        encoder = tiny_image_encoder()
        losses = zoo.finetune(encoder, head, images, labels, cfg, seed=1, desc="test", progress=False)
        state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
        results.setdefault(precision, []).append((losses, state))
    (bf16_losses, a), (bf16_again, b) = results["bf16"]
    assert bf16_losses == bf16_again and all(torch.equal(a[k], b[k]) for k in a)
    assert bf16_losses != results["fp32"][0][0]


def test_zoo_precision_has_its_own_directory_and_is_checked(tmp_path):
    from concrete_subspace import zoo

    assert zoo.default_zoo_dir(0, False, "bf16").name == zoo.default_zoo_dir(0, False).name + "-bf16"
    assert zoo.mini_config(precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        zoo.mini_config(precision="fp16")
    built = tmp_path / "zoo"
    built.mkdir()
    (built / "manifest.json").write_text(
        json.dumps(
            {"format_version": zoo.ZOO_FORMAT_VERSION, "seed": 0, "smoke": True, "config": {"precision": "fp32"}}
        )
    )
    assert zoo.zoo_state(built, 0, True, "fp32") == "complete"
    assert zoo.zoo_state(built, 0, True, "bf16") == "partial"  # an fp32 zoo is never reused as a bf16 one
