"""Task vectors τ_i = θ_i − θ0 over state dicts, with validation, streaming and a flat layout for the hot loop.

A state dict here is ``dict[str, Tensor]``; only floating-point tensors take part in merging (integer buffers such
as position ids are skipped). Errors name the offending model and key.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

StateDict = Mapping[str, Tensor]


class StateDictError(ValueError):
    """Models that cannot be merged: different keys, shapes or dtypes, or non-finite values."""


class ZeroTaskVectorWarning(UserWarning):
    """A fine-tuned model is identical to the pre-trained one: its task vector is zero."""


def float_keys(state: StateDict) -> list[str]:
    """Keys of the floating-point tensors, in the state dict's order: the tensors that are merged."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()]


def check_compatible(reference: StateDict, other: StateDict, *, name: str = "model", check_dtype: bool = True) -> None:
    """Raise :class:`StateDictError` unless ``other`` has every float key of ``reference`` with the same shape/dtype."""
    for key in float_keys(reference):
        if key not in other:
            raise StateDictError(f"{name}: missing key {key!r} (present in the pre-trained model)")
        ref, val = reference[key], other[key]
        if tuple(val.shape) != tuple(ref.shape):
            raise StateDictError(
                f"{name}: shape mismatch for {key!r}: {tuple(val.shape)} vs pre-trained {tuple(ref.shape)}"
            )
        if check_dtype and val.dtype != ref.dtype:
            raise StateDictError(f"{name}: dtype mismatch for {key!r}: {val.dtype} vs pre-trained {ref.dtype}")
    extra = [k for k in float_keys(other) if k not in reference]
    if extra:
        raise StateDictError(
            f"{name}: unexpected key {extra[0]!r} (not in the pre-trained model; {len(extra)} extra in all)"
        )


def check_finite(state: StateDict, *, name: str = "model") -> None:
    """Raise :class:`StateDictError` naming the first float tensor that holds NaN or Inf."""
    for key in float_keys(state):
        if not torch.isfinite(state[key]).all():
            raise StateDictError(f"{name}: non-finite values (NaN/Inf) in {key!r}")


def task_vector(
    pretrained: StateDict, finetuned: StateDict, *, name: str = "finetuned", dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """τ = θ_ft − θ0 for every float tensor, after validating keys, shapes, dtypes and finiteness."""
    check_compatible(pretrained, finetuned, name=name)
    check_finite(finetuned, name=name)
    vector = {}
    for key in float_keys(pretrained):
        delta = finetuned[key].to(pretrained[key].device) - pretrained[key]
        vector[key] = delta if dtype is None else delta.to(dtype)
    if all(not v.any() for v in vector.values()):
        warnings.warn(
            f"{name}: task vector is all zeros (fine-tuned model identical to the pre-trained one)",
            ZeroTaskVectorWarning,
            stacklevel=2,
        )
    return vector


def weighted_sum(vectors: Sequence[StateDict], weights: Sequence[float] | Tensor) -> dict[str, Tensor]:
    """Σ_i w_i τ_i, tensor by tensor."""
    if len(vectors) != len(weights):
        raise ValueError(f"weighted_sum: {len(vectors)} task vectors but {len(weights)} weights")
    return {k: sum(w * v[k] for w, v in zip(weights, vectors)) for k in vectors[0]}


def apply_to(pretrained: StateDict, vector: StateDict, scaling: float = 1.0) -> dict[str, Tensor]:
    """θ0 + scaling · τ for the float tensors of ``pretrained`` (non-float entries are carried over unchanged)."""
    out = dict(pretrained)
    for k, v in vector.items():
        out[k] = pretrained[k] + scaling * v.to(pretrained[k].dtype)
    return out


@dataclass(frozen=True)
class ParamLayout:
    """Key order, shapes and sizes of the merged tensors, mapping a state dict to one flat vector and back."""

    keys: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, state: StateDict) -> ParamLayout:
        keys = tuple(float_keys(state))
        return cls(keys, tuple(state[k].shape for k in keys))

    @property
    def numels(self) -> list[int]:
        return [s.numel() for s in self.shapes]

    @property
    def num_params(self) -> int:
        return sum(self.numels)

    def flatten(self, state: StateDict, dtype: torch.dtype | None = None) -> Tensor:
        """Concatenate the tensors in layout order into one vector of length P."""
        return torch.cat([state[k].reshape(-1).to(dtype or state[k].dtype) for k in self.keys])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of ``flat`` with the original keys and shapes (no copies; gradients flow through)."""
        return {k: part.view(shape) for k, part, shape in zip(self.keys, torch.split(flat, self.numels), self.shapes)}

    def segment_ids(self, device: torch.device | str | None = None) -> Tensor:
        """For every flat position, the index of its tensor (0..K-1)."""
        sizes = torch.tensor(self.numels, device=device)
        return torch.repeat_interleave(torch.arange(len(self.keys), device=device), sizes)


def flat_task_vectors(
    pretrained: StateDict, load_finetuned: Callable[[str], StateDict], tasks: Iterable[str], *, progress: bool = False
) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(task, flat τ)`` one fine-tuned model at a time, validated (16-bit models are differenced in float32)."""
    check_finite(pretrained, name="pre-trained model")
    layout = ParamLayout.of(pretrained)
    theta0 = layout.flatten(pretrained)
    work = torch.promote_types(theta0.dtype, torch.float32)
    for task in tqdm(list(tasks), desc="task vectors", disable=not progress):
        finetuned = load_finetuned(task)
        check_compatible(pretrained, finetuned, name=f"fine-tuned model {task!r}")
        check_finite(finetuned, name=f"fine-tuned model {task!r}")
        vector = layout.flatten(finetuned).to(theta0.device, work) - theta0.to(work)
        del finetuned
        if not vector.any():
            warnings.warn(
                f"fine-tuned model {task!r}: task vector is all zeros (identical to the pre-trained model)",
                ZeroTaskVectorWarning,
                stacklevel=2,
            )
        yield task, vector


def stack_task_vectors(
    pretrained: StateDict,
    load_finetuned: Callable[[str], StateDict],
    tasks: Iterable[str],
    *,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> tuple[ParamLayout, Tensor]:
    """Stream the fine-tuned models one at a time into a [T, P] matrix of flat task vectors.

    Only one fine-tuned state is resident at a time; ``dtype`` (e.g. ``torch.bfloat16``) stores the task vectors
    in a narrower type to halve their memory.
    """
    tasks = list(tasks)
    layout = ParamLayout.of(pretrained)
    first = pretrained[layout.keys[0]]
    stacked = torch.empty(len(tasks), layout.num_params, dtype=dtype or first.dtype, device=first.device)
    for row, (_, vector) in enumerate(flat_task_vectors(pretrained, load_finetuned, tasks, progress=progress)):
        stacked[row] = vector
    return layout, stacked


def sum_task_vectors(
    pretrained: StateDict,
    load_finetuned: Callable[[str], StateDict],
    tasks: Iterable[str],
    *,
    scaling: float = 1.0,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> tuple[ParamLayout, Tensor]:
    """λ Σ_i τ_i as one flat vector, streamed: only the running sum and one fine-tuned model are resident.

    ``dtype`` rounds each task vector to that storage type first, as :func:`stack_task_vectors` would.
    """
    layout = ParamLayout.of(pretrained)
    total = None
    for _, vector in flat_task_vectors(pretrained, load_finetuned, tasks, progress=progress):
        term = scaling * (vector if dtype is None else vector.to(dtype).to(vector.dtype))
        total = term if total is None else total.add_(term)
    if total is None:
        raise ValueError("sum_task_vectors needs at least one task")
    return layout, total
