"""The test-time optimisation loop shared by AdaMerging and the Concrete methods, and the run it belongs to.

It owns the things every long run needs and no method should re-implement: the entropy objective (one batched
forward of all tasks, or a memory-lean per-task backward; fp32 or bf16 autocast), the progress bar, the history
log, periodic atomic checkpoints, and exact resume (data batches are a function of the step, and the generator /
optimizer states are checkpointed). :class:`RunOptions` says how a run is executed (device-side choices, sharding,
checkpoints, logging, the seed); :class:`RunContext` carries them through one run, so the methods state only their
algorithm.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .evaluation import average, evaluate, has_evaluation_data, head_logits, to_device
from .functional import forward
from .masks import evaluation_mask, sample_concrete
from .problem import MergeProblem
from .seeding import RUN_STREAMS, named_seed
from .task_vectors import ParamLayout

#: Parameters that change how a run is reported or saved, not what it computes: left out of the run cache's key.
#: (``eval_every`` is not among them: it decides which accuracy rows the cached history holds.)
NON_SEMANTIC = ("progress", "checkpoint_dir", "checkpoint_every", "resume", "log_every")
#: Left out of a checkpoint's fingerprint: the non-semantic parameters and the evaluation cadence, which only adds
#: history rows, so a stopped run may resume with another ``eval_every``.
NOT_IN_CHECKPOINT_FINGERPRINT = (*NON_SEMANTIC, "eval_every")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """'bfloat16' -> torch.bfloat16; None stays None (keep the model's dtype)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {list(DTYPES)}")
    return DTYPES[name]


def entropy(logits: Tensor) -> Tensor:
    """Per-example Shannon entropy −Σ p log p of softmax(logits), finite even for saturated logits."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def entropy_loss(logits: Tensor) -> Tensor:
    """Batch-mean prediction entropy: the unsupervised objective of AdaMerging and Concrete merging."""
    return entropy(logits).mean()


def unlabeled(problem: MergeProblem, task: str, step: int) -> Any:
    """``problem.unlabeled_batch(task, step)`` on the problem's device; a data source that runs dry is an error."""
    try:
        return to_device(problem.unlabeled_batch(task, step), problem.device)
    except StopIteration:
        raise RuntimeError(
            f"task {task!r}: unlabeled data exhausted at step {step}; "
            "unlabeled_batch must return a batch for every step (cycle the data)"
        ) from None


def check_test_time_data(problem: MergeProblem) -> None:
    """Fail fast, before task vectors are built: each task needs a non-empty unlabeled batch and a head."""
    with torch.no_grad():
        for task in distributed.local_tasks(problem.task_names):
            features = forward(problem.model, problem.pretrained, unlabeled(problem, task, 0))
            logits = head_logits(problem, task, features)
            if logits.numel() == 0:
                raise ValueError(f"task {task!r}: the unlabeled batch of step 0 is empty (no test-time data)")


PRECISIONS = ("fp32", "bf16")
# "batched": all tasks' batches in one forward and one backward (faster; T tasks' activations at once);
# "per_task": one forward/backward per task (peak memory of one task's activations).
FORWARD_MODES = ("batched", "per_task")


def check_precision(precision: str) -> None:
    """``precision`` must be one of :data:`PRECISIONS` (one name for every method, the zoo and the CLI)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")


def check_forward_mode(forward_mode: str) -> None:
    """``forward_mode`` must be one of :data:`FORWARD_MODES`."""
    if forward_mode not in FORWARD_MODES:
        raise ValueError(f"unknown forward_mode {forward_mode!r}; choose one of {list(FORWARD_MODES)}")


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast on ``device`` (CPU and CUDA alike) for ``precision="bf16"``; a disabled context for fp32."""
    check_precision(precision)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _signature(inputs: Any) -> Any:
    """What must agree for two tasks' inputs to be concatenated along dim 0: trailing shapes, dtypes, other values."""
    if torch.is_tensor(inputs):
        if inputs.dim() == 0:
            raise ValueError("forward_mode='batched': an input tensor has no batch dimension (0-d); use 'per_task'")
        return ("tensor", tuple(inputs.shape[1:]), inputs.dtype)
    if isinstance(inputs, dict):
        return (
            "dict",
            tuple((k, _signature(v) if torch.is_tensor(v) else ("value", repr(v))) for k, v in sorted(inputs.items())),
        )
    raise TypeError(
        f"forward_mode='batched' concatenates tensors or dicts of tensors, got {type(inputs).__name__}; "
        "use forward_mode='per_task'"
    )


def _batch_size(inputs: Any) -> int:
    if torch.is_tensor(inputs):
        return int(inputs.shape[0])
    sizes = {int(v.shape[0]) for v in inputs.values() if torch.is_tensor(v)}
    if len(sizes) != 1:
        raise ValueError(
            f"forward_mode='batched': the tensors of a dict input disagree on the batch size ({sorted(sizes)})"
        )
    return sizes.pop()


def concat_inputs(batches: list[Any]) -> Any:
    """Concatenate same-signature inputs along dim 0: tensors, or dicts (tensors concatenated, other values shared)."""
    if torch.is_tensor(batches[0]):
        return torch.cat(batches)
    return {k: torch.cat([b[k] for b in batches]) if torch.is_tensor(v) else v for k, v in batches[0].items()}


def shape_groups(batches: Mapping[str, Any]) -> list[list[str]]:
    """Tasks grouped (in task order) by input signature: images all share one; padded text batches may not."""
    groups: dict[Any, list[str]] = {}
    for task, inputs in batches.items():
        groups.setdefault(_signature(inputs), []).append(task)
    return list(groups.values())


def _checked_loss(task: str, logits: Tensor, data_step: int) -> Tensor:
    """Batch-mean entropy of one task's logits (fp32), refusing empty batches and non-finite values by task name."""
    if logits.numel() == 0:
        raise ValueError(f"task {task!r}: the unlabeled batch of step {data_step} is empty (no test-time data)")
    loss = entropy_loss(logits)
    if not math.isfinite(float(loss.detach())):
        raise FloatingPointError(
            f"task {task!r}: non-finite entropy ({float(loss.detach())}) at data step {data_step}; "
            "check the inputs, the learning rates and the task vectors"
        )
    return loss


def _task_logits(problem: MergeProblem, task: str, features: Any) -> Tensor:
    """The task's head on fp32 features (under bf16 the head and the entropy still run in fp32)."""
    return problem.task_logits(task, features.float() if torch.is_tensor(features) else features)


def _per_task(
    problem: MergeProblem, params: dict[str, Tensor], data_step: int, precision: str, tasks: Sequence[str]
) -> dict[str, float]:
    losses = {}
    for task in tasks:
        with autocast(problem.device, precision):
            features = forward(problem.model, params, unlabeled(problem, task, data_step))
        loss = _checked_loss(task, _task_logits(problem, task, features), data_step)
        losses[task] = float(loss.detach())
        loss.backward()
    return losses


def _batched(
    problem: MergeProblem, params: dict[str, Tensor], data_step: int, precision: str, tasks: Sequence[str]
) -> dict[str, float]:
    if not tasks:  # a rank without tasks (more ranks than tasks) contributes a zero gradient
        return {}
    batches = {task: unlabeled(problem, task, data_step) for task in tasks}
    losses: dict[str, Tensor] = {}
    for group in shape_groups(batches):
        sizes = [_batch_size(batches[t]) for t in group]
        with autocast(problem.device, precision):
            features = forward(problem.model, params, concat_inputs([batches[t] for t in group]))
        if not torch.is_tensor(features) or features.shape[0] != sum(sizes):
            raise TypeError(
                f"forward_mode='batched' needs the model to return one tensor with a row per example "
                f"({sum(sizes)}), got {type(features).__name__}; use forward_mode='per_task'"
            )
        for task, part in zip(group, torch.split(features, sizes)):
            losses[task] = _checked_loss(task, _task_logits(problem, task, part), data_step)
    torch.stack([losses[t] for t in tasks]).sum().backward()
    return {t: float(losses[t].detach()) for t in tasks}


def flat_grad_buffer(params: Mapping[str, Tensor], layout: ParamLayout, like: Tensor) -> Tensor:
    """One zero buffer shaped like ``like`` whose views are the leaves' ``.grad``: autograd accumulates every task's
    gradient into it in place, so the per-task backwards end with the flat gradient (no per-tensor gradients, no
    ``torch.cat`` of them: one to two P-sized buffers less at ViT-B/32 size). Same values as the concatenated
    gradients (0 + g = g; a −0 entry becomes +0)."""
    grad = torch.zeros_like(like)
    for param, view in zip(params.values(), layout.unflatten(grad).values()):
        param.grad = view
    return grad


def entropy_backward(
    problem: MergeProblem,
    flat: Tensor,
    layout: ParamLayout,
    data_step: int,
    *,
    forward_mode: str = "batched",
    precision: str = "fp32",
    shard: distributed.Shard | None = None,
) -> dict[str, float]:
    """Backpropagate Σ_tasks entropy(batch of ``data_step``) into ``flat``'s graph; return the per-task losses.

    The transformer runs on a detached copy of the merged parameters (one leaf per tensor); the summed gradient then
    goes once through the merge graph. ``forward_mode="batched"``: one forward of all tasks' batches concatenated
    (tasks with differently shaped inputs in separate forwards), each head on its slice, one backward.
    ``"per_task"``: one forward/backward per task, so peak memory is one task's activations. ``precision="bf16"``
    runs the forward under bf16 autocast (backward follows it); heads, entropies and every gradient into the merge
    graph stay fp32. Under torchrun each rank runs its share of the tasks and the gradient of the merged parameters
    is summed over the ranks; with a sharded ``shard`` (``shard_vectors=True``), ``flat`` is this rank's block of the
    merge, gathered for the forward (see :mod:`concrete_subspace.distributed`).
    """
    check_forward_mode(forward_mode)
    check_precision(precision)
    full = flat.detach() if shard is None else shard.gather(flat.detach())  # a shard holds one block of the merge
    params = {k: v.requires_grad_(True) for k, v in layout.unflatten(full).items()}
    # per-task: the tasks' gradients accumulate in one flat buffer (it would exist from the first backward anyway).
    # batched: one backward creates each leaf's gradient while the activations are freed; a buffer made up front
    # would live through the whole forward (measured at ViT-B/32 size: +0.3 GiB peak), so the gradients are
    # concatenated once at the end instead.
    accumulate = flat.requires_grad and forward_mode == "per_task"
    grad = flat_grad_buffer(params, layout, full) if accumulate else None
    run = _batched if forward_mode == "batched" else _per_task
    losses = run(problem, params, data_step, precision, distributed.local_tasks(problem.task_names))
    if flat.requires_grad:
        if grad is None:
            grad = torch.cat(
                [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params.values()]
            )
        distributed.all_reduce_(grad)  # under torchrun: the sum over every rank's tasks
        flat.backward(grad if shard is None or shard.whole else grad[shard.start : shard.stop])
    return distributed.gather_task_values(problem.task_names, losses, problem.device)


@dataclass
class RunState:
    """What a run must checkpoint to resume exactly: trainable tensors, optimizers, the generator, the history."""

    tensors: dict[str, Tensor]
    optimizers: dict[str, torch.optim.Optimizer]
    generator: torch.Generator
    history: list[dict] = field(default_factory=list)

    def payload(self, stage: str, step: int, fingerprint: str) -> dict:
        return {
            "stage": stage,
            "step": step,
            "fingerprint": fingerprint,
            "tensors": {k: v.detach().cpu() for k, v in self.tensors.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "generator": self.generator.get_state(),
            "history": self.history,
        }

    def restore(self, payload: Mapping[str, Any]) -> None:
        with torch.no_grad():
            for k, v in payload["tensors"].items():
                self.tensors[k].copy_(v)
        for k, state in payload["optimizers"].items():
            self.optimizers[k].load_state_dict(state)
        self.generator.set_state(payload["generator"])
        self.history[:] = payload["history"]


def fingerprint_difference(saved: Any, current: str) -> str:
    """Which parameters (or tasks / model size) differ between a saved and the current run fingerprint."""
    try:
        old, new = json.loads(saved), json.loads(current)
        flat_old = {**old.pop("params"), **old}
        flat_new = {**new.pop("params"), **new}
    except (TypeError, ValueError, KeyError, AttributeError):
        return "no readable fingerprint"
    keys = sorted(k for k in flat_old.keys() | flat_new.keys() if flat_old.get(k) != flat_new.get(k))
    return ", ".join(f"{k}: saved {flat_old.get(k)!r}, now {flat_new.get(k)!r}" for k in keys) or "unknown difference"


class Checkpointer:
    """Saves the run every ``every`` steps to ``<directory>/checkpoint.ckpt`` and finds it again on restart."""

    def __init__(
        self,
        directory: str | Path | None,
        every: int,
        params: Mapping[str, Any],
        problem: MergeProblem,
        shard: distributed.Shard | None = None,
    ):
        # one file written by rank 0, or one per rank when the state is sharded (every rank writes its block)
        self.per_rank = shard is not None and not shard.whole
        self.path = (
            Path(directory) / (shard.checkpoint_name() if self.per_rank else "checkpoint.ckpt") if directory else None
        )
        self.every = int(every)
        if self.path is not None and self.every <= 0:
            raise ValueError(f"checkpoint_every must be positive, got {every}")
        if self.path is not None and (self.per_rank or distributed.is_main()):  # temp files of killed writers
            for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
                stale.unlink(missing_ok=True)
        semantic = {k: v for k, v in params.items() if k not in NOT_IN_CHECKPOINT_FINGERPRINT}
        self.fingerprint = json.dumps(
            {
                "params": semantic,
                "tasks": list(problem.task_names),
                "num_params": sum(v.numel() for v in problem.pretrained.values()),
            },
            sort_keys=True,
            default=str,
        )

    def load(self) -> dict | None:
        """The saved payload of this run, None if there is none; an error if it belongs to another configuration."""
        if self.path is None or not self.path.exists():
            return None
        payload = load_checkpoint(self.path)
        saved = payload.get("fingerprint") if isinstance(payload, dict) else None
        if saved != self.fingerprint:
            raise CheckpointError(
                f"{self.path}: written by a run with a different configuration "
                f"({fingerprint_difference(saved, self.fingerprint)}); use another checkpoint_dir or delete it"
            )
        return payload

    def maybe_save(self, state: RunState, stage: str, step: int, last: bool) -> None:
        if self.path is not None and (step % self.every == 0 or last) and (self.per_rank or distributed.is_main()):
            save_checkpoint(self.path, state.payload(stage, step, self.fingerprint))


def optimise(
    stage: str,
    steps: int,
    step_fn: Callable[[int], dict],
    state: RunState,
    checkpointer: Checkpointer,
    *,
    start: int = 0,
    progress: bool = True,
    log_every: int = 10,
    eval_fn: Callable[[], Mapping[str, float]] | None = None,
    eval_every: int = 0,
    log_fn: Callable[[], dict] | None = None,
    eval_extra_fn: Callable[[dict], dict] | None = None,
) -> None:
    """Run ``step_fn(step)`` for steps start..steps-1, logging, evaluating and checkpointing along the way.

    ``log_fn`` adds values (e.g. mask density) to logged rows only, keeping them out of the per-step path.
    ``eval_extra_fn(row)`` adds diagnostic evaluations to the rows that ``eval_fn`` scores (same cadence, incl. the
    step-0 row); it receives the row with ``eval_fn``'s scores already in it.
    """
    if steps < 0:
        raise ValueError(f"{stage}: number of steps must be >= 0, got {steps}")

    def log_eval(row: dict) -> None:
        scores = eval_fn()
        row.update({f"acc/{t}": s for t, s in scores.items()}, avg_accuracy=average(scores))
        if eval_extra_fn is not None:
            row.update(eval_extra_fn(row))

    if start == 0 and eval_fn is not None and eval_every:
        row = {"stage": stage, "step": 0}
        log_eval(row)
        state.history.append(row)
    bar = tqdm(range(start, steps), desc=stage, disable=not progress, initial=start, total=steps)
    for step in bar:
        values = step_fn(step)
        done = step + 1
        evaluate_now = eval_fn is not None and eval_every and (done % eval_every == 0 or done == steps)
        if done % max(log_every, 1) == 0 or done == steps or step == 0 or evaluate_now:
            row = {"stage": stage, "step": done, **values, **(log_fn() if log_fn else {})}
            if evaluate_now:
                log_eval(row)
            state.history.append(row)
            bar.set_postfix(loss=f"{values['loss']:.4f}")
        checkpointer.maybe_save(state, stage, done, last=done == steps)


def evaluator(
    problem: MergeProblem, layout: ParamLayout, make_flat: Callable[[], Tensor]
) -> Callable[[], dict[str, float]]:
    """A no-argument function scoring the current merged parameters (for accuracy-over-steps curves)."""

    def run() -> dict[str, float]:
        tasks = distributed.local_tasks(problem.task_names)
        with torch.no_grad():
            params = layout.unflatten(make_flat())  # every rank merges (a shard gather needs all of them)
            local = evaluate(problem, params, tasks) if tasks else {}
        return distributed.gather_task_values(problem.task_names, local, problem.device)

    return run


@dataclass(frozen=True)
class RunOptions:
    """How a test-time run is executed, saved and reported, apart from the method's hyperparameters.

    ``seed``: the run's generator (mask samples; evaluation masks derive their own streams from it,
    :meth:`RunContext.stream_seed`).
    ``vector_dtype``: the task vectors' storage dtype. ``forward_mode`` / ``precision``: see :func:`entropy_backward`.
    ``shard_vectors``: under torchrun, each rank keeps its block of the vectors (:mod:`concrete_subspace.distributed`).
    ``log_every`` / ``eval_every``: history rows and accuracy rows (0: no evaluation along the way).
    ``checkpoint_dir`` / ``checkpoint_every`` / ``resume``: periodic checkpoints and exact resume. ``progress``: a bar.
    """

    seed: int = 0
    vector_dtype: str = "float32"
    forward_mode: str = "batched"
    precision: str = "fp32"
    shard_vectors: bool = False
    log_every: int = 10
    eval_every: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        check_forward_mode(self.forward_mode)
        check_precision(self.precision)

    def as_params(self) -> dict[str, Any]:
        """The options as flat parameters, in field order (as results files and fingerprints record them)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: The default run options (the methods' ``run=`` default).
DEFAULT_RUN = RunOptions()


def run_option_names() -> tuple[str, ...]:
    """The names of the :class:`RunOptions` fields (the flat parameters that are run options, not hyperparameters)."""
    return tuple(f.name for f in fields(RunOptions))


class RunContext:
    """One test-time run: its options, this rank's shard, the checkpointer and the payload to resume from, the history.

    ``params`` (the hyperparameters, then the run options) is what the run records and what its checkpoint's
    fingerprint is computed from; a checkpoint of another configuration is refused here, before any model is loaded.
    """

    def __init__(self, problem: MergeProblem, hyperparameters: Mapping[str, Any], options: RunOptions):
        self.problem = problem
        self.options = options
        self.params = {**hyperparameters, **options.as_params()}
        self.layout = ParamLayout.of(problem.pretrained)
        self.shard = distributed.make_shard(self.layout, options.shard_vectors)
        self.checkpointer = Checkpointer(
            options.checkpoint_dir, options.checkpoint_every, self.params, problem, self.shard
        )
        self.payload = self.checkpointer.load() if options.resume else None
        self.history: list[dict] = []

    def generator(self, device: torch.device) -> torch.Generator:
        """The run's generator, seeded with ``seed`` (checkpointed with the state, so resume continues its stream)."""
        return torch.Generator(device=device).manual_seed(self.options.seed)

    def stopped_in(self, stage: str) -> bool:
        """Whether the checkpoint resumed from was written during ``stage``."""
        return self.payload is not None and self.payload["stage"] == stage

    def restore(self, state: RunState, stage: str) -> int:
        """The step ``stage`` starts at: the checkpoint's (its state restored into ``state``) if it stopped there, else 0."""
        if not self.stopped_in(stage):
            return 0
        state.restore(self.payload)
        return self.payload["step"]

    def resume_stage(self, state: RunState, stage: str, steps: int, *, later: str, carried: Sequence[str]) -> int:
        """The step ``stage`` of a two-stage run starts at: as :meth:`restore`, or ``steps`` (the stage is done) when
        the checkpoint was written during the ``later`` stage, with the ``carried`` tensors (those the later stage
        keeps from this one, e.g. frozen mask logits) restored from it."""
        if not self.stopped_in(later):
            return self.restore(state, stage)
        with torch.no_grad():
            for name in carried:
                state.tensors[name].copy_(self.payload["tensors"][name])
        return steps

    def stream_seed(self, name: str) -> int:
        """The seed of the run's named stream, apart from its main generator (:data:`~.seeding.RUN_STREAMS`:
        ``"evaluation_mask"``, ``"kept_mask"``); never another run seed's stream (:func:`~.seeding.named_seed`)."""
        if name not in RUN_STREAMS:
            raise ValueError(f"unknown run stream {name!r}; choose one of {list(RUN_STREAMS)}")
        return named_seed(self.options.seed, name)

    def sample_mask(self, logits: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
        """A Concrete sample of the mask from the run's ``generator``: this rank's block of the whole model's sample
        (``logits`` is this rank's block; the same uniforms on any number of ranks)."""
        return sample_concrete(logits, temperature, generator, start=self.shard.start, total=self.layout.num_params)

    def evaluation_mask(self, logits: Tensor, kind: str, temperature: float, stream: str) -> Tensor:
        """This rank's block of the evaluation mask ``kind`` of the whole model, drawn from a fresh generator of the
        named ``stream`` (so the same logits always give the same mask, whatever the run's generator has drawn)."""
        generator = torch.Generator(device=logits.device).manual_seed(self.stream_seed(stream))
        mask = evaluation_mask(self.shard.gather(logits), kind, temperature=temperature, generator=generator)
        return self.shard.local(mask)

    def final_state(self, make_flat: Callable[[], Tensor]) -> dict[str, Tensor]:
        """The merged state dict of the whole model from ``make_flat()`` (this rank's block of the merge)."""
        with torch.no_grad():
            return self.layout.unflatten(self.shard.gather(make_flat()))

    def entropy_backward(self, flat: Tensor, data_step: int) -> dict[str, float]:
        """:func:`entropy_backward` with this run's forward mode, precision and shard (``flat``: this rank's block)."""
        return entropy_backward(
            self.problem,
            flat,
            self.layout,
            data_step,
            forward_mode=self.options.forward_mode,
            precision=self.options.precision,
            shard=self.shard,
        )

    def scores(self, make_flat: Callable[[], Tensor]) -> dict[str, float]:
        """Per-task accuracy of the merged parameters ``make_flat()`` returns (the whole flat vector)."""
        return evaluator(self.problem, self.layout, make_flat)()

    def diagnostic_scores(self, make_flat: Callable[[], Tensor]) -> dict[str, float]:
        """:meth:`scores` for a diagnostic recorded beside the result; empty when the problem has no evaluation data
        (a timing benchmark), where the headline run needs none either."""
        return self.scores(make_flat) if has_evaluation_data(self.problem) else {}

    def optimise(
        self,
        stage: str,
        steps: int,
        step_fn: Callable[[int], dict],
        state: RunState,
        *,
        start: int,
        eval_flat: Callable[[], Tensor],
        log_fn: Callable[[], dict] | None = None,
        eval_extra_fn: Callable[[dict], dict] | None = None,
    ) -> None:
        """:func:`optimise` with this run's checkpointer and cadences; ``eval_flat()`` is the model scored along the way."""
        optimise(
            stage,
            steps,
            step_fn,
            state,
            self.checkpointer,
            start=start,
            progress=self.options.progress,
            log_every=self.options.log_every,
            eval_fn=evaluator(self.problem, self.layout, eval_flat),
            eval_every=self.options.eval_every,
            log_fn=log_fn,
            eval_extra_fn=eval_extra_fn,
        )
