"""Fixtures shared by the reliability tests."""

import pytest


@pytest.fixture(scope="session")
def smoke_zoo_problem():
    """The cached seed-0 smoke zoo's test-split problem (built once per cache; also used by the notebook tests)."""
    from concrete_subspace.experiments import ensure_zoo
    from concrete_subspace.zoo import load_zoo_problem

    return load_zoo_problem(ensure_zoo(seed=0, smoke=True, progress=False), split="test")
