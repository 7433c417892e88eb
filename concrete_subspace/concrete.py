"""Concrete Subspace Learning (Tang et al., arXiv 2312.06173): Concrete Task Arithmetic and Concrete AdaMerging.

One Concrete mask shared by all tasks is learned by entropy minimisation on unlabeled test batches.

- **CTA**: θ = θ0 + λ Σ_i τ_i ⊙ m / mean(m), λ (the task-arithmetic ``scaling``) fixed; Adam on the logits, a new mask sample each step. Since λ is
  fixed, λ Σ_i τ_i is computed once, so a step costs the same for any number of tasks (same result as merging per
  task, fewer operations).
- **Concrete AdaMerging**: stage 1 (meta-learning), per iteration: reset w; ONE inner Adam step on w (lr 1) with the
  current mask sample; draw a new sample; ONE outer Adam step on the logits with w held constant (first order).
  Stage 2 (test-time adaptation): freeze the mask, draw one sample and keep it, reset w, Adam on w.

Paper-code choices, and what we did with the quirks of the reference codes (named options, see docs/method.md):
``variant="paper"`` draws a new sample for the outer step and clamps w to [0, 1]; ``variant="fusion_bench"`` uses one
sample per iteration and no clamp. ``persist_inner_optimizer=True`` keeps the inner Adam state across iterations
(both reference codes do). ``inner_uses_previous_weights=False``: the reference codes' inner forward used the
previous iteration's adapted w (the merged weights were not recomputed after the reset); we recompute by default
and offer the quirk as an option, exact for both codes (:func:`inner_coefficients`). ``PRESETS`` names the two
reference codes' full settings. Results are the last step, as in the paper.

Diagnostics (never changing a result or a random stream; docs/method.md §7, :mod:`concrete_subspace.diagnostics`):
every Concrete run records the mask's logit magnitudes, the merge with the learned mask at the initial coefficients
(the mask-only effect) and the final model under the expected mask σ(x) beside the sampled headline model. How a run
is executed (device-side choices, sharding, checkpoints, logging, the seed) is ``run=``
(:class:`~concrete_subspace.loop.RunOptions`).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from .adamerging import adapt_coefficients, check_init, effective_coefficients, init_coefficients, prepare_vectors
from .diagnostics import concrete_extras, density_row, eval_mask_record, mask_only_record, meta_stage_columns
from .loop import DEFAULT_RUN, RunContext, RunOptions, RunState, check_test_time_data, parse_dtype
from .masks import EVAL_MASKS, check_temperature, init_logits
from .merging import apply_mask_flat, merge_flat
from .problem import MergeProblem, MergeResult
from .task_vectors import sum_task_vectors

VARIANTS = ("paper", "fusion_bench")

#: Concrete AdaMerging as the authors ran it. ``paper``: tanganke/subspace_fusion (the paper's runs): 2,000 meta
#: steps, inner Adam lr 1 (one step), w clamped to [0, 1], a second mask sample for the outer step, stage 2 at
#: 1e-3 x 1,000. ``fusion_bench``: tanganke/fusion_bench: 1,000 meta steps, no clamp, one sample per iteration.
#: Both keep the inner Adam state and run the inner forward at the previous iteration's w' (the quirk option).
PRESETS: dict[str, dict] = {
    "paper": {
        "variant": "paper",
        "clamp": True,
        "init": 0.3,
        "inner_lr": 1.0,
        "outer_lr": 1e-3,
        "meta_steps": 2000,
        "tta_lr": 1e-3,
        "tta_steps": 1000,
        "persist_inner_optimizer": True,
        "inner_uses_previous_weights": True,
    },
    "fusion_bench": {
        "variant": "fusion_bench",
        "clamp": False,
        "init": 0.3,
        "inner_lr": 1.0,
        "outer_lr": 1e-3,
        "meta_steps": 1000,
        "tta_lr": 1e-3,
        "tta_steps": 1000,
        "persist_inner_optimizer": True,
        "inner_uses_previous_weights": True,
    },
}


def preset(name: str) -> dict:
    """The parameters of a named Concrete AdaMerging preset (a copy; pass them to ``run_method`` as overrides)."""
    if name not in PRESETS:
        raise ValueError(f"unknown Concrete AdaMerging preset {name!r}; choose one of {list(PRESETS)}")
    return dict(PRESETS[name])


def inner_coefficients(weights: Tensor, previous: Tensor, clamp: bool, uses_previous: bool) -> Tensor:
    """The coefficients of the inner step's forward, with the gradient the inner Adam step applies to ``weights``.

    ``uses_previous=False`` (the paper's description): c(w) at the reset w. ``uses_previous=True`` (both reference
    codes): the VALUE c(w'_prev) of the previous iteration's adapted w' (the merged model was not recomputed after the
    reset) with the GRADIENT of c at the reset ``weights``: subspace_fusion resets ``.data`` before the backward, so
    the clamp's gradient is read at the reset w (0.3) and passes every coefficient, even where w' left [0, 1].
    Without clamp (fusion_bench) c is the identity and both readings agree.
    """
    current = effective_coefficients(weights, clamp)
    if not uses_previous:
        return current
    # value exactly c(previous) (adding an exact 0), gradient dc/dw at the reset weights
    return effective_coefficients(previous, clamp).detach() + (current - current.detach())


def check_mask_options(temperature: float, eval_mask: str) -> None:
    """The Concrete temperature must be positive and finite, and ``eval_mask`` one of :data:`EVAL_MASKS`."""
    check_temperature(temperature)
    if eval_mask not in EVAL_MASKS:
        raise ValueError(f"unknown eval_mask {eval_mask!r}; choose one of {list(EVAL_MASKS)}")


def concrete_task_arithmetic(
    problem: MergeProblem,
    *,
    scaling: float = 0.3,
    temperature: float = 0.5,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    steps: int = 2000,
    init_logit: float = 0.0,
    eval_mask: str = "sample",
    run: RunOptions = DEFAULT_RUN,
) -> MergeResult:
    """Concrete Task Arithmetic: learn the shared mask with the task-arithmetic coefficient λ (``scaling``) fixed.

    Under ``precision="bf16"`` the mask logits, Adam state and entropies stay fp32; sharded, each rank keeps λΣτ, the
    logits and their Adam state for its block of tensors only (:mod:`concrete_subspace.distributed`).
    """
    hyperparameters = {k: v for k, v in locals().items() if k not in ("problem", "run")}
    check_mask_options(temperature, eval_mask)
    context = RunContext(problem, hyperparameters, run)
    check_test_time_data(problem)
    # λ is fixed, so only λ Σ τ_i is needed: summed as the models stream in (never T task vectors at once)
    dtype = parse_dtype(run.vector_dtype)
    layout, summed = sum_task_vectors(
        problem.pretrained,
        problem.load_finetuned,
        problem.task_names,
        scaling=float(scaling),
        dtype=dtype,
        progress=run.progress,
    )
    shard = context.shard  # this rank's block of every flat vector below (the whole vector unless sharded)
    summed, theta0 = shard.local(summed), shard.local(layout.flatten(problem.pretrained))
    logits = init_logits(theta0.numel(), init_logit, device=theta0.device).requires_grad_(True)
    # foreach: the same values as the default single-tensor Adam, in fewer passes over the P logits (issue 30)
    optimizer = torch.optim.Adam([logits], lr=lr, betas=tuple(betas), weight_decay=weight_decay, foreach=True)
    generator = context.generator(theta0.device)
    state = RunState({"logits": logits}, {"optimizer": optimizer}, generator, context.history)

    def merged(mask: Tensor) -> Tensor:  # θ0 + λ Σ τ_i ⊙ m / mean(m), this rank's block
        return apply_mask_flat(theta0, summed, mask, shard.local_layout)

    def step_fn(step: int) -> dict:
        optimizer.zero_grad(set_to_none=True)
        losses = context.entropy_backward(merged(context.sample_mask(logits, temperature, generator)), step)
        optimizer.step()
        return {"loss": sum(losses.values()), **{f"entropy/{t}": v for t, v in losses.items()}}

    def final_mask() -> Tensor:  # the evaluation mask, from its own stream
        return context.evaluation_mask(logits, eval_mask, temperature, "evaluation_mask")

    context.optimise(
        "concrete_task_arithmetic",
        steps,
        step_fn,
        state,
        start=context.restore(state, "concrete_task_arithmetic"),
        eval_flat=lambda: shard.gather(merged(final_mask())),
        log_fn=lambda: density_row(shard.gather(logits)),
    )
    mask = final_mask()
    record = eval_mask_record(shard.gather(mask), eval_mask, context.stream_seed("evaluation_mask"), temperature)
    # CTA's coefficients never move: its final model IS the learned mask at λ (compare with task arithmetic at λ)
    mask_only = {"coefficients": float(scaling), "final_model": True}
    extras = concrete_extras(context, logits, record, mask_only, merged)
    return MergeResult(context.final_state(lambda: merged(mask)), context.params, context.history, extras)


def concrete_adamerging(
    problem: MergeProblem,
    *,
    granularity: str = "layer",
    init: float = 0.3,
    clamp: bool | None = None,
    temperature: float = 0.5,
    init_logit: float = 0.0,
    inner_lr: float = 1.0,
    outer_lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    meta_steps: int = 2000,
    tta_lr: float = 1e-3,
    tta_steps: int = 1000,
    variant: str = "paper",
    persist_inner_optimizer: bool = True,
    inner_uses_previous_weights: bool = False,
    eval_mask: str = "sample",
    run: RunOptions = DEFAULT_RUN,
) -> MergeResult:
    """Concrete AdaMerging: meta-learn the shared mask around one-step AdaMerging, then adapt w under the frozen mask.

    ``clamp=None`` follows the variant (paper: clamp w to [0, 1]; fusion_bench: no clamp). Under ``precision="bf16"``
    logits, w and both Adam states stay fp32; sharded, each rank keeps the task vectors, logits and their Adam state
    for its block of tensors only, w is replicated (:mod:`concrete_subspace.distributed`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    clamp = (variant == "paper") if clamp is None else bool(clamp)
    hyperparameters = {k: v for k, v in locals().items() if k not in ("problem", "run")}
    check_mask_options(temperature, eval_mask)
    check_init(init, clamp)
    context = RunContext(problem, hyperparameters, run)
    layout, theta0, vectors = prepare_vectors(problem, run.vector_dtype, run.progress, shard=context.shard)
    shard, c = context.shard, partial(effective_coefficients, clamp=clamp)  # c(w): the merge coefficients of w
    initial = init_coefficients(len(vectors), len(layout.keys), granularity, init, theta0.device)
    weights, previous = initial.clone().requires_grad_(True), initial.clone()
    logits = init_logits(theta0.numel(), init_logit, device=theta0.device).requires_grad_(True)
    inner = torch.optim.Adam([weights], lr=inner_lr, betas=tuple(betas), weight_decay=0.0)
    outer = torch.optim.Adam([logits], lr=outer_lr, betas=tuple(betas), weight_decay=0.0, foreach=True)
    generator = context.generator(theta0.device)
    tensors = {"logits": logits, "weights": weights, "previous_weights": previous}
    state = RunState(tensors, {"inner": inner, "outer": outer}, generator, context.history)

    def merge(coefficients: Tensor, mask: Tensor) -> Tensor:  # this rank's block of θ0 + Σ c_i τ_i ⊙ m / mean(m)
        return merge_flat(theta0, vectors, shard.coefficients(coefficients), shard.local_layout, mask)

    def meta_step(step: int) -> dict:
        mask = context.sample_mask(logits, temperature, generator)
        with torch.no_grad():
            weights.copy_(initial)
        if not persist_inner_optimizer:
            inner.state.clear()
        inner.zero_grad(set_to_none=True)  # ONE inner Adam step on w under the current sample
        coefficients = inner_coefficients(weights, previous, clamp, inner_uses_previous_weights)
        inner_losses = context.entropy_backward(merge(coefficients, mask.detach()), 2 * step)
        shard.reduce_grad_(weights)
        inner.step()
        with torch.no_grad():
            previous.copy_(weights)
        if variant == "paper":
            mask = context.sample_mask(logits, temperature, generator)
        outer.zero_grad(set_to_none=True)  # ONE outer Adam step on the logits, w' held constant (first order)
        outer_losses = context.entropy_backward(merge(c(weights).detach(), mask), 2 * step + 1)
        outer.step()
        losses = {"loss": sum(outer_losses.values()), "inner_loss": sum(inner_losses.values())}
        return {**losses, **{f"entropy/{t}": v for t, v in outer_losses.items()}}

    def evaluated(w: Tensor) -> Tensor:  # the whole model at c(w) under the evaluation mask
        return shard.gather(merge(c(w), context.evaluation_mask(logits, eval_mask, temperature, "evaluation_mask")))

    start = context.resume_stage(state, "meta", meta_steps, later="tta", carried=("logits",))
    columns = meta_stage_columns(context, logits, lambda: c(weights), mask_only_flat=lambda: evaluated(initial))
    context.optimise("meta", meta_steps, meta_step, state, start=start, eval_flat=lambda: evaluated(weights), **columns)
    logits.requires_grad_(False)  # stage 2: one sample of the frozen mask, kept; Adam on w from its initial value
    kept = context.evaluation_mask(logits, eval_mask, temperature, "kept_mask")
    tta = {"granularity": granularity, "init": init, "clamp": clamp, "lr": tta_lr, "betas": betas, "steps": tta_steps}
    adapted = adapt_coefficients(
        context, theta0, vectors, stage="tta", mask=kept, generator=generator, **tta, extra_tensors={"logits": logits}
    )
    coefficients = c(adapted)
    record = eval_mask_record(shard.gather(kept), eval_mask, context.stream_seed("kept_mask"), temperature)
    mask_only = mask_only_record(context, init, lambda: shard.gather(merge(c(initial), kept)))
    extras = concrete_extras(context, logits, record, mask_only, lambda m: merge(coefficients, m), coefficients)
    return MergeResult(context.final_state(lambda: merge(coefficients, kept)), context.params, context.history, extras)
