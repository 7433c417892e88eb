"""The Concrete (relaxed Bernoulli) mask: logits, sampling, per-tensor rescaling, evaluation masks, density.

Semantics (docs/method.md §2): ONE mask shared by all tasks, one logit per element of every merged tensor,
logits start at 0 (p = 0.5); a sample is m = σ((log u − log(1−u) + x)/temperature) with u ~ U(0,1) clamped away from 0 and 1
(exactly ``torch.distributions.RelaxedBernoulli(temperature, logits=x).rsample()``); the mask is applied per tensor as
τ ⊙ m / mean(m). Every function works on a single tensor, a flat vector with a :class:`ParamLayout`, or both.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .task_vectors import ParamLayout

EvalMask = Literal["sample", "expected", "hard", "bernoulli"]
EVAL_MASKS: tuple[str, ...] = ("sample", "expected", "hard", "bernoulli")


def init_logits(num_params: int, value: float = 0.0, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Mask logits, one per merged element, all ``value`` (0 → keep probability 0.5)."""
    return torch.full((num_params,), float(value), device=device, dtype=dtype)


def check_temperature(temperature: float) -> float:
    """The Concrete temperature must be a positive finite number."""
    if not (isinstance(temperature, (int, float)) and 0 < float(temperature) < float("inf")):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return float(temperature)


def logistic_noise(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator, *, device=None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """log u − log(1 − u) for u ~ U(0, 1) clamped away from 0 and 1: the noise of a relaxed-Bernoulli sample."""
    eps = torch.finfo(dtype).eps
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype).clamp_(eps, 1 - eps)
    return torch.log(u).sub_(u.neg_().log1p_())  # in place: two P-sized buffers, not five


def _owns_storage(tensor: Tensor) -> bool:
    """True when ``tensor`` spans its whole storage (not a view of a larger buffer)."""
    return tensor.storage_offset() == 0 and tensor.numel() * tensor.element_size() == tensor.untyped_storage().nbytes()


