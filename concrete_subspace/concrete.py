"""Concrete Subspace Learning (Tang et al., arXiv 2312.06173): Concrete Task Arithmetic and Concrete AdaMerging.

One Concrete mask shared by all tasks is learned by entropy minimisation on unlabeled test batches.

- **CTA**: θ = θ0 + λ Σ_i τ_i ⊙ m / mean(m), λ fixed; Adam on the logits, a new mask sample each step. Since λ is
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

Diagnostics (never changing a result or a random stream; docs/method.md §7): every Concrete run records the mask's
logit magnitudes, the merge with the learned mask at the initial coefficients (the mask-only effect) and the final
model under the expected mask σ(x) beside the sampled headline model.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from .adamerging import (
    adapt_coefficients,
    check_init,
    effective_coefficients,
    init_coefficients,
    prepare_vectors,
    registry_variant,
)
from .distributed import make_shard
from .evaluation import average
from .loop import (
    Checkpointer,
    RunState,
    check_forward_mode,
    check_precision,
    check_test_time_data,
    entropy_backward,
    evaluator,
    optimise,
    parse_dtype,
)
from .masks import EVAL_MASKS, check_temperature, density, evaluation_mask, init_logits
from .merging import apply_mask_flat, merge_flat
from .problem import MergeProblem, MergeResult
from .seeding import derive_seed
from .task_vectors import ParamLayout, sum_task_vectors

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


def _check_common(temperature: float, eval_mask: str, forward_mode: str, precision: str) -> None:
    check_temperature(temperature)
    check_forward_mode(forward_mode)
    check_precision(precision)
    if eval_mask not in EVAL_MASKS:
        raise ValueError(f"unknown eval_mask {eval_mask!r}; choose one of {list(EVAL_MASKS)}")


def _mask_extras(logits: Tensor, layout: ParamLayout) -> dict:
    return {
        "mask_logits": logits.detach().cpu(),
        "layout_keys": list(layout.keys),
        "mask_density": density(logits, layout),
    }


def mask_digest(mask: Tensor) -> str:
    """SHA-256 of a mask's float32 values: identifies the exact mask a final model used."""
    return hashlib.sha256(mask.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def eval_mask_record(mask: Tensor, kind: str, seed: int, temperature: float) -> dict:
    """How to redraw the exact mask of the final model (kind, generator seed, temperature, device) and its digest."""
    return {
        "kind": kind,
        "seed": int(seed),
        "temperature": float(temperature),
        "device": str(mask.device),
        "sha256": mask_digest(mask),
    }


def _density_row(logits: Tensor) -> dict:
    stats = density(logits)
    keys = ("density", "mean_keep_probability", "mean_abs_logit", "large_logit_share")
    return {key: stats[key] for key in keys}


def coefficient_row(coefficients: Tensor) -> dict:
    """Where the merge coefficients are: their mean and the share at or beyond 0 or 1 (one inner step at lr 1 drives
    layer-wise coefficients there, which is why accuracy at w' can fall while the mask improves)."""
    with torch.no_grad():
        c = coefficients.detach().float()
        return {
            "coefficient_mean": float(c.mean()),
            "coefficient_share_at_bounds": float(((c <= 0) | (c >= 1)).float().mean()),
        }


def scores_row(prefix: str, scores: dict[str, float]) -> dict:
    """History columns ``<prefix>/<task>`` and ``<prefix>_accuracy`` (the average) for a diagnostic evaluation."""
    return {**{f"{prefix}/{t}": s for t, s in scores.items()}, f"{prefix}_accuracy": average(scores)}


def stage_start_scores(history: list[dict], stage: str) -> dict[str, float] | None:
    """Per-task accuracies of a stage's step-0 row (logged when the run evaluates along the way), else None."""
    for row in history:
        if row.get("stage") == stage and row.get("step") == 0 and "avg_accuracy" in row:
            return {k.removeprefix("acc/"): v for k, v in row.items() if k.startswith("acc/")}
    return None


def expected_mask(logits: Tensor) -> Tensor:
    """σ(x): the expected mask, a deterministic diagnostic beside the sampled headline mask (draws nothing)."""
    return evaluation_mask(logits, "expected")


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
    seed: int = 0,
    vector_dtype: str = "float32",
    forward_mode: str = "batched",
    precision: str = "fp32",
    shard_vectors: bool = False,
    log_every: int = 10,
    eval_every: int = 0,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 100,
    resume: bool = True,
    progress: bool = True,
) -> MergeResult:
    """Concrete Task Arithmetic: learn the shared mask with the task-arithmetic coefficient λ (``scaling``) fixed.

    ``forward_mode`` / ``precision``: see :func:`concrete_subspace.loop.entropy_backward` (mask logits, Adam state and
    entropies stay fp32 under ``precision="bf16"``). ``shard_vectors``: under torchrun, each rank keeps λΣτ, the
    logits and their Adam state for its block of tensors only (:mod:`concrete_subspace.distributed`).
    """
    params = {k: v for k, v in locals().items() if k != "problem"}
    _check_common(temperature, eval_mask, forward_mode, precision)
    shard = make_shard(ParamLayout.of(problem.pretrained), shard_vectors)
    checkpointer = Checkpointer(checkpoint_dir, checkpoint_every, params, problem, shard)
    payload = checkpointer.load() if resume else None  # a foreign checkpoint is refused before any model is loaded
    check_test_time_data(problem)
    # λ is fixed, so only λ Σ τ_i is needed: summed as the models stream in (never T task vectors at once)
    layout, summed = sum_task_vectors(
        problem.pretrained,
        problem.load_finetuned,
        problem.task_names,
        scaling=float(scaling),
        dtype=parse_dtype(vector_dtype),
        progress=progress,
    )
    summed = shard.local(summed)  # this rank's block (the whole vector unless sharded)
    theta0 = shard.local(layout.flatten(problem.pretrained))
    logits = init_logits(theta0.numel(), init_logit, device=theta0.device).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    generator = torch.Generator(device=theta0.device).manual_seed(seed)
    eval_seed = derive_seed(seed, 1, stride=1)  # the evaluation mask's own stream (seed + 1)
    state = RunState({"logits": logits}, {"optimizer": optimizer}, generator)
    start = 0
    if payload is not None:
        state.restore(payload)
        start = payload["step"]

    def step_fn(step: int) -> dict:
        optimizer.zero_grad(set_to_none=True)
        mask = shard.sample_concrete(logits, temperature, generator)
        losses = entropy_backward(
            problem,
            apply_mask_flat(theta0, summed, mask, shard.local_layout),
            layout,
            step,
            forward_mode=forward_mode,
            precision=precision,
            shard=shard,
        )
        optimizer.step()
        return {"loss": sum(losses.values()), **{f"entropy/{t}": v for t, v in losses.items()}}

    def final_mask() -> Tensor:
        eval_generator = torch.Generator(device=theta0.device).manual_seed(eval_seed)
        return evaluation_mask(shard.gather(logits), eval_mask, temperature=temperature, generator=eval_generator)

    def evaluation_flat() -> Tensor:  # gathered from every rank's block (all of it unless sharded)
        return shard.gather(apply_mask_flat(theta0, summed, shard.local(final_mask()), shard.local_layout))

    optimise(
        "concrete_task_arithmetic",
        steps,
        step_fn,
        state,
        checkpointer,
        start=start,
        progress=progress,
        log_every=log_every,
        eval_fn=evaluator(problem, layout, evaluation_flat),
        eval_every=eval_every,
        log_fn=lambda: _density_row(shard.gather(logits)),
    )
    with torch.no_grad():
        mask = final_mask()
        merged = layout.unflatten(shard.gather(apply_mask_flat(theta0, summed, shard.local(mask), shard.local_layout)))
    expected = shard.local(expected_mask(shard.gather(logits)))
    extras = {
        **_mask_extras(shard.gather(logits), layout),
        "eval_mask": eval_mask_record(mask, eval_mask, eval_seed, temperature),
        # CTA's coefficients never move: its final model IS the learned mask at λ (compare with task arithmetic at λ)
        "mask_only": {"coefficients": float(scaling), "final_model": True},
        "expected_mask_scores": evaluator(
            problem, layout, lambda: shard.gather(apply_mask_flat(theta0, summed, expected, shard.local_layout))
        )(),
    }
    return MergeResult(merged, params, state.history, extras)


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
    seed: int = 0,
    vector_dtype: str = "float32",
    forward_mode: str = "batched",
    precision: str = "fp32",
    shard_vectors: bool = False,
    log_every: int = 10,
    eval_every: int = 0,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 100,
    resume: bool = True,
    progress: bool = True,
) -> MergeResult:
    """Concrete AdaMerging: meta-learn the shared mask around one-step AdaMerging, then adapt w under the frozen mask.

    ``clamp=None`` follows the variant (paper: clamp w to [0, 1]; fusion_bench: no clamp). ``forward_mode`` /
    ``precision``: see :func:`concrete_subspace.loop.entropy_backward` (logits, w, both Adam states stay fp32).
    ``shard_vectors``: under torchrun, each rank keeps the task vectors, logits and their Adam state for its block of
    tensors only; w is replicated (:mod:`concrete_subspace.distributed`).
    """
    params = {k: v for k, v in locals().items() if k != "problem"}
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    clamp = (variant == "paper") if clamp is None else bool(clamp)
    params["clamp"] = clamp
    _check_common(temperature, eval_mask, forward_mode, precision)
    check_init(init, clamp)
    shard = make_shard(ParamLayout.of(problem.pretrained), shard_vectors)
    checkpointer = Checkpointer(checkpoint_dir, checkpoint_every, params, problem, shard)
    payload = checkpointer.load() if resume else None  # a foreign checkpoint is refused before any model is loaded
    layout, theta0, vectors = prepare_vectors(problem, vector_dtype, progress, shard=shard)
    device = theta0.device
    initial = init_coefficients(len(vectors), len(layout.keys), granularity, init, device)
    weights = initial.clone().requires_grad_(True)
    previous = initial.clone()
    logits = init_logits(theta0.numel(), init_logit, device=device).requires_grad_(True)
    local = shard.local_layout

    def merge(coefficients: Tensor, mask: Tensor | None) -> Tensor:  # this rank's block of the merge
        return merge_flat(theta0, vectors, shard.coefficients(coefficients), local, mask)

    inner = torch.optim.Adam([weights], lr=inner_lr, betas=tuple(betas), weight_decay=0.0)
    outer = torch.optim.Adam([logits], lr=outer_lr, betas=tuple(betas), weight_decay=0.0)
    generator = torch.Generator(device=device).manual_seed(seed)
    state = RunState(
        {"logits": logits, "weights": weights, "previous_weights": previous},
        {"inner": inner, "outer": outer},
        generator,
    )
    meta_start = 0
    if payload is not None and payload["stage"] == "meta":
        state.restore(payload)
        meta_start = payload["step"]
    elif payload is not None:  # stopped during test-time adaptation: the mask is final
        with torch.no_grad():
            logits.copy_(payload["tensors"]["logits"])
        meta_start = meta_steps

    def meta_step(step: int) -> dict:
        sample = shard.sample_concrete(logits, temperature, generator)
        with torch.no_grad():
            weights.copy_(initial)
        if not persist_inner_optimizer:
            inner.state.clear()
        inner.zero_grad(set_to_none=True)
        coefficients = inner_coefficients(weights, previous, clamp, inner_uses_previous_weights)
        inner_flat = merge(coefficients, sample.detach())
        inner_losses = entropy_backward(
            problem, inner_flat, layout, 2 * step, forward_mode=forward_mode, precision=precision, shard=shard
        )
        shard.reduce_grad_(weights)
        inner.step()
        with torch.no_grad():
            previous.copy_(weights)
        if variant == "paper":
            sample = shard.sample_concrete(logits, temperature, generator)
        outer.zero_grad(set_to_none=True)
        outer_flat = merge(effective_coefficients(weights, clamp).detach(), sample)
        outer_losses = entropy_backward(
            problem, outer_flat, layout, 2 * step + 1, forward_mode=forward_mode, precision=precision, shard=shard
        )
        outer.step()
        return {
            "loss": sum(outer_losses.values()),
            "inner_loss": sum(inner_losses.values()),
            **{f"entropy/{t}": v for t, v in outer_losses.items()},
        }

    def final_mask(generator_seed: int) -> Tensor:  # this rank's block of the evaluation mask of the whole model
        eval_generator = torch.Generator(device=device).manual_seed(generator_seed)
        return shard.local(
            evaluation_mask(shard.gather(logits), eval_mask, temperature=temperature, generator=eval_generator)
        )

    def meta_evaluation_flat() -> Tensor:  # the model the mask gradient is taken at: w' (after the inner step)
        return shard.gather(merge(effective_coefficients(weights, clamp), final_mask(derive_seed(seed, 1, stride=1))))

    def mask_only_flat(mask: Tensor) -> Tensor:  # the learned mask at the initial coefficients
        return shard.gather(merge(effective_coefficients(initial, clamp), mask))

    def meta_mask_only(row: dict) -> dict:
        """Meta-stage diagnostic: the same evaluation mask at the initial coefficients instead of w'."""
        if row["step"] == 0:  # before any inner step w' = init: the row's scores are already this model's
            return scores_row("mask_only", {k.removeprefix("acc/"): v for k, v in row.items() if k.startswith("acc/")})
        mask = final_mask(derive_seed(seed, 1, stride=1))
        return scores_row("mask_only", evaluator(problem, layout, lambda: mask_only_flat(mask))())

    def meta_log_row() -> dict:
        return {**_density_row(shard.gather(logits)), **coefficient_row(effective_coefficients(weights, clamp))}

    optimise(
        "meta",
        meta_steps,
        meta_step,
        state,
        checkpointer,
        start=meta_start,
        progress=progress,
        log_every=log_every,
        eval_fn=evaluator(problem, layout, meta_evaluation_flat),
        eval_every=eval_every,
        log_fn=meta_log_row,
        eval_extra_fn=meta_mask_only,
    )

    logits.requires_grad_(False)
    kept_seed = derive_seed(seed, 2, stride=1)  # the frozen mask of test-time adaptation (seed + 2)
    kept_mask = final_mask(kept_seed)
    adapted = adapt_coefficients(
        problem,
        layout,
        theta0,
        vectors,
        stage="tta",
        granularity=granularity,
        init=init,
        clamp=clamp,
        lr=tta_lr,
        betas=betas,
        steps=tta_steps,
        mask=kept_mask,
        state_generator=generator,
        checkpointer=checkpointer,
        resume_payload=payload,
        history=state.history,
        progress=progress,
        log_every=log_every,
        eval_every=eval_every,
        extra_tensors={"logits": logits},
        forward_mode=forward_mode,
        precision=precision,
        shard=shard,
    )
    with torch.no_grad():
        merged = shard.gather(merge(effective_coefficients(adapted, clamp), kept_mask))
    # the mask-only effect = stage 2 at step 0 (initial w, the kept mask); read from the history when it was evaluated
    mask_only = stage_start_scores(state.history, "tta")
    if mask_only is None:
        mask_only = evaluator(problem, layout, lambda: mask_only_flat(kept_mask))()
    expected = shard.local(expected_mask(shard.gather(logits)))
    extras = {
        **_mask_extras(shard.gather(logits), layout),
        "coefficients": effective_coefficients(adapted, clamp).cpu(),
        "eval_mask": eval_mask_record(shard.gather(kept_mask), eval_mask, kept_seed, temperature),
        "mask_only": {"coefficients": float(init), "final_model": False, "scores": mask_only},
        "expected_mask_scores": evaluator(
            problem, layout, lambda: shard.gather(merge(effective_coefficients(adapted, clamp), expected))
        )(),
    }
    return MergeResult(layout.unflatten(merged), params, state.history, extras)


task_wise_concrete_adamerging = registry_variant(concrete_adamerging, {"granularity": "task"})
layer_wise_concrete_adamerging = registry_variant(concrete_adamerging, {"granularity": "layer"})
