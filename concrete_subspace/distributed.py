"""Task-parallel test-time merging on ``torch.distributed`` (launched with ``torchrun``): the result of one device.

Every test-time method of the registry runs unchanged under ``torchrun --nproc-per-node N``. When a process group
with more than one rank is initialised, :func:`concrete_subspace.loop.entropy_backward` gives each rank its share
of the tasks (:func:`local_tasks`: task ``i`` goes to rank ``i mod N``): the rank runs the merged model on those
tasks' batches only, then the gradient with respect to the merged parameters is summed over the ranks
(:func:`all_reduce_`) before it goes through the merge graph into the mask logits / coefficients. Since the loss is a
sum over tasks, the summed gradient is the one-device gradient (up to float summation order).

Why every rank ends with the same result: every rank builds the same θ0, task vectors and initial tensors, seeds its
``torch.Generator`` with the same seed and draws the same mask samples in the same order (sampling is never split
across ranks), receives the same all-reduced gradient and applies the same deterministic Adam step. Per-task losses
and evaluation scores are all-reduced too, so every rank logs the same history. Only rank 0 writes checkpoints;
every rank reads the same checkpoint on resume.

With ``shard_vectors=True`` (layer-wise/task-wise AdaMerging and Concrete TA/AdaMerging, see :class:`Shard`) each
rank keeps the task vectors, mask logits and optimizer state of a contiguous block of parameter tensors only; the
merged parameters are gathered for the forward, and each rank back-propagates its block of the summed gradient.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from .task_vectors import ParamLayout, flat_task_vectors


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """The rank that writes files (checkpoints, results): rank 0, or the only process."""
    return rank() == 0


def local_tasks(task_names: Sequence[str]) -> tuple[str, ...]:
    """This rank's share of the tasks: task i goes to rank i mod world size (all tasks on one process)."""
    return tuple(task_names[rank() :: world_size()])


def all_reduce_(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over the ranks in place (nothing to do on one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_task_values(task_names: Sequence[str], local: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """Per-task values computed on their own ranks (losses, scores), known to every rank, in task order."""
    if not is_distributed():
        return {t: float(local[t]) for t in task_names}
    values = torch.zeros(len(task_names), dtype=torch.float64, device=device)
    for i, task in enumerate(task_names):
        if task in local:
            values[i] = float(local[task])
    return dict(zip(task_names, all_reduce_(values).tolist()))


def init_from_env(device: str = "cpu") -> str:
    """Join the process group that ``torchrun`` describes in the environment; return this rank's device.

    Does nothing without ``WORLD_SIZE`` > 1 (a plain single-process run). Backend: NCCL for CUDA, gloo for CPU.
    With ``device="cuda"`` each rank takes the GPU of its ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return _local_device(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return _local_device(device)


def _local_device(device: str) -> str:
    if device == "cuda" and is_distributed():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


# ------------------------------------------------------------------------------------------------ sharding
@dataclass(frozen=True)
class Shard:
    """This rank's contiguous block of the merged parameter tensors (layout order), balanced by element count.

    ``start:stop`` is the block's element range in the full flat vector; ``local_layout`` its tensors, the
    ``key_slice`` of the layout's tensors; ``sizes`` every rank's block length (for the gather). ``whole`` means no
    sharding (one process, or ``shard_vectors=False``): then every method below is the identity.
    """

    layout: ParamLayout
    local_layout: ParamLayout
    key_slice: slice
    start: int
    stop: int
    sizes: tuple[int, ...]

    @property
    def whole(self) -> bool:
        return len(self.sizes) == 1

    def local(self, flat: Tensor) -> Tensor:
        """This rank's block of a full flat vector (along the last dimension), as a copy that frees the rest."""
        return flat if self.whole else flat[..., self.start : self.stop].clone()

    def gather(self, block: Tensor) -> Tensor:
        """The full flat vector (detached) from every rank's block; every rank calls it and gets the same vector."""
        if self.whole:
            return block
        padded = torch.zeros(max(self.sizes), dtype=block.dtype, device=block.device)
        padded[: block.numel()] = block.detach()
        parts = [torch.empty_like(padded) for _ in self.sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, self.sizes)])

    def coefficients(self, weights: Tensor) -> Tensor:
        """Merge coefficients of this block's tensors: layer-wise [T, K] -> [T, K_local]; task-wise [T] as it is."""
        return weights if self.whole or weights.dim() == 1 else weights[:, self.key_slice]

    def reduce_grad_(self, tensor: Tensor) -> None:
        """Sum a replicated tensor's gradient over the blocks (each rank back-propagated its block only)."""
        if not self.whole and tensor.grad is not None:
            all_reduce_(tensor.grad)

    def checkpoint_name(self) -> str:
        """Sharded runs checkpoint every rank's block to its own file (resume needs the same number of ranks)."""
        return "checkpoint.ckpt" if self.whole else f"checkpoint.rank{rank()}-of-{world_size()}.ckpt"


def plan_shards(layout: ParamLayout, ranks: int) -> list[tuple[int, int]]:
    """Split the layout's tensors into ``ranks`` contiguous groups of about equal element count: [(first, stop) key]."""
    numels = layout.numels
    total = sum(numels)
    bounds, first, running = [], 0, 0
    for r in range(ranks):
        target = total * (r + 1) / ranks
        stop = first
        while stop < len(numels) and (r == ranks - 1 or running + numels[stop] / 2 <= target):
            running += numels[stop]
            stop += 1
        bounds.append((first, stop))
        first = stop
    return bounds


def make_shard(layout: ParamLayout, shard_vectors: bool = True) -> Shard:
    """This rank's :class:`Shard` of ``layout``; the whole layout on one process or when ``shard_vectors`` is off."""
    ranks = world_size() if shard_vectors else 1
    bounds = plan_shards(layout, ranks)
    offsets = [0]
    for n in layout.numels:
        offsets.append(offsets[-1] + n)
    first, stop = bounds[rank() if ranks > 1 else 0]
    local_layout = ParamLayout(tuple(layout.keys[first:stop]), tuple(layout.shapes[first:stop]))
    return Shard(
        layout,
        local_layout,
        slice(first, stop),
        offsets[first],
        offsets[stop],
        tuple(offsets[b] - offsets[a] for a, b in bounds),
    )


def local_task_vectors(problem, shard: Shard, dtype: torch.dtype | None, progress: bool) -> Tensor:
    """The [T, P_local] block of the task vectors, streamed one fine-tuned model at a time."""
    first = problem.pretrained[shard.layout.keys[0]]
    block = torch.empty(
        len(problem.task_names), shard.stop - shard.start, dtype=dtype or first.dtype, device=first.device
    )
    for row, (_, vector) in enumerate(
        flat_task_vectors(problem.pretrained, problem.load_finetuned, problem.task_names, progress=progress)
    ):
        block[row] = vector[shard.start : shard.stop]
    return block
