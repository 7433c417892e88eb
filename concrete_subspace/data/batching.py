"""Deterministic batching by (seed, step): the batch used at any step is a pure function, so runs resume exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..seeding import derive_seed


def step_indices(n: int, batch_size: int, step: int, seed: int, reshuffle: bool = False) -> Tensor:
    """Indices of the batch at ``step`` from a shuffled order of the data, cycled.

    ``reshuffle=False`` replays one shuffled order every epoch, as the paper's ``itertools.cycle(loader)`` did;
    ``reshuffle=True`` draws a new order each epoch (fusion_bench's reshuffled loaders).
    """
    if n <= 0:
        raise ValueError(f"cannot draw batches from an empty dataset (n={n})")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = positions // n, positions % n
    indices = torch.empty(batch_size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, epoch if reshuffle else 0)))
        in_epoch = epochs == epoch
        indices[in_epoch] = perm[offsets[in_epoch]]
    return indices


def collate(items: Sequence[Any]) -> Any:
    """Stack a list of examples: tensors, (tensor, label) pairs, or dicts of tensors."""
    first = items[0]
    if isinstance(first, Tensor):
        return torch.stack(list(items))
    if isinstance(first, dict):
        return {k: collate([it[k] for it in items]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(collate([it[i] for it in items]) for i in range(len(first)))
    return torch.as_tensor(items)


def take(dataset: Any, indices: Tensor) -> Any:
    """Gather examples from a tensor (fancy indexing) or an indexable dataset (collated)."""
    if isinstance(dataset, Tensor):
        return dataset[indices]
    return collate([dataset[int(i)] for i in indices])


def inputs_only(batch: Any) -> Any:
    """Drop labels: (inputs, label) pairs -> inputs; anything else is returned as is."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch
