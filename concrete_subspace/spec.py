"""The executable specification: docs/method.md written out plainly, one small function per formula.

Plain state dicts (merged-tensor name → tensor), a Python loop over steps, one task's forward at a time; no flat
buffers, no sharding, no checkpoints, no logging, no progress bars. Slow and simple on purpose: it is the yardstick
that the fast code (:mod:`concrete`, :mod:`adamerging`) is tested against (tests/test_spec.py). Only the options that
change what is computed are here (not ``vector_dtype``, ``forward_mode``, ``precision`` or ``shard_vectors``), for
float32 models (how the fast code handles 16-bit ones, docs/method.md §1, is an implementation matter).

Random streams follow the library's convention, so one seed gives the same masks in both: a mask sample draws ONE
vector of P uniforms over the merged elements in state-dict order from an explicit generator (the run's generator,
seeded with ``seed``; ``named_seed(seed, "evaluation_mask")`` for CTA's evaluation mask;
``named_seed(seed, "kept_mask")`` for Concrete AdaMerging's kept mask).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

from .evaluation import to_device
from .functional import forward
from .problem import MergeProblem
from .seeding import named_seed

State = dict[str, Tensor]
EVAL_MASKS = ("sample", "expected", "hard", "bernoulli")
VARIANTS = ("paper", "fusion_bench")


class SpecResult(NamedTuple):
    """The merged state, the learned mask logits (Concrete methods) and the effective coefficients (AdaMerging)."""

    state: State
    mask_logits: State | None = None
    coefficients: Tensor | None = None


def pretrained_and_task_vectors(problem: MergeProblem) -> tuple[State, list[State]]:
    """θ0 over the merged tensors (the floating-point entries, in order) and τ_i = θ_i − θ0 for every task."""
    theta0 = {k: v for k, v in problem.pretrained.items() if v.is_floating_point()}
    vectors = []
    for task in problem.task_names:
        finetuned = problem.load_finetuned(task)
        vectors.append({k: finetuned[k].to(v.device) - v for k, v in theta0.items()})
    return theta0, vectors


def task_arithmetic(theta0: State, vectors: list[State], scaling: float = 0.3) -> State:
    """θ0 + λ Σ_i τ_i."""
    return {k: theta0[k] + scaling * sum(v[k] for v in vectors) for k in theta0}


def ties_preprocess(vectors: list[State], density: float = 0.2) -> list[State]:
    """AdaMerging++'s vectors: each τ_i trimmed to its top ``density`` by |x| (over all its tensors), then only the
    entries agreeing with the elected sign sign(Σ_i trimmed_i) are kept (a zero sum takes the majority sign)."""
    flat = torch.stack([torch.cat([t.reshape(-1) for t in v.values()]) for v in vectors])
    k = flat.shape[1] - int(flat.shape[1] * density)
    trimmed = flat * (flat.abs() >= flat.abs().kthvalue(k, dim=1, keepdim=True).values) if k >= 1 else flat
    sign = torch.sign(trimmed.sum(0))
    sign = torch.where(sign == 0, torch.sign(sign.sum()), sign)
    kept = trimmed * torch.where(sign > 0, trimmed > 0, trimmed < 0)
    return [unflatten_like(row, vectors[0]) for row in kept]


def unflatten_like(flat: Tensor, like: State) -> State:
    """Split a vector of length P back into tensors with ``like``'s names and shapes (state-dict order)."""
    parts = torch.split(flat, [t.numel() for t in like.values()])
    return {k: part.view(t.shape) for (k, t), part in zip(like.items(), parts)}


def concrete_sample(logits: State, temperature: float, generator: torch.Generator) -> State:
    """Relaxed Bernoulli: m = clip(σ((log u − log(1 − u) + x)/temperature), tiny, 1 − eps), u ~ U(0, 1) clamped to
    [eps, 1 − eps]; differentiable in the logits x."""
    x = torch.cat([t.reshape(-1) for t in logits.values()])
    eps, tiny = torch.finfo(x.dtype).eps, torch.finfo(x.dtype).tiny
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).clamp(eps, 1 - eps)
    m = torch.sigmoid((torch.log(u) - torch.log1p(-u) + x) / temperature).clamp(tiny, 1 - eps)
    return unflatten_like(m, logits)


def rescale(mask: Tensor) -> Tensor:
    """m / max(mean(m), eps) over one tensor: the masked task vector keeps its expected scale."""
    return mask / mask.mean().clamp_min(torch.finfo(mask.dtype).eps)


