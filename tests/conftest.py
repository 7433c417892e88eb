"""Shared test setup: offline Hugging Face, one CPU thread (the machine is shared), and the toy merge problem."""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # so tests can `from toy import ...`

from toy import make_toy_problem  # noqa: E402


@pytest.fixture(scope="session")
def toy():
    """The 3-task toy MergeProblem (built once; methods only read it)."""
    return make_toy_problem()


@pytest.fixture(scope="session")
def toy_vectors(toy):
    """(layout, θ0 flat, [T, P] task vectors) of the toy problem."""
    from concrete_subspace.task_vectors import stack_task_vectors

    layout, vectors = stack_task_vectors(toy.pretrained, toy.load_finetuned, toy.task_names)
    return layout, layout.flatten(toy.pretrained), vectors


@pytest.fixture(scope="session")
def smoke_zoo_problem():
    """The cached seed-0 smoke zoo's test-split problem (built once per cache; also used by the notebook tests)."""
    from concrete_subspace.experiments import ensure_zoo
    from concrete_subspace.zoo import load_zoo_problem

    return load_zoo_problem(ensure_zoo(seed=0, smoke=True, progress=False), split="test")
