"""Merge primitives: small pure functions over state dicts and flat task vectors.

Data-free merges (weight averaging, task arithmetic, TIES) take the pre-trained state and task vectors; the flat
versions (:func:`combine`, :func:`merge_flat`, :func:`apply_mask_flat`) are the hot loop of the test-time methods
in :mod:`adamerging` and :mod:`concrete`. This module imports no method: the registry that names every method
(``run_method(name, problem, **params)``) is :mod:`concrete_subspace.registry`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .masks import mean_floor, rescale
from .task_vectors import ParamLayout, StateDict, apply_to


# ----------------------------------------------------------------------------------------------------------------
# Pure functions on state dicts
# ----------------------------------------------------------------------------------------------------------------
def task_arithmetic(
    pretrained: StateDict, task_vectors: Iterable[StateDict], scaling: float = 0.3
) -> dict[str, Tensor]:
    """θ0 + λ Σ_i τ_i (Ilharco et al.); task vectors may be a generator, so only a running sum is held."""
    total: dict[str, Tensor] | None = None
    for vector in task_vectors:
        total = {k: v.clone() for k, v in vector.items()} if total is None else {k: total[k] + vector[k] for k in total}
    if total is None:
        raise ValueError("task_arithmetic needs at least one task vector")
    return apply_to(pretrained, total, scaling)


def weight_averaging(pretrained: StateDict, task_vectors: Iterable[StateDict]) -> dict[str, Tensor]:
    """Mean of the fine-tuned models, (1/T) Σ_i θ_i = θ0 + (1/T) Σ_i τ_i."""
    vectors = list(task_vectors)
    if not vectors:
        raise ValueError("weight_averaging needs at least one task vector")
    return task_arithmetic(pretrained, vectors, scaling=1.0 / len(vectors))


def masked_merge(
    pretrained: StateDict, task_vectors: Sequence[StateDict], weights: Sequence[float] | Tensor, mask: StateDict
) -> dict[str, Tensor]:
    """θ0 + Σ_i w_i τ_i ⊙ m / mean(m), with one shared mask rescaled per tensor (the paper's merged model)."""
    out = dict(pretrained)
    for key in task_vectors[0]:
        scaled_mask = rescale(mask[key])
        out[key] = pretrained[key] + sum(w * v[key] for w, v in zip(weights, task_vectors)) * scaled_mask
    return out


def trim_top_k(vectors: Tensor, density: float = 0.2) -> Tensor:
    """TIES trim: per row keep entries with |x| ≥ the k-th smallest |x|, k = d − int(density·d) (ties kept)."""
    if not 0.0 <= float(density) <= 1.0:
        raise ValueError(f"TIES density (fraction of entries kept) must be in [0, 1], got {density}")
    d = vectors.shape[-1]
    k = d - int(d * density)
    if k < 1:
        return vectors.clone()
    threshold = vectors.abs().kthvalue(k, dim=-1, keepdim=True).values
    return vectors * (vectors.abs() >= threshold)


def elect_sign(trimmed: Tensor) -> Tensor:
    """TIES sign election: sign of Σ_i trimmed_i per entry; zeros take the overall majority sign."""
    sign = torch.sign(trimmed.sum(dim=0))
    majority = torch.sign(sign.sum())
    return torch.where(sign == 0, majority, sign)


def disjoint_sum(trimmed: Tensor, sign: Tensor) -> Tensor:
    """TIES disjoint merge ("dis-sum", as the paper ran it): sum only the entries that agree with the elected sign."""
    agrees = torch.where(sign > 0, trimmed > 0, trimmed < 0)
    return (trimmed * agrees).sum(dim=0)


def ties_flat(vectors: Tensor, density: float = 0.2) -> Tensor:
    """Trim → elect sign → disjoint sum over a [T, P] matrix of flat task vectors."""
    trimmed = trim_top_k(vectors, density)
    return disjoint_sum(trimmed, elect_sign(trimmed))


def ties_merging(
    pretrained: StateDict, task_vectors: Sequence[StateDict], scaling: float = 0.3, density: float = 0.2
) -> dict[str, Tensor]:
    """TIES-Merging (Yadav et al.) over task vectors flattened across all float tensors; θ0 + λ · merged."""
    layout = ParamLayout.of(task_vectors[0])
    stacked = torch.stack([layout.flatten(v) for v in task_vectors])
    return apply_to(pretrained, layout.unflatten(ties_flat(stacked, density)), scaling)


def ties_preprocess(vectors: Tensor, density: float = 0.2) -> Tensor:
    """AdaMerging++ task vectors: each trimmed and restricted to the entries that agree with the elected sign."""
    trimmed = trim_top_k(vectors, density)
    sign = elect_sign(trimmed)
    return trimmed * torch.where(sign > 0, trimmed > 0, trimmed < 0)


# ----------------------------------------------------------------------------------------------------------------
# The same merges on flat buffers (the hot loop of the test-time methods)
# ----------------------------------------------------------------------------------------------------------------
def combine(vectors: Tensor, weights: Tensor, layout: ParamLayout) -> Tensor:
    """Σ_i w_i τ_i on a [T, P] matrix: w is [T] (task-wise) or [T, K] (layer-wise, one weight per tensor)."""
    if weights.shape[0] != vectors.shape[0]:
        raise ValueError(f"combine: {vectors.shape[0]} task vectors but weights of shape {tuple(weights.shape)}")
    if weights.dim() == 1 and vectors.dtype == weights.dtype:
        return weights @ vectors
    if weights.dim() == 1:  # narrower stored vectors (bf16): widen one task at a time
        total = None
        for w, vector in zip(weights, vectors):
            term = w * vector.to(weights.dtype)
            total = term if total is None else total + term
        return total
    if weights.shape[1] != len(layout.numels):
        raise ValueError(
            f"combine: layer-wise weights of shape {tuple(weights.shape)} for {len(layout.numels)} tensors"
        )
    # layer-wise: one [T] @ [T, n_k] product per tensor on views of the matrix: a single pass over it, no P-sized
    # per-task coefficient vectors (and only the [T, n_k] slice is widened when the vectors are stored narrower)
    return _LayerwiseCombine.apply(weights, vectors, tuple(layout.numels))


class _LayerwiseCombine(torch.autograd.Function):
    """Σ_i w_ik τ_i per tensor k, written straight into one P-sized output; backward recomputes what it needs.

    Plain autograd over ``torch.cat([w[:, k] @ block_k.to(w.dtype)])`` held the parts and the concatenation (2 P-sized
    buffers) at once, and with vectors stored narrower (bf16) kept every widened [T, n_k] block for the backward: a
    float32 copy of all T task vectors. Here each block is widened only while its product runs, in the forward and
    again in the backward, which runs the products autograd ran (``g_k[None] @ block_kᵀ``): bit-identical values
    and gradients (tests/test_fused_merge.py).
    """

    @staticmethod
    def forward(ctx, weights: Tensor, vectors: Tensor, numels: tuple[int, ...]) -> Tensor:
        out = torch.empty(vectors.shape[1], dtype=weights.dtype, device=vectors.device)
        for column, block, target in zip(weights.unbind(1), vectors.split(numels, dim=1), out.split(numels)):
            torch.mm(column.unsqueeze(0), block.to(weights.dtype), out=target.view(1, -1))
        ctx.numels = numels
        ctx.save_for_backward(weights, vectors)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        weights, vectors = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return _combine_backward(grad, vectors, weights, ctx.numels), None, None


def _segment_divide(flat: Tensor, numels: tuple[int, ...], divisors: Tensor) -> Tensor:
    """A new buffer of ``flat`` / divisors[s] per tensor segment s: one pass (read + write), no clone first."""
    out = torch.empty_like(flat)
    for source, target, divisor in zip(flat.split(numels), out.split(numels), divisors.unbind()):
        torch.div(source, divisor, out=target)
    return out


def _segment_dots(a: Tensor, b: Tensor, numels: tuple[int, ...]) -> Tensor:
    """Σ a ⊙ b per tensor segment, with the product built one segment at a time (no P-sized temporary); each
    segment's sum is ``segment_reduce``'s, the same sequential sum as one call over the whole product."""
    dots = [
        torch.segment_reduce(x * y, "sum", lengths=torch.tensor([x.numel()], device=a.device))
        for x, y in zip(a.split(numels), b.split(numels))
    ]
    return torch.cat(dots)


def _segment_apply_(flat: Tensor, numels: tuple[int, ...], fn, *per_segment: Tensor) -> Tensor:
    """In place on ``flat``: ``fn(segment_view, *(v[s] for v in per_segment))`` for each tensor's segment s.

    The same elementwise values as broadcasting a ``repeat_interleave``-d K-vector, without the P-sized int64 index
    and gathered copy that ``repeat_interleave`` builds on every call (seconds per step at ViT-B/32 size on CPU).
    """
    for segment, *values in zip(flat.split(numels), *(v.unbind() for v in per_segment)):
        fn(segment, *values)
    return flat


def _rescaled_mask(mask: Tensor, numels: tuple[int, ...], floor: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """m / mean_s(m) per tensor s (a new buffer), the clamped means, where they were not clamped, and the lengths."""
    lengths = torch.tensor(numels, device=mask.device)
    raw = torch.segment_reduce(mask, "mean", lengths=lengths)
    means = raw.clamp_min(floor)
    return _segment_divide(mask, numels, means), means, raw >= floor, lengths


def _mask_grad_(
    g_delta: Tensor, mask: Tensor, means: Tensor, unclamped: Tensor, lengths: Tensor, numels: tuple[int, ...]
) -> Tensor:
    """∂/∂m_j = g_j δ_j / μ − [μ unclamped] Σ_{k in tensor} g_k δ_k m_k / (n μ²), in place on ``g_delta`` = g ⊙ δ."""
    dots = _segment_dots(g_delta, mask, numels)
    correction = dots / (lengths * means * means) * unclamped
    # (g δ) / μ − c in one pass per tensor: addcdiv(−c, g δ, μ) = −c + (g δ) / μ, the same rounding
    return _segment_apply_(g_delta, numels, lambda g, mu, c: torch.addcdiv(c.neg(), g, mu, out=g), means, correction)


class _RescaledMaskMerge(torch.autograd.Function):
    """θ0 + δ ⊙ m / mean_s(m), per tensor s, keeping only m, δ and the K means for backward.

    Same values as ``theta0 + delta * rescale_flat(mask, layout)`` (same operations in the same order), without the
    P-sized intermediates that autograd would keep alive until the backward (the repeated means, m / mean, the
    products); the per-tensor means are applied segment by segment (views), never repeated to P entries.
    """

    @staticmethod
    def forward(ctx, theta0: Tensor, delta: Tensor, mask: Tensor, numels: tuple[int, ...], floor: float) -> Tensor:
        out, means, unclamped, lengths = _rescaled_mask(mask, numels, floor)  # m / mean, per tensor
        out.mul_(delta).add_(theta0)  # == θ0 + δ ⊙ (m / mean): elementwise ops commute exactly
        ctx.numels = numels
        ctx.save_for_backward(delta, mask, means, unclamped, lengths)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        delta, mask, means, unclamped, lengths = ctx.saved_tensors
        numels = ctx.numels
        grad_delta = grad_mask = None
        if ctx.needs_input_grad[1]:  # ∂/∂δ = g ⊙ m / mean
            grad_delta = _segment_divide(mask, numels, means).mul_(grad)
        if ctx.needs_input_grad[2]:
            grad_mask = _mask_grad_(grad * delta, mask, means, unclamped, lengths, numels)
        return (grad if ctx.needs_input_grad[0] else None), grad_delta, grad_mask, None, None


def apply_mask_flat(theta0: Tensor, delta: Tensor, mask: Tensor | None, layout: ParamLayout) -> Tensor:
    """Flat θ0 + δ ⊙ m / mean(m) (per tensor); θ0 + δ when there is no mask. Computed in float32 or wider, returned
    in θ0's dtype (a bf16 model runs with bf16 merged weights)."""
    if mask is None:
        return (theta0 + delta).to(theta0.dtype)
    return _RescaledMaskMerge.apply(theta0, delta, mask, tuple(layout.numels), mean_floor(mask.dtype)).to(theta0.dtype)


def _combine_backward(grad: Tensor, vectors: Tensor, weights: Tensor, numels: tuple[int, ...]) -> Tensor:
    """∂/∂w of :func:`combine` given the gradient of its output, with the products autograd runs for it:
    ``g_k[None] @ block_kᵀ`` per tensor (layer-wise; a block stored narrower is widened only for its product) or
    ``g[None] @ τᵀ`` (task-wise, same-dtype vectors)."""
    if weights.dim() == 1:
        return grad.unsqueeze(0).mm(vectors.t()).squeeze(0)
    columns = [
        g.unsqueeze(0).mm(block.to(weights.dtype).t()).squeeze(0)
        for g, block in zip(grad.split(numels), vectors.split(numels, 1))
    ]
    return torch.stack(columns, dim=1)


class _MaskedCombine(torch.autograd.Function):
    """θ0 + (Σ_i w_i τ_i) ⊙ m / mean_s(m) that does not keep the combined vector δ = Σ_i w_i τ_i for backward.

    Plain autograd (``combine`` then :class:`_RescaledMaskMerge`) keeps δ, a P-sized buffer, alive from the merge
    to the end of the backward, i.e. through every task's activations; here the mask gradient recomputes δ from the
    [T, P] vectors (one more pass over them, after the activations are freed). Same operations, same order: values
    and both gradients are bit-identical to the plain chain (tests/test_fused_merge.py).
    """

    @staticmethod
    def forward(ctx, theta0: Tensor, vectors: Tensor, weights: Tensor, mask: Tensor, layout: ParamLayout, floor: float):
        numels = tuple(layout.numels)
        out, means, unclamped, lengths = _rescaled_mask(mask, numels, floor)  # m / mean, per tensor
        out.mul_(combine(vectors, weights, layout)).add_(theta0)  # the same products as θ0 + δ ⊙ (m / mean)
        ctx.layout, ctx.numels = layout, numels
        ctx.save_for_backward(vectors, weights, mask, means, unclamped, lengths)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        vectors, weights, mask, means, unclamped, lengths = ctx.saved_tensors
        numels = ctx.numels
        grad_weights = grad_mask = None
        if ctx.needs_input_grad[2]:  # through δ: ∂/∂δ = g ⊙ m / mean, then δ's products
            grad_delta = _segment_divide(mask, numels, means).mul_(grad)
            grad_weights = _combine_backward(grad_delta, vectors, weights, numels)
            del grad_delta
        if ctx.needs_input_grad[3]:  # as _RescaledMaskMerge, with δ recomputed; g ⊙ δ in δ's buffer (same bits)
            grad_mask = _mask_grad_(
                combine(vectors, weights, ctx.layout).mul_(grad), mask, means, unclamped, lengths, numels
            )
        return (grad if ctx.needs_input_grad[0] else None), None, grad_weights, grad_mask, None, None


def merge_flat(
    theta0: Tensor, vectors: Tensor, weights: Tensor, layout: ParamLayout, mask: Tensor | None = None
) -> Tensor:
    """Flat θ = θ0 + Σ_i w_i τ_i (⊙ m / mean(m) per tensor when a mask is given)."""
    if mask is not None and vectors.dtype == weights.dtype and not vectors.requires_grad:
        if weights.dim() == 1 and weights.shape[0] != vectors.shape[0]:
            raise ValueError(f"combine: {vectors.shape[0]} task vectors but weights of shape {tuple(weights.shape)}")
        return _MaskedCombine.apply(theta0, vectors, weights, mask, layout, mean_floor(mask.dtype)).to(theta0.dtype)
    return apply_mask_flat(theta0, combine(vectors, weights, layout), mask, layout)