def evaluation_mask(logits: State, kind: str, temperature: float, seed: int) -> State:
    """The mask of the final model: ``sample`` (one Concrete sample), ``expected`` σ(x), ``hard`` 1[x > 0] or
    ``bernoulli`` (a binary draw with probability σ(x)); random kinds use a generator seeded with ``seed``."""
    generator = torch.Generator(device=next(iter(logits.values())).device).manual_seed(seed)
    x = {k: t.detach() for k, t in logits.items()}
    if kind == "sample":
        return concrete_sample(x, temperature, generator)
    if kind == "expected":
        return {k: torch.sigmoid(t) for k, t in x.items()}
    if kind == "hard":
        return {k: (t > 0).to(t.dtype) for k, t in x.items()}
    if kind == "bernoulli":
        flat = torch.cat([t.reshape(-1) for t in x.values()])
        return unflatten_like(torch.bernoulli(torch.sigmoid(flat), generator=generator), x)
    raise ValueError(f"unknown eval_mask {kind!r}; choose one of {list(EVAL_MASKS)}")


def merge(theta0: State, vectors: list[State], weights: Tensor, mask: State | None = None) -> State:
    """θ0 + Σ_i w_i τ_i, times m / mean(m) per tensor when a mask is given (one mask shared by all tasks);
    w is [T] (task-wise) or [T, K] (layer-wise: column k weighs tensor k)."""
    merged = {}
    for index, key in enumerate(theta0):
        w = weights if weights.dim() == 1 else weights[:, index]
        delta = sum(w[i] * v[key] for i, v in enumerate(vectors))
        merged[key] = theta0[key] + (delta if mask is None else delta * rescale(mask[key]))
    return merged


def entropy_loss(problem: MergeProblem, params: State, data_step: int) -> Tensor:
    """Σ_tasks of the batch-mean prediction entropy −Σ_c p_c log p_c on each task's unlabeled batch ``data_step``."""
    total = torch.zeros((), device=problem.device)
    for task in problem.task_names:
        inputs = to_device(problem.unlabeled_batch(task, data_step), problem.device)
        z = problem.task_logits(task, forward(problem.model, params, inputs)).float()
        total = total + (-(z.softmax(-1) * z.log_softmax(-1)).sum(-1)).mean()
    return total


def initial_coefficients(theta0: State, num_tasks: int, granularity: str, init: float) -> Tensor:
    """w filled with ``init``: [T] task-wise, [T, K] layer-wise (K merged tensors)."""
    if granularity not in ("task", "layer"):
        raise ValueError(f"granularity must be one of ('task', 'layer'), got {granularity!r}")
    shape = (num_tasks,) if granularity == "task" else (num_tasks, len(theta0))
    return torch.full(shape, float(init), device=next(iter(theta0.values())).device)


def effective_coefficients(weights: Tensor, clamp: bool) -> Tensor:
    """The coefficients used in the merge: clamp(w, 0, 1) if ``clamp``, else w."""
    return weights.clamp(0.0, 1.0) if clamp else weights


def adapt_coefficients(problem, theta0, vectors, initial, *, clamp, lr, betas, steps, mask=None) -> Tensor:
    """AdaMerging's loop: Adam on w, step s minimising the summed entropy of θ0 + Σ c(w)_i τ_i (⊙ m̃) on batch s."""
    w = initial.clone().requires_grad_(True)
    adam = torch.optim.Adam([w], lr=lr, betas=betas)
    for step in range(steps):
        adam.zero_grad()
        entropy_loss(problem, merge(theta0, vectors, effective_coefficients(w, clamp), mask), step).backward()
        adam.step()
    return w.detach()


def adamerging(
    problem, *, granularity="layer", init=0.3, clamp=True, lr=1e-3, betas=(0.9, 0.999), steps=1000, ties_density=None
) -> SpecResult:
    """Task- or layer-wise AdaMerging; AdaMerging++ when ``ties_density`` is set (the vectors TIES-processed)."""
    theta0, vectors = pretrained_and_task_vectors(problem)
    vectors = vectors if ties_density is None else ties_preprocess(vectors, ties_density)
    initial = initial_coefficients(theta0, len(vectors), granularity, init)
    w = adapt_coefficients(problem, theta0, vectors, initial, clamp=clamp, lr=lr, betas=betas, steps=steps)
    return SpecResult(merge(theta0, vectors, effective_coefficients(w, clamp)), None, effective_coefficients(w, clamp))


