"""Seed derivation: a run seed and a stream (an index, or a name) give the seed or generator of that stream.

Every derived generator of the library (batch orders, corruption noise, evaluation masks, text-task sampling, the
mini zoo's images) goes through :func:`derive_seed`, :func:`named_seed` or :func:`derive_rng`, so the formulas live in
one place. The stride of :func:`derive_seed` is a parameter only so that data generated before this helper existed
stays byte-identical: the text tasks were generated with strides 1009 and 7919, the zoos' experts with stride 100
(seed * 100 + task index). A run's own torch generator is seeded with the run seed itself; its other streams (the
Concrete methods' evaluation masks) are :func:`named_seed` streams, which lie in [2**62, 2**63), above the run seeds
and every :func:`derive_seed` value of a seed below 2**42, so they never coincide with another seed's main stream
(they once were seed + 1 and seed + 2: seed s's evaluation mask was seed s + 1's training stream).
:func:`derive_rng` keys a numpy generator by (seed, names) through SHA-256, so adding a task or a split never shifts
another's stream.
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED_STRIDE = 1_000_003  # a prime larger than any stream index used (tasks, images, epochs)
NAMED_STREAM_BASE = 2**62  # named streams lie in [2**62, 2**63): above every run seed and indexed stream

#: The named streams of a test-time run, besides its main generator (seeded with the run seed): the Concrete methods'
#: evaluation mask (CTA's final mask, Concrete AdaMerging's stage-1 evaluation rows) and Concrete AdaMerging's kept
#: stage-2 mask.
RUN_STREAMS = ("evaluation_mask", "kept_mask")


def derive_seed(seed: int, stream: int, stride: int = SEED_STRIDE) -> int:
    """The seed of stream ``stream`` of run seed ``seed``: ``seed * stride + stream``."""
    return int(seed) * int(stride) + int(stream)


def derive_rng(seed: int, *names: object) -> np.random.Generator:
    """A numpy Generator keyed by (seed, names), stable across runs and platforms (no Python hash())."""
    key = "/".join(str(n) for n in (seed, *names)).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def named_seed(seed: int, name: str) -> int:
    """The seed of the named stream ``name`` of run seed ``seed``: SHA-256 of (seed, name), in [2**62, 2**63)."""
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return NAMED_STREAM_BASE + int.from_bytes(digest[:8], "little") % NAMED_STREAM_BASE
