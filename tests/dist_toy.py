"""Worker for the distributed tests: run test-time methods on the toy problem under torchrun (gloo, CPU).

    python -m torch.distributed.run --nproc-per-node 2 tests/dist_toy.py '{"out": ..., "methods": {...}}'

Every rank runs each method; each rank saves what it ended with (mask logits / coefficients, merged state,
history) to ``<out>/<method>.rank<r>.ckpt``, so the test can check that all ranks agree with one another and with
a single-process run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy import make_toy_problem, pausing  # noqa: E402


def main(config: dict) -> None:
    from concrete_subspace import distributed
    from concrete_subspace.checkpoint import save_checkpoint
    from concrete_subspace.registry import run_method

    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    problem = make_toy_problem(num_tasks=config.get("num_tasks", 3))
    if config.get("pause_after_calls") is not None and distributed.rank() == config.get("pause_rank", 0):
        problem = pausing(problem, config["pause_after_calls"], config["pause_marker"])
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    # torchrun starts each worker in a session of its own: a test that kills the job kills these pids too
    (out / f"pid.rank{distributed.rank()}").write_text(str(os.getpid()))
    for method, params in config["methods"].items():
        result = run_method(method, problem, progress=False, **params)
        tensors = {k: v for k, v in result.extras.items() if torch.is_tensor(v)}
        save_checkpoint(
            out / f"{method}.rank{distributed.rank()}.ckpt",
            {
                "state": result.state,
                "tensors": tensors,
                "history": result.history,
                "world_size": distributed.world_size(),
            },
        )
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
