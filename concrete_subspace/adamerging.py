"""AdaMerging (Yang et al., ICLR 2024): learn task-wise or layer-wise merge coefficients by entropy minimisation.

Coefficients w are [T] (task-wise) or [T, K] (layer-wise: one per merged tensor per task), initialised to 0.3
and clamped to [0, 1] when merging (as in the paper's code); Adam, lr 1e-3, 1000 steps, one batch of 16 test
images per task per step. AdaMerging++ runs the same loop over TIES-processed task vectors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distributed import Shard, local_task_vectors
from .loop import DEFAULT_RUN, RunContext, RunOptions, RunState, check_test_time_data, parse_dtype
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
    context: RunContext,
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
    generator: torch.Generator,
    extra_tensors: dict[str, Tensor] | None = None,
) -> Tensor:
    """Entropy-minimising test-time adaptation of the merge coefficients w (optionally under a fixed mask): Adam on w.

    ``generator`` and ``extra_tensors`` (e.g. Concrete AdaMerging's frozen mask logits) are checkpointed with w.
    With a sharded run, ``theta0``, ``vectors`` and ``mask`` are this rank's block; w is replicated.
    """
    shard = context.shard
    weights = init_coefficients(len(vectors), len(context.layout.keys), granularity, init, theta0.device)
    weights.requires_grad_(True)
    optimizer = torch.optim.Adam([weights], lr=lr, betas=tuple(betas), weight_decay=0.0)
    tensors = {"weights": weights, **(extra_tensors or {})}
    state = RunState(tensors, {"optimizer": optimizer}, generator, context.history)

    def merged() -> Tensor:  # this rank's block of the merge (all of it unless sharded)
        coefficients = shard.coefficients(effective_coefficients(weights, clamp))
        return merge_flat(theta0, vectors, coefficients, shard.local_layout, mask)

    def step_fn(step: int) -> dict:
        optimizer.zero_grad(set_to_none=True)
        losses = context.entropy_backward(merged(), step)
        shard.reduce_grad_(weights)
        optimizer.step()
        return {"loss": sum(losses.values()), **{f"entropy/{t}": v for t, v in losses.items()}}

    start = context.restore(state, stage)
    context.optimise(stage, steps, step_fn, state, start=start, eval_flat=lambda: shard.gather(merged()))
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
    run: RunOptions = DEFAULT_RUN,
) -> MergeResult:
    """Task-wise or layer-wise AdaMerging (AdaMerging++ when ``ties_density`` is set): w by entropy minimisation.

    ``run``: device-side choices, sharding, checkpoints, logging and the seed (:class:`~concrete_subspace.loop.RunOptions`;
    coefficients, optimizer state and entropies stay fp32 under ``precision="bf16"``; no sharding with ``ties_density``).
    """
    hyperparameters = {k: v for k, v in locals().items() if k not in ("problem", "run")}
    check_init(init, clamp)
    context = RunContext(problem, hyperparameters, run)
    _, theta0, vectors = prepare_vectors(problem, run.vector_dtype, run.progress, ties_density, shard=context.shard)
    weights = adapt_coefficients(
        context,
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
        generator=context.generator(theta0.device),
    )
    coefficients = effective_coefficients(weights, clamp)
    with torch.no_grad():
        shard = context.shard
        flat = shard.gather(merge_flat(theta0, vectors, shard.coefficients(coefficients), shard.local_layout))
    extras = {"coefficients": coefficients.cpu(), "layout_keys": list(context.layout.keys)}
    return MergeResult(context.layout.unflatten(flat), context.params, context.history, extras)
