"""The hand-fused mask sample and masked merge (issue 30) against the plain autograd expressions they replace, bit
for bit: values, gradients, and the clamp's boundary cases (σ rounding to 1 or below ``tiny``)."""

from __future__ import annotations

import pytest
import torch

from concrete_subspace.masks import logistic_noise, mean_floor, relaxed_bernoulli, sample_concrete
from concrete_subspace.merging import apply_mask_flat, combine, merge_flat
from concrete_subspace.task_vectors import ParamLayout


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal as raw bits (tells +0 from −0 and compares NaNs), same dtype and shape."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def reference_sample(logits: torch.Tensor, noise: torch.Tensor, temperature: float) -> torch.Tensor:
    """The expression the fused sample replaced (plain autograd: σ's output and the clamped copy both kept)."""
    eps, tiny = torch.finfo(logits.dtype).eps, torch.finfo(logits.dtype).tiny
    return torch.sigmoid(noise.add_(logits).div_(temperature)).clamp(tiny, 1 - eps)


def reference_merge(theta0, delta, mask, layout):
    """θ0 + δ ⊙ m / mean(m) per tensor as plain autograd operations (repeat_interleave of the clamped means)."""
    lengths = torch.tensor(layout.numels)
    means = torch.segment_reduce(mask, "mean", lengths=lengths).clamp_min(mean_floor(mask.dtype))
    return theta0 + delta * (mask / torch.repeat_interleave(means, lengths))


def reference_mask_grad(upstream, delta, mask, layout):
    """The mask gradient as the merge's backward computed it before issue 30 (clone, div_, then sub_ per tensor)."""
    lengths = torch.tensor(layout.numels)
    raw = torch.segment_reduce(mask, "mean", lengths=lengths)
    means = raw.clamp_min(mean_floor(mask.dtype))
    grad = upstream * delta
    dots = torch.segment_reduce(grad * mask, "sum", lengths=lengths)
    correction = dots / (lengths * means * means) * (raw >= mean_floor(mask.dtype))
    for segment, mu, c in zip(grad.split(layout.numels), means, correction):
        segment.div_(mu).sub_(c)
    return grad


@pytest.mark.parametrize("temperature", [0.5, 0.1, 2.0])
def test_fused_sample_equals_plain_autograd_bitwise_incl_clamped_elements(temperature):
    g = torch.Generator().manual_seed(0)
    n = 200_003
    logits = (torch.randn(n, generator=g) * 3).requires_grad_(True)
    noise = logistic_noise((n,), g) * 4  # wide noise: many σ round to 1 (clamped to 1 - eps) or below tiny
    noise[:50] = 200.0  # σ == 1 exactly
    noise[50:100] = -200.0  # σ == 0
    upstream = torch.randn(n, generator=g)
    fused = relaxed_bernoulli(logits, noise.clone(), temperature)
    (grad_fused,) = torch.autograd.grad(fused, logits, upstream)
    plain = reference_sample(logits, noise.clone(), temperature)
    (grad_plain,) = torch.autograd.grad(plain, logits, upstream)
    eps, tiny = torch.finfo(torch.float32).eps, torch.finfo(torch.float32).tiny
    assert int((plain == 1 - eps).sum()) > 50 and int((plain == tiny).sum()) >= 50  # the boundary is exercised
    assert same_bits(fused, plain)
    assert same_bits(grad_fused, grad_plain)


def test_fused_sample_shard_block_equals_whole_sample_block():
    logits = torch.randn(1000)
    whole = sample_concrete(logits.requires_grad_(True), 0.5, torch.Generator().manual_seed(3))
    block = logits.detach()[300:700].clone().requires_grad_(True)
    part = sample_concrete(block, 0.5, torch.Generator().manual_seed(3), start=300, total=1000)
    # equal up to one rounding of σ: ATen's vectorised and scalar-tail σ differ in the last bit, and the block's
    # tail is elsewhere than the whole vector's (so it was before issue 30 too)
    assert torch.allclose(part, whole[300:700], rtol=1e-6, atol=0)
    assert part.untyped_storage().nbytes() == 400 * 4  # the block owns its storage: the whole noise is freed


@pytest.mark.parametrize("collapsed", [False, True])
def test_fused_merge_equals_plain_autograd_bitwise(collapsed):
    g = torch.Generator().manual_seed(1)
    shapes = [torch.Size([7, 13]), torch.Size([1]), torch.Size([3000]), torch.Size([17, 4])]
    layout = ParamLayout(tuple(f"k{i}" for i in range(len(shapes))), tuple(shapes))
    p = layout.num_params
    theta0, upstream = torch.randn(p, generator=g), torch.randn(p, generator=g)
    delta = (torch.randn(p, generator=g) * 1e-3).requires_grad_(True)
    mask = torch.rand(p, generator=g)
    if collapsed:  # a tensor whose mask mean is below the floor: the clamped-mean branch of the backward
        mask[91:3091] = 1e-12
    mask.requires_grad_(True)
    fused = apply_mask_flat(theta0, delta, mask, layout)
    plain = reference_merge(theta0, delta, mask, layout)
    assert same_bits(fused, plain)
    gf = torch.autograd.grad(fused, (delta, mask), upstream)
    gp = torch.autograd.grad(plain, (delta, mask), upstream)
    assert same_bits(gf[0], gp[0])
    # the mask gradient: bit-identical to the previous hand-written backward; plain autograd sums the per-tensor
    # correction in another order, so it agrees to rounding only
    assert same_bits(gf[1], reference_mask_grad(upstream, delta.detach(), mask.detach(), layout))
    assert torch.allclose(gf[1], gp[1], rtol=1e-4, atol=1e-7)


