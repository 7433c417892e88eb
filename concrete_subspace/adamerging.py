"""AdaMerging (Yang et al., ICLR 2024): learn task-wise or layer-wise merge coefficients by entropy minimisation.

Coefficients w are [T] (task-wise) or [T, K] (layer-wise: one per merged tensor per task), initialised to 0.3
and clamped to [0, 1] when merging (as in the paper's code); Adam, lr 1e-3, 1000 steps, one batch of 16 test
images per task per step. AdaMerging++ runs the same loop over TIES-processed task vectors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .distributed import Shard, local_task_vectors, make_shard
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
from .merging import merge_flat, ties_preprocess
from .problem import MergeProblem, MergeResult
from .task_vectors import ParamLayout, stack_task_vectors

GRANULARITIES = ("task", "layer")


def init_coefficients(num_tasks: int, num_tensors: int, granularity: str, value: float = 0.3, device=None) -> Tensor:
    """Merge coefficients filled with ``value``: shape [T] task-wise, [T, K] layer-wise."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    shape = (num_tasks,) if granularity == "task" else (num_tasks, num_tensors)
    return torch.full(shape, float(value), device=device)


def effective_coefficients(weights: Tensor, clamp: bool) -> Tensor:
    """The coefficients used in the merge: clamped to [0, 1] if ``clamp`` (paper code), raw otherwise (fusion_bench)."""
    return weights.clamp(0.0, 1.0) if clamp else weights


def check_init(init: float, clamp: bool) -> None:
    """With clamping on, an initial coefficient outside [0, 1] would be silently clipped: refuse it."""
    if clamp and not 0.0 <= float(init) <= 1.0:
        raise ValueError(f"init={init} is outside [0, 1] while clamp=True; use a value in [0, 1] or clamp=False")


def prepare_vectors(
    problem: MergeProblem,
    vector_dtype: str | None,
    progress: bool,
    ties_density: float | None = None,
    shard: Shard | None = None,
) -> tuple[ParamLayout, Tensor, Tensor]:
    """Flat θ0 and the [T, P] task vectors (streamed in; TIES-processed for AdaMerging++ when a density is given).

    With a sharded ``shard`` only this rank's block is kept: θ0 [P_local] and the vectors [T, P_local].
    """
    check_test_time_data(problem)
    if shard is not None and not shard.whole:
        if ties_density is not None:  # TIES trims by magnitude over the WHOLE vector: no block can do it alone
            raise ValueError(
                "shard_vectors=True cannot be combined with AdaMerging++ (ties_density): TIES needs "
                "every element of a task vector; use shard_vectors=False"
            )
        vectors = local_task_vectors(problem, shard, parse_dtype(vector_dtype), progress)
        return shard.layout, shard.local(shard.layout.flatten(problem.pretrained)), vectors
    layout, vectors = stack_task_vectors(
        problem.pretrained,
        problem.load_finetuned,
        problem.task_names,
        dtype=parse_dtype(vector_dtype),
        progress=progress,
    )
    if ties_density is not None:
        vectors = ties_preprocess(vectors.float(), ties_density).to(vectors.dtype)
    return layout, layout.flatten(problem.pretrained), vectors


def adapt_coefficients(
    problem: MergeProblem,
    layout: ParamLayout,
    theta0: Tensor,
    vectors: Tensor,
    *,
    stage: str,
    granularity: str,
    init: float,
    clamp: bool,
    lr: float,
    betas: tuple[float, float],
    steps: int,
    mask: Tensor | None,
    state_generator: torch.Generator,
    checkpointer: Checkpointer,
    resume_payload: dict | None,
    history: list,
    progress: bool,
    log_every: int,
    eval_every: int,
    data_offset: int = 0,
    extra_tensors: dict[str, Tensor] | None = None,
    forward_mode: str = "batched",
    precision: str = "fp32",
    shard: Shard | None = None,
) -> Tensor:
    """Entropy-minimising test-time adaptation of the merge coefficients (optionally under a fixed mask).

    ``extra_tensors`` are checkpointed with the coefficients (e.g. the frozen mask logits of Concrete AdaMerging).
    With a sharded ``shard``, ``theta0``, ``vectors`` and ``mask`` are this rank's block; w is replicated.
    """
    shard = shard or make_shard(layout, shard_vectors=False)
    weights = init_coefficients(len(vectors), len(layout.keys), granularity, init, theta0.device).requires_grad_(True)
    optimizer = torch.optim.Adam([weights], lr=lr, betas=tuple(betas), weight_decay=0.0)
    state = RunState({"weights": weights, **(extra_tensors or {})}, {"optimizer": optimizer}, state_generator, history)
    start = 0
    if resume_payload is not None and resume_payload["stage"] == stage:
        state.restore(resume_payload)
        start = resume_payload["step"]

    def merged() -> Tensor:  # this rank's block of the merge (all of it unless sharded)
        return merge_flat(
            theta0, vectors, shard.coefficients(effective_coefficients(weights, clamp)), shard.local_layout, mask
        )

    def step_fn(step: int) -> dict:
        optimizer.zero_grad(set_to_none=True)
        losses = entropy_backward(
            problem, merged(), layout, data_offset + step, forward_mode=forward_mode, precision=precision, shard=shard
        )
        shard.reduce_grad_(weights)
        optimizer.step()
        return {"loss": sum(losses.values()), **{f"entropy/{t}": v for t, v in losses.items()}}

    optimise(
        stage,
        steps,
        step_fn,
        state,
        checkpointer,
        start=start,
        progress=progress,
        log_every=log_every,
        eval_fn=evaluator(problem, layout, lambda: shard.gather(merged())),
        eval_every=eval_every,
    )
    return weights.detach()


