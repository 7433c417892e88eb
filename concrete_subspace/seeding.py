"""Seed derivation: one function turns a run seed and a stream index into the seed of that stream's generator.

Every derived generator of the library (batch orders, corruption noise, evaluation masks, text-task sampling)
goes through :func:`derive_seed`, so streams never collide by accident and the formula lives in one place. The
stride is a parameter only so that data generated before this helper existed stays byte-identical: the text tasks
were generated with strides 1009 and 7919, the evaluation masks with stride 1 (seed + 1, seed + 2).
(``zoo.py`` and ``data/mini.py`` keep their own derivations until the mini zoo v2 split, issue 11.)
"""

from __future__ import annotations

SEED_STRIDE = 1_000_003  # a prime larger than any stream index used (tasks, images, epochs)


def derive_seed(seed: int, stream: int, stride: int = SEED_STRIDE) -> int:
    """The seed of stream ``stream`` of run seed ``seed``: ``seed * stride + stream``."""
    return int(seed) * int(stride) + int(stream)
