"""The run seeds' random streams never collide (issue 28: seed s's evaluation mask was seed s + 1's training stream)."""

from __future__ import annotations

import pytest

from concrete_subspace.seeding import NAMED_STREAM_BASE, RUN_STREAMS, SEED_STRIDE, derive_seed, named_seed

SEEDS = range(100)


def every_stream(seed: int) -> dict[str, int]:
    """The torch generator seeds a test-time run of ``seed`` uses: its main stream (mask samples) and its named ones.

    (The data's batch orders, ``derive_seed(seed, epoch)``, are another generator's streams: epoch 1 of seed 0 is
    seed 1's main value, left as it is because changing it would move every stored result.)
    """
    return {"main": seed, **{name: named_seed(seed, name) for name in RUN_STREAMS}}


def test_no_two_streams_of_seeds_0_to_99_share_a_generator_seed():
    owners: dict[int, tuple[int, str]] = {}
    for seed in SEEDS:
        for stream, value in every_stream(seed).items():
            assert value not in owners, f"seed {seed} {stream} = seed {owners[value][0]} {owners[value][1]} ({value})"
            owners[value] = (seed, stream)
    assert len(owners) == len(SEEDS) * (1 + len(RUN_STREAMS))


def test_named_streams_lie_above_every_run_seed_and_indexed_stream():
    """Why they can never collide with those: a range of their own, [2**62, 2**63), for any seed below 2**42."""
    largest_indexed = derive_seed(2**42 - 1, SEED_STRIDE - 1)
    assert largest_indexed < NAMED_STREAM_BASE
    for seed in (*SEEDS, 2**42 - 1):
        for name in RUN_STREAMS:
            assert NAMED_STREAM_BASE <= named_seed(seed, name) < 2 * NAMED_STREAM_BASE


@pytest.mark.parametrize("name", RUN_STREAMS)
def test_a_named_stream_is_a_pure_function_of_seed_and_name(name):
    assert named_seed(7, name) == named_seed(7, name)
    assert named_seed(7, name) != named_seed(8, name)