def test_sample_then_merge_then_layer_wise_combine_gradients_flow():
    g = torch.Generator().manual_seed(2)
    shapes = [torch.Size([5, 3]), torch.Size([40])]
    layout = ParamLayout(("a", "b"), tuple(shapes))
    vectors = torch.randn(3, layout.num_params, generator=g)
    weights = torch.full((3, 2), 0.3, requires_grad=True)
    logits = torch.zeros(layout.num_params, requires_grad=True)
    mask = sample_concrete(logits, 0.5, g)
    out = merge_flat(torch.randn(layout.num_params, generator=g), vectors, weights, layout, mask)
    out.pow(2).sum().backward()
    assert weights.grad is not None and logits.grad is not None
    assert torch.isfinite(weights.grad).all() and logits.grad.abs().sum() > 0
    assert same_bits(combine(vectors, weights.detach(), layout)[:15], (weights.detach()[:, 0] @ vectors[:, :15]))


@pytest.mark.parametrize("granularity", ["task", "layer"])
@pytest.mark.parametrize("wants", [(True, True), (True, False), (False, True)])
def test_masked_combine_equals_combine_then_merge_bitwise(granularity, wants):
    """merge_flat with a mask (δ recomputed in backward, not kept) against combine → apply_mask_flat (δ kept)."""
    g = torch.Generator().manual_seed(4)
    shapes = [torch.Size([9, 11]), torch.Size([2]), torch.Size([5000]), torch.Size([33])]
    layout = ParamLayout(tuple(f"k{i}" for i in range(len(shapes))), tuple(shapes))
    p, t = layout.num_params, 4
    theta0, upstream = torch.randn(p, generator=g), torch.randn(p, generator=g)
    vectors = torch.randn(t, p, generator=g) * 1e-3
    base = torch.rand((t,) if granularity == "task" else (t, len(shapes)), generator=g)
    mask_base = torch.rand(p, generator=g)
    outs, grads = [], []
    for fused in (True, False):
        weights = base.clone().requires_grad_(wants[0])
        mask = mask_base.clone().requires_grad_(wants[1])
        if fused:
            out = merge_flat(theta0, vectors, weights.clamp(0, 1), layout, mask)
        else:
            out = apply_mask_flat(theta0, combine(vectors, weights.clamp(0, 1), layout), mask, layout)
        leaves = [x for x in (weights, mask) if x.requires_grad]
        outs.append(out.detach())
        grads.append(torch.autograd.grad(out, leaves, upstream))
    assert same_bits(outs[0], outs[1])
    for a, b in zip(*grads):
        assert same_bits(a, b)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_foreach_adam_on_logits_equals_single_tensor_adam_bitwise(weight_decay):
    """The mask logits' Adam runs the foreach implementation (fewer passes): the same bits as the default one."""
    g = torch.Generator().manual_seed(5)
    params = [torch.zeros(10_007, requires_grad=True) for _ in range(2)]
    single = torch.optim.Adam([params[0]], lr=1e-3, weight_decay=weight_decay, foreach=False)
    foreach = torch.optim.Adam([params[1]], lr=1e-3, weight_decay=weight_decay, foreach=True)
    for _ in range(10):
        grad = torch.randn(10_007, generator=g)
        for p, opt in zip(params, (single, foreach)):
            p.grad = grad.clone()
            opt.step()
    assert same_bits(params[0].detach(), params[1].detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_wise_combine_equals_concatenated_products_bitwise(dtype):
    """combine (one output buffer, blocks widened only while used) against the plain autograd concatenation."""
    g = torch.Generator().manual_seed(6)
    shapes = [torch.Size([6, 7]), torch.Size([3]), torch.Size([4000])]
    layout = ParamLayout(("a", "b", "c"), tuple(shapes))
    vectors = torch.randn(5, layout.num_params, generator=g).to(dtype)
    base, upstream = torch.rand(5, 3, generator=g), torch.randn(layout.num_params, generator=g)
    w1, w2 = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    fused = combine(vectors, w1, layout)
    plain = torch.cat([c @ b.float() for c, b in zip(w2.unbind(1), vectors.split(layout.numels, dim=1))])
    assert same_bits(fused.detach(), plain.detach())
    assert same_bits(torch.autograd.grad(fused, w1, upstream)[0], torch.autograd.grad(plain, w2, upstream)[0])


def test_flat_grad_buffer_accumulates_every_task_in_place_with_the_concatenated_values():
    """loop.flat_grad_buffer: the leaves' gradients land in one flat buffer (their .grad are views of it), equal to
    the per-tensor gradients summed over two backwards and concatenated, as entropy_backward computed them before."""
    from concrete_subspace.loop import flat_grad_buffer

    torch.manual_seed(0)
    shapes = {"w": (5, 3), "b": (5,), "unused": (2,)}
    layout = ParamLayout(tuple(shapes), tuple(torch.Size(s) for s in shapes.values()))
    flat = torch.randn(sum(layout.numels))
    x = torch.randn(4, 3)

    def two_losses(params):  # two "tasks", each with its own backward (per-task mode); "unused" gets no gradient
        for scale in (1.0, -0.5):
            (scale * (x @ params["w"].T + params["b"]).tanh().sum()).backward()

    plain = {k: v.clone().requires_grad_(True) for k, v in layout.unflatten(flat.clone()).items()}
    two_losses(plain)
    expected = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in plain.values()])

    params = {k: v.requires_grad_(True) for k, v in layout.unflatten(flat.clone()).items()}
    grad = flat_grad_buffer(params, layout, flat)
    two_losses(params)
    assert torch.equal(grad, expected)
    for p in params.values():  # no per-tensor copy was made: every .grad still lives in the buffer
        assert p.grad.untyped_storage().data_ptr() == grad.untyped_storage().data_ptr()