class _RelaxedBernoulli(torch.autograd.Function):
    """m = clamp(σ((noise + x) / t), tiny, 1 − eps) computed in place in ``noise``, keeping only m for backward.

    Same values and gradient, bit for bit, as ``torch.sigmoid(noise.add_(x).div_(t)).clamp(tiny, 1 - eps)`` under
    autograd, which kept both σ's output and the clamped copy (two P-sized buffers; one here): for an unclamped
    element m = σ, so σ's backward g (1 − m) m / t reads m; where the clamp bit (m at or beyond a bound: its
    backward passes only strictly inside the bounds) the gradient is 0 (tests/test_fused_merge.py checks both).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, noise: Tensor, temperature: float) -> Tensor:
        eps, tiny = torch.finfo(logits.dtype).eps, torch.finfo(logits.dtype).tiny
        noise.add_(logits).div_(temperature)
        # a view of a larger noise buffer (a shard's block) gets its own storage, so the whole buffer is freed
        out = noise.sigmoid_() if _owns_storage(noise) else noise.sigmoid()
        out.clamp_(tiny, 1 - eps)
        ctx.temperature, ctx.bounds = temperature, (tiny, 1 - eps)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        low, high = ctx.bounds
        grad_logits = torch.ops.aten.sigmoid_backward(grad, mask).div_(ctx.temperature)
        grad_logits.masked_fill_((mask <= low).logical_or_(mask >= high), 0.0)
        return grad_logits, None, None


def relaxed_bernoulli(logits: Tensor, noise: Tensor, temperature: float) -> Tensor:
    """σ((noise + x) / temperature), differentiable in the logits x; ``noise`` (from :func:`logistic_noise`) is consumed."""
    temperature = check_temperature(temperature)
    # clipped like torch's SigmoidTransform, so a sample is strictly inside (0, 1) even where σ rounds to 0 or 1
    if not (logits.requires_grad and torch.is_grad_enabled()):
        eps = torch.finfo(logits.dtype).eps
        return torch.sigmoid(noise.add_(logits).div_(temperature)).clamp_(torch.finfo(logits.dtype).tiny, 1 - eps)
    return _RelaxedBernoulli.apply(logits, noise, temperature)


def sample_concrete(
    logits: Tensor, temperature: float, generator: torch.Generator, *, start: int = 0, total: int | None = None
) -> Tensor:
    """One relaxed-Bernoulli sample per logit, differentiable in the logits (reparameterised).

    ``total``: the logits are elements ``start`` onwards of a mask of ``total`` elements (one rank's block under
    sharding): the noise of the whole mask is drawn, then cut, so the block equals that of the one-process sample.
    """
    check_temperature(temperature)
    shape = logits.shape if total is None else (total,)
    noise = logistic_noise(shape, generator, device=logits.device, dtype=logits.dtype)
    if total is not None:
        noise = noise[start : start + logits.numel()]
    return relaxed_bernoulli(logits, noise, temperature)


def mean_floor(dtype: torch.dtype) -> float:
    """Smallest mask mean divided by: machine epsilon, so a collapsed (≈0) mask gives ≈0 and finite gradients, not NaN."""
    return torch.finfo(dtype).eps


def rescale(mask: Tensor) -> Tensor:
    """m / mean(m) over one tensor, so the masked task vector keeps its expected scale (an all-zero mask stays 0)."""
    return mask / mask.mean().clamp_min(mean_floor(mask.dtype))


def segment_means(flat: Tensor, layout: ParamLayout) -> Tensor:
    """Mean of ``flat`` over each tensor of the layout: a vector of length K."""
    lengths = torch.tensor(layout.numels, device=flat.device)
    return torch.segment_reduce(flat, "mean", lengths=lengths)


def rescale_flat(mask: Tensor, layout: ParamLayout) -> Tensor:
    """Per-tensor m / mean(m) on a flat mask, in one fused pass (no Python loop over tensors)."""
    means = segment_means(mask, layout).clamp_min(mean_floor(mask.dtype))
    return mask / torch.repeat_interleave(means, torch.tensor(layout.numels, device=mask.device))


def evaluation_mask(
    logits: Tensor, kind: EvalMask = "sample", *, temperature: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """The (unrescaled) mask used to evaluate a learned mask.

    ``sample``: one continuous Concrete sample (the paper's evaluation); ``expected``: σ(x); ``hard``: σ(x) > 0.5;
    ``bernoulli``: a binary draw with probability σ(x).
    """
    with torch.no_grad():
        if kind == "sample":
            if generator is None:
                raise ValueError("evaluation_mask(kind='sample') needs a torch.Generator")
            return sample_concrete(logits, temperature, generator)
        if kind == "expected":
            return torch.sigmoid(logits)
        if kind == "hard":
            return (logits > 0).to(logits.dtype)
        if kind == "bernoulli":
            if generator is None:
                raise ValueError("evaluation_mask(kind='bernoulli') needs a torch.Generator")
            return torch.bernoulli(torch.sigmoid(logits), generator=generator)
    raise ValueError(f"unknown evaluation mask {kind!r}; choose one of {list(EVAL_MASKS)}")


#: |x| above which a logit counts as moved away from its initial 0 (σ(0.5) ≈ 0.62, σ(−0.5) ≈ 0.38).
LARGE_LOGIT = 0.5


def density(logits: Tensor, layout: ParamLayout | None = None) -> dict:
    """Mask statistics, overall and (with a layout) per tensor.

    ``density``: fraction of kept elements (σ(x) > 0.5); ``mean_keep_probability``: mean σ(x). Both hide a mask that
    moved up and down in equal parts, so also ``mean_abs_logit`` (mean |x|) and ``large_logit_share`` (fraction
    with |x| > :data:`LARGE_LOGIT`): they are 0 for an untrained mask and grow with what the mask learned.
    """
    with torch.no_grad():
        kept = (logits > 0).float()
        probs = torch.sigmoid(logits.float())
        magnitude = logits.float().abs()
        large = (magnitude > LARGE_LOGIT).float()
        stats = {
            "density": float(kept.mean()),
            "mean_keep_probability": float(probs.mean()),
            "mean_abs_logit": float(magnitude.mean()),
            "large_logit_share": float(large.mean()),
        }
        if layout is not None:
            stats["per_tensor"] = {
                key: {
                    "density": float(d),
                    "mean_keep_probability": float(p),
                    "mean_abs_logit": float(a),
                    "large_logit_share": float(s),
                }
                for key, d, p, a, s in zip(
                    layout.keys,
                    segment_means(kept, layout),
                    segment_means(probs, layout),
                    segment_means(magnitude, layout),
                    segment_means(large, layout),
                )
            }
        return stats