def concrete_task_arithmetic(
    problem,
    *,
    scaling=0.3,
    temperature=0.5,
    lr=1e-3,
    betas=(0.9, 0.999),
    weight_decay=0.0,
    steps=2000,
    init_logit=0.0,
    eval_mask="sample",
    seed=0,
) -> SpecResult:
    """CTA: Adam on the mask logits x; step s samples m ~ Concrete(x, temperature) and minimises the summed entropy of
    θ0 + λ_TA Σ_i τ_i ⊙ m / mean(m) on batch s. Final model: the evaluation mask (its named stream), last step."""
    theta0, vectors = pretrained_and_task_vectors(problem)
    weights = torch.full((len(vectors),), float(scaling), device=problem.device)
    logits = {k: torch.full(v.shape, float(init_logit), device=v.device, requires_grad=True) for k, v in theta0.items()}
    adam = torch.optim.Adam(logits.values(), lr=lr, betas=betas, weight_decay=weight_decay)
    generator = torch.Generator(device=problem.device).manual_seed(seed)
    for step in range(steps):
        adam.zero_grad()
        mask = concrete_sample(logits, temperature, generator)
        entropy_loss(problem, merge(theta0, vectors, weights, mask), step).backward()
        adam.step()
    final = evaluation_mask(logits, eval_mask, temperature, named_seed(seed, "evaluation_mask"))
    return SpecResult(merge(theta0, vectors, weights, final), {k: x.detach() for k, x in logits.items()})


def concrete_adamerging(
    problem,
    *,
    granularity="layer",
    init=0.3,
    clamp=None,
    temperature=0.5,
    init_logit=0.0,
    inner_lr=1.0,
    outer_lr=1e-3,
    betas=(0.9, 0.999),
    meta_steps=2000,
    tta_lr=1e-3,
    tta_steps=1000,
    variant="paper",
    persist_inner_optimizer=True,
    inner_uses_previous_weights=False,
    eval_mask="sample",
    seed=0,
) -> SpecResult:
    """Concrete AdaMerging. Meta step s: sample m; reset w; ONE inner Adam step on w (m constant, batch 2s);
    ``paper``: a new sample m'; ONE outer Adam step on x with the adapted w constant (batch 2s + 1). Then x is
    frozen, one mask is kept (its named stream), w is reset and adapted by AdaMerging's loop (step s on batch s)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    clamp = (variant == "paper") if clamp is None else bool(clamp)
    theta0, vectors = pretrained_and_task_vectors(problem)
    initial = initial_coefficients(theta0, len(vectors), granularity, init)
    logits = {k: torch.full(v.shape, float(init_logit), device=v.device, requires_grad=True) for k, v in theta0.items()}
    w, adapted = initial.clone().requires_grad_(True), initial.clone()
    inner = torch.optim.Adam([w], lr=inner_lr, betas=betas)
    outer = torch.optim.Adam(logits.values(), lr=outer_lr, betas=betas)
    generator = torch.Generator(device=problem.device).manual_seed(seed)
    for step in range(meta_steps):
        mask = concrete_sample(logits, temperature, generator)
        if not persist_inner_optimizer:
            inner = torch.optim.Adam([w], lr=inner_lr, betas=betas)  # fresh moments and step count
        with torch.no_grad():  # reset w; the reference codes' quirk: the inner forward at the previous adapted w'
            w.copy_(adapted if inner_uses_previous_weights else initial)
        inner.zero_grad()
        fixed_mask = {k: m.detach() for k, m in mask.items()}
        loss = entropy_loss(problem, merge(theta0, vectors, effective_coefficients(w, clamp), fixed_mask), 2 * step)
        if inner_uses_previous_weights:  # ... and, as subspace_fusion does, w's .data is reset BEFORE the backward:
            w.data.copy_(initial)  # the clamp's gradient is read at the reset w, and the step applies to it
        loss.backward()
        inner.step()
        adapted = w.detach().clone()
        if variant == "paper":
            mask = concrete_sample(logits, temperature, generator)
        outer.zero_grad()
        entropy_loss(
            problem, merge(theta0, vectors, effective_coefficients(adapted, clamp), mask), 2 * step + 1
        ).backward()
        outer.step()
    kept = evaluation_mask(logits, eval_mask, temperature, named_seed(seed, "kept_mask"))
    w = adapt_coefficients(
        problem, theta0, vectors, initial, clamp=clamp, lr=tta_lr, betas=betas, steps=tta_steps, mask=kept
    )
    learned = {k: x.detach() for k, x in logits.items()}
    return SpecResult(
        merge(theta0, vectors, effective_coefficients(w, clamp), kept), learned, effective_coefficients(w, clamp)
    )


#: The registry's test-time methods, by name, as specified here (``run_method(name, ...)`` is their fast form).
SPEC_METHODS = {
    "task_wise_adamerging": partial(adamerging, granularity="task"),
    "layer_wise_adamerging": partial(adamerging, granularity="layer"),
    "task_wise_adamerging_pp": partial(adamerging, granularity="task", ties_density=0.2),
    "layer_wise_adamerging_pp": partial(adamerging, granularity="layer", ties_density=0.2),
    "concrete_task_arithmetic": concrete_task_arithmetic,
    "task_wise_concrete_adamerging": partial(concrete_adamerging, granularity="task"),
    "layer_wise_concrete_adamerging": partial(concrete_adamerging, granularity="layer"),
}
