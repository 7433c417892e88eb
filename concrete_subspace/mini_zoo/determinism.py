"""Deterministic builds: deterministic kernels and a fixed thread count, seeded module construction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .config import BUILD_THREADS


@contextlib.contextmanager
def deterministic(threads: int = BUILD_THREADS) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count inside the block; the previous settings are restored."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


def _seeded_init(seed: int, build):
    """Run a module constructor (which draws from torch's global RNG) under a forked, seeded RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
