"""Seed derivation: a run seed and a stream (an index, or names) give the seed or generator of that stream.

Every derived generator of the library (batch orders, corruption noise, evaluation masks, text-task sampling, the
mini zoo's images) goes through :func:`derive_seed` or :func:`derive_rng`, so streams never collide by accident and
the formulas live in one place. The stride is a parameter only so that data generated before this helper existed
stays byte-identical: the text tasks were generated with strides 1009 and 7919, the evaluation masks with stride 1
(seed + 1, seed + 2), the zoos' experts with stride 100 (seed * 100 + task index). :func:`derive_rng` keys a numpy
generator by (seed, names) through SHA-256, so adding a task or a split never shifts another's stream.
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED_STRIDE = 1_000_003  # a prime larger than any stream index used (tasks, images, epochs)


def derive_seed(seed: int, stream: int, stride: int = SEED_STRIDE) -> int:
    """The seed of stream ``stream`` of run seed ``seed``: ``seed * stride + stream``."""
    return int(seed) * int(stride) + int(stream)


def derive_rng(seed: int, *names: object) -> np.random.Generator:
    """A numpy Generator keyed by (seed, names), stable across runs and platforms (no Python hash())."""
    key = "/".join(str(n) for n in (seed, *names)).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