def adamerging(
    problem: MergeProblem,
    *,
    granularity: str = "layer",
    init: float = 0.3,
    clamp: bool = True,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    steps: int = 1000,
    ties_density: float | None = None,
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
    """Task-wise or layer-wise AdaMerging (AdaMerging++ when ``ties_density`` is set).

    ``forward_mode`` / ``precision``: see :func:`concrete_subspace.loop.entropy_backward` (coefficients, optimizer
    state and entropies stay fp32 under ``precision="bf16"``). ``shard_vectors``: under torchrun, each rank keeps the
    task vectors of its block of tensors only (:mod:`concrete_subspace.distributed`; not with ``ties_density``).
    """
    params = {k: v for k, v in locals().items() if k != "problem"}
    check_init(init, clamp)
    check_forward_mode(forward_mode)
    check_precision(precision)
    shard = make_shard(ParamLayout.of(problem.pretrained), shard_vectors)
    checkpointer = Checkpointer(checkpoint_dir, checkpoint_every, params, problem, shard)
    payload = checkpointer.load() if resume else None  # a foreign checkpoint is refused before any model is loaded
    layout, theta0, vectors = prepare_vectors(problem, vector_dtype, progress, ties_density, shard=shard)
    generator = torch.Generator(device=theta0.device).manual_seed(seed)
    history: list = []
    weights = adapt_coefficients(
        problem,
        layout,
        theta0,
        vectors,
        stage="tta",
        granularity=granularity,
        init=init,
        clamp=clamp,
        lr=lr,
        betas=betas,
        steps=steps,
        mask=None,
        state_generator=generator,
        checkpointer=checkpointer,
        resume_payload=payload,
        history=history,
        progress=progress,
        log_every=log_every,
        eval_every=eval_every,
        forward_mode=forward_mode,
        precision=precision,
        shard=shard,
    )
    with torch.no_grad():
        flat = shard.gather(
            merge_flat(theta0, vectors, shard.coefficients(effective_coefficients(weights, clamp)), shard.local_layout)
        )
    return MergeResult(
        layout.unflatten(flat),
        params,
        history,
        {"coefficients": effective_coefficients(weights, clamp).cpu(), "layout_keys": list(layout.keys)},
    )


def registry_variant(
    fn: Callable[..., MergeResult], fixed: dict[str, Any], **defaults: Any
) -> Callable[..., MergeResult]:
    """A registry entry of ``fn`` with ``fixed`` keywords removed and some ``defaults`` changed (still overridable)."""
    signature = inspect.signature(fn)
    parameters = [
        p.replace(default=defaults[p.name]) if p.name in defaults else p
        for p in signature.parameters.values()
        if p.name not in fixed
    ]

    def run(problem: MergeProblem, **params: Any) -> MergeResult:
        return fn(problem, **fixed, **params)

    run.__signature__ = signature.replace(parameters=parameters)
    run.__name__ = f"{fn.__name__}[{', '.join(f'{k}={v}' for k, v in {**fixed, **defaults}.items())}]"
    run.__doc__ = fn.__doc__
    return run


task_wise_adamerging = registry_variant(adamerging, {"granularity": "task"})
layer_wise_adamerging = registry_variant(adamerging, {"granularity": "layer"})
task_wise_adamerging_pp = registry_variant(adamerging, {"granularity": "task"}, ties_density=0.2)
layer_wise_adamerging_pp = registry_variant(adamerging, {"granularity": "layer"}, ties_density=0.2)
